//! Thumbnails (longest side ≤ [`THUMBNAIL_SIDE`]) and the metadata-free copy of an image
//! upload. Blocking work: the service runs it in `spawn_blocking`, a few at a time.
//!
//! A decompression bomb (a small file that decodes to billions of pixels) is refused from its
//! header: the dimensions are read first and compared with the pixel limit, and the decoder
//! runs under `image::Limits` as a second bound, so such a file is never decoded.

use std::{
    fs::File,
    io::{BufReader, BufWriter, Cursor, Write},
    path::Path,
};

use image::{
    codecs::jpeg::JpegEncoder, DynamicImage, ImageDecoder, ImageError, ImageFormat, ImageReader,
    Limits,
};

use super::sniff::Kind;

/// The longest side of a thumbnail, in pixels.
pub const THUMBNAIL_SIDE: u32 = 320;

/// Why no thumbnail could be made.
#[derive(Debug, thiserror::Error)]
pub enum ImageRefusal {
    /// The image's width × height is over the limit (a decompression bomb, or just too big).
    #[error("the image is {width}×{height} pixels, over the limit of {limit}")]
    TooManyPixels {
        /// Its width.
        width: u32,
        /// Its height.
        height: u32,
        /// The configured limit.
        limit: u64,
    },
    /// The bytes are not a decodable image of the kind their signature claims.
    #[error("not a valid image: {0}")]
    Invalid(String),
    /// Reading or writing a local file failed.
    #[error("file: {0}")]
    Io(#[from] std::io::Error),
}

/// A made thumbnail.
pub struct Thumbnail {
    /// The encoded bytes (a few tens of KiB).
    pub bytes: Vec<u8>,
    /// Their type: JPEG for a JPEG upload, PNG otherwise (keeps transparency).
    pub content_type: &'static str,
    /// The upload's EXIF orientation (2–8), when it has one that is not "as stored".
    pub orientation: Option<u8>,
}

fn format_of(kind: Kind) -> Option<ImageFormat> {
    match kind {
        Kind::Png => Some(ImageFormat::Png),
        Kind::Jpeg => Some(ImageFormat::Jpeg),
        Kind::Gif => Some(ImageFormat::Gif),
        Kind::Webp => Some(ImageFormat::WebP),
        Kind::Pdf | Kind::Text => None,
    }
}

/// Decodes the image at `path` (of `kind`, at most `max_pixels` pixels) and makes its
/// thumbnail, turned upright by its EXIF orientation. Any decoding failure refuses the
/// upload: a file whose signature says image must be one.
pub fn make(path: &Path, kind: Kind, max_pixels: u64) -> Result<Thumbnail, ImageRefusal> {
    let format = format_of(kind).ok_or_else(|| ImageRefusal::Invalid("not an image".into()))?;
    let mut reader = ImageReader::with_format(BufReader::new(File::open(path)?), format);
    let mut limits = Limits::default();
    // RGBA at 8 bits is the largest buffer these formats decode to; the decoder's own work
    // memory is small beside it.
    limits.max_alloc = Some(max_pixels.saturating_mul(4).saturating_add(16 << 20));
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(refusal)?;
    let (width, height) = decoder.dimensions();
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(ImageRefusal::TooManyPixels {
            width,
            height,
            limit: max_pixels,
        });
    }
    let orientation = decoder.orientation().map_err(refusal)?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(refusal)?;
    image.apply_orientation(orientation);
    let small = image.thumbnail(THUMBNAIL_SIDE, THUMBNAIL_SIDE);
    let mut bytes = Vec::new();
    let content_type = if kind == Kind::Jpeg {
        JpegEncoder::new_with_quality(&mut bytes, 80)
            .encode_image(&DynamicImage::ImageRgb8(small.to_rgb8()))
            .map_err(refusal)?;
        "image/jpeg"
    } else {
        small
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
            .map_err(refusal)?;
        "image/png"
    };
    let orientation = Some(orientation.to_exif()).filter(|o| *o != 1);
    Ok(Thumbnail {
        bytes,
        content_type,
        orientation,
    })
}

fn refusal(e: ImageError) -> ImageRefusal {
    ImageRefusal::Invalid(e.to_string())
}

/// Writes the upload at `from` to `to` without its metadata (JPEG, PNG, WebP, GIF); `false`
/// when the kind keeps its bytes as they are (nothing written).
pub fn strip_metadata(
    from: &Path,
    to: &Path,
    kind: Kind,
    orientation: Option<u8>,
) -> Result<bool, ImageRefusal> {
    if !kind.is_image() {
        return Ok(false);
    }
    let mut input = BufReader::new(File::open(from)?);
    let mut output = BufWriter::new(super::blob::create_private(to)?);
    match kind {
        Kind::Jpeg => super::strip::jpeg(&mut input, &mut output, orientation),
        Kind::Webp => super::strip::webp(&mut input, &mut output, orientation),
        Kind::Gif => super::strip::gif(&mut input, &mut output),
        _ => super::strip::png(&mut input, &mut output), // Kind::Png: the last image kind
    }
    .map_err(|e| ImageRefusal::Invalid(e.to_string()))?;
    output.flush()?;
    output
        .into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()?;
    Ok(true)
}
