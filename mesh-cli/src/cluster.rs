//! meshctl against a Kubernetes cluster (`--kubeconfig`): the cluster's configuration as
//! mesh-control reads it, and the control plane's debug port reached through the API server.
//!
//! istioctl reaches istiod by a port-forward (through the kubelet); meshctl goes through the
//! API server's pod proxy instead ([`Transport::KubePodProxy`]): one HTTP request per call and
//! no kubelet, which also works where there is none (the API server of the tests). It needs an
//! API server that can reach pod IPs and a port listening on the pod's IP, which the control
//! plane's debug port does.

use std::path::Path;

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use mesh_control::source::{ConfigSource as _, KubernetesSource};

use crate::admin_client::{PodProxy, Transport};

/// The label of the control plane's pods (Istio's, which the chart keeps).
pub const CONTROL_PLANE_SELECTOR: &str = "app=istiod";
/// The control plane's debug port in its pod (istiod's).
pub const DEBUG_PORT: u16 = 15014;

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

/// A running, ready control plane pod of `namespace` and the transport to its `port`.
pub fn control_plane(
    config: &kube::Config,
    namespace: &str,
    port: u16,
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
    let ready = |p: &Pod| {
        p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
    };
    let Some(pod) = pods
        .items
        .iter()
        .find(|p| ready(p))
        .and_then(|p| p.metadata.name.clone())
    else {
        bail!(
            "no ready control plane pod ({CONTROL_PLANE_SELECTOR}) in namespace {namespace} of {} ({} found); is the mesh installed there (-i NAMESPACE)?",
            config.cluster_url,
            pods.items.len()
        );
    };
    let transport = Transport::KubePodProxy(Box::new(PodProxy {
        config: config.clone(),
        namespace: namespace.to_string(),
        pod: pod.clone(),
        port,
    }));
    Ok((format!("{pod}.{namespace}"), transport))
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
