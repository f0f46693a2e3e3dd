//! One service per store: an exclusive lock on `serve.lock` in the store's folder, holding the
//! owner's process id. A second `concord serve` on the same store is refused with a message
//! naming that process; the lock goes with the process (the OS drops it), so a crash leaves
//! nothing to clean up.

use crate::Error;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Held while the service runs.
#[derive(Debug)]
pub struct ServeLock {
    _file: File,
    pub path: PathBuf,
}

impl ServeLock {
    /// Takes the lock of the store in `dir`, or says who holds it.
    pub fn acquire(dir: &Path) -> Result<ServeLock, Error> {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::Io(format!("creating {}", dir.display()), e))?;
        let path = dir.join("serve.lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| Error::Io(format!("opening {}", path.display()), e))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut owner = String::new();
                let _ = file.read_to_string(&mut owner);
                let owner = owner.trim();
                return Err(Error::Busy(format!(
                    "the store in {} is already served by another concord serve{}; stop it first (one service per store)",
                    dir.display(),
                    if owner.is_empty() { String::new() } else { format!(" (pid {owner})") }
                )));
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::Io(format!("locking {}", path.display()), e))
            }
        }
        let _ = file.set_len(0);
        let _ = file.rewind();
        let _ = write!(file, "{}", std::process::id());
        let _ = file.flush();
        Ok(ServeLock { _file: file, path })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_on_one_store_is_refused_naming_the_holder() {
        let dir = tempfile::tempdir().unwrap();
        let first = ServeLock::acquire(dir.path()).unwrap();
        let e = ServeLock::acquire(dir.path()).unwrap_err().to_string();
        assert!(e.contains("already served"), "{e}");
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        drop(first);
        ServeLock::acquire(dir.path()).unwrap();
    }
}
