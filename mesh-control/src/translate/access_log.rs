//! Access logs of a proxy's HTTP connection managers, as Istio's `meshConfig.accessLogFile`
//! turns them on: the proxy asks for them with the node metadata `MESH_ACCESS_LOG_FILE`
//! (`/dev/stdout`, `/dev/stderr` or a path), and every HCM of its listeners gets a logger with
//! Envoy's default format (no format given).

use envoy_types::pb::envoy::config::accesslog::v3::{AccessLog, access_log};
use envoy_types::pb::envoy::config::listener::v3::{Filter, filter};
use envoy_types::pb::envoy::extensions::access_loggers::file::v3::FileAccessLog;
use envoy_types::pb::envoy::extensions::access_loggers::stream::v3::{
    StderrAccessLog, StdoutAccessLog,
};
use envoy_types::pb::envoy::extensions::filters::network::http_connection_manager::v3::HttpConnectionManager;
use prost::{Message, Name};

use super::XdsResources;
use super::envoy::any;

/// The logger for `file`: Envoy's stdout and stderr loggers for the two streams (they write
/// to the proxy's own descriptors), else a file logger.
pub fn logger(file: &str) -> AccessLog {
    let (name, typed) = match file {
        "/dev/stdout" => (
            "envoy.access_loggers.stdout",
            any(&StdoutAccessLog::default()),
        ),
        "/dev/stderr" => (
            "envoy.access_loggers.stderr",
            any(&StderrAccessLog::default()),
        ),
        path => (
            "envoy.access_loggers.file",
            any(&FileAccessLog {
                path: path.to_string(),
                ..Default::default()
            }),
        ),
    };
    AccessLog {
        name: name.to_string(),
        config_type: Some(access_log::ConfigType::TypedConfig(typed)),
        ..Default::default()
    }
}

/// Adds the logger of `file` to every HTTP connection manager of `out`'s listeners.
pub fn add(out: &mut XdsResources, file: &str) {
    for listener in out.listeners.values_mut() {
        let chains = listener
            .filter_chains
            .iter_mut()
            .chain(listener.default_filter_chain.as_mut());
        for chain in chains {
            for f in &mut chain.filters {
                add_to_hcm(f, file);
            }
        }
    }
}

fn add_to_hcm(f: &mut Filter, file: &str) {
    let Some(filter::ConfigType::TypedConfig(typed)) = &mut f.config_type else {
        return;
    };
    if typed.type_url != HttpConnectionManager::type_url() {
        return;
    }
    let Ok(mut hcm) = HttpConnectionManager::decode(typed.value.as_slice()) else {
        return;
    };
    hcm.access_log.push(logger(file));
    *typed = any(&hcm);
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::config::listener::v3::{FilterChain, Listener};

    fn hcm_filter(h: &HttpConnectionManager) -> Filter {
        Filter {
            name: "envoy.filters.network.http_connection_manager".into(),
            config_type: Some(filter::ConfigType::TypedConfig(any(h))),
        }
    }

    fn decoded(f: &Filter) -> HttpConnectionManager {
        let Some(filter::ConfigType::TypedConfig(t)) = &f.config_type else {
            panic!("no typed config");
        };
        HttpConnectionManager::decode(t.value.as_slice()).unwrap()
    }

    #[test]
    fn every_hcm_gets_the_logger_and_nothing_else_changes() {
        let tcp = Filter {
            name: "envoy.filters.network.tcp_proxy".into(),
            config_type: None,
        };
        let mut out = XdsResources::default();
        out.listeners.insert(
            "l".into(),
            Listener {
                name: "l".into(),
                filter_chains: vec![FilterChain {
                    filters: vec![hcm_filter(&HttpConnectionManager::default()), tcp.clone()],
                    ..Default::default()
                }],
                default_filter_chain: Some(FilterChain {
                    filters: vec![hcm_filter(&HttpConnectionManager::default())],
                    ..Default::default()
                }),
                ..Default::default()
            },
        );
        add(&mut out, "/dev/stdout");
        let l = &out.listeners["l"];
        for f in [
            &l.filter_chains[0].filters[0],
            &l.default_filter_chain.as_ref().unwrap().filters[0],
        ] {
            let logs = decoded(f).access_log;
            assert_eq!(logs.len(), 1);
            assert_eq!(logs[0].name, "envoy.access_loggers.stdout");
            let Some(access_log::ConfigType::TypedConfig(t)) = &logs[0].config_type else {
                panic!("no typed config");
            };
            // No format: Envoy's default.
            assert_eq!(t.type_url, StdoutAccessLog::type_url());
            assert!(
                StdoutAccessLog::decode(t.value.as_slice())
                    .unwrap()
                    .access_log_format
                    .is_none()
            );
        }
        assert_eq!(l.filter_chains[0].filters[1], tcp);
        let file = logger("/var/log/gw.log");
        assert_eq!(file.name, "envoy.access_loggers.file");
    }
}
