//! `/logging` changes what the proxy really logs, at runtime (own test
//! binary: it installs the process-wide tracing subscriber).

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use mesh_proxy::model::*;
use mesh_proxy::server::{ProxyConfig, build};
use mesh_test_util::{HttpUpstream, send};

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn take(&self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut *self.0.lock().unwrap())).into_owned()
    }
}

#[tokio::test]
async fn posting_a_level_changes_what_is_logged() {
    let captured = Captured::default();
    let writer = captured.clone();
    let control = mesh_proxy::logging::install("info", move || writer.clone()).unwrap();

    let up = HttpUpstream::start("up").await.unwrap();
    let t = table(
        "routes",
        vec![vhost(
            "all",
            vec![DomainPattern::Any],
            vec![to_cluster("r", prefix("/"), "c")],
        )],
    );
    let mut config = ProxyConfig::new(http_snapshot(
        t,
        vec![cluster("c", &[up.addr()], LbPolicy::RoundRobin)],
        vec![],
    ));
    config.admin_address = Some("127.0.0.1:0".parse().unwrap());
    config.logging = Some(Arc::new(control));
    let bound = build(config).await.unwrap();
    let addr = bound.listener(LISTENER).unwrap();
    let admin = bound.admin_addr.unwrap();
    let post = |q: &str| {
        http::Request::post(q.to_string())
            .header("host", "admin")
            .body("")
            .unwrap()
    };

    captured.take();
    send(addr, get("h", "/quiet")).await.unwrap();
    assert!(
        !captured.take().contains("route selected"),
        "router debug is off at info"
    );

    assert_eq!(
        send(admin, post("/logging?paths=router:debug"))
            .await
            .unwrap()
            .status,
        200
    );
    send(addr, get("h", "/loud")).await.unwrap();
    let logged = captured.take();
    assert!(
        logged.contains("route selected") && logged.contains("/loud"),
        "{logged}"
    );
    // Only the router was raised: the connection manager stays quiet.
    assert!(!logged.contains("mesh_proxy::upstream::pool"), "{logged}");

    assert_eq!(
        send(admin, post("/logging?level=info"))
            .await
            .unwrap()
            .status,
        200
    );
    send(addr, get("h", "/quiet-again")).await.unwrap();
    assert!(!captured.take().contains("route selected"));
}
