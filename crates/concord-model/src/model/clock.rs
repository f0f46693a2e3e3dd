//! Vector clocks over actors = (engine instance, system).
//!
//! A clock maps actors to counters. An actor is the pair of the engine instance that observed a
//! change and the system the change was observed in; only that instance ever increments that
//! actor, so counters never race. Entries are never trimmed: the number of entries is bounded by
//! the number of (instance, system) pairs in a deployment — a handful — not by the number of
//! edits, so there is no `revs_limit`-style pruning that could make two ordered versions look
//! concurrent (see `docs/design.md`, "Clocks").

use super::ids::{InstanceId, SystemId};
use super::varint;
use std::cmp::Ordering;
use std::fmt;

/// An (instance, system) pair, named.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Actor {
    pub instance: InstanceId,
    pub system: SystemId,
}

impl Actor {
    pub fn new(instance: InstanceId, system: SystemId) -> Self {
        Actor { instance, system }
    }
    /// The compact id used inside clocks.
    pub fn id(&self) -> ActorId {
        ActorId::of(&self.instance, &self.system)
    }
}

impl fmt::Display for Actor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.instance, self.system)
    }
}

/// 64 bits of blake3 over the actor's names. With the handful of actors a deployment has, the
/// chance that two collide is below 2^-50; `Store` keeps the id → names table for display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ActorId(pub u64);

impl ActorId {
    pub fn of(instance: &InstanceId, system: &SystemId) -> Self {
        let mut h = blake3::Hasher::new_derive_key("concord actor id v1");
        h.update(&(instance.as_str().len() as u64).to_le_bytes());
        h.update(instance.as_str().as_bytes());
        h.update(system.as_str().as_bytes());
        let mut b = [0u8; 8];
        b.copy_from_slice(&h.finalize().as_bytes()[..8]);
        ActorId(u64::from_le_bytes(b))
    }
}

/// How two clocks relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockOrdering {
    Equal,
    /// `self` happened before `other` (other dominates).
    Before,
    /// `self` happened after `other` (self dominates).
    After,
    /// Neither dominates: the versions were made without knowledge of each other.
    Concurrent,
}

/// A vector clock: entries sorted by actor id, every counter ≥ 1 (a missing entry is 0).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct VectorClock(Vec<(ActorId, u64)>);

/// Why clock bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid vector clock at byte {offset}: {reason}")]
pub struct ClockDecodeError {
    pub offset: usize,
    pub reason: &'static str,
}

impl VectorClock {
    pub fn new() -> Self {
        VectorClock(Vec::new())
    }

    /// The counter of `actor` (0 when absent).
    pub fn get(&self, actor: ActorId) -> u64 {
        match self.0.binary_search_by_key(&actor, |e| e.0) {
            Ok(i) => self.0[i].1,
            Err(_) => 0,
        }
    }

    /// Sets `actor`'s counter (0 removes it).
    pub fn set(&mut self, actor: ActorId, counter: u64) {
        match self.0.binary_search_by_key(&actor, |e| e.0) {
            Ok(i) if counter == 0 => {
                self.0.remove(i);
            }
            Ok(i) => self.0[i].1 = counter,
            Err(_) if counter == 0 => {}
            Err(i) => self.0.insert(i, (actor, counter)),
        }
    }

    /// Increments `actor`'s counter and returns the new value.
    pub fn increment(&mut self, actor: ActorId) -> u64 {
        let next = self
            .get(actor)
            .checked_add(1)
            .expect("clock counter overflow");
        self.set(actor, next);
        next
    }

    /// Pointwise maximum (least upper bound).
    pub fn merge(&self, other: &VectorClock) -> VectorClock {
        let (a, b) = (&self.0, &other.0);
        let mut out = Vec::with_capacity(a.len().max(b.len()));
        let (mut i, mut j) = (0, 0);
        while i < a.len() && j < b.len() {
            match a[i].0.cmp(&b[j].0) {
                Ordering::Less => {
                    out.push(a[i]);
                    i += 1;
                }
                Ordering::Greater => {
                    out.push(b[j]);
                    j += 1;
                }
                Ordering::Equal => {
                    out.push((a[i].0, a[i].1.max(b[j].1)));
                    i += 1;
                    j += 1;
                }
            }
        }
        out.extend_from_slice(&a[i..]);
        out.extend_from_slice(&b[j..]);
        VectorClock(out)
    }

    /// Compares two clocks (partial order).
    pub fn compare(&self, other: &VectorClock) -> ClockOrdering {
        let (a, b) = (&self.0, &other.0);
        let (mut less, mut greater) = (false, false);
        let (mut i, mut j) = (0, 0);
        while i < a.len() || j < b.len() {
            let ord = match (a.get(i), b.get(j)) {
                (Some(x), Some(y)) => x.0.cmp(&y.0),
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (None, None) => unreachable!(),
            };
            match ord {
                Ordering::Less => {
                    greater = true; // a has an entry b lacks
                    i += 1;
                }
                Ordering::Greater => {
                    less = true;
                    j += 1;
                }
                Ordering::Equal => {
                    match a[i].1.cmp(&b[j].1) {
                        Ordering::Less => less = true,
                        Ordering::Greater => greater = true,
                        Ordering::Equal => {}
                    }
                    i += 1;
                    j += 1;
                }
            }
            if less && greater {
                return ClockOrdering::Concurrent;
            }
        }
        match (less, greater) {
            (false, false) => ClockOrdering::Equal,
            (true, false) => ClockOrdering::Before,
            (false, true) => ClockOrdering::After,
            (true, true) => ClockOrdering::Concurrent,
        }
    }

    /// True when `self` ≥ `other` pointwise (equal or after).
    pub fn dominates(&self, other: &VectorClock) -> bool {
        matches!(
            self.compare(other),
            ClockOrdering::Equal | ClockOrdering::After
        )
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn entries(&self) -> &[(ActorId, u64)] {
        &self.0
    }

    /// Compact encoding: count, then per entry the actor id (8 bytes little-endian) and the
    /// counter (LEB128). About 10 bytes an entry.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        varint::put_u64(out, self.0.len() as u64);
        for (a, c) in &self.0 {
            out.extend_from_slice(&a.0.to_le_bytes());
            varint::put_u64(out, *c);
        }
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(1 + self.0.len() * 10);
        self.encode_into(&mut v);
        v
    }

    /// Decodes [`VectorClock::encode_into`]'s output; rejects unsorted, repeated or zero entries.
    pub fn decode(bytes: &[u8]) -> Result<(VectorClock, usize), ClockDecodeError> {
        let mut pos = 0;
        let bad = |offset, reason| ClockDecodeError { offset, reason };
        let n = varint::get_u64(bytes, &mut pos).map_err(|_| bad(0, "bad entry count"))?;
        if n > (bytes.len() as u64) / 9 {
            return Err(bad(0, "entry count larger than the input"));
        }
        let mut entries = Vec::with_capacity(n as usize);
        for _ in 0..n {
            let at = pos;
            let raw: [u8; 8] = bytes
                .get(pos..pos + 8)
                .ok_or(bad(at, "unexpected end"))?
                .try_into()
                .expect("8 bytes");
            pos += 8;
            let actor = ActorId(u64::from_le_bytes(raw));
            let c = varint::get_u64(bytes, &mut pos).map_err(|_| bad(pos, "bad counter"))?;
            if c == 0 {
                return Err(bad(at, "zero counter"));
            }
            if let Some(&(prev, _)) = entries.last() {
                if prev >= actor {
                    return Err(bad(at, "actors out of order or repeated"));
                }
            }
            entries.push((actor, c));
        }
        Ok((VectorClock(entries), pos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn actor(i: &str, s: &str) -> ActorId {
        ActorId::of(&InstanceId::new(i).unwrap(), &SystemId::new(s).unwrap())
    }

    #[test]
    fn orders_and_merges() {
        let (a, b) = (actor("n1", "sf"), actor("n1", "erp"));
        let mut x = VectorClock::new();
        x.increment(a);
        let mut y = x.clone();
        assert_eq!(x.compare(&y), ClockOrdering::Equal);
        y.increment(b);
        assert_eq!(x.compare(&y), ClockOrdering::Before);
        assert_eq!(y.compare(&x), ClockOrdering::After);
        x.increment(a);
        assert_eq!(x.compare(&y), ClockOrdering::Concurrent);
        let m = x.merge(&y);
        assert_eq!(m.get(a), 2);
        assert_eq!(m.get(b), 1);
        assert!(m.dominates(&x) && m.dominates(&y));
        let (d, used) = VectorClock::decode(&m.to_bytes()).unwrap();
        assert_eq!(d, m);
        assert_eq!(used, m.to_bytes().len());
    }

    #[test]
    fn decode_rejects_garbage() {
        assert!(VectorClock::decode(&[]).is_err());
        assert!(VectorClock::decode(&[1, 0, 0]).is_err());
        let mut c = VectorClock::new();
        c.set(ActorId(5), 1);
        c.set(ActorId(3), 1);
        let mut b = c.to_bytes();
        // swap the two entries: unsorted
        let first: Vec<u8> = b[1..10].to_vec();
        let second: Vec<u8> = b[10..19].to_vec();
        b[1..10].copy_from_slice(&second);
        b[10..19].copy_from_slice(&first);
        assert!(VectorClock::decode(&b).is_err());
    }
}
