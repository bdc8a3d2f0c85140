//! Credential files that are read again when they change, so rotating a key, a secret or
//! a token needs no restart (a Kubernetes Secret update swaps the file in place).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// How often a credential file is looked at for changes.
pub const POLL_INTERVAL: Duration = Duration::from_secs(1);

/// What identifies one version of a file: cheap to take, changes when the file does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
    })
}

/// A file whose last-read version is remembered, to tell when it changes.
#[derive(Debug)]
pub struct WatchedFile {
    path: PathBuf,
    last_read: Mutex<Option<Stamp>>,
}

impl WatchedFile {
    /// Watches `path`; nothing is read yet.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            last_read: Mutex::new(None),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the file with `read`, remembering which version was read.
    pub fn read<T, E>(&self, read: impl FnOnce(&Path) -> Result<T, E>) -> Result<T, E> {
        let before = stamp(&self.path);
        let value = read(&self.path)?;
        *self.last_read.lock().unwrap_or_else(|p| p.into_inner()) = before;
        Ok(value)
    }

    /// Completes once the file differs from the version last read (polled every
    /// [`POLL_INTERVAL`]); never, before the first read.
    pub async fn changed(&self) {
        loop {
            tokio::time::sleep(POLL_INTERVAL).await;
            let last = *self.last_read.lock().unwrap_or_else(|p| p.into_inner());
            if last.is_some() && stamp(&self.path) != last {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn notices_a_rewritten_file() {
        let dir = std::env::temp_dir().join(format!("mintproxy-watch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("token.txt");
        std::fs::write(&path, "one").unwrap();
        let watched = WatchedFile::new(&path);
        assert_eq!(watched.read(|path| std::fs::read_to_string(path)).unwrap(), "one");
        let unchanged = tokio::time::timeout(Duration::from_millis(1500), watched.changed()).await;
        assert!(unchanged.is_err(), "no change reported for an untouched file");
        std::fs::write(&path, "two!").unwrap();
        tokio::time::timeout(Duration::from_secs(3), watched.changed())
            .await
            .expect("the change is noticed within seconds");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
