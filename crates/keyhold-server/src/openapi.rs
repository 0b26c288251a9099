//! The OpenAPI 3.1 document, assembled by utoipa from the handlers' `#[utoipa::path]`
//! annotations and the request and response types' schemas, served at `/openapi.json`.
//!
//! The document is the truth about the API: each operation lists every status it can
//! answer. A handler's annotation lists its own (403, 404, 409, 410, ...); [`Common`]
//! adds those that come from the edge rather than the handler, the same way everywhere:
//!
//! - 401 `unauthenticated` on every secured operation (and the 503 `registry_unavailable`
//!   a service token's lookup can meet);
//! - 400 `invalid_request` on every operation with parameters or a body (a path segment
//!   that is not UTF-8, a query that does not parse, a body that is not the schema's);
//! - 408 `request_timeout`, 413 `payload_too_large`, 415 `unsupported_media_type` on every
//!   operation with a JSON body;
//! - 503 `overloaded`, with `Retry-After`, on every operation but `/healthz` and
//!   `/metrics`, which answer even under load;
//! - 431 `headers_too_large` on every operation (a request head over 64 KiB); a request
//!   hyper cannot parse at all gets keyhold's error body too (`conn.rs`).
//!
//! Request schemas carry what the server enforces ([`crate::api::schema`]); realms and
//! regions are enums of the catalog the server runs with, filled in by [`document`].
//! Links from a tenant (as created or read) to the calls on it give Schemathesis' stateful
//! phase, and readers, the chain create, read, attach, validate, audit, delete.

use axum::Json;
use axum::extract::State;
use keyhold_onboarding::RealmCatalog;
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::header::HeaderBuilder;
use utoipa::openapi::link::LinkBuilder;
use utoipa::openapi::path::{Operation, ParameterIn, PathItem};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{ContentBuilder, Ref, RefOr, Required, Response, ResponseBuilder};
use utoipa::{Modify, OpenApi};

use crate::api::{self, Shared, schema};
use crate::error::{ErrorBody, ErrorDetail};

/// The document, with the built-in realm catalog.
#[derive(OpenApi)]
#[openapi(
    info(title = "keyhold", description = "Customer-managed keys for multi-tenant platforms: HTTP API v1.\n\n\
        Every error is `{\"error\":{\"code\",\"message\"}}`, including a request for an unknown path (404 \
        `not_found`) or with a method its path does not take (405 `method_not_allowed`, with `Allow`)."),
    paths(
        api::create_tenant, api::list_tenants, api::get_tenant, api::delete_tenant, api::get_key_policy,
        api::get_cloudformation, api::attach_key, api::list_keys, api::validate_tenant, api::encrypt, api::decrypt,
        api::encrypt_batch, api::decrypt_batch, api::reencrypt, api::reencrypt_batch,
        api::encrypt_stream, api::decrypt_stream, api::reencrypt_stream, api::key_change,
        api::retire_key, api::rotate_data_keys, api::set_role, api::audit, api::tenant_events, api::events, api::create_tenant_webhook, api::list_tenant_webhooks, api::get_tenant_webhook, api::delete_tenant_webhook, api::rotate_tenant_webhook, api::test_tenant_webhook, api::tenant_webhook_deliveries, api::create_webhook, api::list_webhooks, api::get_webhook, api::delete_webhook, api::rotate_webhook, api::test_webhook, api::webhook_deliveries, api::audit_verify, api::audit_checkpoint, api::audit_public_key, api::create_service, api::list_services, api::get_service,
        api::delete_service, api::set_service_purposes, api::rotate_service, api::healthz, api::readyz,
        api::metrics, api::create_console_link, api::configure_tenant
    ),
    components(schemas(ErrorBody, ErrorDetail)),
    modifiers(&Bearer, &BuiltinCatalog, &Common, &Links)
)]
pub struct ApiDoc;

/// The document for a server running with `catalog`: its realms and their regions are
/// the `RealmId` and `Region` enums.
pub fn document(catalog: &RealmCatalog) -> utoipa::openapi::OpenApi {
    let mut doc = ApiDoc::openapi();
    set_catalog(&mut doc, catalog);
    doc
}

/// `GET /openapi.json`: the document for the catalog this server runs with.
pub async fn serve(State(state): Shared) -> Json<utoipa::openapi::OpenApi> {
    Json(document(state.lifecycle.catalog()))
}

/// The operations load shedding leaves alone: they answer even under load (and neither
/// answers with an error, so they have no 503 at all).
const NOT_SHED: [&str; 2] = ["/healthz", "/metrics"];

fn set_catalog(doc: &mut utoipa::openapi::OpenApi, catalog: &RealmCatalog) {
    let realms = catalog.realms();
    let ids = realms.iter().map(|r| r.id.as_str());
    let regions = realms.iter().flat_map(|r| r.regions.iter().map(|g| g.as_str()));
    let components = doc.components.get_or_insert_with(Default::default);
    components.schemas.insert(schema::REALM_COMPONENT.into(), schema::realm_component(ids).into());
    components.schemas.insert(schema::REGION_COMPONENT.into(), schema::region_component(regions).into());
}

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).bearer_format("JWT").build()),
        );
    }
}

/// `RealmId` and `Region` of the built-in catalog, until [`document`] sets the running one.
struct BuiltinCatalog;

impl Modify for BuiltinCatalog {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        set_catalog(openapi, &RealmCatalog::builtin());
    }
}

/// The statuses every operation of a kind can answer (see the module docs).
struct Common;

impl Modify for Common {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for (path, item) in openapi.paths.paths.iter_mut() {
            for op in operations_mut(item) {
                // OpenAPI requires it, and utoipa leaves it out for a parameter whose
                // schema is given by `schema_with`.
                for param in op.parameters.iter_mut().flatten() {
                    if param.parameter_in == ParameterIn::Path {
                        param.required = Required::True;
                    }
                }
                let secured = op.security.as_ref().is_some_and(|s| !s.is_empty());
                let body = op.request_body.is_some();
                let params = op.parameters.as_ref().is_some_and(|p| !p.is_empty());
                if secured {
                    add_error(
                        op,
                        401,
                        "`unauthenticated`: no token, or one that is malformed, expired or not keyhold's",
                    );
                    add_error(op, 503, "`registry_unavailable`: retry");
                }
                if body || params {
                    add_error(op, 400, "`invalid_request`");
                }
                if body {
                    add_error(op, 408, "`request_timeout`: the body did not arrive in time");
                    add_error(op, 413, &format!("`payload_too_large`: the body is over {} MiB", crate::MAX_BODY >> 20));
                    add_error(op, 415, "`unsupported_media_type`: the body must be sent as `application/json`");
                }
                add_error(op, 431, "`headers_too_large`: the request head (request line and headers) is over 64 KiB");
                if !NOT_SHED.contains(&path.as_str()) {
                    add_error(op, 503, "`overloaded`: too many requests in flight, retry after `Retry-After` seconds");
                    if let Some(RefOr::T(resp)) = op.responses.responses.get_mut("503") {
                        resp.headers.insert(
                            "Retry-After".into(),
                            HeaderBuilder::new()
                                .schema(ObjectBuilder::new().schema_type(Type::Integer).minimum(Some(0)))
                                .description(Some("with `overloaded`: seconds to wait before retrying"))
                                .build(),
                        );
                    }
                }
            }
        }
    }
}

fn operations_mut(item: &mut PathItem) -> impl Iterator<Item = &mut Operation> {
    [
        item.get.as_mut(),
        item.put.as_mut(),
        item.post.as_mut(),
        item.delete.as_mut(),
        item.options.as_mut(),
        item.head.as_mut(),
        item.patch.as_mut(),
        item.trace.as_mut(),
    ]
    .into_iter()
    .flatten()
}

/// Adds `codes` to the operation's `status` answer, creating it (an [`ErrorBody`]) if the
/// annotation did not list it.
fn add_error(op: &mut Operation, status: u16, codes: &str) {
    let key = status.to_string();
    match op.responses.responses.get_mut(&key) {
        Some(RefOr::T(resp)) => {
            let code = codes.split('`').nth(1).unwrap_or(codes);
            if !resp.description.contains(&format!("`{code}`")) {
                resp.description = if resp.description.is_empty() {
                    codes.to_owned()
                } else {
                    format!("{}; {codes}", resp.description)
                };
            }
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            op.responses.responses.insert(key, error_response(codes).into());
        }
    }
}

fn error_response(description: &str) -> Response {
    ResponseBuilder::new()
        .description(description)
        .content("application/json", ContentBuilder::new().schema(Some(Ref::from_schema_name("ErrorBody"))).build())
        .build()
}

/// Links from a tenant, as created or read, to the calls on it.
struct Links;

impl Modify for Links {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let targets = [
            ("GetTenant", "get_tenant"),
            ("ListKeys", "list_keys"),
            ("AttachKey", "attach_key"),
            ("ValidateTenant", "validate_tenant"),
            ("KeyPolicy", "get_key_policy"),
            ("CloudFormation", "get_cloudformation"),
            ("Audit", "audit"),
            ("AuditVerify", "audit_verify"),
            ("AuditCheckpoint", "audit_checkpoint"),
            ("DeleteTenant", "delete_tenant"),
        ];
        let sources = [("/v1/tenants", "201"), ("/v1/tenants/{id}", "200")];
        for (path, status) in sources {
            let Some(item) = openapi.paths.paths.get_mut(path) else { continue };
            let op = if status == "201" { item.post.as_mut() } else { item.get.as_mut() };
            let Some(RefOr::T(resp)) = op.and_then(|op| op.responses.responses.get_mut(status)) else { continue };
            for (name, operation_id) in targets {
                // utoipa 5 writes `Link::operation_id` as `operation_id`, not `operationId`:
                // the field is spelled here, in the extensions it writes flattened.
                let id = Extensions::from_iter([("operationId", operation_id)]);
                let mut link = LinkBuilder::new().extensions(Some(id)).parameter("id", "$response.body#/id");
                if operation_id == "attach_key" {
                    link = link.parameter("region", "$response.body#/regions/0");
                }
                resp.links.insert(name.into(), link.build().into());
            }
        }
    }
}
