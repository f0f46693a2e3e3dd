//! SQL connector throughput against the real databases on this machine (harness = false: one
//! timed pass per figure; rows of ~10 columns).
//!
//! `cargo bench --bench sql` (CONCORD_SQL_BENCH_ROWS=1000000 by default; set it lower for a
//! quick run). Prints, per database: batched upsert rows/s through the connector, full read
//! rows/s through the connector, and the trigger overhead on a native insert-heavy load
//! (multi-row INSERTs with and without concord's triggers).

use concord::connector::sql::client::Param;
use concord::connector::sql::{CaptureMode, Pool, SqlConnector, SqlTableConfig};
use concord::connector::{Connector, WriteOp};
use concord::model::{EntityId, Fields, SystemId, Timestamp, Value};
use std::time::Instant;

fn record(i: i64) -> Fields {
    Fields::new()
        .with("id", i)
        .with("name", format!("Customer {i}"))
        .with(
            "city",
            ["Berlin", "Lyon", "Austin", "Osaka"][(i % 4) as usize],
        )
        .with("email", format!("c{i}@example.com"))
        .with(
            "amount",
            Value::Decimal(rust_decimal::Decimal::new(i * 7 % 100_000, 2)),
        )
        .with("qty", i % 500)
        .with("active", i % 2 == 0)
        .with(
            "since",
            Value::Date(
                chrono::NaiveDate::from_ymd_opt(2020, 1, 1).unwrap()
                    + chrono::Duration::days(i % 1500),
            ),
        )
        .with(
            "updated_at",
            Value::DateTime(Timestamp(1_700_000_000_000 + i)),
        )
        .with("note", "standard terms, net 30")
}

fn ddl(kind: &str, t: &str) -> String {
    match kind {
        "postgres" => format!(
            "CREATE TABLE {t} (id bigint PRIMARY KEY, name varchar(60), city varchar(30), email varchar(60), \
             amount numeric(12,2), qty integer, active boolean, since date, updated_at timestamptz(3), note text)"
        ),
        "mariadb" => format!(
            "CREATE TABLE {t} (id BIGINT PRIMARY KEY, name VARCHAR(60), city VARCHAR(30), email VARCHAR(60), \
             amount DECIMAL(12,2), qty INT, active TINYINT(1), since DATE, updated_at DATETIME(3), note TEXT)"
        ),
        _ => format!(
            "CREATE TABLE {t} (id INTEGER PRIMARY KEY, name TEXT, city TEXT, email TEXT, amount DECIMAL(12,2), \
             qty INTEGER, active BOOLEAN, since DATE, updated_at DATETIME, note TEXT)"
        ),
    }
}

async fn reachable(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok()
}

async fn native_inserts(pool: &Pool, kind: &str, t: &str, from: i64, n: i64) -> f64 {
    let per = 500;
    let start = Instant::now();
    let mut i = from;
    while i < from + n {
        let rows = per.min(from + n - i);
        let mut ph = Vec::new();
        let mut params = Vec::new();
        for r in 0..rows {
            let p = |k: i64| {
                if kind == "postgres" {
                    format!("${}", r * 3 + k)
                } else {
                    "?".into()
                }
            };
            ph.push(format!("({}, {}, {})", p(1), p(2), p(3)));
            params.push(Param::Int(i + r));
            params.push(Param::Text(format!("n{}", i + r)));
            params.push(Param::Int(r));
        }
        let sql = format!("INSERT INTO {t} (id, name, qty) VALUES {}", ph.join(", "));
        pool.execute(&sql, &params).await.unwrap();
        i += rows;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

async fn bench(kind: &str, url: &str, rows: i64) {
    let env = format!("CONCORD_BENCH_URL_{}", kind.to_uppercase());
    unsafe { std::env::set_var(&env, url) };
    let t = format!("bench_{kind}_{}", std::process::id());
    let pool = Pool::connect(url, "bench", &t).await.unwrap();
    pool.execute(&format!("DROP TABLE IF EXISTS {t}"), &[])
        .await
        .unwrap();
    pool.execute(&ddl(kind, &t), &[]).await.unwrap();
    let mut cfg = SqlTableConfig::new(&env, &t, &["id"]);
    cfg.batch_size = 5000;
    let sys = SystemId::new("erp").unwrap();
    let c = SqlConnector::connect(sys.clone(), cfg.clone())
        .await
        .unwrap();

    let start = Instant::now();
    let mut i = 0;
    while i < rows {
        let n = 5000.min(rows - i);
        let ops: Vec<WriteOp> = (i..i + n)
            .map(|k| WriteOp::Upsert {
                entity: EntityId::derive(&sys, &k.to_string()),
                key: None,
                fields: record(k),
            })
            .collect();
        c.write(ops).await.unwrap();
        i += n;
    }
    let upsert = rows as f64 / start.elapsed().as_secs_f64();

    let start = Instant::now();
    let mut cursor: Option<Vec<u8>> = None;
    let mut read = 0usize;
    loop {
        let page = c.read(cursor.as_deref()).await.unwrap();
        read += page.changes.len();
        if !page.more {
            break;
        }
        cursor = page.cursor;
    }
    assert_eq!(read as i64, rows);
    let full_read = rows as f64 / start.elapsed().as_secs_f64();

    // Trigger overhead on native multi-row inserts (a third of the rows, at least 10 000).
    let n = (rows / 3).max(10_000);
    let t2 = format!("{t}_trg");
    pool.execute(&format!("DROP TABLE IF EXISTS {t2}"), &[])
        .await
        .unwrap();
    pool.execute(&ddl(kind, &t2), &[]).await.unwrap();
    let plain = native_inserts(&pool, kind, &t2, 0, n).await;
    let mut tcfg = SqlTableConfig::new(&env, &t2, &["id"]);
    tcfg.mode = CaptureMode::Trigger;
    tcfg.changelog_table = format!("{t2}_log");
    let tc = SqlConnector::connect(sys.clone(), tcfg).await.unwrap();
    tc.setup().await.unwrap();
    let with_triggers = native_inserts(&pool, kind, &t2, n, n).await;
    tc.teardown().await.unwrap();

    println!(
        "{kind:>8}: {rows} rows | batched upsert {upsert:>9.0} rows/s | full read {full_read:>9.0} rows/s | \
         native inserts {plain:>8.0}/s, with triggers {with_triggers:>8.0}/s (x{:.2} slower)",
        plain / with_triggers
    );
    pool.execute(&format!("DROP TABLE IF EXISTS {t}"), &[])
        .await
        .unwrap();
    pool.execute(&format!("DROP TABLE IF EXISTS {t2}"), &[])
        .await
        .unwrap();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    if std::env::args().any(|a| a == "--list" || a == "--test") {
        return; // `cargo test --benches` / `cargo bench -- --list`: nothing to list.
    }
    let rows: i64 = std::env::var("CONCORD_SQL_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    if reachable(5432).await {
        bench("postgres", "postgres://postgres@127.0.0.1:5432/test", rows).await;
    } else {
        println!("postgres: skipped (127.0.0.1:5432 unreachable)");
    }
    if reachable(3306).await {
        bench("mariadb", "mysql://root@127.0.0.1:3306/test", rows).await;
    } else {
        println!("mariadb: skipped (127.0.0.1:3306 unreachable)");
    }
    let dir = tempfile::tempdir().unwrap();
    bench(
        "sqlite",
        &format!("sqlite:{}", dir.path().join("bench.db").display()),
        rows,
    )
    .await;
}
