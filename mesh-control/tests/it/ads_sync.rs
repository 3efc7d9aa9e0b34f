//! ADS over a real gRPC stream with a real tonic client: initial sync, ACK,
//! NACK, pushes on file changes (RDS only, EDS only), reconnect, bad files,
//! a big file that must not stall the control plane.

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use crate::ads_support::*;
use mesh_test_util::wait_until;

#[tokio::test]
async fn initial_sync_sends_all_four_types_and_records_acks() {
    let dir = config_dir();
    let bound = start(dir.path()).await;
    let mut client = AdsClient::connect(bound.xds_address(), node(NODE_ID)).await;
    let s = sync_all(&mut client).await;

    let cluster_names: Vec<String> = clusters(&s.cds).into_iter().map(|c| c.name).collect();
    for subset in ["v1", "v2"] {
        let name = format!("outbound|9080|{subset}|reviews.default.svc.cluster.local");
        assert!(cluster_names.contains(&name), "{name} in {cluster_names:?}");
    }
    let ports = endpoint_ports(&s.eds);
    assert!(
        ports.contains(&(
            "outbound|9080|v1|reviews.default.svc.cluster.local".into(),
            20001
        )),
        "{ports:?}"
    );
    assert!(
        ports.contains(&(
            "outbound|9080|v2|reviews.default.svc.cluster.local".into(),
            20002
        )),
        "{ports:?}"
    );
    assert!(!s.lds.resources.is_empty(), "listeners sent");
    assert!(!s.rds_names.is_empty(), "listeners use RDS");
    let w = weights(&s.rds);
    assert!(
        w.contains(&(
            "outbound|9080|v1|reviews.default.svc.cluster.local".into(),
            90
        )),
        "{w:?}"
    );
    for r in [&s.cds, &s.eds, &s.lds, &s.rds] {
        assert!(!r.version_info.is_empty() && !r.nonce.is_empty(), "{r:?}");
    }

    // Every type ACKed: SYNCED with the versions and nonces sent.
    let entry = wait_until(WAIT, async || {
        let p = syncz_of(&bound, NODE_ID)
            .await
            .ok_or("proxy not in syncz")?;
        for t in ["cds", "eds", "lds", "rds"] {
            if p["types"][t]["status"] != "SYNCED" {
                return Err(format!("{t} not SYNCED: {p}"));
            }
        }
        Ok(p)
    })
    .await
    .unwrap();
    assert_eq!(entry["kind"], "sidecar");
    assert_eq!(entry["namespace"], "default");
    assert_eq!(entry["pod"], "client");
    assert!(
        entry["connected_since"]
            .as_str()
            .is_some_and(|s| s.ends_with('Z'))
    );
    for (t, r) in [
        ("cds", &s.cds),
        ("eds", &s.eds),
        ("lds", &s.lds),
        ("rds", &s.rds),
    ] {
        assert_eq!(entry["types"][t]["sent_version"], r.version_info.as_str());
        assert_eq!(entry["types"][t]["acked_version"], r.version_info.as_str());
        assert_eq!(entry["types"][t]["acked_nonce"], r.nonce.as_str());
        assert_eq!(entry["types"][t]["last_nack"], serde_json::Value::Null);
    }
    assert_eq!(
        entry["cluster_acked"],
        s.cds.nonce.as_str(),
        "Istio's flat fields"
    );
    assert_eq!(entry["route_sent"], s.rds.nonce.as_str());

    let metrics = mesh_test_util::HttpClient::http1()
        .get(&format!("http://{}/metrics", bound.debug_address()))
        .await
        .unwrap()
        .text();
    assert!(metrics.contains("pilot_xds 1"), "{metrics}");
    assert!(
        metrics.contains("pilot_xds_pushes_total{type=\"cds\"}"),
        "{metrics}"
    );
    bound.shutdown().await;
}

#[tokio::test]
async fn nack_is_recorded_with_its_detail_and_the_type_is_stale() {
    let dir = config_dir();
    let bound = start(dir.path()).await;
    let mut client = AdsClient::connect(bound.xds_address(), node(NODE_ID)).await;
    client.subscribe(CDS, &[]).await;
    let first = client.recv_type(CDS).await;
    client.ack(&first, &[]).await;

    // A new CDS version (new subset) that the proxy rejects.
    write(
        dir.path(),
        "destination-rule.yaml",
        &destination_rule().replace(
            "  - name: v2\n    labels: {version: v2}\n",
            "  - name: v2\n    labels: {version: v2}\n  - name: v3\n    labels: {version: v3}\n",
        ),
    );
    let second = client.recv_type(CDS).await;
    assert_ne!(second.version_info, first.version_info);
    client
        .request(
            CDS,
            &[],
            &first.version_info,
            &second.nonce,
            Some("cluster outbound|9080|v3|reviews: unsupported"),
        )
        .await;

    let entry = wait_until(WAIT, async || {
        let p = syncz_of(&bound, NODE_ID)
            .await
            .ok_or("proxy not in syncz")?;
        if p["types"]["cds"]["last_nack"].is_null() {
            return Err(format!("no NACK yet: {p}"));
        }
        Ok(p)
    })
    .await
    .unwrap();
    let cds = &entry["types"]["cds"];
    assert_eq!(cds["status"], "STALE", "{cds}");
    assert_eq!(cds["sent_nonce"], second.nonce.as_str());
    assert_eq!(
        cds["acked_nonce"],
        first.nonce.as_str(),
        "the NACK leaves the last ACK"
    );
    assert_eq!(cds["acked_version"], first.version_info.as_str());
    assert_eq!(cds["last_nack"]["nonce"], second.nonce.as_str());
    assert_eq!(cds["last_nack"]["version"], first.version_info.as_str());
    assert_eq!(
        cds["last_nack"]["error"],
        "cluster outbound|9080|v3|reviews: unsupported"
    );
    let metrics = mesh_test_util::HttpClient::http1()
        .get(&format!("http://{}/metrics", bound.debug_address()))
        .await
        .unwrap()
        .text();
    assert!(
        metrics.contains("pilot_total_xds_rejects_total{type=\"cds\"} 1"),
        "{metrics}"
    );

    // A later ACK clears it.
    write(dir.path(), "destination-rule.yaml", &destination_rule());
    let third = client.recv_type(CDS).await;
    client.ack(&third, &[]).await;
    wait_until(WAIT, async || {
        let p = syncz_of(&bound, NODE_ID).await.unwrap_or_default();
        p["types"]["cds"]["status"] == "SYNCED" && p["types"]["cds"]["last_nack"].is_null()
    })
    .await
    .unwrap();
    bound.shutdown().await;
}

#[tokio::test]
async fn editing_a_virtual_service_weight_pushes_a_new_rds_version_only() {
    let dir = config_dir();
    let bound = start(dir.path()).await;
    let mut client = AdsClient::connect(bound.xds_address(), node(NODE_ID)).await;
    let s = sync_all(&mut client).await;
    let first = syncz_of(&bound, NODE_ID).await.unwrap_or_default();
    assert_eq!(first["generation"], 1, "{first:#}");

    write(dir.path(), "virtual-service.yaml", &virtual_service(80, 20));
    // Routes alone changed: the next response is RDS (CDS/EDS/LDS would come first).
    let rds = client.recv_type(RDS).await;
    assert_ne!(rds.version_info, s.rds.version_info);
    assert_ne!(rds.nonce, s.rds.nonce);
    let w = weights(&rds);
    assert!(
        w.contains(&(
            "outbound|9080|v1|reviews.default.svc.cluster.local".into(),
            80
        )) && w.contains(&(
            "outbound|9080|v2|reviews.default.svc.cluster.local".into(),
            20
        )),
        "{w:?}"
    );
    client.ack(&rds, &s.rds_names).await;
    wait_until(WAIT, async || {
        let p = syncz_of(&bound, NODE_ID).await.unwrap_or_default();
        p["types"]["rds"]["acked_version"] == rds.version_info.as_str()
            && p["types"]["rds"]["status"] == "SYNCED"
    })
    .await
    .unwrap();
    // The stream says which configuration generation it pushed (what `meshctl apply` waits
    // for): the one `/debug/configz` shows.
    let p = syncz_of(&bound, NODE_ID).await.unwrap_or_default();
    let configz = get_json(&bound, "/debug/configz").await;
    assert_eq!(p["generation"], configz["generation"], "{p:#}");
    assert!(configz["generation"].as_u64() >= Some(2), "{configz:#}");
    // The push was timed: one push and one convergence sample.
    let metrics = bound.metrics().encode();
    assert!(
        metrics.contains("pilot_proxy_convergence_time_count 1\n")
            && metrics.contains("pilot_xds_push_time_count 1\n")
            && metrics.contains("pilot_xds_pushes_total{type=\"rds\"} 2\n"),
        "{metrics}"
    );
    bound.shutdown().await;
}

#[tokio::test]
async fn a_workload_entry_change_pushes_eds_only() {
    let dir = config_dir();
    let bound = start(dir.path()).await;
    let mut client = AdsClient::connect(bound.xds_address(), node(NODE_ID)).await;
    let s = sync_all(&mut client).await;

    write(
        dir.path(),
        "workloads-v2.yaml",
        &workload_entry("v2", 20003),
    );
    let eds = client.recv_type(EDS).await;
    assert_ne!(eds.version_info, s.eds.version_info);
    let ports = endpoint_ports(&eds);
    assert!(
        ports.contains(&(
            "outbound|9080|v2|reviews.default.svc.cluster.local".into(),
            20003
        )),
        "{ports:?}"
    );
    client.ack(&eds, &s.eds_names).await;

    // Proof that nothing else followed the EDS push: the next response is the
    // RDS push of a later route change, not CDS or LDS.
    write(dir.path(), "virtual-service.yaml", &virtual_service(50, 50));
    let next = client.recv().await;
    assert_eq!(
        next.type_url, RDS,
        "only EDS was pushed for the endpoint change"
    );
    bound.shutdown().await;
}

#[tokio::test]
async fn a_reconnected_proxy_gets_everything_again() {
    let dir = config_dir();
    let bound = start(dir.path()).await;
    let mut client = AdsClient::connect(bound.xds_address(), node(NODE_ID)).await;
    let before = sync_all(&mut client).await;
    drop(client);
    wait_until(WAIT, async || {
        get_json(&bound, "/debug/syncz")
            .await
            .as_array()
            .map(Vec::len)
            == Some(0)
    })
    .await
    .unwrap();

    let mut client = AdsClient::connect(bound.xds_address(), node(NODE_ID)).await;
    let after = sync_all(&mut client).await;
    for (b, a) in [
        (&before.cds, &after.cds),
        (&before.eds, &after.eds),
        (&before.lds, &after.lds),
        (&before.rds, &after.rds),
    ] {
        assert_eq!(a.resources.len(), b.resources.len(), "{}", a.type_url);
        assert_ne!(a.nonce, b.nonce, "nonces are per stream");
    }
    assert_eq!(after.eds_names, before.eds_names);
    assert_eq!(after.rds_names, before.rds_names);
    let entry = wait_until(WAIT, async || {
        let p = syncz_of(&bound, NODE_ID).await.ok_or("not connected")?;
        if p["types"]["rds"]["status"] != "SYNCED" {
            return Err(format!("{p}"));
        }
        Ok(p)
    })
    .await
    .unwrap();
    assert!(
        entry["connection_id"]
            .as_str()
            .is_some_and(|c| c.ends_with("-2")),
        "second connection: {entry}"
    );
    bound.shutdown().await;
}

#[tokio::test]
async fn a_bad_file_keeps_its_last_good_version_and_shows_in_configz() {
    let dir = config_dir();
    let bound = start(dir.path()).await;
    let mut client = AdsClient::connect(bound.xds_address(), node(NODE_ID)).await;
    let s = sync_all(&mut client).await;

    write(
        dir.path(),
        "virtual-service.yaml",
        &virtual_service(80, 20).replace("weight: 80", "weight: eighty"),
    );
    let configz = wait_until(WAIT, async || {
        let c = get_json(&bound, "/debug/configz").await;
        if c["errors"].as_array().is_some_and(|e| !e.is_empty()) {
            Ok(c)
        } else {
            Err(format!("no error yet: {}", c["errors"]))
        }
    })
    .await
    .unwrap();
    let err = &configz["errors"][0];
    assert!(
        err["file"]
            .as_str()
            .unwrap()
            .ends_with("virtual-service.yaml"),
        "{err}"
    );
    assert_eq!(err["state"], "error: last good version in force");
    let text = err["errors"][0].as_str().unwrap();
    assert!(text.contains("weight"), "the error names the field: {text}");
    // The last good VirtualService is still in force.
    let vs = configz["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "VirtualService")
        .expect("VirtualService still in force")
        .clone();
    assert!(
        vs["file"]
            .as_str()
            .unwrap()
            .ends_with("virtual-service.yaml")
    );
    assert_eq!(vs["object"]["spec"]["http"][0]["route"][0]["weight"], 90);

    // Other files still apply: an endpoint change goes through (EDS), and the
    // routes were not touched (no RDS before it).
    write(
        dir.path(),
        "workloads-v1.yaml",
        &workload_entry("v1", 20011),
    );
    let next = client.recv().await;
    assert_eq!(next.type_url, EDS, "routes unchanged by the bad file");

    // Fixing the file applies it and clears the error.
    write(dir.path(), "virtual-service.yaml", &virtual_service(70, 30));
    let rds = client.recv_type(RDS).await;
    assert_ne!(rds.version_info, s.rds.version_info);
    assert!(weights(&rds).iter().any(|(_, w)| *w == 70));
    wait_until(WAIT, async || {
        get_json(&bound, "/debug/configz").await["errors"]
            .as_array()
            .is_some_and(Vec::is_empty)
    })
    .await
    .unwrap();
    let metrics = mesh_test_util::HttpClient::http1()
        .get(&format!("http://{}/metrics", bound.debug_address()))
        .await
        .unwrap()
        .text();
    assert!(metrics.contains("mesh_config_errors 0"), "{metrics}");
    bound.shutdown().await;
}

#[tokio::test]
async fn a_stream_without_node_or_with_a_bad_node_is_refused() {
    let dir = config_dir();
    let bound = start(dir.path()).await;
    let mut client = AdsClient::connect(bound.xds_address(), node("not-an-istio-id")).await;
    client.subscribe(CDS, &[]).await;
    let status = client.recv_error().await;
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status}");
    assert!(status.message().contains("node"), "{status}");
    bound.shutdown().await;
}

#[tokio::test]
async fn registryz_and_ready_answer() {
    let dir = config_dir();
    let bound = start(dir.path()).await;
    let reg = get_json(&bound, "/debug/registryz").await;
    assert!(
        reg.to_string()
            .contains("reviews.default.svc.cluster.local"),
        "{reg}"
    );
    let ready = mesh_test_util::HttpClient::http1()
        .get(&format!("http://{}/ready", bound.debug_address()))
        .await
        .unwrap();
    assert_eq!(ready.status, 200);
    bound.shutdown().await;
}

#[tokio::test]
async fn shutdown_ends_open_streams() {
    let dir = config_dir();
    let bound = start(dir.path()).await;
    let mut client = AdsClient::connect(bound.xds_address(), node(NODE_ID)).await;
    client.subscribe(CDS, &[]).await;
    let _ = client.recv_type(CDS).await;
    tokio::time::timeout(WAIT, bound.shutdown())
        .await
        .expect("shutdown drains with a stream open");
    assert!(client.recv_end().await, "the stream ends cleanly");
}

#[tokio::test]
async fn an_ack_of_an_older_nonce_is_ignored() {
    let dir = config_dir();
    let bound = start(dir.path()).await;
    let mut client = AdsClient::connect(bound.xds_address(), node(NODE_ID)).await;
    let s = sync_all(&mut client).await;
    write(dir.path(), "virtual-service.yaml", &virtual_service(60, 40));
    let newer = client.recv_type(RDS).await;
    // A late ACK of the previous response: the newer one stays unacknowledged.
    client.ack(&s.rds, &s.rds_names).await;
    // Sync point: a CDS re-subscription is answered after the late ACK is handled.
    client.subscribe(CDS, &[]).await;
    let _ = client.recv_type(CDS).await;
    let p = syncz_of(&bound, NODE_ID).await.unwrap();
    assert_eq!(
        p["types"]["rds"]["status"], "STALE",
        "{}",
        p["types"]["rds"]
    );
    assert_eq!(p["types"]["rds"]["sent_nonce"], newer.nonce.as_str());
    assert_eq!(p["types"]["rds"]["acked_nonce"], s.rds.nonce.as_str());
    client.ack(&newer, &s.rds_names).await;
    wait_until(WAIT, async || {
        let p = syncz_of(&bound, NODE_ID).await.unwrap_or_default();
        p["types"]["rds"]["status"] == "SYNCED"
    })
    .await
    .unwrap();
    bound.shutdown().await;
}

/// What the ADS port answers to one raw gRPC request body: the status and
/// message of its trailers (or headers, for a trailers-only answer).
async fn raw_ads_call(addr: std::net::SocketAddr, body: Vec<u8>) -> (String, String) {
    use http_body_util::{BodyExt, Full};
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tcp),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    let request = http::Request::post(format!(
        "http://{addr}/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources"
    ))
    .header("content-type", "application/grpc")
    .header("te", "trailers")
    .body(Full::new(bytes::Bytes::from(body)))
    .unwrap();
    let response = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        sender.send_request(request),
    )
    .await
    .expect("the ADS port answers")
    .unwrap();
    let head = response.headers().clone();
    let collected = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        response.into_body().collect(),
    )
    .await
    .expect("the ADS port ends the stream")
    .unwrap();
    let trailers = collected.trailers().cloned().unwrap_or_default();
    let field = |name: &str| {
        trailers
            .get(name)
            .or_else(|| head.get(name))
            .map(|v| v.to_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    (field("grpc-status"), field("grpc-message"))
}

fn grpc_frame(compressed: bool, declared_len: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![u8::from(compressed)];
    frame.extend_from_slice(&declared_len.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

#[tokio::test]
async fn malformed_grpc_is_answered_with_an_error_status() {
    use prost::Message as _;
    let dir = config_dir();
    let bound = start(dir.path()).await;
    let addr = bound.xds_address();
    // Bytes that are no DiscoveryRequest: field 1 (version_info) as a
    // varint, then a field number 0.
    let garbage: Vec<u8> = vec![0x08, 0x96, 0x01, 0x00, 0xff, 0xff, 0xff];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "random protobuf bytes",
            grpc_frame(false, garbage.len() as u32, &garbage),
        ),
        ("a 4 GiB length prefix", grpc_frame(false, u32::MAX, b"abc")),
        (
            "the compressed flag without an encoding",
            grpc_frame(true, 3, b"abc"),
        ),
        ("a truncated message", grpc_frame(false, 100, b"0123456789")),
    ];
    for (case, body) in cases {
        let (status, message) = raw_ads_call(addr, body).await;
        assert!(
            !status.is_empty() && status != "0",
            "{case}: grpc-status {status:?} ({message})"
        );
    }

    // A 1 MiB node id is refused without being echoed into grpc-message.
    let request = envoy_types::pb::envoy::service::discovery::v3::DiscoveryRequest {
        node: Some(node(&"x".repeat(1 << 20))),
        type_url: CDS.to_string(),
        ..Default::default()
    };
    let bytes = request.encode_to_vec();
    let (status, message) = raw_ads_call(addr, grpc_frame(false, bytes.len() as u32, &bytes)).await;
    assert_eq!(status, "3", "INVALID_ARGUMENT: {message}");
    assert!(
        message.len() < 2048,
        "{} bytes of grpc-message",
        message.len()
    );
    // grpc-message is percent-encoded.
    assert!(message.contains("over%20the%20limit"), "{message}");
    assert!(
        !message.contains("xxxxxxxx"),
        "the id is not echoed: {message}"
    );
    bound.shutdown().await;
}

/// Each endpoint checked by [`answers_promptly`] must answer within this: a
/// hang is what is caught, not slowness.
const ANSWER: Duration = Duration::from_secs(5);
/// How long the control plane may take to load (or drop) the big file in a
/// debug build on a loaded machine.
const BIG_WAIT: Duration = Duration::from_secs(300);
const V2: &str = "outbound|9080|v2|reviews.default.svc.cluster.local";

/// `n` VirtualServices for hosts of their own, after one for `reviews` that
/// sends 70 % to v2 (the file sorts first, so that one is in force while it is).
fn big_config(n: usize) -> String {
    let mut y = virtual_service(30, 70).replace("name: reviews\n", "name: reviews-big\n");
    for i in 0..n {
        y.push_str(&format!(
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: vs{i}\n  namespace: ns{}\nspec:\n  hosts: [h{i}.example.com]\n  http:\n  - route:\n    - destination: {{host: h{i}.example.com}}\n",
            i % 8
        ));
    }
    y
}

/// Addresses of the control plane under observation.
#[derive(Clone, Copy)]
struct Observed {
    xds: SocketAddr,
    debug: SocketAddr,
}

/// `/ready`, `/debug/syncz` and a new ADS stream each answer within [`ANSWER`].
async fn answers_promptly(cp: Observed, what: &str) {
    for path in ["/ready", "/debug/syncz"] {
        let resp = tokio::time::timeout(
            ANSWER,
            mesh_test_util::HttpClient::http1().get(&format!("http://{}{path}", cp.debug)),
        )
        .await
        .unwrap_or_else(|_| panic!("{path} did not answer within {ANSWER:?} {what}"))
        .unwrap_or_else(|e| panic!("{path} {what}: {e:#}"));
        assert_eq!(resp.status, 200, "{path} {what}: {}", resp.text());
    }
    let probe = node("sidecar~127.0.0.1~probe.default~default.svc.cluster.local");
    let ads = async {
        let mut fresh = AdsClient::connect(cp.xds, probe).await;
        fresh.subscribe(CDS, &[]).await;
        fresh.recv_type(CDS).await
    };
    tokio::time::timeout(ANSWER, ads)
        .await
        .unwrap_or_else(|_| panic!("a new ADS stream got no CDS within {ANSWER:?} {what}"));
}

/// Waits for an RDS push giving v2 `weight`, ACKing what comes, and checks
/// between pushes that the control plane answers. Returns how many rounds of
/// checks passed.
async fn until_v2_weight(
    cp: Observed,
    client: &mut AdsClient,
    s: &Synced,
    weight: u32,
    what: &str,
) -> usize {
    let deadline = tokio::time::Instant::now() + BIG_WAIT;
    let mut rounds = 0;
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no RDS push with v2 at {weight} within {BIG_WAIT:?} {what}"
        );
        answers_promptly(cp, what).await;
        rounds += 1;
        let Some(r) = client.try_recv(Duration::from_millis(200)).await else {
            continue;
        };
        let names = match r.type_url.as_str() {
            EDS => s.eds_names.clone(),
            RDS => s.rds_names.clone(),
            _ => Vec::new(),
        };
        client.ack(&r, &names).await;
        if r.type_url == RDS && weights(&r).contains(&(V2.to_string(), weight)) {
            return rounds;
        }
    }
}

/// The debug document of the configuration in force.
async fn configz(cp: Observed) -> serde_json::Value {
    let url = format!("http://{}/debug/configz", cp.debug);
    let resp = mesh_test_util::HttpClient::http1()
        .get(&url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e:#}"));
    serde_json::from_slice(&resp.body).unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"))
}

/// A proxy's view while `big` is written into `dir` and removed again.
async fn observe_big_file(
    cp: Observed,
    dir: &Path,
    big: &str,
    resources_in_force: impl Fn() -> usize,
) {
    let mut client = AdsClient::connect(cp.xds, node(NODE_ID)).await;
    let s = sync_all(&mut client).await;
    assert!(weights(&s.rds).contains(&(V2.to_string(), 10)));

    // Loading, validating, merging and translating it all happen while the
    // endpoints are polled.
    write(dir, "big.yaml", big);
    let rounds = until_v2_weight(cp, &mut client, &s, 70, "while the big file loads").await;
    let in_force = resources_in_force();
    assert!(in_force > 20_000, "{in_force} resources in force");
    eprintln!("big file in force after {rounds} rounds of checks");

    // Removed: the small configuration comes back, and nothing stays busy.
    std::fs::remove_file(dir.join("big.yaml")).unwrap();
    until_v2_weight(cp, &mut client, &s, 10, "after the big file is removed").await;
    let small = wait_until(WAIT, async || {
        let c = configz(cp).await;
        let resources = c["resources"].as_array().map_or(0, Vec::len);
        let files = c["sources"][0]["files"].as_array().map_or(0, Vec::len);
        if resources == 5 && files == 5 {
            Ok(c)
        } else {
            Err(format!("{resources} resources from {files} files in force"))
        }
    })
    .await
    .unwrap();
    assert!(!small.to_string().contains("big.yaml"), "{small}");
    answers_promptly(cp, "after the big file is removed").await;
}

/// A big file (20,000 VirtualServices) in the watched directory: while it is
/// loaded, validated and translated, `/ready`, `/debug/syncz` and new ADS
/// streams keep answering; once it is removed the small configuration is back.
#[tokio::test]
async fn a_big_file_neither_stalls_the_control_plane_nor_outlives_its_removal() {
    let dir = config_dir();
    let bound = start(dir.path()).await;
    let cp = Observed {
        xds: bound.xds_address(),
        debug: bound.debug_address(),
    };
    let path = dir.path().to_path_buf();
    let snapshots = bound.snapshots();
    let big = big_config(20_000);
    // The proxy and the checks run on a runtime of their own: should the
    // control plane stall its runtime, their clocks still run.
    let observer = tokio::task::spawn_blocking(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("observer runtime")
            .block_on(observe_big_file(cp, &path, &big, || {
                snapshots.borrow().state.config.resources.len()
            }))
    });
    if let Err(e) = observer.await {
        std::panic::resume_unwind(e.into_panic());
    }
    bound.shutdown().await;
}
