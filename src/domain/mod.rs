//! Domain types that parse untrusted input once, so services only ever see valid values.
//! Owns identifiers, the wire event envelope and the error vocabulary shared by every boundary;
//! owns no I/O.

mod attachment;
mod error;
mod event;
mod ids;
pub mod lifecycle;
pub mod support;
mod text;

pub use attachment::{parse_attachments, AttachmentId, MAX_ATTACHMENTS};
pub use error::{ChatError, ErrorCode};
pub use event::{now_millis, ClientCommand, EvtType, ReceiptKind, WireEvent, WithSeq};
pub use ids::{GroupId, MessageBody, MsgId, Seq, UserId};
pub use text::has_bidi_controls;
