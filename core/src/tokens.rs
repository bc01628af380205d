//! Signed bearer tokens: `base64url(claims JSON) "." base64url(HMAC-SHA256(claims))`.
//!
//! Any node (and the profile service) holding the shared key verifies a token without a
//! round trip; revocation (logout) is the one lookup, done by the account service.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// What a token asserts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user.
    pub uid: String,
    /// Expiry, unix seconds.
    pub exp: i64,
    /// Unique token id, the handle for revocation.
    pub jti: String,
}

/// Why a token was refused. Deliberately vague towards clients: all map to `unauthorized`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not of the token's shape.
    #[error("malformed token")]
    Malformed,
    /// Signature does not match.
    #[error("bad token signature")]
    BadSignature,
    /// Past its expiry.
    #[error("token expired")]
    Expired,
}

/// Signs and verifies tokens with one shared key.
#[derive(Clone)]
pub struct TokenSigner {
    key: Vec<u8>,
}

impl std::fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSigner { key: <redacted> }")
    }
}

impl TokenSigner {
    /// A signer for `key` (any length; 32 random bytes recommended).
    pub fn new(key: impl Into<Vec<u8>>) -> Self {
        Self { key: key.into() }
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length, so this cannot fail.
        <Hmac<Sha256> as Mac>::new_from_slice(&self.key).unwrap_or_else(|_| unreachable!())
    }

    /// Encodes and signs `claims`.
    pub fn sign(&self, claims: &Claims) -> String {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{payload}.{sig}")
    }

    /// Checks signature and expiry against `now` (unix seconds) and returns the claims.
    pub fn verify(&self, token: &str, now: i64) -> Result<Claims, TokenError> {
        let (payload, sig) = token.split_once('.').ok_or(TokenError::Malformed)?;
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        mac.verify_slice(&sig)
            .map_err(|_| TokenError::BadSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        let claims: Claims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
        if claims.exp <= now {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            uid: "alice".into(),
            exp: 1_000,
            jti: "j1".into(),
        }
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let s = TokenSigner::new(b"k".to_vec());
        let t = s.sign(&claims());
        assert_eq!(s.verify(&t, 999), Ok(claims()));
        assert_eq!(s.verify(&t, 1_000), Err(TokenError::Expired));
    }

    #[test]
    fn tampered_or_foreign_tokens_are_refused() {
        let s = TokenSigner::new(b"k".to_vec());
        let t = s.sign(&claims());
        let other = TokenSigner::new(b"other".to_vec());
        assert_eq!(other.verify(&t, 0), Err(TokenError::BadSignature));
        let forged_claims = URL_SAFE_NO_PAD.encode(br#"{"uid":"root","exp":9999,"jti":"x"}"#);
        let (_, sig) = t.split_once('.').expect("dot");
        assert_eq!(
            s.verify(&format!("{forged_claims}.{sig}"), 0),
            Err(TokenError::BadSignature)
        );
        for junk in ["", ".", "abc", "a.b.c", "!!.!!"] {
            assert!(s.verify(junk, 0).is_err(), "{junk}");
        }
    }
}
