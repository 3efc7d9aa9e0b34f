//! The proxy's workload identity against a real CA: `mesh_ca::CaService`
//! served over TLS on 127.0.0.1, a real proxy (library and binary), its
//! admin `/certs` and `/config_dump`, rotation with a short TTL, a refused
//! token, and no private key on disk.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::identity_support::{TestCa, spiffe};
use mesh_ca::SpiffeId;
use mesh_ca::tls;
use mesh_proxy::bootstrap::parse_bootstrap;
use mesh_proxy::identity::{
    CERTIFICATE_SECRET, IdentityConfig, ROOTS_SECRET, WorkloadIdentity, workload_identity,
};
use mesh_proxy::model::{TlsCaSource, TlsCertificateSource, TlsSecret, TlsValidation};
use mesh_proxy::server::{ProxyConfig, build};
use mesh_test_util::wait_until;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpListener;

const SECRETS_DUMP: &str = "type.googleapis.com/envoy.admin.v3.SecretsConfigDump";

async fn start_ca() -> TestCa {
    TestCa::start(&[("shop", "web")]).await
}

fn web() -> SpiffeId {
    spiffe("shop", "web")
}

/// A sidecar bootstrap for shop/web with a static trust bundle secret.
fn bootstrap_yaml(static_roots_pem: &str) -> String {
    let indented: String = static_roots_pem
        .lines()
        .map(|l| format!("          {l}\n"))
        .collect();
    format!(
        r#"
node:
  id: sidecar~127.0.0.1~web-1.shop~shop.svc.cluster.local
  cluster: web.shop
  metadata: {{NAMESPACE: shop, SERVICE_ACCOUNT: web}}
admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: 0}}}}
static_resources:
  secrets:
  - name: bench-roots
    validation_context:
      trusted_ca:
        inline_string: |
{indented}"#
    )
}

async fn admin_json(admin: SocketAddr, path: &str) -> anyhow::Result<serde_json::Value> {
    let resp = mesh_test_util::send(admin, http::Request::get(path).body("")?).await?;
    anyhow::ensure!(resp.status == 200, "{path}: {}", resp.status);
    Ok(serde_json::from_slice(&resp.body)?)
}

/// The `cert_chain` entries of `/certs` whose leaf carries `uri`.
fn chain_for<'a>(certs: &'a serde_json::Value, uri: &str) -> Option<&'a serde_json::Value> {
    certs["certificates"].as_array()?.iter().find_map(|c| {
        let leaf = c["cert_chain"].get(0)?;
        let has = leaf["subject_alt_names"]
            .as_array()?
            .iter()
            .any(|s| s["uri"] == uri);
        has.then_some(leaf)
    })
}

fn secrets_section(dump: &serde_json::Value) -> &serde_json::Value {
    dump["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["@type"] == SECRETS_DUMP)
        .unwrap_or_else(|| panic!("no secrets section in {dump:#}"))
}

/// The dynamic secret named `name` of a dump.
fn dynamic_secret<'a>(dump: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    let secrets = secrets_section(dump);
    secrets["dynamic_active_secrets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no dynamic secret {name} in {secrets:#}"))
}

fn chain_pem_of(secret: &TlsSecret) -> &str {
    match secret {
        TlsSecret::Certificate(TlsCertificateSource::InlinePem { cert_chain, .. }) => cert_chain,
        other => panic!("expected an inline certificate, got {other:?}"),
    }
}

#[tokio::test]
async fn proxy_obtains_its_spiffe_certificate_and_shows_it_without_the_key() {
    let ca = start_ca().await;
    let b = parse_bootstrap(&bootstrap_yaml(&ca.ca.trust_bundle().to_pem())).unwrap();
    let node = b.node.clone();
    let bound = build(ProxyConfig::from_bootstrap(b)).await.unwrap();
    let admin = bound.admin_addr.unwrap();

    let id = workload_identity(&node, "cluster.local").unwrap();
    assert_eq!(id, web());
    let workload = WorkloadIdentity::start(
        ca.identity_config("web"),
        id.clone(),
        bound.proxy.secrets().clone(),
    )
    .await
    .unwrap();
    let current = workload.current();
    assert_eq!(current.identity, web());

    // The store holds the chain for that identity, and roots that include the CA's.
    let store = bound.proxy.secrets();
    let default = store.get(CERTIFICATE_SECRET).expect("default installed");
    let chain = mesh_ca::bundle::certificates_from_pem("default", chain_pem_of(&default)).unwrap();
    assert_eq!(tls::spiffe_id_of(&chain[0]).unwrap(), web());
    match store.get(ROOTS_SECRET).as_deref() {
        Some(TlsSecret::ValidationContext(TlsValidation {
            trusted_ca: TlsCaSource::InlinePem(roots),
            ..
        })) => {
            let roots = mesh_ca::TrustBundle::from_pem("ROOTCA", roots).unwrap();
            assert!(roots.contains(ca.ca.root_certificate()));
            // The chain's root and the root file are the same certificate: listed once.
            assert_eq!(roots.len(), 1);
        }
        other => panic!("ROOTCA: {other:?}"),
    }

    // /certs: Envoy's shape, the workload chain with its SPIFFE URI and serial.
    let certs = admin_json(admin, "/certs").await.unwrap();
    let leaf = chain_for(&certs, &web().to_uri()).unwrap_or_else(|| panic!("{certs:#}"));
    assert_eq!(leaf["serial_number"], current.serial.as_str());
    assert_eq!(leaf["path"], "<inline>");
    assert_eq!(leaf["days_until_expiration"], "0", "24h default TTL");
    assert!(leaf["valid_from"].as_str().unwrap().ends_with('Z'));
    assert!(leaf["expiration_time"].as_str().unwrap().ends_with('Z'));
    let root_serial = x509_parser::parse_x509_certificate(ca.ca.root_certificate())
        .unwrap()
        .1
        .tbs_certificate
        .serial
        .to_str_radix(16);
    let ca_certs: Vec<&serde_json::Value> = certs["certificates"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["ca_cert"].as_array().unwrap())
        .collect();
    // ROOTCA and the static bench-roots both hold the CA root.
    assert_eq!(
        ca_certs
            .iter()
            .filter(|c| c["serial_number"] == root_serial.as_str())
            .count(),
        2,
        "{certs:#}"
    );
    let certs_text = certs.to_string();
    assert!(!certs_text.contains("PRIVATE KEY"), "{certs_text}");

    // /config_dump: local secrets as dynamic_active_secrets, the key redacted.
    let dump = admin_json(admin, "/config_dump").await.unwrap();
    let secrets = secrets_section(&dump);
    let dynamic = secrets["dynamic_active_secrets"].as_array().unwrap();
    let names: Vec<&str> = dynamic
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [ROOTS_SECRET, CERTIFICATE_SECRET], "{secrets:#}");
    let default = dynamic_secret(&dump, CERTIFICATE_SECRET);
    assert!(!default["version_info"].as_str().unwrap().is_empty());
    assert!(default["last_updated"].as_str().unwrap().ends_with('Z'));
    let tls_certificate = &default["secret"]["tls_certificate"];
    assert_eq!(
        default["secret"]["@type"],
        "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
    );
    assert_eq!(
        tls_certificate["private_key"]["inline_string"],
        "[redacted]"
    );
    assert!(
        tls_certificate["certificate_chain"]["inline_bytes"]
            .as_str()
            .is_some_and(|b| !b.is_empty())
    );
    assert!(
        dynamic_secret(&dump, ROOTS_SECRET)["secret"]["validation_context"]["trusted_ca"]["inline_bytes"].is_string(),
        "{secrets:#}"
    );
    assert_eq!(secrets["static_secrets"][0]["name"], "bench-roots");
    let dump_text = dump.to_string();
    assert!(!dump_text.contains("PRIVATE KEY"), "the key leaked");
    // One field alone, each element typed, as Envoy's `?resource=`.
    let only = admin_json(admin, "/config_dump?resource=dynamic_active_secrets")
        .await
        .unwrap();
    let items = only["configs"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{only:#}");
    assert_eq!(
        items[0]["@type"],
        "type.googleapis.com/envoy.admin.v3.SecretsConfigDump.DynamicSecret"
    );
    assert!(!only.to_string().contains("PRIVATE KEY"));
    // Neither does the base64 of the key's PEM armour appear.
    assert!(!dump_text.contains("LS0tLS1CRUdJTiBQUklWQVRFIEtFWS0tLS0t"));
}

#[tokio::test]
async fn rotates_before_expiry_and_installs_the_new_certificate() {
    let ca = start_ca().await;
    let bound = build(ProxyConfig {
        admin_address: Some("127.0.0.1:0".parse().unwrap()),
        ..ProxyConfig::new(Default::default())
    })
    .await
    .unwrap();
    let admin = bound.admin_addr.unwrap();
    let config = IdentityConfig {
        cert_ttl: Some(Duration::from_secs(4)),
        ..ca.identity_config("web")
    };
    let workload = WorkloadIdentity::start(config, web(), bound.proxy.secrets().clone())
        .await
        .unwrap();
    let first = workload.current();
    let mut changes = workload.subscribe();
    changes.borrow_and_update();
    tokio::time::timeout(Duration::from_secs(30), changes.changed())
        .await
        .expect("rotated within 30s")
        .unwrap();
    let second = workload.current();
    assert_ne!(first.serial, second.serial);
    assert_eq!(second.identity, web());
    // Not before ~45% of the 4s lifetime (a generous lower bound).
    assert!(
        second.issued_at.duration_since(first.issued_at).unwrap() >= Duration::from_secs(1),
        "rotated too early"
    );
    // The store and /certs follow (they may already show a third one).
    let store = bound.proxy.secrets().clone();
    wait_until(Duration::from_secs(10), async || {
        let certs = admin_json(admin, "/certs").await?;
        let serial = chain_for(&certs, &web().to_uri())
            .and_then(|leaf| leaf["serial_number"].as_str())
            .unwrap_or_default()
            .to_owned();
        let installed = store
            .get(CERTIFICATE_SECRET)
            .map(|s| chain_pem_of(&s).to_owned())
            .unwrap_or_default();
        let current = workload.current();
        anyhow::ensure!(
            serial == current.serial && installed == current.chain_pem && serial != first.serial,
            "/certs serial {serial}, current {}",
            current.serial
        );
        Ok(())
    })
    .await
    .unwrap();
    // The fallback dump (no bootstrap) shows the local secrets too.
    let dump = admin_json(admin, "/config_dump").await.unwrap();
    dynamic_secret(&dump, CERTIFICATE_SECRET);
    assert!(!dump.to_string().contains("PRIVATE KEY"));
}

#[tokio::test]
async fn renews_with_its_current_certificate_once_the_token_is_gone() {
    let ca = start_ca().await;
    let config = IdentityConfig {
        cert_ttl: Some(Duration::from_secs(4)),
        ..ca.identity_config("web")
    };
    let sink = |_: &mesh_proxy::identity::WorkloadCertificate| {};
    let workload = WorkloadIdentity::start(config, web(), Arc::new(sink))
        .await
        .unwrap();
    let first = workload.current();
    std::fs::remove_file(ca.token_file("web")).unwrap();
    let mut changes = workload.subscribe();
    changes.borrow_and_update();
    tokio::time::timeout(Duration::from_secs(30), changes.changed())
        .await
        .expect("renewed within 30s")
        .unwrap();
    let second = workload.current();
    assert_ne!(first.serial, second.serial);
    assert_eq!(second.identity, web());
}

#[tokio::test]
async fn an_unreachable_ca_fails_start_after_the_timeout_naming_the_cause() {
    let ca = start_ca().await;
    // A port with nothing listening.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_addr = closed.local_addr().unwrap();
    drop(closed);
    let config = IdentityConfig {
        ca_timeout: Duration::from_secs(1),
        ..IdentityConfig {
            ca_address: closed_addr.to_string(),
            ..ca.identity_config("web")
        }
    };
    let sink = |_: &mesh_proxy::identity::WorkloadCertificate| {};
    let err = WorkloadIdentity::start(config, web(), Arc::new(sink))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("within --ca-timeout 1s"), "{err}");
    assert!(err.contains(&closed_addr.to_string()), "{err}");
}

/// The real binary, its stderr collected.
struct ProxyProcess {
    child: tokio::process::Child,
    log: Arc<Mutex<String>>,
}

impl ProxyProcess {
    fn start(workdir: &Path, args: &[String]) -> ProxyProcess {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_mesh-proxy"))
            .args(args)
            .current_dir(workdir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let stderr = child.stderr.take().unwrap();
        let sink = log.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let mut log = sink.lock().unwrap();
                log.push_str(&line);
                log.push('\n');
            }
        });
        ProxyProcess { child, log }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    async fn admin_addr(&self) -> SocketAddr {
        wait_until(Duration::from_secs(30), async || {
            let log = self.log();
            let line = log
                .lines()
                .find(|l| l.contains("admin listening"))
                .ok_or("no admin line yet")?;
            let addr = line
                .split("address=")
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .ok_or("no address")?;
            addr.parse::<SocketAddr>().map_err(|e| e.to_string())
        })
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", self.log()))
    }
}

fn proxy_args(ca: &TestCa, bootstrap: &Path, token: &Path, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--config".into(),
        bootstrap.display().to_string(),
        "--ca-address".into(),
        ca.addr.to_string(),
        "--ca-root-cert".into(),
        ca.root_file().display().to_string(),
        "--token-file".into(),
        token.display().to_string(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if let Ok(bytes) = std::fs::read(&path)
                && bytes.windows(needle.len()).any(|w| w == needle)
            {
                found.push(path);
            }
        }
    }
    found
}

#[tokio::test]
async fn the_binary_obtains_and_rotates_its_certificate_and_never_writes_the_key() {
    let ca = start_ca().await;
    let workdir = tempfile::tempdir().unwrap();
    let bootstrap = workdir.path().join("bootstrap.yaml");
    std::fs::write(&bootstrap, bootstrap_yaml(&ca.ca.trust_bundle().to_pem())).unwrap();
    let mut proxy = ProxyProcess::start(
        workdir.path(),
        &proxy_args(
            &ca,
            &bootstrap,
            &ca.token_file("web"),
            &["--cert-ttl", "4s"],
        ),
    );
    let admin = proxy.admin_addr().await;
    let uri = web().to_uri();
    let first = wait_until(Duration::from_secs(10), async || {
        let certs = admin_json(admin, "/certs").await?;
        chain_for(&certs, &uri)
            .and_then(|leaf| leaf["serial_number"].as_str())
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("no certificate for {uri} in {certs}"))
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    // Rotation at about half of 4s: the serial changes.
    wait_until(Duration::from_secs(30), async || {
        let certs = admin_json(admin, "/certs").await?;
        let serial = chain_for(&certs, &uri)
            .and_then(|leaf| leaf["serial_number"].as_str())
            .unwrap_or_default()
            .to_owned();
        anyhow::ensure!(!serial.is_empty() && serial != first, "still {serial}");
        Ok(())
    })
    .await
    .unwrap_or_else(|e| panic!("{e}\n{}", proxy.log()));
    let dump = admin_json(admin, "/config_dump").await.unwrap();
    assert_eq!(
        dynamic_secret(&dump, CERTIFICATE_SECRET)["secret"]["tls_certificate"]["private_key"]["inline_string"],
        "[redacted]"
    );
    assert!(!dump.to_string().contains("PRIVATE KEY"));
    let log = proxy.log();
    assert!(
        log.matches("workload certificate issued").count() >= 2,
        "{log}"
    );
    assert!(log.contains(&format!("serial={first}")), "{log}");
    assert!(!log.contains("PRIVATE KEY"), "{log}");

    proxy.child.kill().await.unwrap();
    // Nothing the proxy could have written holds a private key.
    for dir in [workdir.path(), ca.dir.path()] {
        let leaked = files_containing(dir, b"PRIVATE KEY");
        assert!(leaked.is_empty(), "private key written to {leaked:?}");
    }
}

#[tokio::test]
async fn the_binary_fails_start_when_the_ca_refuses_its_token() {
    let ca = start_ca().await;
    let workdir = tempfile::tempdir().unwrap();
    let bootstrap = workdir.path().join("bootstrap.yaml");
    std::fs::write(&bootstrap, bootstrap_yaml(&ca.ca.trust_bundle().to_pem())).unwrap();
    let wrong = ca.dir.path().join("wrong.token");
    let mut proxy = ProxyProcess::start(
        workdir.path(),
        &proxy_args(&ca, &bootstrap, &wrong, &["--ca-timeout", "2s"]),
    );
    let status = tokio::time::timeout(Duration::from_secs(60), proxy.child.wait())
        .await
        .expect("the proxy exits")
        .unwrap();
    assert!(!status.success());
    // The reader task may still be draining the pipe.
    let log = wait_until(Duration::from_secs(5), async || {
        let log = proxy.log();
        if log.contains("Error") {
            Ok(log)
        } else {
            Err(log)
        }
    })
    .await
    .unwrap();
    assert!(
        log.contains("the bearer token is not known to this CA"),
        "{log}"
    );
    assert!(log.contains("Unauthenticated"), "{log}");
    assert!(log.contains("within --ca-timeout 2s"), "{log}");
    assert!(log.contains(&web().to_uri()), "{log}");
}
