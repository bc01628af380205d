//! Attachments (contract §12) over HTTP and sockets, on the embedded store (files in the data
//! dir) and on two nodes sharing Redis with their bytes in SeaweedFS, a real S3-compatible
//! object store (WEBCHAT_TEST_S3_URL, started by scripts/test-all.sh): upload and sniffing,
//! limits, thumbnails, who may read, attachments on messages and in history, and the sweep.

use std::{io::Cursor, sync::Arc, time::Duration};

use serde_json::{json, Value};
use webchat::{
    attachments::{
        AttachmentLimits, AttachmentService, AttachmentStore, BlobStore, EmbeddedAttachmentStore,
        Part, RedisAttachmentStore, S3BlobStore,
    },
    domain::UserId,
    groups::EmbeddedGroupStore,
    storage::embedded::EmbeddedDb,
};

use crate::helpers::*;

/// The SeaweedFS S3 gateway the attachment tests share (buckets keep them apart).
fn s3_url() -> String {
    std::env::var("WEBCHAT_TEST_S3_URL")
        .expect("WEBCHAT_TEST_S3_URL is not set: run scripts/test-all.sh, which starts SeaweedFS")
}

/// One bucket for every test: a bucket is a SeaweedFS collection with volumes of its own, and
/// attachment keys are random ids, so tests cannot meet in it.
const BUCKET: &str = "webchat-test";

const MAX_BYTES: u64 = 2 * 1024 * 1024;

/// One embedded node, or two Redis nodes with one SeaweedFS bucket.
async fn nodes(s3: bool) -> Vec<TestApp> {
    let mut nodes = Vec::new();
    for _ in 0..if s3 { 2 } else { 1 } {
        let dir = tempfile::tempdir().expect("dir").keep();
        let backend = if s3 {
            Backend::Redis
        } else {
            Backend::Embedded
        };
        let mut settings = settings(backend, dir);
        settings.attachments.max_attachment_bytes = MAX_BYTES;
        if s3 {
            settings.attachments.s3_endpoint = Some(s3_url());
            settings.attachments.s3_bucket = Some(BUCKET.to_owned());
        }
        nodes.push(spawn_with(settings).await);
    }
    nodes
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbaImage::from_fn(width, height, |x, y| {
        image::Rgba([(x % 256) as u8, (y % 256) as u8, 200, 255])
    });
    let mut out = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .expect("png");
    out
}

/// A JPEG carrying an EXIF segment with a location in it.
fn jpeg_with_exif() -> Vec<u8> {
    let image = image::RgbImage::from_fn(800, 600, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 60])
    });
    let mut plain = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut plain), image::ImageFormat::Jpeg)
        .expect("jpeg");
    let exif = b"Exif\0\0MM\0\x2A\0\0\0\x08\0\0\0\0\0\0GPS 52.3676N 4.9041E";
    let mut out = plain[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1, 0, u8::try_from(exif.len() + 2).expect("small")]);
    out.extend_from_slice(exif);
    out.extend_from_slice(&plain[2..]);
    out
}

/// A lossless WebP with an `EXIF` chunk (VP8X flag set) holding a location.
fn webp_with_exif() -> Vec<u8> {
    let image = image::RgbaImage::from_fn(40, 30, |x, y| {
        image::Rgba([(x * 6) as u8, (y * 8) as u8, 90, 255])
    });
    let mut plain = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut plain), image::ImageFormat::WebP)
        .expect("webp");
    let exif = b"MM\0\x2A\0\0\0\x08\0\0\0\0\0\0GPS 52.3676N 4.9041E";
    let mut body = b"WEBPVP8X\x0A\0\0\0\x18\0\0\0\x27\0\0\x1D\0\0".to_vec(); // alpha, EXIF; 40×30
    body.extend_from_slice(&plain[12..]);
    body.extend_from_slice(b"EXIF");
    body.extend_from_slice(&u32::try_from(exif.len()).expect("small").to_le_bytes());
    body.extend_from_slice(exif);
    let mut out = b"RIFF".to_vec();
    out.extend_from_slice(&u32::try_from(body.len()).expect("small").to_le_bytes());
    out.extend(body);
    out
}

/// A GIF with a comment extension right after its header and color table.
fn gif_with_comment() -> Vec<u8> {
    let image = image::RgbaImage::from_pixel(20, 10, image::Rgba([10, 120, 30, 255]));
    let mut plain = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut plain), image::ImageFormat::Gif)
        .expect("gif");
    let packed = plain[10];
    let at = 13
        + if packed & 0x80 != 0 {
            3usize << ((packed & 7) + 1)
        } else {
            0
        };
    let mut out = plain[..at].to_vec();
    out.extend_from_slice(b"\x21\xFE\x14GPS 52.3676N 4.9041E\0");
    out.extend_from_slice(&plain[at..]);
    out
}

/// A PNG claiming 30000×30000 pixels (3.6 GB decoded) in under a hundred bytes.
fn png_bomb() -> Vec<u8> {
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
    let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut chunk = |kind: &[u8], data: &[u8]| {
        out.extend_from_slice(&u32::try_from(data.len()).expect("small").to_be_bytes());
        let typed: Vec<u8> = kind.iter().chain(data).copied().collect();
        out.extend_from_slice(&typed);
        out.extend_from_slice(&crc32(&typed).to_be_bytes());
    };
    let mut ihdr = 30_000u32.to_be_bytes().to_vec();
    ihdr.extend_from_slice(&30_000u32.to_be_bytes());
    ihdr.extend_from_slice(&[8, 6, 0, 0, 0]);
    chunk(b"IHDR", &ihdr);
    chunk(b"IDAT", &[0x78, 0x9C, 0x63, 0x60, 0x18, 0x05, 0x00, 0x00]);
    chunk(b"IEND", b"");
    out
}

async fn upload(node: &str, user: &User, name: &str, bytes: Vec<u8>) -> (u16, Value) {
    let res = http()
        .post(format!("{node}/api/v1/attachments"))
        .query(&[("name", name)])
        .bearer_auth(&user.token)
        .header("content-type", "image/png") // a lie the server ignores
        .body(bytes)
        .send()
        .await
        .expect("upload");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn uploaded(node: &str, user: &User, name: &str, bytes: Vec<u8>) -> Value {
    let (status, body) = upload(node, user, name, bytes).await;
    assert_eq!(status, 201, "{body}");
    body
}

async fn fetch(node: &str, user: &User, path: &str, range: Option<&str>) -> reqwest::Response {
    let mut request = http()
        .get(format!("{node}/api/v1/attachments/{path}"))
        .bearer_auth(&user.token);
    if let Some(range) = range {
        request = request.header("range", range);
    }
    request.send().await.expect("download")
}

async fn status_of(node: &str, user: &User, path: &str) -> u16 {
    fetch(node, user, path, None).await.status().as_u16()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

async fn uploads_are_sniffed_limited_and_thumbnailed_on(nodes: &[TestApp]) {
    let (n0, n1) = (&nodes[0].url, &nodes[nodes.len() - 1].url);
    let alice = signup_at(n0, "alice").await;

    let shelf = uploaded(n0, &alice, "shelf.png", png(2400, 1200)).await;
    assert_eq!(shelf["contentType"], "image/png");
    assert_eq!(shelf["name"], "shelf.png");
    assert_eq!(shelf["thumbnail"], true);
    let id = shelf["id"].as_str().expect("id");
    let thumb = fetch(n1, &alice, &format!("{id}/thumbnail"), None).await;
    assert_eq!(thumb.status(), 200);
    let decoded = image::load_from_memory(&thumb.bytes().await.expect("bytes")).expect("thumb");
    assert_eq!((decoded.width(), decoded.height()), (320, 160));

    let receipt = uploaded(n0, &alice, "receipt.jpg", jpeg_with_exif()).await;
    assert_eq!(receipt["contentType"], "image/jpeg");
    let rid = receipt["id"].as_str().expect("id");
    let original = fetch(n1, &alice, rid, None)
        .await
        .bytes()
        .await
        .expect("bytes");
    assert!(!contains(&original, b"GPS"), "EXIF served back");
    image::load_from_memory(&original).expect("still a JPEG");
    let thumb = fetch(n1, &alice, &format!("{rid}/thumbnail"), None).await;
    let decoded = image::load_from_memory(&thumb.bytes().await.expect("bytes")).expect("thumb");
    assert_eq!((decoded.width(), decoded.height()), (320, 240));

    for (name, bytes) in [
        ("sticker.webp", webp_with_exif()),
        ("wave.gif", gif_with_comment()),
    ] {
        assert!(contains(&bytes, b"GPS"), "{name}: the fixture has metadata");
        let record = uploaded(n0, &alice, name, bytes).await;
        let original = fetch(n1, &alice, record["id"].as_str().expect("id"), None)
            .await
            .bytes()
            .await
            .expect("bytes");
        assert!(!contains(&original, b"GPS"), "{name}: metadata served back");
        assert_eq!(record["size"], original.len(), "{name}: the stored size");
        image::load_from_memory(&original).expect("still an image");
    }

    let text = uploaded(n0, &alice, "list", b"milk\neggs\n".to_vec()).await;
    assert_eq!(text["contentType"], "text/plain; charset=utf-8");
    assert_eq!(text["name"], "list.txt");
    assert_eq!(text["thumbnail"], false);
    let pdf = uploaded(n0, &alice, "invoice.pdf", b"%PDF-1.4\n%%EOF\n".to_vec()).await;
    assert_eq!(pdf["contentType"], "application/pdf");

    for (what, bytes) in [
        ("html", b"<!DOCTYPE html><script>alert(1)</script>".to_vec()),
        (
            "html behind a png header",
            b"\x89PNG\r\n\x1a\n<html><script>alert(1)</script>".to_vec(),
        ),
        ("zip", b"PK\x03\x04\x14\0\0\0".to_vec()),
    ] {
        let (status, body) = upload(n0, &alice, "x.png", bytes).await;
        assert_eq!(status, 415, "{what}: {body}");
    }
    let (status, _) = upload(n0, &alice, "big.txt", vec![b'a'; (MAX_BYTES + 1) as usize]).await;
    assert_eq!(status, 413, "over the limit");
    let (status, body) = upload(n0, &alice, "bomb.png", png_bomb()).await;
    assert_eq!(status, 413, "decompression bomb: {body}");
    assert_eq!(body["error"]["code"], "too_large");
    // The node is still serving after the bomb.
    assert_eq!(status_of(n0, &alice, id).await, 200);

    let res = http()
        .post(format!("{n0}/api/v1/attachments"))
        .body("no token")
        .send()
        .await
        .expect("upload");
    assert_eq!(res.status(), 401);
}

async fn only_participants_read_attachments_sent_in_messages_on(nodes: &[TestApp]) {
    let (n0, n1) = (&nodes[0].url, &nodes[nodes.len() - 1].url);
    let alice = signup_at(n0, "alice").await;
    let bob = signup_at(n0, "bob").await;
    let carol = signup_at(n0, "carol").await;
    let dan = signup_at(n0, "dan").await;
    let a = nodes[0].connect(&alice).await;
    let mut b = nodes[nodes.len() - 1].connect(&bob).await;
    let d = nodes[0].connect(&dan).await;

    let photo = uploaded(n0, &alice, "shelf.png", png(640, 480)).await;
    let pid = photo["id"].as_str().expect("id").to_owned();
    // Unsent: only the uploader, and the same 404 as an id that does not exist.
    assert_eq!(status_of(n1, &alice, &pid).await, 200);
    assert_eq!(status_of(n1, &bob, &pid).await, 404);
    assert_eq!(
        status_of(n1, &bob, "0123456789abcdef0123456789abcdef").await,
        404
    );

    let ack = a
        .chat(json!({"EvtType":"message","To":bob.uid,"MsgID":"m1","Body":"this shelf","Attachments":[pid]}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let event = b.next_chat_acked().await;
    assert_eq!(event.data["MsgID"], "m1");
    assert_eq!(event.data["Attachments"], json!([pid]));

    let res = fetch(n1, &bob, &pid, None).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "image/png");
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    let disposition = res.headers()["content-disposition"]
        .to_str()
        .expect("ascii");
    assert!(
        disposition.starts_with("inline; filename=\"shelf.png\""),
        "{disposition}"
    );
    let whole = res.bytes().await.expect("bytes");
    let part = fetch(n1, &bob, &pid, Some("bytes=100-199")).await;
    assert_eq!(part.status(), 206);
    assert_eq!(
        part.headers()["content-range"],
        format!("bytes 100-199/{}", whole.len()).as_str()
    );
    assert_eq!(part.bytes().await.expect("bytes"), whole.slice(100..200));
    let past = fetch(n1, &bob, &pid, Some(&format!("bytes={}-", whole.len()))).await;
    assert_eq!(past.status(), 416);
    assert_eq!(status_of(n1, &bob, &format!("{pid}/thumbnail")).await, 200);
    assert_eq!(status_of(n0, &carol, &pid).await, 404);
    assert_eq!(
        status_of(n0, &carol, &format!("{pid}/thumbnail")).await,
        404
    );

    // A text file downloads as an attachment, never inline.
    let notes = uploaded(n0, &alice, "notes <1>.txt", b"aisle 4".to_vec()).await;
    let nid = notes["id"].as_str().expect("id").to_owned();
    let ack = a
        .chat(json!({"EvtType":"message","To":bob.uid,"MsgID":"m2","Body":"","Attachments":[nid]}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    b.next_chat_acked().await;
    let res = fetch(n1, &bob, &nid, None).await;
    let disposition = res.headers()["content-disposition"]
        .to_str()
        .expect("ascii");
    assert!(
        disposition.starts_with("attachment; filename=\"notes _1_.txt\""),
        "{disposition}"
    );

    // The history shows the field.
    eventually("the message in bob's history", || async {
        let res = http()
            .get(format!("{n1}/api/v1/conversations/{}/messages", alice.uid))
            .bearer_auth(&bob.token)
            .send()
            .await
            .expect("history");
        let body: Value = res.json().await.expect("json");
        body["items"].as_array().is_some_and(|items| {
            items
                .iter()
                .any(|e| e["MsgID"] == "m1" && e["Attachments"] == json!([pid]))
        })
    })
    .await;

    // Someone else's upload cannot be sent on, not even by a recipient who may read it.
    let ack = b
        .chat(json!({"EvtType":"message","To":carol.uid,"MsgID":"f1","Body":"look","Attachments":[pid]}))
        .await;
    assert_eq!(ack["error"]["code"], "forbidden", "{ack}");
    assert_eq!(status_of(n0, &carol, &pid).await, 404);
    let unknown = "0123456789abcdef0123456789abcdef";
    let ack = a
        .chat(json!({"EvtType":"message","To":bob.uid,"MsgID":"f2","Body":"","Attachments":[unknown]}))
        .await;
    assert_eq!(ack["error"]["code"], "forbidden", "an unknown id: {ack}");
    let many: Vec<String> = (0..11).map(|i| format!("{i:032x}")).collect();
    let ack = a
        .chat(json!({"EvtType":"message","To":bob.uid,"MsgID":"f3","Body":"","Attachments":many}))
        .await;
    assert_eq!(ack["error"]["code"], "bad_request", "eleven: {ack}");

    // Groups: members read it; a member who left before it was sent does not.
    let ack = a
        .chat(json!({"EvtType":"create","To":"","MsgID":"c1","Body":json!([bob.uid, dan.uid]).to_string()}))
        .await;
    let gid = ack["Group"].as_str().expect("gid").to_owned();
    let ack = d
        .chat(json!({"EvtType":"depart","To":gid,"MsgID":"d1"}))
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    let receipt = uploaded(n0, &alice, "receipt.jpg", jpeg_with_exif()).await;
    let rid = receipt["id"].as_str().expect("id").to_owned();
    let ack = a
        .chat(
            json!({"EvtType":"message","To":gid,"MsgID":"g1","Body":"receipt","Attachments":[rid]}),
        )
        .await;
    assert_eq!(ack["ok"], true, "{ack}");
    loop {
        let event = b.next_chat_acked().await;
        if event.data["MsgID"] == "g1" {
            assert_eq!(event.data["Attachments"], json!([rid]));
            break;
        }
    }
    assert_eq!(status_of(n1, &bob, &rid).await, 200);
    assert_eq!(status_of(n1, &dan, &rid).await, 404, "former member");
    assert_eq!(status_of(n1, &carol, &rid).await, 404, "outsider");
}

#[tokio::test]
async fn uploads_are_sniffed_limited_and_thumbnailed_embedded() {
    uploads_are_sniffed_limited_and_thumbnailed_on(&nodes(false).await).await;
}

#[tokio::test]
async fn uploads_are_sniffed_limited_and_thumbnailed_in_seaweedfs() {
    uploads_are_sniffed_limited_and_thumbnailed_on(&nodes(true).await).await;
}

#[tokio::test]
async fn only_participants_read_attachments_sent_in_messages_embedded() {
    only_participants_read_attachments_sent_in_messages_on(&nodes(false).await).await;
}

#[tokio::test]
async fn only_participants_read_attachments_sent_in_messages_across_nodes_with_seaweedfs() {
    only_participants_read_attachments_sent_in_messages_on(&nodes(true).await).await;
}

/// The sweep, with the clock handed in: an upload nobody sent is gone (record and bytes)
/// once a day old; one that was sent stays.
async fn the_sweep_deletes_unsent_uploads_after_a_day_with(
    records: Arc<dyn AttachmentStore>,
    blobs: Arc<dyn BlobStore>,
) {
    let dir = tempfile::tempdir().expect("dir");
    let db = EmbeddedDb::open(&dir.path().join("db")).expect("db");
    let service = AttachmentService::new(
        records,
        blobs.clone(),
        Arc::new(EmbeddedGroupStore::new(db)),
        AttachmentLimits {
            max_bytes: MAX_BYTES,
            max_pixels: 1_000_000,
            orphan_after: Duration::from_secs(86_400),
            keep_sent: None,
        },
        dir.path().join("tmp"),
    )
    .expect("service");
    let alice = UserId::parse(&unique("alice")).expect("uid");
    let bob = UserId::parse(&unique("bob")).expect("uid");
    let body = |bytes: Vec<u8>| {
        futures_util::stream::iter([Ok::<_, std::io::Error>(axum::body::Bytes::from(bytes))])
    };
    let orphan = service
        .upload(&alice, Some("o.png"), None, body(png(400, 300)))
        .await
        .expect("upload");
    let sent = service
        .upload(&alice, Some("s.txt"), None, body(b"sent".to_vec()))
        .await
        .expect("upload");
    let sent_id = webchat::domain::AttachmentId::parse(&sent.id).expect("id");
    service
        .attach(
            &alice,
            &[sent_id],
            &webchat::attachments::direct_conversation(&bob),
        )
        .await
        .expect("attach");
    let now = webchat::domain::now_millis();
    service.sweep(now).await.expect("sweep");
    assert!(
        blobs.get(&orphan.id, None).await.expect("get").is_some(),
        "young orphan kept"
    );

    let swept = service.sweep(now + 25 * 3_600_000).await.expect("sweep");
    assert_eq!(swept.orphans, 1);
    assert!(
        blobs.get(&orphan.id, None).await.expect("get").is_none(),
        "bytes deleted"
    );
    let thumb = format!("{}.thumb", orphan.id);
    assert!(
        blobs.get(&thumb, None).await.expect("get").is_none(),
        "thumbnail deleted"
    );
    assert!(service
        .open(&alice, &orphan.id, Part::Original, None)
        .await
        .is_err());
    service
        .open(&bob, &sent.id, Part::Original, None)
        .await
        .expect("the sent one stays");
}

#[tokio::test]
async fn the_sweep_deletes_unsent_uploads_after_a_day_embedded() {
    let dir = tempfile::tempdir().expect("dir");
    let db = EmbeddedDb::open(dir.path()).expect("db");
    let blobs = webchat::attachments::FsBlobStore::open(dir.path().join("blobs")).expect("blobs");
    the_sweep_deletes_unsent_uploads_after_a_day_with(
        Arc::new(EmbeddedAttachmentStore::new(db)),
        Arc::new(blobs),
    )
    .await;
}

#[tokio::test]
async fn the_sweep_deletes_unsent_uploads_after_a_day_from_redis_and_seaweedfs() {
    let redis = webchat::storage::redis::RedisHandles::connect(&redis_url())
        .await
        .expect("redis");
    let blobs = S3BlobStore::connect(&s3_url(), BUCKET).await.expect("s3");
    the_sweep_deletes_unsent_uploads_after_a_day_with(
        Arc::new(RedisAttachmentStore::new(redis.pool.clone(), &unique("t"))),
        Arc::new(blobs),
    )
    .await;
}
