//! API calls and wall time of the Salesforce connector against the in-process sandbox, for K
//! records (CONCORD_SF_BENCH_RECORDS, default 10 000): writing them (REST collections and Bulk
//! API 2.0 ingest), reading them all (REST query pages and Bulk API 2.0 query), and reading them
//! again after every one changed (incremental). The floors are ceil(K/200) collection calls
//! and ceil(K/2000) query pages. `cargo bench --bench salesforce`.

#[path = "common/mod.rs"]
mod common;
use common::thousands;
use concord::connector::salesforce::{SalesforceConfig, SalesforceConnector};
use concord::connector::{Connector, WriteOp, WriteResult};
use concord::model::{EntityId, Fields, SystemId, Value};
use concord::sandbox::launch::{launch, Options};
use concord::sandbox::server::{Sandbox, Settings};
use std::sync::Arc;
use std::time::Instant;

fn ops(k: usize, tag: &str, keys: Option<&[(EntityId, concord::model::Key)]>) -> Vec<WriteOp> {
    let sys = SystemId::new("erp").unwrap();
    (0..k)
        .map(|i| {
            let fields = Fields::new()
                .with("Name", format!("{tag} account {i:06}"))
                .with("Phone", format!("+1 555 {:04}", i % 10_000))
                .with("AnnualRevenue", Value::Int(1000 + i as i64))
                .with("BillingCity", ["Berlin", "Lyon", "Austin", "Osaka"][i % 4])
                .with("NumberOfEmployees", Value::Int((i % 5000) as i64));
            match keys {
                None => WriteOp::Upsert {
                    entity: EntityId::derive(&sys, &i.to_string()),
                    key: None,
                    fields,
                },
                Some(k) => WriteOp::Upsert {
                    entity: k[i].0,
                    key: Some(k[i].1.clone()),
                    fields,
                },
            }
        })
        .collect()
}

async fn read_all(
    c: &SalesforceConnector,
    mut cursor: Option<Vec<u8>>,
) -> (Vec<concord::connector::Change>, Option<Vec<u8>>) {
    let mut out = Vec::new();
    loop {
        let p = c.read(cursor.as_deref()).await.expect("read");
        out.extend(p.changes);
        cursor = p.cursor;
        if !p.more {
            return (out, cursor);
        }
    }
}

struct Row {
    what: String,
    calls: u64,
    floor: u64,
    secs: f64,
    records: usize,
}

async fn fresh(k: usize) -> (Arc<Sandbox>, SalesforceConfig) {
    let dir = std::env::temp_dir().join(format!("concord-sf-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let schema = dir.join("schema.toml");
    std::fs::write(&schema, "[[objects]]\nname = \"Account\"\n[[objects.fields]]\nname = \"Concord_Id__c\"\ntype = \"string\"\nexternal_id = true\nunique = true\n").unwrap();
    let l = launch(
        &Options {
            schema: Some(schema),
            ..Options::default()
        },
        Settings {
            token: "bench".into(),
            daily_limit: 10_000_000,
            ..Settings::default()
        },
    )
    .await
    .expect("sandbox");
    std::mem::forget(l.server);
    unsafe {
        std::env::set_var("SF_BENCH_URL", &l.base_url);
        std::env::set_var("SF_BENCH_TOKEN", "bench");
    }
    let mut cfg = SalesforceConfig::new("SF_BENCH_URL", "SF_BENCH_TOKEN", "Account");
    cfg.fields = Some(
        [
            "Name",
            "Phone",
            "AnnualRevenue",
            "BillingCity",
            "NumberOfEmployees",
            "Concord_Id__c",
        ]
        .map(String::from)
        .to_vec(),
    );
    cfg.entity_id_field = Some("Concord_Id__c".into());
    let _ = k;
    (l.sandbox, cfg)
}

async fn scenario(k: usize, bulk: bool) -> Vec<Row> {
    let (sb, mut cfg) = fresh(k).await;
    if !bulk {
        cfg.bulk_threshold = usize::MAX;
        cfg.bulk_read_threshold = usize::MAX;
    }
    let mode = if bulk { "Bulk API 2.0" } else { "REST" };
    let c = SalesforceConnector::connect(SystemId::new("sf").unwrap(), cfg)
        .await
        .expect("connect");
    let mut rows = Vec::new();
    // Write K new records.
    let before = c.calls();
    let t = Instant::now();
    let res = c.write(ops(k, "new", None)).await.expect("write");
    assert!(res.iter().all(|r| matches!(r, WriteResult::Ok { .. })));
    rows.push(Row {
        what: format!("write {} new records, {mode}", thousands(k as u64)),
        calls: c.calls() - before,
        floor: k.div_ceil(200) as u64,
        secs: t.elapsed().as_secs_f64(),
        records: k,
    });
    // Read them all (a first, full read).
    let before = c.calls();
    let t = Instant::now();
    let (all, cursor) = read_all(&c, None).await;
    assert_eq!(all.len(), k);
    rows.push(Row {
        what: format!("read {} records (full), {mode}", thousands(k as u64)),
        calls: c.calls() - before,
        floor: k.div_ceil(2000) as u64,
        secs: t.elapsed().as_secs_f64(),
        records: all.len(),
    });
    // Every record changes; read the changes (incremental: query + getDeleted).
    let keys: Vec<(EntityId, concord::model::Key)> = all
        .iter()
        .map(|ch| (ch.entity_hint.unwrap(), ch.key.clone()))
        .collect();
    sb.org.lock().unwrap().clock_offset_ms = 3_600_000; // the changes come an hour later
    let before = c.calls();
    let t = Instant::now();
    let res = c
        .write(ops(k, "changed", Some(&keys)))
        .await
        .expect("update");
    assert!(res.iter().all(|r| matches!(r, WriteResult::Ok { .. })));
    rows.push(Row {
        what: format!("update {} records, {mode}", thousands(k as u64)),
        calls: c.calls() - before,
        floor: k.div_ceil(200) as u64,
        secs: t.elapsed().as_secs_f64(),
        records: k,
    });
    let before = c.calls();
    let t = Instant::now();
    let (changed, _) = read_all(&c, cursor).await;
    let distinct: std::collections::BTreeSet<String> =
        changed.iter().map(|ch| ch.key.to_string()).collect();
    assert_eq!(distinct.len(), k, "every changed record read");
    rows.push(Row {
        what: format!(
            "read {} changed records (incremental), {mode}",
            thousands(k as u64)
        ),
        calls: c.calls() - before,
        floor: k.div_ceil(2000) as u64,
        secs: t.elapsed().as_secs_f64(),
        records: changed.len(),
    });
    rows
}

fn main() {
    let k: usize = std::env::var("CONCORD_SF_BENCH_RECORDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut rows = rt.block_on(scenario(k, false));
    rows.extend(rt.block_on(scenario(k, true)));
    println!("\n| operation | API calls | floor | records returned | wall time |");
    println!("|---|---|---|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {:.2} s |",
            r.what,
            r.calls,
            r.floor,
            thousands(r.records as u64),
            r.secs
        );
    }
}
