//! Web Push: the VAPID key (RFC 8292), subscriptions as browsers give them, and the
//! encrypted message (RFC 8291 `aes128gcm`, RFC 8188 framing) sent to a push service
//! (RFC 8030).
//!
//! Built on RustCrypto's P-256, HKDF and AES-GCM rather than the `web-push` crate, whose
//! encryption goes through OpenSSL (`ece`) and which brings its own HTTP client: the
//! server's own client is the one the target guard controls. Owns the cryptography only;
//! sending and retrying belong to the service.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use p256::{
    ecdsa::{signature::Signer, Signature, SigningKey},
    elliptic_curve::sec1::ToEncodedPoint,
    PublicKey, SecretKey,
};
use rand::{rngs::OsRng, RngCore};
use serde::{Deserialize, Serialize};

/// The record size announced in the header: one record holds any payload we send.
const RECORD_SIZE: u32 = 4096;
/// Largest plaintext one record holds (record size minus the tag and the delimiter).
pub const MAX_PLAINTEXT: usize = RECORD_SIZE as usize - 17;
/// Lifetime of a VAPID token: 12 h, within the 24 h RFC 8292 allows.
pub const VAPID_TTL_SECS: i64 = 12 * 3600;

/// Why push input or keys are refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PushError {
    /// `keys.p256dh` is not a base64url uncompressed P-256 point.
    #[error("keys.p256dh is not a P-256 public key (65 bytes, base64url)")]
    BadPublicKey,
    /// `keys.auth` is not 16 bytes of base64url.
    #[error("keys.auth is not a 16-byte secret (base64url)")]
    BadAuth,
    /// The configured VAPID key is not a base64url P-256 private key (32 bytes).
    #[error("the VAPID private key is not a base64url P-256 private key")]
    BadVapidKey,
    /// The payload does not fit one record.
    #[error("push payload too large")]
    TooLarge,
    /// Encryption failed (should not happen with valid keys).
    #[error("encryption failed")]
    Crypto,
}

/// A browser's push subscription: where to send and the keys to encrypt for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subscription {
    /// The push service URL (checked by the target guard).
    pub endpoint: String,
    /// The browser's P-256 public key, base64url.
    pub p256dh: String,
    /// The browser's auth secret, base64url.
    pub auth: String,
    /// Unix ms when it was stored (the oldest goes first past the per-user cap).
    #[serde(default)]
    pub created_at: i64,
}

/// Decodes base64url with or without padding (browsers' `toJSON` leave it out; some
/// libraries put it in).
fn b64(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD
        .decode(text.trim().trim_end_matches('='))
        .ok()
}

impl Subscription {
    /// A subscription whose keys parse (the endpoint is checked by the target guard).
    pub fn parse(endpoint: &str, p256dh: &str, auth: &str) -> Result<Self, PushError> {
        let key = b64(p256dh).ok_or(PushError::BadPublicKey)?;
        if key.len() != 65 || PublicKey::from_sec1_bytes(&key).is_err() {
            return Err(PushError::BadPublicKey);
        }
        let secret = b64(auth).ok_or(PushError::BadAuth)?;
        if secret.len() != 16 {
            return Err(PushError::BadAuth);
        }
        Ok(Self {
            endpoint: endpoint.trim().to_owned(),
            p256dh: URL_SAFE_NO_PAD.encode(key),
            auth: URL_SAFE_NO_PAD.encode(secret),
            created_at: crate::domain::now_millis(),
        })
    }

    /// `plaintext` encrypted for this subscription as an `aes128gcm` body (RFC 8291).
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<Vec<u8>, PushError> {
        let ua_public = b64(&self.p256dh).ok_or(PushError::BadPublicKey)?;
        let auth = b64(&self.auth).ok_or(PushError::BadAuth)?;
        let mut salt = [0u8; 16];
        OsRng.fill_bytes(&mut salt);
        // A fresh sender key per message, as RFC 8291 requires.
        encrypt_with(
            plaintext,
            &ua_public,
            &auth,
            &SecretKey::random(&mut OsRng),
            salt,
        )
    }
}

/// RFC 8291 §3.4 and RFC 8188 with the sender's key and salt given (fixed in the RFC's own
/// test vector).
fn encrypt_with(
    plaintext: &[u8],
    ua_public: &[u8],
    auth: &[u8],
    as_secret: &SecretKey,
    salt: [u8; 16],
) -> Result<Vec<u8>, PushError> {
    use aes_gcm::{aead::Aead, Aes128Gcm, KeyInit, Nonce};
    use hkdf::Hkdf;
    use sha2::Sha256;

    if plaintext.len() > MAX_PLAINTEXT {
        return Err(PushError::TooLarge);
    }
    let ua_key = PublicKey::from_sec1_bytes(ua_public).map_err(|_| PushError::BadPublicKey)?;
    let as_public = as_secret.public_key().to_encoded_point(false);
    let as_public = as_public.as_bytes();
    let shared = p256::ecdh::diffie_hellman(as_secret.to_nonzero_scalar(), ua_key.as_affine());
    // IKM = HKDF(auth, ecdh, "WebPush: info\0" || ua_public || as_public, 32)
    let mut info = Vec::with_capacity(14 + 65 + 65);
    info.extend_from_slice(b"WebPush: info\0");
    info.extend_from_slice(ua_public);
    info.extend_from_slice(as_public);
    let mut ikm = [0u8; 32];
    Hkdf::<Sha256>::new(Some(auth), shared.raw_secret_bytes().as_slice())
        .expand(&info, &mut ikm)
        .map_err(|_| PushError::Crypto)?;
    let content = Hkdf::<Sha256>::new(Some(&salt), &ikm);
    let mut cek = [0u8; 16];
    let mut nonce = [0u8; 12];
    content
        .expand(b"Content-Encoding: aes128gcm\0", &mut cek)
        .map_err(|_| PushError::Crypto)?;
    content
        .expand(b"Content-Encoding: nonce\0", &mut nonce)
        .map_err(|_| PushError::Crypto)?;
    // One record, the last: the plaintext, then the delimiter 0x02, no padding.
    let mut record = Vec::with_capacity(plaintext.len() + 1);
    record.extend_from_slice(plaintext);
    record.push(2);
    let cipher = Aes128Gcm::new_from_slice(&cek).map_err(|_| PushError::Crypto)?;
    let sealed = cipher
        .encrypt(Nonce::from_slice(&nonce), record.as_slice())
        .map_err(|_| PushError::Crypto)?;
    let mut body = Vec::with_capacity(16 + 4 + 1 + 65 + sealed.len());
    body.extend_from_slice(&salt);
    body.extend_from_slice(&RECORD_SIZE.to_be_bytes());
    body.push(65);
    body.extend_from_slice(as_public);
    body.extend_from_slice(&sealed);
    Ok(body)
}

/// The server's VAPID key pair: signs the JWT each push request carries, and its public
/// half is the `applicationServerKey` browsers subscribe with.
#[derive(Clone)]
pub struct VapidKey {
    signing: SigningKey,
    subject: String,
}

impl std::fmt::Debug for VapidKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the private half.
        f.debug_struct("VapidKey")
            .field("public", &self.public_key())
            .finish()
    }
}

impl VapidKey {
    /// The key from its base64url private scalar (32 bytes, the format of common Web Push
    /// tools), with the `sub` claim `subject` (a `mailto:` or https URL).
    pub fn from_private(encoded: &str, subject: &str) -> Result<Self, PushError> {
        let bytes = b64(encoded).ok_or(PushError::BadVapidKey)?;
        let secret = SecretKey::from_slice(&bytes).map_err(|_| PushError::BadVapidKey)?;
        Ok(Self {
            signing: SigningKey::from(secret),
            subject: subject.to_owned(),
        })
    }

    /// A fresh random key, and its private scalar base64url (to be kept).
    pub fn generate(subject: &str) -> (Self, String) {
        let secret = SecretKey::random(&mut OsRng);
        let encoded = URL_SAFE_NO_PAD.encode(secret.to_bytes());
        (
            Self {
                signing: SigningKey::from(secret),
                subject: subject.to_owned(),
            },
            encoded,
        )
    }

    /// The public key, uncompressed point base64url (`applicationServerKey`).
    pub fn public_key(&self) -> String {
        let point = self.signing.verifying_key().to_encoded_point(false);
        URL_SAFE_NO_PAD.encode(point.as_bytes())
    }

    /// The `Authorization` header value for a push to `endpoint` at `now` (unix seconds):
    /// `vapid t=<ES256 JWT>, k=<public key>`, the JWT's audience the endpoint's origin.
    pub fn authorization(&self, endpoint: &reqwest::Url, now: i64) -> String {
        let origin = endpoint.origin().ascii_serialization();
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ES256"}"#);
        let claims = serde_json::json!({
            "aud": origin,
            "exp": now + VAPID_TTL_SECS,
            "sub": self.subject,
        });
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{claims}");
        let signature: Signature = self.signing.sign(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(signature.to_bytes());
        format!(
            "vapid t={signing_input}.{signature}, k={}",
            self.public_key()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8291 §5's example: the sender's key and salt fixed, the body is the RFC's.
    #[test]
    fn encryption_matches_the_rfc_8291_example() {
        let plaintext = b"When I grow up, I want to be a watermelon";
        let ua_public = b64("BCVxsr7N_eNgVRqvHtD0zTZsEc6-VV-JvLexhqUzORcxaOzi6-AYWXvTBHm4bjyPjs7Vd8pZGH6SRpkNtoIAiw4").expect("ua");
        let auth = b64("BTBZMqHH6r4Tts7J_aSIgg").expect("auth");
        let as_private = b64("yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw").expect("as");
        let salt: [u8; 16] = b64("DGv6ra1nlYgDCS1FRnbzlw")
            .expect("salt")
            .try_into()
            .expect("16 bytes");
        let expected = b64("DGv6ra1nlYgDCS1FRnbzlwAAEABBBP4z9KsN6nGRTbVYI_c7VJSPQTBtkgcy27mlmlMoZIIgDll6e3vCYLocInmYWAmS6TlzAC8wEqKK6PBru3jl7A_yl95bQpu6cVPTpK4Mqgkf1CXztLVBSt2Ks3oZwbuwXPXLWyouBWLVWGNWQexSgSxsj_Qulcy4a-fN").expect("body");
        let secret = SecretKey::from_slice(&as_private).expect("key");
        let body = encrypt_with(plaintext, &ua_public, &auth, &secret, salt).expect("encrypt");
        assert_eq!(body, expected);
    }

    #[test]
    fn malformed_subscription_keys_are_refused() {
        let (key, _) = VapidKey::generate("mailto:a@example.com");
        let good = key.public_key();
        let auth = URL_SAFE_NO_PAD.encode([7u8; 16]);
        assert!(Subscription::parse("https://push.example/x", &good, &auth).is_ok());
        assert_eq!(
            Subscription::parse("https://push.example/x", "abc", &auth),
            Err(PushError::BadPublicKey)
        );
        let off_curve = URL_SAFE_NO_PAD.encode([4u8; 65]);
        assert_eq!(
            Subscription::parse("https://push.example/x", &off_curve, &auth),
            Err(PushError::BadPublicKey)
        );
        assert_eq!(
            Subscription::parse("https://push.example/x", &good, "short"),
            Err(PushError::BadAuth)
        );
    }

    #[test]
    fn the_vapid_header_carries_a_verifiable_es256_jwt_for_the_endpoint_origin() {
        use p256::ecdsa::{signature::Verifier, VerifyingKey};
        let (key, private) = VapidKey::generate("mailto:a@example.com");
        let again = VapidKey::from_private(&private, "mailto:a@example.com").expect("parse");
        assert_eq!(again.public_key(), key.public_key());
        let url = reqwest::Url::parse("https://push.example:8443/send/abc").expect("url");
        let header = key.authorization(&url, 1_000);
        let rest = header.strip_prefix("vapid t=").expect("scheme");
        let (jwt, k) = rest.split_once(", k=").expect("k");
        assert_eq!(k, key.public_key());
        let (input, signature) = jwt.rsplit_once('.').expect("signature");
        let claims = input.split('.').nth(1).expect("claims");
        let claims: serde_json::Value =
            serde_json::from_slice(&b64(claims).expect("b64")).expect("json");
        assert_eq!(claims["aud"], "https://push.example:8443");
        assert_eq!(claims["exp"], 1_000 + VAPID_TTL_SECS);
        let public = VerifyingKey::from_sec1_bytes(&b64(k).expect("k")).expect("point");
        let signature =
            Signature::from_slice(&b64(signature).expect("sig")).expect("64-byte signature");
        public
            .verify(input.as_bytes(), &signature)
            .expect("valid signature");
    }
}
