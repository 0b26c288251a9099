//! Console sign-in links: the admin (or the platform's own UI, with an admin token) mints
//! a one-time link that signs a tenant's administrator, or the admin, in to `/console/`.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use keyhold_registry::ConsoleUser;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{ApiJson, Shared, admin_only, schema, tenant_id};
use crate::auth::Principal;
use crate::error::{ApiError, ErrorBody};

/// `POST /v1/console/links` body.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateLink {
    /// The tenant whose administrator the link signs in; absent: the admin (every tenant).
    /// `null` is refused, so a caller that lost a tenant id never mints an admin link.
    #[serde(default, deserialize_with = "some_string")]
    #[schema(schema_with = schema::tenant_id)]
    pub tenant: Option<String>,
}

/// A present `tenant` must be a string (not `null`).
fn some_string<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    String::deserialize(d).map(Some)
}

/// A one-time console link.
#[derive(Debug, Serialize, ToSchema)]
pub struct LinkOut {
    /// The whole link: on `--public-url` when configured, else on the request's `Host`
    /// (and `https` under TLS).
    pub url: String,
    /// The link's path (`/console/login?t=...`), to append to keyhold's public address.
    pub path: String,
    /// Whom it signs in: `admin`, or `tenant-admin`.
    pub scope: String,
    /// The tenant, for a tenant admin's link.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
    /// Until when it may be used (ms since the Unix epoch); it signs in once.
    pub expires_ms: u64,
}

/// Mints a one-time console sign-in link (valid 15 minutes, usable once) for a tenant's
/// administrator, or for the admin.
#[utoipa::path(post, path = "/v1/console/links", request_body = CreateLink,
    responses(
        (status = 201, body = LinkOut, description = "the link"),
        (status = 400, body = ErrorBody, description = "`invalid_request`: the body or the tenant id"),
        (status = 403, body = ErrorBody, description = "`forbidden`: not an admin token"),
        (status = 404, body = ErrorBody, description = "`tenant_not_found`"),
        (status = 410, body = ErrorBody, description = "`tenant_deleted`"),
        (status = 503, body = ErrorBody, description = "`registry_unavailable`: retry"),
    ),
    security(("bearer" = [])))]
pub async fn create_console_link(
    p: Principal,
    State(state): Shared,
    headers: HeaderMap,
    ApiJson(body): ApiJson<CreateLink>,
) -> Result<(StatusCode, Json<LinkOut>), ApiError> {
    admin_only(&p)?;
    let user = match &body.tenant {
        None => ConsoleUser::Admin,
        Some(t) => {
            let id = tenant_id(t)?;
            state.lifecycle.live_tenant(&id).await?;
            ConsoleUser::TenantAdmin(id)
        }
    };
    let (path, expires_ms) = crate::console::mint_link(&state, &user).await?;
    let url = match &state.console.public_url {
        Some(base) => format!("{base}{path}"),
        None => host_url(&headers, state.console.secure_cookies, &path),
    };
    Ok((
        StatusCode::CREATED,
        Json(LinkOut {
            url,
            path,
            scope: if body.tenant.is_some() { "tenant-admin" } else { "admin" }.to_owned(),
            tenant: body.tenant,
            expires_ms,
        }),
    ))
}

/// The link on the request's `Host` (when it is a plain host name or address).
fn host_url(headers: &HeaderMap, tls: bool, path: &str) -> String {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .filter(|h| h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-.:[]".contains(&b)))
        .unwrap_or("localhost");
    let scheme = if tls { "https" } else { "http" };
    format!("{scheme}://{host}{path}")
}
