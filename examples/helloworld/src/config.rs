use std::net::IpAddr;
use std::time::Duration;

use clap::Parser;

pub const DEFAULT_PORT: u16 = 5000;
pub const DEFAULT_ADDRESS: &str = "127.0.0.1";
pub const DEFAULT_VERSION: &str = "v1";

/// Command line and environment of the binary. Every flag has an environment twin so the
/// app runs the same under `meshctl up`, Docker or Kubernetes.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "helloworld",
    about = "The mesh's sample app",
    disable_version_flag = true
)]
pub struct Args {
    /// Port to listen on; 0 picks a free one (printed on stdout).
    #[arg(long, env = "PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,
    /// Address to listen on.
    #[arg(long, env = "BIND_ADDRESS", default_value = DEFAULT_ADDRESS)]
    pub address: String,
    /// Version reported in answers (Istio's demo uses `safe` and `risky`).
    #[arg(long = "version", value_name = "VERSION", env = "SERVICE_VERSION", default_value = DEFAULT_VERSION)]
    pub service_version: String,
    /// Instance name reported in answers; default `helloworld-<bound port>`.
    #[arg(long, env = "INSTANCE_NAME")]
    pub instance: Option<String>,
    /// Delay added before each answer, e.g. `100ms`, `1.5s`.
    #[arg(long, env = "LATENCY", default_value = "0s")]
    pub latency: String,
    /// Random spread around the latency: each delay is uniform in latency ± jitter.
    #[arg(long, env = "LATENCY_JITTER", default_value = "0s")]
    pub jitter: String,
    /// Share of requests answered with an injected failure, from 0.0 to 1.0.
    #[arg(long, env = "FAILURE_RATE", default_value_t = 0.0)]
    pub failure_rate: f64,
    /// Status of an injected failure, 500 to 599 (Istio's default retry policy retries a 503
    /// on another instance, not a 500).
    #[arg(long, env = "FAILURE_STATUS", default_value_t = 503)]
    pub failure_status: u16,
    /// Do not log one line per request.
    #[arg(long, env = "HELLOWORLD_QUIET")]
    pub quiet: bool,
}

/// What the server runs with, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub address: IpAddr,
    pub port: u16,
    pub version: String,
    /// `None`: named after the bound port once bound.
    pub instance: Option<String>,
    pub latency: Duration,
    pub jitter: Duration,
    pub failure_rate: f64,
    pub failure_status: u16,
    pub log_requests: bool,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            address: IpAddr::from([127, 0, 0, 1]),
            port: DEFAULT_PORT,
            version: DEFAULT_VERSION.to_owned(),
            instance: None,
            latency: Duration::ZERO,
            jitter: Duration::ZERO,
            failure_rate: 0.0,
            failure_status: 503,
            log_requests: true,
        }
    }
}

/// A flag or variable that cannot be used, with its name and value.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    #[error("--address {value:?}: not an IP address")]
    Address { value: String },
    #[error("--{field} {value:?}: {reason}")]
    Duration {
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("--failure-rate {value}: must be between 0.0 and 1.0")]
    FailureRate { value: f64 },
    #[error("--failure-status {value}: must be between 500 and 599")]
    FailureStatus { value: u16 },
    #[error("--version: must not be empty")]
    EmptyVersion,
}

impl Config {
    /// Checks the parsed arguments; pure, so unit tests call it directly.
    pub fn from_args(args: &Args) -> Result<Config, ConfigError> {
        let address = args.address.parse().map_err(|_| ConfigError::Address {
            value: args.address.clone(),
        })?;
        if !(0.0..=1.0).contains(&args.failure_rate) {
            return Err(ConfigError::FailureRate {
                value: args.failure_rate,
            });
        }
        if !(500..=599).contains(&args.failure_status) {
            return Err(ConfigError::FailureStatus {
                value: args.failure_status,
            });
        }
        if args.service_version.trim().is_empty() {
            return Err(ConfigError::EmptyVersion);
        }
        Ok(Config {
            address,
            port: args.port,
            version: args.service_version.clone(),
            instance: args.instance.clone().filter(|name| !name.is_empty()),
            latency: parse_duration("latency", &args.latency)?,
            jitter: parse_duration("jitter", &args.jitter)?,
            failure_rate: args.failure_rate,
            failure_status: args.failure_status,
            log_requests: !args.quiet,
        })
    }
}

/// Parses `250us`, `100ms`, `1.5s`, `2m` (a unit is required except for `0`).
pub fn parse_duration(field: &'static str, value: &str) -> Result<Duration, ConfigError> {
    let err = |reason| ConfigError::Duration {
        field,
        value: value.to_owned(),
        reason,
    };
    let text = value.trim();
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| err("needs a unit: us, ms, s or m"))?;
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| err("expected a number followed by a unit, like 100ms"))?;
    let seconds_per_unit = match unit {
        "us" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        _ => return Err(err("unknown unit: use us, ms, s or m")),
    };
    Duration::try_from_secs_f64(number * seconds_per_unit).map_err(|_| err("out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> Args {
        let mut argv = vec!["helloworld"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv).unwrap()
    }

    #[test]
    fn defaults() {
        // Environment variables could leak in from the caller; the flags here do not use any.
        let config = Config::from_args(&args(&[
            "--port",
            "5000",
            "--version",
            "v1",
            "--latency",
            "0s",
            "--jitter",
            "0s",
            "--failure-rate",
            "0",
            "--address",
            "127.0.0.1",
        ]))
        .unwrap();
        assert_eq!(
            Config {
                log_requests: config.log_requests,
                instance: config.instance.clone(),
                ..Config::default()
            },
            config
        );
    }

    #[test]
    fn all_flags() {
        let config = Config::from_args(&args(&[
            "--port",
            "0",
            "--address",
            "::1",
            "--version",
            "risky",
            "--instance",
            "a",
            "--latency",
            "1.5s",
            "--jitter",
            "20ms",
            "--failure-rate",
            "0.3",
            "--failure-status",
            "500",
            "--quiet",
        ]))
        .unwrap();
        assert_eq!(config.port, 0);
        assert_eq!(config.address, "::1".parse::<IpAddr>().unwrap());
        assert_eq!(config.version, "risky");
        assert_eq!(config.instance.as_deref(), Some("a"));
        assert_eq!(config.latency, Duration::from_millis(1500));
        assert_eq!(config.jitter, Duration::from_millis(20));
        assert_eq!(config.failure_rate, 0.3);
        assert_eq!(config.failure_status, 500);
        assert!(!config.log_requests);
    }

    #[test]
    fn bad_values_name_the_flag() {
        let err = Config::from_args(&args(&["--failure-rate", "1.5"])).unwrap_err();
        assert_eq!(err, ConfigError::FailureRate { value: 1.5 });
        assert!(err.to_string().contains("--failure-rate"));
        let err = Config::from_args(&args(&["--failure-status", "404"])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "--failure-status 404: must be between 500 and 599"
        );
        let err = Config::from_args(&args(&["--latency", "100"])).unwrap_err();
        assert!(err.to_string().starts_with("--latency \"100\""), "{err}");
        let err = Config::from_args(&args(&["--jitter", "5h"])).unwrap_err();
        assert!(err.to_string().contains("unknown unit"), "{err}");
        let err = Config::from_args(&args(&["--address", "localhost:1"])).unwrap_err();
        assert!(err.to_string().contains("--address"), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("x", "250us"), Ok(Duration::from_micros(250)));
        assert_eq!(parse_duration("x", "100ms"), Ok(Duration::from_millis(100)));
        assert_eq!(parse_duration("x", "2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("x", "0"), Ok(Duration::ZERO));
        assert!(parse_duration("x", "ms").is_err());
        assert!(parse_duration("x", "-1s").is_err());
    }
}
