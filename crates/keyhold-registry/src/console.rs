//! The console's sign-in state: one-time links and sessions, shared by every instance.
//!
//! A link is minted by an admin for a tenant's administrator (or for the admin) and is
//! redeemed at most once, before it expires: [`Registry::redeem_console_link`] marks it
//! used in the same statement that reads it, so two instances redeeming the same link
//! concurrently cannot both succeed. A session lives until it expires or is ended. Only
//! SHA-256 digests of the secrets are stored (the caller hashes); expired rows are pruned
//! when new ones are written.

use keyhold_core::TenantId;
use sqlx::Row;

use crate::{Registry, RegistryError, Result, ms, unms};

/// Whom a link or a session signs in: the admin, or one tenant's administrator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConsoleUser {
    /// The platform's operator: every tenant.
    Admin,
    /// One tenant's administrator.
    TenantAdmin(TenantId),
}

impl ConsoleUser {
    fn tenant(&self) -> Option<&str> {
        match self {
            ConsoleUser::Admin => None,
            ConsoleUser::TenantAdmin(t) => Some(t.as_str()),
        }
    }

    fn from_column(tenant: Option<String>) -> Result<Self> {
        match tenant {
            None => Ok(ConsoleUser::Admin),
            Some(t) => TenantId::parse(&t)
                .map(ConsoleUser::TenantAdmin)
                .map_err(|e| RegistryError::Corrupt(format!("console tenant id {t:?}: {e}"))),
        }
    }
}

/// A live console session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleSession {
    /// Who is signed in.
    pub user: ConsoleUser,
    /// The session's CSRF token, which every state-changing form carries.
    pub csrf: String,
    /// When it ends (ms since the Unix epoch).
    pub expires_ms: u64,
}

/// How long expired rows are kept before pruning (a day), so a late second use of a link
/// is still recognised as used rather than unknown in the log.
const KEEP_EXPIRED_MS: u64 = 86_400_000;

impl Registry {
    /// Stores a new link (`id` is the digest of its secret) for `user`, valid until
    /// `expires_ms`.
    pub async fn create_console_link(&self, id: &str, user: &ConsoleUser, now_ms: u64, expires_ms: u64) -> Result<()> {
        sqlx::query("DELETE FROM console_links WHERE expires_ms < $1")
            .bind(ms(now_ms.saturating_sub(KEEP_EXPIRED_MS)))
            .execute(&self.pool)
            .await?;
        sqlx::query("INSERT INTO console_links (id, tenant_id, created_ms, expires_ms) VALUES ($1, $2, $3, $4)")
            .bind(id)
            .bind(user.tenant())
            .bind(ms(now_ms))
            .bind(ms(expires_ms))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Redeems a link: whom it signs in, when it exists, is unexpired and was never
    /// redeemed; it is marked used in the same statement, so it signs in once.
    pub async fn redeem_console_link(&self, id: &str, now_ms: u64) -> Result<Option<ConsoleUser>> {
        let row = sqlx::query(
            "UPDATE console_links SET used_ms = $1 WHERE id = $2 AND used_ms IS NULL AND expires_ms > $1 \
             RETURNING tenant_id",
        )
        .bind(ms(now_ms))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| ConsoleUser::from_column(r.try_get(0)?)).transpose()
    }

    /// Whom the link `id` would sign in, when it exists, is unexpired and unused; it stays
    /// unused (what the sign-in page shows before the button is pressed).
    pub async fn console_link(&self, id: &str, now_ms: u64) -> Result<Option<ConsoleUser>> {
        let row =
            sqlx::query("SELECT tenant_id FROM console_links WHERE id = $1 AND used_ms IS NULL AND expires_ms > $2")
                .bind(id)
                .bind(ms(now_ms))
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| ConsoleUser::from_column(r.try_get(0)?)).transpose()
    }

    /// Stores a new session (`id` is the digest of its cookie).
    pub async fn create_console_session(
        &self,
        id: &str,
        user: &ConsoleUser,
        csrf: &str,
        now_ms: u64,
        expires_ms: u64,
    ) -> Result<()> {
        sqlx::query("DELETE FROM console_sessions WHERE expires_ms < $1").bind(ms(now_ms)).execute(&self.pool).await?;
        sqlx::query(
            "INSERT INTO console_sessions (id, tenant_id, csrf, created_ms, expires_ms) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(user.tenant())
        .bind(csrf)
        .bind(ms(now_ms))
        .bind(ms(expires_ms))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The session `id`, when it exists and has not expired.
    pub async fn console_session(&self, id: &str, now_ms: u64) -> Result<Option<ConsoleSession>> {
        let row =
            sqlx::query("SELECT tenant_id, csrf, expires_ms FROM console_sessions WHERE id = $1 AND expires_ms > $2")
                .bind(id)
                .bind(ms(now_ms))
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            Ok(ConsoleSession {
                user: ConsoleUser::from_column(r.try_get(0)?)?,
                csrf: r.try_get(1)?,
                expires_ms: unms(r.try_get(2)?),
            })
        })
        .transpose()
    }

    /// Ends the session `id` (signing out); ending one that does not exist changes nothing.
    pub async fn end_console_session(&self, id: &str) -> Result<()> {
        sqlx::query("DELETE FROM console_sessions WHERE id = $1").bind(id).execute(&self.pool).await?;
        Ok(())
    }
}
