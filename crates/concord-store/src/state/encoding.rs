//! The entry formats: versions (hand-encoded, flags per optional part), bincode entries with a
//! version byte, and the decoders every read and `store verify` use.

use super::*;

/// The largest bincode entry (outbox, conflict, run log) the decoder will allocate for.
pub(super) const ENTRY_LIMIT: usize = 16 << 20;
/// Version byte that starts every entry value.
pub(super) const ENTRY_V1: u8 = 1;

pub(super) const F_TOMB: u8 = 1;
pub(super) const F_MODSTAMP: u8 = 2;
pub(super) const F_ORIGIN: u8 = 4;
/// Per-field origins follow the origin: varint count, then per field (name order) varint
/// length + name, varint length + system.
pub(super) const F_FIELD_ORIGINS: u8 = 8;
/// Only in a snapshot inside an entity entry (format 3): the content is the head's, not
/// repeated (the snapshot's hash equals the head's).
pub(super) const F_SHARED: u8 = 16;

pub(super) fn corrupt(key: &[u8], reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        tree: Tree::of_key(key).unwrap_or(Tree::Meta),
        key: show_key(key),
        reason: reason.into(),
    }
}

/// Encodes a head or snapshot version.
pub fn encode_version(v: &Version, out: &mut Vec<u8>) {
    encode_version_with(v, true, out)
}

/// Encodes a version; without `origins` its per-field origins are left out (a snapshot says
/// what a system holds, not where each value came from).
pub(super) fn encode_version_with(v: &Version, origins: bool, out: &mut Vec<u8>) {
    let origins = origins && !v.field_origins.is_empty();
    out.push(ENTRY_V1);
    let mut flags = 0;
    if v.content.is_none() {
        flags |= F_TOMB;
    }
    if v.modstamp.is_some() {
        flags |= F_MODSTAMP;
    }
    if v.origin.is_some() {
        flags |= F_ORIGIN;
    }
    if origins {
        flags |= F_FIELD_ORIGINS;
    }
    out.push(flags);
    if let Some(h) = &v.hash {
        out.extend_from_slice(&h.0);
    }
    v.clock.encode_into(out);
    if let Some(m) = v.modstamp {
        varint::put_u64(out, varint::zigzag64(m.millis()));
    }
    if let Some(o) = &v.origin {
        varint::put_u64(out, o.as_str().len() as u64);
        out.extend_from_slice(o.as_str().as_bytes());
    }
    if origins {
        varint::put_u64(out, v.field_origins.len() as u64);
        for (name, sys) in &v.field_origins {
            for part in [&**name, sys.as_str()] {
                varint::put_u64(out, part.len() as u64);
                out.extend_from_slice(part.as_bytes());
            }
        }
    }
    if let Some(c) = &v.content {
        canonical::encode_into(c, out);
    }
}

/// The cheap part of a version entry: no field decoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionMeta {
    pub hash: Option<ContentHash>,
    pub clock: VectorClock,
    pub modstamp: Option<Timestamp>,
    pub origin: Option<SystemId>,
    pub field_origins: concord_model::model::FieldOrigins,
}

pub(super) fn decode_version_parts<'a>(
    key: &[u8],
    b: &'a [u8],
) -> Result<(VersionMeta, &'a [u8]), StoreError> {
    let (meta, content, _) = split_version(key, b, false)?;
    Ok((meta, content))
}

/// Splits a version entry into its decoded meta and its content bytes; with `allow_shared`, a
/// snapshot whose content is its head's (F_SHARED, no content bytes) is accepted, and said.
pub(super) fn split_version<'a>(
    key: &[u8],
    b: &'a [u8],
    allow_shared: bool,
) -> Result<(VersionMeta, &'a [u8], bool), StoreError> {
    let Some((&ver, rest)) = b.split_first() else {
        return Err(corrupt(key, "empty value"));
    };
    if ver != ENTRY_V1 {
        return Err(corrupt(key, format!("unknown entry version {ver}")));
    }
    let Some((&flags, mut rest)) = rest.split_first() else {
        return Err(corrupt(key, "truncated flags"));
    };
    let known = F_TOMB | F_MODSTAMP | F_ORIGIN | F_FIELD_ORIGINS;
    let known = if allow_shared {
        known | F_SHARED
    } else {
        known
    };
    if flags & !known != 0 {
        return Err(corrupt(key, format!("unknown flags 0x{flags:02x}")));
    }
    let shared = flags & F_SHARED != 0;
    if shared && flags & F_TOMB != 0 {
        return Err(corrupt(key, "a tombstone cannot share the head's content"));
    }
    let hash = if flags & F_TOMB == 0 {
        if rest.len() < 32 {
            return Err(corrupt(key, "truncated hash"));
        }
        let mut h = [0u8; 32];
        h.copy_from_slice(&rest[..32]);
        rest = &rest[32..];
        Some(ContentHash(h))
    } else {
        None
    };
    let (clock, used) = VectorClock::decode(rest).map_err(|e| corrupt(key, e.to_string()))?;
    let mut pos = used;
    let modstamp = if flags & F_MODSTAMP != 0 {
        let m = varint::get_u64(rest, &mut pos).map_err(|_| corrupt(key, "bad modstamp"))?;
        Some(Timestamp(varint::unzigzag64(m)))
    } else {
        None
    };
    let origin = if flags & F_ORIGIN != 0 {
        let n = varint::get_u64(rest, &mut pos).map_err(|_| corrupt(key, "bad origin length"))?
            as usize;
        let raw = rest
            .get(pos..pos.saturating_add(n))
            .ok_or_else(|| corrupt(key, "truncated origin"))?;
        pos += n;
        let s = std::str::from_utf8(raw).map_err(|_| corrupt(key, "origin not UTF-8"))?;
        Some(SystemId::new(s).map_err(|e| corrupt(key, e.to_string()))?)
    } else {
        None
    };
    let mut field_origins = concord_model::model::FieldOrigins::new();
    if flags & F_FIELD_ORIGINS != 0 {
        let n = varint::get_u64(rest, &mut pos).map_err(|_| corrupt(key, "bad origin count"))?;
        if n == 0 {
            return Err(corrupt(key, "empty field origins"));
        }
        let mut text = || -> Result<&str, StoreError> {
            let len = varint::get_u64(rest, &mut pos)
                .map_err(|_| corrupt(key, "bad field origin length"))?
                as usize;
            let raw = rest
                .get(pos..pos.saturating_add(len))
                .ok_or_else(|| corrupt(key, "truncated field origin"))?;
            pos += len;
            std::str::from_utf8(raw).map_err(|_| corrupt(key, "field origin not UTF-8"))
        };
        let mut last: Option<String> = None;
        for _ in 0..n {
            let name = text()?.to_string();
            let sys = SystemId::new(text()?).map_err(|e| corrupt(key, e.to_string()))?;
            if last.as_ref().is_some_and(|l| *l >= name) {
                return Err(corrupt(key, "field origins out of order"));
            }
            if Some(&sys) == origin.as_ref() {
                return Err(corrupt(key, "field origin repeats the origin"));
            }
            last = Some(name.clone());
            field_origins.insert(std::sync::Arc::from(name), sys);
        }
    }
    let content = rest
        .get(pos..)
        .ok_or_else(|| corrupt(key, "truncated version"))?;
    if hash.is_none() && !content.is_empty() {
        return Err(corrupt(key, "tombstone with content"));
    }
    if shared && !content.is_empty() {
        return Err(corrupt(key, "a shared snapshot with content of its own"));
    }
    Ok((
        VersionMeta {
            hash,
            clock,
            modstamp,
            origin,
            field_origins,
        },
        content,
        shared,
    ))
}

/// Decodes a version entry, checking that the content matches its stored hash.
pub fn decode_version(key: &[u8], b: &[u8]) -> Result<Version, StoreError> {
    decode_version_with(key, b, true, &mut canonical::NameCache::new())
}

/// Decodes a version entry. Structure and canonical form are always checked; the content hash
/// is recomputed only with `verify_hash` (point reads and `verify`; bulk scans rely on the
/// structural checks and sled's own checksums).
pub(crate) fn decode_version_with(
    key: &[u8],
    b: &[u8],
    verify_hash: bool,
    names: &mut canonical::NameCache,
) -> Result<Version, StoreError> {
    let (meta, content) = decode_version_parts(key, b)?;
    version_from(key, meta, content, verify_hash, names)
}

/// A version from its meta and content bytes (see [`decode_version_with`]).
pub(super) fn version_from(
    key: &[u8],
    meta: VersionMeta,
    content: &[u8],
    verify_hash: bool,
    names: &mut canonical::NameCache,
) -> Result<Version, StoreError> {
    let content = match meta.hash {
        None => None,
        Some(h) => {
            if verify_hash && ContentHash::of_bytes(content) != h {
                return Err(corrupt(key, "content does not match its hash"));
            }
            Some(canonical::decode_with(content, names).map_err(|e| corrupt(key, e.to_string()))?)
        }
    };
    Ok(Version {
        content,
        hash: meta.hash,
        clock: meta.clock,
        modstamp: meta.modstamp,
        origin: meta.origin,
        field_origins: meta.field_origins,
    })
}

/// The entity id that ends a snapshot / outbox / head key.
pub(super) fn entity_of(k: &[u8]) -> Result<EntityId, StoreError> {
    layout::entity_suffix(k).ok_or_else(|| corrupt(k, "short key"))
}

pub(super) fn encode_entry<T: Serialize>(v: &T) -> Vec<u8> {
    let mut out = vec![ENTRY_V1];
    out.extend(
        bincode::serde::encode_to_vec(v, bincode::config::standard())
            .expect("in-memory encoding cannot fail"),
    );
    out
}

pub(super) fn decode_entry<T: DeserializeOwned>(key: &[u8], b: &[u8]) -> Result<T, StoreError> {
    match b.split_first() {
        Some((&ENTRY_V1, rest)) => {
            // The limit caps what a corrupt length prefix can make the decoder allocate.
            let config = bincode::config::standard().with_limit::<ENTRY_LIMIT>();
            let (v, used) = bincode::serde::decode_from_slice(rest, config)
                .map_err(|e| corrupt(key, e.to_string()))?;
            if used != rest.len() {
                return Err(corrupt(key, "trailing bytes"));
            }
            Ok(v)
        }
        Some((&v, _)) => Err(corrupt(key, format!("unknown entry version {v}"))),
        None => Err(corrupt(key, "empty value")),
    }
}

/// The 8-byte name of a version in the history tree: its clock's hash.
pub(super) fn clock_id(v: &Version) -> [u8; 8] {
    let mut b = Vec::new();
    v.clock.encode_into(&mut b);
    let mut id = [0u8; 8];
    id.copy_from_slice(&blake3::hash(&b).as_bytes()[..8]);
    id
}

pub(super) fn decode_dots(k: &[u8], b: &[u8]) -> Result<(Version, FieldDots), StoreError> {
    let mut pos = 0;
    let n = varint::get_u64(b, &mut pos).map_err(|_| corrupt(k, "bad version length"))?;
    let end = pos
        .checked_add(usize::try_from(n).unwrap_or(usize::MAX))
        .filter(|e| *e <= b.len())
        .ok_or_else(|| corrupt(k, "version length larger than the entry"))?;
    let v = decode_version(k, &b[pos..end])?;
    let mut pos = end;
    let dots = FieldDots::decode(b, &mut pos).map_err(|e| corrupt(k, e.to_string()))?;
    if pos != b.len() {
        return Err(corrupt(k, "trailing bytes after the field dots"));
    }
    Ok((v, dots))
}

/// A pending entry: the version sent, and when it was sent (local clock): `02`,
/// varint(zigzag ms), then the version entry. An entry stored before this form is the bare
/// version entry (`01 …`): when it was sent is unknown.
pub(super) const PENDING_V2: u8 = 2;

pub(super) fn encode_pending(v: &Version, sent_at: Timestamp) -> Vec<u8> {
    let mut buf = Vec::with_capacity(128);
    buf.push(PENDING_V2);
    varint::put_u64(&mut buf, varint::zigzag64(sent_at.millis()));
    encode_version_with(v, false, &mut buf);
    buf
}

/// When a pending entry was sent, and its version entry's bytes.
pub(super) fn split_pending<'a>(
    k: &[u8],
    b: &'a [u8],
) -> Result<(Option<Timestamp>, &'a [u8]), StoreError> {
    match b.first() {
        Some(&PENDING_V2) => {
            let mut pos = 1;
            let t = varint::get_u64(b, &mut pos).map_err(|_| corrupt(k, "bad sending time"))?;
            Ok((Some(Timestamp(varint::unzigzag64(t))), &b[pos..]))
        }
        _ => Ok((None, b)),
    }
}

pub(super) fn decode_pending(
    k: &[u8],
    b: &[u8],
) -> Result<(Version, Option<Timestamp>), StoreError> {
    let (sent_at, rest) = split_pending(k, b)?;
    Ok((decode_version(k, rest)?, sent_at))
}

/// Decodes a raw store entry by its tree (fuzzing and `verify`): never panics.
pub fn decode_any_entry(k: &[u8], v: &[u8]) -> Result<(), StoreError> {
    match Tree::of_key(k) {
        None => Err(corrupt(k, "key outside every tree")),
        Some(Tree::Pending) => decode_pending(k, v).map(|_| ()),
        Some(Tree::History) => decode_version(k, v).map(|_| ()),
        Some(Tree::Entity) => super::entity::verify_entity(k, v),
        Some(Tree::Outbox) => decode_entry::<OutboxEntry>(k, v).map(|_| ()),
        Some(Tree::Conflict) => decode_entry::<ConflictEntry>(k, v).map(|_| ()),
        Some(Tree::RunLog) => decode_entry::<RunLogEntry>(k, v).map(|_| ()),
        Some(Tree::Match) => decode_entry::<MatchEntry>(k, v).map(|_| ()),
        Some(Tree::Waiting) => decode_entry::<WaitingEntry>(k, v).map(|_| ()),
        Some(Tree::Peer) => decode_entry::<PeerEntry>(k, v).map(|_| ()),
        Some(Tree::Digest) => DigestEntry::decode(k, v).map(|_| ()),
        Some(Tree::Dots) => decode_dots(k, v).map(|_| ()),
        Some(Tree::MatchRev) if v.len() != 32 => Err(corrupt(k, "match hash is not 32 bytes")),
        Some(Tree::Xref) if v.len() != 16 => Err(corrupt(k, "entity id is not 16 bytes")),
        Some(Tree::Cursor) if v.first() != Some(&ENTRY_V1) => {
            Err(corrupt(k, "unknown entry version"))
        }
        _ => Ok(()),
    }
}
