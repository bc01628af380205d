//! Routing of events to the sockets that hold their receiver.
//!
//! Every user has an own channel (receiver-keyed; there is no shared room). A node subscribes
//! only to the channels of users with a socket on it, and the [`Router`] hands each message to
//! those local sockets. Owns the [`Bus`] trait (in-process and Redis pub/sub), the channel
//! payload format and the local routing table; does not own storage: stored events are
//! published by the inbox, atomically with the write.

mod memory;
mod redis;
mod router;

use std::sync::Arc;

use async_trait::async_trait;

pub use self::memory::MemoryBus;
pub use self::redis::RedisBus;
pub use self::router::{Attachment, Delivery, Router};
use crate::{
    domain::{Seq, UserId, WireEvent},
    storage::StoreError,
};

/// Pub/sub between nodes, one channel per user.
#[async_trait]
pub trait Bus: Send + Sync {
    /// Starts receiving the channels of `users` on this node; returns once active.
    async fn subscribe(&self, users: &[String]) -> Result<(), StoreError>;
    /// Stops receiving the channels of `users`.
    async fn unsubscribe(&self, users: &[String]) -> Result<(), StoreError>;
    /// Sends a live-only event (never stored, no Seq) to every socket of `to`, except the
    /// socket `skip_socket` (the one that caused it).
    async fn publish_live(
        &self,
        to: &UserId,
        skip_socket: Option<&str>,
        event: &WireEvent,
    ) -> Result<(), StoreError>;
}

/// A message as it arrives from a user's channel.
#[derive(Debug, Clone)]
pub enum BusMessage {
    /// A stored event: deliver with an ack request.
    Stored {
        /// Its position in the receiver's inbox.
        seq: Seq,
        /// The event (without Seq).
        event: Arc<WireEvent>,
    },
    /// A live-only event.
    Live {
        /// The socket id that must not get it.
        skip_socket: Option<String>,
        /// The event.
        event: Arc<WireEvent>,
    },
}

/// Channel payload of a stored event: `S<seq>\n<event JSON>`. The Redis inbox script builds the
/// same bytes, so the two stay in one place of truth: here and `inbox/append.lua`.
pub fn encode_live(skip_socket: Option<&str>, event_json: &str) -> String {
    format!("L{}\n{event_json}", skip_socket.unwrap_or(""))
}

/// Decodes a channel payload; `None` for anything malformed (logged by the caller).
pub fn decode(payload: &str) -> Option<BusMessage> {
    let (head, json) = payload.split_once('\n')?;
    let event: WireEvent = serde_json::from_str(json).ok()?;
    let event = Arc::new(event);
    match head.split_at_checked(1)? {
        ("S", seq) => Some(BusMessage::Stored {
            seq: seq.parse().ok()?,
            event,
        }),
        ("L", skip) => Some(BusMessage::Live {
            skip_socket: (!skip.is_empty()).then(|| skip.to_owned()),
            event,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let json = serde_json::to_string(&WireEvent::new("message", "a", "b", "m", "x\ny".into()))
            .expect("json");
        match decode(&format!("S42\n{json}")) {
            Some(BusMessage::Stored { seq, event }) => {
                assert_eq!(seq, 42);
                assert_eq!(event.body, "x\ny");
            }
            other => panic!("unexpected {other:?}"),
        }
        match decode(&encode_live(Some("sid1"), &json)) {
            Some(BusMessage::Live { skip_socket, .. }) => {
                assert_eq!(skip_socket.as_deref(), Some("sid1"))
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(decode(&encode_live(None, &json)).is_some());
        for junk in ["", "S\n{}", "Sx\n{}", "Q1\n{}", "S1\nnot json"] {
            assert!(decode(junk).is_none(), "{junk:?}");
        }
    }
}
