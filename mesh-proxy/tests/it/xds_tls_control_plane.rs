//! mesh-proxy's ADS client over TLS against the real control plane:
//! `mesh_control::build` with its secure port (TLS, CA, ADS) on 127.0.0.1:0,
//! a real proxy bootstrapped to that port the way `meshctl up` bootstraps
//! Envoy (an `UpstreamTlsContext` with the mesh root and istiod's SPIFFE ID,
//! ALPN h2, and a bearer token in `initial_metadata`), real traffic through
//! the listeners it receives. Refusals: a wrong server identity and a wrong
//! root fail the handshake with the reason in the log and no configuration.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use mesh_ca::TokenAuthenticator;
use mesh_control::{Bound, ServerConfig};
use mesh_proxy::bootstrap::parse_bootstrap;
use mesh_proxy::identity::{IdentityConfig, WorkloadIdentity, workload_identity};
use mesh_proxy::server::{ProxyConfig, build};
use mesh_proxy::xds::{self, AdsClient, XdsTransport};
use mesh_test_util::{AdsBootstrap, HttpUpstream, send, wait_until};
use tokio::io::{AsyncBufReadExt, BufReader};

const WAIT: Duration = Duration::from_secs(30);
const TD: &str = "cluster.local";
const NAMESPACE: &str = "default";
const SERVICE_ACCOUNT: &str = "client";
const NODE_ID: &str = "sidecar~127.0.0.1~client-1.default~default.svc.cluster.local";
const ISTIOD: &str = "spiffe://cluster.local/ns/istio-system/sa/istiod";
const SERVICE_HOST: &str = "helloworld.default.svc.cluster.local";

/// A control plane with its CA in a temporary state directory, a token for
/// default/client, and a `helloworld` service backed by a real upstream.
struct ControlPlane {
    bound: Bound,
    _config: tempfile::TempDir,
    state: tempfile::TempDir,
    token: String,
    upstream: HttpUpstream,
}

impl ControlPlane {
    async fn start() -> ControlPlane {
        let upstream = HttpUpstream::start("helloworld").await.unwrap();
        let config = tempfile::tempdir().unwrap();
        std::fs::write(
            config.path().join("helloworld.yaml"),
            format!(
                r#"apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: helloworld, namespace: default}}
spec:
  hosts: [{SERVICE_HOST}]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {{number: 5000, name: http, protocol: HTTP}}
  workloadSelector:
    labels: {{app: helloworld}}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {{name: helloworld-v1, namespace: default}}
spec:
  address: 127.0.0.1
  ports: {{http: {port}}}
  labels: {{app: helloworld}}
  serviceAccount: helloworld
"#,
                port = upstream.addr().port()
            ),
        )
        .unwrap();
        let state = tempfile::tempdir().unwrap();
        let mut tokens = TokenAuthenticator::new(TD);
        let token = tokens.issue_token(NAMESPACE, SERVICE_ACCOUNT).unwrap();
        let token_file = state.path().join("tokens");
        tokens.write_file(&token_file).unwrap();
        let server = ServerConfig {
            ca_dir: Some(state.path().join("ca")),
            ca_tokens: Some(token_file),
            poll_interval: Duration::from_millis(50),
            file_debounce: Duration::from_millis(50),
            push_debounce: Duration::from_millis(50),
            ..ServerConfig::ephemeral(config.path())
        };
        let bound = mesh_control::build(server)
            .await
            .expect("control plane starts");
        ControlPlane {
            bound,
            _config: config,
            state,
            token,
            upstream,
        }
    }

    fn secure_addr(&self) -> SocketAddr {
        self.bound.secure_xds_address().expect("secure port on")
    }

    /// The mesh root as `meshctl up` hands it to proxies: the CA's file.
    fn root_file(&self) -> PathBuf {
        self.state.path().join("ca").join("root-cert.pem")
    }

    fn token_file(&self) -> PathBuf {
        let path = self.state.path().join("client.token");
        std::fs::write(&path, format!("{}\n", self.token)).unwrap();
        path
    }

    /// This proxy's `/debug/syncz` entry, once it is there.
    async fn syncz(&self) -> Option<serde_json::Value> {
        let url = format!("http://{}/debug/syncz", self.bound.debug_address());
        let resp = mesh_test_util::HttpClient::http1().get(&url).await.ok()?;
        let all: serde_json::Value = serde_json::from_slice(&resp.body).ok()?;
        all.as_array()?
            .iter()
            .find(|p| p["proxy"] == NODE_ID)
            .cloned()
    }

    async fn wait_for_syncz(&self) -> serde_json::Value {
        let mut found = None;
        wait_until(WAIT, async || {
            found = self.syncz().await;
            found.is_some()
        })
        .await
        .expect("the proxy appears in /debug/syncz");
        found.unwrap_or_default()
    }
}

/// What varies between the tests' bootstraps.
struct Secure<'a> {
    addr: SocketAddr,
    root_file: &'a Path,
    server_identity: &'a str,
    token: Option<&'a str>,
}

/// A sidecar bootstrap in `meshctl up`'s shape: local-mode node metadata
/// (listeners on port 0) and ADS to the secure port.
fn bootstrap_yaml(s: &Secure<'_>) -> String {
    let bootstrap = AdsBootstrap::new(NODE_ID, s.addr)
        .cluster("client.default")
        .metadata(&format!(
            "LABELS: {{app: client}}
NAMESPACE: {NAMESPACE}
SERVICE_ACCOUNT: {SERVICE_ACCOUNT}
WORKLOAD_NAME: client-1
CLUSTER_ID: Kubernetes
MESH_LOCAL_MODE: \"true\"
MESH_OUTBOUND_ADDRESS: 127.0.0.1:0
MESH_INBOUND_ADDRESS: 127.0.0.1:0
MESH_APP_ADDRESS: 127.0.0.1:9"
        ))
        .tls(s.root_file, s.server_identity);
    match s.token {
        Some(token) => bootstrap.bearer_token(token),
        None => bootstrap,
    }
    .yaml()
}

struct RunningProxy {
    bound: mesh_proxy::server::Bound,
    ads: AdsClient,
    _identity: Option<WorkloadIdentity>,
}

impl RunningProxy {
    /// As the binary does it: the proxy, its workload identity (when
    /// given) installed in its secret store, then ADS.
    async fn start(yaml: &str, identity: Option<IdentityConfig>) -> RunningProxy {
        let bootstrap = parse_bootstrap(yaml).expect("bootstrap parses");
        let config = ProxyConfig::from_bootstrap(bootstrap.clone());
        let bound = build(config).await.expect("proxy builds");
        let identity = match identity {
            Some(config) => {
                let id = workload_identity(&bootstrap.node, TD).unwrap();
                let sink = bound.proxy.secrets().clone();
                Some(
                    WorkloadIdentity::start(config, id, sink)
                        .await
                        .expect("workload certificate"),
                )
            }
            None => None,
        };
        let ads = xds::start(&bootstrap, &bound.proxy)
            .expect("ADS config")
            .expect("ADS configured");
        RunningProxy {
            bound,
            ads,
            _identity: identity,
        }
    }

    /// A request for the service, through whichever listener routes it
    /// (the outbound one; its port is only known once bound).
    async fn get_service(&self) -> anyhow::Result<mesh_test_util::Response> {
        let listeners = self.bound.proxy.listener_addrs();
        anyhow::ensure!(!listeners.is_empty(), "no listeners yet");
        let mut tried = Vec::new();
        for (name, addr) in &listeners {
            let req = http::Request::get("/")
                .header("host", format!("{SERVICE_HOST}:5000"))
                .body("")?;
            match send(*addr, req).await {
                Ok(resp) if resp.status == 200 => return Ok(resp),
                Ok(resp) => tried.push(format!("{name}: {}", resp.status)),
                Err(e) => tried.push(format!("{name}: {e}")),
            }
        }
        anyhow::bail!("no listener served {SERVICE_HOST}: {tried:?}")
    }
}

#[tokio::test]
async fn proxy_gets_listeners_over_tls_with_a_token_and_serves_traffic() {
    let cp = ControlPlane::start().await;
    let root = cp.root_file();
    let yaml = bootstrap_yaml(&Secure {
        addr: cp.secure_addr(),
        root_file: &root,
        server_identity: ISTIOD,
        token: Some(&cp.token),
    });
    let proxy = RunningProxy::start(&yaml, None).await;

    wait_until(WAIT, async || proxy.get_service().await.is_ok())
        .await
        .unwrap_or_else(|e| {
            panic!(
                "{e}: status {:?}, listeners {:?}",
                proxy.ads.status(),
                proxy.bound.proxy.listener_addrs()
            )
        });
    let resp = proxy.get_service().await.unwrap();
    assert_eq!(resp.text(), "helloworld");
    assert!(
        !cp.upstream.requests().is_empty(),
        "the request reached the service's workload"
    );

    let status = proxy.ads.status();
    assert!(status.connected, "{status:?}");
    assert!(status.acks >= 2 && status.nacks == 0, "{status:?}");

    // The control plane lists the stream on its secure port, authenticated
    // by the token as the proxy's own identity.
    let entry = cp.wait_for_syncz().await;
    assert_eq!(entry["port"], "secure", "{entry:#}");
    assert_eq!(
        entry["identity"],
        format!("spiffe://{TD}/ns/{NAMESPACE}/sa/{SERVICE_ACCOUNT}"),
        "{entry:#}"
    );

    // The handshake is counted as for any TLS cluster.
    let handshakes = proxy
        .bound
        .proxy
        .stats()
        .value("cluster.xds-grpc.ssl.handshake")
        .unwrap_or_default();
    assert!(
        handshakes >= 1,
        "cluster.xds-grpc.ssl.handshake = {handshakes}"
    );
}

#[tokio::test]
async fn proxy_with_a_workload_identity_authenticates_by_certificate_without_a_token() {
    let cp = ControlPlane::start().await;
    let root = cp.root_file();
    // No token on the ADS stream: only the certificate the identity manager
    // obtained (with the token file, from the CA on the same port) tells the
    // control plane who the stream is.
    let yaml = bootstrap_yaml(&Secure {
        addr: cp.secure_addr(),
        root_file: &root,
        server_identity: ISTIOD,
        token: None,
    });
    let identity = IdentityConfig {
        token_file: Some(cp.token_file()),
        ..IdentityConfig::new(cp.secure_addr().to_string(), &root)
    };
    let proxy = RunningProxy::start(&yaml, Some(identity)).await;
    wait_until(WAIT, async || proxy.get_service().await.is_ok())
        .await
        .unwrap_or_else(|e| panic!("{e}: status {:?}", proxy.ads.status()));

    let entry = cp.wait_for_syncz().await;
    assert_eq!(entry["port"], "secure", "{entry:#}");
    assert_eq!(
        entry["identity"],
        format!("spiffe://{TD}/ns/{NAMESPACE}/sa/{SERVICE_ACCOUNT}"),
        "the stream is known by its client certificate: {entry:#}"
    );
}

#[tokio::test]
async fn wrong_server_identity_fails_the_handshake_with_the_reason_and_no_config() {
    let cp = ControlPlane::start().await;
    let root = cp.root_file();
    let wrong = "spiffe://cluster.local/ns/istio-system/sa/not-istiod";
    let yaml = bootstrap_yaml(&Secure {
        addr: cp.secure_addr(),
        root_file: &root,
        server_identity: wrong,
        token: Some(&cp.token),
    });
    let proxy = RunningProxy::start(&yaml, None).await;

    // At least two attempts: the client keeps retrying.
    wait_until(WAIT, async || {
        proxy
            .bound
            .proxy
            .stats()
            .value("cluster.xds-grpc.ssl.fail_verify_san")
            .unwrap_or_default()
            >= 2
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", proxy.ads.status()));
    let status = proxy.ads.status();
    let error = status.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("TLS handshake failed") && error.contains(ISTIOD) && error.contains(wrong),
        "the error names the identity presented and the one expected: {error}"
    );
    assert!(
        !status.connected && status.streams == 0 && status.applied == 0,
        "{status:?}"
    );
    assert!(proxy.bound.proxy.listener_addrs().is_empty());
    assert!(cp.syncz().await.is_none(), "no stream reached ADS");
}

#[tokio::test]
async fn a_ca_file_without_a_certificate_is_reported_on_every_attempt() {
    let cp = ControlPlane::start().await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root-cert.pem");
    std::fs::write(&root, "this is not PEM\n").unwrap();
    let yaml = bootstrap_yaml(&Secure {
        addr: cp.secure_addr(),
        root_file: &root,
        server_identity: ISTIOD,
        token: Some(&cp.token),
    });
    let proxy = RunningProxy::start(&yaml, None).await;
    wait_until(WAIT, async || {
        proxy
            .bound
            .proxy
            .stats()
            .value("cluster.xds-grpc.ssl.connection_error")
            .unwrap_or_default()
            >= 2
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {:?}", proxy.ads.status()));
    let status = proxy.ads.status();
    let error = status.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("TLS handshake failed") && error.contains("trusted_ca"),
        "the error names the CA: {error}"
    );
    assert_eq!(status.applied, 0, "{status:?}");
    assert!(cp.syncz().await.is_none());
}

#[test]
fn the_ads_cluster_tls_context_is_read_as_envoy_reads_it() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root.pem");
    std::fs::write(&root, "not a certificate").unwrap();
    let yaml = bootstrap_yaml(&Secure {
        addr: "127.0.0.1:15012".parse().unwrap(),
        root_file: &root,
        server_identity: ISTIOD,
        token: Some("s3cret"),
    });
    let bootstrap = parse_bootstrap(&yaml).unwrap();
    let config = xds::AdsClientConfig::from_bootstrap(&bootstrap)
        .unwrap()
        .unwrap();
    let XdsTransport::Tls(tls) = &config.transport else {
        panic!("expected TLS: {:?}", config.transport);
    };
    assert_eq!(tls.sni.as_deref(), Some("istiod.istio-system.svc"));
    assert_eq!(tls.alpn_protocols, ["h2"]);
    assert!(tls.certificate.is_none());
    assert_eq!(tls.match_subject_alt_names.len(), 1);
    assert!(matches!(
        &tls.trusted_ca,
        Some(mesh_proxy::model::TlsCaSource::InlinePem(pem)) if pem == "not a certificate"
    ));
    assert_eq!(config.initial_metadata.len(), 1);
    assert_eq!(config.initial_metadata[0].key, "authorization");
    assert_eq!(config.initial_metadata[0].value, "Bearer s3cret");
    assert!(
        !format!("{config:?}").contains("s3cret"),
        "Debug never shows the token"
    );

    // A missing CA file is a bootstrap error naming the field and the file.
    let missing = bootstrap_yaml(&Secure {
        addr: "127.0.0.1:15012".parse().unwrap(),
        root_file: Path::new("/nonexistent/root-cert.pem"),
        server_identity: ISTIOD,
        token: None,
    });
    let e = parse_bootstrap(&missing).unwrap_err().to_string();
    assert!(
        e.contains("trusted_ca") && e.contains("/nonexistent/root-cert.pem"),
        "{e}"
    );
}

/// The binary as `meshctl up` runs it: workload identity from the CA on the
/// secure port (`--ca-address`, `--token-file`), then ADS over TLS on that
/// same port with the token and the workload certificate.
#[tokio::test]
async fn the_binary_syncs_over_the_secure_port_with_its_identity() {
    let cp = ControlPlane::start().await;
    let root = cp.root_file();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bootstrap.yaml");
    let yaml = bootstrap_yaml(&Secure {
        addr: cp.secure_addr(),
        root_file: &root,
        server_identity: ISTIOD,
        token: Some(&cp.token),
    });
    std::fs::write(&config, yaml).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mesh-proxy"))
        .arg("--config")
        .arg(&config)
        .arg("--ca-address")
        .arg(cp.secure_addr().to_string())
        .arg("--ca-root-cert")
        .arg(&root)
        .arg("--token-file")
        .arg(cp.token_file())
        .stderr(Stdio::null())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut entry = serde_json::Value::Null;
    wait_until(WAIT, async || {
        entry = cp.syncz().await.unwrap_or_default();
        // Every type ACKed: the proxy accepted what it was sent.
        ["cluster", "listener", "endpoint", "route"]
            .iter()
            .all(|t| {
                let sent = &entry[format!("{t}_sent")];
                sent.as_str().is_some_and(|s| !s.is_empty()) && *sent == entry[format!("{t}_acked")]
            })
    })
    .await
    .unwrap_or_else(|e| panic!("{e}: {entry:#}"));
    assert_eq!(entry["port"], "secure", "{entry:#}");
    assert_eq!(
        entry["identity"],
        format!("spiffe://{TD}/ns/{NAMESPACE}/sa/{SERVICE_ACCOUNT}"),
        "{entry:#}"
    );
    child.kill().await.unwrap();
}

/// The binary, with a root that did not sign the control plane: the log
/// says why each attempt fails, the proxy keeps retrying and serves nothing.
#[tokio::test]
async fn wrong_root_is_logged_by_the_binary_and_retried() {
    let cp = ControlPlane::start().await;
    // Another mesh's root: webpki finds no issuer of that name.
    expect_logged_refusal(
        &cp,
        "example.org",
        "unknown CA: peer certificate not signed by a trusted root",
    )
    .await;
    // A root with the same name as the real one (another CA for the same
    // trust domain): the issuer is found by name, its signature does not hold.
    expect_logged_refusal(&cp, TD, "peer certificate has a bad signature").await;
}

async fn expect_logged_refusal(cp: &ControlPlane, other_trust_domain: &str, reason: &str) {
    let other_ca = mesh_ca::CertificateAuthority::generate(mesh_ca::CaConfig::for_trust_domain(
        other_trust_domain,
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let wrong_root = dir.path().join("other-root.pem");
    std::fs::write(&wrong_root, other_ca.trust_bundle().to_pem()).unwrap();
    let yaml = bootstrap_yaml(&Secure {
        addr: cp.secure_addr(),
        root_file: &wrong_root,
        server_identity: ISTIOD,
        token: Some(&cp.token),
    });
    let config = dir.path().join("bootstrap.yaml");
    std::fs::write(&config, yaml).unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mesh-proxy"))
        .arg("--config")
        .arg(&config)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut failures = Vec::new();
    let read = async {
        while let Ok(Some(line)) = lines.next_line().await {
            if line.contains("xDS: control plane unreachable") {
                failures.push(line);
                if failures.len() >= 2 {
                    break;
                }
            }
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("two failed attempts logged");
    for line in &failures {
        assert!(
            line.contains("TLS handshake failed") && line.contains("xds-grpc"),
            "{line}"
        );
        assert!(line.contains(reason), "expected {reason:?}: {line}");
        assert!(
            !line.contains(&cp.token),
            "the token is never logged: {line}"
        );
    }
    assert!(cp.syncz().await.is_none(), "no stream reached ADS");
    child.kill().await.unwrap();
}
