//! Where attachment bytes live: the [`BlobStore`] trait, and [`FsBlobStore`], files in the
//! data dir. The S3-compatible store is in `s3.rs`. Keys are made by the service only (an
//! attachment id, plus `.thumb` for its thumbnail), never taken from a client.

use std::{
    io::SeekFrom,
    path::{Path, PathBuf},
    pin::Pin,
};

use async_trait::async_trait;
use axum::body::Bytes;
use futures_util::Stream;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio_util::io::ReaderStream;

use crate::storage::StoreError;

/// The bytes of a blob (or of a range of it), streamed.
pub type BlobBody = Pin<Box<dyn Stream<Item = Result<Bytes, std::io::Error>> + Send>>;

/// Stores blobs by key. Writes of one key are whole or absent; deletes are idempotent.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Stores the local file at `path` (`size` bytes) under `key`. The store may move the
    /// file rather than copy it; the caller removes whatever is left at `path` afterwards.
    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        size: u64,
        content_type: &str,
    ) -> Result<(), StoreError>;
    /// Stores `bytes` (a thumbnail) under `key`.
    async fn put_bytes(
        &self,
        key: &str,
        bytes: Vec<u8>,
        content_type: &str,
    ) -> Result<(), StoreError>;
    /// Bytes `first..=last` of `key` (all of it for `None`); `None` when there is no blob.
    async fn get(
        &self,
        key: &str,
        range: Option<(u64, u64)>,
    ) -> Result<Option<BlobBody>, StoreError>;
    /// Deletes `key` (no error when it is gone already).
    async fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Whether the store answers (for start-up and `/health`).
    async fn ping(&self) -> Result<(), StoreError>;
}

/// Creates `path` for writing, readable by its owner only (uploads are private data).
pub fn create_private(path: &Path) -> std::io::Result<std::fs::File> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Internal(format!("{what} {}: {e}", path.display()))
}

/// Blobs as files under `<data dir>/attachments/blobs/<2 hex>/<key>`. Uploads are streamed
/// to temporary files in the same file system, so storing one is a rename.
pub struct FsBlobStore {
    root: PathBuf,
}

impl FsBlobStore {
    /// A store under `root` (created, owner-only, when missing).
    pub fn open(root: PathBuf) -> Result<Self, StoreError> {
        crate::storage::create_private_dir(&root)?;
        Ok(Self { root })
    }

    fn path(&self, key: &str) -> Result<PathBuf, StoreError> {
        // Keys are ids the service made; anything else is a bug, never a path to follow.
        let valid = !key.is_empty()
            && key.len() <= 64
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.')
            && !key.starts_with('.');
        if !valid {
            return Err(StoreError::Internal(format!("invalid blob key {key:?}")));
        }
        Ok(self.root.join(&key[..2.min(key.len())]).join(key))
    }

    fn shard_dir(path: &Path) -> Result<(), StoreError> {
        match path.parent() {
            Some(dir) => crate::storage::create_private_dir(dir),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl BlobStore for FsBlobStore {
    async fn put_file(
        &self,
        key: &str,
        path: &Path,
        _size: u64,
        _content_type: &str,
    ) -> Result<(), StoreError> {
        let target = self.path(key)?;
        Self::shard_dir(&target)?;
        tokio::fs::rename(path, &target)
            .await
            .map_err(|e| io_error("store", &target, e))
    }

    async fn put_bytes(
        &self,
        key: &str,
        bytes: Vec<u8>,
        _content_type: &str,
    ) -> Result<(), StoreError> {
        let target = self.path(key)?;
        Self::shard_dir(&target)?;
        // Written aside and renamed: a reader never sees half a thumbnail.
        let partial = target.with_extension(format!("{}.part", uuid::Uuid::new_v4().simple()));
        let write = {
            let partial = partial.clone();
            move || -> std::io::Result<()> {
                use std::io::Write;
                let mut file = create_private(&partial)?;
                file.write_all(&bytes)?;
                file.sync_all()
            }
        };
        let written = tokio::task::spawn_blocking(write)
            .await
            .map_err(|e| StoreError::Internal(format!("write task: {e}")))?;
        if let Err(e) = written {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(io_error("write", &partial, e));
        }
        tokio::fs::rename(&partial, &target)
            .await
            .map_err(|e| io_error("store", &target, e))
    }

    async fn get(
        &self,
        key: &str,
        range: Option<(u64, u64)>,
    ) -> Result<Option<BlobBody>, StoreError> {
        let path = self.path(key)?;
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("open", &path, e)),
        };
        let body: BlobBody = match range {
            None => Box::pin(ReaderStream::new(file)),
            Some((first, last)) => {
                file.seek(SeekFrom::Start(first))
                    .await
                    .map_err(|e| io_error("seek", &path, e))?;
                let length = last.saturating_sub(first).saturating_add(1);
                Box::pin(ReaderStream::new(file.take(length)))
            }
        };
        Ok(Some(body))
    }

    async fn delete(&self, key: &str) -> Result<(), StoreError> {
        let path = self.path(key)?;
        match tokio::fs::remove_file(&path).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error("delete", &path, e)),
        }
    }

    async fn ping(&self) -> Result<(), StoreError> {
        tokio::fs::metadata(&self.root)
            .await
            .map(|_| ())
            .map_err(|e| io_error("stat", &self.root, e))
    }
}
