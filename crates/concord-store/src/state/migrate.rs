//! Migration of a format 1 or 2 store to format 3: an entity's head ('h'), snapshots ('s') and
//! reverse cross-references ('e') are folded into its entity entry ('i').
//!
//! 1. Every legacy entry is decoded first (on a resumed run too): a corrupt one is reported
//!    (tree, key, reason) and nothing is written — a store not yet started is left exactly as
//!    it was, still readable by the build that wrote it.
//! 2. The format marker becomes 3 and a `migrating` marker is set, in one commit: from here an
//!    older build refuses the store instead of misreading it.
//! 3. Legacy entries move in batches; each batch writes the entity entries and deletes the
//!    entries it folded in, atomically, so a run stopped at any point (a kill, a full disk)
//!    resumes on the next open where it left off, and no entry is folded in twice.
//! 4. The `migrating` marker is removed.

use super::*;
use crate::layout::legacy;

/// Legacy entries moved per commit.
pub(super) const BATCH: usize = 8192;
const META_MIGRATING: &str = "migrating";

pub(super) fn in_progress(store: &dyn Store) -> Result<bool, StoreError> {
    Ok(store.get(&layout::meta(META_MIGRATING))?.is_some())
}

const TREES: [(u8, &str); 3] = [
    (legacy::HEAD, "head"),
    (legacy::XREF_REV, "xref_rev"),
    (legacy::SNAPSHOT, "snapshot"),
];

fn legacy_corrupt(name: &str, key: &[u8], reason: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        tree: Tree::Entity,
        key: show_key(key),
        reason: format!("format 2 {name} entry: {reason}"),
    }
}

/// What a legacy entry is about: its entity, and for a snapshot or cross-reference its system.
fn parse(tree: u8, name: &str, k: &[u8]) -> Result<(EntityId, Option<String>), StoreError> {
    let bad = |why: &str| legacy_corrupt(name, k, why);
    let entity = |b: &[u8]| -> Result<EntityId, StoreError> {
        let raw: [u8; 16] = b.try_into().map_err(|_| bad("entity id is not 16 bytes"))?;
        Ok(EntityId(raw))
    };
    let system = |b: &[u8]| -> Result<String, StoreError> {
        let s = std::str::from_utf8(b).map_err(|_| bad("system name not UTF-8"))?;
        SystemId::new(s).map_err(|e| bad(&e.to_string()))?;
        Ok(s.to_string())
    };
    match tree {
        legacy::HEAD => Ok((entity(&k[1..])?, None)),
        legacy::XREF_REV => {
            if k.len() < 18 {
                return Err(bad("short key"));
            }
            Ok((entity(&k[1..17])?, Some(system(&k[17..])?)))
        }
        _ => {
            if k.len() < 19 || k[k.len() - 17] != 0 {
                return Err(bad("short key"));
            }
            let split = k.len() - 17;
            Ok((entity(&k[split + 1..])?, Some(system(&k[1..split])?)))
        }
    }
}

/// Checks one legacy entry (key and value) without changing anything.
fn check(tree: u8, name: &str, k: &[u8], v: &[u8]) -> Result<(), StoreError> {
    parse(tree, name, k)?;
    match tree {
        legacy::XREF_REV => std::str::from_utf8(v)
            .map(|_| ())
            .map_err(|_| legacy_corrupt(name, k, "native key not UTF-8")),
        _ => decode_version(k, v)
            .map(|_| ())
            .map_err(|e| legacy_corrupt(name, k, e)),
    }
}

pub(super) fn to_3(store: &dyn Store, batch: usize) -> Result<(), StoreError> {
    // Every legacy entry still to move is checked first, on a resumed run too: the batches
    // below only parse keys.
    for (tree, name) in TREES {
        let mut failure = None;
        scan_prefix(store, &[tree], &mut |k, v| match check(tree, name, k, v) {
            Ok(()) => true,
            Err(e) => {
                failure = Some(e);
                false
            }
        })?;
        if let Some(e) = failure {
            return Err(e);
        }
    }
    if !in_progress(store)? {
        let mut b = Batch::new();
        b.put(layout::meta(META_FORMAT), 3u32.to_be_bytes().to_vec());
        b.put(layout::meta(META_MIGRATING), b"2".to_vec());
        store.commit(b)?;
    }
    let mut moved = 0u64;
    for (tree, name) in TREES {
        loop {
            let mut old = Vec::new();
            scan_prefix(store, &[tree], &mut |k, v| {
                old.push((k.to_vec(), v.to_vec()));
                old.len() < batch.max(1)
            })?;
            if old.is_empty() {
                break;
            }
            let mut entries: BTreeMap<EntityId, EntityEntry> = BTreeMap::new();
            let mut b = Batch::new();
            for (k, v) in old {
                let (e, sys) = parse(tree, name, &k)?;
                let entry = match entries.entry(e) {
                    std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
                    std::collections::btree_map::Entry::Vacant(slot) => {
                        let key = layout::entity(&e);
                        slot.insert(match store.get(&key)? {
                            Some(b) => EntityEntry::decode(&key, &b)?,
                            None => EntityEntry::default(),
                        })
                    }
                };
                match (tree, sys) {
                    (legacy::HEAD, _) => entry.head = Some(v),
                    (legacy::XREF_REV, Some(s)) => {
                        let n = String::from_utf8(v).expect("checked above");
                        entry.systems.entry(s).or_default().native = Some(n);
                    }
                    (_, Some(s)) => entry.systems.entry(s).or_default().snapshot = Some(v),
                    (_, None) => unreachable!("parse gives every snapshot a system"),
                }
                b.delete(k);
                moved += 1;
            }
            for (e, entry) in entries {
                let key = layout::entity(&e);
                match entry.encode(&key)? {
                    Some(v) => b.put(key, v),
                    None => b.delete(key),
                }
            }
            store.commit(b)?;
        }
    }
    let mut b = Batch::new();
    b.delete(layout::meta(META_MIGRATING));
    store.commit(b)?;
    tracing::info!(
        entries = moved,
        "format 2 entries folded into entity entries"
    );
    Ok(())
}
