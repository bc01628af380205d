//! Start-up: picks the back-ends from the settings, loads the token key, binds the listener.
//!
//! | WEBCHAT_DYNAMODB_ENDPOINT | WEBCHAT_REDIS_URL | system of record | cache | revocation, publish |
//! |---|---|---|---|---|
//! | set   | set   | DynamoDB            | Redis | Redis |
//! | set   | unset | DynamoDB            | none  | none  |
//! | unset | set   | Redis (`profile_rec`) | none (it would cache Redis in Redis) | Redis |
//! | unset | unset | redb `profiles.redb` | none  | none  |

use std::{future::Future, net::SocketAddr, path::Path, sync::Arc};

use fred::{clients::Pool, interfaces::KeysInterface, types::SetOptions};
use rand::RngCore;
use tokio::net::TcpListener;

use crate::{
    auth::Authenticator,
    cache::ProfileCache,
    config::{AuthMode, Settings},
    http::{self, AppState},
    metrics::Metrics,
    redis,
    service::ProfileService,
    store::{
        dynamodb::DynamoStore, embedded::EmbeddedStore, redis::RedisStore, ProfileStore, StoreError,
    },
};

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// Binding or serving the listener failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
    /// A back-end could not be opened.
    #[error("back-end: {0}")]
    Store(#[from] StoreError),
}

/// A built, bound, not yet running profile service.
pub struct Application {
    listener: TcpListener,
    app: axum::Router,
    local_addr: SocketAddr,
}

impl Application {
    /// Opens the back-ends the settings name and binds the listener (port 0 picks a free one).
    pub async fn build(settings: Settings) -> Result<Self, StartupError> {
        let settings = Arc::new(settings);
        let metrics = Arc::new(Metrics::default());
        let pool = match &settings.redis_url {
            Some(url) => Some(redis::connect(url).await?),
            None => None,
        };
        let (store, cache): (Arc<dyn ProfileStore>, Option<Arc<ProfileCache>>) =
            match (&settings.dynamodb_endpoint, &pool) {
                (Some(endpoint), pool) => {
                    let store = DynamoStore::connect(endpoint, settings.table_name()).await?;
                    let cache = pool
                        .as_ref()
                        .map(|p| Arc::new(ProfileCache::new(p.clone(), settings.cache_ttl())));
                    (Arc::new(store), cache)
                }
                (None, Some(pool)) => (Arc::new(RedisStore::new(pool.clone())), None),
                (None, None) => (Arc::new(EmbeddedStore::open(&settings.data_dir)?), None),
            };
        let token_key = match (&settings.token_secret, &pool) {
            (Some(secret), _) => secret.as_bytes().to_vec(),
            (None, Some(pool)) => shared_secret_in_redis(pool).await?,
            (None, None) => secret_in_data_dir(&settings.data_dir)?,
        };
        if pool.is_none() && settings.auth == AuthMode::Token {
            tracing::warn!("no Redis: logged-out tokens are not recognised as revoked here");
        }
        if settings.auth == AuthMode::Open {
            tracing::warn!("auth mode is OPEN: anyone who can reach this port can change any profile; use only on trusted networks");
        }
        tracing::info!(
            store = store.kind(),
            cache = cache.is_some(),
            "profile service back-ends ready"
        );
        let profiles = ProfileService::new(store, cache, pool.clone(), metrics.clone());
        let state = AppState {
            settings: settings.clone(),
            profiles,
            auth: Authenticator::new(token_key, pool.clone()),
            metrics,
            redis: pool,
        };
        let app = http::router(state);
        let listener = TcpListener::bind(settings.listen).await?;
        let local_addr = listener.local_addr()?;
        Ok(Self {
            listener,
            app,
            local_addr,
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes; requests in progress finish first.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), StartupError> {
        tracing::info!(addr = %self.local_addr, "listening");
        axum::serve(self.listener, self.app)
            .with_graceful_shutdown(shutdown)
            .await?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The token key shared through Redis, created (as the chat server does) if no one has yet.
async fn shared_secret_in_redis(pool: &Pool) -> Result<Vec<u8>, StoreError> {
    let _: Option<String> = pool
        .set(
            "wc:token_secret",
            random_hex(32),
            None,
            Some(SetOptions::NX),
            false,
        )
        .await
        .map_err(redis::unavailable)?;
    let secret: Option<String> = pool
        .get("wc:token_secret")
        .await
        .map_err(redis::unavailable)?;
    tracing::warn!("WEBCHAT_TOKEN_SECRET is not set; using the key shared through Redis");
    secret
        .map(String::into_bytes)
        .ok_or_else(|| StoreError::Internal("token secret vanished from Redis".into()))
}

/// The token key in `<data dir>/token_secret` (the chat server's file), created if missing.
fn secret_in_data_dir(dir: &Path) -> Result<Vec<u8>, StoreError> {
    let path = dir.join("token_secret");
    match std::fs::read_to_string(&path) {
        Ok(secret) if !secret.trim().is_empty() => return Ok(secret.trim().as_bytes().to_vec()),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(StoreError::Internal(format!(
                "read {}: {e}",
                path.display()
            )))
        }
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| StoreError::Internal(format!("create {}: {e}", dir.display())))?;
    let secret = random_hex(32);
    write_private(&path, &secret)
        .map_err(|e| StoreError::Internal(format!("write {}: {e}", path.display())))?;
    tracing::warn!(path = %path.display(), "WEBCHAT_TOKEN_SECRET is not set; created a token key file");
    Ok(secret.into_bytes())
}

/// Writes a file only its owner can read (it holds a key).
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(contents.as_bytes())
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
        let first = secret_in_data_dir(dir.path()).expect("created");
        assert_eq!(first.len(), 64);
        let again = secret_in_data_dir(dir.path()).expect("read");
        assert_eq!(first, again);
        std::fs::write(dir.path().join("token_secret"), "  abc\n").expect("write");
        assert_eq!(secret_in_data_dir(dir.path()).expect("read"), b"abc");
    }
}
