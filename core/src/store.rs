//! The back-end error type both binaries share, and the file modes of the data dir (it holds
//! password hashes, message text and the token key).

use std::path::Path;

use crate::error::{ChatError, ErrorCode};

/// Creates the data dir (and any missing parents) readable by its owner only (`0700`): it
/// holds password hashes, message text and the token key. A directory that already exists
/// keeps its mode (an operator may have chosen it).
pub fn create_private_dir(dir: &Path) -> Result<(), StoreError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(dir)
        .map_err(|e| StoreError::Internal(format!("create {}: {e}", dir.display())))
}

/// Makes `path` readable and writable by its owner only (`0600`), creating it empty if it
/// does not exist, so it is never readable by others, not even between its creation and a
/// `chmod`. An existing file is tightened too: older versions created the store `0644`.
pub fn private_file(path: &Path) -> Result<(), StoreError> {
    let failed = |e: std::io::Error| StoreError::Internal(format!("{}: {e}", path.display()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path).map_err(failed)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(failed)?;
    }
    Ok(())
}

/// The key kept in the file `path`, trimmed: `None` when the file is missing or empty (the
/// caller makes one and keeps it with [`write_key_file`]).
pub fn read_key_file(path: &Path) -> Result<Option<String>, StoreError> {
    match std::fs::read_to_string(path) {
        Ok(text) if !text.trim().is_empty() => Ok(Some(text.trim().to_owned())),
        Ok(_) => Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::Internal(format!(
            "read {}: {e}",
            path.display()
        ))),
    }
}

/// Keeps a key in the file `path` (in `dir`, created if missing, both readable by their
/// owner only).
pub fn write_key_file(dir: &Path, path: &Path, key: &str) -> Result<(), StoreError> {
    create_private_dir(dir)?;
    private_file(path)?;
    std::fs::write(path, key)
        .map_err(|e| StoreError::Internal(format!("write {}: {e}", path.display())))
}

/// A back-end failure. Client-facing code maps it to `unavailable` or `internal`.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The back-end could not be reached or timed out; the operation may be retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The back-end answered with something that should not happen.
    #[error("store error: {0}")]
    Internal(String),
    /// The back-end refused this one write, and stored nothing of it (say, a key of the
    /// wrong type); unlike [`StoreError::Unavailable`], its outcome is known.
    #[error("store refused the write: {0}")]
    Rejected(String),
}

impl From<StoreError> for ChatError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Unavailable(_) => {
                tracing::warn!(error = %e, "store unavailable");
                ChatError::new(ErrorCode::Unavailable, "storage is unavailable, try again")
            }
            StoreError::Internal(_) | StoreError::Rejected(_) => {
                tracing::error!(error = %e, "store failure");
                ChatError::new(ErrorCode::Internal, "internal error")
            }
        }
    }
}
