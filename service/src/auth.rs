//! Authentication (OIDC bearer tokens) and roles.
//!
//! The issuer's discovery document and JWKS are fetched at start and
//! cached; a token signed with an unknown `kid` triggers one re-fetch (key
//! rotation), at most once per `jwks_refresh_interval`. A token is accepted
//! only with an algorithm on the allow-list (RS256, ES256 by default, so
//! `alg: none` and an HS256 token "signed" with the public key are refused),
//! a key of that algorithm's family, a valid signature, the configured
//! `iss` and `aud`, and `exp` / `nbf` in range. Roles come from a claim
//! path (Keycloak's `realm_access.roles` by default): `viewer` reads,
//! `user` also uploads and submits, `admin` sees and deletes everything.

use crate::problem::{ApiError, ApiResult};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, RwLock};

/// What a caller may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Viewer,
    User,
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::User => "user",
            Role::Admin => "admin",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "viewer" => Some(Role::Viewer),
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            _ => None,
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub roles: BTreeSet<Role>,
}

impl Principal {
    /// The caller of a server without authentication (loopback only).
    pub fn local() -> Self {
        Principal {
            subject: "local".into(),
            roles: [Role::Admin].into(),
        }
    }
    pub fn has(&self, role: Role) -> bool {
        self.roles.iter().any(|&r| r >= role)
    }
    pub fn is_admin(&self) -> bool {
        self.has(Role::Admin)
    }
    /// Fails with 403 unless the caller has `role`.
    pub fn require(&self, role: Role) -> ApiResult<()> {
        if self.has(role) {
            Ok(())
        } else {
            Err(
                ApiError::forbidden(format!("this needs the '{}' role", role.as_str()))
                    .fix("ask an administrator of the identity provider for the role"),
            )
        }
    }
}

/// OIDC settings (`kiln serve --auth oidc`).
#[derive(Debug, Clone)]
pub struct OidcSettings {
    pub issuer: String,
    pub audience: String,
    /// Dotted path of the roles claim.
    pub roles_claim: String,
    pub algorithms: Vec<Algorithm>,
    /// Least time between two JWKS re-fetches caused by unknown key ids.
    pub jwks_refresh_interval: Duration,
    /// Clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway_seconds: u64,
    /// The client the web UI signs in as (authorization code flow with
    /// PKCE); the audience by default.
    pub client_id: String,
    /// Its secret, for a confidential client (none for a public one).
    pub client_secret: Option<String>,
}

impl OidcSettings {
    pub fn new(issuer: &str, audience: &str) -> Self {
        OidcSettings {
            issuer: issuer.trim_end_matches('/').to_string(),
            audience: audience.to_string(),
            roles_claim: "realm_access.roles".into(),
            algorithms: vec![Algorithm::RS256, Algorithm::ES256],
            jwks_refresh_interval: Duration::from_secs(10),
            leeway_seconds: 30,
            client_id: audience.to_string(),
            client_secret: None,
        }
    }
}

/// The cookie that carries a browser's access token after the web UI's
/// sign-in: `HttpOnly`, `SameSite=Lax`, so pages' scripts cannot read it
/// and other sites' forms do not send it.
pub const TOKEN_COOKIE: &str = "kiln_token";

/// The value of cookie `name` in a request's `Cookie` headers.
pub fn cookie<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(n, _)| *n == name)
        .map(|(_, value)| value)
        .filter(|v| !v.is_empty())
}

/// The access token of the `kiln_token` cookie.
pub fn token_cookie(headers: &axum::http::HeaderMap) -> Option<&str> {
    cookie(headers, TOKEN_COOKIE)
}

/// How requests are authenticated.
#[derive(Clone)]
pub enum Auth {
    /// Everyone is the local admin (refused beyond loopback).
    None,
    Oidc(Arc<OidcVerifier>),
}

impl Auth {
    /// The caller of a request with this `Authorization` header value.
    pub async fn authenticate(&self, authorization: Option<&str>) -> ApiResult<Principal> {
        match self {
            Auth::None => Ok(Principal::local()),
            Auth::Oidc(verifier) => {
                let header =
                    authorization.ok_or_else(|| ApiError::unauthorized("no bearer token"))?;
                let token = header
                    .strip_prefix("Bearer ")
                    .or_else(|| header.strip_prefix("bearer "))
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .ok_or_else(|| {
                        ApiError::unauthorized("the Authorization header is not a bearer token")
                    })?;
                verifier.verify(token).await
            }
        }
    }
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
    /// Where browsers sign in (the web UI's login); optional in the spec.
    #[serde(default)]
    authorization_endpoint: Option<String>,
    #[serde(default)]
    token_endpoint: Option<String>,
}

/// The issuer's endpoints of the authorization code flow.
#[derive(Debug, Clone)]
pub struct LoginEndpoints {
    pub authorization: String,
    pub token: String,
}

struct Keys {
    set: JwkSet,
    last_refresh: Option<Instant>,
}

/// Checks tokens of one issuer.
pub struct OidcVerifier {
    settings: OidcSettings,
    http: reqwest::Client,
    jwks_uri: String,
    login: Option<LoginEndpoints>,
    keys: RwLock<Keys>,
    refreshing: Mutex<()>,
}

impl OidcVerifier {
    /// Fetches the issuer's discovery document and keys.
    pub async fn discover(settings: OidcSettings) -> Result<Self, String> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| format!("cannot create an HTTP client: {e}"))?;
        let url = format!("{}/.well-known/openid-configuration", settings.issuer);
        let discovery: Discovery = fetch_json(&http, &url).await?;
        if discovery.issuer.trim_end_matches('/') != settings.issuer {
            return Err(format!(
                "the discovery document at {url} names issuer '{}', not '{}'; \
                 fix: pass --oidc-issuer exactly as the issuer names itself",
                discovery.issuer, settings.issuer
            ));
        }
        let set: JwkSet = fetch_json(&http, &discovery.jwks_uri).await?;
        let login = match (discovery.authorization_endpoint, discovery.token_endpoint) {
            (Some(authorization), Some(token)) => Some(LoginEndpoints {
                authorization,
                token,
            }),
            _ => None,
        };
        Ok(OidcVerifier {
            settings,
            http,
            jwks_uri: discovery.jwks_uri,
            login,
            keys: RwLock::new(Keys {
                set,
                last_refresh: None,
            }),
            refreshing: Mutex::new(()),
        })
    }

    pub fn settings(&self) -> &OidcSettings {
        &self.settings
    }

    /// Where a browser signs in; `None` when the issuer names no
    /// authorization and token endpoints.
    pub fn login_endpoints(&self) -> Option<&LoginEndpoints> {
        self.login.as_ref()
    }

    /// The client that talks to the issuer.
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    async fn key(&self, kid: &str) -> Option<Jwk> {
        if let Some(k) = self.keys.read().await.set.find(kid) {
            return Some(k.clone());
        }
        // One re-fetch at a time, and not more often than the interval.
        let _one = self.refreshing.lock().await;
        {
            let keys = self.keys.read().await;
            if let Some(k) = keys.set.find(kid) {
                return Some(k.clone());
            }
            if keys
                .last_refresh
                .is_some_and(|t| t.elapsed() < self.settings.jwks_refresh_interval)
            {
                return None;
            }
        }
        let fetched: Result<JwkSet, String> = fetch_json(&self.http, &self.jwks_uri).await;
        let mut keys = self.keys.write().await;
        keys.last_refresh = Some(Instant::now());
        match fetched {
            Ok(set) => keys.set = set,
            Err(e) => tracing::warn!("re-fetching the JWKS: {e}"),
        }
        keys.set.find(kid).cloned()
    }

    /// The caller a token proves, or 401 with the reason class (never the
    /// token's content).
    pub async fn verify(&self, token: &str) -> ApiResult<Principal> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| {
            ApiError::unauthorized("the token is malformed or its algorithm is not supported")
        })?;
        if !self.settings.algorithms.contains(&header.alg) {
            return Err(ApiError::unauthorized(format!(
                "tokens signed with {:?} are not accepted",
                header.alg
            )));
        }
        let kid = header
            .kid
            .as_deref()
            .ok_or_else(|| ApiError::unauthorized("the token names no signing key (kid)"))?;
        let jwk = self
            .key(kid)
            .await
            .ok_or_else(|| ApiError::unauthorized("the token's signing key is unknown"))?;
        if let Some(alg) = jwk.common.key_algorithm
            && alg.to_string() != format!("{:?}", header.alg)
        {
            return Err(ApiError::unauthorized(
                "the token's algorithm does not match its signing key",
            ));
        }
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|_| ApiError::unauthorized("the token's signing key is unusable"))?;
        if key.family() != header.alg.family() {
            return Err(ApiError::unauthorized(
                "the token's algorithm does not match its signing key",
            ));
        }
        let mut validation = Validation::new(header.alg);
        validation.set_issuer(&[&self.settings.issuer]);
        validation.set_audience(&[&self.settings.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = self.settings.leeway_seconds;
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &key, &validation)
            .map_err(|e| ApiError::unauthorized(reason(e.kind())))?;
        let claims = data.claims;
        let subject = claims
            .get("sub")
            .and_then(|s| s.as_str())
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::unauthorized("the token has no subject"))?
            .to_string();
        let mut node = &claims;
        for part in self.settings.roles_claim.split('.') {
            node = node.get(part).unwrap_or(&serde_json::Value::Null);
        }
        let roles = node
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.as_str().and_then(Role::parse))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Principal { subject, roles })
    }
}

fn reason(kind: &jsonwebtoken::errors::ErrorKind) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::ExpiredSignature => "the token has expired",
        K::ImmatureSignature => "the token is not valid yet",
        K::InvalidIssuer => "the token is from another issuer",
        K::InvalidAudience => "the token is for another audience",
        K::InvalidSignature => "the token's signature is invalid",
        K::MissingRequiredClaim(_) => "the token lacks a required claim (exp, iss, aud, sub)",
        K::InvalidAlgorithm | K::MissingAlgorithm => "the token's algorithm is not accepted",
        _ => "the token is invalid",
    }
}

async fn fetch_json<T: serde::de::DeserializeOwned>(
    http: &reqwest::Client,
    url: &str,
) -> Result<T, String> {
    let response = http
        .get(url)
        .send()
        .await
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("{url} answered {}", response.status()));
    }
    response
        .json()
        .await
        .map_err(|e| format!("{url} did not return the expected JSON: {e}"))
}
