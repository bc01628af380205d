//! Checks on user-chosen text that other people see.

/// Whether `text` holds a Unicode bidirectional formatting character: the embeddings and
/// overrides (U+202A–U+202E), the isolates (U+2066–U+2069), and the implicit marks (U+200E,
/// U+200F, U+061C). An override such as U+202E makes the rest of a name display reversed
/// (`"\u{202E}nimda"` shows as "admin"), and one left unclosed spills into the text around it:
/// display names refuse them all.
pub fn has_bidi_controls(text: &str) -> bool {
    text.chars().any(|c| {
        matches!(
            c,
            '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}' | '\u{061C}'
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bidi_formatting_characters_are_found_and_plain_rtl_text_is_not() {
        for c in [
            '\u{202A}', '\u{202B}', '\u{202C}', '\u{202D}', '\u{202E}', '\u{2066}', '\u{2067}',
            '\u{2068}', '\u{2069}', '\u{200E}', '\u{200F}', '\u{061C}',
        ] {
            assert!(has_bidi_controls(&format!("ab{c}cd")), "{:04X}", c as u32);
        }
        assert!(!has_bidi_controls("Ann"));
        assert!(!has_bidi_controls("שלום"), "right-to-left letters are fine");
        assert!(!has_bidi_controls("مرحبا Ann"));
        assert!(!has_bidi_controls(""));
    }
}
