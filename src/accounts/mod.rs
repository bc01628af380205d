//! Accounts: signup, login, logout and token verification.
//!
//! Owns password hashing (argon2), token issue/verify/revoke and the [`AccountStore`] trait
//! with its embedded and Redis implementations. Does not own HTTP or sockets: the REST
//! handlers and the socket auth middleware both call [`AccountService`].

mod dynamo;
mod embedded;
pub mod hashing;
mod redis;
/// Tokens and their key are shared with the profile service, so they live in `webchat-core`;
/// these are their old paths.
pub use webchat_core::{token_key, tokens as token};

use std::sync::Arc;

use async_trait::async_trait;
use dashmap::DashSet;
use serde::{Deserialize, Serialize};

pub use self::dynamo::DynamoAccountStore;
pub use self::embedded::EmbeddedAccountStore;
use self::hashing::{Busy, HashError, HashPool};
pub use self::redis::RedisAccountStore;
use self::token::{Claims, TokenSigner};
use crate::{
    domain::{ChatError, ErrorCode, UserId},
    storage::StoreError,
};

/// A stored account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    /// The uid.
    pub uid: String,
    /// Display name given at signup.
    pub name: String,
    /// argon2 PHC string; never leaves the server.
    pub password_hash: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// Where accounts and revoked tokens are kept.
#[async_trait]
pub trait AccountStore: Send + Sync {
    /// Stores `account` unless the uid is taken; returns whether it was stored.
    async fn insert(&self, account: &Account) -> Result<bool, StoreError>;
    /// Loads an account.
    async fn get(&self, uid: &str) -> Result<Option<Account>, StoreError>;
    /// Marks a token id revoked until `expires_at` (unix seconds).
    async fn revoke(&self, jti: &str, expires_at: i64) -> Result<(), StoreError>;
    /// Whether a token id was revoked.
    async fn is_revoked(&self, jti: &str) -> Result<bool, StoreError>;
    /// Up to `limit` accounts whose uid starts with `prefix` and sorts after `after`, in
    /// uid order (the address book).
    async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Account>, StoreError>;
}

/// Why a signup failed.
#[derive(Debug, thiserror::Error)]
pub enum SignupError {
    /// The uid belongs to an existing account (REST answers 409).
    #[error("uid is taken")]
    Taken,
    /// No hashing capacity left; nothing was stored (REST answers 503 with `Retry-After`).
    #[error(transparent)]
    Busy(#[from] Busy),
    /// Bad input or a back-end failure.
    #[error(transparent)]
    Refused(#[from] ChatError),
}

/// Why a login failed.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// No such uid, or the wrong password (REST answers 401).
    #[error("wrong uid or password")]
    Wrong,
    /// No hashing capacity left: the password was not checked (503 with `Retry-After`).
    #[error(transparent)]
    Busy(#[from] Busy),
    /// A back-end failure.
    #[error(transparent)]
    Refused(#[from] ChatError),
}

impl From<StoreError> for LoginError {
    fn from(e: StoreError) -> Self {
        Self::Refused(e.into())
    }
}

impl From<StoreError> for SignupError {
    fn from(e: StoreError) -> Self {
        Self::Refused(e.into())
    }
}

/// A token handed to a client.
#[derive(Debug, Clone, Serialize)]
pub struct IssuedToken {
    /// The user.
    pub uid: String,
    /// Bearer token.
    pub token: String,
    /// Unix seconds.
    #[serde(rename = "expiresAt")]
    pub expires_at: i64,
}

/// What a valid token says, for a socket that authenticates with it.
#[derive(Debug, Clone)]
pub struct VerifiedToken {
    /// The user.
    pub uid: UserId,
    /// The token id (its handle for revocation).
    pub jti: String,
    /// Expiry, unix seconds: the token is refused from this second on.
    pub expires_at: i64,
}

/// Account operations shared by REST and sockets.
#[derive(Clone)]
pub struct AccountService {
    store: Arc<dyn AccountStore>,
    signer: TokenSigner,
    token_ttl_secs: i64,
    /// Uids known to exist; accounts are never deleted, so a hit never goes stale.
    known: Arc<DashSet<String>>,
    /// Where passwords are hashed and checked, within the node's bounds.
    hasher: Arc<HashPool>,
}

/// The uids the server makes for guests start with this; no account may.
pub const GUEST_UID_PREFIX: &str = "guest-";

impl AccountService {
    /// A service over `store`, signing with `signer`, hashing passwords in `hasher`.
    pub fn new(
        store: Arc<dyn AccountStore>,
        signer: TokenSigner,
        token_ttl_secs: u64,
        hasher: Arc<HashPool>,
    ) -> Self {
        Self {
            store,
            signer,
            token_ttl_secs: i64::try_from(token_ttl_secs).unwrap_or(i64::MAX / 2),
            known: Arc::new(DashSet::new()),
            hasher,
        }
    }

    /// Creates an account and returns its first token.
    #[tracing::instrument(skip_all, fields(uid = %uid))]
    pub async fn signup(
        &self,
        uid: &UserId,
        password: &str,
        name: &str,
    ) -> Result<IssuedToken, SignupError> {
        check_password(password)?;
        if uid.as_str().starts_with(GUEST_UID_PREFIX) {
            // Guests get `guest-<uuid>` uids (§9): an account of that shape could be the uid
            // a live guest already has.
            return Err(ChatError::bad_request(
                "uids starting with guest- are reserved for guests",
            )
            .into());
        }
        if name.chars().count() > 64 {
            return Err(ChatError::bad_request("name must be at most 64 characters").into());
        }
        if crate::domain::has_bidi_controls(name) {
            return Err(ChatError::bad_request(
                "name must not contain bidirectional formatting characters",
            )
            .into());
        }
        let hash = match self.hasher.hash(password.to_owned()).await {
            Ok(hash) => hash,
            Err(HashError::Busy(busy)) => return Err(busy.into()),
            Err(HashError::Failed(e)) => return Err(internal(&e).into()),
        };
        let account = Account {
            uid: uid.to_string(),
            name: if name.is_empty() {
                uid.to_string()
            } else {
                name.to_owned()
            },
            password_hash: hash,
            created_at: chrono::Utc::now().timestamp(),
        };
        if !self.store.insert(&account).await? {
            return Err(SignupError::Taken);
        }
        self.known.insert(account.uid.clone());
        tracing::info!("account created");
        Ok(self.issue(uid))
    }

    /// Checks a password and returns a new token.
    #[tracing::instrument(skip_all, fields(uid = %uid))]
    pub async fn login(&self, uid: &UserId, password: &str) -> Result<IssuedToken, LoginError> {
        let Some(account) = self.store.get(uid.as_str()).await? else {
            // The same argon2 work as a wrong password: a fast answer would tell that the uid
            // does not exist.
            return match self.hasher.verify_dummy(password.to_owned()).await {
                Ok(()) => Err(LoginError::Wrong),
                Err(HashError::Busy(busy)) => Err(busy.into()),
                Err(HashError::Failed(e)) => Err(internal(&e).into()),
            };
        };
        match self
            .hasher
            .verify(password.to_owned(), account.password_hash)
            .await
        {
            Ok(true) => Ok(self.issue(uid)),
            Ok(false) => Err(LoginError::Wrong),
            Err(HashError::Busy(busy)) => Err(busy.into()),
            Err(HashError::Failed(e)) => Err(internal(&e).into()),
        }
    }

    /// Revokes `token` everywhere.
    /// Returns the revoked token id (the sockets opened with it are closed by the caller).
    pub async fn logout(&self, token: &str) -> Result<String, ChatError> {
        let claims = self.verify_claims(token).await?;
        self.store.revoke(&claims.jti, claims.exp).await?;
        Ok(claims.jti)
    }

    /// [`AccountService::verify`], also returning the token id (to close its sockets on
    /// logout) and its expiry (to close them when it expires).
    pub async fn verify_with_id(&self, token: &str) -> Result<VerifiedToken, ChatError> {
        let claims = self.verify_claims(token).await?;
        let uid = UserId::parse(&claims.uid).map_err(|_| unauthorized())?;
        Ok(VerifiedToken {
            uid,
            jti: claims.jti,
            expires_at: claims.exp,
        })
    }

    /// The user a token belongs to, if it is valid, unexpired and not revoked.
    pub async fn verify(&self, token: &str) -> Result<UserId, ChatError> {
        let claims = self.verify_claims(token).await?;
        UserId::parse(&claims.uid).map_err(|_| unauthorized())
    }

    async fn verify_claims(&self, token: &str) -> Result<Claims, ChatError> {
        let now = chrono::Utc::now().timestamp();
        let claims = self.signer.verify(token, now).map_err(|e| {
            tracing::debug!(reason = %e, "token refused");
            unauthorized()
        })?;
        if self.store.is_revoked(&claims.jti).await? {
            return Err(unauthorized());
        }
        Ok(claims)
    }

    /// Accounts by uid prefix, in uid order after `after` (the address book).
    pub async fn list(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<Account>, ChatError> {
        Ok(self.store.list(prefix, after, limit).await?)
    }

    /// Whether an account exists (cached once seen).
    pub async fn exists(&self, uid: &UserId) -> Result<bool, ChatError> {
        if self.known.contains(uid.as_str()) {
            return Ok(true);
        }
        let found = self.store.get(uid.as_str()).await?.is_some();
        if found {
            self.known.insert(uid.to_string());
        }
        Ok(found)
    }

    /// A token for a guest uid (§9, §10): a guest keeps its uid, and so its support tickets
    /// and their answers, by reconnecting with it (`auth: {guest: true, token}`). It is
    /// never a user's token: every socket and request presenting it is a guest's.
    pub fn issue_guest(&self, uid: &UserId) -> Result<IssuedToken, ChatError> {
        if !uid.as_str().starts_with(GUEST_UID_PREFIX) {
            return Err(ChatError::new(
                ErrorCode::Internal,
                "guest tokens are for guest uids",
            ));
        }
        Ok(self.issue(uid))
    }

    /// The display name given at signup, if the account exists.
    pub async fn display_name(&self, uid: &UserId) -> Result<Option<String>, ChatError> {
        Ok(self.store.get(uid.as_str()).await?.map(|a| a.name))
    }

    fn issue(&self, uid: &UserId) -> IssuedToken {
        let expires_at = chrono::Utc::now()
            .timestamp()
            .saturating_add(self.token_ttl_secs);
        let claims = Claims {
            uid: uid.to_string(),
            exp: expires_at,
            jti: uuid::Uuid::new_v4().simple().to_string(),
        };
        IssuedToken {
            uid: uid.to_string(),
            token: self.signer.sign(&claims),
            expires_at,
        }
    }
}

fn unauthorized() -> ChatError {
    ChatError::new(ErrorCode::Unauthorized, "unauthorized")
}

fn check_password(password: &str) -> Result<(), ChatError> {
    let len = password.chars().count();
    if !(8..=256).contains(&len) {
        return Err(ChatError::bad_request("password must be 8-256 characters"));
    }
    Ok(())
}

fn internal(e: &dyn std::fmt::Display) -> ChatError {
    tracing::error!(error = %e, "password hashing failed");
    ChatError::new(ErrorCode::Internal, "internal error")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service() -> (AccountService, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = crate::storage::embedded::EmbeddedDb::open(dir.path()).expect("db");
        let store = Arc::new(EmbeddedAccountStore::new(db));
        (
            AccountService::new(store, TokenSigner::new(b"k".to_vec()), 60, test_hasher()),
            dir,
        )
    }

    fn test_hasher() -> Arc<HashPool> {
        let limits = hashing::HashLimits {
            workers: 1,
            queue: 16,
            max_wait: std::time::Duration::from_secs(30),
        };
        Arc::new(HashPool::new(limits, Arc::default()))
    }

    fn uid(s: &str) -> UserId {
        UserId::parse(s).expect("uid")
    }

    #[tokio::test]
    async fn signup_then_login_then_logout_revokes_the_token() {
        let (svc, _dir) = service();
        let issued = svc
            .signup(&uid("alice"), "password1", "Alice")
            .await
            .expect("signup");
        assert_eq!(
            svc.verify(&issued.token).await.expect("valid"),
            uid("alice")
        );

        let again = svc
            .signup(&uid("alice"), "password1", "A")
            .await
            .expect_err("taken");
        assert!(matches!(again, SignupError::Taken));

        let wrong = svc
            .login(&uid("alice"), "password2")
            .await
            .expect_err("wrong pw");
        assert!(matches!(wrong, LoginError::Wrong));
        let second = svc.login(&uid("alice"), "password1").await.expect("login");

        svc.logout(&issued.token).await.expect("logout");
        let revoked = svc.verify(&issued.token).await.expect_err("revoked");
        assert_eq!(revoked.code, ErrorCode::Unauthorized);
        assert!(
            svc.verify(&second.token).await.is_ok(),
            "other tokens stay valid"
        );
    }

    #[tokio::test]
    async fn passwords_outside_8_to_256_chars_are_refused() {
        let (svc, _dir) = service();
        for pw in ["short", &"x".repeat(257)] {
            let err = svc.signup(&uid("bob"), pw, "").await.expect_err("bad pw");
            assert!(matches!(err, SignupError::Refused(e) if e.code == ErrorCode::BadRequest));
        }
        assert!(!svc.exists(&uid("bob")).await.expect("exists"));
    }
}
