//! Per-field causality for merges between engine instances (`docs/offline.md`).
//!
//! A version's *field dots* give, for each field, the **edit clock** of its current value: the
//! entity's vector clock right after the edit that set it (a removed field keeps the clock of
//! its removal; a field with no dot holds its first value, seen by everyone). A version whose
//! clock is at or after an edit clock has seen that edit. Merging two concurrent versions field
//! by field then needs no common ancestor:
//!
//! - equal values: nothing to decide;
//! - one side has seen the other's edit of the field and not the reverse: its value is the
//!   newer one and is taken;
//! - neither has seen the other's: a concurrent edit, decided by the job's policy.
//!
//! The decision is expressed as a synthetic merge base for [`crate::core::merge`] (the loser's
//! value where one side wins, a value neither holds where the edits are concurrent), so every
//! policy and delete rule applies unchanged. Dots are assigned lazily: fields that differ from
//! the last version whose dots were recorded get the current clock, which every version that
//! has seen them is at or after.

use crate::model::canonical::DecodeError;
use crate::model::varint;
use crate::model::{ClockOrdering, Fields, Value, VectorClock};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Edit clocks per field (see the module documentation).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldDots(pub BTreeMap<Arc<str>, VectorClock>);

/// A version as the dot merge sees it.
#[derive(Debug, Clone, Copy)]
pub struct Dotted<'a> {
    pub content: &'a Fields,
    pub clock: &'a VectorClock,
    pub dots: &'a FieldDots,
}

impl<'a> Dotted<'a> {
    pub fn new(content: &'a Fields, clock: &'a VectorClock, dots: &'a FieldDots) -> Self {
        Dotted {
            content,
            clock,
            dots,
        }
    }
}

/// A value no record holds: the synthetic base of a concurrently edited field, so the merge
/// sees both sides changed.
const NO_BASE: &str = "\u{0}concord: no common value";

fn seen(edit: Option<&VectorClock>, clock: &VectorClock) -> bool {
    match edit {
        None => true,
        Some(e) => matches!(
            e.compare(clock),
            ClockOrdering::Before | ClockOrdering::Equal
        ),
    }
}

impl FieldDots {
    /// The dots of `content` at `clock`, given an earlier version's content and dots: fields
    /// whose value changed since get `clock`; the others keep theirs. With no earlier version
    /// every field gets `clock`.
    pub fn advance(
        before: Option<(Option<&Fields>, &FieldDots)>,
        content: Option<&Fields>,
        clock: &VectorClock,
    ) -> FieldDots {
        let empty = Fields::new();
        let now = content.unwrap_or(&empty);
        let Some((old, dots)) = before else {
            return FieldDots(now.names().map(|n| (n.clone(), clock.clone())).collect());
        };
        let old = old.unwrap_or(&empty);
        let mut out = dots.0.clone();
        for name in now.names().chain(old.names()) {
            if now.get(name) != old.get(name) {
                out.insert(name.clone(), clock.clone());
            }
        }
        FieldDots(out)
    }

    /// Both sides' dots for one version they reached separately: per field, the later of two
    /// edit clocks (their join when concurrent). Symmetric.
    pub fn join(&self, other: &FieldDots) -> FieldDots {
        let mut out = self.0.clone();
        for (f, c) in &other.0 {
            out.entry(f.clone())
                .and_modify(|x| {
                    if x != c {
                        *x = x.merge(c);
                    }
                })
                .or_insert_with(|| c.clone());
        }
        FieldDots(out)
    }

    pub fn get(&self, field: &str) -> Option<&VectorClock> {
        self.0.get(field)
    }

    /// Encoding (bundles and the store): the distinct clocks once, then each field's index.
    /// `varint c · c × (varint len · clock) · varint f · f × (varint len · name · varint index)`
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        let mut clocks: Vec<&VectorClock> = Vec::new();
        let mut index = Vec::with_capacity(self.0.len());
        for c in self.0.values() {
            let i = match clocks.iter().position(|x| *x == c) {
                Some(i) => i,
                None => {
                    clocks.push(c);
                    clocks.len() - 1
                }
            };
            index.push(i);
        }
        varint::put_u64(out, clocks.len() as u64);
        let mut buf = Vec::new();
        for c in clocks {
            buf.clear();
            c.encode_into(&mut buf);
            varint::put_u64(out, buf.len() as u64);
            out.extend_from_slice(&buf);
        }
        varint::put_u64(out, self.0.len() as u64);
        for (name, i) in self.0.keys().zip(index) {
            varint::put_u64(out, name.len() as u64);
            out.extend_from_slice(name.as_bytes());
            varint::put_u64(out, i as u64);
        }
    }

    /// Decodes from `bytes[*pos..]`, advancing `pos`. Never panics.
    pub fn decode(bytes: &[u8], pos: &mut usize) -> Result<FieldDots, DecodeError> {
        let err = |at: usize, reason: String| DecodeError {
            offset: at,
            reason: format!("field dots: {reason}"),
        };
        let len = |pos: &mut usize, what: &str| -> Result<usize, DecodeError> {
            let at = *pos;
            let n = varint::get_u64(bytes, pos).map_err(|_| err(at, format!("bad {what}")))?;
            if n > (bytes.len() - *pos) as u64 {
                return Err(err(at, format!("{what} larger than the input")));
            }
            Ok(n as usize)
        };
        let c = len(pos, "clock count")?;
        let mut clocks = Vec::with_capacity(c);
        for _ in 0..c {
            let n = len(pos, "clock length")?;
            let raw = &bytes[*pos..*pos + n];
            let (clock, used) =
                VectorClock::decode(raw).map_err(|e| err(*pos, format!("clock: {e}")))?;
            if used != n {
                return Err(err(*pos, "clock length mismatch".into()));
            }
            *pos += n;
            clocks.push(clock);
        }
        let f = len(pos, "field count")?;
        let mut out = BTreeMap::new();
        for _ in 0..f {
            let n = len(pos, "name length")?;
            let name = std::str::from_utf8(&bytes[*pos..*pos + n])
                .map_err(|_| err(*pos, "name not UTF-8".into()))?;
            *pos += n;
            let at = *pos;
            let i = varint::get_u64(bytes, pos).map_err(|_| err(at, "bad index".into()))?;
            let clock = clocks
                .get(i as usize)
                .ok_or_else(|| err(at, "index out of range".into()))?;
            out.insert(Arc::from(name), clock.clone());
        }
        Ok(FieldDots(out))
    }
}

fn names<'a>(a: &Dotted<'a>, b: &Dotted<'a>) -> std::collections::BTreeSet<&'a Arc<str>> {
    a.content
        .names()
        .chain(b.content.names())
        .chain(a.dots.0.keys())
        .chain(b.dots.0.keys())
        .collect()
}

/// Which side's value of `field` is the newer one: `Some(true)` a's, `Some(false)` b's, `None`
/// concurrent edits.
fn newer(a: &Dotted, b: &Dotted, field: &str) -> Option<bool> {
    let (ea, eb) = (a.dots.get(field), b.dots.get(field));
    match (seen(eb, a.clock), seen(ea, b.clock)) {
        (true, false) => Some(true),
        (false, true) => Some(false),
        (false, false) => None,
        // Each has seen the other's edit yet they differ (dots recorded coarsely): the later
        // edit clock, if one is later.
        (true, true) => match (ea, eb) {
            (Some(x), Some(y)) => match x.compare(y) {
                ClockOrdering::Before => Some(false),
                ClockOrdering::After => Some(true),
                _ => None,
            },
            (None, Some(_)) => Some(false),
            (Some(_), None) => Some(true),
            (None, None) => None,
        },
    }
}

/// The synthetic base that makes the three-way merge of `a` and `b` take, per field, the newer
/// value, and see concurrent edits as conflicts.
pub fn dot_base(a: &Dotted, b: &Dotted) -> Fields {
    let mut base = Fields::new();
    for name in names(a, b) {
        let (va, vb) = (a.content.get(name), b.content.get(name));
        if va == vb {
            if let Some(v) = va {
                base.set(name.clone(), v.clone());
            }
            continue;
        }
        let loser = match newer(a, b, name) {
            Some(true) => vb.cloned(),
            Some(false) => va.cloned(),
            None => Some(Value::text(NO_BASE)),
        };
        if let Some(v) = loser {
            base.set(name.clone(), v);
        }
    }
    base
}

/// The dots of `merged`, the result of merging `a` and `b` into a version at `clock`: a value
/// taken from one side keeps that side's edit clock; a value neither held (a policy's blend)
/// gets `clock`.
pub fn merged_dots(merged: &Fields, a: &Dotted, b: &Dotted, clock: &VectorClock) -> FieldDots {
    let mut out = BTreeMap::new();
    for name in names(a, b) {
        let v = merged.get(name);
        let (va, vb) = (a.content.get(name), b.content.get(name));
        let (ea, eb) = (a.dots.get(name), b.dots.get(name));
        let dot = if va == vb && v == va {
            match (ea, eb) {
                (Some(x), Some(y)) if x == y => Some(x.clone()),
                (Some(x), Some(y)) => Some(x.merge(y)),
                (x, y) => x.or(y).cloned(),
            }
        } else if v == va {
            ea.cloned()
        } else if v == vb {
            eb.cloned()
        } else {
            Some(clock.clone())
        };
        if let Some(d) = dot {
            out.insert(name.clone(), d);
        }
    }
    FieldDots(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{merge, DeleteRule, FieldPolicy, Policy, Side};
    use crate::model::{ActorId, SystemId};

    fn clock(entries: &[(u8, u64)]) -> VectorClock {
        let mut c = VectorClock::new();
        for (a, n) in entries {
            c.set(ActorId(*a as u64), *n);
        }
        c
    }

    fn dots(pairs: &[(&str, &VectorClock)]) -> FieldDots {
        FieldDots(
            pairs
                .iter()
                .map(|(f, c)| (Arc::from(*f), (*c).clone()))
                .collect(),
        )
    }

    fn run(a: &Dotted, b: &Dotted) -> Fields {
        let base = dot_base(a, b);
        let sa = SystemId::new("a").unwrap();
        let sb = SystemId::new("b").unwrap();
        let out = merge(
            Some(&base),
            Side::new(&sa, Some(a.content), None),
            Side::new(&sb, Some(b.content), None),
            &Policy::new(FieldPolicy::Prefer(sa.clone()), DeleteRule::DeleteWins),
        );
        out.content.unwrap()
    }

    /// The case a merge base cannot get right: the common value of `city` existed only inside
    /// a third instance's merge. X edited city after seeing Y's phone; Y edited phone again
    /// without seeing X's city. Dots keep both one-sided edits, whatever the policy prefers.
    #[test]
    fn one_sided_edits_survive_without_a_common_ancestor() {
        let cx = clock(&[(1, 2), (2, 1)]);
        let cy = clock(&[(1, 1), (2, 2)]);
        let x = Fields::new().with("city", "Bergen").with("phone", "1");
        let y = Fields::new().with("city", "Oslo").with("phone", "2");
        let dx = dots(&[("city", &cx), ("phone", &clock(&[(2, 1)]))]);
        let dy = dots(&[("city", &clock(&[(1, 1)])), ("phone", &cy)]);
        let a = Dotted::new(&x, &cx, &dx);
        let b = Dotted::new(&y, &cy, &dy);
        let m = run(&a, &b);
        assert_eq!(m.get("city"), Some(&Value::text("Bergen")));
        assert_eq!(m.get("phone"), Some(&Value::text("2")));
        // Symmetric.
        let m2 = run(&b, &a);
        assert_eq!(m2.get("city"), Some(&Value::text("Bergen")));
        assert_eq!(m2.get("phone"), Some(&Value::text("2")));
        let md = merged_dots(&m, &a, &b, &cx.merge(&cy));
        assert_eq!(md.get("city"), Some(&cx));
        assert_eq!(md.get("phone"), Some(&cy));
    }

    #[test]
    fn concurrent_edits_go_to_the_policy_and_removals_count() {
        let cx = clock(&[(1, 1)]);
        let cy = clock(&[(2, 1)]);
        let x = Fields::new().with("city", "Bergen");
        let y = Fields::new().with("city", "Oslo").with("fax", "9");
        let dx = dots(&[("city", &cx)]);
        let dy = dots(&[("city", &cy), ("fax", &cy)]);
        let a = Dotted::new(&x, &cx, &dx);
        let b = Dotted::new(&y, &cy, &dy);
        let m = run(&a, &b);
        // Concurrent: the policy prefers system a.
        assert_eq!(m.get("city"), Some(&Value::text("Bergen")));
        // Added at b only: kept.
        assert_eq!(m.get("fax"), Some(&Value::text("9")));
        // A removal that has not been seen loses nothing it did not see; one that has wins.
        let cz = clock(&[(1, 1), (2, 2)]);
        let z = Fields::new().with("city", "Oslo");
        let dz = dots(&[("city", &cy), ("fax", &cz)]);
        let c = Dotted::new(&z, &cz, &dz);
        let m = run(&b, &c);
        assert_eq!(m.get("fax"), None, "the removal saw the value it removed");
    }

    #[test]
    fn advance_and_encoding_round_trip() {
        let c1 = clock(&[(1, 1)]);
        let c2 = clock(&[(1, 2), (3, 4)]);
        let f1 = Fields::new().with("a", "1").with("b", "2");
        let d1 = FieldDots::advance(None, Some(&f1), &c1);
        assert_eq!(d1.0.len(), 2);
        let f2 = Fields::new().with("a", "1").with("c", "3");
        let d2 = FieldDots::advance(Some((Some(&f1), &d1)), Some(&f2), &c2);
        assert_eq!(d2.get("a"), Some(&c1));
        assert_eq!(d2.get("b"), Some(&c2), "a removal is an edit");
        assert_eq!(d2.get("c"), Some(&c2));
        let mut buf = Vec::new();
        d2.encode_into(&mut buf);
        let mut pos = 0;
        assert_eq!(FieldDots::decode(&buf, &mut pos).unwrap(), d2);
        assert_eq!(pos, buf.len());
        for cut in 0..buf.len() {
            let mut p = 0;
            let _ = FieldDots::decode(&buf[..cut], &mut p);
        }
    }
}
