//! Every committed seed (and every input that once crashed a target, kept
//! beside the seeds) runs through its target on each `cargo test`: the
//! fuzz targets stay compiled and their regressions stay fixed without
//! a fuzzer build.

use std::cell::Cell;
use std::path::{Path, PathBuf};

use crate::TARGETS;

pub(crate) fn seeds_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds")
}

thread_local! {
    /// Panics on this thread, including in tasks that hyper spawns (tokio
    /// catches those, so a caller would not see them): the targets run their
    /// tasks on the calling thread, and other tests' panics do not count.
    static PANICS: Cell<usize> = const { Cell::new(0) };
}

#[test]
fn every_seed_runs_clean() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS.with(|p| p.set(p.get() + 1));
        previous(info);
    }));
    for (name, target) in TARGETS {
        let dir = seeds_dir().join(name);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        files.sort();
        assert!(!files.is_empty(), "{} has no seeds", dir.display());
        for file in &files {
            let data = std::fs::read(file).unwrap();
            let before = PANICS.with(Cell::get);
            target(&data);
            assert_eq!(
                PANICS.with(Cell::get),
                before,
                "{name}: {} panicked",
                file.display()
            );
        }
        println!("{name}: {} seeds", files.len());
    }
}

#[test]
fn every_target_has_a_libfuzzer_entry() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/fuzz_targets");
    for (name, _) in TARGETS {
        let file = dir.join(format!("{name}.rs"));
        let text =
            std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(
            text.contains(&format!("mesh_fuzz::{name}(")),
            "{} does not call mesh_fuzz::{name}",
            file.display()
        );
    }
}
