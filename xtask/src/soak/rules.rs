//! The rule changes of the soak: two steps applied in turn with `meshctl apply -f`, so that
//! every proxy gets a route push every few seconds for the whole run.
//!
//! A step is the canary VirtualService of `examples/canary/` (90/10 or 50/50 between the
//! subsets `safe` and `risky`, bound to `mesh`: the sidecars' routes) and the demo's gateway
//! VirtualService `helloworld` with the same weights (the gateway's routes: a change to the
//! mesh rule alone would never reach the gateway).

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// The canary files of `examples/canary/` and the `safe` weight each sets.
pub const CANARY_STEPS: [(&str, u32); 2] = [
    ("examples/canary/helloworld-mesh.yaml", 90),
    ("examples/canary/50-50/helloworld-mesh.yaml", 50),
];

/// The demo's gateway VirtualService (`mesh-cli/demo/helloworld-gateway.yaml`: same name, hosts,
/// gateway and matches) with a weighted split between the two subsets.
pub fn gateway_virtual_service(safe_weight: u32) -> String {
    let risky = 100 - safe_weight.min(100);
    format!(
        "apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: helloworld
  namespace: default
spec:
  hosts:
  - \"*\"
  gateways:
  - helloworld-gateway
  http:
  - match:
    - uri:
        exact: /hello
    - uri:
        exact: /istio
    route:
    - destination:
        host: helloworld
        subset: safe
        port:
          number: 5000
      weight: {safe_weight}
    - destination:
        host: helloworld
        subset: risky
        port:
          number: 5000
      weight: {risky}
"
    )
}

/// One step's YAML: the canary file's documents, then the gateway rule.
pub fn step_yaml(canary: &str, safe_weight: u32) -> String {
    let mut text = canary.trim_end().to_string();
    text.push_str("\n---\n");
    text.push_str(&gateway_virtual_service(safe_weight));
    text
}

/// Writes the steps into `dir` (`step-90.yaml`, `step-50.yaml`) from the workspace's canary
/// files, and returns their paths in the order they are applied.
pub fn write_steps(workspace: &Path, dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut files = Vec::new();
    for (canary, weight) in CANARY_STEPS {
        let source = workspace.join(canary);
        let text = std::fs::read_to_string(&source)
            .with_context(|| format!("read {}", source.display()))?;
        let path = dir.join(format!("step-{weight}.yaml"));
        std::fs::write(&path, step_yaml(&text, weight))
            .with_context(|| format!("write {}", path.display()))?;
        files.push(path);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn workspace() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    #[test]
    fn every_step_loads_as_two_virtual_services_with_its_weights() {
        let dir = tempfile::tempdir().unwrap();
        let files = write_steps(&workspace(), dir.path()).unwrap();
        assert_eq!(files.len(), 2);
        for (file, (_, safe)) in files.iter().zip(CANARY_STEPS) {
            let text = std::fs::read_to_string(file).unwrap();
            let config = mesh_api::load_str(&file.display().to_string(), &text);
            assert!(config.errors.is_empty(), "{:?}", config.errors);
            let names: Vec<String> = config
                .virtual_services()
                .map(|(meta, _)| meta.name.clone())
                .collect();
            assert_eq!(names, ["helloworld-mesh", "helloworld"], "{text}");
            assert!(
                text.contains(&format!("weight: {safe}\n"))
                    && text.contains(&format!("weight: {}\n", 100 - safe)),
                "{text}"
            );
        }
    }

    #[test]
    fn the_gateway_rule_keeps_the_demo_binding_and_matches() {
        let demo =
            std::fs::read_to_string(workspace().join("mesh-cli/demo/helloworld-gateway.yaml"))
                .unwrap();
        let ours = gateway_virtual_service(70);
        for line in [
            "name: helloworld\n",
            "- helloworld-gateway\n",
            "exact: /hello\n",
            "exact: /istio\n",
        ] {
            assert!(demo.contains(line) && ours.contains(line), "{line}");
        }
        assert!(ours.contains("weight: 70\n") && ours.contains("weight: 30\n"));
    }
}
