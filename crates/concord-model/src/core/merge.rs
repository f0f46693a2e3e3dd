//! Three-way field merge and conflict policies.
//!
//! `merge(base, a, b, policy)` never depends on which side is passed first: the two sides are put
//! in a canonical order (by system, then content hash) before anything is decided, so even a
//! custom resolver that prefers "the first argument" yields the same record for (a, b) and (b, a).

use crate::model::{ContentHash, FieldOrigins, Fields, SystemId, Timestamp, Value};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// One side of a merge: a system's version of the record.
#[derive(Debug, Clone, Copy)]
pub struct Side<'a> {
    pub system: &'a SystemId,
    /// `None`: the record is deleted on this side.
    pub content: Option<&'a Fields>,
    pub modstamp: Option<Timestamp>,
    /// Fields whose value on this side was set by another system than `system` (a merged
    /// head): a conflict on such a field is between the system that set it and the other side.
    pub origins: Option<&'a FieldOrigins>,
}

impl<'a> Side<'a> {
    pub fn new(
        system: &'a SystemId,
        content: Option<&'a Fields>,
        modstamp: Option<Timestamp>,
    ) -> Self {
        Side {
            system,
            content,
            modstamp,
            origins: None,
        }
    }

    /// A side whose fields come from several systems: a version's per-field origins.
    pub fn with_origins(mut self, origins: &'a FieldOrigins) -> Self {
        self.origins = Some(origins);
        self
    }

    /// The system that set `field` on this side.
    pub fn system_for(&self, field: &str) -> &'a SystemId {
        self.origins
            .and_then(|o| o.get(field))
            .unwrap_or(self.system)
    }
    fn hash(&self) -> Option<ContentHash> {
        self.content.map(Fields::content_hash)
    }
}

/// How a conflicting field is decided.
#[derive(Clone)]
pub enum FieldPolicy {
    /// The named system's value wins. When neither side is that system, `Newest` decides.
    Prefer(SystemId),
    /// The side whose system comes first in the list wins (aggregate: per-field source
    /// priority); a listed system beats an unlisted one; when neither is listed, `Newest`
    /// decides.
    Priority(Vec<SystemId>),
    /// The side with the later source modification time wins; used only between concurrent
    /// versions (causally ordered versions never reach a policy). Equal or missing times fall
    /// back to the deterministic tie-break: the smaller system id wins.
    Newest,
    /// The field is parked in the conflict queue; until resolved the merged record keeps the base
    /// value and the engine holds the field back from writes.
    Manual,
    /// A library user's resolver.
    Custom(Arc<dyn Resolver>),
}

impl fmt::Debug for FieldPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FieldPolicy::Prefer(s) => write!(f, "Prefer({s})"),
            FieldPolicy::Priority(l) => {
                let names: Vec<&str> = l.iter().map(SystemId::as_str).collect();
                write!(f, "Priority({})", names.join(" > "))
            }
            FieldPolicy::Newest => f.write_str("Newest"),
            FieldPolicy::Manual => f.write_str("Manual"),
            FieldPolicy::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

/// What happens when one side deleted the record and the other changed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteRule {
    DeleteWins,
    /// The record survives with the updated side's content (it is re-created where deleted).
    UpdateWins,
    /// The record is held in the conflict queue, unchanged everywhere, until resolved.
    Manual,
}

/// A job's conflict policy: a default, per-field overrides, and the delete rule.
#[derive(Debug, Clone)]
pub struct Policy {
    pub default: FieldPolicy,
    pub fields: BTreeMap<String, FieldPolicy>,
    pub delete: DeleteRule,
}

impl Policy {
    pub fn new(default: FieldPolicy, delete: DeleteRule) -> Self {
        Policy {
            default,
            fields: BTreeMap::new(),
            delete,
        }
    }
    pub fn with_field(mut self, field: impl Into<String>, p: FieldPolicy) -> Self {
        self.fields.insert(field.into(), p);
        self
    }
    pub fn for_field(&self, field: &str) -> &FieldPolicy {
        self.fields.get(field).unwrap_or(&self.default)
    }
}

/// One side's view of a conflicting field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConflictSide {
    pub system: SystemId,
    /// `None`: the field is null on this side (or, for a record conflict, the record is deleted).
    pub value: Option<Value>,
    pub modstamp: Option<Timestamp>,
}

/// A field changed on both sides to different values (or, with `field == None`, a delete against
/// an update), and how it was decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// `None` for a record-level (delete vs update) conflict.
    pub field: Option<String>,
    pub base: Option<Value>,
    /// In canonical order (system, then content hash).
    pub sides: [ConflictSide; 2],
    pub resolution: Resolution,
}

/// What a policy decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    /// The side of this system won.
    Took(SystemId),
    /// A custom resolver produced this value (`None`: null).
    Value(Option<Value>),
    /// Waiting in the conflict queue.
    Parked,
}

/// A custom conflict resolver (library API). Receives the two sides in canonical order.
pub trait Resolver: Send + Sync {
    /// Decides one conflicting field. Returning [`Resolution::Took`] with a system that is not one
    /// of the two sides parks the field.
    fn resolve(
        &self,
        field: &str,
        base: Option<&Value>,
        a: &ConflictSide,
        b: &ConflictSide,
    ) -> Resolution;
}

/// The result of a merge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeOutcome {
    /// The merged record; `None` when the merge result is a delete.
    pub content: Option<Fields>,
    /// Every conflict met, with its resolution.
    pub conflicts: Vec<Conflict>,
    /// A record-level conflict is parked: nothing may be written for this record until resolved.
    pub held: bool,
}

impl MergeOutcome {
    /// The fields parked for manual resolution.
    pub fn parked_fields(&self) -> impl Iterator<Item = &str> {
        self.conflicts
            .iter()
            .filter(|c| c.resolution == Resolution::Parked)
            .filter_map(|c| c.field.as_deref())
    }
}

fn value_cmp(a: Option<&Value>, b: Option<&Value>) -> Ordering {
    fn bytes(v: Option<&Value>) -> Vec<u8> {
        match v {
            None => Vec::new(),
            Some(v) => Fields::new().with("v", v.clone()).canonical_bytes(),
        }
    }
    bytes(a).cmp(&bytes(b))
}

/// Three-way merge of `a` and `b` against their common `base` (`None`: the record did not exist
/// at the base, e.g. created on both sides).
pub fn merge(base: Option<&Fields>, a: Side<'_>, b: Side<'_>, policy: &Policy) -> MergeOutcome {
    // Canonical order: the result cannot depend on argument order. Systems almost always
    // differ; only for two sides of the same system is the content hash needed.
    let swap = match a.system.cmp(b.system) {
        Ordering::Less => false,
        Ordering::Greater => true,
        Ordering::Equal => a.hash() > b.hash(),
    };
    let (a, b) = if swap { (b, a) } else { (a, b) };
    let done = |content: Option<&Fields>| MergeOutcome {
        content: content.cloned(),
        conflicts: Vec::new(),
        held: false,
    };
    match (a.content, b.content) {
        (None, None) => done(None),
        // Delete against an unchanged side is no conflict.
        (None, Some(other)) | (Some(other), None) if Some(other) == base => done(None),
        (None, Some(upd)) | (Some(upd), None) if base.is_none() => done(Some(upd)),
        (None, Some(upd)) | (Some(upd), None) => {
            let (del_side, upd_side) = if a.content.is_none() { (a, b) } else { (b, a) };
            let resolution = match policy.delete {
                DeleteRule::DeleteWins => Resolution::Took(del_side.system.clone()),
                DeleteRule::UpdateWins => Resolution::Took(upd_side.system.clone()),
                DeleteRule::Manual => Resolution::Parked,
            };
            let conflict = Conflict {
                field: None,
                base: None,
                sides: [
                    ConflictSide {
                        system: a.system.clone(),
                        value: None,
                        modstamp: a.modstamp,
                    },
                    ConflictSide {
                        system: b.system.clone(),
                        value: None,
                        modstamp: b.modstamp,
                    },
                ],
                resolution: resolution.clone(),
            };
            let (content, held) = match policy.delete {
                DeleteRule::DeleteWins => (None, false),
                DeleteRule::UpdateWins => (Some(upd.clone()), false),
                DeleteRule::Manual => (base.cloned(), true),
            };
            MergeOutcome {
                content,
                conflicts: vec![conflict],
                held,
            }
        }
        (Some(fa), Some(fb)) => merge_fields(base, a, fa, b, fb, policy),
    }
}

fn merge_fields(
    base: Option<&Fields>,
    a: Side<'_>,
    fa: &Fields,
    b: Side<'_>,
    fb: &Fields,
    policy: &Policy,
) -> MergeOutcome {
    let empty = Fields::new();
    let base = base.unwrap_or(&empty);
    // Start from a's fields and patch where the merge chose otherwise: a BTreeMap clone is
    // cheaper than building a new map, and most merges patch only a few fields.
    let mut out = fa.clone();
    let mut conflicts = Vec::new();
    // A merge-join over the three name-sorted field maps: no lookups, no name collection.
    let (mut ib, mut ia, mut ibb) = (
        base.map().iter().peekable(),
        fa.map().iter().peekable(),
        fb.map().iter().peekable(),
    );
    loop {
        let mut name: Option<&Arc<str>> = None;
        for (k, _) in [ib.peek(), ia.peek(), ibb.peek()].into_iter().flatten() {
            name = match name {
                Some(n) if Arc::ptr_eq(n, k) || **n <= ***k => Some(n),
                _ => Some(*k),
            };
        }
        let Some(name) = name else { break };
        let (vb, va, vbb) = (
            take_if(&mut ib, name),
            take_if(&mut ia, name),
            take_if(&mut ibb, name),
        );
        let chosen = if va == vbb || vbb == vb {
            va
        } else if va == vb {
            vbb
        } else {
            let sides = [
                ConflictSide {
                    system: a.system_for(name).clone(),
                    value: va.cloned(),
                    modstamp: a.modstamp,
                },
                ConflictSide {
                    system: b.system_for(name).clone(),
                    value: vbb.cloned(),
                    modstamp: b.modstamp,
                },
            ];
            let resolution = decide(policy.for_field(name), name, vb, &sides);
            let value = match &resolution {
                // (Both values set by one system, relayed through a peer: the canonical first.)
                Resolution::Took(s) if *s == sides[0].system => va,
                Resolution::Took(_) => vbb,
                Resolution::Value(v) => v.as_ref(),
                Resolution::Parked => vb,
            }
            .cloned()
            .map(Value::normalize)
            .filter(|v| !v.is_null());
            conflicts.push(Conflict {
                field: Some(name.to_string()),
                base: vb.cloned(),
                sides,
                resolution,
            });
            if value.as_ref() != va {
                out.patch(name, value);
            }
            continue;
        };
        if chosen != va {
            out.patch(name, chosen.cloned());
        }
    }
    MergeOutcome {
        content: Some(out),
        conflicts,
        held: false,
    }
}

type FieldIter<'m> = std::iter::Peekable<std::collections::btree_map::Iter<'m, Arc<str>, Value>>;

fn take_if<'m>(it: &mut FieldIter<'m>, name: &Arc<str>) -> Option<&'m Value> {
    if it
        .peek()
        .is_some_and(|(k, _)| Arc::ptr_eq(k, name) || ***k == **name)
    {
        it.next().map(|(_, v)| v)
    } else {
        None
    }
}

fn newest(sides: &[ConflictSide; 2]) -> Resolution {
    let pick = match sides[0].modstamp.cmp(&sides[1].modstamp) {
        Ordering::Greater => 0,
        Ordering::Less => 1,
        Ordering::Equal => tie_break(sides),
    };
    Resolution::Took(sides[pick].system.clone())
}

/// Deterministic, content-based: smaller system id, then the larger value's canonical bytes.
fn tie_break(sides: &[ConflictSide; 2]) -> usize {
    match sides[0].system.cmp(&sides[1].system) {
        Ordering::Less => 0,
        Ordering::Greater => 1,
        Ordering::Equal => match value_cmp(sides[0].value.as_ref(), sides[1].value.as_ref()) {
            Ordering::Less => 1,
            _ => 0,
        },
    }
}

fn decide(
    p: &FieldPolicy,
    field: &str,
    base: Option<&Value>,
    sides: &[ConflictSide; 2],
) -> Resolution {
    match p {
        FieldPolicy::Prefer(sys) => {
            let (is0, is1) = (sides[0].system == *sys, sides[1].system == *sys);
            if is0 && !is1 {
                Resolution::Took(sides[0].system.clone())
            } else if is1 && !is0 {
                Resolution::Took(sides[1].system.clone())
            } else {
                newest(sides)
            }
        }
        FieldPolicy::Priority(list) => {
            let rank = |s: &SystemId| list.iter().position(|x| x == s).unwrap_or(usize::MAX);
            match rank(&sides[0].system).cmp(&rank(&sides[1].system)) {
                Ordering::Less => Resolution::Took(sides[0].system.clone()),
                Ordering::Greater => Resolution::Took(sides[1].system.clone()),
                Ordering::Equal => newest(sides),
            }
        }
        FieldPolicy::Newest => newest(sides),
        FieldPolicy::Manual => Resolution::Parked,
        FieldPolicy::Custom(r) => match r.resolve(field, base, &sides[0], &sides[1]) {
            Resolution::Took(s) if s != sides[0].system && s != sides[1].system => {
                Resolution::Parked
            }
            other => other,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sys(s: &str) -> SystemId {
        SystemId::new(s).unwrap()
    }

    #[test]
    fn worked_example_from_design_doc() {
        let (sf, erp) = (sys("sf"), sys("erp"));
        let base = Fields::new()
            .with("Name", "Acme")
            .with("Phone", "555-0100")
            .with("City", "Paris")
            .with("Rating", "Warm");
        let ours = Fields::new() // sf
            .with("Name", "Acme Corp")
            .with("Phone", "555-0100")
            .with("City", "Lyon")
            .with("Rating", "Hot");
        let theirs = Fields::new() // erp
            .with("Name", "Acme")
            .with("Phone", "555-0199")
            .with("City", "Lyon")
            .with("Rating", "Cold");
        let policy = Policy::new(FieldPolicy::Prefer(erp.clone()), DeleteRule::UpdateWins);
        let out = merge(
            Some(&base),
            Side::new(&sf, Some(&ours), None),
            Side::new(&erp, Some(&theirs), None),
            &policy,
        );
        let m = out.content.unwrap();
        assert_eq!(m.get("Name"), Some(&Value::text("Acme Corp")));
        assert_eq!(m.get("Phone"), Some(&Value::text("555-0199")));
        assert_eq!(m.get("City"), Some(&Value::text("Lyon")));
        assert_eq!(m.get("Rating"), Some(&Value::text("Cold")));
        assert_eq!(out.conflicts.len(), 1);
        assert_eq!(out.conflicts[0].field.as_deref(), Some("Rating"));
        assert_eq!(out.conflicts[0].resolution, Resolution::Took(erp.clone()));
    }

    #[test]
    fn priority_takes_the_first_listed_system() {
        let (a, b, c) = (sys("a"), sys("b"), sys("c"));
        let base = Fields::new().with("x", 1i64);
        let p = Policy::new(
            FieldPolicy::Priority(vec![c.clone(), a.clone()]),
            DeleteRule::DeleteWins,
        );
        let (fa, fb, fc) = (
            Fields::new().with("x", 2i64),
            Fields::new().with("x", 3i64),
            Fields::new().with("x", 4i64),
        );
        // Listed beats unlisted, whatever the times.
        let r = merge(
            Some(&base),
            Side::new(&a, Some(&fa), Some(Timestamp(1))),
            Side::new(&b, Some(&fb), Some(Timestamp(99))),
            &p,
        );
        assert_eq!(r.content.unwrap().get("x"), Some(&Value::Int(2)));
        // Earlier in the list wins.
        let r = merge(
            Some(&base),
            Side::new(&a, Some(&fa), Some(Timestamp(99))),
            Side::new(&c, Some(&fc), Some(Timestamp(1))),
            &p,
        );
        assert_eq!(r.content.unwrap().get("x"), Some(&Value::Int(4)));
    }

    #[test]
    fn newest_uses_modstamps_then_system_order() {
        let (a, b) = (sys("a"), sys("b"));
        let base = Fields::new().with("x", 1i64);
        let fa = Fields::new().with("x", 2i64);
        let fb = Fields::new().with("x", 3i64);
        let p = Policy::new(FieldPolicy::Newest, DeleteRule::DeleteWins);
        let r = merge(
            Some(&base),
            Side::new(&a, Some(&fa), Some(Timestamp(10))),
            Side::new(&b, Some(&fb), Some(Timestamp(20))),
            &p,
        );
        assert_eq!(r.content.unwrap().get("x"), Some(&Value::Int(3)));
        let r = merge(
            Some(&base),
            Side::new(&b, Some(&fb), None),
            Side::new(&a, Some(&fa), None),
            &p,
        );
        assert_eq!(
            r.content.unwrap().get("x"),
            Some(&Value::Int(2)),
            "tie: smaller system id"
        );
    }

    #[test]
    fn manual_parks_the_field_and_keeps_the_rest() {
        let (a, b) = (sys("a"), sys("b"));
        let base = Fields::new().with("x", 1i64).with("y", 1i64);
        let fa = Fields::new().with("x", 2i64).with("y", 5i64);
        let fb = Fields::new().with("x", 3i64).with("y", 1i64);
        let p = Policy::new(FieldPolicy::Newest, DeleteRule::DeleteWins)
            .with_field("x", FieldPolicy::Manual);
        let r = merge(
            Some(&base),
            Side::new(&a, Some(&fa), None),
            Side::new(&b, Some(&fb), None),
            &p,
        );
        assert_eq!(r.parked_fields().collect::<Vec<_>>(), vec!["x"]);
        let c = r.content.unwrap();
        assert_eq!(c.get("x"), Some(&Value::Int(1)), "base value while parked");
        assert_eq!(
            c.get("y"),
            Some(&Value::Int(5)),
            "one-sided edit still merges"
        );
    }

    #[test]
    fn delete_rules() {
        let (a, b) = (sys("a"), sys("b"));
        let base = Fields::new().with("x", 1i64);
        let upd = Fields::new().with("x", 2i64);
        for (rule, expect, held) in [
            (DeleteRule::DeleteWins, None, false),
            (DeleteRule::UpdateWins, Some(upd.clone()), false),
            (DeleteRule::Manual, Some(base.clone()), true),
        ] {
            let p = Policy::new(FieldPolicy::Newest, rule);
            for flip in [false, true] {
                let (s1, s2) = (Side::new(&a, None, None), Side::new(&b, Some(&upd), None));
                let r = if flip {
                    merge(Some(&base), s2, s1, &p)
                } else {
                    merge(Some(&base), s1, s2, &p)
                };
                assert_eq!(r.content, expect, "{rule:?}");
                assert_eq!(r.held, held);
                assert_eq!(r.conflicts.len(), 1);
            }
        }
        // Delete against an unchanged side is no conflict.
        let p = Policy::new(FieldPolicy::Newest, DeleteRule::UpdateWins);
        let r = merge(
            Some(&base),
            Side::new(&a, None, None),
            Side::new(&b, Some(&base), None),
            &p,
        );
        assert_eq!(r.content, None);
        assert!(r.conflicts.is_empty());
    }

    struct FirstArg;
    impl Resolver for FirstArg {
        fn resolve(
            &self,
            _: &str,
            _: Option<&Value>,
            a: &ConflictSide,
            _: &ConflictSide,
        ) -> Resolution {
            Resolution::Took(a.system.clone())
        }
    }

    #[test]
    fn custom_resolver_cannot_break_symmetry() {
        let (a, b) = (sys("a"), sys("b"));
        let fa = Fields::new().with("x", 2i64);
        let fb = Fields::new().with("x", 3i64);
        let p = Policy::new(
            FieldPolicy::Custom(Arc::new(FirstArg)),
            DeleteRule::DeleteWins,
        );
        let r1 = merge(
            None,
            Side::new(&a, Some(&fa), None),
            Side::new(&b, Some(&fb), None),
            &p,
        );
        let r2 = merge(
            None,
            Side::new(&b, Some(&fb), None),
            Side::new(&a, Some(&fa), None),
            &p,
        );
        assert_eq!(r1, r2);
    }
}
