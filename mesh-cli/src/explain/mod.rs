//! `meshctl explain`: what a proxy would do with one request (listener, route configuration,
//! virtual host, route, clusters, load balancer, endpoints, timeout, retries, fault, mirrors,
//! header changes, transport) and why, from the proxy's live admin `/config_dump`.
//!
//! Nothing here routes: the dump's resources are decoded into Envoy's messages
//! ([`mesh_proxy::xds_json`]), compiled into the proxy's own model ([`mesh_proxy::compile`]) and
//! the request is put through the data plane's own selection functions
//! ([`mesh_proxy::http::router`], [`mesh_proxy::filter_chain`], [`mesh_proxy::http::explain`]
//! for the reasons). The dump has Envoy's shape, so this works on a real Envoy too.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use mesh_proxy::http::matcher::RequestHead;

use crate::admin_client::Transport;
use crate::header_arg::{self, HeaderArgError};
use crate::proxy_config::{self, ConfigFormat, Target};

const TIMEOUT: Duration = Duration::from_secs(5);

mod decide;
mod live;
mod render;

pub use decide::*;
pub use live::*;
pub use render::*;

/// Output format of `explain`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExplainFormat {
    /// A few readable lines.
    Text,
    /// Everything as JSON.
    Json,
}

/// `meshctl explain PROXY --host H [--path P] [-H NAME:VALUE]... [--method M] [--port N]`.
#[derive(Args, Debug, Clone)]
pub struct ExplainArgs {
    /// A workload of the local mesh (its sidecar), `gateway`, or an admin address (HOST:PORT).
    #[arg(required_unless_present = "admin")]
    pub proxy: Option<String>,
    /// Any Envoy or mesh-proxy admin address instead of PROXY.
    #[arg(long, conflicts_with = "kubeconfig")]
    pub admin: Option<SocketAddr>,
    #[command(flatten)]
    pub cluster: crate::cluster::ClusterProxyArgs,
    /// Host (authority) of the request: `helloworld`, `helloworld:5000`, ...
    #[arg(long)]
    pub host: String,
    /// Path, with its query string if any.
    #[arg(long, default_value = "/")]
    pub path: String,
    #[arg(long, default_value = "GET")]
    pub method: String,
    /// A request header, `NAME:VALUE` (repeatable).
    #[arg(short = 'H', long = "header")]
    pub headers: Vec<String>,
    /// The listener: the one bound to this port, or the gateway's for this Gateway server
    /// port (route config `http.PORT`). Default: the only outbound HTTP listener.
    #[arg(long)]
    pub port: Option<u16>,
    #[arg(short = 'o', long = "output", value_enum, default_value_t = ExplainFormat::Text)]
    pub output: ExplainFormat,
}

/// What `explain` cannot work with.
#[derive(Debug, thiserror::Error)]
pub enum ExplainError {
    #[error(transparent)]
    Header(#[from] HeaderArgError),
    #[error("header {0:?} is not a valid HTTP header")]
    InvalidHeader(String),
    #[error("no HTTP listener for port {port}; HTTP listeners: {available}")]
    NoListenerForPort { port: u16, available: String },
    #[error("the proxy has no HTTP listener (listeners: {available})")]
    NoHttpListener { available: String },
    #[error("several HTTP listeners could take the request ({available}): choose one with --port")]
    AmbiguousListener { available: String },
}

/// The request to explain.
#[derive(Debug, Clone)]
pub struct ExplainRequest {
    pub method: String,
    pub host: String,
    pub path: String,
    pub headers: ::http::HeaderMap,
    pub port: Option<u16>,
}

impl ExplainRequest {
    /// Checks the `-H NAME:VALUE` arguments as `traffic` does.
    pub fn new(
        method: &str,
        host: &str,
        path: &str,
        headers: &[String],
        port: Option<u16>,
    ) -> Result<ExplainRequest, ExplainError> {
        let mut map = ::http::HeaderMap::new();
        for arg in headers {
            let (name, value) = header_arg::parse_header(arg)?;
            let name = ::http::HeaderName::try_from(name.to_ascii_lowercase())
                .map_err(|_| ExplainError::InvalidHeader(arg.clone()))?;
            let value = ::http::HeaderValue::try_from(value)
                .map_err(|_| ExplainError::InvalidHeader(arg.clone()))?;
            map.append(name, value);
        }
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            format!("/{path}")
        };
        Ok(ExplainRequest {
            method: method.to_ascii_uppercase(),
            host: host.to_string(),
            path,
            headers: map,
            port,
        })
    }

    fn head(&self) -> RequestHead<'_> {
        RequestHead {
            method: &self.method,
            authority: &self.host,
            path: &self.path,
            scheme: "http",
            headers: &self.headers,
        }
    }
}

// ---------------------------------------------------------------------------------------
// The command.

fn run(a: &ExplainArgs) -> anyhow::Result<String> {
    let req = ExplainRequest::new(&a.method, &a.host, &a.path, &a.headers, a.port)?;
    let admin = match (&a.admin, a.proxy.as_deref().map(str::parse::<SocketAddr>)) {
        (Some(addr), _) => Transport::Tcp(*addr),
        (None, Some(Ok(addr))) => Transport::Tcp(addr),
        _ => proxy_config::admin_transport(&Target {
            name: a.proxy.clone(),
            admin: None,
            cluster: a.cluster.clone(),
            output: ConfigFormat::Short,
        })?,
    };
    let live = read_live_config(&admin)?;
    let e = explain(&live, &req)?;
    Ok(match a.output {
        ExplainFormat::Text => render_text(&e),
        ExplainFormat::Json => serde_json::to_string_pretty(&e)? + "\n",
    })
}

/// `meshctl explain`.
pub fn main(a: ExplainArgs) -> ExitCode {
    match run(&a) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!(
                "meshctl explain: {}",
                mesh_api::report::one_line(e.as_ref())
            );
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests;
