//! Istio's `serviceentry.ProtocolAddressesAnalyzer`: IST0134.

use crate::analysis::{Index, Message, codes};

/// IST0134: a TCP (or protocol-less) ServiceEntry port needs addresses.
pub(in crate::analysis) fn service_entry_addresses(index: &Index<'_>, out: &mut Vec<Message>) {
    for (r, se) in index.service_entries() {
        if !se.spec.addresses.is_empty() {
            continue;
        }
        let needs = se.spec.ports.iter().any(|p| {
            p.protocol
                .as_deref()
                .is_none_or(|proto| proto.is_empty() || proto.eq_ignore_ascii_case("TCP"))
        });
        if needs {
            out.push(Message::about(
                codes::ServiceEntryAddressesRequired,
                r,
                "spec",
                "ServiceEntry addresses are required for this protocol.".to_string(),
            ));
        }
    }
}
