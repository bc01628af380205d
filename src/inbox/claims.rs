//! Idempotency of group messages: one claim per send, not one key per recipient.
//!
//! A re-sent (sender, group, MsgID) must be acked again and not delivered twice. Keeping an
//! idempotency key in every recipient's inbox did that, but cost a 10,000-member group
//! 10,000 keys per message, each kept for the whole window (24 h): a busy large group piled
//! up hundreds of millions of keys a day, and the key writes were a third of Redis's work
//! per fan-out. Instead, each send keeps one claim under the sender, which moves through
//! [`SendState`]:
//! - no claim: this is the first send; claim it as `Sending` and fan out;
//! - `Sending`, fresh: another send of it is under way; wait for it to end;
//! - `Delivered`: every recipient has it; ack with the first SentAt, deliver nothing;
//! - `Incomplete`: an earlier send missed some recipients (or may have: appends whose
//!   outcome is unknown count as missed); deliver to those, with the first SentAt;
//! - `Sending`, stale: the node sending it stopped mid-way; deliver to everyone again.
//!
//! A first send that surely stored nothing (every append refused) drops its claim instead,
//! so its re-send is a first send again. Nothing is ever lost. The price: a recipient can get
//! a second copy (another Seq, the same MsgID and SentAt) after a failure whose outcome is
//! unknown: a batch whose reply was lost with the connection, or a node that stopped
//! mid-fan-out (docs/protocol.md lists every case).

use std::time::Duration;

use super::{DedupeKey, InboxStore, SwapOutcome};
use crate::{domain::now_millis, storage::StoreError};

/// A `Sending` claim older than this is taken for abandoned (its node stopped mid-way): a
/// fan-out to 100,000 members takes a few seconds, not a minute.
pub const STALE_AFTER_MS: i64 = 60_000;
/// How long a re-send waits for another send of the same message to end.
const WAIT_FOR_OTHER_SEND: Duration = Duration::from_secs(10);
/// How often a waiting re-send looks at the claim again.
const LOOK_AGAIN_EVERY: Duration = Duration::from_millis(25);

/// Where a group message's send stands, as its claim records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendState {
    /// A fan-out is under way since `claimed_at` (Unix ms).
    Sending { sent_at: i64, claimed_at: i64 },
    /// Every recipient has it.
    Delivered { sent_at: i64 },
    /// The last fan-out failed for `missing`; `echoed`: the sender's other sockets got
    /// their live copy.
    Incomplete {
        sent_at: i64,
        missing: Vec<String>,
        echoed: bool,
    },
}

impl SendState {
    /// The claim's stored text.
    pub fn encode(&self) -> String {
        match self {
            Self::Sending {
                sent_at,
                claimed_at,
            } => format!("s:{sent_at}:{claimed_at}"),
            Self::Delivered { sent_at } => format!("d:{sent_at}"),
            Self::Incomplete {
                sent_at,
                missing,
                echoed,
            } => format!(
                "i:{sent_at}:{}:{}",
                u8::from(*echoed),
                serde_json::to_string(missing).unwrap_or_else(|_| "[]".into())
            ),
        }
    }

    /// Reads a claim's text; `None` for text this code never writes.
    pub fn decode(text: &str) -> Option<Self> {
        let (state, rest) = text.split_once(':')?;
        let (sent_at, rest) = rest.split_once(':').unwrap_or((rest, ""));
        let sent_at = sent_at.parse().ok()?;
        match state {
            "s" => Some(Self::Sending {
                sent_at,
                claimed_at: rest.parse().ok()?,
            }),
            "d" => Some(Self::Delivered { sent_at }),
            "i" => {
                let (echoed, missing) = rest.split_once(':')?;
                Some(Self::Incomplete {
                    sent_at,
                    missing: serde_json::from_str(missing).ok()?,
                    echoed: echoed == "1",
                })
            }
            _ => None,
        }
    }
}

/// What a send of a group message is to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Fan out to `recipients` (`None`: every recipient) with the SentAt in `claimed` (the
    /// first send's, on a re-send), with the live copy for the sender's other sockets if
    /// `echo_owed`, then report the end with [`finish_send`].
    FanOut {
        recipients: Option<Vec<String>>,
        echo_owed: bool,
        /// No earlier send of it was ever recorded: if this one stores nothing for sure,
        /// its claim can be dropped (see [`SendEnd::NothingStored`]).
        fresh: bool,
        claimed: SendState,
    },
    /// Delivered already: ack with the first SentAt.
    Delivered { sent_at: i64 },
}

impl Claim {
    /// The SentAt to deliver and ack with.
    pub fn sent_at(&self) -> i64 {
        match self {
            Self::FanOut { claimed, .. } => claimed.sent_at(),
            Self::Delivered { sent_at } => *sent_at,
        }
    }
}

impl SendState {
    /// The first send's SentAt.
    pub fn sent_at(&self) -> i64 {
        match self {
            Self::Sending { sent_at, .. }
            | Self::Delivered { sent_at }
            | Self::Incomplete { sent_at, .. } => *sent_at,
        }
    }
}

/// What a send does about a claim it found.
#[derive(Debug, PartialEq, Eq)]
enum Decision {
    /// Nothing to send.
    Report(Claim),
    /// Another send is under way: look again later.
    Wait,
    /// Take the claim over (swap it for the claim's `claimed`) and send.
    TakeOver(Claim),
}

/// What to do about a claim holding `current` (`None`: no claim) at `now`, for a send
/// accepted at `sent_at`.
fn decide(current: Option<&str>, sent_at: i64, now: i64) -> Decision {
    let take_over = |sent_at, recipients, echo_owed, fresh| {
        Decision::TakeOver(Claim::FanOut {
            recipients,
            echo_owed,
            fresh,
            claimed: SendState::Sending {
                sent_at,
                claimed_at: now,
            },
        })
    };
    match current.map(SendState::decode) {
        None => take_over(sent_at, None, true, true),
        Some(Some(SendState::Delivered { sent_at })) => {
            Decision::Report(Claim::Delivered { sent_at })
        }
        Some(Some(SendState::Sending {
            claimed_at,
            sent_at,
        })) => {
            if now.saturating_sub(claimed_at) < STALE_AFTER_MS {
                Decision::Wait
            } else {
                take_over(sent_at, None, true, false)
            }
        }
        Some(Some(SendState::Incomplete {
            sent_at,
            missing,
            echoed,
        })) => take_over(sent_at, Some(missing), !echoed, false),
        // Unreadable: deliver to everyone rather than risk losing it.
        Some(None) => take_over(sent_at, None, true, false),
    }
}

/// Claims the send of the group message `key`, accepted now at `sent_at`. Waits while
/// another send of it is under way, up to [`WAIT_FOR_OTHER_SEND`].
pub async fn claim_send(
    store: &dyn InboxStore,
    key: &DedupeKey,
    sent_at: i64,
) -> Result<Claim, ClaimError> {
    let deadline = tokio::time::Instant::now() + WAIT_FOR_OTHER_SEND;
    // A first send finds no claim: try that first, without a read.
    let mut current: Option<String> = None;
    loop {
        match decide(current.as_deref(), sent_at, now_millis()) {
            Decision::Report(claim) => return Ok(claim),
            Decision::Wait => {
                if tokio::time::Instant::now() >= deadline {
                    return Err(ClaimError::OtherSendUnderWay);
                }
                tokio::time::sleep(LOOK_AGAIN_EVERY).await;
                current = store.read_send_claim(key).await?;
            }
            Decision::TakeOver(claim) => {
                let Claim::FanOut { claimed, .. } = &claim else {
                    return Ok(claim);
                };
                match store
                    .swap_send_claim(key, current.as_deref(), Some(&claimed.encode()))
                    .await?
                {
                    SwapOutcome::Swapped => return Ok(claim),
                    // Someone moved it first: decide again on what it holds now.
                    SwapOutcome::Holds(now_holds) => current = now_holds,
                }
            }
        }
    }
}

/// How a send's fan-out ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendEnd {
    /// Every recipient has it.
    Delivered,
    /// `missing` did not get it; `echoed`: the sender's other sockets have their copy.
    Incomplete { missing: Vec<String>, echoed: bool },
    /// A fresh send stored nothing, for sure (every append refused, or none made): the
    /// claim is dropped, so a re-send is a first send again (with its live copy and
    /// receipt count). Appends whose outcome is unknown (a lost connection) are
    /// `Incomplete` instead: they may have been stored, and a completion keeps the SentAt.
    NothingStored,
}

/// Attempts at recording a send's end: a claim left `Sending` would hold re-sends off for
/// [`STALE_AFTER_MS`] and then deliver to everyone again.
const FINISH_ATTEMPTS: u32 = 3;

/// Records how a send that claimed `claimed` ended, retrying a failed store briefly. Left
/// alone when another send took the claim over meanwhile (it records its own end).
pub async fn finish_send(
    store: &dyn InboxStore,
    key: &DedupeKey,
    claimed: &SendState,
    end: SendEnd,
) -> Result<(), StoreError> {
    let sent_at = claimed.sent_at();
    let end = match end {
        SendEnd::Delivered => Some(SendState::Delivered { sent_at }),
        SendEnd::Incomplete { missing, echoed } => Some(SendState::Incomplete {
            sent_at,
            missing,
            echoed,
        }),
        SendEnd::NothingStored => None,
    };
    let (expected, end) = (claimed.encode(), end.map(|e| e.encode()));
    let mut attempt = 1;
    loop {
        match store
            .swap_send_claim(key, Some(&expected), end.as_deref())
            .await
        {
            Ok(SwapOutcome::Swapped) => return Ok(()),
            Ok(SwapOutcome::Holds(_)) => {
                tracing::info!(
                    "a send's claim was taken over while it ran; its end is not recorded"
                );
                return Ok(());
            }
            Err(e) if attempt >= FINISH_ATTEMPTS => return Err(e),
            Err(e) => {
                tracing::debug!(error = %e, attempt, "recording a send's end failed; retrying");
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
                attempt += 1;
            }
        }
    }
}

/// Why a send could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum ClaimError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Another send of the same message did not end within the wait.
    #[error("a send with this MsgID is still under way; re-send it later")]
    OtherSendUnderWay,
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_700_000_000_000;

    #[test]
    fn states_survive_their_text() {
        for state in [
            SendState::Sending {
                sent_at: T,
                claimed_at: T + 5,
            },
            SendState::Delivered { sent_at: T },
            SendState::Incomplete {
                sent_at: T,
                missing: vec!["bob".into(), "carol".into()],
                echoed: true,
            },
            SendState::Incomplete {
                sent_at: T,
                missing: vec!["a:b".into()],
                echoed: false,
            },
        ] {
            assert_eq!(SendState::decode(&state.encode()), Some(state));
        }
        assert_eq!(SendState::decode("x:1"), None);
        assert_eq!(SendState::decode("d:abc"), None);
        assert_eq!(SendState::decode("i:1:1:not json"), None);
        assert_eq!(SendState::decode("i:1:[]"), None);
        assert_eq!(SendState::decode(""), None);
    }

    #[test]
    fn a_first_send_claims_and_fans_out_to_everyone() {
        assert_eq!(
            decide(None, T, T),
            Decision::TakeOver(Claim::FanOut {
                recipients: None,
                echo_owed: true,
                fresh: true,
                claimed: SendState::Sending {
                    sent_at: T,
                    claimed_at: T
                },
            })
        );
    }

    #[test]
    fn a_delivered_send_is_reported_with_its_first_sent_at() {
        let done = SendState::Delivered { sent_at: T }.encode();
        assert_eq!(
            decide(Some(&done), T + 1_000, T + 1_000),
            Decision::Report(Claim::Delivered { sent_at: T })
        );
    }

    #[test]
    fn a_send_under_way_is_waited_for_until_it_looks_abandoned() {
        let sending = SendState::Sending {
            sent_at: T,
            claimed_at: T,
        }
        .encode();
        assert_eq!(decide(Some(&sending), T + 9, T + 10), Decision::Wait);
        assert_eq!(
            decide(Some(&sending), T + 9, T + STALE_AFTER_MS - 1),
            Decision::Wait
        );
        // Its node stopped mid-way: nobody knows who got it, so everyone gets it (the first
        // SentAt kept), rather than anyone missing it.
        let later = T + STALE_AFTER_MS;
        assert_eq!(
            decide(Some(&sending), later, later),
            Decision::TakeOver(Claim::FanOut {
                recipients: None,
                echo_owed: true,
                // Its node may have stored it for some: never dropped as "nothing stored".
                fresh: false,
                claimed: SendState::Sending {
                    sent_at: T,
                    claimed_at: later
                },
            })
        );
    }

    #[test]
    fn an_incomplete_send_is_completed_for_whom_it_missed() {
        for echoed in [true, false] {
            let incomplete = SendState::Incomplete {
                sent_at: T,
                missing: vec!["carol".into()],
                echoed,
            }
            .encode();
            assert_eq!(
                decide(Some(&incomplete), T + 50, T + 50),
                Decision::TakeOver(Claim::FanOut {
                    recipients: Some(vec!["carol".into()]),
                    // The live copy goes out with the completion if it was lost.
                    echo_owed: !echoed,
                    fresh: false,
                    claimed: SendState::Sending {
                        sent_at: T,
                        claimed_at: T + 50
                    },
                })
            );
        }
    }

    #[test]
    fn an_unreadable_claim_sends_to_everyone_rather_than_nobody() {
        assert!(matches!(
            decide(Some("garbage"), T, T),
            Decision::TakeOver(Claim::FanOut {
                recipients: None,
                fresh: false,
                ..
            })
        ));
    }
}
