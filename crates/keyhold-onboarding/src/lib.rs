//! Everything a tenant administrator needs to connect their keys, and the checks that
//! tell them precisely what is wrong: the realm catalog, key-set checks against a realm,
//! the key policy to apply in each region, and the CloudFormation templates that create
//! the key (CMK mode) or the role the platform assumes (BYOK mode).
//!
//! Everything but [`validate`] is pure; [`validate`] calls the tenant's keys through the
//! [`keyhold_provider::KeyProvider`]s it is given (AWS KMS, or the local provider).

#![forbid(unsafe_code)]

pub mod analysis;
pub mod finding;
pub mod policy;
pub mod realms;
pub mod template;
pub mod validate;

pub use analysis::analyze_key_policy;
pub use finding::{Finding, Severity};
pub use policy::{PolicyParams, key_policy};
pub use realms::{KeySetError, Realm, RealmCatalog, RealmError};
pub use template::{byok_role_template, cmk_template, external_id};
pub use validate::{KeyReport, Report, Validation, validate};
