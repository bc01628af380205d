//! Who is calling: the chat server's bearer tokens, verified with the shared key, and its
//! logout revocations, read from Redis.
//!
//! Without Redis there is no shared revocation store (the chat server keeps revocations in
//! its own redb file, which redb locks to that process), so a logged-out token stays valid
//! here until it expires. That is the embedded single-process development mode only.

use fred::{clients::Pool, interfaces::KeysInterface};
use webchat_core::{ids::UserId, tokens::TokenSigner};

use crate::{
    error::ApiError,
    redis::{unavailable, user_key},
};

/// Verifies bearer tokens.
#[derive(Clone)]
pub struct Authenticator {
    signer: TokenSigner,
    revocations: Option<Pool>,
}

impl Authenticator {
    /// Tokens signed with `key`; revocations read from `revocations` when set.
    pub fn new(key: Vec<u8>, revocations: Option<Pool>) -> Self {
        Self {
            signer: TokenSigner::new(key),
            revocations,
        }
    }

    /// The user a token stands for, if it is well signed, unexpired and not revoked.
    pub async fn verify(&self, token: &str) -> Result<UserId, ApiError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let claims = self
            .signer
            .verify(token, now)
            .map_err(|e| ApiError::Unauthorized(format!("invalid token: {e}")))?;
        if let Some(pool) = &self.revocations {
            // A Redis failure is `unavailable`, not `unauthorized`: the token may be fine.
            let revoked: i64 = pool
                .exists(user_key(&claims.jti, "revoked"))
                .await
                .map_err(unavailable)?;
            if revoked > 0 {
                return Err(ApiError::Unauthorized("token revoked".into()));
            }
        }
        UserId::parse(&claims.uid).map_err(|_| ApiError::Unauthorized("invalid token".into()))
    }
}
