//! Channel names: 1–64 chars of `[a-z0-9_.:-]` (contract §9).

use std::fmt;

use crate::domain::ChatError;

/// A channel name that parsed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(String);

impl ChannelName {
    /// Parses a name; `bad_request` outside the grammar.
    pub fn parse(raw: &str) -> Result<Self, ChatError> {
        let valid = (1..=64).contains(&raw.len())
            && raw.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'_' | b'.' | b':' | b'-')
            });
        if !valid {
            return Err(ChatError::bad_request(
                "a channel name is 1-64 characters of a-z, 0-9, _ . : -",
            ));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn names_follow_the_grammar() {
        for good in ["general", "stock:sku-1", "a", "x.y_z", &"a".repeat(64)] {
            assert!(ChannelName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "General",
            "a b",
            "a/b",
            "{a}",
            "é",
            &"a".repeat(65),
            "a\n",
        ] {
            assert!(ChannelName::parse(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn whatever_parses_is_in_the_grammar(raw in ".{0,80}") {
            if let Ok(name) = ChannelName::parse(&raw) {
                prop_assert!(name.as_str().len() <= 64 && !name.as_str().is_empty());
                prop_assert!(name.as_str().bytes().all(|b| b"abcdefghijklmnopqrstuvwxyz0123456789_.:-".contains(&b)));
            }
        }
    }
}
