//! The console at `/console/`: the screens a tenant's administrator uses (onboarding
//! wizard, key health, notices and webhooks, audit and usage, key change) and the
//! operators' view beside them, rendered on the server from the same lifecycle calls the
//! API makes, with every asset embedded in the binary.
//!
//! **Sign-in.** An admin mints a one-time link (`POST /v1/console/links`, or
//! `keyhold console-link`) for a tenant's administrator or for the admin; it is valid for
//! [`LINK_TTL_MS`]. Opening it shows whom it signs in and a sign-in form (so a link scanner
//! fetching the URL does not use it up), which the page's script submits at once in a
//! browser without a session; the form's POST redeems the link, once, across every instance
//! (the registry marks it used in the statement that reads it), and sets a session cookie:
//! `HttpOnly`, `SameSite=Strict`, `Secure` and `__Host-` prefixed under TLS, for
//! [`SESSION_TTL_MS`]. Only digests of links and sessions are stored.
//!
//! **Authorisation is the API's.** A session is the same [`Principal`] a token would be
//! (`Admin`, or `TenantAdmin(t)`), and every page calls the API's handler functions or
//! their checks (`manages`, `admin_only`) with it: a tenant admin reaches no other tenant,
//! whatever URL it types.
//!
//! **CSRF.** Every state-changing request is a form POST that must carry the session's
//! CSRF token (`_csrf`, compared in constant time) and, when the browser says where it
//! came from (`Sec-Fetch-Site`, `Origin`), come from this origin; the cookie is also
//! `SameSite=Strict`. Sign-in itself has no session yet: its POST must come from this
//! origin.
//!
//! **Errors** are the API's errors: JSON `{"error":{"code","message"}}` for a client that
//! does not ask for HTML, an HTML page with the same status, code and message for a
//! browser (`Accept: text/html`).
//!
//! - [`html`]: escaping, the page shell, security headers.
//! - [`tenant`]: a tenant's pages.
//! - [`operator`]: the operators' view.

pub mod html;
pub mod operator;
pub mod tenant;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use base64::Engine as _;
use keyhold_registry::ConsoleUser;

use crate::api::Shared;
use crate::api::extract::ApiQuery;
use crate::auth::Principal;
use crate::error::ApiError;
use crate::state::AppState;

/// How long a console link may be used (15 minutes).
pub const LINK_TTL_MS: u64 = 15 * 60 * 1000;
/// How long a console session lasts (one hour; sign in again after).
pub const SESSION_TTL_MS: u64 = 60 * 60 * 1000;
/// The largest form body accepted.
const MAX_FORM: usize = 64 << 10;

/// What the console needs from the server's configuration.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// Whether keyhold serves TLS: cookies are then `Secure` and `__Host-` prefixed.
    pub secure_cookies: bool,
    /// The health monitor's interval, to tell a suspended tenant when it resumes.
    pub probe_interval: Option<Duration>,
    /// The address clients reach keyhold at (`scheme://host[:port]`), when configured:
    /// links are built on it and forms' `Origin` must be it.
    pub public_url: Option<String>,
    /// The pages that read a trail (audit, usage, export) on this instance.
    pub trail_readers: Arc<TrailReaders>,
}

/// How many audit or usage pages read trails at once per instance.
pub const TRAIL_READERS: usize = 2;

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            secure_cookies: false,
            probe_interval: Some(keyhold_lifecycle::monitor::DEFAULT_INTERVAL),
            public_url: None,
            trail_readers: Arc::new(TrailReaders::new(TRAIL_READERS)),
        }
    }
}

/// The places of the pages that read a tenant's trail: at most a few at once on an
/// instance (they share the registry's connections with the API), and at most one per
/// tenant, so one tenant's pages never hold every place.
#[derive(Debug)]
pub struct TrailReaders {
    places: Arc<tokio::sync::Semaphore>,
    reading: Arc<std::sync::Mutex<std::collections::HashSet<keyhold_core::TenantId>>>,
}

/// A page's place among the trail readers, given back when dropped.
#[derive(Debug)]
pub struct TrailReading {
    _place: tokio::sync::OwnedSemaphorePermit,
    tenant: keyhold_core::TenantId,
    reading: Arc<std::sync::Mutex<std::collections::HashSet<keyhold_core::TenantId>>>,
}

impl Drop for TrailReading {
    fn drop(&mut self) {
        self.reading.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&self.tenant);
    }
}

impl TrailReaders {
    /// `places` readers at once.
    pub fn new(places: usize) -> Self {
        Self { places: Arc::new(tokio::sync::Semaphore::new(places)), reading: Arc::default() }
    }

    /// A place for a page of `tenant`, within `wait` (after the tenant's own page before
    /// it, then a free place); `None` when it does not come.
    pub async fn enter(&self, tenant: &keyhold_core::TenantId, wait: Duration) -> Option<TrailReading> {
        let deadline = tokio::time::Instant::now() + wait;
        while !self.reading.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(tenant.clone()) {
            if tokio::time::Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // From here the tenant is marked: it is unmarked by the reading, or right here.
        let place =
            tokio::time::timeout_at(deadline, self.places.clone().acquire_owned()).await.ok().and_then(Result::ok);
        match place {
            Some(place) => Some(TrailReading { _place: place, tenant: tenant.clone(), reading: self.reading.clone() }),
            None => {
                self.reading.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(tenant);
                None
            }
        }
    }
}

impl ConsoleConfig {
    fn cookie_name(&self) -> &'static str {
        if self.secure_cookies { "__Host-keyhold_console" } else { "keyhold_console" }
    }
}

/// The console's routes (under `/console`).
pub fn routes(state: Arc<AppState>) -> Router<Arc<AppState>> {
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(home))
        .route("/console/login", get(login_page).post(login))
        .route("/console/logout", post(logout))
        .route("/console/assets/{file}", get(asset))
        .route("/console/tenants", get(operator::tenants))
        .route("/console/events", get(operator::events))
        .route("/console/tenants/{id}/link", post(operator::tenant_link))
        .route("/console/t/{id}", get(tenant::to_health))
        .route("/console/t/{id}/", get(tenant::health))
        .route("/console/t/{id}/setup", get(tenant::setup))
        .route("/console/t/{id}/key-policy/{region}", get(tenant::key_policy_file))
        .route("/console/t/{id}/cloudformation/{kind}", get(tenant::template_file))
        .route("/console/t/{id}/keys/{region}", post(tenant::attach))
        .route("/console/t/{id}/validate", post(tenant::validate))
        .route("/console/t/{id}/role", post(tenant::set_role))
        .route("/console/t/{id}/configure", post(tenant::configure))
        .route("/console/t/{id}/keys", get(tenant::keys))
        .route("/console/t/{id}/keys/{region}/{key}/retire", post(tenant::retire))
        .route("/console/t/{id}/events", get(tenant::events))
        .route("/console/t/{id}/webhooks", get(tenant::webhooks).post(tenant::add_webhook))
        .route("/console/t/{id}/webhooks/{wid}", get(tenant::webhook))
        .route("/console/t/{id}/webhooks/{wid}/test", post(tenant::test_webhook))
        .route("/console/t/{id}/webhooks/{wid}/rotate", post(tenant::rotate_webhook))
        .route("/console/t/{id}/webhooks/{wid}/delete", post(tenant::delete_webhook))
        .route("/console/t/{id}/audit", get(tenant::audit))
        .route("/console/t/{id}/audit/export", get(tenant::audit_export))
        .route("/console/t/{id}/usage", get(tenant::usage))
        .route("/console/{*rest}", get(no_page).post(no_page))
        .layer(middleware::from_fn_with_state(state, console_edge))
}

/// Every console answer: the security headers, and errors as HTML for a browser.
async fn console_edge(State(state): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    let wants_html =
        req.headers().get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.contains("text/html"));
    let signed_in = session_cookie(req.headers(), &state.console).is_some();
    let asset = req.uri().path().starts_with("/console/assets/");
    let resp = next.run(req).await;
    let mut resp = if wants_html && resp.status().as_u16() >= 400 && is_json(resp.headers()) {
        let status = resp.status();
        let retry = resp.headers().get(header::RETRY_AFTER).cloned();
        let body = crate::api::read_body(resp.into_body(), 64 << 10, Duration::from_secs(5)).await.unwrap_or_default();
        let parsed = serde_json::from_slice::<serde_json::Value>(&body).unwrap_or_default();
        let field = |k: &str| parsed.pointer(&format!("/error/{k}")).and_then(|v| v.as_str()).map(str::to_owned);
        let code = field("code").unwrap_or_else(|| "internal".into());
        let message = field("message").unwrap_or_else(|| "keyhold failed; retry, or tell the operator".into());
        let mut page = html::error_page(status, &code, &message, signed_in);
        if let Some(r) = retry {
            page.headers_mut().insert(header::RETRY_AFTER, r);
        }
        page
    } else {
        resp
    };
    let cache = asset && resp.status().is_success();
    html::secure_headers(&mut resp, cache);
    resp
}

/// Any other path under `/console/`.
async fn no_page() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such console page; start at /console/")
}

fn is_json(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"))
}

/// The embedded assets: the style sheet and the script of the progressive enhancements.
async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "console.css" => (include_str!("assets/console.css"), "text/css; charset=utf-8"),
        "console.js" => (include_str!("assets/console.js"), "text/javascript; charset=utf-8"),
        _ => return ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such console asset").into_response(),
    };
    let mut resp = body.into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    resp
}

/// A signed-in console user: the principal its session stands for, and its CSRF token.
pub struct Session {
    /// The principal, as a token would give it.
    pub principal: Principal,
    /// The session's CSRF token.
    pub csrf: String,
    /// The digest the registry knows the session by.
    id: String,
}

impl Session {
    /// The navigation for a page of this session about `tenant` at `current`.
    pub fn nav<'a>(&'a self, tenant: Option<&'a str>, current: &'a str) -> html::Nav<'a> {
        let (user, admin) = match &self.principal {
            Principal::Admin => ("admin".to_owned(), true),
            Principal::TenantAdmin(t) => (format!("administrator of {t}"), false),
            Principal::Service { name, .. } => (format!("service {name}"), false),
        };
        html::Nav { user, admin, tenant, current, csrf: &self.csrf }
    }
}

fn not_signed_in() -> ApiError {
    ApiError::unauthenticated(
        "you are not signed in, or your session ended; open a new console link from your platform",
    )
}

fn session_cookie<'a>(headers: &'a HeaderMap, config: &ConsoleConfig) -> Option<&'a str> {
    let name = config.cookie_name();
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty() && v.len() <= 128)
        .map(|(_, v)| v)
}

impl FromRequestParts<Arc<AppState>> for Session {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let secret = session_cookie(&parts.headers, &state.console).ok_or_else(not_signed_in)?;
        let id = digest(secret);
        let session =
            state.lifecycle.registry().console_session(&id, state.now_ms()).await?.ok_or_else(not_signed_in)?;
        let principal = match session.user {
            ConsoleUser::Admin => Principal::Admin,
            ConsoleUser::TenantAdmin(t) => {
                crate::reqlog::tenant(&t);
                Principal::TenantAdmin(t)
            }
        };
        Ok(Session { principal, csrf: session.csrf, id })
    }
}

/// A state-changing form POST of a signed-in user, its CSRF token and origin checked.
pub struct Post {
    /// Who.
    pub session: Session,
    /// The form's fields, in order (`_csrf` included).
    pub form: Vec<(String, String)>,
}

impl Post {
    /// The value of field `name`, if given.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

impl FromRequest<Arc<AppState>> for Post {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let session = Session::from_request_parts(&mut parts, state).await?;
        same_origin(&parts.headers, &state.console)?;
        let form = read_form(&parts.headers, body, state).await?;
        let given = form.iter().find(|(k, _)| k == "_csrf").map(|(_, v)| v.as_bytes()).unwrap_or_default();
        if aws_lc_rs::constant_time::verify_slices_are_equal(given, session.csrf.as_bytes()).is_err() {
            return Err(csrf_refused());
        }
        Ok(Post { session, form })
    }
}

fn csrf_refused() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "csrf_failed",
        "this form did not come from a console page of your session; reload the page and submit it again",
    )
}

/// Refuses a request a browser says came from another site: by `Sec-Fetch-Site`, and by
/// `Origin` against the configured public URL (scheme, host and port), or without one
/// against the `Host` (or, behind a proxy, `X-Forwarded-Host`) the request came to. The
/// CSRF token stays the main guard.
fn same_origin(headers: &HeaderMap, config: &ConsoleConfig) -> Result<(), ApiError> {
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.to_str(), Ok("same-origin" | "none"))
    {
        return Err(csrf_refused());
    }
    let mut origins = headers.get_all(header::ORIGIN).iter();
    if let Some(origin) = origins.next() {
        if origins.next().is_some() {
            return Err(csrf_refused());
        }
        let origin = origin.to_str().unwrap_or_default();
        if let Some(public) = &config.public_url {
            return if origin.eq_ignore_ascii_case(public) { Ok(()) } else { Err(csrf_refused()) };
        }
        let origin_host = origin.split_once("://").map_or("", |(_, h)| h);
        let hosts = [header::HOST.as_str(), "x-forwarded-host"];
        let matches = hosts.iter().filter_map(|h| headers.get(*h)?.to_str().ok()).any(|h| {
            let h = h.split(',').next().unwrap_or_default().trim();
            !h.is_empty() && origin_host.eq_ignore_ascii_case(h)
        });
        if origin == "null" || origin_host.is_empty() || !matches {
            return Err(csrf_refused());
        }
    }
    Ok(())
}

async fn read_form(
    headers: &HeaderMap,
    body: axum::body::Body,
    state: &AppState,
) -> Result<Vec<(String, String)>, ApiError> {
    let form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if !form {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "console forms are sent as application/x-www-form-urlencoded",
        ));
    }
    let bytes = crate::api::read_body(body, MAX_FORM, state.limits.body_timeout).await?;
    serde_urlencoded::from_bytes(&bytes).map_err(|e| ApiError::invalid(format!("the form does not read: {e}")))
}

/// SHA-256 of a secret, hex: what the registry stores.
fn digest(secret: &str) -> String {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, secret.as_bytes());
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A new random secret (32 bytes, base64url).
fn secret() -> Result<String, ApiError> {
    let mut b = [0u8; 32];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| ApiError::internal())?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// Mints a one-time sign-in link for `user`: its path (`/console/login?t=...`) and expiry.
pub async fn mint_link(state: &AppState, user: &ConsoleUser) -> Result<(String, u64), ApiError> {
    let token = secret()?;
    let now = state.now_ms();
    let expires = now + LINK_TTL_MS;
    state.lifecycle.registry().create_console_link(&digest(&token), user, now, expires).await?;
    Ok((format!("/console/login?t={token}"), expires))
}

async fn home(session: Session) -> Response {
    match &session.principal {
        Principal::TenantAdmin(t) => Redirect::to(&format!("/console/t/{}/", html::url(t.as_str()))).into_response(),
        _ => Redirect::to("/console/tenants").into_response(),
    }
}

/// `?t=` of a sign-in link.
#[derive(Debug, serde::Deserialize)]
struct LinkQuery {
    t: Option<String>,
}

/// The page a link opens: whom it signs in, and a button that does (the link is used only
/// by the POST).
async fn login_page(
    State(state): Shared,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<LinkQuery>,
) -> Result<Response, ApiError> {
    let t = q.t.filter(|t| !t.is_empty() && t.len() <= 128).ok_or_else(|| {
        ApiError::invalid("this page needs the t of a console link; open the whole link your platform gave you")
    })?;
    let Some(user) = state.lifecycle.registry().console_link(&digest(&t), state.now_ms()).await? else {
        return Err(link_refused());
    };
    let who = match &user {
        ConsoleUser::Admin => "the platform's admin (every tenant)".to_owned(),
        ConsoleUser::TenantAdmin(t) => {
            state.lifecycle.live_tenant(t).await?;
            format!("the administrator of tenant {t}")
        }
    };
    // A browser without a session signs in at once (the script submits the form); one
    // signed in already is asked first, since this link would end that session.
    let (already, auto) = if session_cookie(&headers, &state.console).is_some() {
        ("<p>You are signed in already: signing in with this link ends that session.</p>", "")
    } else {
        ("", " data-autosubmit")
    };
    let body = format!(
        r#"<p>This one-time link signs you in to keyhold's console as <strong>{}</strong>. It works once, and only for a few minutes.</p>{already}<form method="post" action="/console/login"{auto}><input type="hidden" name="t" value="{}"><button type="submit">Sign in</button></form>"#,
        html::esc(&who),
        html::esc(&t)
    );
    Ok(html::page("Sign in", None, &body))
}

fn link_refused() -> ApiError {
    ApiError::unauthenticated(
        "this console link was already used, has expired or is not one; ask your platform for a new link",
    )
}

/// Redeems a link: a session cookie, then the console.
async fn login(State(state): Shared, req: Request) -> Result<Response, ApiError> {
    let (parts, body) = req.into_parts();
    same_origin(&parts.headers, &state.console)?;
    let form = read_form(&parts.headers, body, &state).await?;
    let t = form.iter().find(|(k, _)| k == "t").map(|(_, v)| v.as_str()).unwrap_or_default();
    if t.is_empty() || t.len() > 128 {
        return Err(ApiError::invalid("the sign-in form needs the t of a console link"));
    }
    let now = state.now_ms();
    let Some(user) = state.lifecycle.registry().redeem_console_link(&digest(t), now).await? else {
        crate::reqlog::auth_error("console link unknown, expired or already used");
        return Err(link_refused());
    };
    // A tenant deleted since the link was minted is gone for its administrator too.
    if let ConsoleUser::TenantAdmin(t) = &user {
        state.lifecycle.live_tenant(t).await?;
    }
    // Signing in ends the session this browser had.
    if let Some(old) = session_cookie(&parts.headers, &state.console) {
        state.lifecycle.registry().end_console_session(&digest(old)).await?;
    }
    let cookie = secret()?;
    let csrf = secret()?;
    let expires = now + SESSION_TTL_MS;
    state.lifecycle.registry().create_console_session(&digest(&cookie), &user, &csrf, now, expires).await?;
    tracing::info!(user = ?user, "console sign-in");
    let secure = if state.console.secure_cookies { "; Secure" } else { "" };
    let set = format!(
        "{}={cookie}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        state.console.cookie_name(),
        SESSION_TTL_MS / 1000
    );
    let mut resp = Redirect::to("/console/").into_response();
    resp.headers_mut().insert(header::SET_COOKIE, HeaderValue::try_from(set).map_err(|_| ApiError::internal())?);
    Ok(resp)
}

/// Ends the session.
async fn logout(State(state): Shared, post: Post) -> Result<Response, ApiError> {
    state.lifecycle.registry().end_console_session(&post.session.id).await?;
    let secure = if state.console.secure_cookies { "; Secure" } else { "" };
    let clear = format!("{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}", state.console.cookie_name());
    let body = r#"<p>You are signed out. Open a new console link to sign in again.</p>"#;
    let mut resp = html::page("Signed out", None, body);
    resp.headers_mut().insert(header::SET_COOKIE, HeaderValue::try_from(clear).map_err(|_| ApiError::internal())?);
    Ok(resp)
}
