//! What an upload is, decided from its bytes (never from the client's Content-Type or name):
//! PNG, JPEG, GIF, WebP, PDF by their signatures (the `infer` crate), and plain text when
//! the bytes are UTF-8 without NULs and do not open like markup a browser would render.

/// The kinds of file an attachment may be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `image/png`
    Png,
    /// `image/jpeg`
    Jpeg,
    /// `image/gif`
    Gif,
    /// `image/webp`
    Webp,
    /// `application/pdf`
    Pdf,
    /// `text/plain; charset=utf-8`
    Text,
}

/// How many leading bytes [`sniff`] wants (fewer when the file is shorter).
pub const HEAD_BYTES: usize = 4096;

impl Kind {
    /// The Content-Type it is served with.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Png => "image/png",
            Self::Jpeg => "image/jpeg",
            Self::Gif => "image/gif",
            Self::Webp => "image/webp",
            Self::Pdf => "application/pdf",
            Self::Text => "text/plain; charset=utf-8",
        }
    }

    /// The kind a stored Content-Type names.
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        [
            Self::Png,
            Self::Jpeg,
            Self::Gif,
            Self::Webp,
            Self::Pdf,
            Self::Text,
        ]
        .into_iter()
        .find(|k| k.content_type() == content_type)
    }

    /// Whether it is an image (gets a thumbnail, may be shown inline).
    pub fn is_image(self) -> bool {
        matches!(self, Self::Png | Self::Jpeg | Self::Gif | Self::Webp)
    }

    /// File name extensions a downloaded copy may keep; the first is added to any other name.
    pub fn extensions(self) -> &'static [&'static str] {
        match self {
            Self::Png => &["png"],
            Self::Jpeg => &["jpg", "jpeg"],
            Self::Gif => &["gif"],
            Self::Webp => &["webp"],
            Self::Pdf => &["pdf"],
            Self::Text => &["txt", "log", "md", "csv"],
        }
    }
}

/// The kind of a file whose first bytes are `head` (all of them when the file is shorter
/// than [`HEAD_BYTES`]; `complete` says so). `None`: not an allowed type. A text verdict
/// holds only if the rest of the file is UTF-8 too, which the caller checks as it streams.
pub fn sniff(head: &[u8], complete: bool) -> Option<Kind> {
    if let Some(found) = infer::get(head) {
        return match found.mime_type() {
            "image/png" => Some(Kind::Png),
            "image/jpeg" => Some(Kind::Jpeg),
            "image/gif" => Some(Kind::Gif),
            "image/webp" => Some(Kind::Webp),
            "application/pdf" => Some(Kind::Pdf),
            // Anything else it recognises (archives, executables, HTML, XML…) is refused.
            _ => None,
        };
    }
    looks_like_plain_text(head, complete).then_some(Kind::Text)
}

/// UTF-8 (a sequence cut at the end of an incomplete head is allowed), no NUL and no markup
/// opening: a browser that ignored `nosniff` would render none of it as HTML.
fn looks_like_plain_text(head: &[u8], complete: bool) -> bool {
    if head.is_empty() || head.contains(&0) {
        return false;
    }
    match std::str::from_utf8(head) {
        Ok(_) => {}
        Err(e) if !complete && e.error_len().is_none() => {}
        Err(_) => return false,
    }
    !opens_like_markup(head)
}

/// The WHATWG MIME sniffing standard's HTML signatures (and XML, SVG): after optional BOM and
/// whitespace, one of these tags (case-insensitive), followed by a space or `>`.
fn opens_like_markup(head: &[u8]) -> bool {
    const TAGS: &[&str] = &[
        "<!doctype html",
        "<html",
        "<head",
        "<script",
        "<iframe",
        "<h1",
        "<div",
        "<font",
        "<table",
        "<a",
        "<style",
        "<title",
        "<b",
        "<body",
        "<br",
        "<p",
        "<svg",
        "<img",
        "<object",
        "<embed",
        "<meta",
        "<link",
    ];
    let text = head.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(head);
    let start = text
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r' | b'\x0C'))
        .unwrap_or(text.len());
    let text = &text[start..];
    if text.starts_with(b"<!--") || text.starts_with(b"<?xml") {
        return true;
    }
    TAGS.iter().any(|tag| {
        let tag = tag.as_bytes();
        text.len() > tag.len()
            && text[..tag.len()].eq_ignore_ascii_case(tag)
            && matches!(text[tag.len()], b' ' | b'>' | b'\t' | b'\n' | b'\r' | b'/')
    })
}

/// Checks text that arrives in chunks: UTF-8 across chunk boundaries, no NUL.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    /// The bytes of a sequence cut by the end of the last chunk (at most 3).
    carry: Vec<u8>,
}

impl Utf8Stream {
    /// Whether `chunk` continues valid text.
    pub fn feed(&mut self, chunk: &[u8]) -> bool {
        if chunk.contains(&0) {
            return false;
        }
        let mut joined;
        let bytes = if self.carry.is_empty() {
            chunk
        } else {
            joined = std::mem::take(&mut self.carry);
            joined.extend_from_slice(chunk);
            &joined[..]
        };
        match std::str::from_utf8(bytes) {
            Ok(_) => true,
            Err(e) if e.error_len().is_none() => {
                self.carry = bytes[e.valid_up_to()..].to_vec();
                true
            }
            Err(_) => false,
        }
    }

    /// Whether the text ended on a whole character.
    pub fn finish(&self) -> bool {
        self.carry.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_and_pdf_are_known_by_their_signatures() {
        assert_eq!(
            sniff(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", false),
            Some(Kind::Png)
        );
        assert_eq!(
            sniff(b"\xFF\xD8\xFF\xE0\0\x10JFIF", false),
            Some(Kind::Jpeg)
        );
        assert_eq!(sniff(b"GIF89a\x01\0\x01\0", false), Some(Kind::Gif));
        assert_eq!(sniff(b"RIFF\0\0\0\0WEBPVP8 ", false), Some(Kind::Webp));
        assert_eq!(sniff(b"%PDF-1.7\n", false), Some(Kind::Pdf));
    }

    #[test]
    fn text_is_utf8_without_markup() {
        assert_eq!(
            sniff("receipt: 12,50 €\n".as_bytes(), true),
            Some(Kind::Text)
        );
        // A head cut inside a character is still text; a whole file cut there is not.
        let euro = "€".as_bytes();
        assert_eq!(sniff(&euro[..2], false), Some(Kind::Text));
        assert_eq!(sniff(&euro[..2], true), None);
        assert_eq!(sniff(b"a < b and b > c", true), Some(Kind::Text));
        for markup in [
            &b"<!DOCTYPE html><p>hi"[..],
            b"\xEF\xBB\xBF  <HTML>",
            b"<script>alert(1)</script>",
            b"<svg xmlns='http://www.w3.org/2000/svg'/>",
            b"<?xml version='1.0'?>",
            b"<!-- x -->",
            b"\n<a href=x>",
        ] {
            assert_eq!(
                sniff(markup, true),
                None,
                "{:?}",
                String::from_utf8_lossy(markup)
            );
        }
        assert_eq!(sniff(b"bin\0ary", true), None);
        assert_eq!(sniff(b"\xFF\xFE\xFD", true), None);
        assert_eq!(sniff(b"PK\x03\x04zip", true), None);
        assert_eq!(sniff(b"", true), None);
    }

    #[test]
    fn streamed_text_is_checked_across_chunk_boundaries() {
        let text = "naïve café €".as_bytes();
        for cut in 0..text.len() {
            let mut check = Utf8Stream::default();
            assert!(
                check.feed(&text[..cut]) && check.feed(&text[cut..]),
                "cut {cut}"
            );
            assert!(check.finish());
        }
        let mut check = Utf8Stream::default();
        assert!(check.feed(&"€".as_bytes()[..1]));
        assert!(!check.finish());
        assert!(!Utf8Stream::default().feed(b"ok\xFFno"));
        assert!(!Utf8Stream::default().feed(b"nul\0"));
    }
}
