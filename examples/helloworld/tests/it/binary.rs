//! The real `helloworld` binary, as `meshctl up` runs it.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use http::{Request, StatusCode};
use mesh_test_util::send;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_helloworld");

fn command() -> Command {
    let mut cmd = Command::new(BIN);
    // The test's own environment must not change the app's defaults.
    for var in [
        "PORT",
        "BIND_ADDRESS",
        "SERVICE_VERSION",
        "INSTANCE_NAME",
        "LATENCY",
        "LATENCY_JITTER",
        "FAILURE_RATE",
        "HELLOWORLD_QUIET",
    ] {
        cmd.env_remove(var);
    }
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    cmd
}

#[tokio::test]
async fn prints_its_address_first_and_serves_it() {
    let mut child = command()
        .args(["--port", "0", "--instance", "bin-1"])
        .env("SERVICE_VERSION", "risky")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(30),
        BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .expect("no address line within 30s")
    .unwrap();
    let addr: SocketAddr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    assert!(addr.ip().is_loopback());
    assert_ne!(addr.port(), 0);
    let resp = send(addr, Request::get("/istio").body("").unwrap())
        .await
        .unwrap();
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.text(), "Hello version: risky, instance: bin-1\n");
    child.kill().await.unwrap();
}

#[tokio::test]
async fn bad_flags_exit_non_zero_naming_the_flag() {
    let out = command()
        .args(["--port", "0", "--failure-rate", "2"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--failure-rate"), "{stderr}");

    let out = command()
        .args(["--port", "0", "--latency", "soon"])
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--latency"), "{stderr}");
}

#[tokio::test]
async fn logs_one_line_per_request_and_stops_on_sigterm() {
    let mut child = command()
        .args(["--port", "0", "--instance", "bin-2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).await.unwrap();
    let addr: SocketAddr = line.trim()["listening on ".len()..].parse().unwrap();
    for _ in 0..3 {
        let resp = send(addr, Request::get("/hello").body("").unwrap())
            .await
            .unwrap();
        assert_eq!(resp.status, StatusCode::OK);
    }
    // SIGTERM through the `kill` command: the test may not use unsafe libc calls.
    let pid = child.id().unwrap().to_string();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(status.success());
    let exit = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("did not stop within 30s of SIGTERM")
        .unwrap();
    assert!(exit.success(), "{exit}");
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr)
        .await
        .unwrap();
    let request_lines = stderr
        .lines()
        .filter(|l| l.starts_with("GET /hello"))
        .count();
    assert_eq!(request_lines, 3, "{stderr}");
}
