//! `meshctl proxy-config secret`: the certificates a proxy holds, from the secrets section of
//! its admin `/config_dump` (Envoy's `SecretsConfigDump`: `static_secrets`,
//! `dynamic_active_secrets`, `dynamic_warming_secrets`), shown with istioctl's columns.
//!
//! A `tls_certificate` secret is a certificate chain (its leaf is shown); a
//! `validation_context` secret is a trust bundle (one row per root). Certificate bytes come as
//! `inline_bytes` (base64 in JSON), `inline_string` (PEM) or a `filename` (read locally, as the
//! proxies of a local mesh run on this machine).

use std::time::SystemTime;

use base64::Engine as _;
use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;
use x509_parser::pem::Pem;

/// Column headers, as istioctl prints them.
pub const HEADER: [&str; 7] = [
    "RESOURCE NAME",
    "TYPE",
    "STATUS",
    "VALID CERT",
    "SERIAL NUMBER",
    "NOT AFTER",
    "NOT BEFORE",
];

/// One certificate of one secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SecretRow {
    pub resource_name: String,
    /// `Cert Chain` or `CA`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `ACTIVE` or `WARMING`.
    pub status: String,
    /// Whether the certificate is within its validity period now.
    pub valid_cert: bool,
    /// Lowercase hex, no leading zeros (as istioctl prints it).
    pub serial_number: String,
    /// RFC 3339, UTC.
    pub not_after: String,
    pub not_before: String,
    /// Why the certificate could not be read, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

impl SecretRow {
    /// The table's cells.
    pub fn cells(&self) -> Vec<String> {
        vec![
            self.resource_name.clone(),
            self.kind.clone(),
            self.status.clone(),
            self.valid_cert.to_string(),
            self.serial_number.clone(),
            self.not_after.clone(),
            self.not_before.clone(),
        ]
    }
}

/// A secret whose certificates cannot be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SecretReadError {
    #[error("secret {name:?}: {field}.inline_bytes is not base64: {reason}")]
    Base64 {
        name: String,
        field: &'static str,
        reason: String,
    },
    #[error("secret {name:?}: {field}.filename {path}: {reason}")]
    File {
        name: String,
        field: &'static str,
        path: String,
        reason: String,
    },
    #[error(
        "secret {name:?}: {field} holds no data source (inline_bytes, inline_string or filename)"
    )]
    NoSource { name: String, field: &'static str },
    #[error("secret {name:?}: {field}: {reason}")]
    Certificate {
        name: String,
        field: &'static str,
        reason: String,
    },
}

/// What a certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateFacts {
    pub serial_number: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
}

impl CertificateFacts {
    fn valid_at(&self, now: OffsetDateTime) -> bool {
        self.not_before <= now && now <= self.not_after
    }
}

/// Every row of every secret in the dump: active before warming, certificate chains before
/// trust bundles (istioctl's `default` then `ROOTCA`), then by name. `now` decides VALID CERT.
pub fn secret_rows(dump: &Value, now: SystemTime) -> Vec<SecretRow> {
    let now = OffsetDateTime::from(now);
    let mut out = Vec::new();
    for config in dump["configs"].as_array().into_iter().flatten() {
        for (list, status) in [
            ("static_secrets", "ACTIVE"),
            ("dynamic_active_secrets", "ACTIVE"),
            ("dynamic_warming_secrets", "WARMING"),
        ] {
            for entry in config[list].as_array().into_iter().flatten() {
                out.extend(rows_of(entry, status, now));
            }
        }
    }
    let rank = |r: &SecretRow| match r.kind.as_str() {
        "Cert Chain" => 0,
        "CA" => 1,
        _ => 2,
    };
    out.sort_by(|a, b| {
        (&a.status, rank(a), &a.resource_name).cmp(&(&b.status, rank(b), &b.resource_name))
    });
    out
}

fn rows_of(entry: &Value, status: &str, now: OffsetDateTime) -> Vec<SecretRow> {
    let secret = &entry["secret"];
    let name = entry["name"]
        .as_str()
        .or_else(|| secret["name"].as_str())
        .unwrap_or("-")
        .to_string();
    let row = |kind: &str, facts: Result<CertificateFacts, SecretReadError>| match facts {
        Ok(f) => SecretRow {
            resource_name: name.clone(),
            kind: kind.to_string(),
            status: status.to_string(),
            valid_cert: f.valid_at(now),
            serial_number: f.serial_number.clone(),
            not_after: rfc3339(f.not_after),
            not_before: rfc3339(f.not_before),
            problem: None,
        },
        Err(e) => SecretRow {
            resource_name: name.clone(),
            kind: kind.to_string(),
            status: status.to_string(),
            valid_cert: false,
            serial_number: "-".into(),
            not_after: "-".into(),
            not_before: "-".into(),
            problem: Some(e.to_string()),
        },
    };
    if secret["tls_certificate"].is_object() {
        let field = "tls_certificate.certificate_chain";
        let facts = read_source(
            &name,
            field,
            &secret["tls_certificate"]["certificate_chain"],
        )
        .and_then(|pem| certificates(&name, field, &pem))
        .map(|mut certs| certs.remove(0));
        return vec![row("Cert Chain", facts)];
    }
    // A validation context directly, or inside a combined one.
    let vc = if secret["validation_context"].is_object() {
        &secret["validation_context"]
    } else {
        &secret["validation_context"]["default_validation_context"]
    };
    if vc.is_object() {
        let field = "validation_context.trusted_ca";
        return match read_source(&name, field, &vc["trusted_ca"])
            .and_then(|pem| certificates(&name, field, &pem))
        {
            Ok(roots) => roots.into_iter().map(|r| row("CA", Ok(r))).collect(),
            Err(e) => vec![row("CA", Err(e))],
        };
    }
    // A secret of another kind (session ticket keys, generic): listed, with nothing to check.
    vec![SecretRow {
        resource_name: name,
        kind: "-".into(),
        status: status.to_string(),
        valid_cert: false,
        serial_number: "-".into(),
        not_after: "-".into(),
        not_before: "-".into(),
        problem: None,
    }]
}

/// The bytes of an Envoy `DataSource` in proto JSON.
fn read_source(
    name: &str,
    field: &'static str,
    source: &Value,
) -> Result<Vec<u8>, SecretReadError> {
    if let Some(b) = source["inline_bytes"].as_str() {
        return base64::engine::general_purpose::STANDARD
            .decode(b.trim())
            .map_err(|e| SecretReadError::Base64 {
                name: name.into(),
                field,
                reason: e.to_string(),
            });
    }
    if let Some(s) = source["inline_string"].as_str() {
        return Ok(s.as_bytes().to_vec());
    }
    if let Some(path) = source["filename"].as_str() {
        return std::fs::read(path).map_err(|e| SecretReadError::File {
            name: name.into(),
            field,
            path: path.into(),
            reason: e.to_string(),
        });
    }
    Err(SecretReadError::NoSource {
        name: name.into(),
        field,
    })
}

/// Every certificate of a PEM bundle, in order; at least one.
fn certificates(
    name: &str,
    field: &'static str,
    pem: &[u8],
) -> Result<Vec<CertificateFacts>, SecretReadError> {
    let bad = |reason: String| SecretReadError::Certificate {
        name: name.into(),
        field,
        reason,
    };
    let mut out = Vec::new();
    for (i, block) in Pem::iter_from_buffer(pem).enumerate() {
        let block = block.map_err(|e| bad(format!("PEM block {}: {e}", i + 1)))?;
        if block.label != "CERTIFICATE" {
            continue;
        }
        let cert = block
            .parse_x509()
            .map_err(|e| bad(format!("certificate {}: {e}", i + 1)))?;
        out.push(CertificateFacts {
            serial_number: serial_hex(cert.tbs_certificate.raw_serial()),
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
        });
    }
    if out.is_empty() {
        return Err(bad("no PEM certificate in it".into()));
    }
    Ok(out)
}

/// The serial as an unsigned number in lowercase hex (Go's `%x` of a big.Int).
fn serial_hex(raw: &[u8]) -> String {
    let hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let trimmed = hex.trim_start_matches('0');
    if trimmed.is_empty() {
        "0".into()
    } else {
        trimmed.into()
    }
}

/// Certificate times are whole seconds: the mesh's one RFC 3339 form shows them exactly.
fn rfc3339(t: OffsetDateTime) -> String {
    mesh_ca::rfc3339(t.into())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use base64::Engine as _;
    use mesh_ca::{CaConfig, CertificateAuthority, SpiffeId};
    use serde_json::json;
    use time::format_description::well_known::Rfc3339;

    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    /// X.509 times have whole seconds.
    fn rfc(t: SystemTime) -> String {
        OffsetDateTime::from(t)
            .replace_nanosecond(0)
            .unwrap()
            .format(&Rfc3339)
            .unwrap()
    }

    /// A real workload certificate and root from the mesh CA, in the two shapes of dump: Envoy's
    /// (SDS, `inline_bytes`) and one with `inline_string` (as a proxy may write PEM).
    #[test]
    fn rows_from_a_real_certificate_of_the_mesh_ca() {
        let ca = CertificateAuthority::generate(CaConfig::default()).unwrap();
        let id = SpiffeId::new("cluster.local", "default", "helloworld").unwrap();
        let issued = ca
            .issue_identity(&id, &[], Some(Duration::from_secs(3600)))
            .unwrap();
        let roots = issued.roots.to_pem();
        let chain = issued.chain_pem();
        for inline in ["inline_bytes", "inline_string"] {
            let enc = |s: &str| {
                if inline == "inline_bytes" {
                    b64(s)
                } else {
                    s.to_string()
                }
            };
            let dump = json!({"configs": [
                {"@type": "type.googleapis.com/envoy.admin.v3.ClustersConfigDump"},
                {"@type": "type.googleapis.com/envoy.admin.v3.SecretsConfigDump",
                 "dynamic_active_secrets": [
                    {"name": "default", "version_info": "1", "last_updated": "2026-11-26T18:00:00Z",
                     "secret": {"@type": "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret",
                        "name": "default",
                        "tls_certificate": {
                            "certificate_chain": {inline: enc(&chain)},
                            "private_key": {"inline_string": "[redacted]"}}}},
                    {"name": "ROOTCA", "secret": {"name": "ROOTCA",
                        "validation_context": {"trusted_ca": {inline: enc(&roots)}}}},
                 ]}
            ]});
            let rows = secret_rows(&dump, SystemTime::now());
            assert_eq!(rows.len(), 2, "{rows:?}");
            let (leaf, root) = (&rows[0], &rows[1]);
            assert_eq!(
                (
                    leaf.resource_name.as_str(),
                    leaf.kind.as_str(),
                    leaf.status.as_str()
                ),
                ("default", "Cert Chain", "ACTIVE")
            );
            assert!(leaf.valid_cert, "{leaf:?}");
            assert_eq!(leaf.not_after, rfc(issued.not_after));
            assert_eq!(leaf.not_before, rfc(issued.not_before));
            assert!(leaf.not_after.ends_with('Z'), "{leaf:?}");
            assert!(
                leaf.serial_number.len() >= 8
                    && !leaf.serial_number.starts_with('0')
                    && leaf
                        .serial_number
                        .bytes()
                        .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()),
                "{leaf:?}"
            );
            assert_eq!(
                (root.resource_name.as_str(), root.kind.as_str()),
                ("ROOTCA", "CA")
            );
            assert!(root.valid_cert, "{root:?}");
            assert_ne!(root.serial_number, leaf.serial_number);

            // After the leaf expires it is no longer valid; the root still is.
            let later = issued.not_after + Duration::from_secs(1);
            let rows = secret_rows(&dump, later);
            assert!(!rows[0].valid_cert, "{:?}", rows[0]);
            assert!(rows[1].valid_cert, "{:?}", rows[1]);
            // Before it starts, neither.
            let early = issued.not_before - Duration::from_secs(3600 * 24 * 365 * 20);
            assert!(secret_rows(&dump, early).iter().all(|r| !r.valid_cert));
        }
    }

    #[test]
    fn static_warming_and_several_roots() {
        let a = CertificateAuthority::generate(CaConfig::default()).unwrap();
        let b = CertificateAuthority::generate(CaConfig::default()).unwrap();
        let bundle = format!("{}{}", a.trust_bundle().to_pem(), b.trust_bundle().to_pem());
        let dump = json!({"configs": [{
            "static_secrets": [{"name": "roots", "secret": {"name": "roots",
                "validation_context": {"trusted_ca": {"inline_string": bundle}}}}],
            "dynamic_warming_secrets": [{"name": "default", "secret": {"name": "default",
                "tls_certificate": {"certificate_chain": {"inline_string": a.trust_bundle().to_pem()}}}}],
        }]});
        let rows = secret_rows(&dump, SystemTime::now());
        let names: Vec<(&str, &str, &str)> = rows
            .iter()
            .map(|r| (r.resource_name.as_str(), r.kind.as_str(), r.status.as_str()))
            .collect();
        assert_eq!(
            names,
            [
                ("roots", "CA", "ACTIVE"),
                ("roots", "CA", "ACTIVE"),
                ("default", "Cert Chain", "WARMING")
            ]
        );
        assert_ne!(rows[0].serial_number, rows[1].serial_number);
    }

    #[test]
    fn unreadable_secrets_say_why() {
        let dump = json!({"configs": [{"dynamic_active_secrets": [
            {"name": "default", "secret": {"tls_certificate": {"certificate_chain": {"inline_bytes": "%%%"}}}},
            {"name": "ROOTCA", "secret": {"validation_context": {"trusted_ca": {"inline_string": "not pem"}}}},
            {"name": "x", "secret": {"validation_context": {"trusted_ca": {"filename": "/nonexistent/root.pem"}}}},
            {"name": "y", "secret": {"tls_certificate": {}}},
        ]}]});
        let rows = secret_rows(&dump, SystemTime::now());
        assert_eq!(rows.len(), 4);
        for r in &rows {
            assert!(!r.valid_cert, "{r:?}");
            assert_eq!(r.serial_number, "-");
        }
        let problem = |n: &str| {
            rows.iter()
                .find(|r| r.resource_name == n)
                .and_then(|r| r.problem.clone())
                .unwrap()
        };
        assert!(
            problem("default").contains("not base64"),
            "{}",
            problem("default")
        );
        assert!(
            problem("ROOTCA").contains("no PEM certificate"),
            "{}",
            problem("ROOTCA")
        );
        assert!(
            problem("x").contains("/nonexistent/root.pem"),
            "{}",
            problem("x")
        );
        assert!(problem("y").contains("no data source"), "{}", problem("y"));
    }

    #[test]
    fn serials_print_like_istioctl() {
        assert_eq!(serial_hex(&[0x00, 0x8f, 0x01]), "8f01");
        assert_eq!(serial_hex(&[0x0a, 0xbc]), "abc");
        assert_eq!(serial_hex(&[0x00]), "0");
    }

    #[test]
    fn table_has_istioctls_columns() {
        let row = SecretRow {
            resource_name: "default".into(),
            kind: "Cert Chain".into(),
            status: "ACTIVE".into(),
            valid_cert: true,
            serial_number: "1f".into(),
            not_after: "2026-11-27T18:00:00Z".into(),
            not_before: "2026-11-26T18:00:00Z".into(),
            problem: None,
        };
        let table = crate::proxy_status::render_table(&HEADER, &[row.cells()]);
        let mut lines = table.lines();
        assert_eq!(
            lines
                .next()
                .unwrap()
                .split("   ")
                .filter(|c| !c.is_empty())
                .map(str::trim)
                .collect::<Vec<_>>(),
            HEADER
        );
        let cells: Vec<&str> = lines
            .next()
            .unwrap()
            .split("   ")
            .filter(|c| !c.is_empty())
            .map(str::trim)
            .collect();
        assert_eq!(
            cells,
            [
                "default",
                "Cert Chain",
                "ACTIVE",
                "true",
                "1f",
                "2026-11-27T18:00:00Z",
                "2026-11-26T18:00:00Z"
            ]
        );
        let v = serde_json::to_value(&row).unwrap();
        assert_eq!(v["type"], "Cert Chain");
        assert_eq!(v["valid_cert"], true);
        assert!(v.get("problem").is_none());
    }
}
