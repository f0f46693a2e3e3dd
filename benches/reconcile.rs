//! Drift detection side by side: `concord reconcile` against reladiff (PyPI), in one run, on the
//! same two PostgreSQL tables.
//!
//! Table `rb_a` gets N rows (default 1 000 000; CONCORD_BENCH_ROWS), a migrate job copies it
//! into `rb_b` through concord, and a first reconcile learns PostgreSQL's row digests. Then
//! 0.1 % drift is made in `rb_b` behind concord's back: a third updates, a third deletes, a third
//! inserts. Measured, each through its own byte-counting TCP proxy per database (the bytes the
//! database sent to the tool): concord's hash-tree reconcile, concord's reconcile `--full`
//! (every row read), and `reladiff` comparing the two tables (hashdiff, its defaults). Each tool
//! must find exactly the drift made. Needs PostgreSQL at 127.0.0.1:5432 (user postgres,
//! database `test`) and `reladiff` on PATH (`pip install 'reladiff[postgresql]'`).

use serde_json::Value as J;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";
const PG_ADDR: &str = "127.0.0.1:5432";

/// A TCP proxy to PostgreSQL counting the bytes each way.
#[derive(Default)]
struct Counter {
    from_db: AtomicU64,
    to_db: AtomicU64,
}

impl Counter {
    fn take(&self) -> (u64, u64) {
        (
            self.from_db.swap(0, Ordering::SeqCst),
            self.to_db.swap(0, Ordering::SeqCst),
        )
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    n: Arc<Counter>,
    down: bool,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let k = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(k) => k,
        };
        let c = if down { &n.from_db } else { &n.to_db };
        c.fetch_add(k as u64, Ordering::Relaxed);
        if to.write_all(&buf[..k]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}

async fn proxy() -> (u16, Arc<Counter>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let n = Arc::new(Counter::default());
    let counter = n.clone();
    tokio::spawn(async move {
        loop {
            let Ok((client, _)) = l.accept().await else {
                break;
            };
            let n = counter.clone();
            tokio::spawn(async move {
                let Ok(db) = TcpStream::connect(PG_ADDR).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = db.set_nodelay(true);
                let (cr, cw) = client.into_split();
                let (dr, dw) = db.into_split();
                tokio::join!(pump(cr, dw, n.clone(), false), pump(dr, cw, n, true));
            });
        }
    });
    (port, n)
}

/// One line of the report table: (from db, to db) bytes for each database.
fn row(label: &str, secs: f64, a: (u64, u64), b: (u64, u64), found: (u64, u64, u64)) {
    println!(
        "| {label} | {secs:.2} s | {} | {} | {} | {found:?} |",
        mib(a.0),
        mib(b.0),
        mib(a.1 + b.1)
    );
}

fn mib(b: u64) -> String {
    format!("{:.2} MiB", b as f64 / 1048576.0)
}

fn concord(dir: &Path, a: u16, b: u16, args: &[&str]) -> (f64, J) {
    let t = Instant::now();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_concord"))
        .current_dir(dir)
        .env(
            "A_URL",
            format!("postgres://postgres@127.0.0.1:{a}/test?sslmode=disable"),
        )
        .env(
            "B_URL",
            format!("postgres://postgres@127.0.0.1:{b}/test?sslmode=disable"),
        )
        .env("CONCORD_LOG", "error")
        .args(args)
        .output()
        .expect("concord runs");
    let secs = t.elapsed().as_secs_f64();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "concord {args:?}: {e}\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (secs, json)
}

/// Drift found by kind for system `b`.
fn kinds(r: &J) -> (u64, u64, u64) {
    let mut k = (0, 0, 0);
    for d in r["drift"].as_array().unwrap() {
        match d["kind"].as_str().unwrap() {
            "different" => k.0 += 1,
            "missing" => k.1 += 1,
            "extra" => k.2 += 1,
            other => panic!("unknown drift kind {other}"),
        }
    }
    k
}

/// Tables, the migrate copy, the first reconcile, then the drift.
async fn setup<F, Fut>(
    q: &F,
    d: &Path,
    rows: i64,
    per_kind: i64,
    step: i64,
    (pa, ca): (u16, &Counter),
    (pb, cb): (u16, &Counter),
) where
    F: Fn(String) -> Fut,
    Fut: std::future::Future,
{
    let cols = "id bigint primary key, name text not null, email text, city text, \
                balance numeric(12,2), active boolean, updated_at timestamptz";
    q("DROP TABLE IF EXISTS rb_a, rb_b".into()).await;
    q(format!("CREATE TABLE rb_a ({cols})")).await;
    q(format!("CREATE TABLE rb_b ({cols})")).await;
    q(format!(
        "INSERT INTO rb_a SELECT g, 'Customer ' || g, 'c' || g || '@example.com', \
         'City ' || (g % 500), (g % 100000) / 7.0, g % 3 = 0, \
         timestamptz '2026-01-01' + g * interval '1 second' \
         FROM generate_series(1, {rows}) g"
    ))
    .await;
    q("VACUUM ANALYZE rb_a".into()).await;

    let fields = "id = \"id\"\nname = \"name\"\nemail = \"email\"\ncity = \"city\"\n\
                  balance = \"balance\"\nactive = \"active\"\nupdated_at = \"updated_at\"\n";
    std::fs::write(
        d.join("concord.toml"),
        format!(
            "[store]\ndir = \"state\"\n\
             [systems.a]\ntype = \"postgres\"\nurl_env = \"A_URL\"\n\
             [systems.b]\ntype = \"postgres\"\nurl_env = \"B_URL\"\n\
             [jobs.copy]\npattern = \"migrate\"\nsystems = [\"a\", \"b\"]\nbatch_size = 5000\n\
             [jobs.copy.sides.a]\ntable = \"rb_a\"\nkey = [\"id\"]\npage_size = 10000\n\
             [jobs.copy.sides.a.fields]\n{fields}\
             [jobs.copy.sides.b]\ntable = \"rb_b\"\nkey = [\"id\"]\npage_size = 10000\n\
             [jobs.copy.sides.b.fields]\n{fields}"
        ),
    )
    .unwrap();
    let (secs, r) = concord(d, pa, pb, &["run", "copy", "--json"]);
    println!(
        "setup: concord migrate rb_a -> rb_b: {secs:.1} s, {} written",
        r[0]["written"]
    );
    q("VACUUM ANALYZE rb_b".into()).await;
    ca.take();
    cb.take();
    let (secs, r) = concord(d, pa, pb, &["reconcile", "copy", "--json"]);
    let (a, b) = (ca.take(), cb.take());
    assert!(r["drift"].as_array().unwrap().is_empty(), "{r}");
    println!(
        "setup: first reconcile (learns the digests, reads every row): {secs:.1} s, read {} from a, {} from b\n",
        mib(a.0),
        mib(b.0)
    );

    // Drift behind concord's back, spread over the key range.
    q(format!(
        "UPDATE rb_b SET name = name || ' (fixed by hand)' WHERE id % {step} = 1"
    ))
    .await;
    q(format!("DELETE FROM rb_b WHERE id % {step} = 2")).await;
    q(format!(
        "INSERT INTO rb_b SELECT {rows} + g, 'Restored ' || g, NULL, 'Oslo', 0, false, now() \
         FROM generate_series(1, {per_kind}) g"
    ))
    .await;
    q("VACUUM ANALYZE rb_b".into()).await;
}

fn main() {
    let rows: i64 = std::env::var("CONCORD_BENCH_ROWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let per_kind = (rows / 1000 / 3).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pg = sqlx::PgPool::connect(PG).await.expect("PostgreSQL at 127.0.0.1:5432");
        let q = |s: String| {
            let pg = pg.clone();
            async move { sqlx::raw_sql(&s).execute(&pg).await.unwrap() }
        };
        // CONCORD_BENCH_KEEP: keep the folder (store, config) and the tables for inspection.
        // CONCORD_BENCH_REUSE=DIR: measure again on a kept folder and its tables (no setup).
        let keep = std::env::var_os("CONCORD_BENCH_KEEP").is_some();
        let reuse = std::env::var_os("CONCORD_BENCH_REUSE").map(std::path::PathBuf::from);
        let dir = tempfile::tempdir().unwrap();
        let d = reuse.clone().unwrap_or_else(|| dir.path().to_path_buf());
        let d = d.as_path();
        let (pa, ca) = proxy().await;
        let (pb, cb) = proxy().await;
        println!("{rows} rows; drift in rb_b: {per_kind} updated, {per_kind} deleted, {per_kind} inserted\n");
        let step = rows / per_kind;
        if reuse.is_none() {
            setup(&q, d, rows, per_kind, step, (pa, &ca), (pb, &cb)).await;
        }
        let upd: i64 = sqlx::query_scalar("SELECT count(*) FROM rb_b WHERE name LIKE '%(fixed by hand)'")
            .fetch_one(&pg)
            .await
            .unwrap();
        let made = (upd as u64, (rows / step) as u64, per_kind as u64);

        println!("| tool | wall time | read from a | read from b | sent to a+b | found (updated, deleted, inserted) |");
        println!("|---|---|---|---|---|---|");
        let (secs, r) = concord(d, pa, pb, &["reconcile", "copy", "--json"]);
        let (a, b) = (ca.take(), cb.take());
        let found = kinds(&r);
        row("concord reconcile (hash tree)", secs, a, b, found);
        assert_eq!(found, made, "concord found what was made: {r}");
        let checks = r["checks"].clone();

        // reladiff with its defaults, then with 4 worker threads per database.
        let mut rfound_all = Vec::new();
        for threads in ["1", "4"] {
            let t = Instant::now();
            let out = std::process::Command::new("reladiff")
                // It prints through `rich`, which wraps lines at the terminal's width.
                .env("COLUMNS", "100000")
                .args([
                    &format!("postgresql://postgres@127.0.0.1:{pa}/test"),
                    "rb_a",
                    &format!("postgresql://postgres@127.0.0.1:{pb}/test"),
                    "rb_b",
                    "-k", "id",
                    "-c", "name", "-c", "email", "-c", "city", "-c", "balance", "-c", "active",
                    "-c", "updated_at",
                    "--json",
                    "-j",
                    threads,
                ])
                .output()
                .expect("reladiff on PATH (pip install 'reladiff[postgresql]')");
            let secs = t.elapsed().as_secs_f64();
            let (a, b) = (ca.take(), cb.take());
            assert!(out.status.success(), "reladiff: {}", String::from_utf8_lossy(&out.stderr));
            // reladiff prints one line per differing row version: "-" (only in a, or a's side
            // of an update) and "+" (only in b, or b's side).
            let mut minus = std::collections::BTreeSet::new();
            let mut plus = std::collections::BTreeSet::new();
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                // ["-", ["7", "Customer 7", ...]]: the sign, then the key and the compared values.
                let v: J = serde_json::from_str(line).unwrap();
                let key = v[1][0].as_str().unwrap_or_default().to_string();
                match v[0].as_str() {
                    Some("+") => plus.insert(key),
                    _ => minus.insert(key),
                };
            }
            let both = minus.intersection(&plus).count() as u64;
            let rfound = (both, minus.len() as u64 - both, plus.len() as u64 - both);
            row(&format!("reladiff 0.6 (hashdiff, --threads {threads})"), secs, a, b, rfound);
            rfound_all.push(rfound);
        }
        let (secs, r) = concord(d, pa, pb, &["reconcile", "copy", "--full", "--json"]);
        let (a, b) = (ca.take(), cb.take());
        let found = kinds(&r);
        row("concord reconcile --full (every row)", secs, a, b, found);
        println!("\nconcord's hash-tree checks: {checks}");
        for rfound in rfound_all.iter().filter(|f| **f != made) {
            println!("note: reladiff's counts differ from the drift made ({made:?}): {rfound:?}");
        }
        if keep && reuse.is_none() {
            println!("(kept {} and the tables rb_a, rb_b)", dir.keep().display());
        } else if reuse.is_none() {
            q("DROP TABLE rb_a, rb_b".into()).await;
        }
    });
}
