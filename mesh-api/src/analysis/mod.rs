//! Analysis of a loaded [`Config`]: the checks behind `meshctl analyze`,
//! reporting Istio's message codes with the meaning Istio gives them, so that
//! users find what `istioctl analyze` would find.
//!
//! Each [`Analyzer`] looks at one concern (destination hosts, subsets,
//! gateways, conflicting hosts, TLS settings, schema rules...). Every document
//! is analysed as given. Documents defining the same kind, namespace and name
//! are taken as alternative versions of one resource (Istio's sample folders
//! hold several), so they satisfy references but never conflict with each other.

use std::collections::HashSet;
use std::fmt;

use serde::Serialize;

use crate::resource::{Config, Resource};

mod checks;
mod host_index;
mod pod_index;
mod schema;

/// Severity of a message; `Error` makes `meshctl analyze` exit 79.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Level {
    Error,
    Warning,
    Info,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Error => "Error",
            Level::Warning => "Warning",
            Level::Info => "Info",
        })
    }
}

/// A message type: Istio's code, name and level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageType {
    pub code: &'static str,
    pub name: &'static str,
    pub level: Level,
}

/// Message types of Istio's analyzers that the mesh reports.
pub mod codes {
    // Named exactly as Istio names its message types, so they can be searched.
    #![expect(non_upper_case_globals)]
    use super::{Level, MessageType};

    macro_rules! types {
        ($($id:ident = $code:literal, $level:ident;)*) => {
            $(pub const $id: MessageType = MessageType {
                code: $code,
                name: stringify!($id),
                level: Level::$level,
            };)*
        };
    }

    types! {
        Deprecated = "IST0002", Warning;
        ReferencedResourceNotFound = "IST0101", Error;
        SchemaValidationError = "IST0106", Error;
        ConflictingMeshGatewayVirtualServiceHosts = "IST0109", Error;
        ConflictingSidecarWorkloadSelectors = "IST0110", Error;
        MultipleSidecarsWithoutWorkloadSelectors = "IST0111", Error;
        VirtualServiceDestinationPortSelectorRequired = "IST0112", Error;
        NoMatchingWorkloadsFound = "IST0127", Warning;
        NoServerCertificateVerificationDestinationLevel = "IST0128", Warning;
        NoServerCertificateVerificationPortLevel = "IST0129", Warning;
        VirtualServiceUnreachableRule = "IST0130", Warning;
        VirtualServiceIneffectiveMatch = "IST0131", Info;
        VirtualServiceHostNotFoundInGateway = "IST0132", Warning;
        ServiceEntryAddressesRequired = "IST0134", Warning;
        GatewayDuplicateCertificate = "IST0138", Warning;
        IngressRouteRulesNotAffected = "IST0140", Warning;
        ConflictingGateways = "IST0145", Error;
        JwtClaimBasedRoutingWithoutRequestAuthN = "IST0149", Error;
        GatewayPortNotDefinedOnService = "IST0162", Warning;
        ReferencedInternalGateway = "IST0165", Warning;
        IneffectivePolicy = "IST0167", Warning;
    }
}

/// The resource a message is about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// Whether the file named the namespace (Istio's tests omit it otherwise).
    #[serde(skip)]
    pub namespace_explicit: bool,
}

impl Origin {
    /// `Kind namespace/name`, or `Kind name` when the file named no namespace,
    /// which is how Istio's analyzer tests name resources.
    pub fn friendly_name(&self) -> String {
        if self.namespace_explicit {
            format!("{} {}/{}", self.kind, self.namespace, self.name)
        } else {
            format!("{} {}", self.kind, self.name)
        }
    }
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub message_type: MessageType,
    pub text: String,
    pub origin: Option<Origin>,
    /// `file:line` the message points at.
    pub reference: Option<String>,
}

impl Message {
    pub fn code(&self) -> &'static str {
        self.message_type.code
    }

    pub fn level(&self) -> Level {
        self.message_type.level
    }

    fn about(message_type: MessageType, resource: &Resource, path: &str, text: String) -> Message {
        Message {
            message_type,
            text,
            origin: Some(Origin {
                kind: resource.meta.kind.clone(),
                namespace: resource.meta.namespace.clone(),
                name: resource.meta.name.clone(),
                namespace_explicit: resource.meta.namespace_explicit,
            }),
            reference: Some(resource.location_of(path)),
        }
    }

    /// The message as `istioctl analyze -o json` writes it.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "code": self.code(),
            "level": self.level().to_string(),
            "message": self.text,
            "documentationUrl": format!(
                "https://istio.io/latest/docs/reference/config/analysis/{}/",
                self.code().to_ascii_lowercase()
            ),
        });
        if let Some(o) = &self.origin {
            v["origin"] =
                serde_json::Value::String(format!("{} {}/{}", o.kind, o.namespace, o.name));
        }
        if let Some(r) = &self.reference {
            v["reference"] = serde_json::Value::String(r.clone());
        }
        v
    }
}

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} [{}] ", self.level(), self.code())?;
        match (&self.origin, &self.reference) {
            (Some(o), Some(r)) => write!(f, "({} {}/{} {r}) ", o.kind, o.namespace, o.name)?,
            (Some(o), None) => write!(f, "({} {}/{}) ", o.kind, o.namespace, o.name)?,
            (None, Some(r)) => write!(f, "({r}) ")?,
            (None, None) => {}
        }
        f.write_str(&self.text)
    }
}

/// One concern the analysis checks; Istio's analyzer of the same scope is named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Analyzer {
    /// Schema rules (IST0106): weights, regexes, durations, percentages, empty
    /// routes, duplicate subsets, ports; and documents that failed to load.
    Schema,
    /// `virtualservice.DestinationHostAnalyzer`: IST0101, IST0112, IST0140.
    VirtualServiceDestinationHosts,
    /// `virtualservice.DestinationRuleAnalyzer`: IST0101 for host+subset.
    VirtualServiceDestinationRules,
    /// `virtualservice.GatewayAnalyzer`: IST0101 for gateways, IST0132, IST0165.
    VirtualServiceGateways,
    /// `virtualservice.ConflictingMeshGatewayHostsAnalyzer`: IST0109.
    ConflictingMeshGatewayHosts,
    /// `virtualservice.JWTClaimRouteAnalyzer`: IST0149.
    JwtClaimRoutes,
    /// Unreachable rules and ineffective matches: IST0130, IST0131.
    VirtualServiceMatches,
    /// `destinationrule.CaCertificateAnalyzer`: IST0128, IST0129.
    DestinationRuleCaCertificates,
    /// `gateway.ConflictingGatewayAnalyzer`: IST0145.
    ConflictingGateways,
    /// `gateway.CertificateAnalyzer`: IST0138.
    GatewayDuplicateCertificates,
    /// `gateway.IngressGatewayPortAnalyzer`: IST0101, IST0162.
    GatewayPorts,
    /// `gateway.SecretAnalyzer`: IST0101 for a `credentialName` with no Secret
    /// where the gateway runs.
    GatewaySecrets,
    /// `serviceentry.ProtocolAddressesAnalyzer`: IST0134.
    ServiceEntryAddresses,
    /// `sidecar.SelectorAnalyzer`: IST0101, IST0110, IST0111, IST0167.
    SidecarSelectors,
    /// `authz.AuthorizationPoliciesAnalyzer`: IST0127, IST0101.
    AuthorizationPolicies,
    /// `deprecation.FieldAnalyzer`: IST0002.
    DeprecatedFields,
}

impl Analyzer {
    pub const ALL: &'static [Analyzer] = &[
        Analyzer::Schema,
        Analyzer::VirtualServiceDestinationHosts,
        Analyzer::VirtualServiceDestinationRules,
        Analyzer::VirtualServiceGateways,
        Analyzer::ConflictingMeshGatewayHosts,
        Analyzer::JwtClaimRoutes,
        Analyzer::VirtualServiceMatches,
        Analyzer::DestinationRuleCaCertificates,
        Analyzer::ConflictingGateways,
        Analyzer::GatewayDuplicateCertificates,
        Analyzer::GatewayPorts,
        Analyzer::GatewaySecrets,
        Analyzer::ServiceEntryAddresses,
        Analyzer::SidecarSelectors,
        Analyzer::AuthorizationPolicies,
        Analyzer::DeprecatedFields,
    ];
}

/// Runs every analyzer.
pub fn analyze(config: &Config) -> Vec<Message> {
    analyze_with(config, Analyzer::ALL)
}

/// Runs the given analyzers; messages come sorted by file, line and code.
pub fn analyze_with(config: &Config, analyzers: &[Analyzer]) -> Vec<Message> {
    let index = Index::new(config);
    let mut out = Vec::new();
    for a in analyzers {
        match a {
            Analyzer::Schema => {
                schema::load_errors(config, &mut out);
                schema::validate(&index, &mut out);
            }
            Analyzer::VirtualServiceDestinationHosts => checks::destination_hosts(&index, &mut out),
            Analyzer::VirtualServiceDestinationRules => {
                checks::destination_subsets(&index, &mut out)
            }
            Analyzer::VirtualServiceGateways => checks::virtual_service_gateways(&index, &mut out),
            Analyzer::ConflictingMeshGatewayHosts => {
                checks::conflicting_mesh_hosts(&index, &mut out)
            }
            Analyzer::JwtClaimRoutes => checks::jwt_claim_routes(&index, &mut out),
            Analyzer::VirtualServiceMatches => checks::virtual_service_matches(&index, &mut out),
            Analyzer::DestinationRuleCaCertificates => checks::ca_certificates(&index, &mut out),
            Analyzer::ConflictingGateways => checks::conflicting_gateways(&index, &mut out),
            Analyzer::GatewayDuplicateCertificates => {
                checks::duplicate_certificates(&index, &mut out)
            }
            Analyzer::GatewayPorts => checks::gateway_ports(&index, &mut out),
            Analyzer::GatewaySecrets => checks::gateway_secrets(&index, &mut out),
            Analyzer::ServiceEntryAddresses => checks::service_entry_addresses(&index, &mut out),
            Analyzer::SidecarSelectors => checks::sidecar_selectors(&index, &mut out),
            Analyzer::AuthorizationPolicies => checks::authorization_policies(&index, &mut out),
            Analyzer::DeprecatedFields => checks::deprecated_fields(&index, &mut out),
        }
    }
    out.sort_by(|a, b| {
        (a.reference.as_deref(), a.code(), &a.text).cmp(&(
            b.reference.as_deref(),
            b.code(),
            &b.text,
        ))
    });
    out.dedup();
    out
}

/// Whether any message is an error (`meshctl analyze` then exits 79).
pub fn has_errors(messages: &[Message]) -> bool {
    messages.iter().any(|m| m.level() == Level::Error)
}

/// The resources under analysis, with what checks look up for each resource,
/// built once: looking it up by scanning every resource for each one made
/// the analysis quadratic (minutes for 10,000 VirtualServices).
pub(crate) struct Index<'a> {
    pub resources: Vec<&'a Resource>,
    /// `(name, namespace)` of the VirtualServices that an HTTP route delegates to.
    delegated: HashSet<(&'a str, &'a str)>,
    /// Names delegated to without a namespace: they name a VirtualService of
    /// that name in any namespace.
    delegated_by_name: HashSet<&'a str>,
}

impl<'a> Index<'a> {
    fn new(config: &'a Config) -> Index<'a> {
        let mut index = Index {
            resources: config.resources.iter().collect(),
            delegated: HashSet::new(),
            delegated_by_name: HashSet::new(),
        };
        let delegates: Vec<_> = index
            .virtual_services()
            .flat_map(|(_, vs)| vs.spec.http.iter())
            .filter_map(|h| h.delegate.as_ref())
            .collect();
        for d in delegates {
            let Some(name) = d.name.as_deref() else {
                continue;
            };
            match d.namespace.as_deref() {
                Some(ns) => index.delegated.insert((name, ns)),
                None => index.delegated_by_name.insert(name),
            };
        }
        index
    }

    /// Whether an HTTP route of some VirtualService delegates to `resource`.
    pub fn is_delegate(&self, resource: &Resource) -> bool {
        let (name, ns) = (
            resource.meta.name.as_str(),
            resource.meta.namespace.as_str(),
        );
        self.delegated_by_name.contains(name) || self.delegated.contains(&(name, ns))
    }
}

macro_rules! index_accessors {
    ($($fn_name:ident => $variant:ident : $ty:ty),* $(,)?) => {
        impl<'a> Index<'a> {
            $(
                pub fn $fn_name(&self) -> impl Iterator<Item = (&'a Resource, &'a $ty)> + '_ {
                    self.resources.iter().filter_map(|r| match &r.object {
                        crate::resource::Object::$variant(o) => Some((*r, o)),
                        _ => None,
                    })
                }
            )*
        }
    };
}

index_accessors! {
    virtual_services => VirtualService: crate::networking::VirtualService,
    destination_rules => DestinationRule: crate::networking::DestinationRule,
    gateways => Gateway: crate::networking::Gateway,
    service_entries => ServiceEntry: crate::networking::ServiceEntry,
    sidecars => Sidecar: crate::networking::Sidecar,
    authorization_policies => AuthorizationPolicy: crate::security::AuthorizationPolicy,
    request_authentications => RequestAuthentication: crate::security::RequestAuthentication,
    services => Service: k8s_openapi::api::core::v1::Service,
    namespaces => Namespace: k8s_openapi::api::core::v1::Namespace,
    secrets => Secret: k8s_openapi::api::core::v1::Secret,
}
