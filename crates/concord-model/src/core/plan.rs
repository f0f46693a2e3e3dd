//! The per-entity sync plan: from the stored head and per-system snapshots plus what was just
//! read, decide the new head, the snapshot updates and which systems need a write.
//!
//! Rules (see `docs/design.md`, "Sync plan"):
//! 1. A system whose observed content hashes like its snapshot did not change (its snapshot
//!    only takes the modification time the system gave, if it differs).
//! 2. A system whose observed content hashes like the head already holds the head (our own
//!    write read back, or a write whose checkpoint was lost in a crash): its snapshot becomes the
//!    head. This is the echo suppression; it creates no new version. Likewise a system holding
//!    the version last sent to it (`pending`, recorded before the write) holds that version.
//! 3. Otherwise the system changed: a new version with the snapshot's clock advanced at the
//!    (instance, system) actor past anything the head has seen for that actor. Its merge base is
//!    the snapshot; when a sent write is unconfirmed, the base is taken field by field from the
//!    snapshot or the sent version, whichever the system still agrees with (see
//!    [`uncertain_base`]).
//! 4. New versions fold into the head in system order: a version whose clock dominates the head
//!    fast-forwards it; a concurrent one is merged 3-way against that system's snapshot (the base
//!    it was edited from), and the merged head's clock is the pointwise max.
//! 5. Every system whose snapshot differs from the head is dirty and gets the head written.

use super::merge::{merge, Conflict, FieldPolicy, Policy, Resolution, Side};
use crate::model::{ActorId, ClockOrdering, FieldOrigins, Fields, SystemId, Timestamp, Version};
use std::collections::BTreeSet;

/// What a sync pass read from one system for this entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The system was not read in this pass (partial sync): its snapshot stands.
    NotRead,
    /// The record as it is now.
    Present {
        fields: Fields,
        modstamp: Option<Timestamp>,
    },
    /// The record is not there (deleted, or never created there).
    Absent,
}

/// One system's inputs to the plan.
#[derive(Debug, Clone)]
pub struct SystemState<'a> {
    pub system: &'a SystemId,
    /// The (this instance, system) actor.
    pub actor: ActorId,
    /// What the store last knew this system to hold.
    pub snapshot: Option<&'a Version>,
    /// A version sent to this system whose success was never confirmed.
    pub pending: Option<&'a Version>,
    pub observed: Observation,
    /// Canonical fields that hold this system's native key: the record's identity there, never
    /// rewritten — a record that exists keeps its own values in them (as parked fields do), so
    /// two systems whose keys differ in form (`B@x`, `b@x`) stay linked without a write.
    pub identity: &'a BTreeSet<String>,
}

/// No identity fields (a system whose key no canonical field holds).
pub static NO_IDENTITY: BTreeSet<String> = BTreeSet::new();

/// The decisions for one entity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntityPlan {
    /// The new head (`None`: the entity is still unknown everywhere).
    pub head: Option<Version>,
    pub head_changed: bool,
    /// Snapshot updates to commit: what the systems were just observed to hold.
    pub snapshots: Vec<(SystemId, Version)>,
    /// Systems that need the head written (created, updated or deleted).
    pub dirty: Vec<SystemId>,
    /// Systems where a genuine change was observed (rule 3).
    pub changed_in: Vec<SystemId>,
    /// Systems found holding a version concord wrote (rule 2): echoes, suppressed.
    pub echoes: Vec<SystemId>,
    /// Conflicts met while merging, with their resolutions.
    pub conflicts: Vec<Conflict>,
    /// A record-level conflict was parked: the head is unchanged and nothing must be written.
    pub held: bool,
}

/// `v` as a system was seen holding it at `modstamp` (its own clock), if it said.
fn seen_at(v: &Version, modstamp: Option<Timestamp>) -> Version {
    Version {
        modstamp: modstamp.or(v.modstamp),
        ..v.clone()
    }
}

fn hash_of(v: Option<&Version>) -> Option<crate::model::ContentHash> {
    v.and_then(|v| v.hash)
}

/// The merge base for a system that was sent `sent` but never confirmed it, and now holds
/// `observed`, which matches neither: each field's base is the sent value if the system still
/// has it, else the snapshot's value if the system still has that, else the sent value. A field
/// counts as the user's edit exactly when it matches neither. (A user who, after an unconfirmed
/// write, sets a field back to its old value is not seen as editing it.)
pub fn uncertain_base(
    snapshot: Option<&Fields>,
    sent: Option<&Fields>,
    observed: Option<&Fields>,
) -> Option<Fields> {
    let (Some(o), Some(p)) = (observed, sent) else {
        return snapshot.cloned();
    };
    let empty = Fields::new();
    let s = snapshot.unwrap_or(&empty);
    let mut names: Vec<&std::sync::Arc<str>> =
        s.names().chain(p.names()).chain(o.names()).collect();
    names.sort();
    names.dedup();
    let mut base = Fields::new();
    for n in names {
        let (of, pf, sf) = (o.get(n), p.get(n), s.get(n));
        let b = if of == pf {
            pf
        } else if of == sf {
            sf
        } else {
            pf
        };
        if let Some(v) = b {
            base.set(n.clone(), v.clone());
        }
    }
    Some(base)
}

/// Plans one entity. `systems` must be every system of the job (read or not), each once.
/// What is parked for an entity in the conflict queue.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parked {
    /// Fields waiting for manual resolution: held back from writes (each system keeps its value).
    pub fields: BTreeSet<String>,
    /// A record-level (delete vs update) conflict: nothing is written for the entity.
    pub held: bool,
}

/// The content a system should hold: the head, except that parked fields keep the value the
/// system has (from its snapshot). Returns the content and its hash.
pub fn target_for(
    head: &Version,
    snapshot: Option<&Version>,
    parked: &BTreeSet<String>,
) -> (Option<Fields>, Option<crate::model::ContentHash>) {
    let Some(content) = &head.content else {
        return (None, None);
    };
    let own = snapshot.and_then(|s| s.content.as_ref());
    if parked.is_empty() || own.is_none() {
        return (Some(content.clone()), head.hash);
    }
    let own = own.expect("checked");
    let mut t = content.clone();
    for f in parked {
        match own.get(f) {
            Some(v) => t.set(f.as_str(), v.clone()),
            None => {
                t.remove(f);
            }
        }
    }
    let h = t.content_hash();
    (Some(t), Some(h))
}

/// How new versions become the head.
#[derive(Debug, Clone, Copy)]
pub enum Fold<'a> {
    /// Each new version fast-forwards the head or is merged 3-way into it (rule 4).
    Merge,
    /// Aggregate: the head is composed afresh from these source systems' records whenever one
    /// changes — per field, the value of the first source (in the field policy's order) whose
    /// record has it; no source holding the entity any more deletes it (see [`compose`]).
    Compose(&'a [SystemId]),
}

/// The fields a system keeps its own values in: the parked ones and its identity fields.
pub fn with_identity<'a>(
    parked: &'a BTreeSet<String>,
    identity: &BTreeSet<String>,
) -> std::borrow::Cow<'a, BTreeSet<String>> {
    if identity.is_empty() {
        std::borrow::Cow::Borrowed(parked)
    } else {
        std::borrow::Cow::Owned(parked.union(identity).cloned().collect())
    }
}

/// Plans one entity. `systems` must be every system of the job (read or not), each once.
pub fn plan(
    head: Option<&Version>,
    systems: &[SystemState<'_>],
    policy: &Policy,
    parked: &Parked,
) -> EntityPlan {
    plan_with(head, systems, policy, parked, Fold::Merge)
}

/// Per-field origins of `content`, produced by system `s` from `prev` (the head it replaces or
/// was merged into): a field still holding `prev`'s value keeps `prev`'s origin; the others
/// (changed, added or removed) are `s`'s.
pub fn attribute(content: Option<&Fields>, s: &SystemId, prev: Option<&Version>) -> FieldOrigins {
    let mut out = FieldOrigins::new();
    let Some(prev) = prev else {
        return out;
    };
    let empty = Fields::new();
    let (c, pc) = (
        content.unwrap_or(&empty),
        prev.content.as_ref().unwrap_or(&empty),
    );
    for name in c.names().chain(pc.names()) {
        if c.get(name) == pc.get(name) {
            if let Some(o) = prev.origin_of(name).filter(|o| *o != s) {
                out.insert(name.clone(), o.clone());
            }
        }
    }
    out
}

/// Per-field origins of `content`, the merge of two versions `a` and `b` whose merged version
/// has origin `origin`, the same whichever side is `a`: a field holding one side's value keeps
/// that side's origin for it (the lesser system when both hold it from different systems); a
/// value neither held (a merged one) is `origin`'s.
pub fn merged_origins(
    content: Option<&Fields>,
    a: &Version,
    b: &Version,
    origin: &SystemId,
) -> FieldOrigins {
    let mut out = FieldOrigins::new();
    let empty = Fields::new();
    let c = content.unwrap_or(&empty);
    let (ac, bc) = (
        a.content.as_ref().unwrap_or(&empty),
        b.content.as_ref().unwrap_or(&empty),
    );
    let names: std::collections::BTreeSet<&std::sync::Arc<str>> =
        c.names().chain(ac.names()).chain(bc.names()).collect();
    for name in names {
        let v = c.get(name);
        let from = [(a, ac), (b, bc)]
            .into_iter()
            .filter(|(_, fc)| fc.get(name) == v)
            .filter_map(|(x, _)| x.origin_of(name))
            .min();
        let from = from.unwrap_or(origin);
        if from != origin {
            out.insert(name.clone(), from.clone());
        }
    }
    out
}

/// The order in which sources are asked for a field under policy `p`: a preferred or listed
/// system first (in its list's order), then the sources as listed; under `newest`, the most
/// recently modified record first (unknown times last, then the listed order).
fn source_order<'s>(
    p: &FieldPolicy,
    sources: &[(&'s SystemId, Option<&'s Fields>, Option<Timestamp>)],
) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..sources.len()).collect();
    match p {
        FieldPolicy::Prefer(x) => idx.sort_by_key(|&i| sources[i].0 != x),
        FieldPolicy::Priority(list) => idx.sort_by_key(|&i| {
            list.iter()
                .position(|x| x == sources[i].0)
                .unwrap_or(usize::MAX)
        }),
        FieldPolicy::Newest => idx.sort_by(|&a, &b| sources[b].2.cmp(&sources[a].2)),
        FieldPolicy::Manual | FieldPolicy::Custom(_) => {}
    }
    idx
}

/// An aggregate's golden record: per field, the value of the first source in the field's
/// [`source_order`] whose record has the field, and which source that was. `None` when no
/// source holds a record. Independent of the order records were read in.
pub fn compose(
    sources: &[(&SystemId, Option<&Fields>, Option<Timestamp>)],
    policy: &Policy,
) -> Option<(Fields, FieldOrigins)> {
    if sources.iter().all(|(_, c, _)| c.is_none()) {
        return None;
    }
    let mut names: Vec<&std::sync::Arc<str>> = sources
        .iter()
        .filter_map(|(_, c, _)| *c)
        .flat_map(|c| c.names())
        .collect();
    names.sort();
    names.dedup();
    let mut out = Fields::new();
    let mut origins = FieldOrigins::new();
    for name in names {
        for i in source_order(policy.for_field(name), sources) {
            let (sys, content, _) = sources[i];
            if let Some(v) = content.and_then(|c| c.get(name)) {
                out.set(name.clone(), v.clone());
                origins.insert(name.clone(), sys.clone());
                break;
            }
        }
    }
    Some((out, origins))
}

/// [`plan`], with the head folded as `fold` says.
pub fn plan_with(
    head: Option<&Version>,
    systems: &[SystemState<'_>],
    policy: &Policy,
    parked: &Parked,
    fold: Fold<'_>,
) -> EntityPlan {
    let mut order: Vec<&SystemState<'_>> = systems.iter().collect();
    order.sort_by(|a, b| a.system.cmp(b.system));

    let mut snapshots: Vec<(SystemId, Version)> = Vec::new();
    let mut changes: Vec<(&SystemState<'_>, Option<Fields>, Version)> = Vec::new();
    let mut echoes = Vec::new();
    for s in &order {
        let (content, modstamp) = match &s.observed {
            Observation::NotRead => continue,
            Observation::Present { fields, modstamp } => (Some(fields), *modstamp),
            Observation::Absent => (None, None),
        };
        let observed_hash = content.map(Fields::content_hash);
        if s.snapshot.is_none() && content.is_none() {
            continue; // nothing known, nothing there
        }
        if let Some(snap) = s.snapshot.filter(|v| v.hash == observed_hash) {
            // rule 1. The snapshot learns the system's own modification time when it says one
            // (after a write concord does not know it): the precondition of the next
            // conditional write there.
            if modstamp.is_some() && snap.modstamp != modstamp {
                snapshots.push((s.system.clone(), seen_at(snap, modstamp)));
            }
            continue;
        }
        if let Some(h) = head {
            if h.hash == observed_hash {
                // rule 2; the snapshot keeps the system's own modification time (the
                // precondition of the next conditional write there).
                snapshots.push((s.system.clone(), seen_at(h, modstamp)));
                echoes.push(s.system.clone());
                continue;
            }
        }
        if let Some(p) = s.pending {
            if p.hash == observed_hash {
                snapshots.push((s.system.clone(), seen_at(p, modstamp))); // rule 2, older sent version
                echoes.push(s.system.clone());
                continue;
            }
        }
        // rule 3
        let mut clock = s.snapshot.map(|v| v.clock.clone()).unwrap_or_default();
        let seen = clock
            .get(s.actor)
            .max(head.map_or(0, |h| h.clock.get(s.actor)));
        clock.set(s.actor, seen + 1);
        let v = Version {
            content: content.cloned(),
            hash: observed_hash,
            clock,
            modstamp,
            origin: Some(s.system.clone()),
            field_origins: FieldOrigins::new(),
        };
        let snap_content = s.snapshot.and_then(|b| b.content.as_ref());
        let base = match s.pending {
            None => snap_content.cloned(),
            Some(p) => uncertain_base(snap_content, p.content.as_ref(), content),
        };
        snapshots.push((s.system.clone(), v.clone()));
        changes.push((s, base, v));
    }

    let changed_in: Vec<SystemId> = changes.iter().map(|(s, _, _)| s.system.clone()).collect();
    // rule 4
    let mut new_head: Option<Version> = head.cloned();
    let mut conflicts = Vec::new();
    let mut held = false;
    match fold {
        Fold::Merge => {
            for (s, base, v) in changes {
                let Some(h) = new_head.as_ref() else {
                    new_head = Some(v);
                    continue;
                };
                match v.clock.compare(&h.clock) {
                    ClockOrdering::After | ClockOrdering::Equal => {
                        let origins = attribute(v.content.as_ref(), s.system, Some(h));
                        new_head = Some(v.with_field_origins(origins));
                    }
                    ClockOrdering::Before => {} // cannot happen: rule 3 advances past the head
                    ClockOrdering::Concurrent => {
                        let base = base.as_ref();
                        let head_sys = h.origin.clone().unwrap_or_else(|| s.system.clone());
                        // Each of the head's fields is on the side of the system that set it.
                        let out = merge(
                            base,
                            Side::new(&head_sys, h.content.as_ref(), h.modstamp)
                                .with_origins(&h.field_origins),
                            Side::new(s.system, v.content.as_ref(), v.modstamp),
                            policy,
                        );
                        conflicts.extend(out.conflicts);
                        if out.held {
                            held = true;
                            continue;
                        }
                        let clock = h.clock.merge(&v.clock);
                        let modstamp = h.modstamp.max(v.modstamp);
                        let origins = attribute(out.content.as_ref(), s.system, Some(h));
                        new_head = Some(
                            Version::new(out.content, clock, modstamp, Some(s.system.clone()))
                                .with_field_origins(origins),
                        );
                    }
                }
            }
        }
        Fold::Compose(sources) if !changes.is_empty() => {
            // Every source's record as it now stands: what was just observed, else the stored
            // snapshot.
            let current = |sys: &SystemId| -> Option<&Version> {
                snapshots
                    .iter()
                    .find(|(s, _)| s == sys)
                    .map(|(_, v)| v)
                    .or_else(|| order.iter().find(|s| s.system == sys)?.snapshot)
            };
            let recs: Vec<(&SystemId, Option<&Fields>, Option<Timestamp>)> = sources
                .iter()
                .map(|sys| {
                    let v = current(sys);
                    (
                        sys,
                        v.and_then(|v| v.content.as_ref()),
                        v.and_then(|v| v.modstamp),
                    )
                })
                .collect();
            let mut clock = head.map(|h| h.clock.clone()).unwrap_or_default();
            let mut modstamp = head.and_then(|h| h.modstamp);
            for (_, _, v) in &changes {
                clock = clock.merge(&v.clock);
                modstamp = modstamp.max(v.modstamp);
            }
            let changed_by = changes[changes.len() - 1].0.system.clone();
            let composed = match compose(&recs, policy) {
                Some((content, origins)) => {
                    // The origin: the source that gave the most fields (ties: listed first).
                    let mut count: Vec<(usize, usize)> = sources
                        .iter()
                        .enumerate()
                        .map(|(i, s)| (origins.values().filter(|o| *o == s).count(), i))
                        .collect();
                    count.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
                    let origin = sources[count[0].1].clone();
                    Version::new(Some(content), clock, modstamp, Some(origin))
                        .with_field_origins(origins)
                }
                None => Version::new(None, clock, modstamp, Some(changed_by)),
            };
            let same = head.is_some_and(|h| {
                h.hash == composed.hash
                    && h.origin == composed.origin
                    && h.field_origins == composed.field_origins
            });
            if !same {
                new_head = Some(composed);
            }
        }
        Fold::Compose(_) => {}
    }

    let head_changed = new_head.as_ref() != head;
    let held = held || parked.held;
    let mut parked_fields = parked.fields.clone();
    for c in &conflicts {
        if let (Some(f), Resolution::Parked) = (&c.field, &c.resolution) {
            parked_fields.insert(f.clone());
        }
    }
    let mut dirty = Vec::new();
    if let Some(h) = &new_head {
        if !held {
            for s in &order {
                let snap = snapshots
                    .iter()
                    .find(|(sys, _)| sys == s.system)
                    .map(|(_, v)| v)
                    .or(s.snapshot);
                let keep = with_identity(&parked_fields, s.identity);
                let (_, target_hash) = target_for(h, snap, &keep);
                if hash_of(snap) != target_hash {
                    dirty.push(s.system.clone());
                }
            }
        }
    }
    EntityPlan {
        head: new_head,
        head_changed,
        snapshots,
        dirty,
        changed_in,
        echoes,
        conflicts,
        held,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::merge::{DeleteRule, FieldPolicy};
    use crate::model::{InstanceId, Value};

    struct Fixture {
        a: SystemId,
        b: SystemId,
        inst: InstanceId,
    }
    impl Fixture {
        fn new() -> Self {
            Fixture {
                a: SystemId::new("a").unwrap(),
                b: SystemId::new("b").unwrap(),
                inst: InstanceId::new("n1").unwrap(),
            }
        }
        fn st<'x>(
            &'x self,
            sys: &'x SystemId,
            snap: Option<&'x Version>,
            obs: Observation,
        ) -> SystemState<'x> {
            SystemState {
                system: sys,
                actor: ActorId::of(&self.inst, sys),
                snapshot: snap,
                pending: None,
                observed: obs,
                identity: &NO_IDENTITY,
            }
        }
    }
    fn present(f: &Fields) -> Observation {
        Observation::Present {
            fields: f.clone(),
            modstamp: None,
        }
    }
    fn policy() -> Policy {
        Policy::new(FieldPolicy::Newest, DeleteRule::DeleteWins)
    }

    #[test]
    fn create_flows_then_echo_is_suppressed() {
        let fx = Fixture::new();
        let rec = Fields::new().with("n", "x");
        let p = plan(
            None,
            &[
                fx.st(&fx.a, None, present(&rec)),
                fx.st(&fx.b, None, Observation::Absent),
            ],
            &policy(),
            &Parked::default(),
        );
        let head = p.head.clone().unwrap();
        assert!(p.head_changed);
        assert_eq!(p.dirty, vec![fx.b.clone()]);
        assert_eq!(p.changed_in, vec![fx.a.clone()]);
        assert!(p.echoes.is_empty());
        // After the write, b's snapshot is the head; reading b back changes nothing.
        let snap_a = p.snapshots[0].1.clone();
        let p2 = plan(
            Some(&head),
            &[
                fx.st(&fx.a, Some(&snap_a), present(&rec)),
                fx.st(&fx.b, Some(&head), present(&rec)),
            ],
            &policy(),
            &Parked::default(),
        );
        assert!(!p2.head_changed);
        assert!(p2.dirty.is_empty());
        assert!(p2.snapshots.is_empty());
    }

    #[test]
    fn lost_checkpoint_after_write_is_an_echo_not_a_change() {
        let fx = Fixture::new();
        let rec = Fields::new().with("n", "x");
        let p = plan(
            None,
            &[
                fx.st(&fx.a, None, present(&rec)),
                fx.st(&fx.b, None, Observation::NotRead),
            ],
            &policy(),
            &Parked::default(),
        );
        let head = p.head.unwrap();
        // b was written but its snapshot update was lost: b has no snapshot, yet holds the head.
        let p2 = plan(
            Some(&head),
            &[
                fx.st(&fx.a, Some(&head), Observation::NotRead),
                fx.st(&fx.b, None, present(&rec)),
            ],
            &policy(),
            &Parked::default(),
        );
        assert!(!p2.head_changed);
        assert!(p2.dirty.is_empty());
        assert_eq!(p2.snapshots.len(), 1);
        assert_eq!(p2.snapshots[0].1, head);
        assert_eq!(p2.echoes, vec![fx.b.clone()]);
        assert!(p2.changed_in.is_empty());
    }

    #[test]
    fn concurrent_edits_merge_field_by_field() {
        let fx = Fixture::new();
        let base = Fields::new().with("x", 1i64).with("y", 1i64);
        let p0 = plan(
            None,
            &[
                fx.st(&fx.a, None, present(&base)),
                fx.st(&fx.b, None, Observation::NotRead),
            ],
            &policy(),
            &Parked::default(),
        );
        let head = p0.head.unwrap();
        let ea = Fields::new().with("x", 2i64).with("y", 1i64);
        let eb = Fields::new().with("x", 1i64).with("y", 3i64);
        let p = plan(
            Some(&head),
            &[
                fx.st(&fx.a, Some(&head), present(&ea)),
                fx.st(&fx.b, Some(&head), present(&eb)),
            ],
            &policy(),
            &Parked::default(),
        );
        let h = p.head.unwrap();
        let c = h.content.as_ref().unwrap();
        assert_eq!(c.get("x"), Some(&Value::Int(2)));
        assert_eq!(c.get("y"), Some(&Value::Int(3)));
        assert!(p.conflicts.is_empty());
        assert_eq!(p.dirty, vec![fx.a.clone(), fx.b.clone()]);
        assert!(
            h.clock.dominates(&p.snapshots[0].1.clock)
                && h.clock.dominates(&p.snapshots[1].1.clock)
        );
    }
}
