//! `transport_socket` TLS contexts (upstream and downstream) into the
//! model's TLS settings. Certificates come from SDS secret names or inline
//! PEM (files are read at compile time).

use envoy_types::pb::envoy::config::core::v3::TransportSocket;
use envoy_types::pb::envoy::extensions::transport_sockets::tls::v3 as tls;

use super::common::{bool_or, data_source_text, string_matcher};
use super::errors::{CompileError, Ctx};
use crate::model::{
    DownstreamTls, StringMatcher, TlsCaSource, TlsCertificateSource, TlsValidation, TlsVersions,
    UpstreamTls,
};
use crate::xds_json::{any_type_name, unpack_any};

const RAW_BUFFER: &str = "envoy.extensions.transport_sockets.raw_buffer.v3.RawBuffer";
const UPSTREAM_TLS: &str = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext";
const DOWNSTREAM_TLS: &str = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext";

/// The typed config of a transport socket, or `None` for plain TCP.
fn typed_config<'a>(
    ctx: &Ctx,
    field: &str,
    ts: &'a TransportSocket,
) -> Result<Option<&'a envoy_types::pb::google::protobuf::Any>, CompileError> {
    use envoy_types::pb::envoy::config::core::v3::transport_socket::ConfigType;
    match &ts.config_type {
        Some(ConfigType::TypedConfig(any)) => {
            if any_type_name(any) == RAW_BUFFER {
                Ok(None)
            } else {
                Ok(Some(any))
            }
        }
        None if ts.name == "envoy.transport_sockets.raw_buffer" || ts.name == "raw_buffer" => {
            Ok(None)
        }
        None => Err(ctx.missing(&format!("{field}.typed_config"))),
    }
}

pub(crate) fn upstream_tls(
    ctx: &Ctx,
    field: &str,
    ts: &TransportSocket,
) -> Result<Option<UpstreamTls>, CompileError> {
    let Some(any) = typed_config(ctx, field, ts)? else {
        return Ok(None);
    };
    if any_type_name(any) != UPSTREAM_TLS {
        return Err(ctx.unsupported(&format!("{field}.typed_config"), &any.type_url));
    }
    let f = format!("{field}.typed_config");
    let t: tls::UpstreamTlsContext = unpack_any(any).map_err(|e| ctx.decode(&f, e))?;
    if t.auto_host_sni {
        return Err(ctx.unsupported(&format!("{f}.auto_host_sni"), ""));
    }
    let common = t.common_tls_context.unwrap_or_default();
    let cf = format!("{f}.common_tls_context");
    let versions = tls_versions(ctx, &cf, &common)?;
    let certificate = certificate(ctx, &cf, &common)?;
    let (trusted_ca, sans) = match validation(ctx, &cf, &common)? {
        Some(v) => (Some(v.trusted_ca), v.match_subject_alt_names),
        None => (None, Vec::new()),
    };
    Ok(Some(UpstreamTls {
        sni: (!t.sni.is_empty()).then_some(t.sni),
        alpn_protocols: common.alpn_protocols.clone(),
        certificate,
        trusted_ca,
        match_subject_alt_names: sans,
        versions,
    }))
}

pub(crate) fn downstream_tls(
    ctx: &Ctx,
    field: &str,
    ts: &TransportSocket,
) -> Result<Option<DownstreamTls>, CompileError> {
    let Some(any) = typed_config(ctx, field, ts)? else {
        return Ok(None);
    };
    if any_type_name(any) != DOWNSTREAM_TLS {
        return Err(ctx.unsupported(&format!("{field}.typed_config"), &any.type_url));
    }
    let f = format!("{field}.typed_config");
    let t: tls::DownstreamTlsContext = unpack_any(any).map_err(|e| ctx.decode(&f, e))?;
    if bool_or(t.require_sni.as_ref(), false) {
        return Err(ctx.unsupported(&format!("{f}.require_sni"), ""));
    }
    let common = t.common_tls_context.unwrap_or_default();
    let cf = format!("{f}.common_tls_context");
    let versions = tls_versions(ctx, &cf, &common)?;
    let certificate = certificate(ctx, &cf, &common)?
        .ok_or_else(|| ctx.missing(&format!("{cf}.tls_certificates")))?;
    let validation = validation(ctx, &cf, &common)?;
    let require_client_certificate = bool_or(t.require_client_certificate.as_ref(), false);
    if require_client_certificate && validation.is_none() {
        // Requiring a certificate nobody checks would look like mTLS
        // without being it.
        return Err(ctx.invalid(
            &format!("{f}.require_client_certificate"),
            "needs a validation context with trusted_ca to verify client certificates",
        ));
    }
    Ok(Some(DownstreamTls {
        certificate,
        validation,
        require_client_certificate,
        alpn_protocols: common.alpn_protocols.clone(),
        versions,
    }))
}

/// `tls_params`: the protocol range is honoured; cipher suites, curves and
/// signature algorithms would change what is negotiated, and rustls' choice
/// cannot be narrowed the same way, so they are refused rather than ignored.
fn tls_versions(
    ctx: &Ctx,
    field: &str,
    common: &tls::CommonTlsContext,
) -> Result<TlsVersions, CompileError> {
    use tls::tls_parameters::TlsProtocol;
    let Some(p) = &common.tls_params else {
        return Ok(TlsVersions::Any);
    };
    let f = format!("{field}.tls_params");
    for (name, set) in [
        ("cipher_suites", !p.cipher_suites.is_empty()),
        ("ecdh_curves", !p.ecdh_curves.is_empty()),
        ("signature_algorithms", !p.signature_algorithms.is_empty()),
        ("compliance_policies", !p.compliance_policies.is_empty()),
    ] {
        if set {
            return Err(ctx.unsupported(&format!("{f}.{name}"), ""));
        }
    }
    let version = |name: &str, raw: i32| -> Result<Option<u8>, CompileError> {
        match TlsProtocol::try_from(raw) {
            Ok(TlsProtocol::TlsAuto) => Ok(None),
            Ok(TlsProtocol::TlSv12) => Ok(Some(2)),
            Ok(TlsProtocol::TlSv13) => Ok(Some(3)),
            Ok(old @ (TlsProtocol::TlSv10 | TlsProtocol::TlSv11)) => Err(ctx.unsupported(
                &format!("{f}.{name}"),
                format!("{} (only TLS 1.2 and 1.3 are spoken)", old.as_str_name()),
            )),
            Err(_) => Err(ctx.invalid(&format!("{f}.{name}"), format!("unknown value {raw}"))),
        }
    };
    let min = version(
        "tls_minimum_protocol_version",
        p.tls_minimum_protocol_version,
    )?;
    let max = version(
        "tls_maximum_protocol_version",
        p.tls_maximum_protocol_version,
    )?;
    match (min.unwrap_or(2), max.unwrap_or(3)) {
        (2, 3) => Ok(TlsVersions::Any),
        (2, 2) => Ok(TlsVersions::Only12),
        (3, 3) => Ok(TlsVersions::Only13),
        _ => Err(ctx.invalid(
            &f,
            "tls_minimum_protocol_version is above tls_maximum_protocol_version",
        )),
    }
}

fn certificate(
    ctx: &Ctx,
    field: &str,
    common: &tls::CommonTlsContext,
) -> Result<Option<TlsCertificateSource>, CompileError> {
    if common.tls_certificates.len() + common.tls_certificate_sds_secret_configs.len() > 1 {
        return Err(ctx.unsupported(
            &format!("{field}.tls_certificates"),
            "with more than one certificate",
        ));
    }
    if common.tls_certificate_provider_instance.is_some()
        || common
            .tls_certificate_certificate_provider_instance
            .is_some()
        || common.tls_certificate_certificate_provider.is_some()
    {
        return Err(ctx.unsupported(&format!("{field}.tls_certificate_provider_instance"), ""));
    }
    if let Some(sds) = common.tls_certificate_sds_secret_configs.first() {
        return Ok(Some(TlsCertificateSource::Sds(sds.name.clone())));
    }
    match common.tls_certificates.first() {
        Some(c) => Ok(Some(inline_certificate(
            ctx,
            &format!("{field}.tls_certificates[0]"),
            c,
        )?)),
        None => Ok(None),
    }
}

/// An inline `TlsCertificate` (also the payload of an SDS `Secret`).
pub(crate) fn inline_certificate(
    ctx: &Ctx,
    field: &str,
    c: &tls::TlsCertificate,
) -> Result<TlsCertificateSource, CompileError> {
    let chain = c
        .certificate_chain
        .as_ref()
        .ok_or_else(|| ctx.missing(&format!("{field}.certificate_chain")))?;
    let key = c
        .private_key
        .as_ref()
        .ok_or_else(|| ctx.missing(&format!("{field}.private_key")))?;
    Ok(TlsCertificateSource::InlinePem {
        cert_chain: data_source_text(ctx, &format!("{field}.certificate_chain"), chain)?,
        private_key: data_source_text(ctx, &format!("{field}.private_key"), key)?,
    })
}

fn validation(
    ctx: &Ctx,
    field: &str,
    common: &tls::CommonTlsContext,
) -> Result<Option<TlsValidation>, CompileError> {
    use tls::common_tls_context::ValidationContextType as V;
    match &common.validation_context_type {
        None => Ok(None),
        Some(V::ValidationContext(v)) => {
            validation_context(ctx, &format!("{field}.validation_context"), v, None)
        }
        Some(V::ValidationContextSdsSecretConfig(s)) => Ok(Some(TlsValidation {
            trusted_ca: TlsCaSource::Sds(s.name.clone()),
            match_subject_alt_names: Vec::new(),
        })),
        Some(V::CombinedValidationContext(c)) => {
            let f = format!("{field}.combined_validation_context");
            let sds = c
                .validation_context_sds_secret_config
                .as_ref()
                .map(|s| TlsCaSource::Sds(s.name.clone()));
            let default = c.default_validation_context.clone().unwrap_or_default();
            validation_context(
                ctx,
                &format!("{f}.default_validation_context"),
                &default,
                sds,
            )
        }
        Some(_) => Err(ctx.unsupported(
            &format!("{field}.validation_context_certificate_provider"),
            "",
        )),
    }
}

/// A validation context; `ca_override` is the CA from SDS in a combined one.
/// `None` when it has no CA (the peer certificate is not verified).
pub(crate) fn validation_context(
    ctx: &Ctx,
    field: &str,
    v: &tls::CertificateValidationContext,
    ca_override: Option<TlsCaSource>,
) -> Result<Option<TlsValidation>, CompileError> {
    if !v.verify_certificate_spki.is_empty() || !v.verify_certificate_hash.is_empty() {
        return Err(ctx.unsupported(&format!("{field}.verify_certificate_hash"), ""));
    }
    if v.trust_chain_verification != 0 {
        return Err(ctx.unsupported(
            &format!("{field}.trust_chain_verification"),
            "ACCEPT_UNTRUSTED",
        ));
    }
    if v.custom_validator_config.is_some() {
        return Err(ctx.unsupported(&format!("{field}.custom_validator_config"), ""));
    }
    let trusted_ca = match (ca_override, &v.trusted_ca) {
        (Some(ca), _) => ca,
        (None, Some(ds)) => {
            TlsCaSource::InlinePem(data_source_text(ctx, &format!("{field}.trusted_ca"), ds)?)
        }
        (None, None) => {
            // No CA: the peer is not verified (Envoy's behaviour), which
            // only makes sense when no identity is asked for either.
            if v.match_typed_subject_alt_names.is_empty() && v.match_subject_alt_names.is_empty() {
                return Ok(None);
            }
            return Err(ctx.invalid(
                &format!("{field}.trusted_ca"),
                "is required to check subject alt names",
            ));
        }
    };
    let mut sans: Vec<StringMatcher> = Vec::new();
    for (i, m) in v.match_typed_subject_alt_names.iter().enumerate() {
        let f = format!("{field}.match_typed_subject_alt_names[{i}]");
        // Only URI SANs (SPIFFE identities) are checked by the TLS layer.
        if m.san_type != tls::subject_alt_name_matcher::SanType::Uri as i32 {
            return Err(ctx.unsupported(&format!("{f}.san_type"), "other than URI"));
        }
        let matcher = m
            .matcher
            .as_ref()
            .ok_or_else(|| ctx.missing(&format!("{f}.matcher")))?;
        sans.push(string_matcher(ctx, &format!("{f}.matcher"), matcher)?);
    }
    #[expect(deprecated)]
    for (i, m) in v.match_subject_alt_names.iter().enumerate() {
        sans.push(string_matcher(
            ctx,
            &format!("{field}.match_subject_alt_names[{i}]"),
            m,
        )?);
    }
    Ok(Some(TlsValidation {
        trusted_ca,
        match_subject_alt_names: sans,
    }))
}

/// An SDS `Secret` (static in the bootstrap, or from SDS).
pub fn compile_secret(s: &tls::Secret) -> Result<crate::model::TlsSecret, CompileError> {
    use tls::secret::Type;
    let ctx = Ctx::new("secret", &s.name);
    if s.name.is_empty() {
        return Err(ctx.missing("name"));
    }
    match &s.r#type {
        Some(Type::TlsCertificate(c)) => Ok(crate::model::TlsSecret::Certificate(
            inline_certificate(&ctx, "tls_certificate", c)?,
        )),
        Some(Type::ValidationContext(v)) => {
            validation_context(&ctx, "validation_context", v, None)?
                .map(crate::model::TlsSecret::ValidationContext)
                .ok_or_else(|| ctx.missing("validation_context.trusted_ca"))
        }
        Some(Type::SessionTicketKeys(_)) => Err(ctx.unsupported("session_ticket_keys", "")),
        Some(Type::GenericSecret(_)) => Err(ctx.unsupported("generic_secret", "")),
        None => Err(ctx.missing("tls_certificate")),
    }
}
