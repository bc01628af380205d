//! Metadata is never served back (contract §12): before a JPEG or PNG upload is stored, a
//! copy without its metadata is written, streaming, and that copy is what is kept. The
//! pixels are untouched (no re-encoding, no quality loss).
//!
//! - JPEG: APP1–APP13, APP15 (EXIF, XMP, ICC, maker notes, Photoshop IRB…) and COM segments
//!   are dropped; APP0 (JFIF) and APP14 (Adobe, which decides how CMYK is decoded) stay. A
//!   photo's EXIF orientation is kept as a minimal EXIF segment holding only that tag, so a
//!   phone picture is not shown sideways.
//! - PNG: `eXIf`, `tEXt`, `zTXt`, `iTXt` and `tIME` chunks are dropped.
//!
//! GIF has no EXIF, and WebP and PDF are stored as uploaded (see docs/protocol.md).

use std::io::{self, Read, Write};

/// A file that does not have the structure its signature promised.
fn malformed(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_owned())
}

/// Copies the JPEG in `input` to `output` without its metadata segments; `orientation` (an
/// EXIF orientation value, 2–8) is written back as the only EXIF tag.
pub fn jpeg(
    input: &mut impl Read,
    output: &mut impl Write,
    orientation: Option<u8>,
) -> io::Result<()> {
    let mut soi = [0u8; 2];
    input.read_exact(&mut soi)?;
    if soi != [0xFF, 0xD8] {
        return Err(malformed("JPEG without SOI"));
    }
    output.write_all(&soi)?;
    let mut orientation = orientation.filter(|o| (2..=8).contains(o));
    loop {
        let mut marker = [0u8; 1];
        input.read_exact(&mut marker)?;
        if marker[0] != 0xFF {
            return Err(malformed("JPEG segment without a marker"));
        }
        // Fill bytes: any number of 0xFF before the marker code.
        let code = loop {
            input.read_exact(&mut marker)?;
            if marker[0] != 0xFF {
                break marker[0];
            }
        };
        if code != 0xE0 {
            if let Some(value) = orientation.take() {
                output.write_all(&orientation_segment(value))?;
            }
        }
        match code {
            // Start of scan (the image data follows) and end of image: the rest as is.
            0xDA | 0xD9 => {
                output.write_all(&[0xFF, code])?;
                io::copy(input, output)?;
                return Ok(());
            }
            // Segments without a length.
            0x01 | 0xD0..=0xD7 => output.write_all(&[0xFF, code])?,
            _ => {
                let mut length = [0u8; 2];
                input.read_exact(&mut length)?;
                let payload = u64::from(u16::from_be_bytes(length))
                    .checked_sub(2)
                    .ok_or_else(|| malformed("JPEG segment length below 2"))?;
                let metadata = matches!(code, 0xE1..=0xED | 0xEF | 0xFE);
                let mut segment = input.by_ref().take(payload);
                if metadata {
                    io::copy(&mut segment, &mut io::sink())?;
                } else {
                    output.write_all(&[0xFF, code])?;
                    output.write_all(&length)?;
                    io::copy(&mut segment, output)?;
                }
                if segment.limit() != 0 {
                    return Err(malformed("JPEG segment cut short"));
                }
            }
        }
    }
}

/// An APP1 segment holding an EXIF block with one tag: Orientation (0x0112) = `value`.
fn orientation_segment(value: u8) -> Vec<u8> {
    let mut out = vec![0xFF, 0xE1, 0, 34];
    out.extend_from_slice(b"Exif\0\0");
    out.extend_from_slice(b"MM\0\x2A\0\0\0\x08"); // big-endian TIFF, first IFD at 8
    out.extend_from_slice(&[0, 1]); // one entry
    out.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, value, 0, 0]); // SHORT, count 1
    out.extend_from_slice(&[0, 0, 0, 0]); // no next IFD
    out
}

/// Copies the PNG in `input` to `output` without its text, EXIF and time chunks.
pub fn png(input: &mut impl Read, output: &mut impl Write) -> io::Result<()> {
    let mut signature = [0u8; 8];
    input.read_exact(&mut signature)?;
    if &signature != b"\x89PNG\r\n\x1a\n" {
        return Err(malformed("PNG without its signature"));
    }
    output.write_all(&signature)?;
    loop {
        let mut header = [0u8; 8];
        input.read_exact(&mut header)?;
        let length = u64::from(u32::from_be_bytes([
            header[0], header[1], header[2], header[3],
        ]));
        let kind = [header[4], header[5], header[6], header[7]];
        let metadata = matches!(&kind, b"eXIf" | b"tEXt" | b"zTXt" | b"iTXt" | b"tIME");
        // Data and CRC.
        let mut chunk = input.by_ref().take(length + 4);
        if metadata {
            io::copy(&mut chunk, &mut io::sink())?;
        } else {
            output.write_all(&header)?;
            io::copy(&mut chunk, output)?;
        }
        if chunk.limit() != 0 {
            return Err(malformed("PNG chunk cut short"));
        }
        if &kind == b"IEND" {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(code: u8, payload: &[u8]) -> Vec<u8> {
        let len = u16::try_from(payload.len() + 2).expect("small");
        let mut out = vec![0xFF, code];
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn jpeg_loses_exif_and_comments_but_keeps_jfif_tables_and_scan() {
        let mut input = vec![0xFF, 0xD8];
        input.extend(segment(0xE0, b"JFIF\0\x01\x01"));
        input.extend(segment(0xE1, b"Exif\0\0GPS 52.37N 4.89E"));
        input.extend(segment(0xFE, b"camera owner"));
        input.extend(segment(0xDB, b"quant"));
        input.extend([0xFF, 0xDA, 1, 2, 3, 0xFF, 0xD9]);
        let mut out = Vec::new();
        jpeg(&mut &input[..], &mut out, None).expect("strip");
        let text = String::from_utf8_lossy(&out);
        assert!(!text.contains("GPS") && !text.contains("owner"), "{text}");
        assert!(text.contains("JFIF") && text.contains("quant"));
        assert!(out.ends_with(&[0xFF, 0xDA, 1, 2, 3, 0xFF, 0xD9]));
    }

    #[test]
    fn jpeg_orientation_survives_as_the_only_exif_tag() {
        let mut input = vec![0xFF, 0xD8];
        input.extend(segment(0xE0, b"JFIF"));
        input.extend(segment(0xE1, b"Exif\0\0secret"));
        input.extend([0xFF, 0xDA, 9]);
        let mut out = Vec::new();
        jpeg(&mut &input[..], &mut out, Some(6)).expect("strip");
        let at = out
            .windows(4)
            .position(|w| w == b"Exif")
            .expect("exif kept");
        assert!(at > 6, "after the JFIF segment");
        assert!(!String::from_utf8_lossy(&out).contains("secret"));
        assert!(out.windows(3).any(|w| w == [0x12, 0, 3]), "orientation tag");
    }

    #[test]
    fn malformed_jpeg_and_png_are_errors_not_panics() {
        for bad in [
            &b""[..],
            b"\xFF\xD8",
            b"\xFF\xD8\xFF\xE1\x00\x01",
            b"\xFF\xD8\x00",
        ] {
            assert!(jpeg(&mut &bad[..], &mut Vec::new(), None).is_err());
        }
        for bad in [&b"\x89PNG\r\n\x1a\n\0\0\0\xFFIHDR"[..], b"nope"] {
            assert!(png(&mut &bad[..], &mut Vec::new()).is_err());
        }
    }

    #[test]
    fn png_loses_text_chunks() {
        let chunk = |kind: &[u8], data: &[u8]| {
            let mut out = u32::try_from(data.len())
                .expect("small")
                .to_be_bytes()
                .to_vec();
            out.extend_from_slice(kind);
            out.extend_from_slice(data);
            out.extend_from_slice(&[0, 0, 0, 0]);
            out
        };
        let mut input = b"\x89PNG\r\n\x1a\n".to_vec();
        input.extend(chunk(b"IHDR", b"hdr"));
        input.extend(chunk(b"tEXt", b"Author\0me"));
        input.extend(chunk(b"eXIf", b"gps"));
        input.extend(chunk(b"IDAT", b"pixels"));
        input.extend(chunk(b"IEND", b""));
        let mut out = Vec::new();
        png(&mut &input[..], &mut out).expect("strip");
        let text = String::from_utf8_lossy(&out);
        assert!(!text.contains("Author") && !text.contains("gps"));
        assert!(text.contains("pixels") && text.contains("IEND"));
    }
}
