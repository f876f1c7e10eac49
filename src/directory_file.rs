//! Directory files on disk: the one place a directory is read from the file system, so that
//! the core's [`crate::core::directory`] stays free of IO.

use std::path::Path;

use crate::core::directory::{DirectoryError, DirectoryFile, MemoryDirectory};

#[derive(Debug, thiserror::Error)]
pub enum DirectoryFileError {
    #[error("cannot read directory file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Invalid(#[from] DirectoryError),
}

/// Reads a directory file, unvalidated.
pub fn read(path: &Path) -> Result<DirectoryFile, DirectoryFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| DirectoryFileError::Io {
        path: path.display().to_string(),
        source,
    })?;
    Ok(DirectoryFile::parse(&text, &path.display().to_string())?)
}

/// Reads and validates a directory file.
pub fn load(path: &Path) -> Result<MemoryDirectory, DirectoryFileError> {
    Ok(MemoryDirectory::from_file(read(path)?)?)
}
