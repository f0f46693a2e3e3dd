//! The Salesforce connector's Bulk API 2.0 paths (ingest above the threshold, query for large
//! reads), deletes from getDeleted (hard deletes included) and from queryAll beyond its window,
//! the refresh_token and JWT bearer grants, answers lost to dropped connections, and TLS with
//! an extra trusted authority — all against the in-process sandbox.

use crate::sf_common;

use concord::connector::memory::MemorySystem;
use concord::connector::salesforce::SalesforceConnector;
use concord::connector::{Connector, WriteErrorKind, WriteOp, WriteResult};
use concord::model::{ContentHash, Fields, Key, SystemId};
use concord::sandbox::launch::Options;
use concord::sandbox::server::{Faults, Settings};
use sf_common::{count, creates, env_var, launched, read_all, sandbox};
use std::collections::BTreeMap;
use std::sync::Arc;

fn sf() -> SystemId {
    SystemId::new("sf").unwrap()
}

fn hashes(changes: &[concord::connector::Change]) -> BTreeMap<String, ContentHash> {
    changes
        .iter()
        .filter_map(|c| Some((c.key.to_string(), c.fields.as_ref()?.content_hash())))
        .collect()
}

#[tokio::test]
async fn bulk_ingest_above_the_threshold_maps_results_back() {
    let (sb, mut cfg) = sandbox().await;
    cfg.bulk_threshold = 100;
    let c = SalesforceConnector::connect(sf(), cfg).await.unwrap();
    let erp = SystemId::new("erp").unwrap();
    let mut ops = creates(250, &erp);
    if let WriteOp::Upsert { fields, .. } = &mut ops[7] {
        fields.set("Name", "x".repeat(300)); // too long: rejected by Salesforce
    }
    let before = c.calls();
    let res = c.write(ops).await.unwrap();
    let calls = c.calls() - before;
    let ok = res
        .iter()
        .filter(|r| matches!(r, WriteResult::Ok { .. }))
        .count();
    assert_eq!(ok, 249);
    match &res[7] {
        WriteResult::Err { kind, message } => {
            assert_eq!(*kind, WriteErrorKind::Rejected);
            assert!(message.starts_with("STRING_TOO_LONG"), "{message}");
        }
        other => panic!("record 7 should fail: {other:?}"),
    }
    let counters = sb.counters();
    assert_eq!(counters["bulk.ingest.create"], 1);
    assert!(
        !counters.contains_key("composite.sobjects.upsert"),
        "no collections used"
    );
    assert!(
        calls <= 8,
        "create, upload, close, polls, two result files: {calls} calls"
    );
    assert_eq!(count(&sb, "Account"), 249);

    // Updates and deletes of a large group go through bulk too; results come back by Id.
    let (all, _) = read_all(&c, None).await;
    let updates: Vec<WriteOp> = all
        .iter()
        .take(150)
        .map(|ch| WriteOp::Upsert {
            entity: ch.entity_hint.unwrap(),
            key: Some(ch.key.clone()),
            fields: Fields::new().with("Name", format!("Updated {}", ch.key)),
        })
        .collect();
    let res = c.write(updates).await.unwrap();
    assert!(
        res.iter().all(|r| matches!(r, WriteResult::Ok { .. })),
        "{:?}",
        res.iter().find(|r| !matches!(r, WriteResult::Ok { .. }))
    );
    let first = all[0].key.as_str().to_string();
    sb.org.lock().unwrap().delete("Account", &first).unwrap();
    let deletes: Vec<WriteOp> = all
        .iter()
        .take(120)
        .map(|ch| WriteOp::Delete {
            entity: ch.entity_hint.unwrap(),
            key: ch.key.clone(),
        })
        .collect();
    let res = c.write(deletes).await.unwrap();
    assert!(
        res.iter().all(|r| matches!(r, WriteResult::Ok { .. })),
        "deleting the already deleted one is done too"
    );
    assert_eq!(count(&sb, "Account"), 129);
    assert_eq!(sb.counters()["bulk.ingest.create"], 3);
    let name: serde_json::Value = sb
        .org
        .lock()
        .unwrap()
        .get("Account", all[130].key.as_str())
        .unwrap()
        .fields["Name"]
        .clone();
    assert_eq!(name, serde_json::json!(format!("Updated {}", all[130].key)));
}

#[tokio::test]
async fn large_reads_continue_as_a_bulk_query_with_identical_values() {
    let (sb, mut cfg) = sandbox().await;
    cfg.bulk_threshold = 1000;
    let w = SalesforceConnector::connect(sf(), cfg.clone())
        .await
        .unwrap();
    w.write(creates(2500, &SystemId::new("erp").unwrap()))
        .await
        .unwrap();
    // REST only.
    cfg.bulk_read_threshold = usize::MAX;
    let rest = SalesforceConnector::connect(sf(), cfg.clone())
        .await
        .unwrap();
    let before = rest.calls();
    let (a, _) = read_all(&rest, None).await;
    assert_eq!(
        rest.calls() - before,
        14,
        "getUpdated (the server's bound), then ceil(2500/200) pages"
    );
    // First page by REST, the rest as one Bulk API query job.
    cfg.bulk_read_threshold = 1000;
    let bulk = SalesforceConnector::connect(sf(), cfg).await.unwrap();
    let before = bulk.calls();
    let (b, cursor) = read_all(&bulk, None).await;
    let calls = bulk.calls() - before;
    assert_eq!(hashes(&a).len(), 2500);
    assert_eq!(
        b.len(),
        2500,
        "no record reported twice across the REST page and the job"
    );
    assert_eq!(
        hashes(&a),
        hashes(&b),
        "REST and Bulk give the same values, byte for byte"
    );
    assert!(
        calls <= 6,
        "getUpdated, one page, job create, poll(s), one result page: {calls}"
    );
    assert_eq!(sb.counters()["bulk.query.create"], 1);
    assert!(b.iter().all(|ch| ch.entity_hint.is_some()));
    // And the read goes on incrementally from there.
    assert!(cursor.is_some());
}

#[tokio::test]
async fn deletes_come_from_get_deleted_and_from_query_all_beyond_its_window() {
    let (sb, cfg) = sandbox().await;
    let c = SalesforceConnector::connect(sf(), cfg).await.unwrap();
    c.write(creates(6, &SystemId::new("erp").unwrap()))
        .await
        .unwrap();
    let (all, cursor) = read_all(&c, None).await;
    let keys: Vec<Key> = all.iter().map(|ch| ch.key.clone()).collect();
    c.write(vec![
        WriteOp::Delete {
            entity: all[0].entity_hint.unwrap(),
            key: keys[0].clone(),
        },
        WriteOp::Delete {
            entity: all[1].entity_hint.unwrap(),
            key: keys[1].clone(),
        },
    ])
    .await
    .unwrap();
    sb.org
        .lock()
        .unwrap()
        .hard_delete("Account", keys[2].as_str())
        .unwrap();
    let q_before = sb.counters().get("queryAll").copied().unwrap_or(0);
    let (changes, _) = read_all(&c, cursor.clone()).await;
    let mut gone: Vec<String> = changes
        .iter()
        .filter(|ch| ch.fields.is_none())
        .map(|ch| ch.key.to_string())
        .collect();
    gone.sort();
    let mut want: Vec<String> = keys[..3].iter().map(|k| k.to_string()).collect();
    want.sort();
    assert_eq!(gone, want, "soft and hard deletes, from getDeleted");
    assert!(sb.counters()["getDeleted"] >= 1);
    assert_eq!(
        sb.counters().get("queryAll").copied().unwrap_or(0),
        q_before,
        "no queryAll needed"
    );

    // Twenty days later (the org's clock), the same cursor is beyond getDeleted's 15 days: the
    // recycle bin (queryAll) still has the soft deletes; the hard delete is only found by
    // `concord reconcile`.
    sb.org.lock().unwrap().clock_offset_ms = 20 * 86_400_000;
    let (changes, _) = read_all(&c, cursor).await;
    let mut gone: Vec<String> = changes
        .iter()
        .filter(|ch| ch.fields.is_none())
        .map(|ch| ch.key.to_string())
        .collect();
    gone.sort();
    let mut want: Vec<String> = keys[..2].iter().map(|k| k.to_string()).collect();
    want.sort();
    assert_eq!(gone, want);
    assert!(
        sb.counters()["queryAll"] > q_before,
        "fell back to queryAll"
    );
}

/// An RSA key pair from openssl: (private PEM, public PEM).
fn rsa_pair() -> (String, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = crate::common::rsa_pair(dir.path(), "k");
    (String::from_utf8(private).unwrap(), public)
}

#[tokio::test]
async fn refresh_token_and_jwt_bearer_grants_reauthenticate_after_expiry() {
    let (private, public) = rsa_pair();
    let d = Settings::default();
    let settings = Settings {
        token: "unused".into(),
        jwt_public_key: Some(public),
        ..Settings::default()
    };
    let (l, cfg) = launched(Options::default(), settings).await;
    let sb = l.sandbox.clone();
    let id = env_var("SF_TEST_CLIENT_ID", &d.client_id);

    // Refresh token: connect authenticates, an expired session is renewed once.
    let mut rc = cfg.clone();
    rc.client_id_env = Some(id.clone());
    rc.refresh_token_env = Some(env_var("SF_TEST_REFRESH", &d.refresh_token));
    let c = SalesforceConnector::connect(sf(), rc.clone())
        .await
        .unwrap();
    assert_eq!(sb.counters()["oauth.token"], 1);
    c.write(creates(3, &SystemId::new("erp").unwrap()))
        .await
        .unwrap();
    sb.expire_sessions();
    let (all, _) = read_all(&c, None).await;
    assert_eq!(all.len(), 3);
    assert_eq!(sb.counters()["oauth.token"], 2, "one re-authentication");
    rc.refresh_token_env = Some(env_var("SF_TEST_REFRESH", "revoked"));
    let e = SalesforceConnector::connect(sf(), rc).await.err().unwrap();
    assert!(
        e.to_string()
            .contains("authentication (refresh_token) failed (400): invalid_grant"),
        "{e}"
    );

    // JWT bearer with an RS256 key: same.
    let mut jc = cfg.clone();
    jc.client_id_env = Some(id.clone());
    jc.jwt_key_env = Some(env_var("SF_TEST_JWT_KEY", &private));
    jc.username_env = Some(env_var("SF_TEST_USER", &d.username));
    let c = SalesforceConnector::connect(sf(), jc.clone())
        .await
        .unwrap();
    sb.expire_sessions();
    let (all, _) = read_all(&c, None).await;
    assert_eq!(all.len(), 3);
    // Wrong user, or a key that is not a key: clear errors, nothing logged of the key.
    let mut bad = jc.clone();
    bad.username_env = Some(env_var("SF_TEST_USER", "eve@example.com"));
    let e = SalesforceConnector::connect(sf(), bad).await.err().unwrap();
    assert!(
        e.to_string().contains(
            "JWT bearer) failed (400): invalid_grant: user hasn't approved this consumer"
        ),
        "{e}"
    );
    let mut bad = jc;
    bad.jwt_key_env = Some(env_var("SF_TEST_JWT_KEY", "not a key"));
    let e = SalesforceConnector::connect(sf(), bad).await.err().unwrap();
    assert!(
        e.to_string()
            .contains("does not hold a PEM RSA private key"),
        "{e}"
    );
    assert!(!e.to_string().contains("not a key"));
}

#[tokio::test]
async fn lost_answers_are_retried_only_where_that_cannot_duplicate() {
    let (sb, cfg) = sandbox().await;
    let sfc = Arc::new(
        SalesforceConnector::connect(sf(), cfg.clone())
            .await
            .unwrap(),
    );
    let mem = Arc::new(MemorySystem::new(SystemId::new("erp").unwrap()));
    for i in 0..300 {
        mem.user_create(Fields::new().with("Name", format!("ERP {i:03}")));
    }
    let job = crate::common::two_way_job(
        "sf",
        vec![
            mem.clone() as Arc<dyn Connector>,
            sfc.clone() as Arc<dyn Connector>,
        ],
        200,
    );
    let e = crate::common::memory_engine("n1");
    // A third of the answers never arrive, although the sandbox did the work.
    sb.set_faults(Faults {
        rate_drop: 0.35,
        seed: 5,
        ..Faults::default()
    });
    let mut passes = 0;
    loop {
        passes += 1;
        match e.sync(&job, None).await {
            Ok(r) if r.total_written() == 0 && r.changed == 0 => break,
            _ if passes < 20 => continue,
            other => panic!("no convergence: {other:?}"),
        }
    }
    sb.set_faults(Faults::default());
    assert!(sb.counters()["fault.drop"] > 0);
    assert_eq!(
        count(&sb, "Account"),
        300,
        "every record once: upserts by entity id are safe to repeat"
    );

    // Without an entity id field a create is a POST: a lost answer is reported, not retried.
    let mut plain = cfg;
    plain.entity_id_field = None;
    plain.fields = Some(vec!["Name".into()]);
    let c = SalesforceConnector::connect(sf(), plain).await.unwrap();
    sb.set_faults(Faults {
        rate_drop: 1.0,
        ..Faults::default()
    });
    let before = c.calls();
    let err = c
        .write(vec![WriteOp::Upsert {
            entity: concord::model::EntityId::derive(&sf(), "x"),
            key: None,
            fields: Fields::new().with("Name", "Once"),
        }])
        .await
        .err()
        .unwrap();
    sb.set_faults(Faults::default());
    assert!(err.message.contains("outcome unknown"), "{err}");
    assert_eq!(c.calls() - before, 1, "not repeated");
    assert_eq!(
        count(&sb, "Account"),
        301,
        "the create was applied exactly once"
    );
}

#[tokio::test]
async fn tls_with_the_sandbox_authority_in_ca_cert() {
    let dir = tempfile::tempdir().unwrap();
    let d = Settings::default();
    let (l, mut cfg) = launched(
        Options {
            tls: true,
            cert_dir: Some(dir.path().into()),
            ..Options::default()
        },
        Settings {
            token: "t".into(),
            ..Settings::default()
        },
    )
    .await;
    cfg.client_id_env = Some(env_var("SF_TEST_CLIENT_ID", &d.client_id));
    cfg.client_secret_env = Some(env_var("SF_TEST_SECRET", &d.client_secret));
    let e = SalesforceConnector::connect(sf(), cfg.clone())
        .await
        .err()
        .unwrap();
    assert!(
        e.to_string().contains("cannot reach https://127.0.0.1"),
        "unknown authority refused: {e}"
    );
    cfg.ca_cert = l.ca_path.clone();
    let c = SalesforceConnector::connect(sf(), cfg).await.unwrap();
    c.write(creates(2, &SystemId::new("erp").unwrap()))
        .await
        .unwrap();
    assert_eq!(read_all(&c, None).await.0.len(), 2);
}

#[tokio::test]
async fn lock_errors_timeouts_retry_after_and_the_limit_guard() {
    let (sb, mut cfg) = sandbox().await;
    cfg.request_timeout_secs = 1;
    let c = SalesforceConnector::connect(sf(), cfg.clone())
        .await
        .unwrap();
    // Half the writes answered UNABLE_TO_LOCK_ROW: retried with backoff, written once each.
    sb.set_faults(Faults {
        rate_lock: 0.5,
        seed: 3,
        ..Faults::default()
    });
    let res = c
        .write(creates(600, &SystemId::new("erp").unwrap()))
        .await
        .unwrap();
    sb.set_faults(Faults::default());
    assert!(res.iter().all(|r| matches!(r, WriteResult::Ok { .. })));
    assert!(sb.counters()["fault.lock"] > 0);
    assert_eq!(count(&sb, "Account"), 600);

    // A third of the calls take longer than the 1 s timeout: reads are retried and complete.
    sb.set_faults(Faults {
        rate_slow: 0.34,
        slow_ms: 1500,
        seed: 9,
        ..Faults::default()
    });
    let (all, _) = read_all(&c, None).await;
    sb.set_faults(Faults::default());
    assert_eq!(all.len(), 600);
    assert!(sb.counters()["fault.slow"] > 0, "timeouts happened");

    // Retry-After: a 503 answered with `Retry-After: 1` is retried no sooner than a second later.
    sb.set_faults(Faults {
        rate_503: 1.0,
        ..Faults::default()
    });
    let sb2 = sb.clone();
    tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        sb2.set_faults(Faults::default());
    });
    let t = std::time::Instant::now();
    read_all(&c, None).await;
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(1000),
        "waited {:?}",
        t.elapsed()
    );

    // REQUEST_LIMIT_EXCEEDED: a clear, retryable-later error, no retry storm.
    sb.set_faults(Faults {
        limit_exceeded: true,
        ..Faults::default()
    });
    let before = c.calls();
    let e = c.read(None).await.err().unwrap();
    sb.set_faults(Faults::default());
    assert!(
        e.message.contains("REQUEST_LIMIT_EXCEEDED") && e.retryable,
        "{e}"
    );
    assert_eq!(c.calls() - before, 1);

    // The guard stops before the configured share of the daily limit is used up.
    let mut guarded = cfg;
    guarded.max_limit_share = 0.000_01; // of 1 000 000: stop at 10 calls
    let g = SalesforceConnector::connect(sf(), guarded)
        .await
        .err()
        .unwrap();
    assert!(
        g.message.starts_with("stopping: ")
            && g.message
                .contains("of the daily limit of 1000000 API calls used"),
        "{g}"
    );
    assert!(!g.retryable);
}
