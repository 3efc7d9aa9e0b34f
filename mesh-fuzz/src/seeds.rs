//! Writes the seed corpora under `fuzz/seeds/` from real sources: the
//! examples' Istio YAML, the control plane's translation of it, ClientHellos
//! written by rustls and OpenSSL, CSRs built by rcgen. Run by hand when a
//! source changes: `cargo test -p mesh-fuzz -- --ignored write_seeds`.

use std::collections::BTreeSet;
use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use envoy_types::pb::envoy::service::discovery::v3::DiscoveryResponse;
use envoy_types::pb::google::protobuf::Any;
use mesh_ca::authority::{CaConfig, CertificateAuthority};
use mesh_ca::spiffe::SpiffeId;
use mesh_control::translate::{MeshState, XdsResources, translate};
use mesh_proxy::xds::state::ResourceType;
use prost::{Message, Name};

use crate::loader::nodes;
use crate::tests::seeds_dir;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Empties `fuzz/seeds/NAME` (regression inputs named `crash-*` stay) and
/// returns it.
fn fresh(name: &str) -> PathBuf {
    let dir = seeds_dir().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let keep = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("crash-"));
        if !keep {
            std::fs::remove_file(&path).unwrap();
        }
    }
    dir
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml") {
            out.push(path);
        }
    }
}

/// What `meshctl up` writes for the built-in demo (mesh-cli/demo): the
/// registry its workloads.yaml makes. The examples apply their rules on top.
const DEMO_REGISTRY: &str = "\
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: helloworld, namespace: default}
spec:
  hosts: [helloworld.default.svc.cluster.local]
  location: MESH_INTERNAL
  resolution: STATIC
  ports:
  - {number: 5000, name: http, protocol: HTTP}
  workloadSelector:
    labels: {app: helloworld}
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: helloworld-safe, namespace: default}
spec:
  address: 127.0.0.1
  ports: {http: 16001}
  labels: {app: helloworld, version: safe, security.istio.io/tlsMode: istio}
  serviceAccount: helloworld
---
apiVersion: networking.istio.io/v1
kind: WorkloadEntry
metadata: {name: helloworld-risky, namespace: default}
spec:
  address: 127.0.0.1
  ports: {http: 16002}
  labels: {app: helloworld, version: risky, security.istio.io/tlsMode: istio}
  serviceAccount: helloworld
";

fn read_joined(files: &[PathBuf]) -> String {
    files
        .iter()
        .map(|f| std::fs::read_to_string(f).unwrap())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// One stream per example folder, as `meshctl up` then `meshctl apply -f`
/// of its files gives the control plane (the demo's registry and rules,
/// then the example's), and one per control-plane fixture.
fn loader_seeds() -> Vec<(String, String)> {
    let demo_dir = workspace().join("mesh-cli/demo");
    let demo = format!(
        "{DEMO_REGISTRY}---\n{}",
        read_joined(&[
            demo_dir.join("helloworld.yaml"),
            demo_dir.join("helloworld-gateway.yaml")
        ])
    );
    let mut out = vec![("demo".to_string(), demo.clone())];
    let mut examples = Vec::new();
    for entry in std::fs::read_dir(workspace().join("examples")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        // helloworld is the sample app's crate; bootstrap is Envoy's YAML.
        if path.is_dir() && name != "helloworld" && name != "bootstrap" {
            examples.push((name, path));
        }
    }
    examples.sort();
    for (name, path) in examples {
        let mut files = Vec::new();
        yaml_files(&path, &mut files);
        // workloads.yaml is meshctl's own format, not Istio's.
        files.retain(|f| !f.ends_with("workloads.yaml"));
        files.sort();
        out.push((name, format!("{demo}\n---\n{}", read_joined(&files))));
    }
    let fixtures = workspace().join("mesh-control/tests/fixtures");
    let mut bookinfo = Vec::new();
    yaml_files(&fixtures.join("bookinfo"), &mut bookinfo);
    bookinfo.sort();
    out.push(("bookinfo".into(), read_joined(&bookinfo)));
    out.push((
        "mtls-mesh".into(),
        read_joined(&[fixtures.join("mtls-mesh.yaml")]),
    ));
    // What users get wrong, so the error paths are reached from the start.
    out.push((
        "errors".into(),
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: a}\n\
         spec:\n  hosts: [a]\n  http:\n  - route:\n    - destination: {host: a}\n      weight: ten\n\
         ---\nkind: [\n---\napiVersion: networking.istio.io/v9\nkind: Gateway\nmetadata: {name: g}\n\
         ---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: d}\n\
         spec: {host: a, trafficPolicy: {connectionPool: {http: {idleTimeout: 1x}}}}\n\
         ---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: skipped}\n"
            .into(),
    ));
    let dir = fresh("loader");
    for (name, text) in &out {
        std::fs::write(dir.join(format!("{name}.yaml")), text).unwrap();
    }
    out
}

fn any_of<M: Message + Name>(m: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: m.encode_to_vec(),
    }
}

fn response<M: Message + Name>(ty: ResourceType, version: &str, items: &[&M]) -> DiscoveryResponse {
    DiscoveryResponse {
        version_info: version.into(),
        type_url: ty.type_url().into(),
        nonce: format!("{}-{version}", ty.short()),
        resources: items.iter().map(|m| any_of(*m)).collect(),
        ..Default::default()
    }
}

/// The control plane's own output for every loader seed and both proxies:
/// single resources (a selector byte, then the message) and whole ADS
/// exchanges (selector 5, then length-delimited responses in CDS, EDS,
/// LDS, RDS order, as the control plane sends them).
fn xds_seeds(configs: &[(String, String)]) {
    let dir = fresh("xds");
    let mut seen = BTreeSet::new();
    let mut write = |name: String, bytes: Vec<u8>| {
        if seen.insert(bytes.clone()) {
            std::fs::write(dir.join(name), bytes).unwrap();
        }
    };
    for (name, text) in configs {
        let state = MeshState::new(mesh_api::load_str(name, text));
        for node in nodes() {
            let kind = node.kind.as_str();
            let xds: XdsResources = translate(&state, node);
            let mut single = |selector: u8, short: &str, encoded: Vec<Vec<u8>>| {
                // Two of each kind: the examples repeat themselves.
                for (i, bytes) in encoded.into_iter().take(2).enumerate() {
                    let mut seed = vec![selector];
                    seed.extend(bytes);
                    write(format!("{name}-{kind}-{short}-{i}.bin"), seed);
                }
            };
            single(
                0,
                "lds",
                xds.listeners.values().map(|m| m.encode_to_vec()).collect(),
            );
            single(
                1,
                "cds",
                xds.clusters.values().map(|m| m.encode_to_vec()).collect(),
            );
            single(
                2,
                "rds",
                xds.routes.values().map(|m| m.encode_to_vec()).collect(),
            );
            single(
                3,
                "eds",
                xds.endpoints.values().map(|m| m.encode_to_vec()).collect(),
            );
            let clusters: Vec<_> = xds.clusters.values().collect();
            let endpoints: Vec<_> = xds.endpoints.values().collect();
            let listeners: Vec<_> = xds.listeners.values().collect();
            let routes: Vec<_> = xds.routes.values().collect();
            let mut stream = vec![5u8];
            for r in [
                response(ResourceType::Cluster, "1", &clusters),
                response(ResourceType::Endpoint, "1", &endpoints),
                response(ResourceType::Listener, "1", &listeners),
                response(ResourceType::Route, "1", &routes),
            ] {
                r.encode_length_delimited(&mut stream).unwrap();
            }
            write(format!("{name}-{kind}-ads.bin"), stream);
        }
    }
    // SDS: a workload identity and its roots, as the control plane sends them.
    let ca = CertificateAuthority::generate(CaConfig::default()).unwrap();
    let id = SpiffeId::parse("spiffe://cluster.local/ns/default/sa/default").unwrap();
    let issued = ca.issue_identity(&id, &[], None).unwrap();
    for (name, secret) in mesh_control::ads::sds::secrets_for(&issued) {
        eprintln!("secret {name}");
        let mut seed = vec![4u8];
        seed.extend(secret.encode_to_vec());
        write(format!("sds-{name}.bin"), seed);
    }
}

/// A ClientHello as rustls writes it.
fn rustls_hello(sni: &str, alpn: &[&str], tls12_only: bool) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider);
    let builder = if tls12_only {
        builder.with_protocol_versions(&[&rustls::version::TLS12])
    } else {
        builder.with_safe_default_protocol_versions()
    };
    let mut config = builder
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    let name = rustls::pki_types::ServerName::try_from(sni.to_string()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let mut out = Vec::new();
    conn.write_tls(&mut out).unwrap();
    out
}

/// A ClientHello as `openssl s_client` sends it, read off a real socket;
/// `None` where the machine has no `openssl`.
fn openssl_hello(args: &[&str]) -> Option<Vec<u8>> {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut child = Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    let (mut stream, _) = listener.accept().unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut hello = Vec::new();
    let mut buf = [0u8; 4096];
    // One record: its header says how long it is.
    while hello.len() < 5 || hello.len() < 5 + usize::from(u16::from_be_bytes([hello[3], hello[4]]))
    {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "openssl closed before its hello");
        hello.extend_from_slice(&buf[..n]);
    }
    let _ = child.kill();
    let _ = child.wait();
    Some(hello)
}

fn tls_hello_seeds() {
    let dir = fresh("tls_hello");
    let mut hellos = vec![
        (
            "rustls-istio-sni-alpn",
            rustls_hello(
                "outbound_.9080_._.reviews.default.svc.cluster.local",
                &["istio-peer-exchange", "istio", "h2"],
                false,
            ),
        ),
        (
            "rustls-h2-http11",
            rustls_hello("helloworld.example.com", &["h2", "http/1.1"], false),
        ),
        ("rustls-tls12-no-alpn", rustls_hello("svc", &[], true)),
        (
            "rustls-ip-no-sni",
            rustls_hello("127.0.0.1", &["http/1.1"], false),
        ),
    ];
    for (name, args) in [
        (
            "openssl-sni-alpn",
            &["-servername", "svc.example", "-alpn", "h2,http/1.1"][..],
        ),
        (
            "openssl-tls12",
            &[
                "-tls1_2",
                "-servername",
                "reviews.default.svc.cluster.local",
            ][..],
        ),
        ("openssl-no-sni", &["-noservername"][..]),
    ] {
        if let Some(hello) = openssl_hello(args) {
            hellos.push((name, hello));
        }
    }
    for (name, hello) in hellos {
        std::fs::write(dir.join(format!("{name}.bin")), hello).unwrap();
    }
    // Not TLS: plaintext a client may send first.
    std::fs::write(
        dir.join("plaintext-http.bin"),
        b"GET / HTTP/1.1\r\nhost: svc\r\n\r\n",
    )
    .unwrap();
}

fn csr_pem(key: &rcgen::KeyPair, sans: Vec<rcgen::SanType>) -> String {
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params.subject_alt_names = sans;
    params.serialize_request(key).unwrap().pem().unwrap()
}

fn csr_seeds() {
    let dir = fresh("csr");
    let uri = |u: &str| rcgen::SanType::URI(rcgen::string::Ia5String::try_from(u).unwrap());
    let caller = "spiffe://cluster.local/ns/default/sa/default";
    let p256 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let ed25519 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let seeds = [
        // What the proxy's identity manager sends (mesh_ca::csr::build_csr_pem).
        (
            "p256-caller",
            mesh_ca::csr::build_csr_pem(&p256, caller).unwrap(),
        ),
        ("p384-caller", csr_pem(&p384, vec![uri(caller)])),
        ("ed25519-caller", csr_pem(&ed25519, vec![uri(caller)])),
        ("p256-no-san", csr_pem(&p256, vec![])),
        (
            "p256-other-identity",
            csr_pem(
                &p256,
                vec![uri("spiffe://cluster.local/ns/kube-system/sa/admin")],
            ),
        ),
        (
            "p256-dns-ip-uri",
            csr_pem(
                &p256,
                vec![
                    rcgen::SanType::DnsName(
                        rcgen::string::Ia5String::try_from("svc.example").unwrap(),
                    ),
                    rcgen::SanType::IpAddress("10.0.0.1".parse().unwrap()),
                    uri(caller),
                ],
            ),
        ),
    ];
    for (name, pem_text) in seeds {
        std::fs::write(dir.join(format!("{name}.pem")), &pem_text).unwrap();
        let der = pem::parse(&pem_text).unwrap().into_contents();
        std::fs::write(dir.join(format!("{name}.der")), der).unwrap();
    }
}

fn http_head_seeds() {
    let dir = fresh("http_head");
    let h2_preface: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
    // A HEADERS frame (stream 1, END_STREAM | END_HEADERS) with HPACK:
    // :method GET, :scheme http, :path /, :authority svc (literal).
    let mut h2_get = h2_preface.to_vec();
    let block: &[u8] = b"\x82\x86\x84\x41\x03svc";
    h2_get.extend_from_slice(&[0, 0, block.len() as u8, 0x01, 0x05, 0, 0, 0, 1]);
    h2_get.extend_from_slice(block);
    let seeds: Vec<(&str, Vec<u8>)> = vec![
        ("get", b"GET / HTTP/1.1\r\nHost: svc\r\n\r\n".to_vec()),
        ("get-routed", b"GET /api/v1?x=1 HTTP/1.1\r\nhost: svc:80\r\nx-user: jason\r\ncookie: a=b\r\n\r\n".to_vec()),
        ("get-regex", b"GET /items/42/detail HTTP/1.1\r\nhost: a.example.com\r\n\r\n".to_vec()),
        ("absolute-form", b"GET http://svc/exact?q=xyz HTTP/1.1\r\nhost: other\r\n\r\n".to_vec()),
        ("http10-no-host", b"GET / HTTP/1.0\r\n\r\n".to_vec()),
        ("post-length", b"POST /v1/a HTTP/1.1\r\nhost: svc\r\ncontent-length: 5\r\nx-present: 1\r\n\r\nhello".to_vec()),
        ("post-chunked", b"POST / HTTP/1.1\r\nhost: svc\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\ntrailer: x\r\n\r\n".to_vec()),
        ("post-bad-chunk", b"POST / HTTP/1.1\r\nhost: svc\r\ntransfer-encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n".to_vec()),
        ("pipelined", b"GET /a HTTP/1.1\r\nhost: svc\r\n\r\nHEAD /b HTTP/1.1\r\nhost: [::1]:8080\r\n\r\nDELETE /c HTTP/1.1\r\nhost: api-x\r\nconnection: close\r\n\r\n".to_vec()),
        ("two-hosts", b"GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n".to_vec()),
        ("userinfo", b"GET http://u:p@svc/ HTTP/1.1\r\nhost: svc\r\n\r\n".to_vec()),
        ("connect", b"CONNECT svc:443 HTTP/1.1\r\nhost: svc:443\r\n\r\n".to_vec()),
        ("upgrade", b"GET /ws HTTP/1.1\r\nhost: svc\r\nconnection: upgrade\r\nupgrade: websocket\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n".to_vec()),
        ("h2-get", h2_get),
    ];
    for (name, bytes) in seeds {
        std::fs::write(dir.join(format!("{name}.http")), bytes).unwrap();
    }
}

#[test]
#[ignore = "writes fuzz/seeds; run by hand when a source changes"]
fn write_seeds() {
    let configs = loader_seeds();
    xds_seeds(&configs);
    tls_hello_seeds();
    csr_seeds();
    http_head_seeds();
}
