//! Field-level deltas between two versions of a record.

use crate::model::{Fields, Value, Version};
use std::collections::BTreeMap;
use std::sync::Arc;

/// What happened to one field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldChange {
    Set(Value),
    /// The field became null (absent).
    Unset,
}

/// What happened to a record between a base and a current version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delta {
    Unchanged,
    /// The record did not exist in the base.
    Create(Fields),
    /// The record was deleted (tombstone).
    Delete,
    /// Field-level changes, in field-name order; never empty.
    Update(BTreeMap<Arc<str>, FieldChange>),
}

/// The delta that turns `base` into `current` (`None` = absent / deleted).
pub fn diff(base: Option<&Fields>, current: Option<&Fields>) -> Delta {
    match (base, current) {
        (None, None) => Delta::Unchanged,
        (None, Some(c)) => Delta::Create(c.clone()),
        (Some(_), None) => Delta::Delete,
        (Some(b), Some(c)) => {
            let mut changes = BTreeMap::new();
            let (bm, cm) = (b.map(), c.map());
            let (mut bi, mut ci) = (bm.iter().peekable(), cm.iter().peekable());
            loop {
                match (bi.peek(), ci.peek()) {
                    (None, None) => break,
                    (Some((bk, _)), None) => {
                        changes.insert((*bk).clone(), FieldChange::Unset);
                        bi.next();
                    }
                    (None, Some((ck, cv))) => {
                        changes.insert((*ck).clone(), FieldChange::Set((*cv).clone()));
                        ci.next();
                    }
                    (Some((bk, bv)), Some((ck, cv))) => match bk.cmp(ck) {
                        std::cmp::Ordering::Less => {
                            changes.insert((*bk).clone(), FieldChange::Unset);
                            bi.next();
                        }
                        std::cmp::Ordering::Greater => {
                            changes.insert((*ck).clone(), FieldChange::Set((*cv).clone()));
                            ci.next();
                        }
                        std::cmp::Ordering::Equal => {
                            if bv != cv {
                                changes.insert((*ck).clone(), FieldChange::Set((*cv).clone()));
                            }
                            bi.next();
                            ci.next();
                        }
                    },
                }
            }
            if changes.is_empty() {
                Delta::Unchanged
            } else {
                Delta::Update(changes)
            }
        }
    }
}

/// [`diff`] with the hash fast path: equal hashes (or two tombstones) return
/// [`Delta::Unchanged`] without looking at a single field.
pub fn diff_versions(base: Option<&Version>, current: Option<&Version>) -> Delta {
    let bh = base.and_then(|v| v.hash);
    let ch = current.and_then(|v| v.hash);
    if bh == ch {
        return Delta::Unchanged;
    }
    diff(
        base.and_then(|v| v.content.as_ref()),
        current.and_then(|v| v.content.as_ref()),
    )
}

/// Applies a delta: `apply(b, &diff(b, x)) == x` for every `b` and `x`.
pub fn apply(base: Option<&Fields>, delta: &Delta) -> Option<Fields> {
    match delta {
        Delta::Unchanged => base.cloned(),
        Delta::Create(f) => Some(f.clone()),
        Delta::Delete => None,
        Delta::Update(changes) => {
            let mut out = base.cloned().unwrap_or_default();
            for (name, ch) in changes {
                match ch {
                    FieldChange::Set(v) => out.set(name.clone(), v.clone()),
                    FieldChange::Unset => {
                        out.remove(name);
                    }
                }
            }
            Some(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::VectorClock;

    #[test]
    fn field_level_delta() {
        let base = Fields::new().with("a", 1i64).with("b", "x").with("c", true);
        let cur = Fields::new()
            .with("a", 1i64)
            .with("b", "y")
            .with("d", "new");
        let d = diff(Some(&base), Some(&cur));
        let Delta::Update(ch) = &d else {
            panic!("{d:?}")
        };
        assert_eq!(ch.len(), 3);
        assert_eq!(ch["b"], FieldChange::Set(Value::text("y")));
        assert_eq!(ch["c"], FieldChange::Unset);
        assert_eq!(ch["d"], FieldChange::Set(Value::text("new")));
        assert_eq!(apply(Some(&base), &d), Some(cur.clone()));
        assert_eq!(diff(Some(&cur), Some(&cur)), Delta::Unchanged);
        assert_eq!(diff(None, Some(&cur)), Delta::Create(cur.clone()));
        assert_eq!(diff(Some(&cur), None), Delta::Delete);
    }

    #[test]
    fn equal_hashes_take_the_fast_path() {
        let f = Fields::new().with("a", 1i64);
        let v1 = Version::new(Some(f.clone()), VectorClock::new(), None, None);
        // A version whose hash says "equal" while the content differs: the fast path must not
        // look at the fields at all, so it reports Unchanged.
        let mut v2 = v1.clone();
        v2.content = Some(Fields::new().with("a", 2i64));
        assert_eq!(diff_versions(Some(&v1), Some(&v2)), Delta::Unchanged);
        let v3 = Version::new(
            Some(Fields::new().with("a", 2i64)),
            VectorClock::new(),
            None,
            None,
        );
        assert!(matches!(
            diff_versions(Some(&v1), Some(&v3)),
            Delta::Update(_)
        ));
    }
}
