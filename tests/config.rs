//! Bad configuration files: each is refused with the key and the line, and a non-zero exit.

use crate::support::gateway::{BIN, check_config};

const GOOD: &str = "listen: 127.0.0.1:8080
upstreams:
  users:
    backends: [http://127.0.0.1:9001]
routes:
  - path: /api/users
    upstream: users
    request_timeout: 5s
";

#[test]
fn check_config_prints_the_resolved_routes() {
    let (status, out, err) = check_config(GOOD);
    assert!(status.success(), "{err}");
    assert!(out.contains("OK"));
    assert!(out.contains("/api/users"));
    assert!(out.contains("http://127.0.0.1:9001"));
    assert!(out.contains("request_timeout=5s"));
}

#[test]
fn bad_files_name_the_key_and_line_and_exit_non_zero() {
    let cases: [(&str, String, &str, u32); 5] = [
        (
            "unknown key",
            GOOD.replace("    upstream: users", "    upstrem: users"),
            "routes[0].upstrem",
            7,
        ),
        (
            "wrong type",
            GOOD.replace("backends: [http://127.0.0.1:9001]", "backends: 42"),
            "upstreams.users.backends",
            4,
        ),
        (
            "missing upstream",
            GOOD.replace("    upstream: users", "    upstream: orders"),
            "routes[0].upstream",
            7,
        ),
        (
            "bad duration",
            GOOD.replace("5s", "five seconds"),
            "routes[0].request_timeout",
            8,
        ),
        (
            "duplicate route",
            format!("{GOOD}  - path: /api/users/\n    upstream: users\n"),
            "routes[1].path",
            9,
        ),
    ];
    for (what, yaml, key, line) in cases {
        let (status, _, err) = check_config(&yaml);
        assert!(!status.success(), "{what}: accepted");
        assert_eq!(status.code(), Some(2), "{what}");
        assert!(
            err.contains(&format!("`{key}`")),
            "{what}: key missing in: {err}"
        );
        assert!(
            err.contains(&format!("line {line},")),
            "{what}: line missing in: {err}"
        );
    }
}

#[test]
fn run_refuses_a_bad_config_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.yml");
    std::fs::write(&path, "listen: not-an-address\n").unwrap();
    let out = std::process::Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("`listen`") && err.contains("line 1,"), "{err}");
}

#[test]
fn a_missing_file_is_reported() {
    let out = std::process::Command::new(BIN)
        .args(["check-config", "/nonexistent/microgate.yml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read config file"));
}

#[test]
fn the_shipped_and_demo_configs_are_valid() {
    for file in ["config.yml", "examples/demo/demo.yml"] {
        let path = format!("{}/../{file}", env!("CARGO_MANIFEST_DIR"));
        let out = std::process::Command::new(BIN)
            .args(["check-config", &path])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
