//! Bundle export and import between engine instances that cannot talk (`docs/offline.md`).
//!
//! What a peer holds is kept like a system's snapshot, under the pseudo-system `_peer.<name>`:
//! the version of each entity the peer is *known* to hold — because it sent it, or because it
//! acknowledged a bundle that carried it. Export sends every head that differs from that;
//! import folds each received version into the head (fast-forward when its clock dominates,
//! the same three-way merge and policy as online sync when concurrent, against what the peer
//! was last known to hold) and marks the local systems' outboxes, so the next run writes the
//! result to them. Versions are states, not deltas: importing a bundle twice, out of order or
//! after a newer one changes nothing wrong.

use super::EngineError;
use crate::bundle::{Bundle, BundleEntity};
use concord_model::core::dots::{dot_base, merged_dots, Dotted, FieldDots};
use concord_model::core::plan::merged_origins;
use concord_model::core::tree::RowDigest;
use concord_model::core::{merge, DeleteRule, FieldPolicy, Policy, Resolution, Side};
use concord_model::model::{ClockOrdering, EntityId, InstanceId, SystemId, Version};
use concord_store::{decode_version, encode_version, OutboxEntry, PeerEntry, StateStore};
use std::collections::{BTreeMap, BTreeSet};

/// A job as far as bundles care: its systems (side ids) and conflict policy.
#[derive(Debug, Clone)]
pub struct Scope {
    pub job: String,
    pub systems: Vec<SystemId>,
    pub policy: Policy,
}

/// What an import did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ImportReport {
    pub sender: String,
    pub number: u64,
    /// This bundle had been imported before (nothing new came of it).
    pub repeated: bool,
    pub entities: u64,
    /// Versions this instance already held, or held something newer than.
    pub unchanged: u64,
    /// Versions that dominated the local head and replaced it.
    pub fast_forwarded: u64,
    /// Concurrent versions merged with the local head.
    pub merged: u64,
    /// Field conflicts met while merging (decided by policy, or held when manual).
    pub conflicts: u64,
    /// Records held back by a record-level manual conflict (the local head stays).
    pub held: u64,
    /// (system, entity) writes queued for the next run.
    pub queued_writes: u64,
    /// Bundles of ours the sender acknowledged with this one.
    pub acknowledged: u64,
}

impl std::fmt::Display for ImportReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "bundle {} from {}: {} entities — {} fast-forwarded, {} merged, {} unchanged, {} held by a manual conflict; {} writes queued for the next run{}",
            self.number,
            self.sender,
            self.entities,
            self.fast_forwarded,
            self.merged,
            self.unchanged,
            self.held,
            self.queued_writes,
            if self.repeated { " (imported before)" } else { "" }
        )
    }
}

/// The pseudo-system that stands for what peer `p` holds.
pub fn peer_system(p: &InstanceId) -> Result<SystemId, EngineError> {
    SystemId::new(format!("_peer.{p}")).map_err(|e| EngineError::Config {
        job: String::new(),
        message: format!("peer instance name {p}: {e} (at most 58 characters)"),
    })
}

fn store_err(e: concord_store::StoreError) -> EngineError {
    EngineError::Store(e)
}

/// Exchanged versions kept per entity as merge-base candidates.
pub const HISTORY_CAP: usize = 32;

fn counters(v: &Version) -> u64 {
    v.clock.entries().iter().map(|(_, n)| *n).sum()
}

/// Records `v` among the entity's exchanged versions, dropping the oldest beyond the cap.
/// `added` holds what this checkpoint already added (reads do not see it).
fn remember(
    state: &StateStore,
    cp: &mut concord_store::Checkpoint,
    added: &mut BTreeMap<EntityId, Vec<Version>>,
    e: &EntityId,
    v: &Version,
) -> Result<(), EngineError> {
    let list = match added.entry(*e) {
        std::collections::btree_map::Entry::Occupied(o) => o.into_mut(),
        std::collections::btree_map::Entry::Vacant(x) => x.insert(state.history_of(e)?),
    };
    if list.iter().any(|x| x.clock == v.clock) {
        return Ok(());
    }
    cp.put_history(e, v);
    list.push(v.clone());
    while list.len() > HISTORY_CAP {
        let (i, _) = list
            .iter()
            .enumerate()
            .min_by_key(|(_, x)| counters(x))
            .expect("non-empty");
        let old = list.remove(i);
        cp.delete_history(e, &old);
    }
    Ok(())
}

/// The deterministic order of two versions with equal clocks (a tombstone sorts first).
fn tie_key(v: &Version) -> Option<[u8; 32]> {
    v.hash.map(|h| h.0)
}

fn le(a: &Version, b: &Version) -> bool {
    matches!(
        a.clock.compare(&b.clock),
        ClockOrdering::Before | ClockOrdering::Equal
    )
}

/// The merge base of two concurrent versions: the newest exchanged version both descend from.
/// When several such versions are incomparable (a criss-cross: each instance merged the
/// other's earlier version), they are merged first, recursively, into one virtual base — as
/// git's recursive strategy does — so no field edited on one side only reads as a conflict.
fn base_of(
    candidates: &[Version],
    h: &Version,
    r: &Version,
    policy: &Policy,
    depth: usize,
) -> Option<Version> {
    let common: Vec<&Version> = candidates.iter().filter(|c| le(c, h) && le(c, r)).collect();
    let mut maxima: Vec<&Version> = common
        .iter()
        .filter(|c| {
            !common
                .iter()
                .any(|o| matches!(c.clock.compare(&o.clock), ClockOrdering::Before))
        })
        .copied()
        .collect();
    maxima.sort_by_key(|c| (counters(c), c.hash.map(|x| x.0)));
    maxima.dedup_by(|a, b| a.clock == b.clock && a.hash == b.hash);
    let mut it = maxima.into_iter();
    let mut acc = it.next()?.clone();
    for c in it {
        if depth >= 8 {
            break; // deep criss-crosses: the newest ancestor alone (a conflict may be reported)
        }
        let b = base_of(candidates, &acc, c, policy, depth + 1);
        let sys = SystemId::new("_base").expect("valid id");
        let (sa, sc) = (
            acc.origin.clone().unwrap_or_else(|| sys.clone()),
            c.origin.clone().unwrap_or_else(|| sys.clone()),
        );
        let out = merge(
            b.as_ref().and_then(|b| b.content.as_ref()),
            Side::new(&sa, acc.content.as_ref(), acc.modstamp).with_origins(&acc.field_origins),
            Side::new(&sc, c.content.as_ref(), c.modstamp).with_origins(&c.field_origins),
            policy,
        );
        let origin = sa.min(sc);
        let origins = merged_origins(out.content.as_ref(), &acc, c, &origin);
        acc = Version::new(
            out.content,
            acc.clock.merge(&c.clock),
            acc.modstamp.max(c.modstamp),
            Some(origin),
        )
        .with_field_origins(origins);
    }
    Some(acc)
}

/// Makes the bundle for `peer`: every entity whose head the peer is not known to hold, with
/// its cross-references, and the numbers of the peer's bundles imported here. Records what it
/// carried (until the peer acknowledges it) and flushes before returning.
pub fn export(
    state: &StateStore,
    peer: &InstanceId,
    scopes: &[Scope],
) -> Result<Bundle, EngineError> {
    export_filtered(state, peer, scopes, None)
}

/// A bundle for `peer` carrying the heads of exactly the entities in `only` that this instance
/// holds, whatever the peer is known to hold (a hash-tree exchange found that they differ).
pub fn export_only(
    state: &StateStore,
    peer: &InstanceId,
    scopes: &[Scope],
    only: &BTreeSet<EntityId>,
) -> Result<Bundle, EngineError> {
    export_filtered(state, peer, scopes, Some(only))
}

fn export_filtered(
    state: &StateStore,
    peer: &InstanceId,
    scopes: &[Scope],
    only: Option<&BTreeSet<EntityId>>,
) -> Result<Bundle, EngineError> {
    if peer == state.instance() {
        return Err(EngineError::Config {
            job: String::new(),
            message: format!("a bundle for {peer} is a bundle for this instance itself"),
        });
    }
    let psys = peer_system(peer)?;
    let mut heads = Vec::new();
    match only {
        None => state.scan_heads(&mut |e, v| {
            heads.push((e, v));
            true
        })?,
        Some(set) => {
            for e in set {
                if let Some(v) = state.head(e)? {
                    heads.push((*e, v));
                }
            }
        }
    }
    let mut entities = Vec::new();
    for (e, head) in heads {
        let holds = only.is_none()
            && state.snapshot(&psys, &e)?.is_some_and(|k| {
                match head.clock.compare(&k.clock) {
                    ClockOrdering::Before => true,
                    // Equal clocks with other content: two instances merged one pair
                    // differently.
                    ClockOrdering::Equal => head.hash == k.hash,
                    _ => false,
                }
            });
        if holds {
            continue;
        }
        let xrefs: Vec<(SystemId, concord_model::model::Key)> = state
            .xrefs_of(&e)?
            .into_iter()
            .filter(|(s, _)| !s.as_str().starts_with("_peer."))
            .collect();
        let jobs = scopes
            .iter()
            .filter(|sc| xrefs.iter().any(|(s, _)| sc.systems.contains(s)))
            .map(|sc| sc.job.clone())
            .collect();
        entities.push(BundleEntity {
            entity: e,
            head,
            xrefs,
            jobs,
            dots: FieldDots::default(),
        });
    }
    let mut cp = state.checkpoint();
    for b in &mut entities {
        let (dots, changed) = dots_of(state, &b.entity, &b.head)?;
        if changed {
            cp.put_dots(&b.entity, &b.head, &dots);
        }
        b.dots = dots;
    }
    let mut added = BTreeMap::new();
    for b in &entities {
        remember(state, &mut cp, &mut added, &b.entity, &b.head)?;
    }
    let mut pe = state.peer(peer)?;
    pe.exported += 1;
    let manifest = entities
        .iter()
        .map(|b| {
            let mut v = Vec::new();
            encode_version(&b.head, &mut v);
            (b.entity.0, v)
        })
        .collect();
    pe.unacked.push((pe.exported, manifest));
    let bundle = Bundle {
        sender: state.instance().clone(),
        recipient: peer.clone(),
        number: pe.exported,
        acks: pe.imported.clone(),
        entities,
    };
    cp.put_peer(peer, &pe);
    state.commit(cp)?;
    Ok(bundle)
}

/// The version a peer holds after it also holds `v`: `v` unless what is known is newer.
fn newer_of(known: Option<&Version>, v: &Version) -> bool {
    match known {
        None => true,
        Some(k) => match k.clock.compare(&v.clock) {
            ClockOrdering::Before | ClockOrdering::Concurrent => true,
            ClockOrdering::Equal => k.hash != v.hash,
            ClockOrdering::After => false,
        },
    }
}

fn add_range(ranges: &mut Vec<(u64, u64)>, n: u64) -> bool {
    if ranges.iter().any(|(a, b)| (*a..=*b).contains(&n)) {
        return false;
    }
    ranges.push((n, n));
    ranges.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for (a, b) in ranges.drain(..) {
        match out.last_mut() {
            Some((_, lb)) if a <= lb.saturating_add(1) => *lb = (*lb).max(b),
            _ => out.push((a, b)),
        }
    }
    *ranges = out;
    true
}

/// Applies a (verified) bundle. Nothing is written to a system here: changed heads are queued
/// in the outboxes of every system of the jobs the entity belongs to, for the next run.
pub fn import(
    state: &StateStore,
    bundle: &Bundle,
    scopes: &[Scope],
    now_ms: i64,
) -> Result<ImportReport, EngineError> {
    let me = state.instance().clone();
    if bundle.sender == me {
        return Err(EngineError::Config {
            job: String::new(),
            message: format!("bundle {} was made by this instance ({me})", bundle.number),
        });
    }
    let psys = peer_system(&bundle.sender)?;
    let mut pe: PeerEntry = state.peer(&bundle.sender)?;
    let mut report = ImportReport {
        sender: bundle.sender.to_string(),
        number: bundle.number,
        entities: bundle.entities.len() as u64,
        ..ImportReport::default()
    };
    report.repeated = !add_range(&mut pe.imported, bundle.number);
    let mut cp = state.checkpoint();
    // What the peer holds, as updated by this import (reads do not see the checkpoint).
    let mut peer_now: BTreeMap<EntityId, Version> = BTreeMap::new();
    let mut added: BTreeMap<EntityId, Vec<Version>> = BTreeMap::new();
    // Acknowledgements first: our bundles the sender holds, so it holds what they carried —
    // the common base of a merge below may be one of those versions.
    if bundle.recipient == me {
        let acked = |n: u64| bundle.acks.iter().any(|(a, b)| (*a..=*b).contains(&n));
        let (done, open): (Vec<_>, Vec<_>) = pe.unacked.drain(..).partition(|(n, _)| acked(*n));
        pe.unacked = open;
        for (_, manifest) in done {
            report.acknowledged += 1;
            for (id, raw) in manifest {
                let e = EntityId(id);
                let v = decode_version(&id, &raw).map_err(store_err)?;
                let known = peer_holds(state, &psys, &peer_now, &e)?;
                if newer_of(known.as_ref(), &v) {
                    peer_now.insert(e, v);
                }
            }
        }
    }
    for be in &bundle.entities {
        let e = be.entity;
        let r = &be.head;
        let known = peer_holds(state, &psys, &peer_now, &e)?;
        if newer_of(known.as_ref(), r) {
            peer_now.insert(e, r.clone());
        }
        let local = state.head(&e)?;
        // The received head's field dots (a format 1 bundle has none: every field at its clock).
        let rd = if be.dots.0.is_empty() && r.content.as_ref().is_some_and(|c| !c.is_empty()) {
            fallback_dots(state, &e, r)?
        } else {
            be.dots.clone()
        };
        let mut new_dots = rd.clone();
        let new_head = match &local {
            None => {
                report.fast_forwarded += 1;
                Some(r.clone())
            }
            Some(h) => match h.clock.compare(&r.clock) {
                // Two instances merged the same pair of versions against different bases:
                // equal clocks, other content. Both keep the larger content hash, so they
                // agree without another exchange round.
                ClockOrdering::Equal if h.hash != r.hash && tie_key(r) > tie_key(h) => {
                    report.merged += 1;
                    Some(r.clone())
                }
                ClockOrdering::Equal | ClockOrdering::After => {
                    report.unchanged += 1;
                    None
                }
                ClockOrdering::Before => {
                    report.fast_forwarded += 1;
                    Some(r.clone())
                }
                ClockOrdering::Concurrent => {
                    let systems = entity_systems(state, &e, be)?;
                    let policy = scopes
                        .iter()
                        .find(|s| takes(s, &systems, be))
                        .map(|s| s.policy.clone())
                        // An entity of no local job: the configuration's defaults.
                        .unwrap_or_else(|| {
                            Policy::new(FieldPolicy::Newest, DeleteRule::DeleteWins)
                        });
                    let (hd, _) = dots_of(state, &e, h)?;
                    let pair = match (&h.content, &r.content) {
                        (Some(hc), Some(rc)) => Some((
                            Dotted::new(hc, &h.clock, &hd),
                            Dotted::new(rc, &r.clock, &rd),
                        )),
                        _ => None,
                    };
                    let base = match &pair {
                        // Both hold the record: field by field by their dots, no ancestor
                        // needed (core::dots).
                        Some((a, b)) => Some(dot_base(a, b)),
                        // A delete against a version: the newest version both descend from,
                        // among those exchanged with peers (what a peer holds can only
                        // descend from those).
                        None => {
                            let mut candidates = match added.get(&e) {
                                Some(l) => l.clone(),
                                None => state.history_of(&e)?,
                            };
                            candidates.extend(known.clone());
                            base_of(&candidates, h, r, &policy, 0).and_then(|b| b.content)
                        }
                    };
                    let ho = h.origin.clone().unwrap_or_else(|| psys.clone());
                    let ro = r.origin.clone().unwrap_or_else(|| psys.clone());
                    let out = merge(
                        base.as_ref(),
                        // Each field on the side of the system that set it.
                        Side::new(&ho, h.content.as_ref(), h.modstamp)
                            .with_origins(&h.field_origins),
                        Side::new(&ro, r.content.as_ref(), r.modstamp)
                            .with_origins(&r.field_origins),
                        &policy,
                    );
                    report.conflicts += out.conflicts.len() as u64;
                    if out.held
                        || out
                            .conflicts
                            .iter()
                            .any(|c| c.resolution == Resolution::Parked)
                    {
                        // A manual decision: the local head stays until it is made.
                        report.held += 1;
                        None
                    } else {
                        report.merged += 1;
                        let modstamp = h.modstamp.max(r.modstamp);
                        let clock = h.clock.merge(&r.clock);
                        new_dots = match (&out.content, &pair, &h.content, &r.content) {
                            (Some(m), Some((a, b)), _, _) => merged_dots(m, a, b, &clock),
                            (m, _, hc, rc) if m == rc && m == hc => hd.join(&rd),
                            (m, _, _, rc) if m == rc => rd.clone(),
                            (m, _, hc, _) if m == hc => hd.clone(),
                            (m, _, _, _) => FieldDots::advance(None, m.as_ref(), &clock),
                        };
                        // Deterministic: the same on every instance that merges the pair.
                        let origin = ho.clone().min(ro.clone());
                        let origins = merged_origins(out.content.as_ref(), h, r, &origin);
                        Some(
                            Version::new(out.content, clock, modstamp, Some(origin))
                                .with_field_origins(origins),
                        )
                    }
                }
            },
        };
        remember(state, &mut cp, &mut added, &e, r)?;
        if let Some(v) = new_head {
            remember(state, &mut cp, &mut added, &e, &v)?;
            cp.put_dots(&e, &v, &new_dots);
            cp.put_head(&e, &v);
            for (s, k) in &be.xrefs {
                if state.native_key(&e, s)?.is_none() && state.entity_for(s, k)?.is_none() {
                    cp.put_xref(s, k, &e);
                }
            }
            let systems = entity_systems(state, &e, be)?;
            let mut queued = BTreeSet::new();
            for sc in scopes {
                if takes(sc, &systems, be) {
                    queued.extend(sc.systems.iter().cloned());
                }
            }
            for s in queued {
                cp.outbox_put(
                    &s,
                    &e,
                    &OutboxEntry {
                        enqueued_ms: now_ms,
                        attempts: 0,
                        last_error: None,
                    },
                );
                report.queued_writes += 1;
            }
        }
    }
    for (e, v) in &peer_now {
        cp.put_snapshot(&psys, e, v);
    }
    cp.put_peer(&bundle.sender, &pe);
    state.commit(cp)?;
    Ok(report)
}

/// The field dots of `head` (`core::dots`): the recorded ones when it is the version last
/// exchanged; else those advanced from that version (fields changed since get the head's clock,
/// which every version that has seen them is at or after); with nothing usable recorded, as
/// [`fallback_dots`]. Also says whether they differ from what is recorded.
fn dots_of(
    state: &StateStore,
    e: &EntityId,
    head: &Version,
) -> Result<(FieldDots, bool), EngineError> {
    Ok(match state.dots(e)? {
        Some((v, d)) if v.clock == head.clock && v.hash == head.hash => (d, false),
        Some((v, d))
            if matches!(
                v.clock.compare(&head.clock),
                ClockOrdering::Before | ClockOrdering::Equal
            ) =>
        {
            (
                FieldDots::advance(
                    Some((v.content.as_ref(), &d)),
                    head.content.as_ref(),
                    &head.clock,
                ),
                true,
            )
        }
        _ => (fallback_dots(state, e, head)?, true),
    })
}

/// Dots for a version nothing recorded them for (exchanged before field dots existed, or
/// received in a format 1 bundle): advanced from the newest exchanged version it descends from,
/// whose fields all count as edited at that version's clock (a value both sides still hold
/// from there is then seen by both); with no such version, every field at its own clock.
fn fallback_dots(state: &StateStore, e: &EntityId, v: &Version) -> Result<FieldDots, EngineError> {
    let mut best: Option<Version> = None;
    for h in state.history_of(e)? {
        let below = matches!(
            h.clock.compare(&v.clock),
            ClockOrdering::Before | ClockOrdering::Equal
        );
        let newer = best
            .as_ref()
            .is_none_or(|b| b.clock.compare(&h.clock) == ClockOrdering::Before);
        if h.content.is_some() && below && newer {
            best = Some(h);
        }
    }
    Ok(match best {
        Some(a) => {
            let base = FieldDots::advance(None, a.content.as_ref(), &a.clock);
            FieldDots::advance(
                Some((a.content.as_ref(), &base)),
                v.content.as_ref(),
                &v.clock,
            )
        }
        None => FieldDots::advance(None, v.content.as_ref(), &v.clock),
    })
}

/// Whether a local job takes an entity: a job of the same name as one of the sender's jobs it
/// belongs to, or a job with a system the entity is known in.
fn takes(sc: &Scope, systems: &BTreeSet<SystemId>, be: &BundleEntity) -> bool {
    be.jobs.contains(&sc.job) || sc.systems.iter().any(|x| systems.contains(x))
}

/// What the peer is known to hold of `e`: as updated by this import, else as stored.
fn peer_holds(
    state: &StateStore,
    psys: &SystemId,
    peer_now: &BTreeMap<EntityId, Version>,
    e: &EntityId,
) -> Result<Option<Version>, EngineError> {
    Ok(match peer_now.get(e) {
        Some(k) => Some(k.clone()),
        None => state.snapshot(psys, e)?,
    })
}

/// The systems an entity is known in: its local cross-references and the bundle's.
fn entity_systems(
    state: &StateStore,
    e: &EntityId,
    be: &BundleEntity,
) -> Result<BTreeSet<SystemId>, EngineError> {
    let mut out: BTreeSet<SystemId> = state.xrefs_of(e)?.into_iter().map(|(s, _)| s).collect();
    out.extend(be.xrefs.iter().map(|(s, _)| s.clone()));
    Ok(out)
}

/// This instance's heads as hash-tree leaves (instance-to-instance reconcile): the key hash is
/// the entity id's first 8 bytes (ids are blake3 outputs, so buckets fill evenly), the digest
/// the first 8 bytes of blake3 over the head's content hash (none for a tombstone) and clock.
/// Two instances holding the same version of an entity have the same leaf.
pub fn head_digests(state: &StateStore) -> Result<Vec<(EntityId, RowDigest)>, EngineError> {
    let mut out = Vec::new();
    let mut buf = Vec::new();
    state.scan_heads(&mut |e, v| {
        buf.clear();
        match &v.hash {
            Some(h) => {
                buf.push(1);
                buf.extend_from_slice(&h.0);
            }
            None => buf.push(0),
        }
        v.clock.encode_into(&mut buf);
        let d = blake3::hash(&buf);
        let first = |b: &[u8]| i64::from_be_bytes(b[..8].try_into().expect("8 bytes"));
        out.push((
            e,
            RowDigest {
                key_hash: first(&e.0),
                row: first(d.as_bytes()),
            },
        ));
        true
    })?;
    Ok(out)
}

/// The entities whose leaves differ between `ours` and `theirs` (leaves of the same buckets),
/// those only one side has included.
pub fn differing_entities(
    ours: &[(EntityId, RowDigest)],
    theirs: &[(EntityId, RowDigest)],
) -> BTreeSet<EntityId> {
    let a: BTreeMap<&EntityId, &RowDigest> = ours.iter().map(|(e, d)| (e, d)).collect();
    let b: BTreeMap<&EntityId, &RowDigest> = theirs.iter().map(|(e, d)| (e, d)).collect();
    a.keys()
        .chain(b.keys())
        .filter(|e| a.get(*e) != b.get(*e))
        .map(|e| **e)
        .collect()
}
