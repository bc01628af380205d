//! The service over the embedded store and data-dir blobs (the integration tests run the
//! same rules over HTTP, Redis and SeaweedFS).

use std::{io::Cursor, sync::Arc, time::Duration};

use futures_util::{stream, StreamExt};

use super::*;
use crate::{
    groups::{EmbeddedGroupStore, GroupStore},
    storage::embedded::EmbeddedDb,
};

struct Fixture {
    service: AttachmentService,
    groups: Arc<dyn GroupStore>,
    _dir: tempfile::TempDir,
}

fn fixture(max_bytes: u64, keep_sent: Option<Duration>) -> Fixture {
    let dir = tempfile::tempdir().expect("dir");
    let db = EmbeddedDb::open(dir.path()).expect("db");
    let groups: Arc<dyn GroupStore> = Arc::new(EmbeddedGroupStore::new(db.clone()));
    let service = AttachmentService::new(
        Arc::new(EmbeddedAttachmentStore::new(db)),
        Arc::new(FsBlobStore::open(dir.path().join("blobs")).expect("blobs")),
        groups.clone(),
        AttachmentLimits {
            max_bytes,
            max_pixels: 4_000_000,
            orphan_after: Duration::from_secs(86_400),
            keep_sent,
        },
        dir.path().join("tmp"),
    )
    .expect("service");
    Fixture {
        service,
        groups,
        _dir: dir,
    }
}

fn uid(s: &str) -> UserId {
    UserId::parse(s).expect("uid")
}

/// `bytes` as a body arriving in chunks of `chunk` bytes.
fn body(
    bytes: &[u8],
    chunk: usize,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Unpin + Send {
    let chunks: Vec<Result<Bytes, std::io::Error>> = bytes
        .chunks(chunk.max(1))
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    stream::iter(chunks)
}

async fn upload(f: &Fixture, owner: &str, bytes: &[u8]) -> Result<Record, AttachmentError> {
    f.service
        .upload(&uid(owner), Some("file"), None, body(bytes, 1000))
        .await
}

async fn read_all(download: Download) -> Vec<u8> {
    let mut out = Vec::new();
    let mut body = download.body;
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.expect("chunk"));
    }
    out
}

pub(crate) fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbaImage::from_fn(width, height, |x, y| {
        image::Rgba([(x % 256) as u8, (y % 256) as u8, 128, 255])
    });
    let mut out = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .expect("png");
    out
}

/// A JPEG with an EXIF segment naming a place and orientation 6 (rotated 90°).
pub(crate) fn jpeg_with_exif(width: u32, height: u32) -> Vec<u8> {
    let image =
        image::RgbImage::from_fn(width, height, |x, _| image::Rgb([(x % 256) as u8, 90, 40]));
    let mut plain = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut plain), image::ImageFormat::Jpeg)
        .expect("jpeg");
    // Little-endian TIFF: one IFD entry, Orientation = 6, then a GPS-looking string.
    let mut exif =
        b"Exif\0\0II\x2A\0\x08\0\0\0\x01\0\x12\x01\x03\0\x01\0\0\0\x06\0\0\0\0\0\0\0".to_vec();
    exif.extend_from_slice(b"GPS 52.3676N 4.9041E");
    let len = u16::try_from(exif.len() + 2).expect("small");
    let mut out = plain[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&exif);
    out.extend_from_slice(&plain[2..]);
    out
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn text_is_stored_and_only_the_uploader_reads_an_unsent_upload() {
    let f = fixture(1 << 20, None);
    let record = upload(&f, "alice", b"milk, eggs\n").await.expect("upload");
    assert_eq!(record.content_type, "text/plain; charset=utf-8");
    assert_eq!(record.name, "file.txt");
    assert!(record.thumbnail_type.is_none());
    let download = f
        .service
        .open(&uid("alice"), &record.id, Part::Original, None)
        .await
        .expect("owner reads");
    assert!(!download.inline);
    assert_eq!(read_all(download).await, b"milk, eggs\n");
    for (reader, id) in [
        ("bob", record.id.as_str()),
        ("alice", "0123456789abcdef0123456789abcdef"),
        ("alice", "../../etc/passwd"),
    ] {
        let err = f
            .service
            .open(&uid(reader), id, Part::Original, None)
            .await
            .err();
        assert!(
            matches!(err, Some(AttachmentError::NotFound)),
            "{reader} {id}"
        );
    }
}

#[tokio::test]
async fn html_is_refused_even_behind_an_image_signature() {
    let f = fixture(1 << 20, None);
    for bytes in [
        &b"<!doctype html><script>alert(1)</script>"[..],
        b"\x89PNG\r\n\x1a\n<html><script>alert(1)</script></html>",
        b"\xFF\xD8\xFF\xE0<html><script>alert(1)</script>",
        b"GIF89a\x01\0\x01\0<svg onload=alert(1)>",
        b"MZ\x90\0executable",
    ] {
        let err = upload(&f, "alice", bytes).await.expect_err("refused");
        assert!(matches!(err, AttachmentError::Unsupported(_)), "{err:?}");
    }
}

#[tokio::test]
async fn an_upload_over_the_limit_is_refused_while_it_streams() {
    let f = fixture(10_000, None);
    let big = vec![b'a'; 10_001];
    let err = upload(&f, "alice", &big).await.expect_err("too large");
    assert!(matches!(err, AttachmentError::TooLarge { max: 10_000 }));
    // A declared length over the limit is refused before a byte is read.
    let err = f
        .service
        .upload(&uid("alice"), None, Some(10_001), body(b"a", 1))
        .await
        .expect_err("declared");
    assert!(matches!(err, AttachmentError::TooLarge { .. }));
    let exact = vec![b'a'; 10_000];
    upload(&f, "alice", &exact).await.expect("at the limit");
    // Nothing is left in the temporary folder, whatever the outcome.
    let left = std::fs::read_dir(f._dir.path().join("tmp"))
        .expect("tmp")
        .count();
    assert_eq!(left, 0);
}

#[tokio::test]
async fn a_large_png_gets_a_thumbnail_within_320_pixels() {
    let f = fixture(20 << 20, None);
    let record = upload(&f, "alice", &png(1600, 900)).await.expect("png");
    assert_eq!(record.content_type, "image/png");
    assert_eq!(record.thumbnail_type.as_deref(), Some("image/png"));
    let thumb = f
        .service
        .open(&uid("alice"), &record.id, Part::Thumbnail, None)
        .await
        .expect("thumbnail");
    assert!(thumb.inline);
    let bytes = read_all(thumb).await;
    let decoded = image::load_from_memory(&bytes).expect("decodes");
    assert_eq!((decoded.width(), decoded.height()), (320, 180));
}

#[tokio::test]
async fn a_jpeg_loses_its_exif_but_stays_upright() {
    let f = fixture(20 << 20, None);
    let record = upload(&f, "alice", &jpeg_with_exif(400, 200))
        .await
        .expect("jpeg");
    assert_eq!(record.content_type, "image/jpeg");
    let original = read_all(
        f.service
            .open(&uid("alice"), &record.id, Part::Original, None)
            .await
            .expect("original"),
    )
    .await;
    assert!(!contains(&original, b"GPS"), "EXIF served back");
    assert_eq!(record.size, original.len() as u64);
    image::load_from_memory(&original).expect("still a JPEG");
    let thumb = read_all(
        f.service
            .open(&uid("alice"), &record.id, Part::Thumbnail, None)
            .await
            .expect("thumbnail"),
    )
    .await;
    assert!(!contains(&thumb, b"GPS"));
    let decoded = image::load_from_memory(&thumb).expect("thumbnail decodes");
    // Orientation 6 turns the 400×200 picture upright: 160×320.
    assert_eq!((decoded.width(), decoded.height()), (160, 320));
}

/// A PNG that claims 30000×30000 pixels (900 million, 3.6 GB decoded) in a few hundred bytes.
pub(crate) fn png_bomb() -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&u32::try_from(data.len()).expect("small").to_be_bytes());
        let mut typed = kind.to_vec();
        typed.extend_from_slice(data);
        out.extend_from_slice(&typed);
        out.extend_from_slice(&crc32(&typed).to_be_bytes());
    }
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = 30_000u32.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&30_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &ihdr);
    // A zlib stream of zeros (what a real bomb repeats for gigabytes).
    chunk(
        &mut out,
        b"IDAT",
        &[0x78, 0x9C, 0x63, 0x60, 0x18, 0x05, 0x00, 0x00],
    );
    chunk(&mut out, b"IEND", b"");
    out
}

#[tokio::test]
async fn a_decompression_bomb_is_refused_from_its_header() {
    let f = fixture(1 << 20, None);
    let err = upload(&f, "alice", &png_bomb()).await.expect_err("bomb");
    assert!(matches!(err, AttachmentError::ImageTooLarge(_)), "{err:?}");
}

#[tokio::test]
async fn only_ones_own_uploads_can_be_attached_and_sending_grants_the_recipients() {
    let f = fixture(1 << 20, None);
    let mine = upload(&f, "alice", b"mine").await.expect("upload");
    let theirs = upload(&f, "mallory", b"theirs").await.expect("upload");
    let (alice, bob, carol) = (uid("alice"), uid("bob"), uid("carol"));
    let mine_id = AttachmentId::parse(&mine.id).expect("id");
    let theirs_id = AttachmentId::parse(&theirs.id).expect("id");
    let err = f
        .service
        .attach(
            &alice,
            &[mine_id.clone(), theirs_id],
            &direct_conversation(&bob),
        )
        .await
        .expect_err("foreign");
    assert_eq!(err.code, ErrorCode::Forbidden);
    // Refused as a whole: bob was granted nothing.
    assert!(f
        .service
        .open(&bob, &mine.id, Part::Original, None)
        .await
        .is_err());
    let unknown = AttachmentId::random();
    let err = f
        .service
        .attach(&alice, &[unknown], &direct_conversation(&bob))
        .await
        .expect_err("unknown");
    assert_eq!(err.code, ErrorCode::Forbidden);

    f.service
        .attach(
            &alice,
            std::slice::from_ref(&mine_id),
            &direct_conversation(&bob),
        )
        .await
        .expect("attach");
    f.service
        .open(&bob, &mine.id, Part::Original, None)
        .await
        .expect("bob reads");
    assert!(f
        .service
        .open(&carol, &mine.id, Part::Original, None)
        .await
        .is_err());

    // Groups: current members read it; a member who left does not.
    let gid = GroupId::parse("group_shop").expect("gid");
    f.groups
        .create(&gid, &[uid("alice"), uid("carol"), uid("dave")])
        .await
        .expect("group");
    f.service
        .attach(&alice, &[mine_id], &group_conversation(&gid))
        .await
        .expect("attach to group");
    f.service
        .open(&carol, &mine.id, Part::Original, None)
        .await
        .expect("member");
    f.groups.remove(&gid, &uid("carol")).await.expect("leave");
    assert!(f
        .service
        .open(&carol, &mine.id, Part::Original, None)
        .await
        .is_err());
    f.service
        .open(&uid("dave"), &mine.id, Part::Original, None)
        .await
        .expect("member");
}

#[tokio::test]
async fn the_sweep_deletes_unsent_uploads_after_a_day_and_sent_ones_with_their_messages() {
    let f = fixture(1 << 20, Some(Duration::from_secs(30 * 86_400)));
    let orphan = upload(&f, "alice", b"never sent").await.expect("upload");
    let sent = upload(&f, "alice", b"sent").await.expect("upload");
    let sent_id = AttachmentId::parse(&sent.id).expect("id");
    f.service
        .attach(&uid("alice"), &[sent_id], &direct_conversation(&uid("bob")))
        .await
        .expect("attach");
    let now = now_millis();
    let hour = 3_600_000;
    assert_eq!(
        f.service.sweep(now + 23 * hour).await.expect("sweep"),
        Swept::default()
    );
    f.service
        .open(&uid("alice"), &orphan.id, Part::Original, None)
        .await
        .expect("kept for a day");

    let swept = f.service.sweep(now + 25 * hour).await.expect("sweep");
    assert_eq!(
        swept,
        Swept {
            orphans: 1,
            expired: 0
        }
    );
    assert!(f
        .service
        .open(&uid("alice"), &orphan.id, Part::Original, None)
        .await
        .is_err());
    f.service
        .open(&uid("bob"), &sent.id, Part::Original, None)
        .await
        .expect("sent one kept");

    let swept = f.service.sweep(now + 31 * 24 * hour).await.expect("sweep");
    assert_eq!(
        swept,
        Swept {
            orphans: 0,
            expired: 1
        }
    );
    assert!(f
        .service
        .open(&uid("bob"), &sent.id, Part::Original, None)
        .await
        .is_err());
    let blobs = std::fs::read_dir(f._dir.path().join("blobs"))
        .expect("blobs")
        .flatten()
        .flat_map(|shard| std::fs::read_dir(shard.path()).expect("shard").flatten())
        .count();
    assert_eq!(blobs, 0, "bytes deleted too");
}

#[tokio::test]
async fn ranges_serve_part_of_a_file() {
    let f = fixture(1 << 20, None);
    let record = upload(&f, "alice", b"0123456789").await.expect("upload");
    let part = |spec: &str| RangeSpec::parse(spec);
    let download = f
        .service
        .open(&uid("alice"), &record.id, Part::Original, part("bytes=2-4"))
        .await
        .expect("range");
    assert_eq!(download.range, Some((2, 4)));
    assert_eq!(read_all(download).await, b"234");
    let download = f
        .service
        .open(&uid("alice"), &record.id, Part::Original, part("bytes=-3"))
        .await
        .expect("suffix");
    assert_eq!(read_all(download).await, b"789");
    let err = f
        .service
        .open(&uid("alice"), &record.id, Part::Original, part("bytes=10-"))
        .await
        .err();
    assert!(matches!(
        err,
        Some(AttachmentError::RangeNotSatisfiable { size: 10 })
    ));
}

#[test]
fn range_headers_parse_one_range_or_none() {
    assert_eq!(RangeSpec::parse("bytes=0-"), Some(RangeSpec::From(0, None)));
    assert_eq!(
        RangeSpec::parse("bytes=5-9"),
        Some(RangeSpec::From(5, Some(9)))
    );
    assert_eq!(RangeSpec::parse("bytes=-20"), Some(RangeSpec::Suffix(20)));
    for ignored in [
        "bytes=9-5",
        "bytes=0-1,4-5",
        "items=0-1",
        "bytes=-",
        "bytes=a-b",
        "",
    ] {
        assert_eq!(RangeSpec::parse(ignored), None, "{ignored}");
    }
    assert_eq!(RangeSpec::From(5, Some(100)).resolve(10).ok(), Some((5, 9)));
    assert_eq!(RangeSpec::Suffix(100).resolve(10).ok(), Some((0, 9)));
}

#[test]
fn names_are_sanitized_and_end_in_their_real_type() {
    assert_eq!(display_name(Some("photo.png"), Kind::Png), "photo.png");
    assert_eq!(
        display_name(Some("photo.html"), Kind::Png),
        "photo.html.png"
    );
    assert_eq!(
        display_name(Some("../../etc/passwd"), Kind::Text),
        "_.._etc_passwd.txt"
    );
    assert_eq!(
        display_name(Some("a\u{202E}gnp.exe"), Kind::Pdf),
        "a gnp.exe.pdf"
    );
    assert_eq!(display_name(Some("  "), Kind::Jpeg), "attachment.jpg");
    assert_eq!(display_name(None, Kind::Jpeg), "attachment.jpg");
    assert_eq!(
        display_name(Some("x\r\nSet-Cookie: a"), Kind::Text),
        "x  Set-Cookie_ a.txt"
    );
    assert!(
        display_name(Some(&"é".repeat(500)), Kind::Pdf)
            .chars()
            .count()
            <= 124
    );
}
