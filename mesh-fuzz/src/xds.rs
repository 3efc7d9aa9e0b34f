//! The xDS compiler of the proxy: what arrives from a control plane (or a
//! man in the middle of a plaintext ADS stream) as protobuf bytes.

use std::time::{Duration, Instant};

use bytes::Buf;
use envoy_types::pb::envoy::config::cluster::v3::Cluster;
use envoy_types::pb::envoy::config::endpoint::v3::ClusterLoadAssignment;
use envoy_types::pb::envoy::config::listener::v3::Listener;
use envoy_types::pb::envoy::config::route::v3::RouteConfiguration;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3::Secret;
use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use envoy_types::pb::google::protobuf::Any;
use mesh_proxy::compile;
use mesh_proxy::model::Snapshot;
use mesh_proxy::xds::state::{ResourceType, XdsState};
use prost::Message;

/// Most responses one input is read as: enough for CDS, EDS, LDS, RDS and
/// an update, few enough that an input stays fast.
const MAX_RESPONSES: usize = 8;

/// The first byte chooses what the rest is:
///
/// - `0..=3`: one `Listener`, `Cluster`, `RouteConfiguration` or
///   `ClusterLoadAssignment`, compiled on its own, then sent to a fresh ADS
///   client state as the only resource of a response;
/// - `4`: one SDS `Secret` (certificates and keys in PEM);
/// - `5`: length-delimited `DiscoveryResponse`s, applied in order as the
///   ADS client applies them (prepare, warming, commit, subscriptions).
///
/// Other values wrap around.
pub fn xds(data: &[u8]) {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    match selector % 6 {
        0 => {
            if let Ok(l) = Listener::decode(bytes) {
                let _ = compile::compile_listener(&l);
            }
            single(ResourceType::Listener, bytes);
        }
        1 => {
            if let Ok(c) = Cluster::decode(bytes) {
                let _ = compile::compile_cluster(&c);
            }
            single(ResourceType::Cluster, bytes);
        }
        2 => {
            if let Ok(r) = RouteConfiguration::decode(bytes) {
                let _ = compile::compile_route_configuration(&r);
            }
            single(ResourceType::Route, bytes);
        }
        3 => {
            if let Ok(e) = ClusterLoadAssignment::decode(bytes) {
                let _ = compile::compile_load_assignment(&e);
            }
            single(ResourceType::Endpoint, bytes);
        }
        4 => {
            if let Ok(s) = Secret::decode(bytes) {
                let _ = compile::compile_secret(&s);
            }
        }
        _ => {
            stream(bytes);
        }
    }
}

/// A fresh ADS client that subscribes to CDS and LDS, as a sidecar does.
fn fresh_state() -> XdsState {
    XdsState::new(Snapshot::default(), true, true, Duration::from_secs(15))
}

fn single(ty: ResourceType, bytes: &[u8]) {
    let response = DiscoveryResponse {
        version_info: "1".into(),
        type_url: ty.type_url().into(),
        nonce: "1".into(),
        resources: vec![Any {
            type_url: ty.type_url().into(),
            value: bytes.to_vec(),
        }],
        ..Default::default()
    };
    apply(&mut fresh_state(), response);
}

/// Returns how many responses were accepted.
fn stream(mut bytes: &[u8]) -> usize {
    let mut state = fresh_state();
    let mut accepted = 0;
    for _ in 0..MAX_RESPONSES {
        if !bytes.has_remaining() {
            break;
        }
        let Ok(response) = DiscoveryResponse::decode_length_delimited(&mut bytes) else {
            break;
        };
        accepted += usize::from(apply(&mut state, response));
    }
    accepted
}

/// What `xds::client` does with a response, less the runtime's apply
/// (which binds listeners): validate, pick what may be served, commit,
/// and derive the next subscriptions. A rejection is a NACK.
/// Returns whether the response was accepted (ACKed).
fn apply(state: &mut XdsState, response: DiscoveryResponse) -> bool {
    let candidate = match state.prepare(response) {
        Ok(candidate) => candidate,
        Err(rejection) => {
            let _ = state.nack(&rejection, None);
            return false;
        }
    };
    match state.servable(&candidate.resources, Instant::now()) {
        Ok(servable) => {
            let _ = state.commit(candidate, servable.resources, None);
            let _ = state.subscription_updates(None);
            true
        }
        Err(error) => {
            let _ = error.to_string();
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The harness reaches the end: the control plane's whole exchange for
    /// the demo's sidecar is accepted response by response.
    #[test]
    fn the_demo_exchange_is_accepted() {
        let seed =
            std::fs::read(crate::tests::seeds_dir().join("xds/demo-sidecar-ads.bin")).unwrap();
        assert_eq!(seed[0] % 6, 5);
        assert_eq!(stream(&seed[1..]), 4);
    }
}
