//! `cargo xtask <task>` (an alias in `.cargo/config.toml`):
//!
//! - `plugins`: builds every default policy plugin for `wasm32-wasip2` and copies the
//!   `.wasm` files into `plugins/dist/` (each by write-then-rename, so a running gateway
//!   never sees half a file).
//! - `run [ARGS]`: `plugins`, then `cargo run --release -p microgate -- run [ARGS]`.
//! - `demo [--linger SECONDS]`: `plugins`, then the demo (`examples/demo`).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// The default policy plugins: (package, library file name).
const PLUGINS: &[(&str, &str)] = &[
    ("adaptive-rate-limit", "adaptive_rate_limit"),
    ("zscore-anomaly", "zscore_anomaly"),
    ("latency-weighting", "latency_weighting"),
];

const TARGET: &str = "wasm32-wasip2";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("plugins") => build_plugins().map(|_| ()),
        Some("run") => build_plugins().and_then(|_| run_gateway(&args[1..])),
        Some("demo") => build_plugins().and_then(|_| run_demo(&args[1..])),
        _ => Err("usage: cargo xtask plugins | run [ARGS] | demo [--linger SECONDS]".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// Adds the wasm target when it is missing (nothing is installed implicitly here).
fn ensure_target() -> Result<(), String> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == TARGET)
        })
        .unwrap_or(false);
    if installed {
        return Ok(());
    }
    eprintln!("xtask: adding the {TARGET} target");
    let status = Command::new("rustup")
        .args(["target", "add", TARGET])
        .status()
        .map_err(|e| format!("cannot run rustup: {e}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("`rustup target add {TARGET}` failed"))
}

fn build_plugins() -> Result<Vec<PathBuf>, String> {
    ensure_target()?;
    let root = root();
    let mut cmd = cargo();
    cmd.current_dir(&root)
        .args(["build", "--profile", "plugin", "--target", TARGET]);
    for (package, _) in PLUGINS {
        cmd.args(["-p", package]);
    }
    let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
    if !status.success() {
        return Err("building the plugins failed".into());
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"));
    let built = target_dir.join(TARGET).join("plugin");
    let dist = root.join("plugins").join("dist");
    std::fs::create_dir_all(&dist).map_err(|e| format!("cannot create {}: {e}", dist.display()))?;
    let mut out = Vec::new();
    for (_, lib) in PLUGINS {
        let file = format!("{lib}.wasm");
        let to = dist.join(&file);
        let tmp = dist.join(format!(".{file}.tmp"));
        std::fs::copy(built.join(&file), &tmp)
            .and_then(|_| std::fs::rename(&tmp, &to))
            .map_err(|e| format!("cannot install {file}: {e}"))?;
        out.push(to);
    }
    eprintln!("xtask: plugins installed in {}", dist.display());
    Ok(out)
}

fn run_demo(args: &[String]) -> Result<(), String> {
    cargo_run(&["demo", "--"], args, "the demo")
}

fn run_gateway(args: &[String]) -> Result<(), String> {
    cargo_run(&["microgate", "--", "run"], args, "the gateway")
}

/// `cargo run --release -p <package args> <args>` from the workspace root.
fn cargo_run(package: &[&str], args: &[String], what: &str) -> Result<(), String> {
    let status = cargo()
        .current_dir(root())
        .args(["run", "--release", "-p"])
        .args(package)
        .args(args)
        .status()
        .map_err(|e| format!("cannot run cargo: {e}"))?;
    status
        .success()
        .then_some(())
        .ok_or_else(|| format!("{what} exited with {status}"))
}
