//! Host names as Istio resolves them: a short name in a resource is relative to
//! the resource's namespace (`reviews` in `default` is
//! `reviews.default.svc.cluster.local`); a name with a dot or a wildcard is
//! taken as written ([`fqdn`]). Kubernetes DNS also resolves `name.ns`; the
//! registry can use [`kubernetes_fqdn`] for that form.

use crate::constants::DEFAULT_DOMAIN_SUFFIX;

/// Fully qualified name of `host` as written in a resource of `namespace`, as
/// Istio resolves it: only a short name (no dot, no wildcard) is expanded.
pub fn fqdn(host: &str, namespace: &str) -> String {
    fqdn_with_suffix(host, namespace, DEFAULT_DOMAIN_SUFFIX)
}

/// [`fqdn`] with an explicit cluster domain suffix.
pub fn fqdn_with_suffix(host: &str, namespace: &str, suffix: &str) -> String {
    if host.is_empty() || host.contains('.') || host.starts_with('*') {
        return host.to_string();
    }
    format!("{host}.{namespace}.svc.{suffix}")
}

/// Name of `host` as Kubernetes DNS resolves it from `namespace`: like [`fqdn`],
/// and `name.ns` also gains `.svc.cluster.local`.
pub fn kubernetes_fqdn(host: &str, namespace: &str) -> String {
    kubernetes_fqdn_with_suffix(host, namespace, DEFAULT_DOMAIN_SUFFIX)
}

/// [`kubernetes_fqdn`] with an explicit cluster domain suffix.
pub fn kubernetes_fqdn_with_suffix(host: &str, namespace: &str, suffix: &str) -> String {
    let host = host.trim_end_matches('.');
    if host == "*" || host.starts_with("*.") || host.parse::<std::net::IpAddr>().is_ok() {
        return host.to_string();
    }
    match host.matches('.').count() {
        0 => format!("{host}.{namespace}.svc.{suffix}"),
        // `name.ns` is a service in another namespace, unless the second label
        // already is a suffix such as `svc` (rare, `name.svc`): keep it then.
        1 if !host.ends_with(".svc") => format!("{host}.svc.{suffix}"),
        _ => host.to_string(),
    }
}

/// `(name, namespace)` of a Kubernetes service FQDN (`name.ns.svc.SUFFIX`).
pub fn service_of_fqdn<'a>(fqdn: &'a str, suffix: &str) -> Option<(&'a str, &'a str)> {
    let stem = fqdn.strip_suffix(suffix)?.strip_suffix(".svc.")?;
    let (name, namespace) = stem.split_once('.')?;
    if name.is_empty() || namespace.is_empty() || namespace.contains('.') {
        return None;
    }
    Some((name, namespace))
}

/// Whether `pattern` (possibly a wildcard such as `*.example.com` or `*`)
/// matches `host`; both should already be fully qualified.
pub fn host_matches(pattern: &str, host: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        if let Some(other) = host.strip_prefix('*') {
            return other.ends_with(suffix);
        }
        return host.ends_with(suffix) && host.len() > suffix.len();
    }
    if let Some(suffix) = host.strip_prefix('*') {
        return pattern.ends_with(suffix) && pattern.len() > suffix.len();
    }
    pattern.eq_ignore_ascii_case(host)
}

/// Whether two host patterns can match a common host (either matches the other).
pub fn hosts_overlap(a: &str, b: &str) -> bool {
    host_matches(a, b) || host_matches(b, a)
}

/// Splits a `namespace/host` reference (Gateway and Sidecar hosts); `.` means
/// the resource's own namespace, `*` any namespace, no prefix any namespace.
pub fn split_namespaced_host(reference: &str) -> (Option<&str>, &str) {
    match reference.split_once('/') {
        Some((ns, host)) => (Some(ns), host),
        None => (None, reference),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_short_and_partial_names() {
        assert_eq!(
            fqdn("reviews", "default"),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(fqdn("reviews.prod", "default"), "reviews.prod");
        assert_eq!(
            kubernetes_fqdn("reviews.prod", "default"),
            "reviews.prod.svc.cluster.local"
        );
        assert_eq!(
            kubernetes_fqdn("reviews", "default"),
            "reviews.default.svc.cluster.local"
        );
        assert_eq!(
            fqdn("reviews.prod.svc.cluster.local", "default"),
            "reviews.prod.svc.cluster.local"
        );
        assert_eq!(fqdn("www.google.com", "default"), "www.google.com");
        assert_eq!(fqdn("*.example.com", "x"), "*.example.com");
        assert_eq!(fqdn("*", "x"), "*");
        assert_eq!(fqdn("10.0.0.1", "x"), "10.0.0.1");
        assert_eq!(
            fqdn_with_suffix("a", "b", "mesh.local"),
            "a.b.svc.mesh.local"
        );
        assert_eq!(kubernetes_fqdn("*.example.com", "x"), "*.example.com");
    }

    #[test]
    fn service_from_fqdn() {
        assert_eq!(
            service_of_fqdn("reviews.default.svc.cluster.local", "cluster.local"),
            Some(("reviews", "default"))
        );
        assert_eq!(service_of_fqdn("www.google.com", "cluster.local"), None);
    }

    #[test]
    fn wildcard_matching() {
        assert!(host_matches("*", "anything.com"));
        assert!(host_matches("*.example.com", "a.example.com"));
        assert!(!host_matches("*.example.com", "example.com"));
        assert!(host_matches("A.example.com", "a.example.com"));
        assert!(hosts_overlap("a.example.com", "*.example.com"));
        assert!(hosts_overlap("*.example.com", "*.b.example.com"));
        assert!(!hosts_overlap("a.com", "b.com"));
    }

    #[test]
    fn namespaced_hosts() {
        assert_eq!(
            split_namespaced_host("prod/*.x.com"),
            (Some("prod"), "*.x.com")
        );
        assert_eq!(split_namespaced_host("x.com"), (None, "x.com"));
    }
}
