//! Start-up: picks the back-ends from the settings, loads the token key, binds the listener.
//!
//! | WEBCHAT_DYNAMODB_ENDPOINT | WEBCHAT_REDIS_URL | system of record | cache | revocation, publish |
//! |---|---|---|---|---|
//! | set   | set   | DynamoDB            | Redis | Redis |
//! | set   | unset | DynamoDB            | none  | none  |
//! | unset | set   | Redis (`profile_rec`) | none (it would cache Redis in Redis) | Redis |
//! | unset | unset | redb `profiles.redb` | none  | none  |

use std::{future::Future, net::SocketAddr, sync::Arc};

use tokio::net::TcpListener;
use webchat_core::token_key;

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
        let token_key = token_key::load(
            settings.token_secret.as_deref(),
            pool.as_ref(),
            &settings.data_dir,
        )
        .await?;
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
