//! The store layout: logical trees as one-byte key prefixes, and their key formats.
//!
//! ```text
//! tree       prefix  key after the prefix                      value
//! meta       0x00    name (UTF-8)                              per name, see state/mod.rs
//! entity     'i'     entity(16)                                entity entry: the head, and per
//!                                                              system its native key and
//!                                                              snapshot (state/entity.rs)
//! xref       'x'     system 0x00 native-key (UTF-8)            entity(16)
//! cursor     'k'     job 0x00 system                           entry v1 + connector bytes
//!                    job 0x00 system 0x00 "feed"              entry v1 + change feed position
//! outbox     'o'     system 0x00 entity(16)                    entry v1 + bincode(OutboxEntry)
//! pending    'p'     system 0x00 entity(16)                    version entry (write in flight)
//! conflict   'c'     entity(16) 0x00 | 0x01 field              entry v1 + bincode(ConflictEntry)
//! runlog     'r'     started-ms (u64 BE) job 0x00 seq (u32 BE)  entry v1 + bincode(RunLogEntry)
//! match      'm'     job 0x00 match-hash(32)                   entry v1 + bincode(MatchEntry)
//! match_rev  'n'     job 0x00 system 0x00 native-key           match-hash(32)
//! waiting    'w'     job 0x00 system 0x00 native-key           entry v1 + bincode(WaitingEntry)
//! peer       'y'     instance                                  entry v1 + bincode(PeerEntry)
//! history    'v'     entity(16) clock-id(8)                    version entry
//! digest     'g'     system 0x00 entity(16)                    key-hash(8) row-digest(8) snapshot-hash(8)
//! dots       'f'     entity(16)                                varint len + version entry + field dots
//! ```
//! System, instance and job names are restricted to `[A-Za-z0-9_.-]`, so 0x00 never occurs in
//! them and the separators are unambiguous.
//!
//! Format 2 kept an entity's head ('h' entity), each snapshot ('s' system 0x00 entity) and each
//! reverse cross-reference ('e' entity system) as entries of their own; [`legacy`] names them
//! for the migration to format 3, which folds them into the entity entry.

use concord_model::model::{EntityId, SystemId};
use std::fmt;

/// A logical tree of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tree {
    Meta,
    Entity,
    Xref,
    Cursor,
    Outbox,
    Pending,
    Conflict,
    RunLog,
    Match,
    MatchRev,
    Waiting,
    Peer,
    History,
    Digest,
    Dots,
}

impl Tree {
    pub const ALL: [Tree; 15] = [
        Tree::Meta,
        Tree::Entity,
        Tree::Xref,
        Tree::Cursor,
        Tree::Outbox,
        Tree::Pending,
        Tree::Conflict,
        Tree::RunLog,
        Tree::Match,
        Tree::MatchRev,
        Tree::Waiting,
        Tree::Peer,
        Tree::History,
        Tree::Digest,
        Tree::Dots,
    ];
    pub fn prefix(self) -> u8 {
        match self {
            Tree::Meta => 0x00,
            Tree::Entity => b'i',
            Tree::Xref => b'x',
            Tree::Cursor => b'k',
            Tree::Outbox => b'o',
            Tree::Pending => b'p',
            Tree::Conflict => b'c',
            Tree::RunLog => b'r',
            Tree::Match => b'm',
            Tree::MatchRev => b'n',
            Tree::Waiting => b'w',
            Tree::Peer => b'y',
            Tree::History => b'v',
            Tree::Digest => b'g',
            Tree::Dots => b'f',
        }
    }
    pub fn of_key(key: &[u8]) -> Option<Tree> {
        let p = *key.first()?;
        Tree::ALL.into_iter().find(|t| t.prefix() == p)
    }
    pub fn name(self) -> &'static str {
        match self {
            Tree::Meta => "meta",
            Tree::Entity => "entity",
            Tree::Xref => "xref",
            Tree::Cursor => "cursor",
            Tree::Outbox => "outbox",
            Tree::Pending => "pending",
            Tree::Conflict => "conflict",
            Tree::RunLog => "runlog",
            Tree::Match => "match",
            Tree::MatchRev => "match_rev",
            Tree::Waiting => "waiting",
            Tree::Peer => "peer",
            Tree::History => "history",
            Tree::Digest => "digest",
            Tree::Dots => "dots",
        }
    }
}

impl fmt::Display for Tree {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A key shown for humans: printable ASCII as is, other bytes as `\xNN`.
pub fn show_key(key: &[u8]) -> String {
    let mut s = String::new();
    for &b in key {
        if (0x20..0x7f).contains(&b) && b != b'\\' {
            s.push(b as char);
        } else {
            s.push_str(&format!("\\x{b:02x}"));
        }
    }
    s
}

pub fn meta(name: &str) -> Vec<u8> {
    let mut k = vec![Tree::Meta.prefix()];
    k.extend_from_slice(name.as_bytes());
    k
}

/// An entity's entry: its head, native keys and snapshots.
pub fn entity(e: &EntityId) -> Vec<u8> {
    let mut k = Vec::with_capacity(17);
    k.push(Tree::Entity.prefix());
    k.extend_from_slice(&e.0);
    k
}

pub fn system_prefix(tree: Tree, sys: &SystemId) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + sys.as_str().len() + 16);
    k.push(tree.prefix());
    k.extend_from_slice(sys.as_str().as_bytes());
    k.push(0);
    k
}

pub fn xref(sys: &SystemId, native: &str) -> Vec<u8> {
    let mut k = system_prefix(Tree::Xref, sys);
    k.extend_from_slice(native.as_bytes());
    k
}

pub fn cursor(job: &str, sys: &SystemId) -> Vec<u8> {
    let mut k = vec![Tree::Cursor.prefix()];
    k.extend_from_slice(job.as_bytes());
    k.push(0);
    k.extend_from_slice(sys.as_str().as_bytes());
    k
}

/// Beside a cursor: the position of the system's change feed that the read ending at that
/// cursor covers (committed with it).
pub fn feed(job: &str, sys: &SystemId) -> Vec<u8> {
    let mut k = cursor(job, sys);
    k.push(0);
    k.extend_from_slice(b"feed");
    k
}

pub fn outbox(sys: &SystemId, e: &EntityId) -> Vec<u8> {
    let mut k = system_prefix(Tree::Outbox, sys);
    k.extend_from_slice(&e.0);
    k
}

pub fn pending(sys: &SystemId, e: &EntityId) -> Vec<u8> {
    let mut k = system_prefix(Tree::Pending, sys);
    k.extend_from_slice(&e.0);
    k
}

pub fn conflict_prefix(e: &EntityId) -> Vec<u8> {
    let mut k = vec![Tree::Conflict.prefix()];
    k.extend_from_slice(&e.0);
    k
}

pub fn conflict(e: &EntityId, field: Option<&str>) -> Vec<u8> {
    let mut k = conflict_prefix(e);
    match field {
        None => k.push(0),
        Some(f) => {
            k.push(1);
            k.extend_from_slice(f.as_bytes());
        }
    }
    k
}

pub fn runlog(started_ms: i64, job: &str) -> Vec<u8> {
    use std::sync::atomic::{AtomicU32, Ordering};
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let mut k = vec![Tree::RunLog.prefix()];
    k.extend_from_slice(&(started_ms.max(0) as u64).to_be_bytes());
    k.extend_from_slice(job.as_bytes());
    k.push(0);
    // Two runs of one job starting in the same millisecond keep two entries.
    k.extend_from_slice(&SEQ.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    k
}

pub fn match_key(job: &str, hash: &[u8; 32]) -> Vec<u8> {
    let mut k = vec![Tree::Match.prefix()];
    k.extend_from_slice(job.as_bytes());
    k.push(0);
    k.extend_from_slice(hash);
    k
}

pub fn match_rev(job: &str, sys: &SystemId, native: &str) -> Vec<u8> {
    let mut k = vec![Tree::MatchRev.prefix()];
    k.extend_from_slice(job.as_bytes());
    k.push(0);
    k.extend_from_slice(sys.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(native.as_bytes());
    k
}

pub fn waiting_prefix(job: &str, sys: &SystemId) -> Vec<u8> {
    let mut k = vec![Tree::Waiting.prefix()];
    k.extend_from_slice(job.as_bytes());
    k.push(0);
    k.extend_from_slice(sys.as_str().as_bytes());
    k.push(0);
    k
}

pub fn waiting(job: &str, sys: &SystemId, native: &str) -> Vec<u8> {
    let mut k = waiting_prefix(job, sys);
    k.extend_from_slice(native.as_bytes());
    k
}

/// A peer instance's bundle exchange state.
pub fn peer(instance: &str) -> Vec<u8> {
    let mut k = vec![Tree::Peer.prefix()];
    k.extend_from_slice(instance.as_bytes());
    k
}

/// Versions of an entity exchanged with peers (merge bases for bundle imports).
pub fn history_prefix(e: &EntityId) -> Vec<u8> {
    let mut k = vec![Tree::History.prefix()];
    k.extend_from_slice(&e.0);
    k
}

/// One exchanged version of an entity, named by the first 8 bytes of its clock's hash.
pub fn history(e: &EntityId, clock_id: &[u8; 8]) -> Vec<u8> {
    let mut k = history_prefix(e);
    k.extend_from_slice(clock_id);
    k
}

/// What a system's own hash of a record was when it last matched the snapshot (hash-tree
/// reconcile).
pub fn digest(sys: &SystemId, e: &EntityId) -> Vec<u8> {
    let mut k = system_prefix(Tree::Digest, sys);
    k.extend_from_slice(&e.0);
    k
}

/// The field dots of the last version of an entity exchanged with a peer.
pub fn dots(e: &EntityId) -> Vec<u8> {
    let mut k = vec![Tree::Dots.prefix()];
    k.extend_from_slice(&e.0);
    k
}

/// The entity id at the end of a snapshot / outbox key.
pub fn entity_suffix(key: &[u8]) -> Option<EntityId> {
    let tail = key.len().checked_sub(16)?;
    let mut id = [0u8; 16];
    id.copy_from_slice(&key[tail..]);
    Some(EntityId(id))
}

/// The format 2 trees that format 3 folds into the entity entry (read only by the migration,
/// and written only by tests that build a format 2 store).
pub mod legacy {
    use concord_model::model::{EntityId, SystemId};

    /// 'h' entity(16) → version entry.
    pub const HEAD: u8 = b'h';
    /// 's' system 0x00 entity(16) → version entry.
    pub const SNAPSHOT: u8 = b's';
    /// 'e' entity(16) system → native key.
    pub const XREF_REV: u8 = b'e';

    pub fn head(e: &EntityId) -> Vec<u8> {
        let mut k = vec![HEAD];
        k.extend_from_slice(&e.0);
        k
    }
    pub fn snapshot(sys: &SystemId, e: &EntityId) -> Vec<u8> {
        let mut k = vec![SNAPSHOT];
        k.extend_from_slice(sys.as_str().as_bytes());
        k.push(0);
        k.extend_from_slice(&e.0);
        k
    }
    pub fn xref_rev(e: &EntityId, sys: &SystemId) -> Vec<u8> {
        let mut k = vec![XREF_REV];
        k.extend_from_slice(&e.0);
        k.extend_from_slice(sys.as_str().as_bytes());
        k
    }
}
