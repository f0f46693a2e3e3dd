//! `concord sandbox --data DIR`: the org kept in a sled database, so a restarted sandbox has the
//! same records, ids, recycle bin and delete log. Every API call that changed something is
//! written as one atomic batch (records, purged ids and the org's counters together) and
//! flushed before its response is sent.
//!
//! Not persisted: the daily API usage, call counters, fault settings, open query cursors and
//! bulk jobs (a restart is like a new day and a new session).

use super::org::{Org, OrgMeta, Rec, Stored};
use concord_model::model::Timestamp;
use std::path::Path;

/// Errors of the sandbox's persistence.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("sandbox data store at {path}: {source}")]
    Sled {
        path: String,
        #[source]
        source: sled::Error,
    },
    #[error("sandbox data store at {path}: corrupt entry {key}: {why}")]
    Corrupt {
        path: String,
        key: String,
        why: String,
    },
}

/// The sled database behind `--data`.
pub struct Persist {
    path: String,
    db: sled::Db,
}

/// Keys: `m` the org's meta; `r` object NUL id: a record; `p` object NUL id: a purged id.
const META: &[u8] = b"m";
const REC: u8 = b'r';
const PURGED: u8 = b'p';

fn key(tag: u8, object: &str, id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(object.len() + id.len() + 2);
    k.push(tag);
    k.extend_from_slice(object.as_bytes());
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

fn split(path: &str, k: &[u8]) -> Result<(String, String), PersistError> {
    let corrupt = |why: &str| PersistError::Corrupt {
        path: path.to_string(),
        key: String::from_utf8_lossy(k).into_owned(),
        why: why.to_string(),
    };
    let at = k
        .iter()
        .position(|b| *b == 0)
        .ok_or_else(|| corrupt("no separator"))?;
    let o = std::str::from_utf8(&k[..at]).map_err(|_| corrupt("object not UTF-8"))?;
    let id = std::str::from_utf8(&k[at + 1..]).map_err(|_| corrupt("id not UTF-8"))?;
    Ok((o.to_string(), id.to_string()))
}

impl Persist {
    /// Opens (or creates) the store in `dir`; returns the org it holds, if any.
    pub fn open(dir: &Path) -> Result<(Persist, Option<Org>), PersistError> {
        let path = dir.display().to_string();
        let s = |source| PersistError::Sled {
            path: path.clone(),
            source,
        };
        let db = sled::open(dir).map_err(s)?;
        let p = Persist {
            path: path.clone(),
            db,
        };
        let org = p.load()?;
        Ok((p, org))
    }

    fn load(&self) -> Result<Option<Org>, PersistError> {
        let s = |source| PersistError::Sled {
            path: self.path.clone(),
            source,
        };
        let Some(meta) = self.db.get(META).map_err(s)? else {
            return Ok(None);
        };
        let corrupt = |key: &[u8], why: String| PersistError::Corrupt {
            path: self.path.clone(),
            key: String::from_utf8_lossy(key).into_owned(),
            why,
        };
        let meta: OrgMeta =
            serde_json::from_slice(&meta).map_err(|e| corrupt(META, e.to_string()))?;
        let mut recs = Vec::new();
        for kv in self.db.scan_prefix([REC]) {
            let (k, v) = kv.map_err(s)?;
            let (o, id) = split(&self.path, &k[1..])?;
            let r: Rec = serde_json::from_slice(&v).map_err(|e| corrupt(&k, e.to_string()))?;
            recs.push((o, id, r));
        }
        let mut gone = Vec::new();
        for kv in self.db.scan_prefix([PURGED]) {
            let (k, v) = kv.map_err(s)?;
            let (o, id) = split(&self.path, &k[1..])?;
            let ms: [u8; 8] = v
                .as_ref()
                .try_into()
                .map_err(|_| corrupt(&k, "deletion time is not 8 bytes".into()))?;
            gone.push((o, id, Timestamp(i64::from_be_bytes(ms))));
        }
        Ok(Some(Org::restore(meta, recs, gone)))
    }

    /// Writes what changed in `org` since the last save, and flushes.
    pub fn save(&self, org: &mut Org) -> Result<(), PersistError> {
        let s = |source| PersistError::Sled {
            path: self.path.clone(),
            source,
        };
        let mut batch = sled::Batch::default();
        for (o, id) in org.take_dirty() {
            let (r, p) = (key(REC, &o, &id), key(PURGED, &o, &id));
            match org.stored(&o, &id) {
                Stored::Record(rec) => {
                    batch.insert(r, serde_json::to_vec(rec).expect("records serialise"));
                    batch.remove(p);
                }
                Stored::Purged(t) => {
                    batch.remove(r);
                    batch.insert(p, t.millis().to_be_bytes().to_vec());
                }
                Stored::Absent => {
                    batch.remove(r);
                    batch.remove(p);
                }
            }
        }
        let meta = serde_json::to_vec(&org.meta()).expect("meta serialises");
        batch.insert(META, meta);
        self.db.apply_batch(batch).map_err(s)?;
        self.db.flush().map_err(s)?;
        Ok(())
    }
}
