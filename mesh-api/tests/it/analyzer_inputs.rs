//! Runs the analysis on the inputs of Istio's analyzer tests and compares the
//! messages with the codes and resources Istio's own test expects (taken from
//! `pkg/config/analysis/analyzers/analyzers_test.go`). Like Istio's test, each
//! case runs only the analyzer of the same scope.
//!
//! The cases that match are pinned in `MATCHING`, so a regression fails the
//! test; the others are printed as "not yet" with the difference.

use crate::common;

use std::collections::BTreeMap;

use mesh_api::analysis::{Analyzer, analyze_with};
use mesh_api::load_paths;

struct Case {
    files: &'static [&'static str],
    analyzer: Analyzer,
    /// (code, "Kind namespace/name" or "Kind name" when the file names no namespace)
    expected: &'static [(&'static str, &'static str)],
}

use Analyzer::*;

const CASES: &[Case] = &[
    Case {
        files: &["deprecation.yaml"],
        analyzer: DeprecatedFields,
        expected: &[
            ("IST0002", "VirtualService foo/productpage"),
            ("IST0002", "Sidecar default/no-selector"),
        ],
    },
    Case {
        files: &["gateway-no-workload.yaml"],
        analyzer: GatewayPorts,
        expected: &[("IST0101", "Gateway httpbin-gateway")],
    },
    Case {
        files: &["gateway-no-port.yaml"],
        analyzer: GatewayPorts,
        expected: &[("IST0162", "Gateway httpbin-gateway")],
    },
    Case {
        files: &["gateway-correct-port.yaml"],
        analyzer: GatewayPorts,
        expected: &[],
    },
    Case {
        files: &["gateway-custom-ingressgateway.yaml"],
        analyzer: GatewayPorts,
        expected: &[],
    },
    Case {
        files: &["gateway-custom-ingressgateway-badport.yaml"],
        analyzer: GatewayPorts,
        expected: &[("IST0162", "Gateway httpbin-gateway")],
    },
    Case {
        files: &["gateway-custom-ingressgateway-badport-notarget.yaml"],
        analyzer: GatewayPorts,
        expected: &[("IST0162", "Gateway httpbin-gateway")],
    },
    Case {
        files: &["gateway-custom-ingressgateway-translation.yaml"],
        analyzer: GatewayPorts,
        expected: &[],
    },
    Case {
        files: &["gateway-custom-ingressgateway-svcselector.yaml"],
        analyzer: GatewayPorts,
        expected: &[("IST0162", "Gateway httpbin8002-gateway")],
    },
    Case {
        files: &["gateway-secrets.yaml"],
        analyzer: GatewaySecrets,
        expected: &[
            ("IST0101", "Gateway defaultgateway-bogusCredentialName"),
            ("IST0101", "Gateway customgateway-wrongnamespace"),
            ("IST0101", "Gateway bogusgateway"),
        ],
    },
    Case {
        files: &["gateway-secrets-validation.yaml"],
        analyzer: GatewaySecrets,
        expected: &[
            ("IST0161", "Gateway defaultgateway-invalid-keys"),
            ("IST0161", "Gateway defaultgateway-missing-keys"),
            ("IST0161", "Gateway defaultgateway-invalid-cert"),
            ("IST0161", "Gateway defaultgateway-expired"),
        ],
    },
    Case {
        files: &["conflicting-gateways.yaml"],
        analyzer: ConflictingGateways,
        expected: &[("IST0145", "Gateway alpha"), ("IST0145", "Gateway beta")],
    },
    Case {
        files: &["gateway-different-port.yaml"],
        analyzer: ConflictingGateways,
        expected: &[],
    },
    Case {
        files: &["conflicting-gateways-multiple-ports.yaml"],
        analyzer: ConflictingGateways,
        expected: &[("IST0145", "Gateway alpha"), ("IST0145", "Gateway beta")],
    },
    Case {
        files: &["conflicting-gateways-subSelector.yaml"],
        analyzer: ConflictingGateways,
        expected: &[("IST0145", "Gateway alpha"), ("IST0145", "Gateway beta")],
    },
    Case {
        files: &["conflicting-gateways-invalid-port.yaml"],
        analyzer: ConflictingGateways,
        expected: &[],
    },
    Case {
        files: &["analyze-list-type.yaml"],
        analyzer: ConflictingGateways,
        expected: &[
            ("IST0145", "Gateway alpha"),
            ("IST0145", "Gateway alpha-l"),
            ("IST0145", "Gateway beta-l"),
        ],
    },
    Case {
        files: &["sidecar-default-selector.yaml"],
        analyzer: SidecarSelectors,
        expected: &[
            ("IST0111", "Sidecar ns2/has-conflict-2"),
            ("IST0111", "Sidecar ns2/has-conflict-1"),
            ("IST0167", "Sidecar ns-ambient/namespace-scoped"),
            ("IST0167", "Sidecar ns-ambient/pod-scoped"),
        ],
    },
    Case {
        files: &["sidecar-selector.yaml"],
        analyzer: SidecarSelectors,
        expected: &[
            ("IST0101", "Sidecar default/maps-to-nonexistent"),
            ("IST0101", "Sidecar other/maps-to-different-ns"),
            ("IST0110", "Sidecar default/dupe-1"),
            ("IST0110", "Sidecar default/dupe-2"),
            ("IST0110", "Sidecar default/overlap-1"),
            ("IST0110", "Sidecar default/overlap-2"),
        ],
    },
    Case {
        files: &["virtualservice_conflictingmeshgatewayhosts.yaml"],
        analyzer: ConflictingMeshGatewayHosts,
        expected: &[
            ("IST0109", "VirtualService team3/ratings"),
            ("IST0109", "VirtualService team4/ratings"),
            ("IST0109", "VirtualService foo/ratings"),
            ("IST0109", "VirtualService bar/ratings"),
            ("IST0109", "VirtualService foo/productpage"),
            ("IST0109", "VirtualService foo/bogus-productpage"),
            ("IST0109", "VirtualService team2/ratings"),
        ],
    },
    Case {
        files: &["virtualservice_conflictingmeshgatewayhosts_with_exportto.yaml"],
        analyzer: ConflictingMeshGatewayHosts,
        expected: &[
            ("IST0109", "VirtualService foo/productpage"),
            ("IST0109", "VirtualService bar/productpage"),
            ("IST0109", "VirtualService foo/productpage-c"),
            ("IST0109", "VirtualService bar/productpage-c"),
            ("IST0109", "VirtualService foo/productpage-d"),
            ("IST0109", "VirtualService bar/productpage-d"),
        ],
    },
    Case {
        files: &["virtualservice_destinationhosts.yaml"],
        analyzer: VirtualServiceDestinationHosts,
        expected: &[
            ("IST0101", "VirtualService default/reviews-bogushost"),
            ("IST0101", "VirtualService default/reviews-bogushost"),
            ("IST0101", "VirtualService default/reviews-bookinfo-other"),
            ("IST0101", "VirtualService default/reviews-mirror-bogushost"),
            ("IST0101", "VirtualService default/reviews-bogusport"),
            ("IST0112", "VirtualService default/reviews-2port-missing"),
            (
                "IST0101",
                "VirtualService istio-system/cross-namespace-details",
            ),
            ("IST0101", "VirtualService hello/hello-export-to-bogus"),
        ],
    },
    Case {
        files: &["virtualservice_destinationrules.yaml"],
        analyzer: VirtualServiceDestinationRules,
        expected: &[
            ("IST0101", "VirtualService default/reviews-bogussubset"),
            (
                "IST0101",
                "VirtualService default/reviews-mirror-bogussubset",
            ),
        ],
    },
    Case {
        files: &["virtualservice_gateways.yaml"],
        analyzer: VirtualServiceGateways,
        expected: &[
            ("IST0101", "VirtualService httpbin-bogus"),
            ("IST0132", "VirtualService default/cross-test"),
            ("IST0132", "VirtualService httpbin-bogus"),
            ("IST0132", "VirtualService httpbin"),
        ],
    },
    Case {
        files: &["virtualservice_jwtclaimroute.yaml"],
        analyzer: JwtClaimRoutes,
        expected: &[("IST0149", "VirtualService foo")],
    },
    Case {
        files: &["virtualservice_internal_gateway_ref.yaml"],
        analyzer: VirtualServiceGateways,
        expected: &[("IST0165", "VirtualService httpbin")],
    },
    Case {
        files: &["authorizationpolicies.yaml"],
        analyzer: AuthorizationPolicies,
        expected: &[
            (
                "IST0127",
                "AuthorizationPolicy istio-system/meshwide-httpbin-v1",
            ),
            (
                "IST0127",
                "AuthorizationPolicy httpbin-empty/httpbin-empty-namespace-wide",
            ),
            ("IST0127", "AuthorizationPolicy httpbin/httpbin-nopods"),
            ("IST0101", "AuthorizationPolicy httpbin/httpbin-bogus-ns"),
            ("IST0101", "AuthorizationPolicy httpbin/httpbin-bogus-ns"),
            (
                "IST0101",
                "AuthorizationPolicy httpbin/httpbin-bogus-not-ns",
            ),
            (
                "IST0101",
                "AuthorizationPolicy httpbin/httpbin-bogus-not-ns",
            ),
            ("IST0127", "AuthorizationPolicy test-ambient/no-workload"),
        ],
    },
    Case {
        files: &["destinationrule-simple-destination.yaml"],
        analyzer: DestinationRuleCaCertificates,
        expected: &[("IST0128", "DestinationRule db-tls")],
    },
    Case {
        files: &["destinationrule-mutual-destination.yaml"],
        analyzer: DestinationRuleCaCertificates,
        expected: &[("IST0128", "DestinationRule db-mtls")],
    },
    Case {
        files: &["destinationrule-simple-port.yaml"],
        analyzer: DestinationRuleCaCertificates,
        expected: &[("IST0129", "DestinationRule db-tls")],
    },
    Case {
        files: &["destinationrule-simple-destination-credentialname.yaml"],
        analyzer: DestinationRuleCaCertificates,
        expected: &[("IST0128", "DestinationRule db-tls")],
    },
    Case {
        files: &["destinationrule-simple-destination-credentialname-selector.yaml"],
        analyzer: DestinationRuleCaCertificates,
        expected: &[],
    },
    Case {
        files: &["destinationrule-simple-port-credentialname.yaml"],
        analyzer: DestinationRuleCaCertificates,
        expected: &[("IST0129", "DestinationRule db-tls")],
    },
    Case {
        files: &["destinationrule-simple-port-credentialname-selector.yaml"],
        analyzer: DestinationRuleCaCertificates,
        expected: &[],
    },
    Case {
        files: &["destinationrule-mutual-port.yaml"],
        analyzer: DestinationRuleCaCertificates,
        expected: &[("IST0129", "DestinationRule db-mtls")],
    },
    Case {
        files: &["destinationrule-compound-simple-mutual.yaml"],
        analyzer: DestinationRuleCaCertificates,
        expected: &[
            ("IST0128", "DestinationRule db-mtls"),
            ("IST0129", "DestinationRule db-mtls"),
        ],
    },
    Case {
        files: &["destinationrule-compound-mutual-simple.yaml"],
        analyzer: DestinationRuleCaCertificates,
        expected: &[
            ("IST0129", "DestinationRule db-mtls"),
            ("IST0128", "DestinationRule db-mtls"),
        ],
    },
    Case {
        files: &["destinationrule-with-ca.yaml"],
        analyzer: DestinationRuleCaCertificates,
        expected: &[],
    },
    Case {
        files: &[
            "virtualservice_dupmatches.yaml",
            "virtualservice_overlappingmatches.yaml",
        ],
        analyzer: VirtualServiceMatches,
        expected: &[
            ("IST0130", "VirtualService duplicate-match"),
            ("IST0130", "VirtualService foo/sample-foo-cluster01"),
            ("IST0131", "VirtualService almost-duplicate-match"),
            ("IST0131", "VirtualService duplicate-match"),
            ("IST0130", "VirtualService duplicate-tcp-match"),
            ("IST0130", "VirtualService duplicate-empty-tcp"),
            ("IST0131", "VirtualService almost-duplicate-tcp-match"),
            ("IST0131", "VirtualService duplicate-tcp-match"),
            ("IST0130", "VirtualService none/tls-routing"),
            ("IST0131", "VirtualService none/tls-routing-almostmatch"),
            ("IST0131", "VirtualService none/tls-routing"),
            ("IST0131", "VirtualService non-method-get"),
            ("IST0131", "VirtualService overlapping-in-single-match"),
            ("IST0131", "VirtualService overlapping-in-two-matches"),
            (
                "IST0131",
                "VirtualService overlapping-mathes-with-different-methods",
            ),
        ],
    },
    Case {
        files: &["virtualservice_host_not_found_gateway.yaml"],
        analyzer: VirtualServiceGateways,
        expected: &[
            (
                "IST0132",
                "VirtualService default/testing-service-02-test-01",
            ),
            (
                "IST0132",
                "VirtualService default/testing-service-02-test-02",
            ),
            (
                "IST0132",
                "VirtualService default/testing-service-02-test-03",
            ),
            (
                "IST0132",
                "VirtualService default/testing-service-03-test-04",
            ),
        ],
    },
    Case {
        files: &["virtualservice_host_not_found_gateway_beta.yaml"],
        analyzer: VirtualServiceGateways,
        expected: &[
            (
                "IST0132",
                "VirtualService default/testing-service-02-test-01",
            ),
            (
                "IST0132",
                "VirtualService default/testing-service-02-test-02",
            ),
            (
                "IST0132",
                "VirtualService default/testing-service-02-test-03",
            ),
            (
                "IST0132",
                "VirtualService default/testing-service-03-test-04",
            ),
        ],
    },
    Case {
        files: &["virtualservice_host_not_found_gateway_with_ns_prefix.yaml"],
        analyzer: VirtualServiceGateways,
        expected: &[(
            "IST0132",
            "VirtualService default/testing-service-01-test-01",
        )],
    },
    Case {
        files: &["virtualservice_host_not_found_gateway_with_ns_prefix_beta.yaml"],
        analyzer: VirtualServiceGateways,
        expected: &[(
            "IST0132",
            "VirtualService default/testing-service-01-test-01",
        )],
    },
    Case {
        files: &["serviceentry-missing-addresses-protocol.yaml"],
        analyzer: ServiceEntryAddresses,
        expected: &[
            ("IST0134", "ServiceEntry default/service-entry-test-03"),
            ("IST0134", "ServiceEntry default/service-entry-test-04"),
            ("IST0134", "ServiceEntry default/service-entry-test-07"),
        ],
    },
    Case {
        files: &["gateway-duplicate-certificate.yaml"],
        analyzer: GatewayDuplicateCertificates,
        expected: &[
            ("IST0138", "Gateway istio-system/gateway-01-test-01"),
            ("IST0138", "Gateway istio-system/gateway-02-test-01"),
            ("IST0138", "Gateway istio-system/gateway-01-test-02"),
            ("IST0138", "Gateway default/gateway-01-test-03"),
        ],
    },
    Case {
        files: &["virtualservice_route_rule_no_effects_ingress.yaml"],
        analyzer: VirtualServiceDestinationHosts,
        expected: &[(
            "IST0140",
            "VirtualService default/testing-service-01-test-01",
        )],
    },
    Case {
        files: &["serviceentry-address-required-lowercase.yaml"],
        analyzer: ServiceEntryAddresses,
        expected: &[("IST0134", "ServiceEntry address-missing-lowercase")],
    },
    Case {
        files: &["serviceentry-address-required-uppercase.yaml"],
        analyzer: ServiceEntryAddresses,
        expected: &[("IST0134", "ServiceEntry address-missing-uppercase")],
    },
];

/// The cases (by first file) whose messages equal Istio's expectations.
/// Not yet matching: `gateway-no-workload.yaml` and `gateway-no-port.yaml`,
/// whose expectations rest on the ingress gateway Pod and Service that Istio's
/// analyzer adds as default resources (the mesh checks gateway workloads only
/// when the input holds Pods), and `gateway-secrets-validation.yaml`
/// (IST0161: the mesh does not parse the certificates in Secrets yet).
const MATCHING: &[&str] = &[
    "gateway-secrets.yaml",
    "deprecation.yaml",
    "gateway-correct-port.yaml",
    "gateway-custom-ingressgateway.yaml",
    "gateway-custom-ingressgateway-badport.yaml",
    "gateway-custom-ingressgateway-badport-notarget.yaml",
    "gateway-custom-ingressgateway-translation.yaml",
    "gateway-custom-ingressgateway-svcselector.yaml",
    "conflicting-gateways.yaml",
    "gateway-different-port.yaml",
    "conflicting-gateways-multiple-ports.yaml",
    "conflicting-gateways-subSelector.yaml",
    "conflicting-gateways-invalid-port.yaml",
    "analyze-list-type.yaml",
    "sidecar-default-selector.yaml",
    "sidecar-selector.yaml",
    "virtualservice_conflictingmeshgatewayhosts.yaml",
    "virtualservice_conflictingmeshgatewayhosts_with_exportto.yaml",
    "virtualservice_destinationhosts.yaml",
    "virtualservice_destinationrules.yaml",
    "virtualservice_gateways.yaml",
    "virtualservice_jwtclaimroute.yaml",
    "virtualservice_internal_gateway_ref.yaml",
    "authorizationpolicies.yaml",
    "destinationrule-simple-destination.yaml",
    "destinationrule-mutual-destination.yaml",
    "destinationrule-simple-port.yaml",
    "destinationrule-simple-destination-credentialname.yaml",
    "destinationrule-simple-destination-credentialname-selector.yaml",
    "destinationrule-simple-port-credentialname.yaml",
    "destinationrule-simple-port-credentialname-selector.yaml",
    "destinationrule-mutual-port.yaml",
    "destinationrule-compound-simple-mutual.yaml",
    "destinationrule-compound-mutual-simple.yaml",
    "destinationrule-with-ca.yaml",
    "virtualservice_dupmatches.yaml",
    "virtualservice_host_not_found_gateway.yaml",
    "virtualservice_host_not_found_gateway_beta.yaml",
    "virtualservice_host_not_found_gateway_with_ns_prefix.yaml",
    "virtualservice_host_not_found_gateway_with_ns_prefix_beta.yaml",
    "serviceentry-missing-addresses-protocol.yaml",
    "gateway-duplicate-certificate.yaml",
    "virtualservice_route_rule_no_effects_ingress.yaml",
    "serviceentry-address-required-lowercase.yaml",
    "serviceentry-address-required-uppercase.yaml",
];

fn counts(items: impl Iterator<Item = (String, String)>) -> BTreeMap<(String, String), usize> {
    let mut m = BTreeMap::new();
    for i in items {
        *m.entry(i).or_insert(0) += 1;
    }
    m
}

#[test]
fn analyzer_inputs_match_istio_expectations() {
    let Some(dir) = common::istio_samples("pkg/config/analysis/analyzers/testdata") else {
        return;
    };
    let mut matching = Vec::new();
    let mut report = String::new();
    for case in CASES {
        let paths: Vec<_> = case.files.iter().map(|f| dir.join(f)).collect();
        let config = load_paths(&paths);
        let messages = analyze_with(&config, &[case.analyzer]);
        let got = counts(messages.iter().filter_map(|m| {
            m.origin
                .as_ref()
                .map(|o| (m.code().to_string(), o.friendly_name()))
        }));
        let want = counts(
            case.expected
                .iter()
                .map(|(c, o)| (c.to_string(), o.to_string())),
        );
        if got == want {
            matching.push(case.files[0]);
            report.push_str(&format!("match   {}\n", case.files[0]));
        } else {
            report.push_str(&format!(
                "not yet {}\n    want {:?}\n    got  {:?}\n",
                case.files[0], want, got
            ));
            for m in &messages {
                report.push_str(&format!("      {m}\n"));
            }
        }
    }
    eprintln!("{report}");
    eprintln!("{} of {} cases match", matching.len(), CASES.len());
    assert_eq!(matching.len(), MATCHING.len(), "update MATCHING:\n{report}");
    for expected in MATCHING {
        assert!(
            matching.contains(expected),
            "{expected} no longer matches Istio's expectations:\n{report}"
        );
    }
}

#[test]
fn istio_bookinfo_rules_have_no_errors() {
    let Some(dir) = common::istio_samples("samples/bookinfo/networking") else {
        return;
    };
    let config = load_paths(&[dir]);
    assert!(config.errors.is_empty(), "{:?}", config.errors);
    let messages = mesh_api::analyze(&config);
    assert!(
        !mesh_api::analysis::has_errors(&messages),
        "{}",
        messages
            .iter()
            .map(|m| m.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    );
}
