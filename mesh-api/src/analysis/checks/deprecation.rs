//! Istio's `deprecation.FieldAnalyzer`: IST0002.

use crate::analysis::{Index, Message, codes};

/// IST0002 for deprecated fields: `fault.delay.percent` in VirtualServices, and
/// `outboundTrafficPolicy.egressProxy` in Sidecars (which proxies ignore).
pub(in crate::analysis) fn deprecated_fields(index: &Index<'_>, out: &mut Vec<Message>) {
    for (r, vs) in index.virtual_services() {
        for (i, h) in vs.spec.http.iter().enumerate() {
            let percent = h
                .fault
                .as_ref()
                .and_then(|f| f.delay.as_ref())
                .and_then(|d| d.percent);
            if percent.is_some_and(|p| p > 0) {
                out.push(Message::about(
                    codes::Deprecated,
                    r,
                    &format!("spec.http[{i}].fault.delay.percent"),
                    "Deprecated: HTTPRoute.fault.delay.percent is deprecated; use HTTPRoute.fault.delay.percentage".to_string(),
                ));
            }
        }
    }
    for (r, sc) in index.sidecars() {
        if sc
            .spec
            .outbound_traffic_policy
            .as_ref()
            .is_some_and(|p| p.egress_proxy.is_some())
        {
            out.push(Message::about(
                codes::Deprecated,
                r,
                "spec.outboundTrafficPolicy.egressProxy",
                "Deprecated: OutboundTrafficPolicy.EgressProxy ignored".to_string(),
            ));
        }
    }
}
