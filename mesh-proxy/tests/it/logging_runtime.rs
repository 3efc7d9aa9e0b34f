//! `/logging` changes what the proxy really logs, at runtime. The test installs the
//! process-wide tracing subscriber, as `tls_support::logs` does for the TLS tests of this
//! binary, and only one can: so it runs alone, in a child process of this test binary.

use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::common::*;
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

/// Set in the child process that runs the test alone.
const ALONE: &str = "MESH_PROXY_LOGGING_TEST_ALONE";

#[test]
fn posting_a_level_changes_what_is_logged() {
    if std::env::var_os(ALONE).is_some() {
        return tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(changes_what_is_logged());
    }
    // The test's name as libtest knows it: the module path without the crate.
    let module = module_path!().split_once("::").map_or("", |(_, m)| m);
    let name = format!("{module}::posting_a_level_changes_what_is_logged");
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name.as_str(), "--exact", "--test-threads=1"])
        .env(ALONE, "1")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("1 passed"),
        "alone in a child process:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

async fn changes_what_is_logged() {
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
