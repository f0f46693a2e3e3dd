use super::*;
use concord_model::model::{ActorId, Fields, Timestamp, Value, VectorClock};
use proptest::prelude::*;

const KEY: &[u8] = b"a bundle secret shared by both sites";

fn inst(s: &str) -> InstanceId {
    InstanceId::new(s).unwrap()
}

fn sys(s: &str) -> SystemId {
    SystemId::new(s).unwrap()
}

fn version(name: &str, n: u64, tomb: bool) -> Version {
    let mut clock = VectorClock::new();
    clock.set(ActorId::of(&inst("site-a"), &sys("crm.Account")), n);
    clock.set(ActorId::of(&inst("site-b"), &sys("erp.customers")), n + 1);
    let content = (!tomb).then(|| {
        Fields::new()
            .with("name", name)
            .with("amount", Value::decimal_str("12.50").unwrap())
            .with("seen", Value::DateTime(Timestamp(1_717_200_000_000)))
    });
    Version::new(
        content,
        clock,
        Some(Timestamp(1_717_200_000_000 + n as i64)),
        Some(sys("crm.Account")),
    )
}

fn sample() -> Bundle {
    Bundle {
        sender: inst("site-a"),
        recipient: inst("site-b"),
        number: 42,
        acks: vec![(1, 19), (21, 23)],
        entities: (0..25)
            .map(|i| BundleEntity {
                entity: EntityId([i as u8; 16]),
                head: version(&format!("Customer {i}"), i, i % 7 == 3),
                xrefs: vec![
                    (
                        sys("crm.Account"),
                        Key::new(format!("001000000000{i:03}AAA")),
                    ),
                    (sys("erp.customers"), Key::new(format!("C{i}"))),
                ],
                jobs: vec!["accounts".into()],
                dots: {
                    let h = version(&format!("Customer {i}"), i, i % 7 == 3);
                    concord_model::core::dots::FieldDots::advance(
                        None,
                        h.content.as_ref(),
                        &h.clock,
                    )
                },
            })
            .collect(),
    }
}

#[test]
fn round_trip_and_compression() {
    let b = sample();
    let bytes = encode(&b, KEY);
    assert_eq!(decode(&bytes, KEY).unwrap(), b);
    assert_eq!(&bytes[..8], MAGIC);
    // The body is compressed: 25 similar records take far less than their raw size.
    let raw: usize = b
        .entities
        .iter()
        .map(|e| {
            let mut v = Vec::new();
            encode_version(&e.head, &mut v);
            v.len() + 16 + 40
        })
        .sum();
    assert!(bytes.len() < raw, "{} bytes for {raw} raw", bytes.len());
}

#[test]
fn empty_bundle_round_trips() {
    let b = Bundle {
        sender: inst("solo"),
        recipient: inst("other"),
        number: 1,
        acks: vec![],
        entities: vec![],
    };
    assert_eq!(decode(&encode(&b, KEY), KEY).unwrap(), b);
}

#[test]
fn every_truncation_is_refused() {
    let bytes = encode(&sample(), KEY);
    for n in 0..bytes.len() {
        let e = decode(&bytes[..n], KEY).unwrap_err();
        assert!(
            matches!(e, BundleError::NotABundle | BundleError::Truncated { .. }),
            "cut at {n}: {e}"
        );
    }
}

#[test]
fn every_flipped_byte_is_refused() {
    let bytes = encode(&sample(), KEY);
    for i in 0..bytes.len() {
        let mut b = bytes.clone();
        b[i] ^= 0x40;
        let e = decode(&b, KEY).unwrap_err();
        // Header bytes have their own errors; anything else is caught by the MAC.
        let expected = match i {
            0..8 => matches!(e, BundleError::NotABundle),
            8..10 => matches!(e, BundleError::Format(_)),
            10..18 => matches!(e, BundleError::Foreign { .. }),
            18..42 => e == BundleError::Tampered, // the nonce
            42..50 => matches!(e, BundleError::Truncated { .. } | BundleError::Tampered),
            _ => e == BundleError::Tampered,
        };
        assert!(expected, "byte {i}: {e}");
    }
}

#[test]
fn foreign_key_extra_bytes_and_other_formats() {
    let bytes = encode(&sample(), KEY);
    let e = decode(&bytes, b"another deployment's secret").unwrap_err();
    assert!(matches!(e, BundleError::Foreign { .. }), "{e}");
    assert!(e.to_string().contains("another key"), "{e}");
    let mut longer = bytes.clone();
    longer.push(0);
    assert_eq!(decode(&longer, KEY).unwrap_err(), BundleError::Tampered);
    assert_eq!(
        decode(b"PK\x03\x04 a zip file, not ours", KEY).unwrap_err(),
        BundleError::NotABundle
    );
    let mut v4 = bytes.clone();
    v4[9] = 4;
    assert_eq!(decode(&v4, KEY).unwrap_err(), BundleError::Format(4));
    assert!(BundleError::Format(4).to_string().contains("format 4"));
}

/// Bundles carry customer data: the body is encrypted (XChaCha20-Poly1305, a nonce per bundle),
/// so the file shows nothing of it without the key; format 2 (not encrypted) is still read.
#[test]
fn bodies_are_encrypted_and_format_2_is_still_read() {
    let b = sample();
    let one = encode(&b, KEY);
    let two = encode(&b, KEY);
    assert_ne!(one, two, "a nonce per bundle");
    assert_eq!(decode(&one, KEY).unwrap(), b);
    assert_eq!(decode(&two, KEY).unwrap(), b);
    assert_eq!(u16::from_be_bytes([one[8], one[9]]), FORMAT);
    // Without the key the body is noise: it does not even inflate, and no value shows.
    let body = &one[HEADER_V3..one.len() - MAC];
    let plain = miniz_oxide::inflate::decompress_to_vec(body);
    assert!(
        plain.map_or(true, |p| !p.windows(8).any(|w| w == b"Customer")),
        "the encrypted body must not inflate to the records"
    );
    let v2 = encode_v2(&b, KEY);
    let inflated = miniz_oxide::inflate::decompress_to_vec(&v2[HEADER_V2..v2.len() - MAC]).unwrap();
    assert!(
        inflated.windows(8).any(|w| w == b"Customer"),
        "format 2 was readable by anyone"
    );
    assert_eq!(decode(&v2, KEY).unwrap(), b);
}

#[test]
fn format_1_bundles_are_still_read() {
    // Without entities the two formats' bodies are the same bytes.
    let mut b = sample();
    b.entities.clear();
    let out = seal(&encode_body(&b), KEY, FORMAT_V1);
    assert_eq!(decode(&out, KEY).unwrap(), b);
}

#[test]
fn a_valid_mac_over_a_bad_body_is_still_refused_cleanly() {
    // A sender with the right key but a broken encoder: the body is checked after the MAC.
    assert!(matches!(
        decode(&seal_body(&[0xff; 40], KEY), KEY).unwrap_err(),
        BundleError::Malformed(_)
    ));
    let junk = miniz_oxide::deflate::compress_to_vec(&[0xff; 40], 6);
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&FORMAT_V2.to_be_bytes());
    out.extend_from_slice(&key_id(KEY));
    out.extend_from_slice(&(junk.len() as u64).to_be_bytes());
    out.extend_from_slice(&junk);
    let m = mac(KEY, &out);
    out.extend_from_slice(&m);
    assert!(matches!(
        decode(&out, KEY).unwrap_err(),
        BundleError::Malformed(_)
    ));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn random_bundles_round_trip(
        number in 1u64..1000,
        names in proptest::collection::vec("[ -~]{0,30}", 0..20),
        acks in proptest::collection::vec((0u64..1000, 0u64..10), 0..4),
        recipient in "[a-z][a-z0-9-]{0,10}",
    ) {
        let b = Bundle {
            sender: inst("sender-1"),
            recipient: inst(&recipient),
            number,
            acks: acks.iter().map(|(f, n)| (*f, f + n)).collect(),
            entities: names
                .iter()
                .enumerate()
                .map(|(i, n)| BundleEntity {
                    entity: EntityId([(i * 7) as u8; 16]),
                    head: version(n, i as u64 + 1, n.len() % 5 == 0),
                    xrefs: vec![(sys("files.report"), Key::new(n.clone()))],
                    jobs: vec![n.clone(), "j".into()],
                    dots: Default::default(),
                })
                .collect(),
        };
        prop_assert_eq!(decode(&encode(&b, KEY), KEY).unwrap(), b);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&bytes);
        let _ = decode(&b, KEY);
    }
}
