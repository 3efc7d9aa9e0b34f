//! The example READMEs (and the top-level one) read top to bottom: in their shell blocks, nothing reads the running
//! mesh (`meshctl status`, `proxy-status`, `traffic`, ...) before the step that starts it, and
//! no `$VARIABLE` is used before the line that sets it.

use std::path::{Path, PathBuf};

/// The lines of the shell blocks of a Markdown text, in order, trimmed.
fn shell_lines(markdown: &str) -> Vec<String> {
    crate::markdown::fenced_blocks(markdown)
        .into_iter()
        .filter(|b| b.is_shell())
        .flat_map(|b| {
            b.text
                .lines()
                .map(|l| l.trim().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// `$NAME` and `${NAME}` of upper-case variables in `line`.
fn uses(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = line;
    while let Some(i) = rest.find('$') {
        rest = &rest[i + 1..];
        let name: String = rest
            .trim_start_matches('{')
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || *c == '_')
            .collect();
        if !name.is_empty() && name != "PWD" && name != "PATH" {
            out.push(name);
        }
    }
    out
}

/// What is out of order in one README.
pub fn problems(markdown: &str) -> Vec<String> {
    const NEEDS_A_MESH: [&str; 6] = [
        "meshctl status",
        "meshctl proxy-status",
        "meshctl proxy-config",
        "meshctl traffic",
        "meshctl apply",
        "meshctl logs",
    ];
    let lines = shell_lines(markdown);
    let first_up = lines.iter().position(|l| l.starts_with("meshctl up"));
    let mut set: Vec<String> = Vec::new();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if line.starts_with('#') {
            continue;
        }
        if first_up.is_some_and(|up| i < up)
            && let Some(cmd) = NEEDS_A_MESH.iter().find(|c| line.contains(*c))
        {
            out.push(format!("`{cmd}` before `meshctl up`: {line}"));
        }
        for v in uses(line) {
            if !set.contains(&v) && !line.starts_with(&format!("{v}=")) {
                out.push(format!("${v} used before it is set: {line}"));
            }
        }
        if let Some((name, _)) = line.trim_start_matches("export ").split_once('=')
            && name.chars().all(|c| c.is_ascii_uppercase() || c == '_')
        {
            set.push(name.to_string());
        }
    }
    out
}

fn readmes() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut out: Vec<PathBuf> = std::fs::read_dir(&root)
        .map(|d| d.flatten().map(|e| e.path().join("README.md")).collect())
        .unwrap_or_default();
    out.retain(|p| p.is_file());
    out.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("demo/README.md"));
    out.push(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"));
    out.sort();
    out
}

#[test]
fn the_rule_catches_a_variable_set_after_the_mesh_it_reads() {
    let bad = "```sh\nSIDECAR=$(meshctl status -o json | jq .x)\n```\n\n```sh\nmeshctl up --detach\ncurl $SIDECAR\n```\n";
    assert_eq!(problems(bad).len(), 1, "{:?}", problems(bad));
    let late = "```sh\nmeshctl up --detach\ncurl $SIDECAR\nSIDECAR=1\n```\n";
    assert_eq!(problems(late).len(), 1, "{:?}", problems(late));
    let good = "```sh\nmeshctl up --detach\nSIDECAR=$(meshctl status -o json)\ncurl http://$SIDECAR/\n```\n";
    assert!(problems(good).is_empty(), "{:?}", problems(good));
}

#[test]
fn every_example_readme_reads_top_to_bottom() {
    let all = readmes();
    assert!(all.len() > 10, "{all:?}");
    let mut found = Vec::new();
    for p in &all {
        let text = std::fs::read_to_string(p).unwrap();
        for problem in problems(&text) {
            found.push(format!("{}: {problem}", p.display()));
        }
    }
    assert!(found.is_empty(), "{}", found.join("\n"));
}
