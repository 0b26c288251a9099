//! The OpenAPI 3.1 document, assembled by utoipa from the handlers' `#[utoipa::path]`
//! annotations and the request and response types' schemas, served at `/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::api;
use crate::error::{ErrorBody, ErrorDetail};

/// The document.
#[derive(OpenApi)]
#[openapi(
    info(title = "keyhold", description = "Customer-managed keys for multi-tenant platforms: HTTP API v1."),
    paths(
        api::create_tenant, api::list_tenants, api::get_tenant, api::delete_tenant, api::get_key_policy,
        api::get_cloudformation, api::attach_key, api::list_keys, api::validate_tenant, api::encrypt, api::decrypt,
        api::encrypt_batch, api::decrypt_batch, api::audit, api::audit_verify, api::audit_checkpoint, api::audit_public_key, api::create_service, api::list_services, api::get_service,
        api::delete_service, api::set_service_purposes, api::rotate_service, api::healthz, api::readyz,
        api::metrics
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&Bearer)
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        if let Some(components) = openapi.components.as_mut() {
            components.add_security_scheme(
                "bearer",
                SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
            );
        }
    }
}

/// `GET /openapi.json`.
pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
