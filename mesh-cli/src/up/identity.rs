//! Identities of the local mesh: the CA that `up` creates (or reuses) in `STATE/ca` before it
//! starts anything, and one bearer token per proxy, so that each proxy can prove to the
//! control plane's CSR service (and, for Envoy, to SDS over ADS) which workload it is.
//!
//! ```text
//!  STATE/ca/{ca-cert,ca-key,root-cert,cert-chain}.pem   mesh_ca layout (Istio's `cacerts`); kept
//!  STATE/ca/tokens          TOKEN NAMESPACE SERVICE_ACCOUNT per line, read by mesh-control
//!  STATE/tokens/NAME.token  the one token of proxy NAME (0600), read by that proxy
//! ```
//!
//! The CA outlives a run (the next `up` reuses it, so certificates issued before stay
//! verifiable); tokens are new on every `up`.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::Context;
use mesh_ca::{CaConfig, CertificateAuthority, TokenAuthenticator};

/// Directory of the CA under the state directory.
pub const CA_DIR: &str = "ca";
/// The token file mesh-control reads, inside [`CA_DIR`].
pub const CA_TOKENS_FILE: &str = "tokens";
/// Directory of the per-proxy token files under the state directory.
pub const TOKENS_DIR: &str = "tokens";
/// Namespace and service account of the control plane's own identity on the secure port
/// (Istio's istiod), which clients check the server against.
pub const CONTROL_PLANE_NAMESPACE: &str = "istio-system";
pub const CONTROL_PLANE_SERVICE_ACCOUNT: &str = "istiod";

/// Who a proxy is: the name its token file is known by, and the identity it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyIdentity {
    /// The proxy's name in the mesh (the workload's name, or the gateway's).
    pub proxy: String,
    pub namespace: String,
    pub service_account: String,
}

/// What [`prepare`] made: where the CA and the tokens are.
#[derive(Debug, Clone)]
pub struct MeshIdentities {
    pub trust_domain: String,
    pub ca_dir: PathBuf,
    /// The trust bundle the proxies verify the control plane (and each other) with.
    pub root_cert: PathBuf,
    /// `--ca-tokens` of mesh-control.
    pub tokens_file: PathBuf,
    /// Per proxy name: its token file and the token itself (Envoy's bootstrap carries it).
    pub tokens: BTreeMap<String, ProxyToken>,
}

/// One proxy's credential.
#[derive(Clone)]
pub struct ProxyToken {
    pub file: PathBuf,
    pub token: String,
}

impl std::fmt::Debug for ProxyToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the token itself.
        f.debug_struct("ProxyToken")
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

impl MeshIdentities {
    /// The token of proxy `name`.
    pub fn token(&self, name: &str) -> anyhow::Result<&ProxyToken> {
        self.tokens
            .get(name)
            .with_context(|| format!("no token was issued for proxy {name:?}"))
    }

    /// `spiffe://TD/ns/istio-system/sa/istiod`: what the control plane's secure port presents.
    pub fn control_plane_identity(&self) -> String {
        control_plane_identity(&self.trust_domain)
    }
}

/// The SPIFFE URI of the control plane in `trust_domain`.
pub fn control_plane_identity(trust_domain: &str) -> String {
    format!(
        "spiffe://{trust_domain}/ns/{CONTROL_PLANE_NAMESPACE}/sa/{CONTROL_PLANE_SERVICE_ACCOUNT}"
    )
}

/// Loads the CA kept in `STATE/ca` (or generates and persists one there), then issues a fresh
/// random token per proxy: `STATE/ca/tokens` for the control plane, `STATE/tokens/NAME.token`
/// (owner-only) for each proxy. Old token files are removed, so a token of a previous run
/// never works again.
pub fn prepare(
    state_dir: &Path,
    trust_domain: &str,
    proxies: &[ProxyIdentity],
) -> anyhow::Result<MeshIdentities> {
    let ca_dir = state_dir.join(CA_DIR);
    std::fs::create_dir_all(&ca_dir).with_context(|| format!("creating {}", ca_dir.display()))?;
    CertificateAuthority::load_or_generate(&ca_dir, CaConfig::for_trust_domain(trust_domain))
        .with_context(|| format!("the mesh CA in {}", ca_dir.display()))?;

    let mut authenticator = TokenAuthenticator::new(trust_domain);
    let token_dir = state_dir.join(TOKENS_DIR);
    if token_dir.exists() {
        std::fs::remove_dir_all(&token_dir)
            .with_context(|| format!("cleaning {}", token_dir.display()))?;
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&token_dir)
        .with_context(|| format!("creating {}", token_dir.display()))?;
    let mut tokens = BTreeMap::new();
    for p in proxies {
        // A bad namespace or service account fails here, before anything starts.
        let token = authenticator
            .issue_token(&p.namespace, &p.service_account)
            .with_context(|| format!("proxy {}: identity", p.proxy))?;
        let file = token_dir.join(format!("{}.token", p.proxy));
        write_private(&file, token.as_bytes())?;
        tokens.insert(p.proxy.clone(), ProxyToken { file, token });
    }
    let tokens_file = ca_dir.join(CA_TOKENS_FILE);
    // Replaced, not truncated in place, so that it is created owner-only even when an older
    // file had other permissions.
    std::fs::remove_file(&tokens_file).ok();
    authenticator
        .write_file(&tokens_file)
        .with_context(|| format!("writing {}", tokens_file.display()))?;
    Ok(MeshIdentities {
        trust_domain: trust_domain.to_string(),
        root_cert: ca_dir.join(mesh_ca::authority::ROOT_CERT_FILE),
        ca_dir,
        tokens_file,
        tokens,
    })
}

/// Writes a new file readable and writable by its owner only (mode 0600).
pub fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    std::fs::remove_file(path).ok();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;

    fn proxies() -> Vec<ProxyIdentity> {
        vec![
            ProxyIdentity {
                proxy: "helloworld-safe".into(),
                namespace: "default".into(),
                service_account: "helloworld".into(),
            },
            ProxyIdentity {
                proxy: "istio-ingressgateway".into(),
                namespace: "istio-system".into(),
                service_account: "istio-ingressgateway-service-account".into(),
            },
        ]
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn ca_and_tokens_are_created_and_the_ca_is_kept_across_runs() {
        let state = tempfile::tempdir().unwrap();
        let ids = prepare(state.path(), "cluster.local", &proxies()).unwrap();
        let root = std::fs::read_to_string(&ids.root_cert).unwrap();
        assert!(root.contains("BEGIN CERTIFICATE"), "{root}");
        assert_eq!(mode(&ids.ca_dir.join("ca-key.pem")), 0o600);

        // The control plane's file authenticates each proxy's token as its identity.
        let auth = TokenAuthenticator::from_file(&ids.tokens_file, "cluster.local").unwrap();
        assert_eq!(auth.len(), 2);
        assert_eq!(mode(&ids.tokens_file), 0o600);
        let text = std::fs::read_to_string(&ids.tokens_file).unwrap();
        let gw = ids.token("istio-ingressgateway").unwrap();
        assert_eq!(std::fs::read_to_string(&gw.file).unwrap(), gw.token);
        assert_eq!(mode(&gw.file), 0o600);
        assert_eq!(mode(gw.file.parent().unwrap()), 0o700);
        assert_eq!(gw.token.len(), 64, "32 random bytes in hex");
        assert!(gw.token.bytes().all(|b| b.is_ascii_hexdigit()));
        assert!(
            text.contains(&format!(
                "{} istio-system istio-ingressgateway-service-account",
                gw.token
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                "{} default helloworld",
                ids.token("helloworld-safe").unwrap().token
            )),
            "{text}"
        );

        // Next run: same root, new tokens, the old ones gone.
        let again = prepare(state.path(), "cluster.local", &proxies()[..1]).unwrap();
        assert_eq!(std::fs::read_to_string(&again.root_cert).unwrap(), root);
        assert_ne!(
            again.token("helloworld-safe").unwrap().token,
            ids.token("helloworld-safe").unwrap().token
        );
        assert!(!gw.file.exists(), "a token of the previous run is removed");
        assert!(again.token("istio-ingressgateway").is_err());
        assert_eq!(
            again.control_plane_identity(),
            "spiffe://cluster.local/ns/istio-system/sa/istiod"
        );
    }

    #[test]
    fn a_bad_identity_names_the_proxy() {
        let state = tempfile::tempdir().unwrap();
        let mut p = proxies();
        p[0].service_account = "Not/Valid".into();
        let e = format!(
            "{:#}",
            prepare(state.path(), "cluster.local", &p).unwrap_err()
        );
        assert!(e.contains("helloworld-safe"), "{e}");
    }
}
