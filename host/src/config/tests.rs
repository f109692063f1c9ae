use super::*;

const GOOD: &str = r#"
listen: 127.0.0.1:8080
admin:
  listen: 127.0.0.1:9090
upstreams:
  users:
    backends: [http://127.0.0.1:9001, http://127.0.0.1:9002]
routes:
  - path: /api/users
    upstream: users
    auth: api_key
    rate_limit: { requests_per_minute: 600, burst: 50, key: client_ip }
    request_timeout: 5s
auth:
  api_keys: [k1]
circuit_breaker:
  consecutive_failures: 3
  open_duration: 10s
"#;

fn error_of(src: &str) -> Invalid {
    match Config::parse(src, "test.yml") {
        Err(ConfigError::Invalid(e)) => *e,
        Err(other) => panic!("unexpected error {other}"),
        Ok(_) => panic!("config was accepted"),
    }
}

#[test]
fn a_good_config_parses_with_defaults() {
    let c = Config::parse(GOOD, "test.yml").unwrap();
    assert_eq!(c.routes.len(), 1);
    let r = &c.routes[0];
    assert_eq!(r.auth, AuthKind::ApiKey);
    assert_eq!(r.rate_limit.as_ref().unwrap().burst, Some(50));
    assert_eq!(r.request_timeout, Some(std::time::Duration::from_secs(5)));
    assert_eq!(r.connect_timeout, None);
    assert_eq!(c.circuit_breaker.consecutive_failures, 3);
    assert_eq!(c.circuit_breaker.half_open_probes, 3, "default");
    assert_eq!(
        c.proxy.request_timeout,
        std::time::Duration::from_secs(60),
        "default"
    );
    assert!(c.log.access_log);
}

#[test]
fn an_empty_file_is_a_valid_config() {
    let c = Config::parse("", "empty.yml").unwrap();
    assert!(c.routes.is_empty());
    assert_eq!(c.listen.port(), 8080);
}

#[test]
fn unknown_key() {
    let e = error_of(&GOOD.replace("    auth: api_key", "    auht: api_key"));
    assert_eq!(e.key, "routes[0].auht");
    assert_eq!(e.line, 11);
    assert!(e.message.contains("unknown field `auht`"), "{}", e.message);
}

#[test]
fn wrong_type() {
    let e = error_of(&GOOD.replace("requests_per_minute: 600", "requests_per_minute: lots"));
    assert_eq!(e.key, "routes[0].rate_limit.requests_per_minute");
    assert_eq!(e.line, 12);
}

#[test]
fn bad_duration() {
    let e = error_of(&GOOD.replace("request_timeout: 5s", "request_timeout: 5 parsecs"));
    assert_eq!(e.key, "routes[0].request_timeout");
    assert_eq!(e.line, 13);
    assert!(e.message.contains("invalid duration"), "{}", e.message);
}

#[test]
fn missing_upstream() {
    let e = error_of(&GOOD.replace("    upstream: users", "    upstream: orders"));
    assert_eq!(e.key, "routes[0].upstream");
    assert_eq!(e.line, 10);
    assert!(
        e.message.contains("unknown upstream \"orders\""),
        "{}",
        e.message
    );
}

#[test]
fn duplicate_route() {
    let e = error_of(&GOOD.replace(
        "    request_timeout: 5s\n",
        "    request_timeout: 5s\n  - path: /api/users/\n    upstream: users\n",
    ));
    assert_eq!(e.key, "routes[1].path");
    assert_eq!(e.line, 14);
    assert!(e.message.contains("duplicate route"), "{}", e.message);
}

#[test]
fn bad_backend_url() {
    let e = error_of(&GOOD.replace("http://127.0.0.1:9002", "127.0.0.1:9002"));
    assert_eq!(e.key, "upstreams.users.backends[1]");
    assert_eq!(e.line, 7);
}

#[test]
fn missing_required_key() {
    let e = error_of("routes:\n  - upstream: users\n");
    assert!(e.message.contains("missing field `path`"), "{}", e.message);
    assert_eq!(e.key, "routes[0]");
}

#[test]
fn cross_checks() {
    let e = error_of(&GOOD.replace("  api_keys: [k1]", "  api_keys: []"));
    assert_eq!(e.key, "routes[0].auth");
    let e = error_of(&GOOD.replace("    auth: api_key", "    auth: jwt"));
    assert_eq!(e.key, "routes[0].auth");
    assert!(e.message.contains("auth.jwt"));
    let e = error_of(&GOOD.replace("listen: 127.0.0.1:9090", "listen: 0.0.0.0:9090"));
    assert_eq!(e.key, "admin.listen");
    let e = error_of(&GOOD.replace("consecutive_failures: 3", "error_rate: 1.5"));
    assert_eq!(e.key, "circuit_breaker.error_rate");
    assert_eq!(e.line, 17);
    let e = error_of(&format!("{GOOD}analytics:\n  drain_interval: 0s\n"));
    assert_eq!(e.key, "analytics.drain_interval");
    assert_eq!(e.line, 20);
    let e = error_of(&format!("{GOOD}analytics:\n  background_nice: 20\n"));
    assert_eq!(e.key, "analytics.background_nice");
    assert_eq!(e.line, 20);
    let e = error_of(&format!("{GOOD}analytics:\n  background_slice: 0us\n"));
    assert_eq!(e.key, "analytics.background_slice");
    assert_eq!(e.line, 20);
}

#[test]
fn the_message_names_file_line_key_and_shows_the_line() {
    let e = error_of(&GOOD.replace("    upstream: users", "    upstream: orders"));
    let text = e.to_string();
    assert!(
        text.starts_with("test.yml: line 10, column 15: `routes[0].upstream`: unknown upstream"),
        "{text}"
    );
    assert!(text.contains("upstream: orders"), "{text}");
}
