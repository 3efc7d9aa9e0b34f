//! Small constructors for Envoy messages used all over the translation.

use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::{
    AggregatedConfigSource, ApiVersion, ConfigSource, HeaderValue, HeaderValueOption, Metadata,
    RuntimeFractionalPercent, SocketAddress, address, config_source::ConfigSourceSpecifier,
    header_value_option::HeaderAppendAction, socket_address,
};
use envoy_types::pb::envoy::r#type::matcher::v3::{
    RegexMatcher, StringMatcher, string_matcher::MatchPattern,
};
use envoy_types::pb::envoy::r#type::v3::{FractionalPercent, fractional_percent::DenominatorType};
use envoy_types::pb::google::protobuf::{Any, BoolValue, Struct, UInt32Value, Value, value};
use mesh_api::common::{HeaderOperations, StringMatch};
use prost::{Message, Name};

/// Packs a message with its `type.googleapis.com/...` URL.
pub fn any<M: Message + Name>(message: &M) -> Any {
    Any {
        type_url: M::type_url(),
        value: message.encode_to_vec(),
    }
}

pub fn duration(d: Duration) -> envoy_types::pb::google::protobuf::Duration {
    envoy_types::pb::google::protobuf::Duration {
        seconds: i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(d.subsec_nanos()).unwrap_or(0),
    }
}

pub fn u32v(value: u32) -> UInt32Value {
    UInt32Value { value }
}

pub fn boolv(value: bool) -> BoolValue {
    BoolValue { value }
}

/// The ADS config source (`ads: {}`, v3).
pub fn ads() -> ConfigSource {
    ConfigSource {
        config_source_specifier: Some(ConfigSourceSpecifier::Ads(AggregatedConfigSource {})),
        resource_api_version: ApiVersion::V3 as i32,
        ..Default::default()
    }
}

pub fn socket_address(ip: &str, port: u32) -> envoy_types::pb::envoy::config::core::v3::Address {
    envoy_types::pb::envoy::config::core::v3::Address {
        address: Some(address::Address::SocketAddress(SocketAddress {
            address: ip.to_string(),
            port_specifier: Some(socket_address::PortSpecifier::PortValue(port)),
            ..Default::default()
        })),
    }
}

/// Istio's conversion of a percentage (0-100, fractional) to a per-million fraction.
pub fn percent_million(percent: f64) -> FractionalPercent {
    let clamped = percent.clamp(0.0, 100.0);
    FractionalPercent {
        numerator: (clamped * 10_000.0).round() as u32,
        denominator: DenominatorType::Million as i32,
    }
}

/// A whole percentage (deprecated integer fields) as a per-hundred fraction.
pub fn percent_hundred(percent: u32) -> FractionalPercent {
    FractionalPercent {
        numerator: percent.min(100),
        denominator: DenominatorType::Hundred as i32,
    }
}

pub fn runtime_fraction(percent: f64) -> RuntimeFractionalPercent {
    RuntimeFractionalPercent {
        default_value: Some(percent_million(percent)),
        runtime_key: String::new(),
    }
}

pub fn string_matcher(m: &StringMatch, ignore_case: bool) -> StringMatcher {
    let pattern = match m {
        StringMatch::Exact(v) => MatchPattern::Exact(v.clone()),
        StringMatch::Prefix(v) => MatchPattern::Prefix(v.clone()),
        StringMatch::Regex(v) => MatchPattern::SafeRegex(regex(v)),
    };
    StringMatcher {
        match_pattern: Some(pattern),
        ignore_case,
    }
}

pub fn regex(r: &str) -> RegexMatcher {
    RegexMatcher {
        regex: r.to_string(),
        ..Default::default()
    }
}

/// Istio's header operations: `set` overwrites, `add` appends, `remove` removes.
pub fn header_ops(ops: &HeaderOperations) -> (Vec<HeaderValueOption>, Vec<String>) {
    let mut add = Vec::new();
    for (k, v) in &ops.set {
        add.push(header_option(
            k,
            v,
            HeaderAppendAction::OverwriteIfExistsOrAdd,
        ));
    }
    for (k, v) in &ops.add {
        add.push(header_option(k, v, HeaderAppendAction::AppendIfExistsOrAdd));
    }
    (add, ops.remove.clone())
}

fn header_option(key: &str, value: &str, action: HeaderAppendAction) -> HeaderValueOption {
    HeaderValueOption {
        header: Some(HeaderValue {
            key: key.to_string(),
            value: value.to_string(),
            ..Default::default()
        }),
        append_action: action as i32,
        ..Default::default()
    }
}

/// The filter metadata key Istio records a resource's origin under.
pub const ISTIO_METADATA_KEY: &str = "istio";

/// Istio's record of the Istio resource a translated cluster, route or virtual host came from:
/// `filter_metadata.istio.config = /apis/GROUP/VERSION/namespaces/NS/KIND/NAME` (the kind in
/// kebab case, `destination-rule`), as `util.BuildConfigInfoMetadata` writes it, so that
/// `istioctl proxy-config` and `meshctl proxy-config` can name the rule behind each.
pub fn istio_config_metadata(meta: &mesh_api::ResourceMeta) -> Metadata {
    let mut kind = String::new();
    for (i, c) in meta.kind.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            kind.push('-');
        }
        kind.push(c.to_ascii_lowercase());
    }
    let path = format!(
        "/apis/{}/namespaces/{}/{kind}/{}",
        meta.api_version, meta.namespace, meta.name
    );
    let config = Struct {
        fields: [(
            "config".to_string(),
            Value {
                kind: Some(value::Kind::StringValue(path)),
            },
        )]
        .into_iter()
        .collect(),
    };
    Metadata {
        filter_metadata: [(ISTIO_METADATA_KEY.to_string(), config)]
            .into_iter()
            .collect(),
        ..Default::default()
    }
}
