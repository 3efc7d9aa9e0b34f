//! mTLS between two mesh-proxies on real sockets, with certificates from
//! the mesh CA given as SDS-named static secrets (`default`, `ROOTCA`):
//! the success path with XFCC, STRICT and PERMISSIVE inbound listeners, and
//! each refusal (other CA, expired, wrong service account) with its
//! reason in the log and its counter.

use std::time::Duration;

use crate::tls_support::*;
use http::{Request, StatusCode};
use mesh_test_util::{HttpUpstream, send, wait_until};

const TD: &str = "cluster.local";

fn get(host: &str) -> Request<&'static str> {
    Request::get("/hello")
        .header("host", host)
        .body("")
        .unwrap()
}

struct Mesh {
    app: HttpUpstream,
    server: mesh_proxy::Bound,
    client: mesh_proxy::Bound,
}

/// app <- server sidecar (inbound mTLS) <- client sidecar (outbound mTLS).
async fn mesh(mode: Mode, client_cert: Pem, server_sans: &[&str], client_sans: &[&str]) -> Mesh {
    logs();
    let ca = ca(TD);
    let server_cert = issue(&ca, "default", "server");
    let app = HttpUpstream::start("app").await.unwrap();
    let mut server_roots = server_cert.roots.clone();
    if client_cert.roots != server_cert.roots && client_cert.uri.contains("expired") {
        // The expired leaf's own CA is trusted: only the date is wrong.
        server_roots.push_str(&client_cert.roots);
    }
    let server = start(&server_bootstrap(
        mode,
        app.addr(),
        &secrets(&server_cert, &server_roots),
        client_sans,
    ))
    .await;
    let inbound = server.listener("inbound").unwrap();
    let client = start(&client_bootstrap(
        &[(inbound, true)],
        &tls_transport(server_sans),
        &secrets(&client_cert, &server_cert.roots),
    ))
    .await;
    Mesh {
        app,
        server,
        client,
    }
}

fn inbound_stat(m: &Mesh, stat: &str) -> i64 {
    let addr = m.server.listener("inbound").unwrap();
    stat_of(&m.server, &format!("listener.{addr}.{stat}"))
}

fn stat_of(b: &mesh_proxy::Bound, name: &str) -> i64 {
    stat(b, name)
}

#[tokio::test]
async fn mtls_between_two_proxies_with_xfcc_and_peer_identity() {
    let StrictServer {
        client_cert,
        server_cert,
        app,
        server,
        inbound,
    } = StrictServer::start(TD).await;
    let client = start(&client_bootstrap(
        &[(inbound, true)],
        &tls_transport(&[&server_cert.uri]),
        &secrets(&client_cert, &client_cert.roots),
    ))
    .await;
    let outbound = client.listener("outbound").unwrap();

    let resp = send(outbound, get("server")).await.unwrap();
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let seen = app.last_request().unwrap();
    let xfcc = seen
        .header("x-forwarded-client-cert")
        .expect("XFCC reaches the app");
    assert!(
        xfcc.starts_with(&format!(
            "By={};Hash={};Subject=\"",
            server_cert.uri,
            sha256_hex(&client_cert.leaf_der)
        )),
        "{xfcc}"
    );
    assert!(
        xfcc.ends_with(&format!(";URI={}", client_cert.uri)),
        "{xfcc}"
    );
    let addr = server.listener("inbound").unwrap();
    assert!(stat(&server, &format!("listener.{addr}.ssl.handshake")) >= 1);
    assert!(stat(&client, "cluster.server.ssl.handshake") >= 1);

    // A forged XFCC from the app does not survive its sidecar: on a
    // plaintext hop APPEND_FORWARD drops what the client wrote.
    let mut forged = get("server");
    forged.headers_mut().insert(
        "x-forwarded-client-cert",
        "By=evil;URI=spiffe://evil".parse().unwrap(),
    );
    let resp = send(outbound, forged).await.unwrap();
    assert_eq!(resp.status, StatusCode::OK);
    let xfcc = app.last_request().unwrap();
    let xfcc = xfcc.header("x-forwarded-client-cert").unwrap();
    assert!(!xfcc.contains("evil"), "{xfcc}");
}

#[tokio::test]
async fn strict_refuses_plaintext_and_counts_it() {
    let ca = ca(TD);
    let client = issue(&ca, "default", "client");
    let m = mesh(Mode::Strict, client, &[], &[]).await;
    let inbound = m.server.listener("inbound").unwrap();
    let err = send(inbound, get("server")).await;
    assert!(
        err.is_err(),
        "plaintext must be refused: {:?}",
        err.map(|r| r.status)
    );
    wait_until(Duration::from_secs(5), async || {
        inbound_stat(&m, "no_filter_chain_match") >= 1
    })
    .await
    .unwrap();
    assert!(
        log_text().contains("plaintext connection refused: listener inbound requires TLS (STRICT)"),
        "log: {}",
        log_text()
    );
    assert_eq!(m.app.request_count(), 0);
}

#[tokio::test]
async fn permissive_serves_plaintext_and_mtls() {
    let ca = ca(TD);
    let client_cert = issue(&ca, "default", "client");
    let server_cert = issue(&ca, "default", "server");
    let app = HttpUpstream::start("app").await.unwrap();
    let server = start(&server_bootstrap(
        Mode::Permissive,
        app.addr(),
        &secrets(&server_cert, &server_cert.roots),
        &[],
    ))
    .await;
    let inbound = server.listener("inbound").unwrap();
    let plain = send(inbound, get("server")).await.unwrap();
    assert_eq!(plain.status, StatusCode::OK);
    assert!(
        app.last_request()
            .unwrap()
            .header("x-forwarded-client-cert")
            .is_none()
    );

    let client = start(&client_bootstrap(
        &[(inbound, true)],
        &tls_transport(&[&server_cert.uri]),
        &secrets(&client_cert, &client_cert.roots),
    ))
    .await;
    let resp = send(client.listener("outbound").unwrap(), get("server"))
        .await
        .unwrap();
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    let xfcc = app.last_request().unwrap();
    assert!(
        xfcc.header("x-forwarded-client-cert")
            .unwrap()
            .contains(&client_cert.uri)
    );
    assert!(stat(&server, &format!("listener.{inbound}.ssl.handshake")) >= 1);
}

/// The client sidecar's request fails (503) and the server says why.
async fn refused(m: &Mesh, counter: &str, reason: &str) {
    let outbound = m.client.listener("outbound").unwrap();
    let resp = send(outbound, get("server")).await.unwrap();
    assert_eq!(
        resp.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        resp.text()
    );
    wait_until(Duration::from_secs(5), async || {
        inbound_stat(m, counter) >= 1 && inbound_stat(m, "ssl.connection_error") >= 1
    })
    .await
    .unwrap_or_else(|e| panic!("{counter}: {e}\n{}", m.server.proxy.stats().render_text()));
    wait_until(Duration::from_secs(5), async || log_text().contains(reason))
        .await
        .unwrap_or_else(|_| panic!("no {reason:?} in the log:\n{}", log_text()));
    assert_eq!(m.app.request_count(), 0);
}

#[tokio::test]
async fn other_trust_domain_and_ca_is_refused() {
    let other = ca("other.example");
    let client = issue(&other, "default", "client");
    let m = mesh(Mode::Strict, client, &[], &[]).await;
    refused(&m, "ssl.fail_verify_error", "unknown CA").await;
}

#[tokio::test]
async fn expired_client_certificate_is_refused() {
    let client = expired("spiffe://cluster.local/ns/default/sa/expired");
    let m = mesh(Mode::Strict, client, &[], &[]).await;
    refused(&m, "ssl.fail_verify_error", "peer certificate expired").await;
}

#[tokio::test]
async fn wrong_service_account_is_refused_by_the_server() {
    let ca = ca(TD);
    let client_cert = issue(&ca, "default", "intruder");
    let server_cert = issue(&ca, "default", "server");
    let app = HttpUpstream::start("app").await.unwrap();
    logs();
    let server = start(&server_bootstrap(
        Mode::Strict,
        app.addr(),
        &secrets(&server_cert, &server_cert.roots),
        &["spiffe://cluster.local/ns/default/sa/client"],
    ))
    .await;
    let inbound = server.listener("inbound").unwrap();
    let client = start(&client_bootstrap(
        &[(inbound, true)],
        &tls_transport(&[&server_cert.uri]),
        &secrets(&client_cert, &client_cert.roots),
    ))
    .await;
    let m = Mesh {
        app,
        server,
        client,
    };
    refused(
        &m,
        "ssl.fail_verify_san",
        "peer identity spiffe://cluster.local/ns/default/sa/intruder not in [spiffe://cluster.local/ns/default/sa/client]",
    )
    .await;
}

#[tokio::test]
async fn wrong_server_identity_is_an_upstream_failure_with_reason() {
    let ca = ca(TD);
    let client_cert = issue(&ca, "default", "client");
    let server_cert = issue(&ca, "default", "impostor");
    let app = HttpUpstream::start("app").await.unwrap();
    let server = start(&server_bootstrap(
        Mode::Strict,
        app.addr(),
        &secrets(&server_cert, &server_cert.roots),
        &[],
    ))
    .await;
    let inbound = server.listener("inbound").unwrap();
    let client = start(&client_bootstrap(
        &[(inbound, true)],
        &tls_transport(&["spiffe://cluster.local/ns/default/sa/server"]),
        &secrets(&client_cert, &client_cert.roots),
    ))
    .await;
    let resp = send(client.listener("outbound").unwrap(), get("server"))
        .await
        .unwrap();
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    let body = resp.text();
    assert!(
        body.contains("upstream TLS: peer identity spiffe://cluster.local/ns/default/sa/impostor not in [spiffe://cluster.local/ns/default/sa/server]"),
        "{body}"
    );
    assert_eq!(stat(&client, "cluster.server.ssl.fail_verify_san"), 1);
    assert_eq!(app.request_count(), 0);
}

#[tokio::test]
async fn missing_secret_fails_the_handshake_with_its_name() {
    let ca = ca(TD);
    let client_cert = issue(&ca, "default", "client");
    let app = HttpUpstream::start("app").await.unwrap();
    logs();
    // The server's `default` is absent (no identity yet).
    let server_cert = issue(&ca, "default", "server");
    let server_yaml = server_bootstrap(
        Mode::Strict,
        app.addr(),
        &secrets(&server_cert, &server_cert.roots).replace("name: default", "name: other"),
        &[],
    );
    let server = start(&server_yaml).await;
    let inbound = server.listener("inbound").unwrap();
    let client = start(&client_bootstrap(
        &[(inbound, true)],
        &tls_transport(&[]),
        &secrets(&client_cert, &client_cert.roots),
    ))
    .await;
    let resp = send(client.listener("outbound").unwrap(), get("server"))
        .await
        .unwrap();
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    wait_until(Duration::from_secs(5), async || {
        log_text().contains("secret \\\"default\\\" not available yet")
            || log_text().contains("secret \"default\" not available yet")
    })
    .await
    .unwrap();
    // Installing it (as the identity manager does) fixes the next handshake.
    server.proxy.secrets().set_local(
        "default",
        mesh_proxy::model::TlsSecret::Certificate(
            mesh_proxy::model::TlsCertificateSource::InlinePem {
                cert_chain: server_cert.chain.clone(),
                private_key: server_cert.key.clone(),
            },
        ),
    );
    let resp = send(client.listener("outbound").unwrap(), get("server"))
        .await
        .unwrap();
    assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
}

#[tokio::test]
async fn silent_tls_server_is_a_connect_failure_within_connect_timeout() {
    let ca = ca(TD);
    let client_cert = issue(&ca, "default", "client");
    // Accepts TCP and never says a word.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let client = start(&client_bootstrap(
        &[(addr, true)],
        &tls_transport(&[]),
        &secrets(&client_cert, &client_cert.roots),
    ))
    .await;
    let resp = send(client.listener("outbound").unwrap(), get("server"))
        .await
        .unwrap();
    assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        resp.text()
            .contains("upstream TLS: handshake not done within"),
        "{}",
        resp.text()
    );
    assert!(stat(&client, "cluster.server.ssl.connection_error") >= 1);
    holder.abort();
}

/// One request from a client sidecar to a STRICT server sidecar whose
/// inbound TLS context gets `server_tls_params` (and the client's cluster
/// `client_tls_params`); the server's access log line, if any.
async fn one_request_logged(
    server_tls_params: &str,
    client_tls_params: &str,
) -> (StatusCode, Option<String>, String, String) {
    let ca = ca(TD);
    let client_cert = issue(&ca, "default", "client");
    let server_cert = issue(&ca, "default", "server");
    let app = HttpUpstream::start("app").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log_path = dir.path().join("access.log");
    let access_log = format!(
        r#"stat_prefix: inbound
          access_log:
          - name: envoy.access_loggers.file
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: {}
              log_format: {{ text_format_source: {{ inline_string: "peer=%DOWNSTREAM_PEER_URI_SAN% local=%DOWNSTREAM_LOCAL_URI_SAN% tls=%DOWNSTREAM_TLS_VERSION% cipher=%DOWNSTREAM_TLS_CIPHER%\n" }} }}"#,
        log_path.display()
    );
    let server_yaml = server_bootstrap(
        Mode::Strict,
        app.addr(),
        &secrets(&server_cert, &server_cert.roots),
        &[&client_cert.uri],
    )
    .replacen("stat_prefix: inbound", &access_log, 1)
    .replacen(
        "alpn_protocols: [h2, http/1.1]",
        &format!("alpn_protocols: [h2, http/1.1]\n            tls_params: {server_tls_params}"),
        1,
    );
    let server = start(&server_yaml).await;
    let inbound = server.listener("inbound").unwrap();
    let transport = tls_transport(&[&server_cert.uri]);
    // Next to `alpn_protocols`, at its indentation.
    let alpn_line = transport
        .lines()
        .find(|l| l.trim_start().starts_with("alpn_protocols:"))
        .unwrap()
        .to_string();
    let indent = &alpn_line[..alpn_line.len() - alpn_line.trim_start().len()];
    let transport = transport.replacen(
        &alpn_line,
        &format!("{alpn_line}\n{indent}tls_params: {client_tls_params}"),
        1,
    );
    let client = start(&client_bootstrap(
        &[(inbound, true)],
        &transport,
        &secrets(&client_cert, &client_cert.roots),
    ))
    .await;
    let resp = send(client.listener("outbound").unwrap(), get("server"))
        .await
        .unwrap();
    let mut line = None;
    if resp.status == StatusCode::OK {
        wait_until(Duration::from_secs(5), async || {
            std::fs::read_to_string(&log_path).is_ok_and(|t| !t.is_empty())
        })
        .await
        .unwrap();
        line = std::fs::read_to_string(&log_path).ok();
    }
    (resp.status, line, client_cert.uri, server_cert.uri)
}

#[tokio::test]
async fn access_log_names_the_peer_identity_and_tls_version() {
    let (status, line, client, server) = one_request_logged("{}", "{}").await;
    assert_eq!(status, StatusCode::OK);
    let line = line.unwrap();
    assert!(
        // AES-128-GCM first, as BoringSSL prefers it: Envoy sidecars agree.
        line.contains(&format!(
            "peer={client} local={server} tls=TLSv1.3 cipher=TLS_AES_128_GCM_SHA256"
        )),
        "{line}"
    );
}

#[tokio::test]
async fn tls_params_pin_the_protocol_version() {
    let (status, line, ..) =
        one_request_logged("{tls_maximum_protocol_version: TLSv1_2}", "{}").await;
    assert_eq!(status, StatusCode::OK);
    let line = line.unwrap();
    // ECDSA certificates: BoringSSL's first TLS 1.2 suite, as Envoy picks.
    assert!(
        line.contains("tls=TLSv1.2 cipher=ECDHE-ECDSA-AES128-GCM-SHA256"),
        "{line}"
    );
    // A client that stops at 1.2 meets a server that starts at 1.3: no
    // common version, the upstream connection fails (503).
    let (status, ..) = one_request_logged(
        "{tls_minimum_protocol_version: TLSv1_3}",
        "{tls_maximum_protocol_version: TLSv1_2}",
    )
    .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
}
