//! Route selection: the virtual host by domain, then the first matching
//! route, then the weighted cluster; plus path rewrites and redirects.
//! Pure functions over the model, so they are tested without sockets.

use crate::model::{
    DomainPattern, PathMatch, RedirectAction, Route, RouteMatch, RouteTable, VirtualHost,
    WeightedCluster,
};

use super::matcher::{RequestHead, header_matches, query_matches, whole_match};

/// Envoy's virtual host precedence: an exact domain, then the longest
/// suffix wildcard, then the longest prefix wildcard, then `*`. Hosts are
/// compared lower-cased and with their port, so a domain with a port only
/// matches a Host with that port. Wildcards need at least one character.
pub fn select_virtual_host<'a>(table: &'a RouteTable, authority: &str) -> Option<&'a VirtualHost> {
    if let Some(vh) = table.exact_virtual_host(authority) {
        return Some(vh);
    }
    // Case-insensitive comparisons in place: this runs on every request that
    // no exact domain takes, so nothing is lower-cased into new strings.
    let mut best_suffix: Option<(usize, &VirtualHost)> = None;
    let mut best_prefix: Option<(usize, &VirtualHost)> = None;
    let mut any: Option<&VirtualHost> = None;
    for (vh, domain) in table.wildcard_domains() {
        match domain {
            DomainPattern::Exact(_) => {}
            DomainPattern::Suffix(s) => {
                if domain_accepts(domain, authority)
                    && best_suffix.is_none_or(|(len, _)| s.len() > len)
                {
                    best_suffix = Some((s.len(), vh));
                }
            }
            DomainPattern::Prefix(p) => {
                if domain_accepts(domain, authority)
                    && best_prefix.is_none_or(|(len, _)| p.len() > len)
                {
                    best_prefix = Some((p.len(), vh));
                }
            }
            DomainPattern::Any => {
                if any.is_none() {
                    any = Some(vh);
                }
            }
        }
    }
    best_suffix.or(best_prefix).map(|(_, vh)| vh).or(any)
}

/// Whether one domain pattern accepts `authority` on its own (precedence
/// between patterns is [`select_virtual_host`]'s).
pub fn domain_accepts(domain: &DomainPattern, authority: &str) -> bool {
    let host = authority.as_bytes();
    match domain {
        DomainPattern::Exact(d) => d.as_bytes().eq_ignore_ascii_case(host),
        DomainPattern::Suffix(s) => {
            let s = s.as_bytes();
            host.len() > s.len() && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
        }
        DomainPattern::Prefix(p) => {
            let p = p.as_bytes();
            host.len() > p.len() && host[..p.len()].eq_ignore_ascii_case(p)
        }
        DomainPattern::Any => true,
    }
}

/// The first route of the virtual host whose match accepts the request.
pub fn select_route<'a>(vh: &'a VirtualHost, req: &RequestHead<'_>) -> Option<&'a Route> {
    vh.routes.iter().find(|r| route_matches(&r.matcher, req))
}

pub fn route_matches(m: &RouteMatch, req: &RequestHead<'_>) -> bool {
    let path_ok = match &m.path {
        // Envoy matches a prefix against the whole `:path`, query included.
        PathMatch::Prefix(p) => starts_with(req.path, p, m.case_sensitive),
        PathMatch::Path(p) => {
            let path = req.path_only();
            if m.case_sensitive {
                path == p
            } else {
                path.eq_ignore_ascii_case(p)
            }
        }
        PathMatch::Regex(re) => whole_match(re, req.path_only()),
        PathMatch::PathSeparatedPrefix(p) => {
            let path = req.path_only();
            starts_with(path, p, m.case_sensitive)
                && matches!(path.as_bytes().get(p.len()), None | Some(b'/'))
        }
    };
    if !path_ok {
        return false;
    }
    if m.grpc
        && !req
            .header("content-type")
            .is_some_and(|ct| ct.starts_with("application/grpc"))
    {
        return false;
    }
    if !m.headers.iter().all(|h| header_matches(h, req)) {
        return false;
    }
    let query = req.query();
    if !m.query_parameters.iter().all(|q| query_matches(q, query)) {
        return false;
    }
    m.runtime_fraction.is_none_or(|f| f.sample())
}

fn starts_with(value: &str, prefix: &str, case_sensitive: bool) -> bool {
    if case_sensitive {
        value.starts_with(prefix)
    } else {
        value.len() >= prefix.len()
            && value.is_char_boundary(prefix.len())
            && value[..prefix.len()].eq_ignore_ascii_case(prefix)
    }
}

/// Picks a weighted cluster with `roll` drawn uniformly from `0..total`.
pub fn pick_weighted(clusters: &[WeightedCluster], roll: u64) -> Option<&WeightedCluster> {
    let mut acc = 0u64;
    for c in clusters {
        acc += u64::from(c.weight);
        if roll < acc {
            return Some(c);
        }
    }
    clusters.last()
}

pub fn total_weight(clusters: &[WeightedCluster]) -> u64 {
    clusters.iter().map(|c| u64::from(c.weight)).sum()
}

/// The path sent upstream after `prefix_rewrite` or `regex_rewrite`.
pub fn rewrite_path(
    path_and_query: &str,
    matcher: &RouteMatch,
    prefix_rewrite: Option<&str>,
    regex_rewrite: Option<&(regex::Regex, String)>,
) -> String {
    if let Some(new_prefix) = prefix_rewrite
        && let PathMatch::Prefix(old) | PathMatch::PathSeparatedPrefix(old) = &matcher.path
        && path_and_query.len() >= old.len()
        && path_and_query.is_char_boundary(old.len())
    {
        return format!("{new_prefix}{}", &path_and_query[old.len()..]);
    }
    if let Some((re, substitution)) = regex_rewrite {
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        let rewritten = re.replace_all(path, substitution.as_str());
        return match query {
            Some(q) => format!("{rewritten}?{q}"),
            None => rewritten.into_owned(),
        };
    }
    path_and_query.to_string()
}

/// The `Location` of a redirect.
pub fn redirect_location(
    r: &RedirectAction,
    matcher: &RouteMatch,
    scheme: &str,
    authority: &str,
    path_and_query: &str,
) -> String {
    let scheme = r.scheme.as_deref().unwrap_or(scheme);
    let (orig_host, orig_port) = split_authority(authority);
    let host = r.host.as_deref().unwrap_or(orig_host);
    let port = match (r.port, r.scheme.is_some()) {
        (Some(p), _) => Some(p),
        // Changing the scheme drops the original port, as Envoy does.
        (None, true) => None,
        (None, false) => orig_port,
    };
    let default_port = matches!((scheme, port), ("http", Some(80)) | ("https", Some(443)));
    let authority = match port {
        Some(p) if !default_port => format!("{host}:{p}"),
        _ => host.to_string(),
    };
    let mut path = match (&r.path, &r.prefix_rewrite) {
        (Some(p), _) => {
            // `path_redirect` replaces the path but keeps the query.
            match path_and_query.split_once('?') {
                Some((_, q)) if !p.contains('?') => format!("{p}?{q}"),
                _ => p.clone(),
            }
        }
        (None, Some(prefix)) => rewrite_path(path_and_query, matcher, Some(prefix), None),
        (None, None) => path_and_query.to_string(),
    };
    if r.strip_query
        && let Some((p, _)) = path.split_once('?')
    {
        path = p.to_string();
    }
    format!("{scheme}://{authority}{path}")
}

/// Host and port of an authority, IPv6 literals included.
pub fn split_authority(authority: &str) -> (&str, Option<u16>) {
    if let Some(rest) = authority.strip_prefix('[') {
        if let Some((host, after)) = rest.split_once(']') {
            let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
            return (&authority[..host.len() + 2], port);
        }
        return (authority, None);
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(port) => (h, Some(port)),
            Err(_) => (authority, None),
        },
        _ => (authority, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{HeaderMutations, RouteAction};

    fn vh(name: &str, domains: Vec<DomainPattern>) -> VirtualHost {
        VirtualHost {
            name: name.into(),
            domains,
            routes: vec![],
            headers: HeaderMutations::default(),
            retry_policy: None,
            fault: None,
            cors: None,
        }
    }

    fn table() -> RouteTable {
        RouteTable::new(
            "t".into(),
            vec![
                vh("any", vec![DomainPattern::Any]),
                vh("prefix", vec![DomainPattern::Prefix("api.".into())]),
                vh("short-suffix", vec![DomainPattern::Suffix(".com".into())]),
                vh("suffix", vec![DomainPattern::Suffix(".example.com".into())]),
                vh(
                    "exact",
                    vec![DomainPattern::Exact("www.example.com".into())],
                ),
                vh("port", vec![DomainPattern::Exact("hello:8080".into())]),
            ],
            HeaderMutations::default(),
        )
    }

    #[test]
    fn domain_precedence() {
        let t = table();
        let name = |h: &str| select_virtual_host(&t, h).map(|v| v.name.as_str());
        assert_eq!(name("WWW.example.com"), Some("exact"));
        assert_eq!(name("a.example.com"), Some("suffix"));
        assert_eq!(name("api.example.com"), Some("suffix"));
        assert_eq!(name("a.com"), Some("short-suffix"));
        assert_eq!(name("api.local"), Some("prefix"));
        assert_eq!(name("hello:8080"), Some("port"));
        // A Host with another port does not match a domain with a port.
        assert_eq!(name("hello:9090"), Some("any"));
        assert_eq!(name("hello"), Some("any"));
        // Wildcards need at least one character.
        assert_eq!(name(".example.com"), Some("short-suffix"));
        // Case-insensitive on both sides, wildcards included.
        assert_eq!(name("A.EXAMPLE.COM"), Some("suffix"));
        assert_eq!(name("API.local"), Some("prefix"));
        assert_eq!(name("HELLO:8080"), Some("port"));
        // A multi-byte Host neither panics nor matches a wildcard by accident.
        assert_eq!(name("é.example.com"), Some("suffix"));
        assert_eq!(name("ä"), Some("any"));
    }

    #[test]
    fn exact_domains_are_indexed_among_many_hosts() {
        let mut hosts: Vec<VirtualHost> = (0..1000)
            .map(|i| {
                vh(
                    &format!("svc-{i}"),
                    vec![DomainPattern::Exact(format!("Svc-{i}.bench.local"))],
                )
            })
            .collect();
        hosts.insert(
            0,
            vh("wild", vec![DomainPattern::Suffix(".bench.local".into())]),
        );
        // A second virtual host with an already-taken domain never wins it.
        hosts.push(vh(
            "dup",
            vec![DomainPattern::Exact("svc-7.bench.local".into())],
        ));
        let t = RouteTable::new("t".into(), hosts, HeaderMutations::default());
        let name = |h: &str| select_virtual_host(&t, h).map(|v| v.name.as_str());
        assert_eq!(name("svc-999.bench.local"), Some("svc-999"));
        assert_eq!(name("SVC-0.BENCH.LOCAL"), Some("svc-0"));
        assert_eq!(name("svc-7.bench.local"), Some("svc-7"));
        // An exact domain beats a wildcard listed before it; other hosts fall to the wildcard.
        assert_eq!(name("svc-1000.bench.local"), Some("wild"));
        assert_eq!(name("elsewhere"), None);
    }

    fn rm(path: PathMatch) -> RouteMatch {
        RouteMatch {
            path,
            case_sensitive: true,
            headers: vec![],
            query_parameters: vec![],
            runtime_fraction: None,
            grpc: false,
        }
    }

    #[test]
    fn path_matching_and_rewrite() {
        let headers = http::HeaderMap::new();
        let req = |path| RequestHead {
            method: "GET",
            authority: "h",
            path,
            scheme: "http",
            headers: &headers,
        };
        assert!(route_matches(
            &rm(PathMatch::Prefix("/api".into())),
            &req("/api/v1?x")
        ));
        assert!(route_matches(
            &rm(PathMatch::Path("/api".into())),
            &req("/api?x=1")
        ));
        assert!(!route_matches(
            &rm(PathMatch::Path("/api".into())),
            &req("/api/")
        ));
        let mut ci = rm(PathMatch::Prefix("/API".into()));
        ci.case_sensitive = false;
        assert!(route_matches(&ci, &req("/api/x")));
        assert!(route_matches(
            &rm(PathMatch::PathSeparatedPrefix("/api".into())),
            &req("/api/x")
        ));
        assert!(!route_matches(
            &rm(PathMatch::PathSeparatedPrefix("/api".into())),
            &req("/apix")
        ));
        let re = regex::Regex::new("/v[0-9]+/.*").unwrap();
        assert!(route_matches(&rm(PathMatch::Regex(re)), &req("/v1/x?q")));
        let m = rm(PathMatch::Prefix("/old".into()));
        assert_eq!(
            rewrite_path("/old/a?b=1", &m, Some("/new"), None),
            "/new/a?b=1"
        );
        let rr = (regex::Regex::new("^/v1/").unwrap(), "/v2/".to_string());
        assert_eq!(rewrite_path("/v1/x?y", &m, None, Some(&rr)), "/v2/x?y");
    }

    #[test]
    fn redirects() {
        let m = rm(PathMatch::Prefix("/".into()));
        let r = RedirectAction {
            scheme: Some("https".into()),
            host: None,
            port: None,
            path: None,
            prefix_rewrite: None,
            status: 301,
            strip_query: false,
        };
        assert_eq!(
            redirect_location(&r, &m, "http", "a.com:8080", "/x?y"),
            "https://a.com/x?y"
        );
        let r = RedirectAction {
            scheme: None,
            host: Some("b.com".into()),
            path: Some("/p".into()),
            strip_query: true,
            ..r
        };
        assert_eq!(
            redirect_location(&r, &m, "http", "a.com:8080", "/x?y"),
            "http://b.com:8080/p"
        );
        let _ = RouteAction::DirectResponse {
            status: 200,
            body: None,
        };
    }

    #[test]
    fn weighted_pick_is_cumulative() {
        let wc = |name: &str, weight| WeightedCluster {
            name: name.into(),
            weight,
            headers: HeaderMutations::default(),
            host_rewrite: None,
        };
        let cs = vec![wc("a", 90), wc("b", 10)];
        assert_eq!(total_weight(&cs), 100);
        assert_eq!(pick_weighted(&cs, 0).unwrap().name, "a");
        assert_eq!(pick_weighted(&cs, 89).unwrap().name, "a");
        assert_eq!(pick_weighted(&cs, 90).unwrap().name, "b");
    }

    #[test]
    fn authority_split() {
        assert_eq!(split_authority("a:80"), ("a", Some(80)));
        assert_eq!(split_authority("a"), ("a", None));
        assert_eq!(split_authority("[::1]:80"), ("[::1]", Some(80)));
    }
}
