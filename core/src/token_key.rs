//! Where the token-signing key comes from when `WEBCHAT_TOKEN_SECRET` is not set: shared
//! through Redis (the first process creates it), or kept in the data dir. The chat server and
//! the profile service both use this, so they always agree on the key.

use std::path::Path;

use fred::{clients::Pool, interfaces::KeysInterface, types::SetOptions};
use rand::RngCore;

use crate::{redis::unavailable, store::StoreError};

/// The Redis key holding the shared token key.
pub const REDIS_KEY: &str = "wc:token_secret";

/// The key from the configured secret, if any.
pub fn configured(secret: Option<&str>) -> Option<Vec<u8>> {
    secret.map(|s| s.as_bytes().to_vec())
}

/// The token key, from the first place that has one: the configured `secret`, else the key
/// shared through `redis` when the process uses Redis, else the one in `data_dir`. Both
/// binaries choose it this way, so they always agree on it.
pub async fn load(
    secret: Option<&str>,
    redis: Option<&Pool>,
    data_dir: &Path,
) -> Result<Vec<u8>, StoreError> {
    match (configured(secret), redis) {
        (Some(key), _) => Ok(key),
        (None, Some(pool)) => shared_in_redis(pool).await,
        (None, None) => in_data_dir(data_dir),
    }
}

/// The key shared by every process on this Redis, created by the first one that needs it.
pub async fn shared_in_redis(pool: &Pool) -> Result<Vec<u8>, StoreError> {
    let _: Option<String> = pool
        .set(REDIS_KEY, random_hex(32), None, Some(SetOptions::NX), false)
        .await
        .map_err(unavailable)?;
    let secret: Option<String> = pool.get(REDIS_KEY).await.map_err(unavailable)?;
    tracing::warn!("WEBCHAT_TOKEN_SECRET is not set; using the key shared through Redis");
    secret
        .map(String::into_bytes)
        .ok_or_else(|| StoreError::Internal("token secret vanished from Redis".into()))
}

/// The key kept in `<dir>/token_secret`, created (readable by its owner only) if missing.
pub fn in_data_dir(dir: &Path) -> Result<Vec<u8>, StoreError> {
    let path = dir.join("token_secret");
    if let Some(secret) = crate::store::read_key_file(&path)? {
        return Ok(secret.into_bytes());
    }
    let secret = random_hex(32);
    crate::store::write_key_file(dir, &path, &secret)?;
    tracing::warn!(path = %path.display(), "WEBCHAT_TOKEN_SECRET is not set; created a token key file");
    Ok(secret.into_bytes())
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_data_dir_key_is_created_once_and_then_reused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let first = in_data_dir(dir.path()).expect("created");
        assert_eq!(first.len(), 64);
        assert_eq!(in_data_dir(dir.path()).expect("read"), first);
        std::fs::write(dir.path().join("token_secret"), " abc \n").expect("write");
        assert_eq!(in_data_dir(dir.path()).expect("read"), b"abc");
    }
}
