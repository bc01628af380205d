//! Logout reaches open sockets: every node keeps which of its sockets were opened with which
//! token id, and closes them when that token is revoked anywhere (Redis channel
//! [`REVOCATION_CHANNEL`], or directly in a single embedded node).

use std::sync::Arc;

use dashmap::DashMap;
use fred::{
    clients::{Pool, SubscriberClient},
    interfaces::PubsubInterface,
};
use socketioxide::extract::SocketRef;
use tokio_util::sync::CancellationToken;

use crate::storage::{
    redis::{on_channel, unavailable},
    StoreError,
};

/// Where a logout's token id is announced to every node.
pub const REVOCATION_CHANNEL: &str = "wc:revocations";

/// This node's sockets by the token id they authenticated with.
#[derive(Default)]
pub struct TokenSockets {
    by_jti: DashMap<String, Vec<SocketRef>>,
    /// Set with Redis: revocations are published there for every node (this one included).
    publisher: Option<Pool>,
}

impl TokenSockets {
    /// An index that announces revocations through `publisher` (Redis), or only locally.
    pub fn new(publisher: Option<Pool>) -> Arc<Self> {
        Arc::new(Self {
            by_jti: DashMap::new(),
            publisher,
        })
    }

    /// Notes that `socket` authenticated with token id `jti`.
    pub fn insert(&self, jti: &str, socket: SocketRef) {
        self.by_jti.entry(jti.to_owned()).or_default().push(socket);
    }

    /// Forgets a closed socket.
    pub fn remove(&self, jti: &str, socket_id: &str) {
        if let Some(mut sockets) = self.by_jti.get_mut(jti) {
            sockets.retain(|s| s.id.as_str() != socket_id);
        }
        self.by_jti.remove_if(jti, |_, sockets| sockets.is_empty());
    }

    /// Closes this node's sockets opened with `jti`.
    pub fn close(&self, jti: &str) -> usize {
        let Some((_, sockets)) = self.by_jti.remove(jti) else {
            return 0;
        };
        for socket in &sockets {
            let _ = socket.clone().disconnect();
        }
        tracing::info!(
            sockets = sockets.len(),
            "closed the sockets of a revoked token"
        );
        sockets.len()
    }

    /// Closes the sockets of `jti` on every node.
    pub async fn revoke_everywhere(&self, jti: &str) -> Result<(), StoreError> {
        match &self.publisher {
            Some(pool) => {
                let _: i64 = pool
                    .next()
                    .publish(REVOCATION_CHANNEL, jti)
                    .await
                    .map_err(unavailable)?;
            }
            None => {
                self.close(jti);
            }
        }
        Ok(())
    }

    /// Closes local sockets for every revocation announced on Redis, until `shutdown`. A
    /// missed revocation still refuses the token on its next use (REST, reconnect); only an
    /// open socket would stay open.
    pub async fn listen(
        self: Arc<Self>,
        subscriber: SubscriberClient,
        shutdown: CancellationToken,
    ) -> Result<(), StoreError> {
        on_channel(
            &subscriber,
            REVOCATION_CHANNEL,
            "revocations",
            shutdown,
            move |jti| {
                self.close(&jti);
            },
        )
        .await
    }
}
