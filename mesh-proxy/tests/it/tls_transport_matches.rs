//! Auto-mTLS as Istio emits it: `transport_socket_matches` pick TLS for
//! endpoints labelled `tlsMode: istio` and plaintext for the others, with
//! separate pools; and a TCP proxy behind a TLS-terminating chain.

use std::sync::Arc;

use crate::tls_support::*;
use http::{Request, StatusCode};
use mesh_test_util::{HttpUpstream, TcpEchoUpstream, send};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn tls_for_sidecars_plaintext_for_the_rest() {
    // STRICT: only TLS reaches `app`; `plain` only speaks plaintext. The server runs while
    // its binding lives.
    let StrictServer {
        client_cert,
        server_cert,
        app,
        server: _server,
        inbound,
    } = StrictServer::start("cluster.local").await;
    let plain = HttpUpstream::start("plain").await.unwrap();
    let client = start(&client_bootstrap(
        &[(inbound, true), (plain.addr(), false)],
        &auto_mtls_transport(&[&server_cert.uri]),
        &secrets(&client_cert, &client_cert.roots),
    ))
    .await;
    let outbound = client.listener("outbound").unwrap();
    for _ in 0..10 {
        let resp = send(
            outbound,
            Request::get("/x")
                .header("host", "server")
                .body("")
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    }
    assert_eq!(app.request_count() + plain.request_count(), 10);
    assert!(app.request_count() >= 3 && plain.request_count() >= 3);
    for r in app.requests() {
        assert!(
            r.header("x-forwarded-client-cert")
                .is_some_and(|x| x.contains(&client_cert.uri))
        );
    }
    for r in plain.requests() {
        assert!(r.header("x-forwarded-client-cert").is_none());
    }
    assert!(stat(&client, "cluster.server.ssl.handshake") >= 1);
}

#[tokio::test]
async fn tcp_proxy_behind_a_tls_chain() {
    let ca = ca("cluster.local");
    let server_cert = issue(&ca, "default", "server");
    let client_cert = issue(&ca, "default", "client");
    let echo = TcpEchoUpstream::start().await.unwrap();
    let yaml = format!(
        r#"node: {{ id: s, cluster: s }}
static_resources:
  listeners:
  - name: inbound
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    listener_filters:
    - name: envoy.filters.listener.tls_inspector
      typed_config:
        "@type": type.googleapis.com/envoy.extensions.filters.listener.tls_inspector.v3.TlsInspector
    filter_chains:
    - filter_chain_match: {{ transport_protocol: tls }}
      filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp
          cluster: echo{tls}
  clusters:
  - name: echo
    connect_timeout: 1s
    type: STATIC
    load_assignment:
      cluster_name: echo
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}{secrets}
"#,
        tls = downstream_tls(&[]),
        port = echo.addr().port(),
        secrets = secrets(&server_cert, &server_cert.roots),
    );
    let server = start(&yaml).await;
    let inbound = server.listener("inbound").unwrap();

    // Client auth is required: present the client certificate, and check
    // the server by its SPIFFE trust domain (it has no DNS name).
    let with_cert = client_config_with_cert(&client_cert);
    let tcp = tokio::net::TcpStream::connect(inbound).await.unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(with_cert))
        .connect(
            rustls::pki_types::ServerName::IpAddress(inbound.ip().into()),
            tcp,
        )
        .await
        .unwrap();
    tls.write_all(b"ping over tls").await.unwrap();
    let mut buf = [0u8; 13];
    tls.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping over tls");
    assert!(stat(&server, &format!("listener.{inbound}.ssl.handshake")) >= 1);

    // A client sidecar's TCP proxy originates mTLS to the same chain.
    let client_yaml = format!(
        r#"node: {{ id: c, cluster: c }}
static_resources:
  listeners:
  - name: outbound_tcp
    address: {{ socket_address: {{ address: 127.0.0.1, port_value: 0 }} }}
    filter_chains:
    - filters:
      - name: envoy.filters.network.tcp_proxy
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.tcp_proxy.v3.TcpProxy
          stat_prefix: tcp_out
          cluster: server
  clusters:
  - name: server
    connect_timeout: 1s
    type: STATIC{transport}
    load_assignment:
      cluster_name: server
      endpoints:
      - lb_endpoints:
        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}{secrets}
"#,
        transport = tls_transport(&[&server_cert.uri]),
        port = inbound.port(),
        secrets = secrets(&client_cert, &client_cert.roots),
    );
    let client = start(&client_yaml).await;
    let mut plain = tokio::net::TcpStream::connect(client.listener("outbound_tcp").unwrap())
        .await
        .unwrap();
    plain.write_all(b"ping via sidecar").await.unwrap();
    let mut buf = [0u8; 16];
    plain.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping via sidecar");
    assert_eq!(stat(&client, "cluster.server.ssl.handshake"), 1);
}

#[tokio::test]
async fn http2_upstream_over_tls_by_alpn() {
    logs();
    // The app and the server run while their bindings live.
    let StrictServer {
        client_cert,
        server_cert,
        app: _app,
        server: _server,
        inbound,
    } = StrictServer::start("cluster.local").await;
    // Istio adds h2 to the ALPN of HTTP/2 clusters.
    let transport = tls_transport(&[&server_cert.uri]).replace(
        "[istio-peer-exchange, istio]",
        "[istio-peer-exchange, istio, h2]",
    ) + r#"
    typed_extension_protocol_options:
      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:
        "@type": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions
        explicit_http_config: { http2_protocol_options: {} }"#;
    let client = start(&client_bootstrap(
        &[(inbound, true)],
        &transport,
        &secrets(&client_cert, &client_cert.roots),
    ))
    .await;
    for _ in 0..3 {
        let resp = send(
            client.listener("outbound").unwrap(),
            Request::get("/h2")
                .header("host", "server")
                .body("")
                .unwrap(),
        )
        .await
        .unwrap();
        assert_eq!(resp.status, StatusCode::OK, "{}", resp.text());
    }
    // One multiplexed connection, negotiated as h2.
    assert_eq!(stat(&client, "cluster.server.ssl.handshake"), 1);
    let text = log_text();
    assert!(
        text.lines()
            .any(|l| l.contains("downstream TLS established")
                && (l.contains("alpn=\"h2\"") || l.contains("alpn=h2"))),
        "{text}"
    );
}

fn client_config_with_cert(p: &Pem) -> rustls::ClientConfig {
    let id = mesh_ca::SpiffeId::parse(&p.uri).unwrap();
    let issued = mesh_ca::authority::IssuedIdentity {
        identity: id,
        chain: mesh_ca::bundle::certificates_from_pem("c", &p.chain).unwrap(),
        key: rustls::pki_types::PrivateKeyDer::Pkcs8(
            pem::parse(&p.key).unwrap().into_contents().into(),
        ),
        roots: mesh_ca::TrustBundle::from_pem("roots", &p.roots).unwrap(),
        not_before: std::time::SystemTime::now(),
        not_after: std::time::SystemTime::now(),
    };
    let mut c = mesh_ca::tls::client_config(
        &issued.roots,
        Some(&issued),
        mesh_ca::tls::ExpectedServer::TrustDomain("cluster.local".into()),
    )
    .unwrap();
    c.alpn_protocols.clear();
    c
}
