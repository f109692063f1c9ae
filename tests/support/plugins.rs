//! Builds the policy plugins the tests load — the default ones, the example and the broken
//! fixtures in `tests/fixtures/plugins/` — once per test run, for `wasm32-wasip2`, into their own
//! target dir (`target/test-plugins`), so no `.wasm` is checked in and none is missing.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

const PACKAGES: &[&str] = &[
    "adaptive-rate-limit",
    "zscore-anomaly",
    "latency-weighting",
    "misbehave",
    "misweigh",
    "custom-policy",
];

/// Adds the wasm target when it is missing, so `cargo test` works on a fresh machine
/// (nothing is installed implicitly there).
fn ensure_target() {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == "wasm32-wasip2")
        })
        .unwrap_or(false);
    if !installed {
        let status = Command::new("rustup")
            .args(["target", "add", "wasm32-wasip2"])
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "`rustup target add wasm32-wasip2` failed"
        );
    }
}

/// The folder holding `<library>.wasm` for every package above.
pub fn dir() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        ensure_target();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let target = root.join("target").join("test-plugins");
        let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        cmd.current_dir(&root)
            .args(["build", "--quiet", "--profile", "plugin", "--target", "wasm32-wasip2", "--target-dir"])
            .arg(&target);
        for p in PACKAGES {
            cmd.args(["-p", p]);
        }
        let status = cmd.status().expect("run cargo");
        assert!(
            status.success(),
            "building the test plugins failed (is the target installed? `rustup target add wasm32-wasip2`)"
        );
        target.join("wasm32-wasip2").join("plugin")
    })
}

/// The built `<lib>.wasm`.
pub fn wasm(lib: &str) -> PathBuf {
    dir().join(format!("{lib}.wasm"))
}

/// Installs a file into a watched folder the way a deploy should: write, then rename.
pub fn install(bytes: &[u8], folder: &Path, name: &str) {
    let tmp = folder.join(format!(".{name}.partial"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, folder.join(name)).unwrap();
}
