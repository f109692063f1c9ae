//! Credentials: API keys (`X-API-Key`) and JWTs (`Authorization: Bearer`, HS256 or RS256,
//! with expiry, issuer and audience checks).

use std::collections::HashSet;

use http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::config::{AuthConfig, AuthKind, JwtConfig};

pub const API_KEY_HEADER: &str = "x-api-key";

/// Who a request was authenticated as.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    ApiKey(String),
    Jwt { subject: Option<String> },
}

/// Why a request was refused; each maps to a 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing API key (send it in X-API-Key)")]
    MissingApiKey,
    #[error("invalid API key")]
    InvalidApiKey,
    #[error("missing bearer token (send Authorization: Bearer <jwt>)")]
    MissingToken,
    #[error("invalid token: {0}")]
    InvalidToken(String),
}

/// Why the auth section could not be turned into verifiers.
#[derive(Debug, thiserror::Error)]
#[error("auth.jwt: {0}")]
pub struct AuthSetupError(String);

/// Checks credentials for routes that require them.
pub struct Authenticator {
    api_keys: HashSet<String>,
    jwt: Option<JwtVerifier>,
}

struct JwtVerifier {
    hs256: Option<(DecodingKey, Validation)>,
    rs256: Option<(DecodingKey, Validation)>,
}

#[derive(Deserialize)]
struct Claims {
    #[serde(default)]
    sub: Option<String>,
}

// === impl Authenticator ===

impl Authenticator {
    pub fn new(config: &AuthConfig) -> Result<Self, AuthSetupError> {
        Ok(Self {
            api_keys: config.api_keys.iter().cloned().collect(),
            jwt: config.jwt.as_ref().map(JwtVerifier::new).transpose()?,
        })
    }

    /// Checks the credential `kind` asks for. `Ok(None)` for routes without auth.
    pub fn check(
        &self,
        kind: AuthKind,
        headers: &HeaderMap,
    ) -> Result<Option<Identity>, AuthError> {
        match kind {
            AuthKind::None => Ok(None),
            AuthKind::ApiKey => {
                let key = headers
                    .get(API_KEY_HEADER)
                    .ok_or(AuthError::MissingApiKey)?
                    .to_str()
                    .map_err(|_| AuthError::InvalidApiKey)?;
                if self.api_keys.contains(key) {
                    Ok(Some(Identity::ApiKey(key.to_owned())))
                } else {
                    Err(AuthError::InvalidApiKey)
                }
            }
            AuthKind::Jwt => {
                let token = bearer_token(headers).ok_or(AuthError::MissingToken)?;
                let verifier = self
                    .jwt
                    .as_ref()
                    .ok_or_else(|| AuthError::InvalidToken("JWT is not configured".into()))?;
                verifier.verify(token).map(Some)
            }
        }
    }
}

fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

// === impl JwtVerifier ===

impl JwtVerifier {
    fn new(config: &JwtConfig) -> Result<Self, AuthSetupError> {
        let validation = |alg| {
            let mut v = Validation::new(alg);
            v.leeway = config.leeway.as_secs();
            v.validate_nbf = true;
            if let Some(iss) = &config.issuer {
                v.set_issuer(&[iss]);
                v.set_required_spec_claims(&["exp", "iss"]);
            }
            match &config.audience {
                Some(aud) => v.set_audience(&[aud]),
                None => v.validate_aud = false,
            }
            v
        };
        let hs256 = config.secret.as_ref().map(|s| {
            (
                DecodingKey::from_secret(s.as_bytes()),
                validation(Algorithm::HS256),
            )
        });
        let pem = match (&config.public_key, &config.public_key_file) {
            (Some(text), _) => Some(text.clone().into_bytes()),
            (None, Some(path)) => Some(std::fs::read(path).map_err(|e| {
                AuthSetupError(format!(
                    "cannot read public_key_file {}: {e}",
                    path.display()
                ))
            })?),
            (None, None) => None,
        };
        let rs256 = pem
            .map(|pem| {
                DecodingKey::from_rsa_pem(&pem)
                    .map(|key| (key, validation(Algorithm::RS256)))
                    .map_err(|e| {
                        AuthSetupError(format!(
                            "the RS256 public key is not a valid PEM RSA key: {e}"
                        ))
                    })
            })
            .transpose()?;
        Ok(Self { hs256, rs256 })
    }

    fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let bad = |e: jsonwebtoken::errors::Error| AuthError::InvalidToken(e.to_string());
        let header = jsonwebtoken::decode_header(token).map_err(bad)?;
        let (key, validation) = match header.alg {
            Algorithm::HS256 => self.hs256.as_ref(),
            Algorithm::RS256 => self.rs256.as_ref(),
            _ => None,
        }
        .ok_or_else(|| {
            AuthError::InvalidToken(format!("algorithm {:?} is not accepted", header.alg))
        })?;
        let data = jsonwebtoken::decode::<Claims>(token, key, validation).map_err(bad)?;
        Ok(Identity::Jwt {
            subject: data.claims.sub,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use std::time::Duration;

    fn jwt_config() -> JwtConfig {
        JwtConfig {
            secret: Some("s3cret".into()),
            public_key_file: None,
            public_key: None,
            issuer: Some("https://issuer.test".into()),
            audience: Some("microgate".into()),
            leeway: Duration::from_secs(0),
        }
    }

    fn token(claims: serde_json::Value, secret: &str) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    fn headers(name: &str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
        h
    }

    fn auth() -> Authenticator {
        Authenticator::new(&AuthConfig {
            api_keys: vec!["k1".into()],
            jwt: Some(jwt_config()),
        })
        .unwrap()
    }

    fn now() -> u64 {
        jsonwebtoken::get_current_timestamp()
    }

    #[test]
    fn api_keys() {
        let a = auth();
        assert_eq!(
            a.check(AuthKind::ApiKey, &HeaderMap::new()),
            Err(AuthError::MissingApiKey)
        );
        assert_eq!(
            a.check(AuthKind::ApiKey, &headers("x-api-key", "nope")),
            Err(AuthError::InvalidApiKey)
        );
        assert_eq!(
            a.check(AuthKind::ApiKey, &headers("x-api-key", "k1")),
            Ok(Some(Identity::ApiKey("k1".into())))
        );
        assert_eq!(a.check(AuthKind::None, &HeaderMap::new()), Ok(None));
    }

    #[test]
    fn jwt_accepts_a_valid_token() {
        let t = token(
            serde_json::json!({"sub": "alice", "exp": now() + 60, "iss": "https://issuer.test", "aud": "microgate"}),
            "s3cret",
        );
        assert_eq!(
            auth().check(
                AuthKind::Jwt,
                &headers("authorization", &format!("Bearer {t}"))
            ),
            Ok(Some(Identity::Jwt {
                subject: Some("alice".into())
            }))
        );
    }

    #[test]
    fn jwt_rejects_bad_tokens() {
        let a = auth();
        let check = |claims: serde_json::Value, secret: &str| {
            a.check(
                AuthKind::Jwt,
                &headers(
                    "authorization",
                    &format!("Bearer {}", token(claims, secret)),
                ),
            )
        };
        let good = serde_json::json!({"exp": now() + 60, "iss": "https://issuer.test", "aud": "microgate"});
        assert!(check(good.clone(), "wrong").is_err(), "bad signature");
        let mut expired = good.clone();
        expired["exp"] = (now() - 120).into();
        assert!(check(expired, "s3cret").is_err(), "expired");
        let mut other_iss = good.clone();
        other_iss["iss"] = "https://evil.test".into();
        assert!(check(other_iss, "s3cret").is_err(), "issuer");
        let mut other_aud = good.clone();
        other_aud["aud"] = "someone-else".into();
        assert!(check(other_aud, "s3cret").is_err(), "audience");
        assert_eq!(
            a.check(AuthKind::Jwt, &HeaderMap::new()),
            Err(AuthError::MissingToken)
        );
        assert!(
            a.check(AuthKind::Jwt, &headers("authorization", "Bearer not.a.jwt"))
                .is_err()
        );
        assert!(
            a.check(
                AuthKind::Jwt,
                &headers("authorization", "Basic Zm9vOmJhcg==")
            )
            .is_err()
        );
    }
}
