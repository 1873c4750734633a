//! Files in embedded mode: `<data>/files/<channel>/<name>`, each replaced
//! atomically (temporary file, fsync, rename).

use std::path::{Path, PathBuf};

use crate::backend::{FileError, Files};
use crate::store::StoreError;

/// [`Files`] in a folder.
pub struct FolderFiles {
    /// `<data>/files`.
    pub root: PathBuf,
    /// `files_max_count`.
    pub max_count: usize,
    /// `files_max_bytes`.
    pub max_bytes: u64,
}

impl FolderFiles {
    fn path(&self, channel: &str, name: &str) -> PathBuf {
        self.root.join(channel).join(name)
    }

    /// Refuses a write of `size` bytes to `path` that would take the channel's
    /// folder past its quota.
    fn check_quota(&self, path: &Path, size: u64) -> Result<(), FileError> {
        let Some(dir) = path.parent() else {
            return Ok(());
        };
        let (mut count, mut bytes, mut replaced) = (0usize, 0u64, None);
        if let Ok(entries) = std::fs::read_dir(dir) {
            for entry in entries.flatten() {
                let Ok(meta) = entry.metadata() else { continue };
                if !meta.is_file() || entry.file_name().to_string_lossy().starts_with('.') {
                    continue;
                }
                count += 1;
                bytes += meta.len();
                if entry.path() == path {
                    replaced = Some(meta.len());
                }
            }
        }
        quota(
            count,
            bytes,
            replaced.map(|r| r as usize),
            size,
            self.max_count,
            self.max_bytes,
        )
    }
}

/// The quota check both backends share: `count` files of `bytes` bytes now,
/// the replaced file's size if any, and the new file's `size`.
pub fn quota(
    count: usize,
    bytes: u64,
    replaced: Option<usize>,
    size: u64,
    max_count: usize,
    max_bytes: u64,
) -> Result<(), FileError> {
    if replaced.is_none() && count >= max_count {
        return Err(FileError::Quota(format!(
            "the channel has {max_count} files already (files_max_count)"
        )));
    }
    if bytes - replaced.unwrap_or(0) as u64 + size > max_bytes {
        return Err(FileError::Quota(format!(
            "the channel's files would take more than {max_bytes} bytes (files_max_bytes)"
        )));
    }
    Ok(())
}

impl Files for FolderFiles {
    fn read(&self, channel: &str, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        match std::fs::read(self.path(channel, name)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn write(&self, channel: &str, name: &str, bytes: &[u8]) -> Result<bool, FileError> {
        let path = self.path(channel, name);
        self.check_quota(&path, bytes.len() as u64)?;
        let existed = path.exists();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(StoreError::from)?;
        }
        crate::disk::write_atomic(&path, bytes).map_err(StoreError::from)?;
        Ok(existed)
    }

    fn delete(&self, channel: &str, name: &str) -> Result<bool, StoreError> {
        match std::fs::remove_file(self.path(channel, name)) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}
