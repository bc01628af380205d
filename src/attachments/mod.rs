//! Attachments (contract §12): uploads, who may read them, their thumbnails, and their end.
//!
//! Owns the [`AttachmentService`] and two storage traits, side by side with their
//! implementations:
//! - [`AttachmentStore`]: the records (owner, type, size, name, the conversations an
//!   attachment was sent to): embedded ([`EmbeddedAttachmentStore`]) or Redis
//!   ([`RedisAttachmentStore`]), the same store that holds inboxes, so that every node
//!   decides access alike;
//! - [`BlobStore`]: the bytes: files in the data dir ([`FsBlobStore`]) or an S3-compatible
//!   bucket ([`S3BlobStore`]).
//!
//! It does not own messages: the chat service calls [`AttachmentService::attach`] before it
//! stores a `message` that names attachments, and HTTP handlers call the rest. Nothing here
//! knows axum or sockets.

mod blob;
mod embedded;
mod redis;
mod s3;
pub mod sniff;
mod strip;
mod thumbnail;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use axum::body::Bytes;
use futures_util::{future::join_all, Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;
use tokio_util::sync::CancellationToken;

pub use self::{
    blob::{BlobBody, BlobStore, FsBlobStore},
    embedded::EmbeddedAttachmentStore,
    redis::RedisAttachmentStore,
    s3::S3BlobStore,
    sniff::Kind,
    thumbnail::THUMBNAIL_SIDE,
};
use self::{sniff::Utf8Stream, thumbnail::ImageRefusal};
use crate::{
    domain::{now_millis, AttachmentId, ChatError, ErrorCode, GroupId, UserId},
    groups::GroupStore,
    storage::StoreError,
};

/// An attachment as stored: what was uploaded, by whom, and where it was sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Record {
    /// Its id (an [`AttachmentId`]).
    pub id: String,
    /// The uploader's uid.
    pub owner: String,
    /// The sniffed type it is served with.
    pub content_type: String,
    /// Bytes stored (after metadata was stripped).
    pub size: u64,
    /// The sanitized file name.
    pub name: String,
    /// The thumbnail's type, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail_type: Option<String>,
    /// The thumbnail's size in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thumbnail_size: Option<u64>,
    /// Upload time, unix ms.
    pub created_at: i64,
    /// Conversations it was sent in: `u:<uid>` (a 1:1 recipient) or `g:<gid>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sent_to: Vec<String>,
    /// The last send, unix ms; `None` while it was never sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sent_at: Option<i64>,
}

impl Record {
    /// The upload's answer: `{"id","contentType","size","name","thumbnail"}`.
    pub fn view(&self) -> serde_json::Value {
        serde_json::json!({
            "id": self.id,
            "contentType": self.content_type,
            "size": self.size,
            "name": self.name,
            "thumbnail": self.thumbnail_type.is_some(),
        })
    }
}

/// Where attachment records are kept. Every write is idempotent.
#[async_trait]
pub trait AttachmentStore: Send + Sync {
    /// Records a new, never-sent upload.
    async fn insert(&self, record: &Record) -> Result<(), StoreError>;
    /// The record of `id`, with every conversation it was sent to.
    async fn get(&self, id: &AttachmentId) -> Result<Option<Record>, StoreError>;
    /// Notes that `id` was sent in `conversation` at `at_ms`; `false` when there is no such
    /// attachment (any more).
    async fn mark_sent(
        &self,
        id: &AttachmentId,
        conversation: &str,
        at_ms: i64,
    ) -> Result<bool, StoreError>;
    /// Forgets `id` (no error when it is gone).
    async fn remove(&self, id: &AttachmentId) -> Result<(), StoreError>;
    /// Up to `limit` never-sent uploads older than `cutoff_ms`, oldest first.
    async fn unsent_before(
        &self,
        cutoff_ms: i64,
        limit: usize,
    ) -> Result<Vec<AttachmentId>, StoreError>;
    /// Up to `limit` sent attachments last sent before `cutoff_ms`, oldest first.
    async fn sent_before(
        &self,
        cutoff_ms: i64,
        limit: usize,
    ) -> Result<Vec<AttachmentId>, StoreError>;
}

/// Why an upload or a download was refused.
#[derive(Debug, thiserror::Error)]
pub enum AttachmentError {
    /// Over the size limit (413).
    #[error("attachments are limited to {max} bytes")]
    TooLarge {
        /// The limit.
        max: u64,
    },
    /// An image too large to process (413): more pixels than the limit.
    #[error("{0}")]
    ImageTooLarge(String),
    /// Not one of the allowed types (415).
    #[error("{0}")]
    Unsupported(String),
    /// No such attachment, or not one this user may read (404, the same answer for both).
    #[error("no such attachment")]
    NotFound,
    /// The requested range starts past the end (416).
    #[error("the range is outside the attachment")]
    RangeNotSatisfiable {
        /// The attachment's size.
        size: u64,
    },
    /// The client's body failed mid-way (400): nothing was stored.
    #[error("the upload could not be read: {0}")]
    Body(String),
    /// A contract error (a back-end failure, a bad request).
    #[error(transparent)]
    Chat(#[from] ChatError),
}

impl From<StoreError> for AttachmentError {
    fn from(e: StoreError) -> Self {
        Self::Chat(e.into())
    }
}

fn internal(what: &str, e: impl std::fmt::Display) -> AttachmentError {
    tracing::error!(error = %e, "attachment {what} failed");
    AttachmentError::Chat(ChatError::new(ErrorCode::Internal, "internal error"))
}

/// The limits and ages the service works with.
#[derive(Debug, Clone, Copy)]
pub struct AttachmentLimits {
    /// Largest upload, bytes.
    pub max_bytes: u64,
    /// Largest image a thumbnail is made of, in pixels.
    pub max_pixels: u64,
    /// A never-sent upload is deleted once this old.
    pub orphan_after: Duration,
    /// A sent attachment is deleted this long after its last send, when the messages that
    /// carry it are themselves deleted by then; `None` keeps it as long as its messages,
    /// forever.
    pub keep_sent: Option<Duration>,
}

/// Which bytes of an attachment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Part {
    /// The file as stored.
    Original,
    /// Its thumbnail.
    Thumbnail,
}

/// A `Range: bytes=` request, before it is checked against a size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeSpec {
    /// `bytes=first-` or `bytes=first-last`.
    From(u64, Option<u64>),
    /// `bytes=-n`: the last n bytes.
    Suffix(u64),
}

impl RangeSpec {
    /// Parses a `Range` header. Several ranges, other units and malformed values are `None`:
    /// the whole file is served (a server may ignore a Range it does not support).
    pub fn parse(header: &str) -> Option<Self> {
        let spec = header.trim().strip_prefix("bytes=")?.trim();
        if spec.contains(',') {
            return None;
        }
        let (first, last) = spec.split_once('-')?;
        let number = |s: &str| s.trim().parse::<u64>().ok();
        match (first.trim().is_empty(), last.trim().is_empty()) {
            (true, false) => number(last).map(Self::Suffix),
            (false, true) => number(first).map(|f| Self::From(f, None)),
            (false, false) => {
                let (f, l) = (number(first)?, number(last)?);
                (l >= f).then_some(Self::From(f, Some(l)))
            }
            (true, true) => None,
        }
    }

    /// The inclusive byte range it names in a file of `size` bytes.
    pub fn resolve(self, size: u64) -> Result<(u64, u64), AttachmentError> {
        let unsatisfiable = AttachmentError::RangeNotSatisfiable { size };
        match self {
            Self::From(first, _) if first >= size => Err(unsatisfiable),
            Self::From(first, last) => Ok((first, last.unwrap_or(u64::MAX).min(size - 1))),
            Self::Suffix(0) => Err(unsatisfiable),
            Self::Suffix(_) if size == 0 => Err(unsatisfiable),
            Self::Suffix(n) => Ok((size.saturating_sub(n), size - 1)),
        }
    }
}

/// An attachment to send: its headers' values and its (ranged) bytes.
pub struct Download {
    /// Content-Type.
    pub content_type: String,
    /// The whole file's size.
    pub size: u64,
    /// The bytes sent, inclusive, when a range was asked for.
    pub range: Option<(u64, u64)>,
    /// The sanitized file name.
    pub name: String,
    /// Whether a browser may show it inline (images); everything else is a download.
    pub inline: bool,
    /// The bytes.
    pub body: BlobBody,
}

/// What one sweep deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Swept {
    /// Uploads never sent, older than the orphan age.
    pub orphans: usize,
    /// Sent attachments whose messages are gone.
    pub expired: usize,
}

/// The conversation key of a 1:1 recipient (the sender is always the uploader).
pub fn direct_conversation(recipient: &UserId) -> String {
    format!("u:{recipient}")
}

/// The conversation key of a group.
pub fn group_conversation(gid: &GroupId) -> String {
    format!("g:{gid}")
}

/// Ids read from the stores per round of a sweep.
const SWEEP_BATCH: usize = 100;
/// Rounds per sweep: entries a round skips are read again, so a sweep is bounded.
const SWEEP_ROUNDS: usize = 50;
/// Images decoded at once (each may take `max_pixels × 4` bytes).
const IMAGE_WORKERS: usize = 2;

/// Uploads, access checks, downloads and the sweep, over an [`AttachmentStore`] and a
/// [`BlobStore`]; cheap to clone.
#[derive(Clone)]
pub struct AttachmentService {
    inner: Arc<Inner>,
}

struct Inner {
    records: Arc<dyn AttachmentStore>,
    blobs: Arc<dyn BlobStore>,
    groups: Arc<dyn GroupStore>,
    limits: AttachmentLimits,
    /// Where uploads are streamed before they are stored.
    tmp: PathBuf,
    images: tokio::sync::Semaphore,
}

/// A temporary file, removed when dropped (whatever way the upload ends).
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %self.0.display(), error = %e, "temporary upload not removed");
            }
        }
    }
}

impl AttachmentService {
    /// A service streaming uploads through `tmp` (created owner-only; leftovers of an
    /// earlier run are removed).
    pub fn new(
        records: Arc<dyn AttachmentStore>,
        blobs: Arc<dyn BlobStore>,
        groups: Arc<dyn GroupStore>,
        limits: AttachmentLimits,
        tmp: PathBuf,
    ) -> Result<Self, StoreError> {
        crate::storage::create_private_dir(&tmp)?;
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for entry in entries.flatten() {
                let _ = std::fs::remove_file(entry.path());
            }
        }
        Ok(Self {
            inner: Arc::new(Inner {
                records,
                blobs,
                groups,
                limits,
                tmp,
                images: tokio::sync::Semaphore::new(IMAGE_WORKERS),
            }),
        })
    }

    /// The limits it enforces.
    pub fn limits(&self) -> AttachmentLimits {
        self.inner.limits
    }

    /// Stores an upload by `owner`, streamed from `body` to a temporary file (never held in
    /// memory), refused with 413 once it passes the limit and with 415 unless its bytes are
    /// an allowed type. Images must decode: their thumbnail is made and their metadata
    /// stripped before anything is stored.
    #[tracing::instrument(skip_all, fields(owner = %owner))]
    pub async fn upload<S, E>(
        &self,
        owner: &UserId,
        name: Option<&str>,
        declared_len: Option<u64>,
        mut body: S,
    ) -> Result<Record, AttachmentError>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin + Send,
        E: std::fmt::Display,
    {
        let max = self.inner.limits.max_bytes;
        if declared_len.is_some_and(|len| len > max) {
            return Err(AttachmentError::TooLarge { max });
        }
        let id = AttachmentId::random();
        let upload = TempFile(self.inner.tmp.join(format!("{id}.upload")));
        let mut file = open_private(&upload.0)
            .await
            .map_err(|e| internal("temporary file", e))?;
        let mut head: Vec<u8> = Vec::with_capacity(sniff::HEAD_BYTES);
        let mut kind = None;
        let mut text = Some(Utf8Stream::default());
        let mut size = 0u64;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| AttachmentError::Body(e.to_string()))?;
            size = size.saturating_add(chunk.len() as u64);
            if size > max {
                return Err(AttachmentError::TooLarge { max });
            }
            if kind.is_none() {
                let wanted = sniff::HEAD_BYTES - head.len();
                head.extend_from_slice(&chunk[..wanted.min(chunk.len())]);
                if head.len() == sniff::HEAD_BYTES {
                    kind = Some(sniff::sniff(&head, false).ok_or_else(unsupported)?);
                }
            }
            if let Some(check) = &mut text {
                if !check.feed(&chunk) {
                    text = None;
                }
            }
            if kind == Some(Kind::Text) && text.is_none() {
                return Err(unsupported());
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| internal("write", e))?;
        }
        if size == 0 {
            return Err(ChatError::bad_request("the upload is empty").into());
        }
        let kind = match kind {
            Some(kind) => kind,
            None => sniff::sniff(&head, true).ok_or_else(unsupported)?,
        };
        if kind == Kind::Text && !text.is_some_and(|t| t.finish()) {
            return Err(unsupported());
        }
        file.flush().await.map_err(|e| internal("write", e))?;
        let file = file.into_inner();
        file.sync_all().await.map_err(|e| internal("sync", e))?;
        drop(file);

        let clean = TempFile(self.inner.tmp.join(format!("{id}.clean")));
        let mut stored = (upload.0.clone(), size);
        let mut thumb = None;
        if kind.is_image() {
            let (made, stripped) = self.process_image(&upload.0, &clean.0, kind).await?;
            if stripped {
                let len = tokio::fs::metadata(&clean.0)
                    .await
                    .map_err(|e| internal("stat", e))?
                    .len();
                stored = (clean.0.clone(), len);
            }
            thumb = Some(made);
        }
        let record = Record {
            id: id.to_string(),
            owner: owner.to_string(),
            content_type: kind.content_type().to_owned(),
            size: stored.1,
            name: display_name(name, kind),
            thumbnail_type: thumb.as_ref().map(|t| t.content_type.to_owned()),
            thumbnail_size: thumb.as_ref().map(|t| t.bytes.len() as u64),
            created_at: now_millis(),
            sent_to: Vec::new(),
            last_sent_at: None,
        };
        self.store(&id, &record, &stored.0, thumb).await?;
        tracing::info!(
            id = %id,
            content_type = %record.content_type,
            size = record.size,
            "attachment stored"
        );
        Ok(record)
    }

    /// Makes the thumbnail and the metadata-free copy (at `clean`) off the async threads.
    async fn process_image(
        &self,
        upload: &Path,
        clean: &Path,
        kind: Kind,
    ) -> Result<(thumbnail::Thumbnail, bool), AttachmentError> {
        let _permit = self
            .inner
            .images
            .acquire()
            .await
            .map_err(|e| internal("image queue", e))?;
        let (upload, clean) = (upload.to_owned(), clean.to_owned());
        let max_pixels = self.inner.limits.max_pixels;
        let made = tokio::task::spawn_blocking(move || {
            let made = thumbnail::make(&upload, kind, max_pixels)?;
            let stripped = thumbnail::strip_metadata(&upload, &clean, kind, made.orientation)?;
            Ok::<_, ImageRefusal>((made, stripped))
        })
        .await
        .map_err(|e| internal("image task", e))?;
        made.map_err(|e| match e {
            ImageRefusal::TooManyPixels { .. } => AttachmentError::ImageTooLarge(e.to_string()),
            ImageRefusal::Invalid(reason) => {
                tracing::debug!(reason = %reason, "upload refused: not a valid image");
                AttachmentError::Unsupported(
                    "the file is not a valid png, jpeg, gif or webp image".into(),
                )
            }
            ImageRefusal::Io(e) => internal("image file", e),
        })
    }

    /// Stores the bytes, then the record (a record never names missing bytes); undoes the
    /// bytes when a later step fails.
    async fn store(
        &self,
        id: &AttachmentId,
        record: &Record,
        file: &Path,
        thumb: Option<thumbnail::Thumbnail>,
    ) -> Result<(), AttachmentError> {
        let blobs = &self.inner.blobs;
        blobs
            .put_file(id.as_str(), file, record.size, &record.content_type)
            .await?;
        let stored = async {
            if let Some(thumb) = thumb {
                blobs
                    .put_bytes(&thumb_key(id), thumb.bytes, thumb.content_type)
                    .await?;
            }
            self.inner.records.insert(record).await
        }
        .await;
        if let Err(e) = stored {
            self.delete_blobs(id, true).await;
            return Err(e.into());
        }
        Ok(())
    }

    async fn delete_blobs(&self, id: &AttachmentId, thumbnail: bool) -> bool {
        let mut ok = true;
        let mut keys = vec![id.to_string()];
        if thumbnail {
            keys.push(thumb_key(id));
        }
        for key in keys {
            if let Err(e) = self.inner.blobs.delete(&key).await {
                tracing::warn!(key = %key, error = %e, "attachment bytes not deleted");
                ok = false;
            }
        }
        ok
    }

    /// Before a `message` naming `ids` is stored: each must be `sender`'s own upload
    /// (otherwise `forbidden`, and nothing is granted); then each is noted as sent in
    /// `conversation`, which lets that conversation's participants read it.
    pub async fn attach(
        &self,
        sender: &UserId,
        ids: &[AttachmentId],
        conversation: &str,
    ) -> Result<(), ChatError> {
        if ids.is_empty() {
            return Ok(());
        }
        let refused =
            || ChatError::new(ErrorCode::Forbidden, "you may only attach your own uploads");
        let records = join_all(ids.iter().map(|id| self.inner.records.get(id))).await;
        for record in records {
            match record? {
                Some(record) if record.owner == sender.as_str() => {}
                _ => return Err(refused()),
            }
        }
        let at = now_millis();
        let marked = join_all(
            ids.iter()
                .map(|id| self.inner.records.mark_sent(id, conversation, at)),
        )
        .await;
        for found in marked {
            if !found? {
                return Err(refused());
            }
        }
        Ok(())
    }

    /// The bytes `reader` asked for: the uploader and the participants of a conversation it
    /// was sent in may read it; anyone else gets [`AttachmentError::NotFound`], as for an id
    /// that does not exist.
    pub async fn open(
        &self,
        reader: &UserId,
        id: &str,
        part: Part,
        range: Option<RangeSpec>,
    ) -> Result<Download, AttachmentError> {
        let id = AttachmentId::parse(id).map_err(|_| AttachmentError::NotFound)?;
        let record = self
            .inner
            .records
            .get(&id)
            .await?
            .ok_or(AttachmentError::NotFound)?;
        if !self.may_read(&record, reader).await? {
            return Err(AttachmentError::NotFound);
        }
        let (key, content_type, size) = match part {
            Part::Original => (id.to_string(), record.content_type.clone(), record.size),
            Part::Thumbnail => match (&record.thumbnail_type, record.thumbnail_size) {
                (Some(kind), Some(size)) => (thumb_key(&id), kind.clone(), size),
                _ => return Err(AttachmentError::NotFound),
            },
        };
        let range = range.map(|r| r.resolve(size)).transpose()?;
        let body = self
            .inner
            .blobs
            .get(&key, range)
            .await?
            .ok_or(AttachmentError::NotFound)?;
        let inline = Kind::from_content_type(&content_type).is_some_and(Kind::is_image);
        let name = match part {
            Part::Original => record.name,
            Part::Thumbnail => thumbnail_name(&record.name, &content_type),
        };
        Ok(Download {
            content_type,
            size,
            range,
            name,
            inline,
            body,
        })
    }

    async fn may_read(&self, record: &Record, reader: &UserId) -> Result<bool, StoreError> {
        if record.owner == reader.as_str() {
            return Ok(true);
        }
        for conversation in &record.sent_to {
            if conversation.strip_prefix("u:") == Some(reader.as_str()) {
                return Ok(true);
            }
        }
        // Groups: the current members (a former member reads nothing of it, like the rest
        // of the group's traffic).
        for conversation in &record.sent_to {
            let Some(gid) = conversation
                .strip_prefix("g:")
                .and_then(|g| GroupId::parse(g).ok())
            else {
                continue;
            };
            let members = self.inner.groups.members(&gid).await?;
            if members.is_some_and(|m| m.iter().any(|m| m == reader.as_str())) {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Deletes uploads never sent that are older than the orphan age, and sent attachments
    /// whose messages are gone (see [`AttachmentLimits::keep_sent`]), as of `now_ms`.
    pub async fn sweep(&self, now_ms: i64) -> Result<Swept, StoreError> {
        let mut swept = Swept::default();
        let records = &self.inner.records;
        let age_ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        let cutoff = now_ms.saturating_sub(age_ms(self.inner.limits.orphan_after));
        for _ in 0..SWEEP_ROUNDS {
            let ids = records.unsent_before(cutoff, SWEEP_BATCH).await?;
            for id in &ids {
                match records.get(id).await? {
                    Some(record) if record.last_sent_at.is_none() => {
                        if self.delete(id, &record).await? {
                            swept.orphans += 1;
                        }
                    }
                    // Sent after all: a send that failed half-way left the index stale.
                    Some(record) => {
                        let first = record.sent_to.first().cloned().unwrap_or_default();
                        let at = record.last_sent_at.unwrap_or(now_ms);
                        records.mark_sent(id, &first, at).await?;
                    }
                    None => records.remove(id).await?,
                }
            }
            if ids.len() < SWEEP_BATCH {
                break;
            }
        }
        if let Some(keep) = self.inner.limits.keep_sent {
            let cutoff = now_ms.saturating_sub(age_ms(keep));
            for _ in 0..SWEEP_ROUNDS {
                let ids = records.sent_before(cutoff, SWEEP_BATCH).await?;
                for id in &ids {
                    match records.get(id).await? {
                        Some(record) if record.last_sent_at.is_some_and(|l| l < cutoff) => {
                            if self.delete(id, &record).await? {
                                swept.expired += 1;
                            }
                        }
                        Some(_) => {}
                        None => records.remove(id).await?,
                    }
                }
                if ids.len() < SWEEP_BATCH {
                    break;
                }
            }
        }
        if swept != Swept::default() {
            tracing::info!(
                orphans = swept.orphans,
                expired = swept.expired,
                "attachments swept"
            );
        }
        Ok(swept)
    }

    /// Bytes first, then the record: a failure leaves the record, and the next sweep retries.
    async fn delete(&self, id: &AttachmentId, record: &Record) -> Result<bool, StoreError> {
        if !self.delete_blobs(id, record.thumbnail_type.is_some()).await {
            return Ok(false);
        }
        self.inner.records.remove(id).await?;
        Ok(true)
    }

    /// Sweeps every `every` until `shutdown`.
    pub async fn run_sweeps(self, every: Duration, shutdown: CancellationToken) {
        let mut ticks = tokio::time::interval(every.max(Duration::from_secs(1)));
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = ticks.tick() => {
                    if let Err(e) = self.sweep(now_millis()).await {
                        tracing::warn!(error = %e, "attachment sweep failed");
                    }
                }
            }
        }
    }

    /// Whether the blob store answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.inner.blobs.ping().await
    }
}

fn unsupported() -> AttachmentError {
    AttachmentError::Unsupported(
        "only png, jpeg, gif, webp, pdf and plain UTF-8 text may be attached".into(),
    )
}

fn thumb_key(id: &AttachmentId) -> String {
    format!("{id}.thumb")
}

async fn open_private(path: &Path) -> std::io::Result<tokio::io::BufWriter<tokio::fs::File>> {
    let mut options = tokio::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    options.mode(0o600);
    Ok(tokio::io::BufWriter::with_capacity(
        64 * 1024,
        options.open(path).await?,
    ))
}

/// The name a download is saved under: the client's `name` without anything a file system
/// or a header could misread (controls, bidi overrides, path separators, quotes), at most
/// 120 characters, and always ending in an extension of its sniffed `kind` (a PNG named
/// `photo.html` is saved as `photo.html.png`, never opened as a page).
pub fn display_name(name: Option<&str>, kind: Kind) -> String {
    let cleaned: String = name
        .unwrap_or("")
        .chars()
        .map(|c| {
            if c.is_control() || crate::domain::has_bidi_controls(c.encode_utf8(&mut [0; 4])) {
                ' '
            } else if matches!(
                c,
                '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|' | ';'
            ) {
                '_'
            } else {
                c
            }
        })
        .collect();
    let cleaned = cleaned.trim().trim_start_matches('.').trim();
    let mut base: String = cleaned.chars().take(120).collect();
    if base.is_empty() {
        base = "attachment".into();
    }
    let has_extension = base.rsplit_once('.').is_some_and(|(_, ext)| {
        kind.extensions()
            .iter()
            .any(|allowed| ext.eq_ignore_ascii_case(allowed))
    });
    if !has_extension {
        base.push('.');
        base.push_str(kind.extensions()[0]);
    }
    base
}

fn thumbnail_name(name: &str, content_type: &str) -> String {
    let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
    let ext = if content_type == "image/jpeg" {
        "jpg"
    } else {
        "png"
    };
    format!("{stem}.thumb.{ext}")
}

#[cfg(test)]
mod tests;
