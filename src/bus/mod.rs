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
pub use self::redis::{redis_publish, RedisBus};
pub use self::router::{Attachment, Delivery, Router, SubscriptionRequests};
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

/// Channel payload of a live-only event: `L<socket to skip>\n<event JSON>`. Stored events are
/// `S<seq>\n<event JSON>`, built by `inbox/append.lua` (and `L…` for the sender's copy there);
/// [`Envelope::read`] reads both.
pub fn encode_live(skip_socket: Option<&str>, event_json: &str) -> String {
    format!("L{}\n{event_json}", skip_socket.unwrap_or(""))
}

/// A channel payload whose header is read but whose event JSON is not parsed yet, so a node
/// can drop a message none of its sockets wants without paying for the parse
/// ([`EventDecoder`] parses it).
pub enum Envelope<'a> {
    /// `S<seq>`.
    Stored(Seq, &'a str),
    /// `L<skip socket>`.
    Live(Option<&'a str>, &'a str),
}

impl<'a> Envelope<'a> {
    /// Reads the header of a payload; `None` when malformed.
    pub fn read(payload: &'a str) -> Option<Self> {
        let (head, json) = payload.split_once('\n')?;
        match head.split_at_checked(1)? {
            ("S", seq) => Some(Self::Stored(seq.parse().ok()?, json)),
            ("L", skip) => Some(Self::Live((!skip.is_empty()).then_some(skip), json)),
            _ => None,
        }
    }
}

/// Parses channel payloads, reusing the previous event when the next payload carries the
/// same JSON: a group message reaches a node once per local member, all with one JSON, so
/// a 10,000-member fan-out parses it once per batch instead of once per member.
#[derive(Default)]
pub struct EventDecoder {
    last_json: String,
    last_event: Option<Arc<WireEvent>>,
}

impl EventDecoder {
    /// Parses the event of `envelope`; `None` when its JSON is malformed.
    pub fn open(&mut self, envelope: Envelope<'_>) -> Option<BusMessage> {
        match envelope {
            Envelope::Stored(seq, json) => Some(BusMessage::Stored {
                seq,
                event: self.parse(json)?,
            }),
            Envelope::Live(skip, json) => Some(BusMessage::Live {
                skip_socket: skip.map(str::to_owned),
                event: self.parse(json)?,
            }),
        }
    }

    fn parse(&mut self, json: &str) -> Option<Arc<WireEvent>> {
        if let Some(event) = self.last_event.as_ref().filter(|_| self.last_json == json) {
            return Some(event.clone());
        }
        let event = Arc::new(serde_json::from_str::<WireEvent>(json).ok()?);
        self.last_json.clear();
        self.last_json.push_str(json);
        self.last_event = Some(event.clone());
        Some(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(payload: &str) -> Option<BusMessage> {
        EventDecoder::default().open(Envelope::read(payload)?)
    }

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

    #[test]
    fn the_decoder_parses_a_repeated_json_once_and_a_new_one_afresh() {
        let event = |body: &str| {
            serde_json::to_string(&WireEvent::new("message", "a", "g", "m", body.into()))
                .expect("json")
        };
        let stored = |decoder: &mut EventDecoder, seq: u64, json: &str| {
            let payload = format!("S{seq}\n{json}");
            match decoder.open(Envelope::read(&payload).expect("envelope")) {
                Some(BusMessage::Stored { seq: got, event }) => {
                    assert_eq!(got, seq);
                    event
                }
                other => panic!("unexpected {other:?}"),
            }
        };
        let mut decoder = EventDecoder::default();
        let (one, two) = (event("one"), event("two"));
        let first = stored(&mut decoder, 1, &one);
        let again = stored(&mut decoder, 2, &one);
        assert!(Arc::ptr_eq(&first, &again), "the same JSON is parsed once");
        let other = stored(&mut decoder, 3, &two);
        assert_eq!(other.body, "two");
        assert!(decoder
            .open(Envelope::read("S4\nnot json").expect("envelope"))
            .is_none());
        assert_eq!(stored(&mut decoder, 5, &two).body, "two");
    }
}
