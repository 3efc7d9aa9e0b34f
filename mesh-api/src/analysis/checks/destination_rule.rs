//! Istio's `destinationrule.CaCertificateAnalyzer`: IST0128, IST0129.

use crate::analysis::{Index, Message, codes};
use crate::networking::{ClientTlsMode, ClientTlsSettings};

fn lacks_ca(tls: &ClientTlsSettings, has_selector: bool) -> Option<ClientTlsMode> {
    let mode = tls.mode?;
    if !matches!(mode, ClientTlsMode::Simple | ClientTlsMode::Mutual) {
        return None;
    }
    if tls
        .ca_certificates
        .as_deref()
        .is_some_and(|c| !c.is_empty())
        || tls.insecure_skip_verify == Some(true)
    {
        return None;
    }
    // A credentialName only supplies certificates to gateways (selected workloads).
    if tls
        .credential_name
        .as_deref()
        .is_some_and(|c| !c.is_empty())
        && has_selector
    {
        return None;
    }
    Some(mode)
}

/// IST0128/IST0129: client TLS without CA certificates does not verify the server.
pub(in crate::analysis) fn ca_certificates(index: &Index<'_>, out: &mut Vec<Message>) {
    for (r, dr) in index.destination_rules() {
        let Some(tp) = &dr.spec.traffic_policy else {
            continue;
        };
        let has_selector = dr
            .spec
            .workload_selector
            .as_ref()
            .is_some_and(|s| !s.match_labels.is_empty());
        if let Some(mode) = tp.tls.as_ref().and_then(|t| lacks_ca(t, has_selector)) {
            out.push(Message::about(
                codes::NoServerCertificateVerificationDestinationLevel,
                r,
                "spec.trafficPolicy.tls",
                format!(
                    "DestinationRule {} in namespace {} has TLS mode set to {} but no caCertificates are set to validate server identity for host: {}",
                    r.meta.name, r.meta.namespace, mode.as_str(), dr.spec.host
                ),
            ));
        }
        for (i, pl) in tp.port_level_settings.iter().enumerate() {
            if let Some(mode) = pl.tls.as_ref().and_then(|t| lacks_ca(t, has_selector)) {
                let port = pl
                    .port
                    .as_ref()
                    .and_then(|p| p.number)
                    .map(|n| n.to_string())
                    .unwrap_or_default();
                out.push(Message::about(
                    codes::NoServerCertificateVerificationPortLevel,
                    r,
                    &format!("spec.trafficPolicy.portLevelSettings[{i}].tls"),
                    format!(
                        "DestinationRule {} in namespace {} has TLS mode set to {} but no caCertificates are set to validate server identity for host: {} at port {port}",
                        r.meta.name, r.meta.namespace, mode.as_str(), dr.spec.host
                    ),
                ));
            }
        }
    }
}
