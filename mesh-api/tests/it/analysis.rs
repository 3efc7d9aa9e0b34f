//! The analysis on small inputs: each IST0106 schema rule, references between
//! resources, and the form of the messages.

use mesh_api::analysis::{Analyzer, Level, analyze_with, has_errors};
use mesh_api::{analyze, load_str};

/// Codes and texts of the messages for `yaml`, from the given analyzers.
fn messages(yaml: &str, analyzers: &[Analyzer]) -> Vec<(String, String)> {
    let config = load_str("test.yaml", yaml);
    assert!(config.errors.is_empty(), "{:?}", config.errors);
    analyze_with(&config, analyzers)
        .into_iter()
        .map(|m| (m.code().to_string(), m.to_string()))
        .collect()
}

fn schema_errors(yaml: &str) -> Vec<String> {
    messages(yaml, &[Analyzer::Schema])
        .into_iter()
        .map(|(code, text)| {
            assert_eq!(code, "IST0106", "{text}");
            text
        })
        .collect()
}

fn vs(http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: r\n  namespace: ns\nspec:\n  hosts: [r]\n  http:\n{http}"
    )
}

#[test]
fn weights_must_sum_to_100() {
    let e = schema_errors(&vs(
        "  - route:\n    - destination: {host: a}\n      weight: 60\n    - destination: {host: b}\n      weight: 30\n",
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("spec.http[0].route: total destination weight 90 != 100"),
        "{}",
        e[0]
    );
    assert!(
        e[0].starts_with("Error [IST0106] (VirtualService ns/r test.yaml:"),
        "{}",
        e[0]
    );
    assert!(schema_errors(&vs("  - route:\n    - destination: {host: a}\n      weight: 60\n    - destination: {host: b}\n      weight: 40\n")).is_empty());
}

#[test]
fn bad_regex_is_reported() {
    let e = schema_errors(&vs(
        "  - match:\n    - uri:\n        regex: \"/api/(v1\"\n    route:\n    - destination: {host: a}\n",
    ));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("spec.http[0].match[0].uri: invalid regex"),
        "{}",
        e[0]
    );
}

#[test]
fn zero_durations_are_reported_where_not_allowed() {
    let e = schema_errors(&vs(
        "  - route:\n    - destination: {host: a}\n    timeout: 0s\n    retries:\n      attempts: 2\n      perTryTimeout: 0s\n    fault:\n      delay:\n        fixedDelay: 0ms\n        percentage: {value: 10}\n",
    ));
    // `timeout: 0s` is allowed (it disables the timeout); the other two are not.
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e.iter()
            .any(|m| m.contains("retries.perTryTimeout: duration must be at least 1ms"))
    );
    assert!(
        e.iter()
            .any(|m| m.contains("fault.delay.fixedDelay: duration must be at least 1ms"))
    );
}

#[test]
fn percentages_outside_0_to_100() {
    let e = schema_errors(&vs(
        "  - route:\n    - destination: {host: a}\n    mirror: {host: b}\n    mirrorPercentage: {value: 150}\n    fault:\n      abort:\n        httpStatus: 503\n        percentage: {value: -1}\n",
    ));
    assert_eq!(e.len(), 2, "{e:?}");
    assert!(
        e.iter()
            .any(|m| m.contains("mirrorPercentage.value: percentage 150 is outside 0-100"))
    );
    assert!(
        e.iter()
            .any(|m| m.contains("fault.abort.percentage.value: percentage -1 is outside 0-100"))
    );
    // The deprecated integer forms are checked too.
    let e = schema_errors(&vs(
        "  - route:\n    - destination: {host: a}\n    mirror: {host: b}\n    mirror_percent: 101\n",
    ));
    assert_eq!(e.len(), 1, "{e:?}");
}

#[test]
fn empty_route_is_reported() {
    let e = schema_errors(&vs("  - match:\n    - uri: {prefix: /}\n"));
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("HTTP route, redirect, directResponse or delegate is required"),
        "{}",
        e[0]
    );
}

#[test]
fn only_a_delegate_may_have_no_hosts() {
    let doc = |name: &str, ns: &str, spec: &str| {
        format!(
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{spec}"
        )
    };
    let route = "  http:\n  - route:\n    - destination: {host: a}\n";
    let yaml = [
        doc(
            "root",
            "a",
            "  hosts: [x]\n  http:\n  - match:\n    - uri: {prefix: /c}\n    delegate: {name: child, namespace: b}\n  - route:\n    - destination: {host: a}\n",
        ),
        // The delegate: no hosts needed.
        doc("child", "b", route),
        // The same name in another namespace is not the delegate.
        doc("child", "a", route),
    ]
    .concat();
    let e = schema_errors(&yaml);
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].starts_with("Error [IST0106] (VirtualService a/child ")
            && e[0].ends_with("spec.hosts: a VirtualService needs at least one host"),
        "{}",
        e[0]
    );
}

#[test]
fn duplicate_subset_names_are_reported() {
    let e = schema_errors(
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: r\nspec:\n  host: r\n  subsets:\n  - name: v1\n    labels: {version: v1}\n  - name: v1\n    labels: {version: v2}\n",
    );
    assert_eq!(e.len(), 1, "{e:?}");
    assert!(
        e[0].contains("spec.subsets[1].name: duplicate subset name \"v1\""),
        "{}",
        e[0]
    );
    // The message points at the line of the duplicate.
    assert!(e[0].contains("test.yaml:10)"), "{}", e[0]);
}

#[test]
fn load_errors_become_schema_errors() {
    let config = load_str(
        "bad.yaml",
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: r\nspec:\n  host: [r]\n",
    );
    let msgs = analyze(&config);
    assert_eq!(msgs.len(), 1);
    assert_eq!(msgs[0].code(), "IST0106");
    assert_eq!(msgs[0].level(), Level::Error);
    assert!(has_errors(&msgs));
    assert!(msgs[0].to_string().starts_with("Error [IST0106] (bad.yaml:6) Schema validation error: document 1, column 9: spec.host: invalid type"), "{}", msgs[0]);
}

const REGISTRY: &str = "apiVersion: v1
kind: Service
metadata:
  name: reviews
  namespace: default
spec:
  ports:
  - port: 9080
    name: http
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  trafficPolicy:
    tls:
      mode: SIMPLE
    portLevelSettings:
    - port: {number: 9080}
      tls:
        mode: MUTUAL
  subsets:
  - name: v1
    labels: {version: v1}
";

#[test]
fn references_hosts_subsets_gateways() {
    let yaml = format!(
        "{REGISTRY}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  gateways: [missing-gateway, mesh]
  http:
  - route:
    - destination: {{host: reviews, subset: v9}}
    - destination: {{host: ratings}}
      weight: 0
    - destination: {{host: reviews, port: {{number: 9999}}}}
"
    );
    let msgs = messages(
        &yaml,
        &[
            Analyzer::VirtualServiceDestinationHosts,
            Analyzer::VirtualServiceDestinationRules,
            Analyzer::VirtualServiceGateways,
        ],
    );
    let texts: Vec<&str> = msgs.iter().map(|(_, t)| t.as_str()).collect();
    let has = |s: &str| texts.iter().any(|t| t.contains(s));
    assert!(
        has("Referenced host+subset in destinationrule not found: \"reviews+v9\""),
        "{texts:#?}"
    );
    assert!(has("Referenced host not found: \"ratings\""), "{texts:#?}");
    assert!(
        has("Referenced host:port not found: \"reviews:9999\""),
        "{texts:#?}"
    );
    assert!(
        has("Referenced gateway not found: \"missing-gateway\""),
        "{texts:#?}"
    );
    assert!(has("[IST0132]"), "{texts:#?}");
    assert!(
        msgs.iter().all(|(c, _)| c == "IST0101" || c == "IST0132"),
        "{texts:#?}"
    );
}

#[test]
fn destination_rule_tls_without_ca() {
    let msgs = messages(REGISTRY, &[Analyzer::DestinationRuleCaCertificates]);
    let codes: Vec<&str> = msgs.iter().map(|(c, _)| c.as_str()).collect();
    assert_eq!(codes, ["IST0128", "IST0129"], "{msgs:#?}");
    assert!(
        msgs[0]
            .1
            .contains("has TLS mode set to SIMPLE but no caCertificates"),
        "{}",
        msgs[0].1
    );
    assert!(msgs[1].1.contains("at port 9080"), "{}", msgs[1].1);
}

#[test]
fn conflicting_virtual_services_for_one_host() {
    let yaml = "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: a
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: b
spec:
  hosts: [reviews.default.svc.cluster.local]
  http:
  - route:
    - destination: {host: reviews}
---
# The same name again: another version of `a`, not a conflict with it.
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: a
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
";
    let msgs = messages(yaml, &[Analyzer::ConflictingMeshGatewayHosts]);
    assert_eq!(msgs.len(), 3, "{msgs:#?}");
    assert!(msgs.iter().all(|(c, t)| c == "IST0109"
        && t.contains("The VirtualServices default/a,default/b associated with mesh gateway define the same host reviews.default.svc.cluster.local")));
}

#[test]
fn clean_input_has_no_messages() {
    let yaml = format!(
        "{}---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {{host: reviews, subset: v1}}
",
        REGISTRY
            .replace("mode: SIMPLE", "mode: ISTIO_MUTUAL")
            .replace("mode: MUTUAL", "mode: ISTIO_MUTUAL")
    );
    let config = load_str("ok.yaml", &yaml);
    let msgs = analyze(&config);
    assert!(msgs.is_empty(), "{msgs:#?}");
}

/// 20,000 VirtualServices (plus delegates, duplicates and a few mistakes):
/// validation and analysis find exactly the conflicts, orphans and missing
/// subsets planted among them. (Lookups are indexed, so this takes seconds,
/// not the hours comparing every pair took; time is not asserted.)
#[test]
fn twenty_thousand_virtual_services_are_analysed_with_exact_findings() {
    use std::collections::BTreeSet;
    use std::fmt::Write as _;

    const N: usize = 20_000;
    let vs = |y: &mut String, name: &str, ns: &str, hosts: &str, extra: &str, http: &str| {
        let _ = write!(
            y,
            "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{hosts}{extra}  http:\n{http}"
        );
    };
    let route = |host: &str, subset: &str| {
        format!("  - route:\n    - destination: {{host: {host}{subset}}}\n")
    };
    let mut y = String::new();
    let mut conflicts: Vec<(String, String, String)> = Vec::new(); // (a key, b key, host)
    let mut orphans = Vec::new();
    for i in 0..N {
        let ns = format!("ns{}", i % 4);
        let host = format!("h{i}.example.com");
        let subset = if i % 5000 == 0 { ", subset: v1" } else { "" };
        let mut http = route(&host, subset);
        if i % 500 == 0 {
            // Delegates to a VirtualService without hosts, which is allowed.
            http = format!(
                "  - match:\n    - uri: {{prefix: /d}}\n    delegate: {{name: child{i}, namespace: {ns}}}\n{http}"
            );
            vs(
                &mut y,
                &format!("child{i}"),
                &ns,
                "",
                "",
                &route("child", ""),
            );
        }
        vs(
            &mut y,
            &format!("vs{i}"),
            &ns,
            &format!("  hosts: [{host}]\n"),
            "",
            &http,
        );
        if i % 1000 == 7 {
            // Another VirtualService for the same host (in another namespace,
            // visible everywhere): both are reported.
            let other_ns = format!("ns{}", (i + 1) % 4);
            vs(
                &mut y,
                &format!("dup{i}"),
                &other_ns,
                &format!("  hosts: [{host}]\n"),
                "",
                &route(&host, ""),
            );
            conflicts.push((
                format!("{ns}/vs{i}"),
                format!("{other_ns}/dup{i}"),
                host.clone(),
            ));
        }
        if i % 7000 == 3 {
            // No hosts, and nothing delegates to it.
            vs(
                &mut y,
                &format!("orphan{i}"),
                &ns,
                "",
                "",
                &route(&host, ""),
            );
            orphans.push(format!("{ns}/orphan{i}"));
        }
    }
    // A wildcard overlapping a host; and two private VirtualServices for one
    // host in different namespaces, which do not conflict.
    vs(
        &mut y,
        "wild",
        "ns0",
        "  hosts: [\"*.w.example.com\"]\n",
        "",
        &route("w", ""),
    );
    vs(
        &mut y,
        "a-w",
        "ns1",
        "  hosts: [a.w.example.com]\n",
        "",
        &route("w", ""),
    );
    conflicts.push(("ns0/wild".into(), "ns1/a-w".into(), String::new()));
    for ns in ["ns2", "ns3"] {
        vs(
            &mut y,
            "private",
            ns,
            "  hosts: [p.example.com]\n",
            "  exportTo: [\".\"]\n",
            &route("p", ""),
        );
    }
    for i in [0, 10_000] {
        let _ = write!(
            y,
            "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: dr{i}\n  namespace: ns0\nspec:\n  host: h{i}.example.com\n  subsets:\n  - {{name: v1, labels: {{version: v1}}}}\n"
        );
    }

    let config = load_str("scale.yaml", &y);
    assert!(config.errors.is_empty(), "{:?}", config.errors.first());
    // What mesh-control runs on every file, and what `meshctl analyze` runs.
    let schema = analyze_with(&config, &[Analyzer::Schema]);
    let all = analyze(&config);

    let about = |m: &mesh_api::analysis::Message| {
        let o = m.origin.as_ref().expect("origin");
        format!("{}/{}", o.namespace, o.name)
    };
    let schema_found: BTreeSet<(String, String)> =
        schema.iter().map(|m| (about(m), m.text.clone())).collect();
    let orphan_text =
        "Schema validation error: spec.hosts: a VirtualService needs at least one host";
    let schema_expected: BTreeSet<(String, String)> = orphans
        .iter()
        .map(|o| (o.clone(), orphan_text.to_string()))
        .collect();
    assert_eq!(schema_found, schema_expected);
    assert_eq!(schema.len(), orphans.len());

    let mut expected: BTreeSet<(&str, String, String)> = BTreeSet::new();
    for o in &orphans {
        expected.insert(("IST0106", o.clone(), orphan_text.to_string()));
    }
    for (a, b, host) in &conflicts {
        let names: BTreeSet<&String> = [a, b].into_iter().collect();
        let names: Vec<&str> = names.into_iter().map(String::as_str).collect();
        for me in [a, b] {
            // The host named is the VirtualService's own that overlaps.
            let shared = if host.is_empty() {
                if me == "ns0/wild" {
                    "*.w.example.com"
                } else {
                    "a.w.example.com"
                }
            } else {
                host
            };
            expected.insert((
                "IST0109",
                me.clone(),
                format!(
                    "The VirtualServices {} associated with mesh gateway define the same host {shared} which can lead to undefined behavior. This can be fixed by merging the conflicting VirtualServices into a single resource.",
                    names.join(",")
                ),
            ));
        }
    }
    for i in [5000, 15_000] {
        expected.insert((
            "IST0101",
            format!("ns0/vs{i}"),
            format!("Referenced host+subset in destinationrule not found: \"h{i}.example.com+v1\""),
        ));
    }
    let found: BTreeSet<(&str, String, String)> = all
        .iter()
        .map(|m| (m.code(), about(m), m.text.clone()))
        .collect();
    assert_eq!(found, expected);
    assert_eq!(all.len(), expected.len(), "no message twice");
}
