//! Metadata is never served back (contract §12): before an image upload (JPEG, PNG, WebP,
//! GIF) is stored, a copy without its metadata is written, streaming, and that copy is what
//! is kept. The pixels are untouched (no re-encoding, no quality loss).
//!
//! - JPEG: APP1–APP13, APP15 (EXIF, XMP, ICC, maker notes, Photoshop IRB…) and COM segments
//!   are dropped; APP0 (JFIF) and APP14 (Adobe, which decides how CMYK is decoded) stay. A
//!   photo's EXIF orientation is kept as a minimal EXIF segment holding only that tag, so a
//!   phone picture is not shown sideways.
//! - PNG: `eXIf`, `tEXt`, `zTXt`, `iTXt` and `tIME` chunks are dropped.
//!
//! - WebP: `EXIF` and `XMP ` chunks are dropped (the VP8X flags saying they exist are
//!   cleared and the RIFF size rewritten); `ICCP`, `ANIM`, `ANMF`, `VP8 `, `VP8L`, `ALPH`
//!   and any other chunk stay. As for JPEG, the orientation is kept as a one-tag `EXIF` chunk.
//! - GIF: comment extensions and application extensions other than the looping ones
//!   (`NETSCAPE2.0`, `ANIMEXTS1.0`) — XMP, for one — are dropped; the rest is byte-exact.
//!
//! A PDF is a document, not a picture: it is stored as uploaded (see docs/protocol.md).

use std::io::{self, Read, Seek, SeekFrom, Write};

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
    out.extend(orientation_tiff(value));
    out
}

/// A TIFF (EXIF) block with one tag: Orientation (0x0112) = `value`. 26 bytes.
fn orientation_tiff(value: u8) -> Vec<u8> {
    let mut out = b"MM\0\x2A\0\0\0\x08".to_vec(); // big-endian TIFF, first IFD at 8
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

/// Copies the WebP in `input` to `output` without its `EXIF` and `XMP ` chunks;
/// `orientation` (an EXIF orientation value, 2–8) is written back as a one-tag `EXIF` chunk
/// in place of the dropped one. `output` is seeked back to patch the RIFF size. Bytes after
/// the RIFF's declared end are not copied.
pub fn webp(
    input: &mut impl Read,
    output: &mut (impl Write + Seek),
    orientation: Option<u8>,
) -> io::Result<()> {
    let mut header = [0u8; 12];
    input.read_exact(&mut header)?;
    if &header[0..4] != b"RIFF" || &header[8..12] != b"WEBP" {
        return Err(malformed("WebP without its RIFF header"));
    }
    let declared = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
    let mut body = u64::from(declared)
        .checked_sub(4)
        .ok_or_else(|| malformed("WebP RIFF size below 4"))?;
    let start = output.stream_position()?;
    output.write_all(&header)?;
    let mut orientation = orientation.filter(|o| (2..=8).contains(o));
    let mut written: u64 = 4; // "WEBP"
    let mut first = true;
    while body > 0 {
        let mut chunk = [0u8; 8];
        if body < 8 {
            return Err(malformed("WebP chunk header cut short"));
        }
        input.read_exact(&mut chunk)?;
        body -= 8;
        let kind = [chunk[0], chunk[1], chunk[2], chunk[3]];
        let size = u64::from(u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]));
        let padded = size + (size & 1);
        // The last chunk's pad byte may be missing from the declared size (some writers).
        if size > body {
            return Err(malformed("WebP chunk larger than its file"));
        }
        let read = padded.min(body);
        body -= read;
        let mut data = input.by_ref().take(read);
        match &kind {
            b"EXIF" | b"XMP " => {
                io::copy(&mut data, &mut io::sink())?;
                if kind == *b"EXIF" {
                    if let Some(value) = orientation.take() {
                        let tiff = orientation_tiff(value); // 26 bytes: no pad
                        output.write_all(b"EXIF")?;
                        output.write_all(&26u32.to_le_bytes())?;
                        output.write_all(&tiff)?;
                        written += 8 + 26;
                    }
                }
            }
            b"VP8X" if first => {
                if size != 10 {
                    return Err(malformed("WebP VP8X chunk not 10 bytes"));
                }
                let mut fields = [0u8; 10];
                data.read_exact(&mut fields)?;
                // Bit 3: an EXIF chunk follows (only when the orientation is kept); bit 2: XMP.
                let exif = if orientation.is_some() { 0x08 } else { 0 };
                fields[0] &= !(0x04 | 0x08) | exif;
                output.write_all(&chunk)?;
                output.write_all(&fields)?;
                written += 18;
            }
            _ => {
                output.write_all(&chunk)?;
                io::copy(&mut data.by_ref().take(size), output)?;
                written += 8 + size;
                if size & 1 == 1 {
                    io::copy(&mut data, &mut io::sink())?;
                    output.write_all(&[0])?;
                    written += 1;
                }
            }
        }
        if data.limit() != 0 {
            return Err(malformed("WebP chunk cut short"));
        }
        first = false;
    }
    let size = u32::try_from(written).map_err(|_| malformed("WebP over 4 GiB"))?;
    let end = output.stream_position()?;
    output.seek(SeekFrom::Start(start + 4))?;
    output.write_all(&size.to_le_bytes())?;
    output.seek(SeekFrom::Start(end))?;
    Ok(())
}

/// Copies the GIF in `input` to `output` without its comment extensions and its application
/// extensions other than the looping ones. Bytes after the trailer are not copied.
pub fn gif(input: &mut impl Read, output: &mut impl Write) -> io::Result<()> {
    let mut header = [0u8; 13]; // signature, version, logical screen descriptor
    input.read_exact(&mut header)?;
    if &header[0..6] != b"GIF87a" && &header[0..6] != b"GIF89a" {
        return Err(malformed("GIF without its signature"));
    }
    output.write_all(&header)?;
    copy_color_table(input, output, header[10])?;
    loop {
        let mut byte = [0u8; 1];
        input.read_exact(&mut byte)?;
        match byte[0] {
            // Image descriptor, local color table, LZW code size, image data.
            0x2C => {
                let mut descriptor = [0u8; 9];
                input.read_exact(&mut descriptor)?;
                output.write_all(&[0x2C])?;
                output.write_all(&descriptor)?;
                copy_color_table(input, output, descriptor[8])?;
                input.read_exact(&mut byte)?;
                output.write_all(&byte)?;
                gif_sub_blocks(input, Some(output))?;
            }
            0x21 => {
                input.read_exact(&mut byte)?;
                let label = byte[0];
                match label {
                    0xFE => gif_sub_blocks(input, None::<&mut io::Sink>)?,
                    0xFF => {
                        // The first sub-block names the application (8 + 3 bytes).
                        let mut len = [0u8; 1];
                        input.read_exact(&mut len)?;
                        let mut id = vec![0u8; usize::from(len[0])];
                        input.read_exact(&mut id)?;
                        let looping = matches!(&id[..], b"NETSCAPE2.0" | b"ANIMEXTS1.0");
                        if len[0] == 0 {
                            if looping {
                                output.write_all(&[0x21, 0xFF, 0])?;
                            }
                        } else if looping {
                            output.write_all(&[0x21, 0xFF, len[0]])?;
                            output.write_all(&id)?;
                            gif_sub_blocks(input, Some(output))?;
                        } else {
                            gif_sub_blocks(input, None::<&mut io::Sink>)?;
                        }
                    }
                    _ => {
                        output.write_all(&[0x21, label])?;
                        gif_sub_blocks(input, Some(output))?;
                    }
                }
            }
            0x3B => {
                output.write_all(&[0x3B])?;
                return Ok(());
            }
            _ => return Err(malformed("GIF block of unknown kind")),
        }
    }
}

/// Copies the color table that a GIF packed-fields byte announces, if any.
fn copy_color_table(input: &mut impl Read, output: &mut impl Write, packed: u8) -> io::Result<()> {
    if packed & 0x80 != 0 {
        let len = 3u64 << ((packed & 0x07) + 1);
        let mut table = input.by_ref().take(len);
        io::copy(&mut table, output)?;
        if table.limit() != 0 {
            return Err(malformed("GIF color table cut short"));
        }
    }
    Ok(())
}

/// Copies (or, without `output`, skips) GIF data sub-blocks up to and including the empty
/// block that ends them.
fn gif_sub_blocks(input: &mut impl Read, mut output: Option<&mut impl Write>) -> io::Result<()> {
    loop {
        let mut len = [0u8; 1];
        input.read_exact(&mut len)?;
        let mut block = input.by_ref().take(u64::from(len[0]));
        match output.as_mut() {
            Some(out) => {
                out.write_all(&len)?;
                io::copy(&mut block, out)?;
            }
            None => {
                io::copy(&mut block, &mut io::sink())?;
            }
        }
        if block.limit() != 0 {
            return Err(malformed("GIF sub-block cut short"));
        }
        if len[0] == 0 {
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

    /// A RIFF chunk: FourCC, little-endian size, data, a pad byte when the size is odd.
    fn riff_chunk(kind: &[u8], data: &[u8]) -> Vec<u8> {
        let mut out = kind.to_vec();
        out.extend_from_slice(&u32::try_from(data.len()).expect("small").to_le_bytes());
        out.extend_from_slice(data);
        if data.len() % 2 == 1 {
            out.push(0);
        }
        out
    }

    /// A 3×2 lossless WebP from the `image` crate, rebuilt as an extended (VP8X) file with
    /// an ICC profile, EXIF and XMP chunks (flags set), the image data between them.
    fn webp_with_metadata(exif: &[u8]) -> Vec<u8> {
        let pixels = image::RgbaImage::from_fn(3, 2, |x, y| {
            image::Rgba([u8::try_from(x * 80).expect("small"), 10, 20, 255 - y as u8])
        });
        let mut plain = Vec::new();
        image::codecs::webp::WebPEncoder::new_lossless(&mut plain)
            .encode(pixels.as_raw(), 3, 2, image::ExtendedColorType::Rgba8)
            .expect("encode");
        assert_eq!(&plain[12..16], b"VP8L", "a simple lossless file");
        let image_chunk = &plain[12..];
        // Flags: ICC (bit 5), alpha (bit 4), EXIF (bit 3), XMP (bit 2); canvas 3×2 (minus one).
        let vp8x = [0x20 | 0x10 | 0x08 | 0x04, 0, 0, 0, 2, 0, 0, 1, 0, 0];
        let mut body = b"WEBP".to_vec();
        body.extend(riff_chunk(b"VP8X", &vp8x));
        body.extend(riff_chunk(b"ICCP", b"not really a profile"));
        body.extend_from_slice(image_chunk);
        body.extend(riff_chunk(b"EXIF", exif));
        body.extend(riff_chunk(
            b"XMP ",
            b"<x:xmpmeta>CreatorTool secret</x:xmpmeta>",
        ));
        let mut out = b"RIFF".to_vec();
        out.extend_from_slice(&u32::try_from(body.len()).expect("small").to_le_bytes());
        out.extend(body);
        out
    }

    fn find(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn webp_loses_exif_and_xmp_chunks_and_still_decodes() {
        // An odd-sized EXIF chunk, so its pad byte must go with it.
        let exif = b"MM\0\x2A\0\0\0\x08GPS 52.37N 4.89E!";
        let input = webp_with_metadata(exif);
        let before = image::load_from_memory_with_format(&input, image::ImageFormat::WebP)
            .expect("fixture decodes")
            .to_rgba8();
        let mut out = io::Cursor::new(Vec::new());
        webp(&mut &input[..], &mut out, None).expect("strip");
        let out = out.into_inner();
        assert!(!find(&out, b"EXIF") && !find(&out, b"GPS"), "EXIF gone");
        assert!(!find(&out, b"XMP ") && !find(&out, b"secret"), "XMP gone");
        assert!(find(&out, b"ICCP") && find(&out, b"VP8L"), "the rest kept");
        let size = u32::from_le_bytes([out[4], out[5], out[6], out[7]]);
        assert_eq!(size as usize, out.len() - 8, "RIFF size rewritten");
        assert_eq!(out[20] & 0x0C, 0, "EXIF and XMP flags cleared");
        assert_eq!(out[20] & 0x30, 0x30, "ICC and alpha flags kept");
        let after = image::load_from_memory_with_format(&out, image::ImageFormat::WebP)
            .expect("stripped copy decodes")
            .to_rgba8();
        assert_eq!(before, after, "same pixels");
    }

    #[test]
    fn webp_orientation_survives_as_the_only_exif_tag() {
        let input = webp_with_metadata(b"MM\0\x2A\0\0\0\x08 GPS owner");
        let mut out = io::Cursor::new(Vec::new());
        webp(&mut &input[..], &mut out, Some(6)).expect("strip");
        let out = out.into_inner();
        assert!(!find(&out, b"GPS") && !find(&out, b"XMP "));
        assert!(
            find(&out, b"EXIF") && find(&out, &[0x12, 0, 3]),
            "orientation tag"
        );
        assert_eq!(out[20] & 0x0C, 0x08, "EXIF flag kept, XMP flag cleared");
        let mut decoder = image::codecs::webp::WebPDecoder::new(io::Cursor::new(&out))
            .expect("stripped copy parses");
        use image::ImageDecoder;
        assert_eq!(
            decoder.orientation().expect("orientation"),
            image::metadata::Orientation::Rotate90
        );
    }

    /// A 2-frame looping GIF from the `image` crate with a comment extension and an XMP
    /// application extension spliced in after its header and global color table.
    fn gif_with_metadata() -> Vec<u8> {
        let mut plain = Vec::new();
        {
            let mut encoder = image::codecs::gif::GifEncoder::new(&mut plain);
            encoder
                .set_repeat(image::codecs::gif::Repeat::Infinite)
                .expect("repeat");
            for shade in [0u8, 200] {
                let frame = image::RgbaImage::from_pixel(4, 3, image::Rgba([shade, 50, 90, 255]));
                encoder
                    .encode_frame(image::Frame::new(frame))
                    .expect("frame");
            }
        }
        let packed = plain[10];
        let table = if packed & 0x80 != 0 {
            3usize << ((packed & 0x07) + 1)
        } else {
            0
        };
        let at = 13 + table;
        let mut metadata = vec![0x21, 0xFE, 12];
        metadata.extend_from_slice(b"camera owner");
        metadata.extend_from_slice(&[5, b'h', b'e', b'l', b'l', b'o', 0]);
        metadata.extend_from_slice(&[0x21, 0xFF, 11]);
        metadata.extend_from_slice(b"XMP DataXMP");
        metadata.push(23);
        metadata.extend_from_slice(b"<x:xmpmeta>gps</x:xmpm>");
        metadata.extend_from_slice(&[1, b'!', 0]);
        let mut out = plain[..at].to_vec();
        out.extend(metadata);
        out.extend_from_slice(&plain[at..]);
        out
    }

    fn gif_frames(bytes: &[u8]) -> Vec<image::RgbaImage> {
        use image::AnimationDecoder;
        image::codecs::gif::GifDecoder::new(io::Cursor::new(bytes))
            .expect("parses")
            .into_frames()
            .map(|f| f.expect("frame").into_buffer())
            .collect()
    }

    #[test]
    fn gif_loses_comments_and_xmp_but_keeps_looping_and_frames() {
        let input = gif_with_metadata();
        assert!(find(&input, b"NETSCAPE2.0"), "the fixture loops");
        let before = gif_frames(&input);
        assert_eq!(before.len(), 2);
        let mut out = Vec::new();
        gif(&mut &input[..], &mut out).expect("strip");
        assert!(
            !find(&out, b"owner") && !find(&out, b"hello"),
            "comment gone"
        );
        assert!(
            !find(&out, b"XMP DataXMP") && !find(&out, b"gps"),
            "XMP gone"
        );
        assert!(find(&out, b"NETSCAPE2.0"), "looping kept");
        let mut expected = input.clone();
        let at = input
            .windows(3)
            .position(|w| w == [0x21, 0xFE, 12])
            .expect("comment");
        let len = 3 + 12 + 7 + 3 + 11 + 1 + 23 + 3;
        expected.drain(at..at + len);
        assert_eq!(out, expected, "everything else byte-exact");
        assert_eq!(gif_frames(&out), before, "same frames");
    }

    #[test]
    fn malformed_webp_and_gif_are_errors_not_panics() {
        let good = webp_with_metadata(b"exif");
        for cut in [0, 11, 12, 20, 30, good.len() - 3] {
            let mut out = io::Cursor::new(Vec::new());
            assert!(webp(&mut &good[..cut], &mut out, None).is_err(), "{cut}");
        }
        let mut huge = good.clone();
        huge[16..20].copy_from_slice(&u32::MAX.to_le_bytes()); // VP8X size
        assert!(webp(&mut &huge[..], &mut io::Cursor::new(Vec::new()), None).is_err());
        let good = gif_with_metadata();
        for cut in [0, 12, 20, good.len() - 1] {
            assert!(gif(&mut &good[..cut], &mut Vec::new()).is_err(), "{cut}");
        }
        let mut unknown = good[..13].to_vec();
        unknown.push(0x99);
        assert!(gif(&mut &unknown[..], &mut Vec::new()).is_err());
    }
}
