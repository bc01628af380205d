//! In-process bus for a single node without Redis.

use std::sync::Arc;

use async_trait::async_trait;

use super::{Bus, BusMessage, Router};
use crate::{
    domain::{Seq, UserId, WireEvent},
    storage::StoreError,
};

/// Delivers straight to this node's [`Router`]: on one node every socket is local.
pub struct MemoryBus {
    router: Arc<Router>,
}

impl MemoryBus {
    /// A bus feeding `router`.
    pub fn new(router: Arc<Router>) -> Self {
        Self { router }
    }

    /// Publishes a stored event; called by the embedded inbox right after its commit, in
    /// commit (and so Seq) order.
    pub fn publish_stored(&self, to: &str, seq: Seq, event: Arc<WireEvent>) {
        self.router.deliver(to, BusMessage::Stored { seq, event });
    }
}

impl MemoryBus {
    /// Publishes a live copy to `to`'s sockets except `skip_socket`; called by the embedded
    /// inbox right after the commit that stored the original.
    pub fn publish_echo(&self, to: &str, skip_socket: &str, event: Arc<WireEvent>) {
        self.router.deliver(
            to,
            BusMessage::Live {
                skip_socket: Some(skip_socket.to_owned()),
                event,
            },
        );
    }
}

#[async_trait]
impl Bus for MemoryBus {
    async fn subscribe(&self, _users: &[String]) -> Result<(), StoreError> {
        Ok(())
    }

    async fn unsubscribe(&self, _users: &[String]) -> Result<(), StoreError> {
        Ok(())
    }

    async fn publish_live(
        &self,
        to: &UserId,
        skip_socket: Option<&str>,
        event: &WireEvent,
    ) -> Result<(), StoreError> {
        self.router.deliver(
            to.as_str(),
            BusMessage::Live {
                skip_socket: skip_socket.map(str::to_owned),
                event: Arc::new(event.clone()),
            },
        );
        Ok(())
    }
}
