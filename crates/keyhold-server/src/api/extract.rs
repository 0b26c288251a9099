//! Extractors whose rejections are keyhold's errors: a path or query string that does not
//! deserialize (`%FF` in a path, `?limit=true`, a missing `?kind=`) is a 400
//! `invalid_request` in `{"error":{"code","message"}}`, never axum's plain-text answer;
//! the typed path parameters the handlers take, with their documented constraints; and
//! the JSON answers for a method a route does not have (405) and a JSON body with another
//! content type (415).

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequestParts, Path, Query};
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use utoipa::IntoParams;

use super::schema;
use crate::error::ApiError;

/// Path parameters, deserialized; a rejection is `invalid_request`.
pub struct ApiPath<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<T>::from_request_parts(parts, state).await {
            Ok(Path(v)) => Ok(ApiPath(v)),
            Err(rejection) => Err(path_rejection(&rejection)),
        }
    }
}

/// A query string, deserialized; a rejection is `invalid_request`.
pub struct ApiQuery<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(rejection) => Err(query_rejection(&rejection)),
        }
    }
}

/// A path rejection as an API error: the client's fault (a segment that is not UTF-8 or
/// does not deserialize) is `invalid_request`; a route and type that do not fit each other
/// is keyhold's bug, a generic 500.
fn path_rejection(rejection: &PathRejection) -> ApiError {
    if rejection.status().is_server_error() { ApiError::internal() } else { ApiError::invalid(rejection.body_text()) }
}

/// A query rejection as an API error (always the client's: `invalid_request`).
fn query_rejection(rejection: &QueryRejection) -> ApiError {
    ApiError::invalid(rejection.body_text())
}

/// 415 `unsupported_media_type`: a JSON body sent with another content type.
pub fn unsupported_media_type() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "the body must be JSON sent with Content-Type: application/json",
    )
}

/// 405 `method_not_allowed`, the answer for a known path with a method it does not have
/// (axum adds the `Allow` header).
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take this method; the Allow header lists those it takes, see /openapi.json",
    )
}

/// `{id}`: a tenant.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TenantPath {
    /// The tenant id.
    #[param(schema_with = schema::tenant_id)]
    pub id: String,
}

/// `{id}` and `{region}`: one region of a tenant's realm.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TenantRegionPath {
    /// The tenant id.
    #[param(schema_with = schema::tenant_id)]
    pub id: String,
    /// One region of the tenant's realm (its `regions`).
    #[param(schema_with = schema::region)]
    pub region: String,
}

/// `{name}`: a service.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct ServicePath {
    /// The service's name.
    #[param(schema_with = schema::service_name)]
    pub name: String,
}

/// `{id}`, `{region}` and `{key}`: one key of a tenant's history.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
pub struct TenantKeyPath {
    /// The tenant id.
    #[param(schema_with = schema::tenant_id)]
    pub id: String,
    /// The key's region.
    #[param(schema_with = schema::region)]
    pub region: String,
    /// The key ARN or local key id, percent-encoded (`/` as `%2F`).
    #[param(schema_with = schema::key_ref)]
    pub key: String,
}
