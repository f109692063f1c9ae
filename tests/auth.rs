//! API keys and JWTs (HS256 and RS256) through the real gateway.

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::json;

use crate::support::gateway::fixture;
use crate::support::*;

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

async fn gateway(backend: &Backend) -> GatewayProc {
    GatewayProc::start(&yaml(&format!(
        r#"
upstreams:
  a: {{ backends: [{}] }}
routes:
  - {{ path: /keyed, upstream: a, auth: api_key }}
  - {{ path: /jwt, upstream: a, auth: jwt }}
  - {{ path: /open, upstream: a }}
auth:
  api_keys: [key-one, key-two]
  jwt:
    secret: hs-secret
    public_key_file: {}
    issuer: https://issuer.test
    audience: microgate
    leeway: 0s
"#,
        backend.url(),
        fixture("jwt-rs256-public.pem").display()
    )))
}

fn hs256(claims: serde_json::Value, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

fn rs256(claims: serde_json::Value) -> String {
    let pem = std::fs::read(fixture("jwt-rs256-private.pem")).unwrap();
    encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(&pem).unwrap(),
    )
    .unwrap()
}

fn good_claims() -> serde_json::Value {
    json!({"sub": "alice", "iss": "https://issuer.test", "aud": "microgate", "exp": now() + 300})
}

#[tokio::test]
async fn api_keys_are_checked() {
    let a = Backend::echo("a").await;
    let gw = gateway(&a).await;
    let http = client();

    let res = http.get(gw.url("/keyed")).send().await.unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(echoed(res).await["error"], "unauthorized");
    let res = http
        .get(gw.url("/keyed"))
        .header("x-api-key", "wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    for key in ["key-one", "key-two"] {
        let res = http
            .get(gw.url("/keyed"))
            .header("x-api-key", key)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{key}");
    }
    assert_eq!(
        http.get(gw.url("/open")).send().await.unwrap().status(),
        200
    );
    assert_eq!(a.hits(), 3, "refused requests never reach the backend");
}

#[tokio::test]
async fn jwts_are_verified() {
    let a = Backend::echo("a").await;
    let gw = gateway(&a).await;
    let http = client();
    let call = |token: Option<String>| {
        let mut req = http.get(gw.url("/jwt"));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.unwrap() }
    };

    let res = call(Some(hs256(good_claims(), "hs-secret"))).await;
    assert_eq!(res.status(), 200, "HS256");
    let res = call(Some(rs256(good_claims()))).await;
    assert_eq!(res.status(), 200, "RS256");

    let res = call(None).await;
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["www-authenticate"], "Bearer");

    let mut rejected = vec![
        ("wrong secret", hs256(good_claims(), "other-secret")),
        ("garbage", "not-a-jwt".to_owned()),
    ];
    for (what, key, value) in [
        ("expired", "exp", json!(now() - 60)),
        ("wrong issuer", "iss", json!("https://evil.test")),
        ("wrong audience", "aud", json!("someone-else")),
        ("not yet valid", "nbf", json!(now() + 600)),
    ] {
        let mut claims = good_claims();
        claims[key] = value;
        rejected.push((what, rs256(claims)));
    }
    for (what, token) in rejected {
        let res = call(Some(token)).await;
        assert_eq!(res.status(), 401, "{what}");
        assert_eq!(echoed(res).await["error"], "unauthorized", "{what}");
    }
    assert_eq!(a.hits(), 2);
}
