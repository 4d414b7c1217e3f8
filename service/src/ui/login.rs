//! Signing in to the web UI of `kiln serve` with the OIDC issuer that
//! signs the API's tokens (Keycloak): the authorization code flow with
//! PKCE (RFC 7636, `S256`). `/login` sends the browser to the issuer,
//! `/auth/callback` exchanges the code for an access token, checks it like
//! any bearer token and keeps it in an `HttpOnly`, `SameSite=Lax` cookie;
//! `/logout` drops it. Pages that need a sign-in send the browser to
//! `/login` and back.
//!
//! A pending sign-in (its `state`, PKCE verifier and the page to return
//! to) travels in a short-lived `HttpOnly` cookie of its own, not in the
//! process: the callback may reach any replica of the service.

use crate::api::AppState;
use crate::auth::{Auth, TOKEN_COOKIE, cookie};
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use sha2::Digest;
use std::time::Duration;

/// How long a sign-in may take at the issuer.
const PENDING_FOR: Duration = Duration::from_secs(600);

/// The cookie of a sign-in in progress.
const LOGIN_COOKIE: &str = "kiln_login";

/// A sign-in in progress: what the callback needs to finish it.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
struct Pending {
    state: String,
    verifier: String,
    next: String,
    /// Seconds since the epoch when it started.
    started: u64,
}

fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Where the issuer sends browsers back, and how cookies are set.
pub struct Logins {
    /// `PUBLIC_URL/auth/callback`.
    redirect_uri: String,
    /// Cookies only over HTTPS when the public URL is HTTPS.
    secure: bool,
}

impl Logins {
    /// Sign-ins for a server that browsers reach at `public_url`.
    pub fn new(public_url: &url::Url) -> Self {
        let redirect_uri = public_url
            .join("auth/callback")
            .map_or_else(|_| format!("{public_url}auth/callback"), |u| u.to_string());
        Logins {
            redirect_uri,
            secure: public_url.scheme() == "https",
        }
    }

    /// A new sign-in: its cookie value, `state` and PKCE challenge.
    fn start(&self, next: String) -> (String, String, String) {
        let pending = Pending {
            state: random_token(),
            verifier: random_token(),
            next,
            started: now_seconds(),
        };
        let challenge = URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(pending.verifier.as_bytes()));
        let value = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&pending).unwrap_or_default());
        (value, pending.state, challenge)
    }

    /// The sign-in of the login cookie in `headers`, if it is the one the
    /// callback's `state` names and it is recent.
    fn finish(&self, headers: &axum::http::HeaderMap, state: &str) -> Option<Pending> {
        let value = cookie(headers, LOGIN_COOKIE)?;
        let bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
        let pending: Pending = serde_json::from_slice(&bytes).ok()?;
        let fresh = now_seconds().saturating_sub(pending.started) < PENDING_FOR.as_secs();
        (fresh && pending.state == state).then_some(pending)
    }

    fn cookie(&self, name: &str, value: &str, max_age: u64) -> String {
        format!(
            "{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{}",
            if self.secure { "; Secure" } else { "" }
        )
    }
}

/// 32 random bytes, URL-safe: a PKCE verifier or a `state`.
fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// Where to go after signing in: a path of this server, nothing else
/// (`//evil.example` and full URLs become `/`).
pub fn local_path(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.into(),
        _ => "/".into(),
    }
}

/// The `/login` link that brings a browser back to `path`.
pub fn login_link(path: &str) -> String {
    let mut url = url::Url::parse("http://ui/login").expect("a constant URL parses");
    url.query_pairs_mut().append_pair("next", path);
    format!("/login?{}", url.query().unwrap_or_default())
}

fn page(status: StatusCode, title: &str, message: &str) -> Response {
    (status, Html(super::pages::error_page(title, message))).into_response()
}

#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    #[serde(default)]
    next: Option<String>,
}

/// `GET /login?next=PATH`: to the issuer's sign-in page.
pub async fn login(State(app): State<AppState>, Query(q): Query<LoginQuery>) -> Response {
    let next = local_path(q.next.as_deref());
    let Auth::Oidc(verifier) = &app.auth else {
        return Redirect::to(&next).into_response();
    };
    let Some(endpoints) = verifier.login_endpoints() else {
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in unavailable",
            "the OIDC issuer's discovery document names no authorization and token endpoints: \
             sign in with a bearer token (kiln jobs --server, KILN_TOKEN) instead",
        );
    };
    let (pending, state, challenge) = app.logins.start(next);
    let Ok(mut url) = url::Url::parse(&endpoints.authorization) else {
        return page(
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in unavailable",
            &format!(
                "the issuer's authorization endpoint '{}' is not a URL",
                endpoints.authorization
            ),
        );
    };
    url.query_pairs_mut()
        .append_pair("response_type", "code")
        .append_pair("client_id", &verifier.settings().client_id)
        .append_pair("redirect_uri", &app.logins.redirect_uri)
        .append_pair("scope", "openid")
        .append_pair("state", &state)
        .append_pair("code_challenge", &challenge)
        .append_pair("code_challenge_method", "S256");
    (
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                app.logins
                    .cookie(LOGIN_COOKIE, &pending, PENDING_FOR.as_secs()),
            ),
            (header::LOCATION, url.to_string()),
        ],
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    state: Option<String>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_description: Option<String>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
    /// Keycloak's refresh token: a new access token without a new sign-in.
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    refresh_expires_in: Option<u64>,
}

/// The cookie that keeps the refresh token (HttpOnly, like the token).
const REFRESH_COOKIE: &str = "kiln_refresh";

/// Asks the token endpoint for tokens with `grant` (an authorization code
/// or a refresh token); the client's id and secret are added.
async fn tokens(
    verifier: &crate::auth::OidcVerifier,
    grant: &[(&str, &str)],
) -> Result<TokenResponse, String> {
    let endpoints = verifier
        .login_endpoints()
        .ok_or("the issuer names no token endpoint")?;
    let settings = verifier.settings();
    let mut form: Vec<(&str, &str)> = grant.to_vec();
    form.push(("client_id", settings.client_id.as_str()));
    if let Some(secret) = &settings.client_secret {
        form.push(("client_secret", secret.as_str()));
    }
    let response = verifier
        .http()
        .post(&endpoints.token)
        .form(&form)
        .send()
        .await
        .map_err(|e| format!("cannot reach the token endpoint: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("the token endpoint answered {status}"));
    }
    response
        .json::<TokenResponse>()
        .await
        .map_err(|e| format!("the token endpoint's answer has no access token: {e}"))
}

impl Logins {
    /// The cookies that keep `tokens` in the browser.
    fn token_cookies(&self, tokens: &TokenResponse) -> Vec<String> {
        let mut cookies = vec![self.cookie(
            TOKEN_COOKIE,
            &tokens.access_token,
            tokens.expires_in.unwrap_or(300),
        )];
        if let Some(refresh) = &tokens.refresh_token {
            cookies.push(self.cookie(
                REFRESH_COOKIE,
                refresh,
                tokens.refresh_expires_in.unwrap_or(1800),
            ));
        }
        cookies
    }
}

fn set_cookies(response: &mut Response, cookies: &[String]) {
    for cookie in cookies {
        if let Ok(value) = cookie.parse() {
            response.headers_mut().append(header::SET_COOKIE, value);
        }
    }
}

/// Middleware of the pages and the API: a browser whose access token
/// expired (or is gone) but that still holds a refresh token gets a new
/// access token before the handler sees the request, and keeps it in its
/// cookie; so a form posted after the token's few minutes is not lost. Without a
/// usable refresh token, the request goes on as it came (and a page load
/// is sent to sign in).
pub async fn refresh(
    State(app): State<AppState>,
    mut request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Auth::Oidc(verifier) = &app.auth else {
        return next.run(request).await;
    };
    let headers = request.headers();
    let refresh_token = match (
        headers.get(header::AUTHORIZATION),
        cookie(headers, TOKEN_COOKIE),
        cookie(headers, REFRESH_COOKIE),
    ) {
        (None, token, Some(refresh)) => {
            let valid = match token {
                Some(t) => verifier.verify(t).await.is_ok(),
                None => false,
            };
            (!valid).then(|| refresh.to_string())
        }
        _ => None,
    };
    let Some(refresh_token) = refresh_token else {
        return next.run(request).await;
    };
    let grant = [
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token.as_str()),
    ];
    let refreshed = match tokens(verifier, &grant).await {
        Ok(t) if verifier.verify(&t.access_token).await.is_ok() => Some(t),
        Ok(_) => None,
        Err(e) => {
            tracing::info!("refreshing a sign-in: {e}");
            None
        }
    };
    match refreshed {
        Some(t) => {
            // The new token takes the old cookie's place, so the request is
            // still a cookie-authenticated one (writes are checked for
            // their origin as before).
            let cookies: Vec<String> = request
                .headers()
                .get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .map(str::trim)
                .filter(|pair| !pair.starts_with(&format!("{TOKEN_COOKIE}=")))
                .map(str::to_string)
                .chain(std::iter::once(format!(
                    "{TOKEN_COOKIE}={}",
                    t.access_token
                )))
                .collect();
            if let Ok(value) = cookies.join("; ").parse() {
                request.headers_mut().insert(header::COOKIE, value);
            }
            let mut response = next.run(request).await;
            set_cookies(&mut response, &app.logins.token_cookies(&t));
            response
        }
        None => {
            let mut response = next.run(request).await;
            set_cookies(&mut response, &[app.logins.cookie(REFRESH_COOKIE, "", 0)]);
            response
        }
    }
}

/// `GET /auth/callback?code&state`: the code for a token, the token into
/// the cookie, and back to the page the sign-in started from.
pub async fn callback(
    State(app): State<AppState>,
    headers: axum::http::HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let Auth::Oidc(verifier) = &app.auth else {
        return Redirect::to("/").into_response();
    };
    if let Some(error) = &q.error {
        return page(
            StatusCode::UNAUTHORIZED,
            "Not signed in",
            &format!(
                "the issuer refused the sign-in: {error}{}",
                q.error_description
                    .as_deref()
                    .map(|d| format!(" ({d})"))
                    .unwrap_or_default()
            ),
        );
    }
    let (Some(code), Some(state)) = (&q.code, &q.state) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Not signed in",
            "the callback has no code or state: start again at /login",
        );
    };
    let Some(pending) = app.logins.finish(&headers, state) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Not signed in",
            "this sign-in was not started in this browser, was already used, or took longer than ten minutes: start again at /login",
        );
    };
    let settings = verifier.settings();
    let grant = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", app.logins.redirect_uri.as_str()),
        ("code_verifier", pending.verifier.as_str()),
    ];
    let tokens = match tokens(verifier, &grant).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!("sign-in: {e}");
            return page(StatusCode::BAD_GATEWAY, "Not signed in", &e);
        }
    };
    // The token must be one the API accepts (issuer, audience, signature).
    if let Err(e) = verifier.verify(&tokens.access_token).await {
        return page(
            StatusCode::UNAUTHORIZED,
            "Not signed in",
            &format!(
                "the issuer's token is not accepted: {}; check that the client {} puts the audience {} in its access tokens",
                e.detail, settings.client_id, settings.audience
            ),
        );
    }
    let mut response = Redirect::to(&pending.next).into_response();
    let mut cookies = app.logins.token_cookies(&tokens);
    // The sign-in is used up.
    cookies.push(app.logins.cookie(LOGIN_COOKIE, "", 0));
    set_cookies(&mut response, &cookies);
    *response.status_mut() = StatusCode::SEE_OTHER;
    response
}

/// `GET /logout`: drops the cookies.
pub async fn logout(State(app): State<AppState>) -> Response {
    let mut response = Redirect::to("/").into_response();
    set_cookies(
        &mut response,
        &[
            app.logins.cookie(TOKEN_COOKIE, "", 0),
            app.logins.cookie(REFRESH_COOKIE, "", 0),
        ],
    );
    *response.status_mut() = StatusCode::SEE_OTHER;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_followed_after_sign_in() {
        assert_eq!(local_path(Some("/jobs?x=1")), "/jobs?x=1");
        for bad in [
            "//evil.example/",
            "https://evil.example/",
            "/\\evil.example",
            "jobs",
        ] {
            assert_eq!(local_path(Some(bad)), "/", "{bad}");
        }
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn a_sign_in_finishes_only_with_its_own_cookie_and_state() {
        let logins = Logins::new(&url::Url::parse("https://kiln.example/").expect("url"));
        assert_eq!(logins.redirect_uri, "https://kiln.example/auth/callback");
        let (value, state, challenge) = logins.start("/jobs".into());
        assert_eq!(challenge.len(), 43, "base64url of a SHA-256");
        let mut headers = axum::http::HeaderMap::new();
        let with = |headers: &mut axum::http::HeaderMap, v: &str| {
            headers.insert(
                header::COOKIE,
                format!("other=1; {LOGIN_COOKIE}={v}")
                    .parse()
                    .expect("header"),
            );
        };
        with(&mut headers, &value);
        let pending = logins.finish(&headers, &state).expect("pending");
        assert_eq!(pending.next, "/jobs");
        // The PKCE challenge is the verifier's digest.
        assert_eq!(
            URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(pending.verifier.as_bytes())),
            challenge
        );
        // Another state, another browser's cookie, a stale or forged one.
        assert!(logins.finish(&headers, "forged").is_none());
        assert!(
            logins
                .finish(&axum::http::HeaderMap::new(), &state)
                .is_none()
        );
        let stale = Pending {
            started: now_seconds() - PENDING_FOR.as_secs() - 1,
            ..pending
        };
        with(
            &mut headers,
            &URL_SAFE_NO_PAD.encode(serde_json::to_vec(&stale).expect("json")),
        );
        assert!(logins.finish(&headers, &state).is_none());
        let cookie = logins.cookie(TOKEN_COOKIE, "t", 60);
        assert!(cookie.contains("HttpOnly; SameSite=Lax") && cookie.ends_with("; Secure"));
    }
}
