//! The entity entry (format 3): one store entry per entity holding its head and, per system, its
//! native key and snapshot.
//!
//! ```text
//! ENTRY_V1
//! flags            u8       bit 0: a head follows
//! head             varint length + version entry (with field origins)      if bit 0
//! systems          varint count, then per system in name order:
//!   name           varint length + UTF-8
//!   parts          u8       bit 0: native key, bit 1: snapshot (at least one)
//!   native key     varint length + UTF-8                                    if bit 0
//!   snapshot       varint length + version entry (no field origins)         if bit 1
//! ```
//! A snapshot whose content hash equals the head's does not repeat the content: its version
//! entry carries the F_SHARED flag and ends after its meta (hash, clock, modstamp, origin). The
//! sharing is decided every time the entry is written, from the bytes: when the head changes, a
//! snapshot that shared the old head's content is written out with that content again.

use super::*;

const E_HEAD: u8 = 1;
const P_NATIVE: u8 = 1;
const P_SNAPSHOT: u8 = 2;

/// An entity entry as it is stored, borrowed: structure checked, versions not decoded.
pub(super) struct EntityView<'a> {
    pub head: Option<&'a [u8]>,
    pub systems: Vec<SysView<'a>>,
}

pub(super) struct SysView<'a> {
    pub name: &'a str,
    pub native: Option<&'a str>,
    /// A version entry, possibly F_SHARED (see [`EntityView::snapshot`]).
    pub snapshot: Option<&'a [u8]>,
}

fn take<'a>(key: &[u8], b: &'a [u8], pos: &mut usize, what: &str) -> Result<&'a [u8], StoreError> {
    let n = varint::get_u64(b, pos).map_err(|_| corrupt(key, format!("bad {what} length")))?;
    let end = usize::try_from(n)
        .ok()
        .and_then(|n| pos.checked_add(n))
        .filter(|e| *e <= b.len())
        .ok_or_else(|| corrupt(key, format!("truncated {what}")))?;
    let out = &b[*pos..end];
    *pos = end;
    Ok(out)
}

fn text<'a>(key: &[u8], b: &'a [u8], pos: &mut usize, what: &str) -> Result<&'a str, StoreError> {
    std::str::from_utf8(take(key, b, pos, what)?)
        .map_err(|_| corrupt(key, format!("{what} not UTF-8")))
}

impl<'a> EntityView<'a> {
    pub fn parse(key: &[u8], b: &'a [u8]) -> Result<Self, StoreError> {
        let [ENTRY_V1, flags, ..] = b else {
            return match b.first() {
                None => Err(corrupt(key, "empty value")),
                Some(&ENTRY_V1) => Err(corrupt(key, "truncated flags")),
                Some(&v) => Err(corrupt(key, format!("unknown entry version {v}"))),
            };
        };
        if flags & !E_HEAD != 0 {
            return Err(corrupt(key, format!("unknown entity flags 0x{flags:02x}")));
        }
        let mut pos = 2;
        let head = if flags & E_HEAD != 0 {
            Some(take(key, b, &mut pos, "head")?)
        } else {
            None
        };
        let n = varint::get_u64(b, &mut pos).map_err(|_| corrupt(key, "bad system count"))?;
        // Each system takes at least three bytes: a count beyond that is corrupt, and must not
        // size an allocation.
        if n > (b.len() - pos) as u64 / 3 {
            return Err(corrupt(key, "system count larger than the entry"));
        }
        let mut systems = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let name = text(key, b, &mut pos, "system name")?;
            if systems.last().is_some_and(|l: &SysView| l.name >= name) {
                return Err(corrupt(key, "systems out of order"));
            }
            let parts = *b.get(pos).ok_or_else(|| corrupt(key, "truncated parts"))?;
            pos += 1;
            if parts == 0 || parts & !(P_NATIVE | P_SNAPSHOT) != 0 {
                return Err(corrupt(key, format!("bad parts 0x{parts:02x} of {name}")));
            }
            let native = if parts & P_NATIVE != 0 {
                Some(text(key, b, &mut pos, "native key")?)
            } else {
                None
            };
            let snapshot = if parts & P_SNAPSHOT != 0 {
                Some(take(key, b, &mut pos, "snapshot")?)
            } else {
                None
            };
            systems.push(SysView {
                name,
                native,
                snapshot,
            });
        }
        if pos != b.len() {
            return Err(corrupt(key, "trailing bytes"));
        }
        Ok(EntityView { head, systems })
    }

    pub fn system(&self, sys: &str) -> Option<&SysView<'a>> {
        self.systems.iter().find(|s| s.name == sys)
    }

    /// The content bytes a shared snapshot of hash `hash` stands for: the head's.
    fn shared_content(
        &self,
        key: &[u8],
        hash: &Option<ContentHash>,
    ) -> Result<&'a [u8], StoreError> {
        let head = self
            .head
            .ok_or_else(|| corrupt(key, "a snapshot shares the content of a missing head"))?;
        let (hm, content, _) = split_version(key, head, false)?;
        if hm.hash.is_none() || hm.hash != *hash {
            return Err(corrupt(key, "a shared snapshot's hash is not the head's"));
        }
        Ok(content)
    }

    pub fn head_version(
        &self,
        key: &[u8],
        verify_hash: bool,
        names: &mut canonical::NameCache,
    ) -> Result<Option<Version>, StoreError> {
        self.head
            .map(|h| decode_version_with(key, h, verify_hash, names))
            .transpose()
    }

    /// The snapshot of `sys`, decoded (a shared one with the head's content).
    pub fn snapshot(
        &self,
        key: &[u8],
        sys: &str,
        verify_hash: bool,
        names: &mut canonical::NameCache,
    ) -> Result<Option<Version>, StoreError> {
        let Some(snap) = self.system(sys).and_then(|s| s.snapshot) else {
            return Ok(None);
        };
        let (meta, content, shared) = split_version(key, snap, true)?;
        let content = if shared {
            self.shared_content(key, &meta.hash)?
        } else {
            content
        };
        version_from(key, meta, content, verify_hash, names).map(Some)
    }

    /// Like [`EntityView::snapshot`], given the head as this entry decodes it: a shared
    /// snapshot takes the head's fields instead of decoding (and hashing) them again.
    pub fn snapshot_beside(
        &self,
        key: &[u8],
        sys: &str,
        head: Option<&Version>,
        verify_hash: bool,
        names: &mut canonical::NameCache,
    ) -> Result<Option<Version>, StoreError> {
        let Some(snap) = self.system(sys).and_then(|s| s.snapshot) else {
            return Ok(None);
        };
        match (split_version(key, snap, true)?, head) {
            ((meta, _, true), Some(h)) if h.hash.is_some() && h.hash == meta.hash => {
                Ok(Some(Version {
                    content: h.content.clone(),
                    hash: meta.hash,
                    clock: meta.clock,
                    modstamp: meta.modstamp,
                    origin: meta.origin,
                    field_origins: meta.field_origins,
                }))
            }
            _ => self.snapshot(key, sys, verify_hash, names),
        }
    }

    /// The snapshot of `sys` without its fields.
    pub fn snapshot_meta(&self, key: &[u8], sys: &str) -> Result<Option<VersionMeta>, StoreError> {
        match self.system(sys).and_then(|s| s.snapshot) {
            None => Ok(None),
            Some(snap) => Ok(Some(split_version(key, snap, true)?.0)),
        }
    }
}

/// An entity entry being changed by a commit: snapshots always held whole (never shared).
#[derive(Debug, Default)]
pub(super) struct EntityEntry {
    pub head: Option<Vec<u8>>,
    pub systems: BTreeMap<String, SysEntry>,
}

#[derive(Debug, Default)]
pub(super) struct SysEntry {
    pub native: Option<String>,
    pub snapshot: Option<Vec<u8>>,
}

/// A shared snapshot written whole again: its meta, unflagged, then the head's content.
fn unshare(key: &[u8], snap: &[u8], content: &[u8]) -> Result<Vec<u8>, StoreError> {
    let (_, own, _) = split_version(key, snap, true)?;
    debug_assert!(own.is_empty());
    let mut out = Vec::with_capacity(snap.len() + content.len());
    out.extend_from_slice(snap);
    out[1] &= !F_SHARED;
    out.extend_from_slice(content);
    Ok(out)
}

impl EntityEntry {
    pub fn decode(key: &[u8], b: &[u8]) -> Result<Self, StoreError> {
        let view = EntityView::parse(key, b)?;
        let mut systems = BTreeMap::new();
        for s in &view.systems {
            let snapshot = match s.snapshot {
                None => None,
                Some(snap) => {
                    let (meta, _, shared) = split_version(key, snap, true)?;
                    if shared {
                        Some(unshare(key, snap, view.shared_content(key, &meta.hash)?)?)
                    } else {
                        Some(snap.to_vec())
                    }
                }
            };
            systems.insert(
                s.name.to_string(),
                SysEntry {
                    native: s.native.map(str::to_string),
                    snapshot,
                },
            );
        }
        Ok(EntityEntry {
            head: view.head.map(<[u8]>::to_vec),
            systems,
        })
    }

    /// The stored form; `None` when nothing is left (the entry is removed).
    pub fn encode(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let systems: Vec<_> = self
            .systems
            .iter()
            .filter(|(_, s)| s.native.is_some() || s.snapshot.is_some())
            .collect();
        if self.head.is_none() && systems.is_empty() {
            return Ok(None);
        }
        let head_hash = match &self.head {
            Some(h) => split_version(key, h, false)?.0.hash,
            None => None,
        };
        let mut size = 8 + self.head.as_ref().map_or(0, Vec::len);
        for (name, s) in &systems {
            size += name.len() + 8 + s.native.as_ref().map_or(0, String::len);
            size += s.snapshot.as_ref().map_or(0, |v| v.len().min(96));
        }
        let mut out = Vec::with_capacity(size);
        out.push(ENTRY_V1);
        out.push(if self.head.is_some() { E_HEAD } else { 0 });
        if let Some(h) = &self.head {
            varint::put_u64(&mut out, h.len() as u64);
            out.extend_from_slice(h);
        }
        varint::put_u64(&mut out, systems.len() as u64);
        for (name, s) in systems {
            varint::put_u64(&mut out, name.len() as u64);
            out.extend_from_slice(name.as_bytes());
            let mut parts = 0;
            if s.native.is_some() {
                parts |= P_NATIVE;
            }
            if s.snapshot.is_some() {
                parts |= P_SNAPSHOT;
            }
            out.push(parts);
            if let Some(n) = &s.native {
                varint::put_u64(&mut out, n.len() as u64);
                out.extend_from_slice(n.as_bytes());
            }
            if let Some(snap) = &s.snapshot {
                let (meta, content, _) = split_version(key, snap, false)?;
                if meta.hash.is_some() && meta.hash == head_hash {
                    let own = &snap[..snap.len() - content.len()];
                    varint::put_u64(&mut out, own.len() as u64);
                    let at = out.len();
                    out.extend_from_slice(own);
                    out[at + 1] |= F_SHARED;
                } else {
                    varint::put_u64(&mut out, snap.len() as u64);
                    out.extend_from_slice(snap);
                }
            }
        }
        Ok(Some(out))
    }
}

/// `store verify` and fuzzing: the structure, the head and every snapshot decode, hashes
/// checked.
pub(super) fn verify_entity(key: &[u8], b: &[u8]) -> Result<(), StoreError> {
    if key.len() != 17 {
        return Err(corrupt(key, "entity key is not 16 bytes"));
    }
    let view = EntityView::parse(key, b)?;
    let mut names = canonical::NameCache::new();
    view.head_version(key, true, &mut names)?;
    for s in &view.systems {
        SystemId::new(s.name).map_err(|e| corrupt(key, e.to_string()))?;
        view.snapshot(key, s.name, true, &mut names)?;
    }
    Ok(())
}
