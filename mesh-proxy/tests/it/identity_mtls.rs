//! End to end: two sidecars whose only certificates come from the mesh CA
//! through their identity managers (no static secrets) do mTLS, and keep
//! serving with zero failed requests while both rotate every ~2s.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use crate::identity_support::{TestCa, spiffe};
use crate::tls_support::{Mode, client_bootstrap, server_bootstrap, start, tls_transport};
use http::{Request, StatusCode};
use mesh_proxy::identity::{IdentityConfig, WorkloadIdentity};
use mesh_test_util::{HttpClient, HttpUpstream, send, wait_until};

/// Counts the rotations of a running identity.
fn count_rotations(identity: &WorkloadIdentity) -> Arc<AtomicU64> {
    let count = Arc::new(AtomicU64::new(0));
    let mut changes = identity.subscribe();
    changes.borrow_and_update();
    let counter = count.clone();
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sidecars_with_ca_issued_identities_rotate_under_traffic_without_failures() {
    let ca = TestCa::start(&[("shop", "web"), ("shop", "api")]).await;
    let (web, api) = (spiffe("shop", "web"), spiffe("shop", "api"));
    let app = HttpUpstream::start("api").await.unwrap();
    // app <- api sidecar (STRICT inbound, accepts web) <- web sidecar (outbound mTLS to api).
    let server = start(&server_bootstrap(
        Mode::Strict,
        app.addr(),
        "",
        &[&web.to_uri()],
    ))
    .await;
    let inbound = server.listener("inbound").unwrap();
    let client = start(&client_bootstrap(
        &[(inbound, true)],
        &tls_transport(&[&api.to_uri()]),
        "",
    ))
    .await;
    let outbound = client.listener("outbound").unwrap();

    let ttl = |config: IdentityConfig| IdentityConfig {
        cert_ttl: Some(Duration::from_secs(4)),
        ..config
    };
    let api_identity = WorkloadIdentity::start(
        ttl(ca.identity_config("api")),
        api.clone(),
        server.proxy.secrets().clone(),
    )
    .await
    .unwrap();
    let web_identity = WorkloadIdentity::start(
        ttl(ca.identity_config("web")),
        web.clone(),
        client.proxy.secrets().clone(),
    )
    .await
    .unwrap();
    let api_rotations = count_rotations(&api_identity);
    let web_rotations = count_rotations(&web_identity);

    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for worker in 0..3u64 {
        let (ok, failed, stop) = (ok.clone(), failed.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let keep_alive = HttpClient::http1();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                // Mostly a kept-alive connection, sometimes a fresh one.
                let resp = if (i + worker).is_multiple_of(4) {
                    let req = Request::get("/r").header("host", "api").body("").unwrap();
                    send(outbound, req).await
                } else {
                    keep_alive.get(&format!("http://{outbound}/r")).await
                };
                match resp {
                    Ok(r) if r.status == StatusCode::OK => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(r) => {
                        eprintln!("failed: {} {}", r.status, r.text());
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => {
                        eprintln!("failed: {e:#}");
                        failed.fetch_add(1, Ordering::Relaxed)
                    }
                };
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    // At least 12s of traffic, across at least two rotations on each side.
    let started = tokio::time::Instant::now();
    wait_until(Duration::from_secs(90), async || {
        started.elapsed() >= Duration::from_secs(12)
            && api_rotations.load(Ordering::Relaxed) >= 2
            && web_rotations.load(Ordering::Relaxed) >= 2
    })
    .await
    .unwrap();
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let (ok, failed) = (ok.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{failed} requests failed ({ok} succeeded)");
    assert!(ok >= 100, "too little traffic: {ok}");

    // The app saw the client's CA-issued identity, verified by the server sidecar.
    let seen = app.last_request().unwrap();
    let xfcc = seen
        .header("x-forwarded-client-cert")
        .expect("XFCC reaches the app");
    assert!(xfcc.starts_with(&format!("By={api};")), "{xfcc}");
    assert!(xfcc.ends_with(&format!(";URI={web}")), "{xfcc}");
}
