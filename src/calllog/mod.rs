//! The call log: every conversation event, kept for history and audit.

pub mod table;
