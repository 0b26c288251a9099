//! Authentication: short-lived Ed25519-signed JWTs (`alg` `EdDSA`), and what each kind of
//! caller may do.
//!
//! A token's claims: `iss` (the service name, or `keyhold-admin`), `aud` = `keyhold`,
//! `iat`, `exp` (at most [`MAX_LIFETIME_S`] after `iat`), `scope` (`service`, `admin`,
//! `tenant-admin`) and, for a tenant admin, `tenant`. Service tokens verify against the
//! service's public key in the registry; admin and tenant-admin tokens against the admin
//! key. Verification is strict: unknown algorithms, audiences, scopes, lifetimes over ten
//! minutes, expired or not-yet-valid tokens are all refused with a reason.

use std::sync::Arc;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use keyhold_core::TenantId;
use keyhold_registry::Purposes;
use serde::{Deserialize, Serialize};

/// The audience every token must name.
pub const AUDIENCE: &str = "keyhold";
/// The issuer of admin and tenant-admin tokens.
pub const ADMIN_ISSUER: &str = "keyhold-admin";
/// The longest lifetime a token may have (10 minutes).
pub const MAX_LIFETIME_S: u64 = 600;
/// A valid Ed25519 public key that tokens naming an unknown service are checked against,
/// so they cost what a wrong signature costs. Its result is never used (the token is
/// refused either way), so that its seed is public does not matter.
pub fn unknown_issuer_key() -> &'static [u8] {
    static KEY: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
        Ed25519KeyPair::from_seed_unchecked(&[0x5a; 32]).map(|k| k.public_key().as_ref().to_vec()).unwrap_or_default()
    });
    &KEY
}

/// The longest token accepted: anything longer is refused before any work.
pub const MAX_TOKEN_BYTES: usize = 8 << 10;
/// Clock skew tolerated on `iat` and `exp`.
const SKEW_S: u64 = 30;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The operator: tenant and key management for every tenant.
    Admin,
    /// A tenant's administrator: onboarding calls for that tenant only.
    TenantAdmin(TenantId),
    /// A platform service: encrypt and decrypt for its purposes. Shared, so that handing
    /// a cached principal to each request is a reference-count increment.
    Service {
        /// Its registered name.
        name: Arc<str>,
        /// What it may use.
        purposes: Arc<Purposes>,
    },
}

impl Principal {
    /// The name written to the audit trail.
    pub fn actor(&self) -> String {
        match self {
            Principal::Admin => "admin".into(),
            Principal::TenantAdmin(t) => format!("tenant-admin:{t}"),
            Principal::Service { name, .. } => format!("service:{name}"),
        }
    }
}

/// A token's scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// A service.
    Service,
    /// The operator.
    Admin,
    /// One tenant's administrator.
    TenantAdmin,
}

/// The claims keyhold reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer: the service name, or [`ADMIN_ISSUER`].
    pub iss: String,
    /// Audience: [`AUDIENCE`].
    pub aud: String,
    /// Issued at (s since the Unix epoch).
    pub iat: u64,
    /// Expiry (s since the Unix epoch).
    pub exp: u64,
    /// What the token is for.
    pub scope: Scope,
    /// The tenant, for a tenant-admin token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
}

/// Why a token was refused. The text is safe to return to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not three base64url parts with JSON header and claims.
    #[error("the token is not a JWT (header.claims.signature, base64url): {0}")]
    Malformed(&'static str),
    /// Wrong algorithm.
    #[error("the token's algorithm is {0:?}; keyhold accepts only EdDSA (Ed25519)")]
    Algorithm(String),
    /// Wrong audience.
    #[error("the token's audience is {0:?}, not \"keyhold\"")]
    Audience(String),
    /// Lifetime over the limit.
    #[error("the token is valid for {0} s; tokens may live at most 600 s (10 minutes)")]
    TooLong(u64),
    /// Expired.
    #[error("the token expired {0} s ago; request a fresh one")]
    Expired(u64),
    /// Issued in the future.
    #[error("the token is issued in the future; check the issuer's clock")]
    NotYetValid,
    /// Bad signature.
    #[error("the token's signature does not verify against the issuer's registered key")]
    Signature,
    /// Claims inconsistent with the scope.
    #[error("the token's claims do not fit its scope: {0}")]
    Scope(&'static str),
}

/// An Ed25519 signing key held as PKCS#8.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(..)")
    }
}

impl SigningKey {
    /// A new random key; returns it and its PKCS#8 encoding (to store).
    pub fn generate() -> Result<(Self, Vec<u8>), TokenError> {
        let doc = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| TokenError::Malformed("keygen"))?;
        let bytes = doc.as_ref().to_vec();
        Ok((Self::from_pkcs8(&bytes)?, bytes))
    }

    /// A key from its PKCS#8 encoding.
    pub fn from_pkcs8(der: &[u8]) -> Result<Self, TokenError> {
        Ok(Self { pair: Ed25519KeyPair::from_pkcs8(der).map_err(|_| TokenError::Malformed("not an Ed25519 key"))? })
    }

    /// The 32-byte public key.
    pub fn public_key(&self) -> Vec<u8> {
        self.pair.public_key().as_ref().to_vec()
    }

    /// A signed token with `claims`.
    pub fn sign(&self, claims: &Claims) -> String {
        let header = Header { alg: "EdDSA".into(), typ: Some("JWT".into()) };
        let h = B64URL.encode(serde_json::to_vec(&header).unwrap_or_default());
        let c = B64URL.encode(serde_json::to_vec(claims).unwrap_or_default());
        let input = format!("{h}.{c}");
        let sig = self.pair.sign(input.as_bytes());
        format!("{input}.{}", B64URL.encode(sig.as_ref()))
    }

    /// A token for `scope` valid for `lifetime_s` from `now_s`.
    pub fn token(&self, iss: &str, scope: Scope, tenant: Option<&str>, now_s: u64, lifetime_s: u64) -> String {
        self.sign(&Claims {
            iss: iss.to_owned(),
            aud: AUDIENCE.to_owned(),
            iat: now_s,
            exp: now_s + lifetime_s,
            scope,
            tenant: tenant.map(str::to_owned),
        })
    }
}

/// The SHA-256 of a token: how the verified-token cache knows it without holding it.
pub fn token_digest(token: &str) -> [u8; 32] {
    let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes());
    <[u8; 32]>::try_from(d.as_ref()).unwrap_or([0; 32])
}

/// Reads a token's claims without verifying them (to find the issuer's key).
pub fn unverified_claims(token: &str) -> Result<Claims, TokenError> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(_), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(TokenError::Malformed("expected three dot-separated parts"));
    };
    let header: Header = serde_json::from_slice(&B64URL.decode(h).map_err(|_| TokenError::Malformed("header"))?)
        .map_err(|_| TokenError::Malformed("header"))?;
    if header.alg != "EdDSA" {
        return Err(TokenError::Algorithm(header.alg));
    }
    serde_json::from_slice(&B64URL.decode(c).map_err(|_| TokenError::Malformed("claims"))?)
        .map_err(|_| TokenError::Malformed("claims"))
}

/// Verifies `token` against `public_key` at `now_s`; returns its claims.
pub fn verify(token: &str, public_key: &[u8], now_s: u64) -> Result<Claims, TokenError> {
    let claims = unverified_claims(token)?;
    let (input, sig) = token.rsplit_once('.').ok_or(TokenError::Malformed("signature"))?;
    let sig = B64URL.decode(sig).map_err(|_| TokenError::Malformed("signature"))?;
    UnparsedPublicKey::new(&ED25519, public_key).verify(input.as_bytes(), &sig).map_err(|_| TokenError::Signature)?;
    if claims.aud != AUDIENCE {
        return Err(TokenError::Audience(claims.aud));
    }
    let lifetime = claims.exp.saturating_sub(claims.iat);
    if lifetime > MAX_LIFETIME_S {
        return Err(TokenError::TooLong(lifetime));
    }
    if claims.iat > now_s + SKEW_S {
        return Err(TokenError::NotYetValid);
    }
    if claims.exp + SKEW_S <= now_s {
        return Err(TokenError::Expired(now_s - claims.exp));
    }
    match (claims.scope, claims.tenant.is_some(), claims.iss == ADMIN_ISSUER) {
        (Scope::Service, false, false) | (Scope::Admin, false, true) | (Scope::TenantAdmin, true, true) => Ok(claims),
        (Scope::Service, _, _) => Err(TokenError::Scope("a service token names a service and no tenant")),
        (Scope::Admin, _, _) => Err(TokenError::Scope("an admin token is issued by keyhold-admin for no tenant")),
        (Scope::TenantAdmin, _, _) => {
            Err(TokenError::Scope("a tenant-admin token is issued by keyhold-admin for one tenant"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_and_every_fault_is_named() {
        let (key, _) = SigningKey::generate().unwrap();
        let pk = key.public_key();
        let now = 1_800_000_000;
        let t = key.token("billing", Scope::Service, None, now, 300);
        assert_eq!(verify(&t, &pk, now + 10).unwrap().iss, "billing");
        assert_eq!(verify(&t, &pk, now + 400), Err(TokenError::Expired(100)));
        let long = key.token("billing", Scope::Service, None, now, 601);
        assert_eq!(verify(&long, &pk, now), Err(TokenError::TooLong(601)));
        let future = key.token("billing", Scope::Service, None, now + 3600, 300);
        assert_eq!(verify(&future, &pk, now), Err(TokenError::NotYetValid));
        let (other, _) = SigningKey::generate().unwrap();
        assert_eq!(verify(&t, &other.public_key(), now), Err(TokenError::Signature));
        let mut tampered = t.clone();
        tampered.insert(5, 'x');
        assert!(verify(&tampered, &pk, now).is_err());
        assert!(matches!(verify("a.b", &pk, now), Err(TokenError::Malformed(_))));
        let admin_as_service = key.token("billing", Scope::Admin, None, now, 300);
        assert!(matches!(verify(&admin_as_service, &pk, now), Err(TokenError::Scope(_))));
        let ta = key.token(ADMIN_ISSUER, Scope::TenantAdmin, Some("acme"), now, 300);
        assert_eq!(verify(&ta, &pk, now).unwrap().tenant.as_deref(), Some("acme"));
        let none_alg = format!("{}.{}.", B64URL.encode(br#"{"alg":"none"}"#), t.split('.').nth(1).unwrap());
        assert_eq!(verify(&none_alg, &pk, now), Err(TokenError::Algorithm("none".into())));
        let wrong_aud = key.sign(&Claims {
            iss: "billing".into(),
            aud: "other".into(),
            iat: now,
            exp: now + 60,
            scope: Scope::Service,
            tenant: None,
        });
        assert_eq!(verify(&wrong_aud, &pk, now), Err(TokenError::Audience("other".into())));
    }
}
