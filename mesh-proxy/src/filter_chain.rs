//! Filter chain selection, in Envoy's `FilterChainMatch` order: destination
//! port, destination IP (longest prefix), server name (exact, then longest
//! wildcard), transport protocol, application protocols, source IP (longest
//! prefix). At each step the chains that name a matching value win; if none
//! does, the chains that leave the field empty go on; chains that name only
//! other values drop out. When nothing is left, the default chain is used.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use crate::model::{FilterChain, ListenerConfig};

/// What is known about a connection when its chain is chosen.
#[derive(Debug, Clone)]
pub struct ConnectionFacts<'a> {
    pub destination: SocketAddr,
    pub source: SocketAddr,
    pub server_name: Option<&'a str>,
    /// `raw_buffer` or `tls`.
    pub transport_protocol: &'a str,
    /// From TLS ALPN or the HTTP inspector (`http/1.1`, `h2c`).
    pub application_protocols: &'a [String],
}

pub fn select<'a>(
    listener: &'a ListenerConfig,
    facts: &ConnectionFacts<'_>,
) -> Option<&'a FilterChain> {
    let mut chains: Vec<&FilterChain> = listener.filter_chains.iter().collect();

    chains = narrow(chains, |c| {
        c.matcher
            .destination_port
            .map(|p| (p == facts.destination.port()).then_some(0))
    });
    chains = narrow(chains, |c| {
        cidr_score(&c.matcher.prefix_ranges, facts.destination.ip())
    });
    chains = narrow(chains, |c| {
        if c.matcher.server_names.is_empty() {
            return None;
        }
        let sni = facts.server_name?.to_ascii_lowercase();
        Some(
            c.matcher
                .server_names
                .iter()
                .filter_map(|n| server_name_score(n, &sni))
                .max(),
        )
    });
    chains = narrow(chains, |c| {
        c.matcher
            .transport_protocol
            .as_ref()
            .map(|t| (t == facts.transport_protocol).then_some(0))
    });
    chains = narrow(chains, |c| {
        if c.matcher.application_protocols.is_empty() {
            return None;
        }
        let hit = c
            .matcher
            .application_protocols
            .iter()
            .any(|p| facts.application_protocols.contains(p));
        Some(hit.then_some(0))
    });
    chains = narrow(chains, |c| {
        cidr_score(&c.matcher.source_prefix_ranges, facts.source.ip())
    });

    chains
        .first()
        .copied()
        .or(listener.default_filter_chain.as_ref())
}

/// Keeps the best-scoring chains that set the field, or else those that
/// leave it empty. `score` returns `None` for an empty field, `Some(None)`
/// for a field that does not match, `Some(Some(n))` for a match of
/// specificity `n`.
fn narrow(
    chains: Vec<&FilterChain>,
    score: impl Fn(&FilterChain) -> Option<Option<u32>>,
) -> Vec<&FilterChain> {
    let scored: Vec<(&FilterChain, Option<Option<u32>>)> =
        chains.into_iter().map(|c| (c, score(c))).collect();
    let best = scored.iter().filter_map(|(_, s)| s.flatten()).max();
    match best {
        Some(best) => scored
            .into_iter()
            .filter(|(_, s)| *s == Some(Some(best)))
            .map(|(c, _)| c)
            .collect(),
        None => scored
            .into_iter()
            .filter(|(_, s)| s.is_none())
            .map(|(c, _)| c)
            .collect(),
    }
}

fn cidr_score(ranges: &[IpNet], ip: IpAddr) -> Option<Option<u32>> {
    if ranges.is_empty() {
        return None;
    }
    Some(
        ranges
            .iter()
            .filter(|r| r.contains(&ip))
            .map(|r| u32::from(r.prefix_len()))
            .max(),
    )
}

/// Exact names beat wildcards; longer wildcards beat shorter ones.
fn server_name_score(pattern: &str, sni: &str) -> Option<u32> {
    let pattern = pattern.to_ascii_lowercase();
    if pattern == sni {
        return Some(u32::MAX);
    }
    let suffix = pattern.strip_prefix('*')?;
    (sni.len() > suffix.len() && sni.ends_with(suffix)).then_some(suffix.len() as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        FilterChainMatch, NetworkFilter, TcpDestination, TcpProxyConfig, TrafficDirection,
    };
    use std::sync::Arc;

    fn chain(name: &str, matcher: FilterChainMatch) -> FilterChain {
        FilterChain {
            name: name.into(),
            matcher,
            tls: None,
            filter: NetworkFilter::Tcp(Arc::new(TcpProxyConfig {
                stat_prefix: name.into(),
                cluster: TcpDestination::Cluster(name.into()),
                idle_timeout: None,
                max_connect_attempts: 1,
                access_log: vec![],
            })),
        }
    }

    fn cidr(s: &str, len: u8) -> IpNet {
        IpNet::new(s.parse().unwrap(), len).unwrap()
    }

    fn listener(chains: Vec<FilterChain>, default: Option<FilterChain>) -> ListenerConfig {
        ListenerConfig {
            name: "l".into(),
            address: "0.0.0.0:15006".parse().unwrap(),
            direction: TrafficDirection::Inbound,
            use_original_dst: false,
            bind_to_port: true,
            inspect_tls: false,
            inspect_http: false,
            ignore_global_conn_limit: false,
            filter_chains: chains,
            default_filter_chain: default,
        }
    }

    fn pick(l: &ListenerConfig, dst: &str, src: &str, alpn: &[String]) -> Option<String> {
        let facts = ConnectionFacts {
            destination: dst.parse().unwrap(),
            source: src.parse().unwrap(),
            server_name: None,
            transport_protocol: "raw_buffer",
            application_protocols: alpn,
        };
        select(l, &facts).map(|c| c.name.clone())
    }

    #[test]
    fn envoy_match_order() {
        let l = listener(
            vec![
                chain("any", FilterChainMatch::default()),
                chain(
                    "port-8080",
                    FilterChainMatch {
                        destination_port: Some(8080),
                        ..Default::default()
                    },
                ),
                chain(
                    "port-8080-narrow-ip",
                    FilterChainMatch {
                        destination_port: Some(8080),
                        prefix_ranges: vec![cidr("10.0.0.0", 24)],
                        ..Default::default()
                    },
                ),
                chain(
                    "http",
                    FilterChainMatch {
                        destination_port: Some(9090),
                        application_protocols: vec!["http/1.1".into(), "h2c".into()],
                        ..Default::default()
                    },
                ),
                chain(
                    "port-9090",
                    FilterChainMatch {
                        destination_port: Some(9090),
                        ..Default::default()
                    },
                ),
                chain(
                    "from-local",
                    FilterChainMatch {
                        destination_port: Some(7070),
                        source_prefix_ranges: vec![cidr("127.0.0.1", 32)],
                        ..Default::default()
                    },
                ),
            ],
            Some(chain("default", FilterChainMatch::default())),
        );
        assert_eq!(
            pick(&l, "10.0.0.5:8080", "1.1.1.1:1", &[]).as_deref(),
            Some("port-8080-narrow-ip")
        );
        assert_eq!(
            pick(&l, "10.0.1.5:8080", "1.1.1.1:1", &[]).as_deref(),
            Some("port-8080")
        );
        assert_eq!(
            pick(&l, "10.0.1.5:1234", "1.1.1.1:1", &[]).as_deref(),
            Some("any")
        );
        assert_eq!(
            pick(&l, "10.0.1.5:9090", "1.1.1.1:1", &["h2c".into()]).as_deref(),
            Some("http")
        );
        assert_eq!(
            pick(&l, "10.0.1.5:9090", "1.1.1.1:1", &[]).as_deref(),
            Some("port-9090")
        );
        assert_eq!(
            pick(&l, "10.0.1.5:7070", "127.0.0.1:1", &[]).as_deref(),
            Some("from-local")
        );
        // Port 7070 is claimed by a chain whose source range excludes this
        // client: nothing is left, so the default chain serves it.
        assert_eq!(
            pick(&l, "10.0.1.5:7070", "1.1.1.1:1", &[]).as_deref(),
            Some("default")
        );
    }

    #[test]
    fn server_names() {
        assert_eq!(
            server_name_score("*.example.com", "a.example.com"),
            Some(12)
        );
        assert_eq!(
            server_name_score("a.example.com", "a.example.com"),
            Some(u32::MAX)
        );
        assert_eq!(server_name_score("*.example.com", "example.com"), None);
    }
}
