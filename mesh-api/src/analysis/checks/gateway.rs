//! Istio's `gateway` analyzers: ConflictingGateway (IST0145), Certificate (IST0138),
//! IngressGatewayPort (IST0101, IST0162) and Secret (IST0101).

use std::collections::{BTreeSet, HashMap};

use super::{is_subset, not_found, pods, selector_string};
use crate::analysis::host_index::HostIndex;
use crate::analysis::{Index, Message, codes};
use crate::common::ServerTlsMode;
use crate::constants::ROOT_NAMESPACE;
use crate::host::{hosts_overlap, split_namespaced_host};
use crate::resource::Resource;

/// IST0145: gateways selecting the same workloads declare one port and host twice.
pub(in crate::analysis) fn conflicting_gateways(index: &Index<'_>, out: &mut Vec<Message>) {
    let gws: Vec<(&Resource, &crate::networking::Gateway)> = index.gateways().collect();
    // Only gateways with a server on the same port and an overlapping host
    // can conflict: index the hosts of every server by port.
    let mut hosts_by_port: HashMap<u32, Vec<(&str, usize)>> = HashMap::new();
    for (j, (_, gw)) in gws.iter().enumerate() {
        for s in gw.spec.servers.iter().filter(|s| s.port.number != 0) {
            let hosts = hosts_by_port.entry(s.port.number).or_default();
            hosts.extend(s.hosts.iter().map(|h| (split_namespaced_host(h).1, j)));
        }
    }
    let by_port: HashMap<u32, HostIndex<'_>> = hosts_by_port
        .into_iter()
        .map(|(port, hosts)| (port, HostIndex::new(hosts)))
        .collect();
    let mut candidates = Vec::new();
    for (i, (r, gw)) in gws.iter().enumerate() {
        let mut conflicts: BTreeSet<String> = BTreeSet::new();
        let mut detail = None;
        candidates.clear();
        for s in &gw.spec.servers {
            let Some(hosts) = by_port.get(&s.port.number).filter(|_| s.port.number != 0) else {
                continue;
            };
            for h in &s.hosts {
                hosts.overlapping(split_namespaced_host(h).1, &mut candidates);
            }
        }
        candidates.sort_unstable();
        candidates.dedup();
        // In order, so that the port and hosts named are those comparing all would name.
        for (j, (o, ogw)) in candidates.iter().map(|&j| (j, &gws[j])) {
            if i == j || o.meta.key() == r.meta.key() {
                continue;
            }
            let same_workloads = is_subset(&gw.spec.selector, &ogw.spec.selector)
                || is_subset(&ogw.spec.selector, &gw.spec.selector);
            if !same_workloads {
                continue;
            }
            for s in &gw.spec.servers {
                for os in &ogw.spec.servers {
                    if s.port.number == 0 || s.port.number != os.port.number {
                        continue;
                    }
                    let shared: Vec<&String> = s
                        .hosts
                        .iter()
                        .filter(|h| {
                            os.hosts.iter().any(|oh| {
                                hosts_overlap(
                                    split_namespaced_host(h).1,
                                    split_namespaced_host(oh).1,
                                )
                            })
                        })
                        .collect();
                    if !shared.is_empty() {
                        conflicts.insert(o.meta.key());
                        detail.get_or_insert((
                            s.port.number,
                            shared.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
                        ));
                    }
                }
            }
        }
        if let Some((port, hosts)) = detail {
            out.push(Message::about(
                codes::ConflictingGateways,
                r,
                "spec.servers",
                format!(
                    "Conflict with gateways {} (workload selector {}, port {port}, hosts {}).",
                    conflicts.into_iter().collect::<Vec<_>>().join(","),
                    selector_string(&gw.spec.selector),
                    hosts.join(",")
                ),
            ));
        }
    }
}

/// IST0138: a gateway serves a certificate that another gateway also serves on
/// (at least) the same workloads: the other's selector includes this one's labels.
pub(in crate::analysis) fn duplicate_certificates(index: &Index<'_>, out: &mut Vec<Message>) {
    let certs = |gw: &crate::networking::Gateway| -> BTreeSet<String> {
        gw.spec
            .servers
            .iter()
            .filter_map(|s| s.tls.as_ref())
            .filter(|t| {
                !matches!(
                    t.mode,
                    Some(ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough)
                )
            })
            .filter_map(
                |t| match (&t.credential_name, &t.server_certificate, &t.private_key) {
                    (Some(c), _, _) if !c.is_empty() => Some(format!("credential:{c}")),
                    (_, Some(cert), Some(key)) => Some(format!("files:{cert}:{key}")),
                    _ => None,
                },
            )
            .collect()
    };
    let gws: Vec<(&Resource, &crate::networking::Gateway, BTreeSet<String>)> =
        index.gateways().map(|(r, g)| (r, g, certs(g))).collect();
    // Only gateways that share a certificate are compared.
    let mut by_cert: HashMap<&str, Vec<usize>> = HashMap::new();
    for (j, (_, _, certs)) in gws.iter().enumerate() {
        for c in certs {
            by_cert.entry(c.as_str()).or_default().push(j);
        }
    }
    for (r, gw, mine) in &gws {
        let mut names = BTreeSet::new();
        let mut candidates: Vec<usize> = mine
            .iter()
            .flat_map(|c| by_cert.get(c.as_str()).into_iter().flatten().copied())
            .collect();
        candidates.sort_unstable();
        candidates.dedup();
        for (o, ogw, theirs) in candidates.iter().map(|&j| &gws[j]) {
            if o.meta.key() == r.meta.key() || mine.is_disjoint(theirs) {
                continue;
            }
            if is_subset(&gw.spec.selector, &ogw.spec.selector) {
                names.insert(o.meta.key());
            }
        }
        if names.is_empty() {
            continue;
        }
        names.insert(r.meta.key());
        out.push(Message::about(
            codes::GatewayDuplicateCertificate,
            r,
            "spec.servers",
            format!(
                "Duplicate certificate in multiple gateways [{}] may cause 404s if clients re-use HTTP2 connections.",
                names.into_iter().collect::<Vec<_>>().join(" ")
            ),
        ));
    }
}

/// IST0101 for gateways selecting no pod, IST0162 for gateway ports no Service exposes.
/// Only run when the input holds pods.
pub(in crate::analysis) fn gateway_ports(index: &Index<'_>, out: &mut Vec<Message>) {
    let pods = pods(index);
    if pods.is_empty() {
        return;
    }
    // Services with a selector, by namespace and the first label of their
    // selector: a pod's Services are among those under one of its labels.
    let mut services: HashMap<(&str, &str, &str), Vec<&k8s_openapi::api::core::v1::ServiceSpec>> =
        HashMap::new();
    for (sr, svc) in index.services() {
        let Some(spec) = &svc.spec else { continue };
        let Some(sel) = &spec.selector else { continue };
        let Some((k, v)) = sel.iter().next() else {
            continue;
        };
        services
            .entry((sr.meta.namespace.as_str(), k.as_str(), v.as_str()))
            .or_default()
            .push(spec);
    }
    for (r, gw) in index.gateways() {
        let selected = pods.selected(&gw.spec.selector, None);
        if selected.is_empty() {
            out.push(not_found(
                r,
                "spec.selector",
                "selector",
                &selector_string(&gw.spec.selector),
            ));
            continue;
        }
        // Ports of the Services that front the selected pods.
        let mut ports = BTreeSet::new();
        for (pod, labels) in &selected {
            let fronting = labels.iter().flat_map(|(k, v)| {
                services
                    .get(&(pod.meta.namespace.as_str(), k.as_str(), v.as_str()))
                    .into_iter()
                    .flatten()
            });
            for spec in fronting {
                let Some(sel) = &spec.selector else { continue };
                if sel.is_empty() || !is_subset(sel, labels) {
                    continue;
                }
                // A server port may name the Service port or its target port.
                for p in spec.ports.iter().flatten() {
                    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
                    ports.insert(p.port as u32);
                    if let Some(IntOrString::Int(t)) = &p.target_port {
                        ports.insert(*t as u32);
                    }
                }
            }
        }
        for (i, s) in gw.spec.servers.iter().enumerate() {
            let number = s.port.target_port.unwrap_or(s.port.number);
            if !ports.contains(&number) {
                out.push(Message::about(
                    codes::GatewayPortNotDefinedOnService,
                    r,
                    &format!("spec.servers[{i}].port"),
                    format!(
                        "The gateway is listening on a target port (port {number}) that is not defined in the Service associated with its workload instances (Pod selector {}). If you need to access the gateway port through the gateway Service, it will not be available.",
                        selector_string(&gw.spec.selector)
                    ),
                ));
            }
        }
    }
}

/// IST0101 for a gateway `credentialName` with no Secret of that name in the
/// namespace of the gateway's workloads. The workloads are the input's Pods the
/// selector matches; without any, the default ingress gateway
/// (`istio: ingressgateway`) is taken to run in `istio-system` and any other
/// gateway in its own namespace. Only run when the input holds Secrets.
pub(in crate::analysis) fn gateway_secrets(index: &Index<'_>, out: &mut Vec<Message>) {
    let secrets: BTreeSet<(&str, &str)> = index
        .secrets()
        .map(|(r, _)| (r.meta.namespace.as_str(), r.meta.name.as_str()))
        .collect();
    if secrets.is_empty() {
        return;
    }
    let pods = pods(index);
    for (r, gw) in index.gateways() {
        let mut namespaces: BTreeSet<&str> = if gw.spec.selector.is_empty() {
            BTreeSet::new()
        } else {
            pods.selected(&gw.spec.selector, None)
                .into_iter()
                .map(|(p, _)| p.meta.namespace.as_str())
                .collect()
        };
        if namespaces.is_empty() {
            let default_ingress = gw.spec.selector.len() == 1
                && gw.spec.selector.get("istio").map(String::as_str) == Some("ingressgateway");
            namespaces.insert(if default_ingress {
                ROOT_NAMESPACE
            } else {
                r.meta.namespace.as_str()
            });
        }
        for (i, server) in gw.spec.servers.iter().enumerate() {
            let Some(name) = server
                .tls
                .as_ref()
                .and_then(|t| t.credential_name.as_deref())
            else {
                continue;
            };
            // `name` may carry a `kubernetes://` or `namespace/` form; the Secret is the last part.
            let name = name.strip_prefix("kubernetes://").unwrap_or(name);
            let missing = namespaces.iter().any(|ns| !secrets.contains(&(*ns, name)));
            if missing {
                out.push(not_found(
                    r,
                    &format!("spec.servers[{i}].tls.credentialName"),
                    "credentialName",
                    name,
                ));
            }
        }
    }
}
