//! The sled 0.34.7 backend.
//!
//! Everything lives in one sled tree (`concord`); the logical trees are key prefixes (see
//! [`super::layout`]), which lets one `apply_batch` cover several of them atomically without a
//! sled transaction (whose closure sled may re-run). `flush` calls `Db::flush`, which returns
//! once everything written so far is on disk (fsync'd). See `docs/design.md`, "Durability".

use super::{Batch, Store, StoreError};
use std::path::{Path, PathBuf};

/// sled's page cache unless configured (sled's own default is 1 GiB, which a large store fills:
/// a pass's memory would grow with the store).
pub const DEFAULT_CACHE_BYTES: u64 = 256 << 20;

#[derive(Debug, Clone)]
pub struct SledStore {
    db: sled::Db,
    tree: sled::Tree,
    path: PathBuf,
}

impl SledStore {
    /// Opens (or creates) the store at `path`. The folder's lock is waited for up to two
    /// seconds: a process that just closed the store (or exited) releases it when sled's
    /// background flusher stops, a moment after the last handle is dropped. A store held by a
    /// running process is refused after that.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, StoreError> {
        Self::open_with_cache(path, DEFAULT_CACHE_BYTES)
    }

    /// [`SledStore::open`] with sled's page cache bounded to `cache_bytes` (what the store holds
    /// in memory however large it grows; what does not fit is read back from disk).
    pub fn open_with_cache(path: impl AsRef<Path>, cache_bytes: u64) -> Result<Self, StoreError> {
        let path = path.as_ref().to_path_buf();
        let started = std::time::Instant::now();
        let db = loop {
            match sled::Config::new()
                .path(&path)
                .mode(sled::Mode::HighThroughput)
                .cache_capacity(cache_bytes)
                .open()
            {
                Ok(db) => break db,
                Err(e)
                    if e.to_string().contains("could not acquire lock")
                        && started.elapsed() < std::time::Duration::from_secs(2) =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(25));
                }
                Err(e) => {
                    return Err(StoreError::Io(format!(
                        "cannot open store at {}: {e}",
                        path.display()
                    )))
                }
            }
        };
        let tree = db.open_tree("concord")?;
        Ok(SledStore { db, tree, path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes on disk, as sled reports them.
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }
}

impl Store for SledStore {
    fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    fn scan(
        &self,
        start: &[u8],
        end: Option<&[u8]>,
        f: &mut dyn FnMut(&[u8], &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let iter = match end {
            Some(e) => self.tree.range(start..e),
            None => self.tree.range(start..),
        };
        for item in iter {
            let (k, v) = item?;
            if !f(&k, &v) {
                break;
            }
        }
        Ok(())
    }

    fn apply(&self, batch: Batch) -> Result<(), StoreError> {
        let mut b = sled::Batch::default();
        for (k, v) in batch.ops {
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        self.tree.apply_batch(b)?;
        Ok(())
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}
