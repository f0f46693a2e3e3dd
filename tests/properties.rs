//! Property tests for the pure core: clock laws, canonical encoding, hash stability, diff/apply,
//! merge symmetry and the one-sided-edit guarantee.

use chrono::NaiveDate;
use concord::core::{apply, diff, merge, DeleteRule, FieldPolicy, Policy, Side};
use concord::model::canonical;
use concord::model::{ActorId, ClockOrdering, Fields, SystemId, Timestamp, Value, VectorClock};
use proptest::prelude::*;
use rust_decimal::Decimal;

fn json_strategy() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i32>().prop_map(serde_json::Value::from),
        "[a-z]{0,6}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

fn value_strategy() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::Int),
        (any::<i64>(), 0u32..12).prop_map(|(m, s)| Value::Decimal(Decimal::new(m, s))),
        "\\PC{0,12}".prop_map(Value::Text),
        "[a-e\u{301}\u{308} ]{0,8}".prop_map(Value::Text),
        (-100_000i64..100_000).prop_map(|d| Value::Date(
            NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + chrono::Duration::days(d)
        )),
        (-10_000_000_000_000i64..10_000_000_000_000).prop_map(|ms| Value::DateTime(Timestamp(ms))),
        json_strategy().prop_map(Value::Json),
        prop::collection::vec(any::<u8>(), 0..16).prop_map(Value::Bytes),
    ]
}

fn fields_strategy() -> impl Strategy<Value = Fields> {
    prop::collection::vec(("[a-zA-Z_]{1,8}", value_strategy()), 0..10)
        .prop_map(|v| v.into_iter().collect::<Fields>())
}

/// Small field names and values, so that independent records share fields and values often.
fn small_fields() -> impl Strategy<Value = Fields> {
    prop::collection::btree_map(0usize..6, 0i64..3, 0..6).prop_map(|m| {
        m.into_iter()
            .map(|(k, v)| (format!("f{k}"), Value::Int(v)))
            .collect::<Fields>()
    })
}

fn clock_strategy() -> impl Strategy<Value = VectorClock> {
    prop::collection::btree_map(0u64..6, 1u64..5, 0..5).prop_map(|m| {
        let mut c = VectorClock::new();
        for (a, n) in m {
            c.set(ActorId(a), n);
        }
        c
    })
}

fn sys(s: &str) -> SystemId {
    SystemId::new(s).unwrap()
}

fn policy_strategy() -> impl Strategy<Value = Policy> {
    let fp = prop_oneof![
        Just(FieldPolicy::Newest),
        Just(FieldPolicy::Manual),
        Just(FieldPolicy::Prefer(sys("a"))),
        Just(FieldPolicy::Prefer(sys("b"))),
    ];
    let rule = prop_oneof![
        Just(DeleteRule::DeleteWins),
        Just(DeleteRule::UpdateWins),
        Just(DeleteRule::Manual)
    ];
    (fp.clone(), rule, prop::option::of((0usize..6, fp))).prop_map(|(d, r, per)| {
        let p = Policy::new(d, r);
        match per {
            Some((f, fp)) => p.with_field(format!("f{f}"), fp),
            None => p,
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    // ---- clocks ----
    #[test]
    fn clock_merge_is_commutative_associative_idempotent(a in clock_strategy(), b in clock_strategy(), c in clock_strategy()) {
        prop_assert_eq!(a.merge(&b), b.merge(&a));
        prop_assert_eq!(a.merge(&b).merge(&c), a.merge(&b.merge(&c)));
        prop_assert_eq!(a.merge(&a), a.clone());
    }

    #[test]
    fn clock_compare_agrees_with_merge(a in clock_strategy(), b in clock_strategy()) {
        let m = a.merge(&b);
        let expected = match (m == b, m == a) {
            (true, true) => ClockOrdering::Equal,
            (true, false) => ClockOrdering::Before,
            (false, true) => ClockOrdering::After,
            (false, false) => ClockOrdering::Concurrent,
        };
        prop_assert_eq!(a.compare(&b), expected);
        let flipped = match expected {
            ClockOrdering::Before => ClockOrdering::After,
            ClockOrdering::After => ClockOrdering::Before,
            o => o,
        };
        prop_assert_eq!(b.compare(&a), flipped);
        prop_assert!(m.dominates(&a) && m.dominates(&b));
    }

    #[test]
    fn clock_increment_moves_strictly_forward(a in clock_strategy(), actor in 0u64..8) {
        let mut b = a.clone();
        b.increment(ActorId(actor));
        prop_assert_eq!(b.compare(&a), ClockOrdering::After);
    }

    #[test]
    fn clock_encoding_round_trips(a in clock_strategy()) {
        let bytes = a.to_bytes();
        let (d, used) = VectorClock::decode(&bytes).unwrap();
        prop_assert_eq!(d, a);
        prop_assert_eq!(used, bytes.len());
    }

    // ---- canonical encoding and hash ----
    #[test]
    fn canonical_round_trips(f in fields_strategy()) {
        let bytes = f.canonical_bytes();
        let back = canonical::decode(&bytes).unwrap();
        prop_assert_eq!(&back, &f);
        prop_assert_eq!(back.canonical_bytes(), bytes, "one record, one encoding");
    }

    #[test]
    fn hash_is_independent_of_field_order(pairs in prop::collection::vec(("[a-z]{1,6}", value_strategy()), 0..10), seed in any::<u64>()) {
        // Later duplicates win in both orders: dedupe first, keeping the last occurrence.
        let mut dedup = std::collections::BTreeMap::new();
        for (k, v) in pairs { dedup.insert(k, v); }
        let forward: Vec<(String, Value)> = dedup.into_iter().collect();
        let mut shuffled = forward.clone();
        let n = shuffled.len();
        if n > 1 {
            let mut s = seed;
            for i in (1..n).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                shuffled.swap(i, (s >> 33) as usize % (i + 1));
            }
        }
        let a: Fields = forward.into_iter().collect();
        let b: Fields = shuffled.into_iter().collect();
        prop_assert_eq!(a.content_hash(), b.content_hash());
    }

    #[test]
    fn equal_business_values_hash_equal(m in any::<i64>(), s in 0u32..10, extra in 0u32..6, ms in -1_000_000_000_000i64..1_000_000_000_000, off_h in -12i32..14) {
        // The same decimal with trailing zeros; the same instant written in another zone.
        let d1 = Decimal::new(m, s);
        let mut d2 = d1;
        d2.rescale(s + extra);
        prop_assume!(d2 == d1 && d2.scale() == s + extra);
        let t = Timestamp(ms).to_chrono().unwrap();
        let zone = chrono::FixedOffset::east_opt(off_h * 3600).unwrap();
        let written = t.with_timezone(&zone).to_rfc3339();
        let a = Fields::new().with("amount", Value::Decimal(d1)).with("at", Value::DateTime(Timestamp(ms)));
        let b = Fields::new().with("at", Value::datetime_str(&written).unwrap()).with("amount", Value::Decimal(d2));
        prop_assert_eq!(a.content_hash(), b.content_hash());
    }

    #[test]
    fn decoder_never_panics_on_mutations(f in fields_strategy(), pos in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut bytes = f.canonical_bytes();
        let i = pos.index(bytes.len());
        bytes[i] = byte;
        if let Ok(d) = canonical::decode(&bytes) {
            // Whatever it accepts is canonical.
            prop_assert_eq!(d.canonical_bytes(), bytes);
        }
    }

    // ---- diff ----
    #[test]
    fn apply_diff_reconstructs(base in prop::option::of(fields_strategy()), x in prop::option::of(fields_strategy())) {
        let d = diff(base.as_ref(), x.as_ref());
        prop_assert_eq!(apply(base.as_ref(), &d), x);
    }

    // ---- merge ----
    #[test]
    fn merge_is_symmetric(base in prop::option::of(small_fields()), a in prop::option::of(small_fields()), b in prop::option::of(small_fields()),
                          ta in prop::option::of(0i64..3), tb in prop::option::of(0i64..3), p in policy_strategy()) {
        let (sa, sb) = (sys("a"), sys("b"));
        let l = Side::new(&sa, a.as_ref(), ta.map(Timestamp));
        let r = Side::new(&sb, b.as_ref(), tb.map(Timestamp));
        prop_assert_eq!(merge(base.as_ref(), l, r, &p), merge(base.as_ref(), r, l, &p));
    }

    #[test]
    fn merge_of_identical_sides_is_identity(x in prop::option::of(small_fields()), p in policy_strategy()) {
        let (sa, sb) = (sys("a"), sys("b"));
        let out = merge(x.as_ref(), Side::new(&sa, x.as_ref(), None), Side::new(&sb, x.as_ref(), None), &p);
        prop_assert_eq!(out.content, x);
        prop_assert!(out.conflicts.is_empty());
    }

    #[test]
    fn one_sided_field_edits_are_never_lost(base in small_fields(), a in small_fields(), b in small_fields(), p in policy_strategy()) {
        let (sa, sb) = (sys("a"), sys("b"));
        let out = merge(Some(&base), Side::new(&sa, Some(&a), None), Side::new(&sb, Some(&b), None), &p);
        let merged = out.content.expect("no deletes here");
        for i in 0..6 {
            let f = format!("f{i}");
            let (vb, va, vbb) = (base.get(&f), a.get(&f), b.get(&f));
            if va != vb && vbb == vb {
                prop_assert_eq!(merged.get(&f), va, "edit of {} on a lost", f);
            }
            if vbb != vb && va == vb {
                prop_assert_eq!(merged.get(&f), vbb, "edit of {} on b lost", f);
            }
            if va == vbb {
                prop_assert_eq!(merged.get(&f), va, "agreed value of {} lost", f);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Whatever the text, a quoted SOQL literal parses back to exactly that text: no input can
    /// end the literal early and inject query syntax.
    #[test]
    fn soql_quoting_cannot_be_escaped(s in "\\PC{0,20}|['\\\\%_ ]{0,10}") {
        // As a LIKE pattern, the escaped text matches itself (and, with a wildcard, its
        // extensions) but not a text where a wildcard would have matched something else.
        use concord::connector::salesforce::soql::{quote_like, quote_like_prefix};
        use concord::sandbox::soql::like;
        for (lit, probe, want) in [
            (quote_like(&s), s.clone(), true),
            (quote_like_prefix(&s), format!("{s}tail"), true),
            (quote_like(&s), format!("{s}x"), false),
        ] {
            let like_q = format!("SELECT Id FROM Account WHERE Name LIKE {lit}");
            match concord::sandbox::soql::parse(&like_q).unwrap().filter {
                Some(concord::sandbox::soql::Cond::Like { pattern, .. }) => {
                    prop_assert_eq!(like(&probe, &pattern), want, "{} against {:?}", lit, probe)
                }
                other => prop_assert!(false, "{:?}", other),
            }
        }
        use concord::connector::salesforce::soql::quote;
        use concord::sandbox::soql::{parse, Cond, Literal};
        let q = format!("SELECT Id FROM Account WHERE Name = {} LIMIT 1", quote(&s));
        let parsed = parse(&q).expect("quoted literal parses");
        prop_assert_eq!(parsed.limit, Some(1));
        match parsed.filter {
            Some(Cond::Cmp { value: Literal::Str(v), .. }) => {
                prop_assert_eq!(v, s);
            }
            other => prop_assert!(false, "{:?}", other),
        }
    }
}

/// The connector's SOQL literals parse back, in the sandbox, to exactly the text quoted.
#[test]
fn quoting_round_trips_through_the_parser() {
    use concord::connector::salesforce::soql::quote;
    use concord::sandbox::soql::{parse, Cond, Literal};
    for s in [
        "plain",
        "O'Brien",
        "back\\slash",
        "line\nbreak",
        "' OR Name != '",
    ] {
        let q = format!("SELECT Id FROM Account WHERE Name = {}", quote(s));
        let parsed = parse(&q).unwrap();
        let Some(Cond::Cmp {
            value: Literal::Str(v),
            ..
        }) = parsed.filter
        else {
            panic!("{q}")
        };
        assert_eq!(v, s, "an injected quote stays inside the literal");
    }
}
