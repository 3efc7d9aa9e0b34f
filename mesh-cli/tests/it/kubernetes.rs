//! meshctl against a real Kubernetes API server (`mesh_test_util::kube`): `analyze
//! --kubeconfig` reads the cluster's live configuration; `proxy-status`, `proxy-config` and
//! `explain --kubeconfig` reach the control plane's debug port and a sidecar's admin through
//! the API server (port-forward, or the pod proxy), with a real mesh-control (watching that
//! server) and a real mesh-proxy connected to it.
//!
//! The API server only proxies to non-loopback pod IPs, so the control plane's debug port
//! listens on this machine's own address, which its "pod" reports as its IP.

use std::io::{BufRead as _, BufReader};
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use mesh_test_util::AdsBootstrap;
use mesh_test_util::kube::KubeApiServer;
use mesh_test_util::kubelet::Kubelet;
use mesh_test_util::{free_port, wait_until};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(30);

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
    wait_until(WAIT, async || {
        api.list(&Default::default()).await?;
        anyhow::Ok(())
    })
    .await
    .expect("VirtualService served");
}

async fn create_namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
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
    create_namespace(&client, "shop").await;
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
    wait_until(WAIT, async || {
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

/// The sidecar of Pod `default/POD` (see [`PROXY_POD`]), its admin on 127.0.0.1:`admin_port`
/// as in a pod.
fn start_proxy(xds: &str, dir: &std::path::Path, admin_port: u16) -> Killed {
    let bootstrap = AdsBootstrap::new(
        &format!("sidecar~127.0.0.1~{PROXY_POD}.default~default.svc.cluster.local"),
        xds.parse().unwrap(),
    )
    .cluster("reviews.default")
    .metadata("{NAMESPACE: default, LABELS: {app: reviews, version: v1}}")
    .admin_port(admin_port)
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

/// The pod of the sidecar, a pod of Deployment `reviews-v1`.
const PROXY_POD: &str = "reviews-v1-5d8f7-abcde";
const CONTROL_PLANE_POD: &str = "istiod-7d9f-x2x";

/// Creates a Pod on `node` and reports it Running and Ready at `ip`, as a kubelet would.
async fn running_pod(client: &Client, namespace: &str, pod: serde_json::Value, ip: IpAddr) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let pod: Pod = serde_json::from_value(pod).unwrap();
    let name = pod.metadata.name.clone().unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    let status = json!({"status": {"phase": "Running", "podIP": ip.to_string(),
        "conditions": [{"type": "Ready", "status": "True"}]}});
    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .unwrap();
}

/// Runs meshctl off the runtime's threads.
async fn meshctl_async(args: Vec<String>) -> (bool, String, String) {
    let out = tokio::task::spawn_blocking(move || {
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&a)
    })
    .await
    .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// meshctl reaches the control plane's debug port and a sidecar's admin port (127.0.0.1 in
/// its pod) through the real API server: by port-forward, which the API server hands to the
/// pods' kubelet (`mesh_test_util::kubelet`, the one stand-in), and the debug port also by the
/// API server's pod proxy (`--pod-proxy`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_commands_reach_the_clusters_pods_through_the_api_server() {
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
    create_namespace(&client, "istio-system").await;
    let kubelet = Kubelet::start().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let node = serde_json::from_value(kubelet.node("node-a")).unwrap();
    nodes.create(&PostParams::default(), &node).await.unwrap();
    // A Service for the sidecar to route to, so that `explain` has a route to show.
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    let ratings = serde_json::from_value(json!({
        "metadata": {"name": "ratings"},
        "spec": {"clusterIP": "10.96.0.50", "ports": [{"name": "http", "port": 9080}],
                 "selector": {"app": "ratings"}}
    }))
    .unwrap();
    services
        .create(&PostParams::default(), &ratings)
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
    let admin_port = free_port();
    let _proxy = start_proxy(&xds, dir.path(), admin_port);

    // The pods, as the chart and the injector would run them and a kubelet report them.
    running_pod(
        &client,
        "istio-system",
        json!({"metadata": {"name": CONTROL_PLANE_POD, "labels": {"app": "istiod"}},
               "spec": {"nodeName": "node-a",
                        "containers": [{"name": "discovery", "image": "mesh-control"}]}}),
        ip,
    )
    .await;
    kubelet.forward(
        "istio-system",
        CONTROL_PLANE_POD,
        15014,
        debug.parse().unwrap(),
    );
    let labels = json!({"app": "reviews", "version": "v1"});
    running_pod(
        &client,
        "default",
        json!({"metadata": {"name": PROXY_POD, "labels": labels},
               "spec": {"nodeName": "node-a",
                        "containers": [{"name": "reviews", "image": "reviews"},
                                       {"name": "istio-proxy", "image": "mesh-proxy"}]}}),
        IpAddr::from([10, 1, 0, 7]),
    )
    .await;
    kubelet.forward(
        "default",
        PROXY_POD,
        15000,
        SocketAddr::from(([127, 0, 0, 1], admin_port)),
    );
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let deployment = serde_json::from_value(json!({
        "metadata": {"name": "reviews-v1"},
        "spec": {"selector": {"matchLabels": labels},
                 "template": {"metadata": {"labels": labels},
                              "spec": {"containers": [{"name": "reviews", "image": "reviews"}]}}}
    }))
    .unwrap();
    deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap();

    let args = |list: &[&str]| -> Vec<String> {
        list.iter()
            .map(|a| a.to_string())
            .chain(["--kubeconfig".to_string(), kubeconfig.clone()])
            .collect()
    };
    // The list, through the pod proxy (the debug port listens on the pod's IP) and through a
    // port-forward (the default, as istioctl).
    let pod_proxy = [
        "proxy-status",
        "--verbose",
        "--pod-proxy",
        "--debug-port",
        &debug_port,
    ];
    // The port-forward reaches the pod's own port, the chart's 15014.
    let port_forward = ["proxy-status", "--verbose"];
    for list in [&pod_proxy[..], &port_forward[..]] {
        let table = wait_until(WAIT, async || {
            let (ok, stdout, stderr) = meshctl_async(args(list)).await;
            anyhow::ensure!(
                ok && stdout.contains(&format!("{PROXY_POD}.default")) && stdout.contains("SYNCED"),
                "the proxy is not listed SYNCED ({list:?}):\n{stdout}{stderr}"
            );
            Ok(stdout)
        })
        .await
        .unwrap();
        assert!(
            table.contains(&format!("{CONTROL_PLANE_POD}.istio-system")),
            "{table}"
        );
    }

    // One proxy, by pod and by Deployment: what the control plane sent against what its admin
    // (on 127.0.0.1 in the pod, reached by port-forward) holds.
    for name in [
        format!("{PROXY_POD}.default"),
        "deploy/reviews-v1".to_string(),
    ] {
        let (ok, stdout, stderr) = meshctl_async(args(&["proxy-status", &name])).await;
        assert!(ok, "{stdout}{stderr}");
        for line in ["Clusters Match", "Listeners Match", "Routes Match"] {
            assert!(stdout.contains(line), "{name}: {stdout}{stderr}");
        }
    }
    let (ok, stdout, stderr) = meshctl_async(args(&[
        "proxy-config",
        "cluster",
        "deploy/reviews-v1.default",
    ]))
    .await;
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("ratings.default.svc.cluster.local") && stdout.contains("9080"),
        "{stdout}"
    );
    let (ok, stdout, stderr) =
        meshctl_async(args(&["proxy-config", "route", PROXY_POD, "-n", "default"])).await;
    assert!(ok && stdout.contains("ratings"), "{stdout}{stderr}");
    let (ok, stdout, stderr) = meshctl_async(args(&[
        "explain",
        &format!("{PROXY_POD}.default"),
        "--host",
        "ratings:9080",
    ]))
    .await;
    assert!(ok, "{stdout}{stderr}");
    assert!(
        stdout.contains("outbound|9080||ratings.default.svc.cluster.local"),
        "{stdout}"
    );

    // What cannot be reached says what and why.
    let (ok, _, stderr) =
        meshctl_async(args(&["proxy-config", "listener", "nosuch.default"])).await;
    assert!(!ok);
    assert!(
        stderr.contains("pod default/nosuch:15000 (port-forward") && stderr.contains("not found"),
        "{stderr}"
    );
    let (ok, _, stderr) = meshctl_async(args(&["proxy-config", "listener", "deploy/nosuch"])).await;
    assert!(!ok);
    assert!(stderr.contains("Deployment default/nosuch"), "{stderr}");
    let (ok, _, stderr) = meshctl_async(args(&["proxy-status", "-i", "nowhere"])).await;
    assert!(!ok);
    assert!(
        stderr.contains("no ready control plane pod (app=istiod) in namespace nowhere"),
        "{stderr}"
    );
}
