//! meshctl against a Kubernetes cluster (`--kubeconfig`): the cluster's configuration as
//! mesh-control reads it, the control plane's debug port and each proxy's admin port reached
//! through the API server.
//!
//! As istioctl, meshctl reaches a pod's port by a port-forward ([`Transport::KubePortForward`]:
//! the API server, then the pod's kubelet, then the port inside the pod, so a proxy admin bound
//! to 127.0.0.1 is reachable). The control plane's debug port can also be read through the API
//! server's pod proxy ([`Transport::KubePodProxy`], `proxy-status --pod-proxy`): no kubelet
//! involved, but the API server must reach pod IPs and the port must listen on the pod's IP.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::Args;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use mesh_control::source::{ConfigSource as _, KubernetesSource};

use crate::admin_client::{PodPort, Transport};

/// The label of the control plane's pods (Istio's, which the chart keeps).
pub const CONTROL_PLANE_SELECTOR: &str = "app=istiod";
/// The control plane's debug port in its pod (istiod's).
pub const DEBUG_PORT: u16 = 15014;
/// A sidecar's or gateway's admin port in its pod (Envoy's in Istio's pods).
pub const PROXY_ADMIN_PORT: u16 = 15000;

/// Where a proxy named on the command line runs: a cluster instead of the local mesh.
#[derive(Args, Debug, Clone, Default)]
pub struct ClusterProxyArgs {
    /// A Kubernetes cluster instead of the local mesh: NAME is then `POD`, `POD.NAMESPACE`,
    /// `deploy/NAME` or `deploy/NAME.NAMESPACE`, its admin reached by a port-forward.
    #[arg(long, value_name = "FILE")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, requires = "kubeconfig")]
    pub context: Option<String>,
    /// The namespace of NAME when it names none (default: the context's, else `default`).
    #[arg(short = 'n', long, requires = "kubeconfig")]
    pub namespace: Option<String>,
}

impl ClusterProxyArgs {
    /// The proxy `name` of the cluster, when `--kubeconfig` is given: its `POD.NAMESPACE` and
    /// the transport to its admin.
    pub fn proxy(&self, name: &str) -> anyhow::Result<Option<(String, Transport)>> {
        let Some(kubeconfig) = &self.kubeconfig else {
            return Ok(None);
        };
        let config = config(kubeconfig, self.context.as_deref())?;
        proxy_admin(&config, name, self.namespace.as_deref()).map(Some)
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")
}

/// The cluster of `kubeconfig` (its current context unless `context`), read as mesh-control
/// reads it.
pub fn config(kubeconfig: &Path, context: Option<&str>) -> anyhow::Result<kube::Config> {
    Ok(
        runtime()?.block_on(mesh_control::source::kubernetes::kube_config(
            Some(kubeconfig),
            context,
        ))?,
    )
}

/// A running, ready control plane pod of `namespace` and the transport to its `port`: a
/// port-forward, or with `pod_proxy` the API server's pod proxy.
pub fn control_plane(
    config: &kube::Config,
    namespace: &str,
    port: u16,
    pod_proxy: bool,
) -> anyhow::Result<(String, Transport)> {
    let pods = runtime()?.block_on(async {
        let client = kube::Client::try_from(config.clone())?;
        let api: Api<Pod> = Api::namespaced(client, namespace);
        api.list(&ListParams::default().labels(CONTROL_PLANE_SELECTOR))
            .await
    });
    let pods = pods.with_context(|| {
        format!(
            "listing the control plane's pods ({CONTROL_PLANE_SELECTOR}) in {namespace} at {}",
            config.cluster_url
        )
    })?;
    let Some(pod) = pods
        .items
        .iter()
        .find(|p| is_ready(p))
        .and_then(|p| p.metadata.name.clone())
    else {
        bail!(
            "no ready control plane pod ({CONTROL_PLANE_SELECTOR}) in namespace {namespace} of {} ({} found); is the mesh installed there (-i NAMESPACE)?",
            config.cluster_url,
            pods.items.len()
        );
    };
    let port = PodPort {
        config: config.clone(),
        namespace: namespace.to_string(),
        pod: pod.clone(),
        port,
    };
    let transport = if pod_proxy {
        Transport::KubePodProxy(Box::new(port))
    } else {
        Transport::KubePortForward(Box::new(port))
    };
    Ok((format!("{pod}.{namespace}"), transport))
}

fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// What a proxy name on the command line says, as istioctl reads it: `POD`, `POD.NAMESPACE`,
/// `deploy/NAME`, `deploy/NAME.NAMESPACE` (also `deployment/`).
#[derive(Debug, PartialEq, Eq)]
pub struct ProxyName<'a> {
    pub deployment: bool,
    pub name: &'a str,
    pub namespace: Option<&'a str>,
}

impl<'a> ProxyName<'a> {
    pub fn parse(text: &'a str) -> ProxyName<'a> {
        let (deployment, rest) = match text
            .strip_prefix("deploy/")
            .or_else(|| text.strip_prefix("deployment/"))
        {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        match rest.rsplit_once('.') {
            Some((name, namespace)) if !name.is_empty() && !namespace.is_empty() => ProxyName {
                deployment,
                name,
                namespace: Some(namespace),
            },
            _ => ProxyName {
                deployment,
                name: rest,
                namespace: None,
            },
        }
    }
}

/// The pod of the proxy `name` (a Deployment's first ready pod, as istioctl picks it) and a
/// port-forward to its admin port: `(POD.NAMESPACE, transport)`.
pub fn proxy_admin(
    config: &kube::Config,
    name: &str,
    namespace: Option<&str>,
) -> anyhow::Result<(String, Transport)> {
    let parsed = ProxyName::parse(name);
    let namespace = parsed
        .namespace
        .or(namespace)
        .unwrap_or(&config.default_namespace)
        .to_string();
    let pod = if parsed.deployment {
        runtime()?.block_on(deployment_pod(config, &namespace, parsed.name))?
    } else {
        parsed.name.to_string()
    };
    let transport = Transport::KubePortForward(Box::new(PodPort {
        config: config.clone(),
        namespace: namespace.clone(),
        pod: pod.clone(),
        port: PROXY_ADMIN_PORT,
    }));
    Ok((format!("{pod}.{namespace}"), transport))
}

/// The first ready pod (by name) that Deployment `namespace/name` selects.
async fn deployment_pod(
    config: &kube::Config,
    namespace: &str,
    name: &str,
) -> anyhow::Result<String> {
    let client = kube::Client::try_from(config.clone())?;
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let deployment = deployments
        .get(name)
        .await
        .with_context(|| format!("Deployment {namespace}/{name} at {}", config.cluster_url))?;
    let labels = deployment.spec.selector.match_labels.unwrap_or_default();
    if labels.is_empty() {
        bail!("Deployment {namespace}/{name} has no matchLabels selector to find its pods by");
    }
    let selector = labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",");
    let pods: Api<Pod> = Api::namespaced(client, namespace);
    let list = pods
        .list(&ListParams::default().labels(&selector))
        .await
        .with_context(|| {
            format!("listing the pods of Deployment {namespace}/{name} ({selector})")
        })?;
    let mut ready: Vec<String> = list
        .items
        .iter()
        .filter(|p| is_ready(p))
        .filter_map(|p| p.metadata.name.clone())
        .collect();
    ready.sort();
    match ready.into_iter().next() {
        Some(pod) => Ok(pod),
        None => bail!(
            "Deployment {namespace}/{name} has no ready pod ({} selected by {selector})",
            list.items.len()
        ),
    }
}

/// A cluster's configuration as mesh-control loads it.
pub struct LiveConfig {
    pub config: mesh_api::Config,
    /// `kubernetes https://...`.
    pub source: String,
    /// Objects its validation rejects (left out of `config`): `(KIND NS/NAME, errors)`.
    pub rejected: Vec<(String, Vec<String>)>,
}

/// The cluster's live configuration, as mesh-control loads it.
pub fn live_config(kubeconfig: &Path, context: Option<&str>) -> anyhow::Result<LiveConfig> {
    runtime()?.block_on(async {
        let mut source = KubernetesSource::connect(Some(kubeconfig), context).await?;
        let snapshot = source.load().await?;
        let rejected = snapshot
            .origins
            .iter()
            .filter(|o| !o.errors.is_empty())
            .map(|o| (o.name.clone(), o.errors.clone()))
            .collect();
        let config = mesh_api::Config {
            resources: snapshot.resources,
            skipped: snapshot.skipped,
            ..mesh_api::Config::default()
        };
        Ok(LiveConfig {
            config,
            source: snapshot.source,
            rejected,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::ProxyName;

    #[test]
    fn proxy_names_as_istioctl_reads_them() {
        let p = |deployment, name, namespace| ProxyName {
            deployment,
            name,
            namespace,
        };
        assert_eq!(
            ProxyName::parse("reviews-v1-abc"),
            p(false, "reviews-v1-abc", None)
        );
        assert_eq!(
            ProxyName::parse("reviews-v1-abc.shop"),
            p(false, "reviews-v1-abc", Some("shop"))
        );
        assert_eq!(ProxyName::parse("deploy/reviews"), p(true, "reviews", None));
        assert_eq!(
            ProxyName::parse("deployment/reviews.shop"),
            p(true, "reviews", Some("shop"))
        );
        // A trailing or leading dot names no namespace.
        assert_eq!(ProxyName::parse("reviews."), p(false, "reviews.", None));
    }
}
