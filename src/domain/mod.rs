//! Domain types that parse untrusted input once, so services only ever see valid values.
//! Owns identifiers, the wire event envelope and the error vocabulary shared by every boundary;
//! owns no I/O.

mod attachment;
mod event;
pub mod lifecycle;
pub mod support;

pub use attachment::{parse_attachments, AttachmentId, MAX_ATTACHMENTS};
// Ids, the error vocabulary and the text checks are shared with the profile service, so they
// live in `webchat-core`; these are their old paths.
pub use event::{now_millis, ClientCommand, EvtType, ReceiptKind, WireEvent, WithSeq};
pub use webchat_core::error::{ChatError, ErrorCode};
pub use webchat_core::ids::{GroupId, MessageBody, MsgId, Seq, UserId};
pub use webchat_core::text::has_bidi_controls;
