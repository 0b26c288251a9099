//! The constraints the server enforces on what it is sent, written as JSON Schema for the
//! OpenAPI document: one function per kind of value, used by the request types' and
//! parameters' `schema_with`. Each pattern is the parser's rule (`keyhold_core`'s
//! `TenantId`, `Purpose`, `Region`, `KeyArn`, base64 as the handlers decode it) and is
//! tested against that parser below, so the document cannot drift from the code.
//!
//! Patterns are written in the subset ECMA-262, Python and Rust regexes read alike (no
//! `\d`, `\s`, `\w`, no lookaround, one closing `$`); what a regex cannot say without
//! lookaround is said with JSON Schema's `not`.
//!
//! Realms and regions are `$ref`s to the `RealmId` and `Region` components, enums of the
//! realm catalog the server runs with: an operator may replace the built-in catalog, so
//! the document served at `/openapi.json` fills them from the running catalog
//! ([`crate::openapi::document`]).

use serde_json::{Value, json};
use utoipa::openapi::extensions::Extensions;
use utoipa::openapi::schema::{
    AdditionalProperties, AnyOfBuilder, Array, ArrayBuilder, Object, ObjectBuilder, OneOfBuilder, Schema, Type,
};
use utoipa::openapi::{Ref, RefOr};

use super::crypto::MAX_BATCH;

/// `keyhold_core::TenantId`: 1 to 128 ASCII letters, digits and `-_.:`, starting with a
/// letter or digit.
pub const TENANT_ID_PATTERN: &str = "^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$";
/// `keyhold_core::Purpose`: 1 to 64 lowercase ASCII letters, digits and `-_.`, starting
/// with a letter or digit.
pub const PURPOSE_PATTERN: &str = "^[a-z0-9][a-z0-9._-]{0,63}$";
/// `keyhold_core::Region`: 1 to 32 lowercase ASCII letters, digits and `-`, starting with
/// a letter.
pub const REGION_PATTERN: &str = "^[a-z][a-z0-9-]{0,31}$";
/// Standard base64 with its padding, as the handlers decode it (unused trailing bits must
/// be zero); the empty string is empty data.
pub const BASE64_PATTERN: &str =
    "^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=|[A-Za-z0-9+/][AQgw]==)?$";
/// An AWS KMS key ARN (`keyhold_core::KeyArn` of a key, not an alias).
pub const KEY_ARN_PATTERN: &str = "^arn:aws:kms:[a-z][a-z0-9-]{0,31}:[0-9]{12}:key/(?:mrk-[0-9a-fA-F]{32}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$";
/// A key reference as `keyhold_core::KeyRef` parses it: 1 to 2048 printable ASCII
/// characters without whitespace.
pub const KEY_REF_PATTERN: &str = "^[!-~]{1,2048}$";
/// An IAM role ARN, as `keyhold_lifecycle::check_role_arn` accepts it.
pub const ROLE_ARN_PATTERN: &str = "^arn:[^:]+:iam::[0-9]{12}:role/[!-~]+$";
/// The audit trail's page size: at most this many events (and the default).
pub const AUDIT_PAGE: u32 = 1000;

/// The default page of events (at most [`AUDIT_PAGE`]).
pub const EVENTS_PAGE: u32 = 100;

/// The `RealmId` component's name.
pub const REALM_COMPONENT: &str = "RealmId";
/// The `Region` component's name.
pub const REGION_COMPONENT: &str = "Region";

/// A tenant id.
pub fn tenant_id() -> Object {
    string()
        .min_length(Some(1))
        .max_length(Some(128))
        .pattern(Some(TENANT_ID_PATTERN))
        .description(Some("Tenant id: 1 to 128 ASCII letters, digits and `-_.:`, starting with a letter or digit."))
        .examples(["acme"])
        .build()
}

/// A purpose.
pub fn purpose() -> Object {
    string()
        .min_length(Some(1))
        .max_length(Some(64))
        .pattern(Some(PURPOSE_PATTERN))
        .description(Some(
            "The data's purpose (must be allowed to the calling service): 1 to 64 lowercase ASCII letters, \
             digits and `-_.`, starting with a letter or digit.",
        ))
        .examples(["billing"])
        .build()
}

/// A region of the catalog (the `Region` component).
pub fn region() -> Ref {
    Ref::from_schema_name(REGION_COMPONENT)
}

/// A realm of the catalog (the `RealmId` component).
pub fn realm() -> Ref {
    Ref::from_schema_name(REALM_COMPONENT)
}

/// The `RealmId` component: the catalog's realm ids.
pub fn realm_component<'a>(ids: impl IntoIterator<Item = &'a str>) -> Object {
    string()
        .enum_values(Some(ids))
        .description(Some("A realm of the catalog this server runs with (`--realms-file` replaces the built-in one)."))
        .build()
}

/// The `Region` component: every region of the catalog's realms.
pub fn region_component<'a>(regions: impl IntoIterator<Item = &'a str>) -> Object {
    let mut all: Vec<&str> = regions.into_iter().collect();
    all.sort_unstable();
    all.dedup();
    string()
        .enum_values(Some(all))
        .pattern(Some(REGION_PATTERN))
        .description(Some(
            "A region of the realm catalog this server runs with; a tenant's calls take only the regions of its \
             own realm (its `regions`), any other is `invalid_request`.",
        ))
        .build()
}

/// Base64 data: `what` says what it holds.
fn base64(what: &'static str) -> ObjectBuilder {
    string().pattern(Some(BASE64_PATTERN)).content_encoding("base64").description(Some(what))
}

/// A plaintext to encrypt.
pub fn plaintext() -> Object {
    base64("The plaintext, standard base64 with padding.").examples(["aGVsbG8="]).build()
}

/// A ciphertext to decrypt.
pub fn ciphertext() -> Object {
    base64("An AWS Encryption SDK message, standard base64 with padding.").build()
}

/// Caller encryption context: string values under keys other than the reserved ones.
pub fn context() -> Object {
    let key = ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .extensions(Some(not(json!({"anyOf": [
            {"enum": [keyhold_core::RESERVED_TENANT_KEY, keyhold_core::RESERVED_PURPOSE_KEY]},
            {"pattern": "^aws-crypto-"},
        ]}))))
        .build();
    ObjectBuilder::new()
        .schema_type(Type::Object)
        .property_names(Some(key))
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(Schema::Object(string().build())))))
        .description(Some(format!(
            "Extra encryption context: string values under non-empty keys other than `{}`, `{}` and `aws-crypto-*`. \
             Use low-cardinality values: each distinct context gets its own data key. With the reserved pairs \
             keyhold adds, the serialized context is at most {} bytes (`invalid_request` otherwise).",
            keyhold_core::RESERVED_TENANT_KEY,
            keyhold_core::RESERVED_PURPOSE_KEY,
            keyhold_core::MAX_CONTEXT_BYTES
        )))
        .default(Some(json!({})))
        .build()
}

/// A key to attach: an AWS KMS key ARN, or a key id of another provider (the local one's
/// `lk-...`); validation reports what is wrong with a key id, while a malformed ARN is
/// refused at once.
pub fn key_arn() -> RefOr<Schema> {
    let arn = string()
        .max_length(Some(keyhold_lifecycle::MAX_KEY_REF))
        .pattern(Some(KEY_ARN_PATTERN))
        .description(Some("An AWS KMS key ARN (not an alias ARN), in the region of the path."))
        .build();
    let other = ObjectBuilder::new()
        .schema_type(Type::String)
        .max_length(Some(keyhold_lifecycle::MAX_KEY_REF))
        .extensions(Some(not(json!({"pattern": "^arn:"}))))
        .description(Some("A key id of another provider, such as the local provider's `lk-...`."))
        .build();
    let any = AnyOfBuilder::new()
        .item(arn)
        .item(other)
        .description(Some("The key: an AWS KMS key ARN in the path's region, or a local key id (`lk-...`)."))
        .build();
    RefOr::T(Schema::AnyOf(any))
}

/// A key of a tenant's history, as `keyhold_core::KeyRef` parses it.
pub fn key_ref() -> Object {
    string()
        .pattern(Some(KEY_REF_PATTERN))
        .description(Some("A key of the tenant's history: its key ARN or local key id."))
        .build()
}

/// A BYOK tenant's role ARN (`keyhold_lifecycle::check_role_arn`).
pub fn role_arn() -> Object {
    string()
        .max_length(Some(keyhold_lifecycle::MAX_ROLE_ARN))
        .pattern(Some(ROLE_ARN_PATTERN))
        .description(Some(
            "The role keyhold assumes (`arn:aws:iam::<account>:role/<name>`, from the byok-role template), with \
             ExternalId `keyhold-<tenant id>`.",
        ))
        .build()
}

/// `?after=`: a sequence number.
pub fn audit_after() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Int64)))
        .minimum(Some(0))
        .maximum(Some(i64::MAX))
        .description(Some("Events after this sequence number (default 0: from the start)."))
        .build()
}

/// `after` of the event feeds.
pub fn events_after() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Int64)))
        .minimum(Some(0))
        .maximum(Some(i64::MAX))
        .description(Some("Events after this id (default 0: from the start)."))
        .build()
}

/// `limit` of the event feeds.
pub fn events_limit() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Int32)))
        .minimum(Some(1))
        .maximum(Some(AUDIT_PAGE))
        .description(Some(format!("At most this many events, 1 to {AUDIT_PAGE} (default {EVENTS_PAGE}).")))
        .build()
}

/// `type` of the event feeds: catalogue types, comma-separated.
pub fn event_types() -> Object {
    let one = keyhold_lifecycle::events::CATALOGUE.iter().map(|(t, _)| regex_escape(t)).collect::<Vec<_>>().join("|");
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some(format!("^({one})(,({one}))*$")))
        .description(Some("Only events of these types, comma-separated."))
        .build()
}

/// A webhook endpoint's URL.
pub fn webhook_url() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(8))
        .max_length(Some(2048))
        .pattern(Some("^https?://[^@/?#]+([/?#].*)?$"))
        .description(Some("An absolute https:// URL whose host is public (not loopback, private or link-local)."))
        .build()
}

/// A webhook endpoint's event types.
pub fn webhook_events() -> Array {
    let one = keyhold_lifecycle::events::CATALOGUE.iter().map(|(t, _)| regex_escape(t)).collect::<Vec<_>>().join("|");
    ArrayBuilder::new()
        .items(ObjectBuilder::new().schema_type(Type::String).pattern(Some(format!("^({one})$"))))
        .min_items(Some(1))
        .description(Some("The event types it receives; every type when absent."))
        .build()
}

/// A webhook endpoint's id.
pub fn webhook_id() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .pattern(Some("^wh_[0-9a-f]{32}$"))
        .description(Some("`wh_` and 32 hex digits."))
        .build()
}

fn regex_escape(s: &str) -> String {
    s.replace('.', "\\.")
}

/// `?limit=`: a page size.
pub fn audit_limit() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(utoipa::openapi::KnownFormat::Int32)))
        .minimum(Some(1))
        .maximum(Some(AUDIT_PAGE))
        .description(Some(format!("At most this many events, 1 to {AUDIT_PAGE} (default {AUDIT_PAGE}).")))
        .build()
}

/// `POST /v1/tenants`: a `byok` tenant names its role; the others name none.
pub fn create_tenant() -> RefOr<Schema> {
    tenant_setup(true, "A tenant to create (state `pending` until its keys validate).")
}

/// `PUT /v1/tenants/{id}/setup`: a pending tenant's realm and mode.
pub fn configure_tenant() -> RefOr<Schema> {
    tenant_setup(false, "A pending tenant's realm and mode (and a byok tenant's role), before any key is attached.")
}

/// A tenant's realm, mode and role (`with_id`: and its id), one of the two shapes.
fn tenant_setup(with_id: bool, description: &str) -> RefOr<Schema> {
    let common = |modes: &[&str]| {
        let b = ObjectBuilder::new();
        let b = if with_id { b.property("id", tenant_id()).required("id") } else { b };
        b.property("realm", realm())
            .required("realm")
            .property(
                "mode",
                string().enum_values(Some(modes.iter().copied())).description(Some(
                    "`cmk` (the key policy grants the platform), `byok` (a role in the tenant's account) or `local` \
                     (keys of the embedded local provider).",
                )),
            )
            .required("mode")
            .additional_properties(Some(AdditionalProperties::FreeForm(false)))
    };
    let without_role = common(&["cmk", "local"])
        .property(
            "role_arn",
            ObjectBuilder::new().schema_type(Type::Null).description(Some("Only a `byok` tenant names a role.")),
        )
        .title(Some("cmk or local"));
    let with_role = common(&["byok"]).property("role_arn", role_arn()).required("role_arn").title(Some("byok"));
    let one = OneOfBuilder::new().item(without_role).item(with_role).description(Some(description)).build();
    RefOr::T(Schema::OneOf(one))
}

/// `POST /v1/encrypt/batch`: up to [`MAX_BATCH`] items shaped as `EncryptItem`.
pub fn encrypt_batch() -> RefOr<Schema> {
    let context = ObjectBuilder::new()
        .schema_type(Type::Object)
        .additional_properties(Some(AdditionalProperties::RefOr(RefOr::T(Schema::Object(string().build())))))
        .default(Some(json!({})));
    let item = ObjectBuilder::new()
        .property("tenant", string())
        .required("tenant")
        .property("purpose", string())
        .required("purpose")
        .property("plaintext", string())
        .required("plaintext")
        .property("context", context)
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .description(Some(
            "An `EncryptItem`, checked on its own: a value `EncryptItem` does not allow is this item's \
             `invalid_request` result, and the other items are served.",
        ));
    batch(item)
}

/// `POST /v1/decrypt/batch`: up to [`MAX_BATCH`] items shaped as `DecryptItem`.
pub fn decrypt_batch() -> RefOr<Schema> {
    let item = ObjectBuilder::new()
        .property("tenant", string())
        .required("tenant")
        .property("ciphertext", string())
        .required("ciphertext")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .description(Some(
            "A `DecryptItem`, checked on its own: a value `DecryptItem` does not allow is this item's \
             `invalid_request` result, and the other items are served.",
        ));
    batch(item)
}

fn batch(item: ObjectBuilder) -> RefOr<Schema> {
    ObjectBuilder::new()
        .property(
            "items",
            ArrayBuilder::new()
                .items(item)
                .max_items(Some(MAX_BATCH))
                .description(Some(format!("Up to {MAX_BATCH} items; one result each, in order."))),
        )
        .required("items")
        .additional_properties(Some(AdditionalProperties::FreeForm(false)))
        .into()
}

/// A service name: 1 to 64 ASCII letters, digits, `-` and `_` (not `keyhold-admin`).
pub const SERVICE_NAME_PATTERN: &str = "^[A-Za-z0-9_-]{1,64}$";

/// An Ed25519 public key: 32 bytes, standard base64 with its padding.
pub const PUBLIC_KEY_PATTERN: &str = "^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$";

/// The most purposes a service may list.
pub const MAX_PURPOSES: usize = 100;

/// A service name.
pub fn service_name() -> Object {
    let mut o = string()
        .min_length(Some(1))
        .max_length(Some(64))
        .pattern(Some(SERVICE_NAME_PATTERN))
        .description(Some("Service name (its tokens' `iss`): 1 to 64 ASCII letters, digits, `-` and `_`."))
        .examples(["billing-api"])
        .build();
    o.extensions = Some(not(json!({"const": "keyhold-admin"})));
    o
}

/// What a service may use: purposes, or `["*"]` for every purpose.
pub fn service_purposes() -> RefOr<Schema> {
    let list =
        ArrayBuilder::new().items(purpose()).min_items(Some(1)).max_items(Some(MAX_PURPOSES)).title(Some("purposes"));
    let all = ArrayBuilder::new()
        .items(string().enum_values(Some(["*"])))
        .min_items(Some(1))
        .max_items(Some(1))
        .title(Some("every purpose"));
    let one = OneOfBuilder::new()
        .item(list)
        .item(all)
        .description(Some("The purposes the service may encrypt and decrypt for, or `[\"*\"]` for every purpose."))
        .build();
    RefOr::T(Schema::OneOf(one))
}

/// An Ed25519 public key, base64 (or null: absent).
pub fn public_key() -> Object {
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([Type::String, Type::Null]))
        .pattern(Some(PUBLIC_KEY_PATTERN))
        .description(Some("An Ed25519 public key: 32 bytes, standard base64; without it keyhold generates the pair."))
        .build()
}

/// A rotation's overlap in seconds: a whole number from 0 to 30 days (`524.0` counts as
/// whole, as JSON Schema says), or null for the default.
pub fn overlap_s() -> Object {
    ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::SchemaType::from_iter([Type::Integer, Type::Null]))
        .minimum(Some(0))
        .maximum(Some(crate::services::MAX_OVERLAP_S as f64))
        .description(Some(
            "Seconds the previous keys stay accepted (default 86400; 0 ends them at once, for a leaked key).",
        ))
        .build()
}

fn string() -> ObjectBuilder {
    ObjectBuilder::new().schema_type(Type::String)
}

/// JSON Schema's `not`, which utoipa's model lacks: its extensions are written flattened
/// into the schema object, which is where `not` is read.
fn not(schema: Value) -> Extensions {
    Extensions::from_iter([("not", schema)])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests")]

    use base64::Engine as _;
    use keyhold_core::{KeyArn, Purpose, Region, TenantId};

    use super::*;

    fn matches(pattern: &str, s: &str) -> bool {
        regex::Regex::new(pattern).unwrap().is_match(s)
    }

    /// Service names and public keys: the pattern (with `not keyhold-admin`) accepts what
    /// the service layer accepts.
    #[test]
    fn service_patterns_agree_with_the_service_layer() {
        let long = |n: usize| "a".repeat(n);
        let names = ["billing", "billing-api_2", "A", "-x", "", "a b", "a.b", "keyhold-admin", "é"];
        for s in names.iter().map(|s| (*s).to_owned()).chain([long(64), long(65)]) {
            let by_schema = matches(SERVICE_NAME_PATTERN, &s) && s != "keyhold-admin";
            assert_eq!(by_schema, crate::services::check_name(&s).is_ok(), "service name {s:?}");
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        for len in [31usize, 32, 33] {
            for fill in [0u8, 0x7f, 0xff, 0x3e] {
                let s = b64.encode(vec![fill; len]);
                let accepted = crate::services::key_for(b64.decode(&s).ok().as_deref()).is_ok();
                assert_eq!(matches(PUBLIC_KEY_PATTERN, &s), accepted, "public key {s:?}");
            }
        }
        for bad in ["", "AAAA", "not base64 at all but long enough to be forty four.", "A".repeat(43).as_str()] {
            assert!(!matches(PUBLIC_KEY_PATTERN, bad), "{bad:?}");
        }
        for (list, ok) in [(vec!["*"], true), (vec!["billing", "hr"], true), (vec![], false), (vec!["*", "hr"], false)]
        {
            let list: Vec<String> = list.into_iter().map(str::to_owned).collect();
            assert_eq!(crate::services::purposes_from(&list).is_ok(), ok, "{list:?}");
        }
    }

    /// Each pattern accepts exactly what its parser accepts, on a table of edge cases.
    #[test]
    fn patterns_agree_with_the_parsers() {
        let long = |n: usize| "a".repeat(n);
        let ids = ["acme", "Org:42", "a", "0", "a-b_c.d:e", "-x", "_x", ".x", ":x", "", "a b", "a/b", "é", "a\n", "a%"];
        for s in ids.iter().map(|s| (*s).to_owned()).chain([long(128), long(129)]) {
            assert_eq!(matches(TENANT_ID_PATTERN, &s), TenantId::parse(&s).is_ok(), "tenant id {s:?}");
        }
        let purposes = ["billing", "billing.v2", "0a", "a-_.", "Billing", "-a", "", "a b", "a:b", "ü"];
        for s in purposes.iter().map(|s| (*s).to_owned()).chain([long(64), long(65)]) {
            assert_eq!(matches(PURPOSE_PATTERN, &s), Purpose::parse(&s).is_ok(), "purpose {s:?}");
        }
        let regions = ["eu-central-1", "eu", "a1", "1eu", "-eu", "EU", "eu_1", "", "eu-"];
        for s in regions.iter().map(|s| (*s).to_owned()).chain([long(32), long(33)]) {
            assert_eq!(matches(REGION_PATTERN, &s), Region::parse(&s).is_ok(), "region {s:?}");
        }
        let arns = [
            "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:eu-west-1:111122223333:key/mrk-1234abcd12ab34cd56ef1234567890ab",
            "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890a",
            "arn:aws:kms:eu-west-1:11112222333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws-cn:kms:cn-north-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
            "arn:aws:kms:eu-west-1:111122223333:alias/x",
            "arn:aws:iam::111122223333:role/x",
            "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab ",
        ];
        for s in arns {
            let is_key = KeyArn::parse(s).is_ok_and(|a| matches!(a.resource(), keyhold_core::KeyResource::Key(_)));
            assert_eq!(matches(KEY_ARN_PATTERN, s), is_key, "key ARN {s:?}");
        }
        let roles = [
            "arn:aws:iam::111122223333:role/keyhold-access",
            "arn:aws-cn:iam::111122223333:role/path/name",
            "arn:aws:iam:eu-west-1:111122223333:role/x",
            "arn:aws:iam::11112222333:role/x",
            "arn:aws:iam::111122223333:user/x",
            "arn:aws:iam::111122223333:role/",
            "arn:aws:iam::111122223333:role/a b",
            "arn:aws:iam::111122223333:role/é",
            "arn::iam::111122223333:role/x",
        ];
        for s in roles {
            assert_eq!(matches(ROLE_ARN_PATTERN, s), keyhold_lifecycle::check_role_arn(s).is_ok(), "role ARN {s:?}");
        }
        let b64 =
            ["", "aGVsbG8=", "aGVsbG8h", "aGk=", "aA==", "QR==", "QQ=", "QUI=", "QUJ=", "Q", "QUJD\n", "QU JD", "-_-_"];
        for s in b64 {
            let decodes = base64::engine::general_purpose::STANDARD.decode(s).is_ok();
            assert_eq!(matches(BASE64_PATTERN, s), decodes, "base64 {s:?}");
        }
    }
}
