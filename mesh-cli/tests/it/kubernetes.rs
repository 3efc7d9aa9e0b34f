//! meshctl against a real Kubernetes API server (`mesh_test_util::kube`): `analyze
//! --kubeconfig` reads the cluster's live configuration, and `proxy-status --kubeconfig`
//! reaches the control plane's debug port through the API server's pod proxy, with a real
//! mesh-control (watching that server) and a real mesh-proxy connected to it.
//!
//! The API server only proxies to non-loopback pod IPs, so the control plane's debug port
//! listens on this machine's own address, which its "pod" reports as its IP.

use std::io::{BufRead as _, BufReader};
use std::net::{IpAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use mesh_test_util::AdsBootstrap;
use mesh_test_util::kube::KubeApiServer;
use serde_json::json;

fn meshctl() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_meshctl"))
}

fn bin(name: &str) -> PathBuf {
    meshctl().parent().unwrap().join(name)
}

fn run(args: &[&str]) -> Output {
    Command::new(meshctl()).args(args).output().unwrap()
}

async fn client(kube: &KubeApiServer) -> Client {
    let file = kube::config::Kubeconfig::read_from(kube.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(file, &Default::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

fn virtual_services(client: &Client, namespace: &str) -> Api<DynamicObject> {
    let vs = ApiResource {
        group: "networking.istio.io".into(),
        version: "v1".into(),
        api_version: "networking.istio.io/v1".into(),
        kind: "VirtualService".into(),
        plural: "virtualservices".into(),
    };
    Api::namespaced_with(client.clone(), namespace, &vs)
}

/// The mesh's CRDs (what `charts/mesh/crds` holds: a mesh-api test keeps them equal), served.
async fn install_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in mesh_api::crd::all() {
        crds.create(&PostParams::default(), &crd).await.unwrap();
    }
    let api = virtual_services(client, "default");
    mesh_test_util::wait_until(Duration::from_secs(30), async || {
        api.list(&Default::default()).await?;
        anyhow::Ok(())
    })
    .await
    .expect("VirtualService served");
}

async fn create_vs(client: &Client, name: &str, spec: serde_json::Value) {
    create_vs_in(client, "default", name, spec).await;
}

async fn create_vs_in(client: &Client, namespace: &str, name: &str, spec: serde_json::Value) {
    let api = virtual_services(client, namespace);
    let obj: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": name, "namespace": namespace}, "spec": spec
    }))
    .unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyze_reads_the_clusters_live_configuration() {
    let Some(kube) = KubeApiServer::start() else {
        return;
    };
    let client = client(&kube).await;
    install_crds(&client).await;
    // Valid for the API server's schema, refused by the mesh's validation.
    create_vs(
        &client,
        "reviews",
        json!({"hosts": ["reviews"], "http": [
        {"timeout": "soon", "route": [{"destination": {"host": "reviews"}}]}]}),
    )
    .await;
    // Fine on its own, but routes to a subset no DestinationRule defines.
    create_vs(
        &client,
        "ratings",
        json!({"hosts": ["ratings"], "http": [
        {"route": [{"destination": {"host": "ratings", "subset": "v9"}}]}]}),
    )
    .await;
    // In another namespace: reported with -A or -n shop, not by default (the context's
    // namespace, `default`, as istioctl).
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let shop = serde_json::from_value(json!({"metadata": {"name": "shop"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &shop)
        .await
        .unwrap();
    create_vs_in(
        &client,
        "shop",
        "cart",
        json!({"hosts": ["cart"], "http": [
        {"route": [{"destination": {"host": "cart"}, "weight": 101}]}]}),
    )
    .await;
    // Istio's EnvoyFilter, which the mesh does not implement: noted as skipped.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = serde_json::from_value(mesh_test_util::kube::envoy_filter_crd()).unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let filters: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource {
            group: "networking.istio.io".into(),
            version: "v1alpha3".into(),
            api_version: "networking.istio.io/v1alpha3".into(),
            kind: "EnvoyFilter".into(),
            plural: "envoyfilters".into(),
        },
    );
    let filter: DynamicObject =
        serde_json::from_value(mesh_test_util::kube::envoy_filter("add-header")).unwrap();
    mesh_test_util::wait_until(Duration::from_secs(30), async || {
        filters.create(&PostParams::default(), &filter).await?;
        anyhow::Ok(())
    })
    .await
    .expect("EnvoyFilter served");
    let analyze = async |extra: &[&str]| {
        let mut args = vec![
            "analyze".to_string(),
            "--kubeconfig".to_string(),
            kube.kubeconfig().to_str().unwrap().to_string(),
        ];
        args.extend(extra.iter().map(|a| a.to_string()));
        tokio::task::spawn_blocking(move || {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            run(&a)
        })
        .await
        .unwrap()
    };
    let all = analyze(&["-A"]).await;
    let all_out = String::from_utf8_lossy(&all.stdout).to_string();
    assert!(all_out.contains("(VirtualService shop/cart)"), "{all_out}");
    assert!(
        all_out.contains("(VirtualService default/reviews)"),
        "{all_out}"
    );
    let shop = analyze(&["-n", "shop"]).await;
    let shop_out = String::from_utf8_lossy(&shop.stdout).to_string();
    assert!(
        shop_out.contains("(VirtualService shop/cart)"),
        "{shop_out}"
    );
    assert!(!shop_out.contains("default/"), "{shop_out}");
    assert_eq!(shop.status.code(), Some(79));

    let out = analyze(&[]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    assert_eq!(out.status.code(), Some(79), "{stdout}{stderr}");
    assert!(
        stdout.contains(
            "Error [IST0106] (VirtualService default/reviews) Schema validation error: spec.http[0].timeout: invalid duration \"soon\""
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("Error [IST0101] (VirtualService default/ratings) Referenced host+subset in destinationrule not found: \"ratings+v9\""),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!("analyzed the cluster at {}", kube.url())),
        "{stderr}"
    );
    assert!(
        stderr.contains("skipped networking.istio.io/v1alpha3 EnvoyFilter add-header"),
        "{stderr}"
    );
}

/// This machine's address that is not loopback (the API server refuses to proxy to
/// loopback), from the route a UDP socket would take; no packet is sent.
fn host_ip() -> Option<IpAddr> {
    let socket = UdpSocket::bind("0.0.0.0:0").ok()?;
    socket.connect("192.0.2.1:9").ok()?;
    let ip = socket.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// mesh-control watching the cluster; its xDS and debug addresses from its "serving" line.
fn start_control_plane(kubeconfig: &str, debug_ip: IpAddr) -> (Killed, String, String) {
    let mut child = Command::new(bin("mesh-control"))
        .args(["--kubeconfig", kubeconfig, "--xds-address", "127.0.0.1:0"])
        .args(["--secure-xds-address", "off", "--debug-address"])
        .arg(format!("{debug_ip}:0"))
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut log = String::new();
    let line = loop {
        let line = lines
            .next()
            .unwrap_or_else(|| panic!("mesh-control ended:\n{log}"))
            .unwrap();
        log.push_str(&line);
        log.push('\n');
        if line.contains("mesh-control serving") {
            break line;
        }
    };
    // Keep draining its log so it never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    let field = |name: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(name))
            .unwrap_or_else(|| panic!("{name} in {line}"))
            .to_string()
    };
    (Killed(child), field("xds="), field("debug="))
}

fn start_proxy(xds: &str, dir: &std::path::Path) -> Killed {
    let bootstrap = AdsBootstrap::new(
        "sidecar~127.0.0.1~reviews-v1.default~default.svc.cluster.local",
        xds.parse().unwrap(),
    )
    .cluster("reviews.default")
    .metadata("{NAMESPACE: default, LABELS: {app: reviews, version: v1}}")
    .yaml();
    let path = dir.join("bootstrap.yaml");
    std::fs::write(&path, bootstrap).unwrap();
    Killed(
        Command::new(bin("mesh-proxy"))
            .arg("--config")
            .arg(&path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_status_reaches_the_clusters_control_plane_through_the_api_server() {
    let Some(kube) = KubeApiServer::start() else {
        return;
    };
    for needed in ["mesh-control", "mesh-proxy"] {
        if !bin(needed).is_file() {
            eprintln!("SKIPPED: {needed} is not built next to meshctl; run `cargo build` first");
            return;
        }
    }
    let Some(ip) = host_ip() else {
        panic!("this machine has no non-loopback address for the control plane's pod IP");
    };
    let client = client(&kube).await;
    install_crds(&client).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = serde_json::from_value(json!({"metadata": {"name": "istio-system"}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();

    let kubeconfig = kube.kubeconfig().to_str().unwrap().to_string();
    let (_control_plane, xds, debug) = {
        let k = kubeconfig.clone();
        tokio::task::spawn_blocking(move || start_control_plane(&k, ip))
            .await
            .unwrap()
    };
    let debug_port = debug.rsplit_once(':').unwrap().1.to_string();
    let dir = tempfile::tempdir().unwrap();
    let _proxy = start_proxy(&xds, dir.path());

    // The control plane's pod, as the chart would run it and a kubelet report it.
    let pods: Api<Pod> = Api::namespaced(client.clone(), "istio-system");
    let pod = serde_json::from_value(json!({
        "metadata": {"name": "istiod-7d9f-x2x", "labels": {"app": "istiod"}},
        "spec": {"containers": [{"name": "discovery", "image": "mesh-control"}]}
    }))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let status = json!({"status": {"phase": "Running", "podIP": ip.to_string(),
        "conditions": [{"type": "Ready", "status": "True"}]}});
    pods.patch_status(
        "istiod-7d9f-x2x",
        &PatchParams::default(),
        &Patch::Merge(&status),
    )
    .await
    .unwrap();

    let args = [
        "proxy-status",
        "--verbose",
        "--kubeconfig",
        &kubeconfig,
        "--debug-port",
        &debug_port,
    ]
    .map(String::from);
    let deadline = Instant::now() + Duration::from_secs(30);
    let table = loop {
        let a = args.clone();
        let out = tokio::task::spawn_blocking(move || {
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            run(&a)
        })
        .await
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        if out.status.success()
            && stdout.contains("reviews-v1.default")
            && stdout.contains("SYNCED")
        {
            break stdout;
        }
        assert!(
            Instant::now() < deadline,
            "proxy-status never listed the proxy SYNCED:\n{stdout}{stderr}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    eprintln!("{table}");
    assert!(table.contains("istiod-7d9f-x2x.istio-system"), "{table}");

    // A namespace with no control plane says so.
    let out = tokio::task::spawn_blocking(move || {
        run(&["proxy-status", "--kubeconfig", &kubeconfig, "-i", "nowhere"])
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no ready control plane pod (app=istiod) in namespace nowhere"),
        "{stderr}"
    );
}
