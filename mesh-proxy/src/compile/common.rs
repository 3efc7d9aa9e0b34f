//! Conversions shared by every resource: durations, percentages, string and
//! header matchers, header mutations, socket addresses and data sources.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3 as core;
use envoy_types::pb::envoy::config::route::v3 as route;
use envoy_types::pb::envoy::r#type::matcher::v3 as matcher;
use envoy_types::pb::envoy::r#type::v3 as types;
use envoy_types::pb::google::protobuf;

use super::errors::{CompileError, Ctx};
use crate::model::{
    Fraction, HeaderMatchKind, HeaderMatcher, HeaderMutations, HeaderToAdd, StringMatch,
    StringMatcher,
};

/// A protobuf `Duration` as a std one; negative values are errors.
pub(crate) fn duration(
    ctx: &Ctx,
    field: &str,
    d: &protobuf::Duration,
) -> Result<Duration, CompileError> {
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err(ctx.invalid(
            field,
            format!("invalid duration {}s {}ns", d.seconds, d.nanos),
        ));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

/// An optional duration: absent is `default`, zero is "disabled" (`None`),
/// Envoy's convention for timeouts.
pub(crate) fn timeout(
    ctx: &Ctx,
    field: &str,
    d: Option<&protobuf::Duration>,
    default: Option<Duration>,
) -> Result<Option<Duration>, CompileError> {
    match d {
        None => Ok(default),
        Some(d) => {
            let d = duration(ctx, field, d)?;
            Ok(if d.is_zero() { None } else { Some(d) })
        }
    }
}

/// An optional duration where zero means zero (not "disabled").
pub(crate) fn opt_duration(
    ctx: &Ctx,
    field: &str,
    d: Option<&protobuf::Duration>,
) -> Result<Option<Duration>, CompileError> {
    d.map(|d| duration(ctx, field, d)).transpose()
}

pub(crate) fn u32_or(v: Option<&protobuf::UInt32Value>, default: u32) -> u32 {
    v.map(|v| v.value).unwrap_or(default)
}

pub(crate) fn bool_or(v: Option<&protobuf::BoolValue>, default: bool) -> bool {
    v.map(|v| v.value).unwrap_or(default)
}

pub(crate) fn fraction(
    ctx: &Ctx,
    field: &str,
    p: &types::FractionalPercent,
) -> Result<Fraction, CompileError> {
    use types::fractional_percent::DenominatorType;
    let denominator = match DenominatorType::try_from(p.denominator) {
        Ok(DenominatorType::Hundred) => 100,
        Ok(DenominatorType::TenThousand) => 10_000,
        Ok(DenominatorType::Million) => 1_000_000,
        Err(_) => {
            return Err(ctx.invalid(
                &format!("{field}.denominator"),
                format!("unknown denominator {}", p.denominator),
            ));
        }
    };
    Ok(Fraction {
        numerator: p.numerator,
        denominator,
    })
}

/// `RuntimeFractionalPercent`: there is no runtime here, so the default
/// value is what applies (and the absent default is 0%, as in Envoy).
pub(crate) fn runtime_fraction(
    ctx: &Ctx,
    field: &str,
    p: &core::RuntimeFractionalPercent,
) -> Result<Fraction, CompileError> {
    match &p.default_value {
        Some(v) => fraction(ctx, &format!("{field}.default_value"), v),
        None => Ok(Fraction {
            numerator: 0,
            denominator: 100,
        }),
    }
}

/// Envoy's `safe_regex` must match the whole value (RE2 full match).
pub(crate) fn full_regex(
    ctx: &Ctx,
    field: &str,
    pattern: &str,
) -> Result<regex::Regex, CompileError> {
    regex::Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| ctx.invalid(field, format!("invalid regex {pattern:?}: {e}")))
}

/// A regex used for search and replace (`regex_rewrite`), not anchored.
pub(crate) fn search_regex(
    ctx: &Ctx,
    field: &str,
    pattern: &str,
) -> Result<regex::Regex, CompileError> {
    regex::Regex::new(pattern)
        .map_err(|e| ctx.invalid(field, format!("invalid regex {pattern:?}: {e}")))
}

pub(crate) fn string_matcher(
    ctx: &Ctx,
    field: &str,
    m: &matcher::StringMatcher,
) -> Result<StringMatcher, CompileError> {
    use matcher::string_matcher::MatchPattern;
    let pattern = match &m.match_pattern {
        Some(MatchPattern::Exact(s)) => StringMatch::Exact(s.clone()),
        Some(MatchPattern::Prefix(s)) => StringMatch::Prefix(s.clone()),
        Some(MatchPattern::Suffix(s)) => StringMatch::Suffix(s.clone()),
        Some(MatchPattern::Contains(s)) => StringMatch::Contains(s.clone()),
        Some(MatchPattern::SafeRegex(r)) => {
            let pattern = if m.ignore_case {
                format!("(?i:{})", r.regex)
            } else {
                r.regex.clone()
            };
            StringMatch::Regex(full_regex(ctx, &format!("{field}.safe_regex"), &pattern)?)
        }
        Some(MatchPattern::Custom(c)) => {
            return Err(ctx.unsupported(&format!("{field}.custom"), &c.name));
        }
        None => return Err(ctx.missing(&format!("{field}.match_pattern"))),
    };
    Ok(StringMatcher {
        pattern,
        ignore_case: m.ignore_case,
    })
}

pub(crate) fn header_matcher(
    ctx: &Ctx,
    field: &str,
    h: &route::HeaderMatcher,
) -> Result<HeaderMatcher, CompileError> {
    use route::header_matcher::HeaderMatchSpecifier as S;
    let exact = |pattern: StringMatch| {
        HeaderMatchKind::String(StringMatcher {
            pattern,
            ignore_case: false,
        })
    };
    if h.name.is_empty() {
        return Err(ctx.missing(&format!("{field}.name")));
    }
    let kind = match &h.header_match_specifier {
        Some(S::ExactMatch(s)) => exact(StringMatch::Exact(s.clone())),
        Some(S::PrefixMatch(s)) => exact(StringMatch::Prefix(s.clone())),
        Some(S::SuffixMatch(s)) => exact(StringMatch::Suffix(s.clone())),
        Some(S::ContainsMatch(s)) => exact(StringMatch::Contains(s.clone())),
        Some(S::SafeRegexMatch(r)) => exact(StringMatch::Regex(full_regex(
            ctx,
            &format!("{field}.safe_regex_match"),
            &r.regex,
        )?)),
        Some(S::StringMatch(m)) => {
            HeaderMatchKind::String(string_matcher(ctx, &format!("{field}.string_match"), m)?)
        }
        Some(S::PresentMatch(p)) => HeaderMatchKind::Present(*p),
        Some(S::RangeMatch(r)) => {
            if r.start >= r.end {
                return Err(ctx.invalid(
                    &format!("{field}.range_match"),
                    format!("start {} must be below end {}", r.start, r.end),
                ));
            }
            HeaderMatchKind::Range {
                start: r.start,
                end: r.end,
            }
        }
        // No specifier: the header only has to be present.
        None => HeaderMatchKind::Present(true),
    };
    Ok(HeaderMatcher {
        name: h.name.to_ascii_lowercase(),
        kind,
        invert: h.invert_match,
        treat_missing_as_empty: h.treat_missing_header_as_empty,
    })
}

pub(crate) fn header_matchers(
    ctx: &Ctx,
    field: &str,
    hs: &[route::HeaderMatcher],
) -> Result<Vec<HeaderMatcher>, CompileError> {
    hs.iter()
        .enumerate()
        .map(|(i, h)| header_matcher(ctx, &format!("{field}[{i}]"), h))
        .collect()
}

fn header_to_add(
    ctx: &Ctx,
    field: &str,
    h: &core::HeaderValueOption,
) -> Result<HeaderToAdd, CompileError> {
    use core::header_value_option::HeaderAppendAction as A;
    let header = h
        .header
        .as_ref()
        .ok_or_else(|| ctx.missing(&format!("{field}.header")))?;
    if header.key.is_empty() {
        return Err(ctx.missing(&format!("{field}.header.key")));
    }
    let value = if header.raw_value.is_empty() {
        header.value.clone()
    } else {
        String::from_utf8(header.raw_value.clone())
            .map_err(|_| ctx.invalid(&format!("{field}.header.raw_value"), "not valid UTF-8"))?
    };
    // The deprecated `append` wins when set; otherwise `append_action`.
    let (append, only_if_absent) = match h.append {
        Some(protobuf::BoolValue { value }) => (value, false),
        None => match A::try_from(h.append_action) {
            Ok(A::AppendIfExistsOrAdd) => (true, false),
            Ok(A::AddIfAbsent) => (false, true),
            Ok(A::OverwriteIfExistsOrAdd) => (false, false),
            Ok(A::OverwriteIfExists) => {
                return Err(
                    ctx.unsupported(&format!("{field}.append_action"), "OVERWRITE_IF_EXISTS")
                );
            }
            Err(_) => {
                return Err(ctx.invalid(
                    &format!("{field}.append_action"),
                    format!("unknown value {}", h.append_action),
                ));
            }
        },
    };
    Ok(HeaderToAdd {
        name: header.key.to_ascii_lowercase(),
        value,
        append,
        only_if_absent,
    })
}

pub(crate) fn headers_to_add(
    ctx: &Ctx,
    field: &str,
    hs: &[core::HeaderValueOption],
) -> Result<Vec<HeaderToAdd>, CompileError> {
    hs.iter()
        .enumerate()
        .map(|(i, h)| header_to_add(ctx, &format!("{field}[{i}]"), h))
        .collect()
}

pub(crate) fn header_mutations(
    ctx: &Ctx,
    request_add: &[core::HeaderValueOption],
    request_remove: &[String],
    response_add: &[core::HeaderValueOption],
    response_remove: &[String],
) -> Result<HeaderMutations, CompileError> {
    let lower = |v: &[String]| v.iter().map(|s| s.to_ascii_lowercase()).collect();
    Ok(HeaderMutations {
        request_add: headers_to_add(ctx, "request_headers_to_add", request_add)?,
        request_remove: lower(request_remove),
        response_add: headers_to_add(ctx, "response_headers_to_add", response_add)?,
        response_remove: lower(response_remove),
    })
}

/// A TCP socket address with an IP literal and a numeric port.
pub(crate) fn socket_address(
    ctx: &Ctx,
    field: &str,
    a: Option<&core::Address>,
) -> Result<SocketAddr, CompileError> {
    let sa = socket_address_parts(ctx, field, a)?;
    let ip: IpAddr = sa.0.parse().map_err(|_| {
        ctx.invalid(
            &format!("{field}.socket_address.address"),
            format!("{:?} is not an IP address", sa.0),
        )
    })?;
    Ok(SocketAddr::new(ip, sa.1))
}

/// Host (IP or name) and port of a TCP socket address.
pub(crate) fn socket_address_parts(
    ctx: &Ctx,
    field: &str,
    a: Option<&core::Address>,
) -> Result<(String, u16), CompileError> {
    use core::address::Address as A;
    use core::socket_address::{PortSpecifier, Protocol};
    let a = a.ok_or_else(|| ctx.missing(field))?;
    let sa = match &a.address {
        Some(A::SocketAddress(sa)) => sa,
        Some(A::Pipe(_)) => return Err(ctx.unsupported(&format!("{field}.pipe"), "")),
        Some(A::EnvoyInternalAddress(_)) => {
            return Err(ctx.unsupported(&format!("{field}.envoy_internal_address"), ""));
        }
        None => return Err(ctx.missing(&format!("{field}.socket_address"))),
    };
    let f = format!("{field}.socket_address");
    if sa.protocol != Protocol::Tcp as i32 {
        return Err(ctx.unsupported(&format!("{f}.protocol"), "UDP"));
    }
    if !sa.resolver_name.is_empty() {
        return Err(ctx.unsupported(&format!("{f}.resolver_name"), &sa.resolver_name));
    }
    let port = match &sa.port_specifier {
        Some(PortSpecifier::PortValue(p)) => u16::try_from(*p)
            .map_err(|_| ctx.invalid(&format!("{f}.port_value"), format!("{p} is not a port")))?,
        Some(PortSpecifier::NamedPort(n)) => {
            return Err(ctx.unsupported(&format!("{f}.named_port"), n));
        }
        None => return Err(ctx.missing(&format!("{f}.port_value"))),
    };
    if sa.address.is_empty() {
        return Err(ctx.missing(&format!("{f}.address")));
    }
    Ok((sa.address.clone(), port))
}

/// The text of a `DataSource`; files are read once, at compile time.
pub(crate) fn data_source_text(
    ctx: &Ctx,
    field: &str,
    d: &core::DataSource,
) -> Result<String, CompileError> {
    use core::data_source::Specifier;
    match &d.specifier {
        Some(Specifier::InlineString(s)) => Ok(s.clone()),
        Some(Specifier::InlineBytes(b)) => String::from_utf8(b.clone())
            .map_err(|_| ctx.invalid(&format!("{field}.inline_bytes"), "not valid UTF-8")),
        Some(Specifier::Filename(path)) => std::fs::read_to_string(path)
            .map_err(|e| ctx.invalid(&format!("{field}.filename"), format!("reading {path}: {e}"))),
        Some(Specifier::EnvironmentVariable(var)) => std::env::var(var).map_err(|_| {
            ctx.invalid(
                &format!("{field}.environment_variable"),
                format!("{var} is not set"),
            )
        }),
        None => Err(ctx.missing(field)),
    }
}

/// The parts of `core.v3.HttpProtocolOptions` that are not implemented:
/// a stream duration limit and header-name policing.
pub(crate) fn reject_unsupported_http_options(
    ctx: &Ctx,
    o: &core::HttpProtocolOptions,
) -> Result<(), CompileError> {
    if opt_duration(ctx, "max_stream_duration", o.max_stream_duration.as_ref())?
        .is_some_and(|d| !d.is_zero())
    {
        return Err(ctx.unsupported("max_stream_duration", ""));
    }
    if o.headers_with_underscores_action != 0 {
        let name = core::http_protocol_options::HeadersWithUnderscoresAction::try_from(
            o.headers_with_underscores_action,
        )
        .map(|a| a.as_str_name().to_string())
        .unwrap_or_else(|_| o.headers_with_underscores_action.to_string());
        return Err(ctx.unsupported("headers_with_underscores_action", name));
    }
    Ok(())
}
