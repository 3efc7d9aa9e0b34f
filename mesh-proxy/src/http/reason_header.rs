//! Who sees why a request failed. Every local reply says why in
//! `x-mesh-reason` and in its body (`no healthy upstream in cluster
//! outbound|5000|risky|helloworld`, an upstream's `IP:port`): what an
//! operator inside the mesh needs, and what a client on the internet must
//! not learn. A connection manager with `use_remote_address: true` faces
//! clients outside the mesh (Envoy's definition of an edge proxy, and what
//! Istio sets on gateways); by default its local replies carry only the
//! status's reason phrase and no `x-mesh-reason`, and so does a local reply
//! of a sidecar behind it (known by its `x-mesh-reason`). `--reason-header`
//! changes that for the whole proxy.

use http::{HeaderValue, Response, StatusCode};

use super::local_reply::{LocalReplied, MESH_REASON_HEADER};
use crate::body::{ProxyBody, full};

/// `mesh-proxy --reason-header`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ReasonHeader {
    /// Shown inside the mesh, hidden at the edge (`use_remote_address`).
    #[default]
    Mesh,
    /// Shown to every client, the edge included.
    Always,
    /// Never shown: local replies carry the status's reason phrase only.
    Never,
}

impl ReasonHeader {
    /// Whether a connection manager shows local reply details.
    pub fn shows_details(self, edge: bool) -> bool {
        match self {
            ReasonHeader::Always => true,
            ReasonHeader::Mesh => !edge,
            ReasonHeader::Never => false,
        }
    }
}

/// Hides the details of `response` from a client that may not see them.
pub fn hide_details(response: &mut Response<ProxyBody>) {
    let relayed = response.headers_mut().remove(MESH_REASON_HEADER).is_some();
    let own = response.extensions_mut().remove::<LocalReplied>().is_some();
    if own || relayed {
        let status = response.status();
        *response.body_mut() = full(generic_body(status));
        response.headers_mut().remove(http::header::CONTENT_LENGTH);
        response.headers_mut().insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
    }
}

fn generic_body(status: StatusCode) -> String {
    format!("{}\n", status.canonical_reason().unwrap_or("Error"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::local_reply::{LocalReply, ResponseFlag};
    use http_body_util::BodyExt;

    #[test]
    fn the_edge_hides_by_default() {
        assert!(ReasonHeader::Mesh.shows_details(false));
        assert!(!ReasonHeader::Mesh.shows_details(true));
        assert!(ReasonHeader::Always.shows_details(true));
        assert!(!ReasonHeader::Never.shows_details(false));
    }

    #[tokio::test]
    async fn details_are_replaced_by_the_reason_phrase() {
        let mut local = LocalReply::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ResponseFlag::NoHealthyUpstream,
            "no healthy upstream in cluster outbound|80||internal.svc (10.0.0.7:8080)",
        )
        .into_response();
        hide_details(&mut local);
        assert!(local.headers().get(MESH_REASON_HEADER).is_none());
        let body = local.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "Service Unavailable\n");

        // A sidecar's local reply relayed from upstream (it carries the
        // header) is generic too; an app's answer is left alone.
        let mut relayed = Response::new(full("no route in cluster x|y (10.0.0.7)"));
        *relayed.status_mut() = StatusCode::NOT_FOUND;
        relayed
            .headers_mut()
            .insert(MESH_REASON_HEADER, HeaderValue::from_static("no route"));
        hide_details(&mut relayed);
        assert!(relayed.headers().get(MESH_REASON_HEADER).is_none());
        let body = relayed.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "Not Found\n");
        let mut app = Response::new(full("from the app"));
        hide_details(&mut app);
        let body = app.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "from the app");
    }
}
