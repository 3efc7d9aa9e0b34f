//! `cargo xtask kube-apiserver`: a real Kubernetes API server for the tests of Kubernetes
//! mode, built once into a cache outside the repository. No registry this project can reach
//! ships a kube-apiserver binary, and there is no Docker for kind; Debian's `kubernetes`
//! source package (1.20.2, vendored) builds one with Debian's Go, and Debian's etcd stores
//! its data. About 8 minutes on 2 idle cores, once; later calls find the binary and return.
//!
//! The one trap: 1.20.2 vendors modern-go/reflect2 v1.0.1, which crashes under Go >= 1.18
//! (segfaults, CRDs mis-decoded); Debian's `golang-github-modern-go-reflect2-dev` (1.0.2)
//! replaces it before the build.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context as _, bail};
use mesh_test_util::kube::{KUBE_VERSION, cached_kube_apiserver};

#[derive(clap::Args)]
pub struct KubeArgs {
    /// Build again even when the cache has a binary.
    #[arg(long)]
    force: bool,
}

const SOURCES: &str = "/etc/apt/sources.list.d/mesh-deb-src.sources";
const DEB_SRC: &str = "Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
";
const PACKAGES: &[&str] = &[
    "golang-go",
    "dpkg-dev",
    "rsync",
    "make",
    "golang-github-modern-go-reflect2-dev",
    "etcd-server",
    "openssl",
    "curl",
];

fn say(msg: impl AsRef<str>) {
    eprintln!("[kube-apiserver] {}", msg.as_ref());
}

pub fn run(args: KubeArgs) -> anyhow::Result<()> {
    let target = cached_kube_apiserver();
    let started = Instant::now();
    if target.is_file() && !args.force {
        say(format!("cached: {}", target.display()));
    } else {
        build(&target)?;
        say(format!(
            "built {} in {:.0} s",
            target.display(),
            started.elapsed().as_secs_f64()
        ));
    }
    if which("etcd").is_none() {
        apt_install(&["etcd-server"])?;
    }
    println!("kube-apiserver: {}", target.display());
    println!(
        "etcd: {}",
        which("etcd").map_or_else(|| "(missing)".into(), |p| p.display().to_string())
    );
    Ok(())
}

fn build(target: &Path) -> anyhow::Result<()> {
    if !has_deb_src()? {
        say(format!("adding Debian source lines ({SOURCES})"));
        sudo_write(SOURCES, DEB_SRC)?;
    }
    say(format!("apt-get install {}", PACKAGES.join(" ")));
    apt_install(PACKAGES)?;
    let work = tempfile::tempdir().context("temporary build directory")?;
    say(format!(
        "apt-get source kubernetes (into {})",
        work.path().display()
    ));
    sh(Command::new("apt-get")
        .args(["source", "-qq", "kubernetes"])
        .current_dir(work.path()))?;
    let src = std::fs::read_dir(work.path())?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("kubernetes-"))
        })
        .context("apt-get source unpacked no kubernetes-* directory")?;
    let version_file = src.join("debian").join("changelog");
    let changelog = std::fs::read_to_string(&version_file).unwrap_or_default();
    if !changelog.contains(KUBE_VERSION) {
        say(format!(
            "warning: {} does not mention {KUBE_VERSION}; the tests were written against it",
            version_file.display()
        ));
    }
    say("swapping vendored reflect2 v1.0.1 for Debian's 1.0.2");
    let vendored = src.join("vendor/github.com/modern-go/reflect2");
    std::fs::remove_dir_all(&vendored)
        .with_context(|| format!("removing {}", vendored.display()))?;
    sh(Command::new("cp")
        .args(["-r", "/usr/share/gocode/src/github.com/modern-go/reflect2"])
        .arg(&vendored))?;
    say(
        "make WHAT=cmd/kube-apiserver (about 8 minutes on 2 idle cores; log in the build directory)",
    );
    let log = work.path().join("build.log");
    let log_file = std::fs::File::create(&log)?;
    let status = Command::new("make")
        .arg("WHAT=cmd/kube-apiserver")
        .current_dir(&src)
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .status()
        .context("running make")?;
    if !status.success() {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        bail!(
            "make WHAT=cmd/kube-apiserver failed ({status}):\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    let built = src.join("_output/local/bin/linux/amd64/kube-apiserver");
    let dir = target.parent().context("cache path has no parent")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // Copy then rename: a build interrupted mid-copy never leaves a truncated binary where
    // the tests look.
    let partial = dir.join("kube-apiserver.partial");
    std::fs::copy(&built, &partial).with_context(|| format!("copying {}", built.display()))?;
    std::fs::rename(&partial, target)?;
    Ok(())
}

fn has_deb_src() -> anyhow::Result<bool> {
    let mut files = vec![PathBuf::from("/etc/apt/sources.list")];
    if let Ok(dir) = std::fs::read_dir("/etc/apt/sources.list.d") {
        files.extend(dir.filter_map(Result::ok).map(|e| e.path()));
    }
    Ok(files.iter().any(|f| {
        std::fs::read_to_string(f).is_ok_and(|t| {
            t.lines()
                .any(|l| l.trim_start().starts_with("deb-src") || l.contains("Types: deb-src"))
        })
    }))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n") || o.stdout == b"0")
}

fn privileged(program: &str) -> Command {
    if is_root() {
        Command::new(program)
    } else {
        let mut c = Command::new("sudo");
        c.arg(program);
        c
    }
}

fn sudo_write(path: &str, content: &str) -> anyhow::Result<()> {
    let tmp = tempfile::NamedTempFile::new()?;
    std::fs::write(tmp.path(), content)?;
    sh(privileged("cp").arg(tmp.path()).arg(path))
}

fn apt_install(packages: &[&str]) -> anyhow::Result<()> {
    sh(privileged("apt-get").args(["update", "-qq"]))?;
    sh(privileged("apt-get")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .args(["install", "-y", "-qq"])
        .args(packages))
}

fn sh(cmd: &mut Command) -> anyhow::Result<()> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

fn which(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
