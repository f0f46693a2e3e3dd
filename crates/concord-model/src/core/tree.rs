//! The hash tree over keys used by drift detection and by instance-to-instance reconcile: each
//! record has a 64-bit key hash (its bucket is the top bits) and a 64-bit digest of its content;
//! a bucket is summed as the count and XOR of its digests. Two sides compare bucket sums and
//! descend only into the buckets that differ. Pure: the hashes come from elsewhere.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One record's hashes: of its key (which bucket it falls in: the top bits) and of its content.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RowDigest {
    pub key_hash: i64,
    pub row: i64,
}

/// One bucket: the records whose key hash starts with `bucket` (the top bits, as a signed
/// number), how many and the XOR of their digests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketSum {
    pub bucket: i64,
    pub count: i64,
    pub xor: i64,
}

/// Records per bucket the tree aims at.
pub const PER_BUCKET: usize = 16;

/// The bucket of a key hash at depth `bits` (1..=32): its top bits, sign kept (an arithmetic
/// shift, as the databases compute it).
pub fn bucket_of(key_hash: i64, bits: u32) -> i64 {
    key_hash >> (64 - bits.clamp(1, 32))
}

/// The bucket depth for `n` records: about `PER_BUCKET` records per bucket, 1..=24 bits.
pub fn bucket_bits(n: usize) -> u32 {
    let buckets = n.div_ceil(PER_BUCKET).max(2);
    (usize::BITS - (buckets - 1).leading_zeros()).clamp(1, 24)
}

/// The sums of every non-empty bucket at depth `bits`, in bucket order.
pub fn sums<'a>(digests: impl IntoIterator<Item = &'a RowDigest>, bits: u32) -> Vec<BucketSum> {
    let mut by: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
    for d in digests {
        let s = by.entry(bucket_of(d.key_hash, bits)).or_default();
        s.0 += 1;
        s.1 ^= d.row;
    }
    by.into_iter()
        .map(|(bucket, (count, xor))| BucketSum { bucket, count, xor })
        .collect()
}

/// The buckets whose sums differ between `a` and `b` (both in bucket order, empty buckets left
/// out), buckets only one side has included; in bucket order.
pub fn differing(a: &[BucketSum], b: &[BucketSum]) -> Vec<i64> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x.bucket == y.bucket => {
                if x != y {
                    out.push(x.bucket);
                }
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x.bucket < y.bucket => {
                out.push(x.bucket);
                i += 1;
            }
            (Some(_), Some(y)) => {
                out.push(y.bucket);
                j += 1;
            }
            (Some(x), None) => {
                out.push(x.bucket);
                i += 1;
            }
            (None, Some(y)) => {
                out.push(y.bucket);
                j += 1;
            }
            (None, None) => break,
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn bits_follow_the_size() {
        assert_eq!(bucket_bits(0), 1);
        assert_eq!(bucket_bits(20), 1);
        assert_eq!(bucket_bits(33), 2);
        assert_eq!(bucket_bits(30_000), 11);
        assert_eq!(bucket_bits(1_000_000), 16);
        assert_eq!(bucket_bits(usize::MAX / 2), 24);
    }

    #[test]
    fn buckets_are_the_top_bits_sign_kept() {
        assert_eq!(bucket_of(-1, 4), -1);
        assert_eq!(bucket_of(i64::MIN, 4), -8);
        assert_eq!(bucket_of(i64::MAX, 4), 7);
        assert_eq!(bucket_of(0x1234_5678_9abc_def0, 16), 0x1234);
    }

    fn rows() -> impl Strategy<Value = Vec<RowDigest>> {
        proptest::collection::btree_map(any::<i64>(), any::<i64>(), 0..200).prop_map(|m| {
            m.into_iter()
                .map(|(key_hash, row)| RowDigest { key_hash, row })
                .collect()
        })
    }

    proptest! {
        /// A bucket that holds a changed, added or removed record is always found, and only
        /// buckets that hold one are reported.
        #[test]
        fn exactly_the_changed_buckets_differ(
            a in rows(),
            edits in proptest::collection::vec((any::<usize>(), any::<i64>(), 0u8..3), 0..10),
            bits in 1u32..12,
        ) {
            let mut b = a.clone();
            for (i, v, kind) in edits {
                match kind {
                    0 if !b.is_empty() => { let k = i % b.len(); b[k].row ^= v | 1; }
                    1 if !b.is_empty() => { b.remove(i % b.len()); }
                    _ => {
                        if !b.iter().any(|d| d.key_hash == v) {
                            b.push(RowDigest { key_hash: v, row: i as i64 });
                        }
                    }
                }
            }
            let ma: BTreeMap<i64, i64> = a.iter().map(|d| (d.key_hash, d.row)).collect();
            let mb: BTreeMap<i64, i64> = b.iter().map(|d| (d.key_hash, d.row)).collect();
            let mut changed: Vec<i64> = ma.keys().chain(mb.keys())
                .filter(|k| ma.get(k) != mb.get(k))
                .map(|k| bucket_of(*k, bits))
                .collect();
            changed.sort();
            changed.dedup();
            let got = differing(&sums(&a, bits), &sums(&b, bits));
            // A single change always shows; several in one bucket could cancel only if their
            // XORs and counts both cancel, which random 64-bit values do not.
            prop_assert_eq!(got, changed);
        }
    }
}
