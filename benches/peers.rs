//! Migration side by side with the peers, in one run, on the same generated PostgreSQL table:
//! `concord run` of a migrate job (fresh store), sling (PyPI `sling-linux-amd64`, its bundled
//! binary called directly) in full-refresh mode, and dlt (PyPI `dlt[postgres]` with SQLAlchemy,
//! `sql_database` source, postgres destination), each into a fresh table; then PostgreSQL → MariaDB for concord
//! and sling. Every copy is verified identical to the source: row count and an ordered digest
//! over all ten columns, each column in a type-neutral text form. Prints wall time, rows/s, peak
//! RSS (GNU time) and concord's ratio to each peer.
//!
//! Then 1 000 source rows change and concord (its migrate job reads the source in `column` mode
//! by `updated_at`) and sling (`incremental`, the same update key) run again on what they copied.
//!
//! `CONCORD_PEER_ROWS` (default 100 000) sets the table's size; `CONCORD_PEERS=concord,sling,dlt,
//! incremental,mariadb` picks the runs. The peers are installed on first use into `target/peers/` (a Python
//! virtual environment); `CONCORD_PEERS_VENV` points at another. Needs PostgreSQL at
//! 127.0.0.1:5432 (user postgres, database `test`) and, for the MariaDB run, MariaDB at
//! 127.0.0.1:3306 (root, database `test`).
//!
//! `cargo bench --bench peers`; `CONCORD_PEER_ROWS=1000000 cargo bench --bench peers`.

#[path = "common/mod.rs"]
mod common;
use common::thousands;
use sqlx::Row;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";
const MY: &str = "mysql://root@127.0.0.1:3306/test";
/// The same database as dlt's destination wants it (a password it requires; trust ignores it).
const PG_DLT_DEST: &str = "postgresql://postgres:trust@127.0.0.1:5432/test";
/// The same database as SQLAlchemy (dlt's source) names it.
const PG_SQLALCHEMY: &str = "postgresql+psycopg2://postgres@127.0.0.1:5432/test";
const SRC: &str = "peer_src";

/// The source table: ten columns of the usual ERP kinds.
const DDL: &str = "(id bigint PRIMARY KEY, name text NOT NULL, email text, city text, \
                   amount numeric(12,2), qty integer, active boolean, day date, \
                   updated_at timestamptz, notes text)";
const COLUMNS: [&str; 10] = [
    "id",
    "name",
    "email",
    "city",
    "amount",
    "qty",
    "active",
    "day",
    "updated_at",
    "notes",
];

/// One tool's run: seconds, peak RSS (MiB), and the verification.
struct Ran {
    tool: String,
    secs: f64,
    rss_mib: f64,
    verified: Result<(), String>,
}

/// Runs `cmd` under GNU time: (seconds, peak RSS in MiB); panics with its output on failure.
fn timed(cmd: Command, what: &str) -> (f64, f64) {
    let rss = tempfile::NamedTempFile::new().unwrap();
    let mut timer = Command::new("/usr/bin/time");
    timer.arg("-f").arg("%M").arg("-o").arg(rss.path());
    timer.arg(cmd.get_program());
    timer.args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => timer.env(k, v),
            None => timer.env_remove(k),
        };
    }
    if let Some(d) = cmd.get_current_dir() {
        timer.current_dir(d);
    }
    let t = Instant::now();
    let out = timer.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let secs = t.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let kib: f64 = std::fs::read_to_string(rss.path())
        .unwrap()
        .trim()
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(f64::NAN);
    (secs, kib / 1024.0)
}

/// The peers' virtual environment, made on first use: (python, sling binary).
fn peers() -> (PathBuf, PathBuf) {
    let venv = std::env::var_os("CONCORD_PEERS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/peers"));
    let python = venv.join("bin/python");
    if !python.exists() {
        println!("installing the peers into {} …", venv.display());
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "-q",
                    "sling-linux-amd64",
                    "dlt[postgres]",
                    "sqlalchemy",
                ])
                .status()
                .is_ok_and(|s| s.success());
        assert!(
            ok,
            "pip install of sling-linux-amd64, dlt[postgres] and sqlalchemy failed"
        );
    }
    let out = Command::new(&python)
        .args([
            "-c",
            "import sling_linux_amd64, os; print(os.path.dirname(sling_linux_amd64.__file__))",
        ])
        .output()
        .unwrap();
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("bin");
    let sling = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("sling"))
        })
        .expect("the sling binary in sling_linux_amd64/bin");
    (python, sling)
}

/// Each column as text that does not depend on the column's type in the copy (numeric scale,
/// integer width, timestamp type): what the digest compares.
fn pg_neutral(c: &str) -> String {
    match c {
        "amount" => "round(amount::numeric, 2)::text".into(),
        "qty" | "id" => format!("{c}::bigint::text"),
        "active" => "active::boolean::text".into(),
        "day" => "day::date::text".into(),
        // Milliseconds, truncated: concord's datetimes are milliseconds (design.md §2), so a
        // source's microseconds do not survive a copy through it.
        "updated_at" => {
            "floor(extract(epoch from updated_at::timestamptz) * 1000)::bigint::text".into()
        }
        other => format!("{other}::text"),
    }
}

fn my_neutral(c: &str) -> String {
    match c {
        "amount" => "CAST(ROUND(amount, 2) AS CHAR)".into(),
        // A BOOLEAN (tinyint) or sling's char(5) 'true' / 'false'.
        "active" => "IF(CAST(active AS CHAR) IN ('1', 'true'), 'true', 'false')".into(),
        "day" => "CAST(CAST(day AS DATE) AS CHAR)".into(),
        // MariaDB keeps zone-less datetimes; concord and sling write them in UTC.
        "updated_at" => "CAST(FLOOR(UNIX_TIMESTAMP(CONVERT_TZ(updated_at, '+00:00', @@session.time_zone)) * 1000) AS CHAR)".into(),
        other => format!("CAST({other} AS CHAR)"),
    }
}

/// (rows, digest) of a PostgreSQL table.
async fn pg_digest(pool: &sqlx::PgPool, table: &str) -> (i64, String) {
    let cols: Vec<String> = COLUMNS
        .iter()
        .map(|c| format!("coalesce({}, '∅')", pg_neutral(c)))
        .collect();
    // Two levels (an md5 per block of 10 000 ids, then one over the blocks): MariaDB's
    // GROUP_CONCAT of one md5 per row would pass max_allowed_packet at 1 000 000 rows.
    let q = format!(
        "SELECT coalesce(sum(n), 0)::bigint, coalesce(md5(string_agg(b, '' ORDER BY g)), '') FROM \
         (SELECT id / 10000 AS g, count(*) AS n, \
          md5(string_agg(md5(concat_ws('|', {})), '' ORDER BY id)) AS b FROM {table} GROUP BY 1) x",
        cols.join(", ")
    );
    let r = sqlx::query(&q).fetch_one(pool).await.unwrap();
    (r.get(0), r.get(1))
}

/// (rows, digest) of a MariaDB table, in the same form as [`pg_digest`].
async fn my_digest(pool: &sqlx::MySqlPool, table: &str) -> (i64, String) {
    // One connection: the session setting must hold for the query that follows.
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("SET SESSION group_concat_max_len = 18446744073709551615")
        .execute(&mut *conn)
        .await
        .unwrap();
    let cols: Vec<String> = COLUMNS
        .iter()
        .map(|c| format!("COALESCE({}, '∅')", my_neutral(c)))
        .collect();
    let q = format!(
        "SELECT CAST(COALESCE(SUM(n), 0) AS SIGNED), COALESCE(MD5(GROUP_CONCAT(b ORDER BY g SEPARATOR '')), '') FROM \
         (SELECT id DIV 10000 AS g, COUNT(*) AS n, \
          MD5(GROUP_CONCAT(MD5(CONCAT_WS('|', {})) ORDER BY id SEPARATOR '')) AS b FROM {table} GROUP BY g) x",
        cols.join(", ")
    );
    let r = sqlx::query(&q).fetch_one(&mut *conn).await.unwrap();
    (r.get(0), r.get::<String, _>(1))
}

fn verify(got: (i64, String), want: &(i64, String)) -> Result<(), String> {
    if got.0 != want.0 {
        return Err(format!("{} rows, the source has {}", got.0, want.0));
    }
    if got.1 != want.1 {
        return Err("the rows differ from the source's".into());
    }
    Ok(())
}

/// A concord migrate job from `peer_src` to `target` in the database `dst_url` points at.
fn concord_config(dir: &Path, target: &str, dst_kind: &str) -> PathBuf {
    let fields: String = COLUMNS.iter().map(|c| format!("{c} = \"{c}\"\n")).collect();
    let text = format!(
        "[store]\ndir = \"state\"\n\
         [systems.src]\ntype = \"postgres\"\nurl_env = \"SRC_URL\"\n\
         [systems.dst]\ntype = \"{dst_kind}\"\nurl_env = \"DST_URL\"\n\
         [jobs.copy]\npattern = \"migrate\"\nsystems = [\"src\", \"dst\"]\nbatch_size = 5000\n\
         [jobs.copy.sides.src]\ntable = \"{SRC}\"\nkey = [\"id\"]\npage_size = 10000\n\
         mode = \"column\"\nupdated_column = \"updated_at\"\n\
         [jobs.copy.sides.src.fields]\n{fields}\
         [jobs.copy.sides.dst]\ntable = \"{target}\"\nkey = [\"id\"]\npage_size = 10000\n\
         [jobs.copy.sides.dst.fields]\n{fields}"
    );
    let p = dir.join(format!("{target}.toml"));
    std::fs::write(&p, text).unwrap();
    p
}

/// sling copying the source table into `object` of connection `target` (`PEER_PG` or
/// `PEER_MY`, both set here), with the mode arguments `mode`.
fn sling_run(sling: &Path, target: &str, object: &str, mode: &[&str]) -> Command {
    let mut c = Command::new(sling);
    c.env("PEER_PG", format!("{PG}?sslmode=disable"))
        .env("PEER_MY", MY)
        .env("SLING_DISABLE_TELEMETRY", "true")
        .args(["run", "--src-conn", "PEER_PG", "--src-stream"])
        .arg(format!("public.{SRC}"))
        .args(["--tgt-conn", target, "--tgt-object", object])
        .args(mode);
    c
}

/// A first run of the migrate job, from a fresh store.
fn concord(dir: &Path, config: &Path, dst_url: &str) -> (f64, f64) {
    let _ = std::fs::remove_dir_all(dir.join("state"));
    concord_again(dir, config, dst_url)
}

/// A run of the migrate job on the store the last run left.
fn concord_again(dir: &Path, config: &Path, dst_url: &str) -> (f64, f64) {
    let mut c = Command::new(env!("CARGO_BIN_EXE_concord"));
    c.current_dir(dir)
        .env("SRC_URL", PG)
        .env("DST_URL", dst_url)
        .env("CONCORD_LOG", "error")
        .arg("--config")
        .arg(config)
        .args(["run", "copy", "--json"]);
    timed(c, "concord run")
}

fn main() {
    let rows: u64 = std::env::var("CONCORD_PEER_ROWS")
        .ok()
        .and_then(|v| v.replace(['_', ' '], "").parse().ok())
        .unwrap_or(100_000);
    let runs = std::env::var("CONCORD_PEERS")
        .unwrap_or_else(|_| "concord,sling,dlt,incremental,mariadb".into());
    let want = |t: &str| runs.split(',').any(|r| r.trim() == t);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let pg = sqlx::PgPool::connect(PG).await.expect("PostgreSQL at 127.0.0.1:5432");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // The source: generated in the database (ids 1..=N).
        sqlx::query(&format!("DROP TABLE IF EXISTS {SRC}")).execute(&pg).await.unwrap();
        sqlx::query(&format!("CREATE TABLE {SRC} {DDL}")).execute(&pg).await.unwrap();
        sqlx::query(&format!(
            "INSERT INTO {SRC} SELECT i, 'Customer ' || i, 'buyer' || i || '@example.com', \
             (ARRAY['Berlin','Lyon','Oslo','Porto','Turku'])[1 + i % 5], \
             ((i * 37) % 1000000) / 100.0, (i % 500)::int, i % 3 = 0, \
             DATE '2024-01-01' + (i % 700)::int, \
             TIMESTAMPTZ '2024-01-01 00:00:00+00' + i * INTERVAL '1 second', \
             'Renewal of the annual maintenance contract, line ' || i || '; ships from the north warehouse, gate 4' \
             FROM generate_series(1, $1::bigint) AS i"
        ))
        .bind(rows as i64)
        .execute(&pg)
        .await
        .unwrap();
        // What incremental extraction reads by (concord's column mode, sling's update key).
        sqlx::query(&format!("CREATE INDEX ON {SRC} (updated_at)")).execute(&pg).await.unwrap();
        sqlx::query(&format!("ANALYZE {SRC}")).execute(&pg).await.unwrap();
        let mut source = pg_digest(&pg, SRC).await;
        assert_eq!(source.0 as u64, rows);
        println!("source: {} rows, 10 columns (PostgreSQL {SRC})", thousands(rows));
        let mut results: Vec<Ran> = Vec::new();
        let fresh = |table: String, ddl: bool| {
            let pg = pg.clone();
            async move {
                sqlx::query(&format!("DROP TABLE IF EXISTS {table}")).execute(&pg).await.unwrap();
                if ddl {
                    sqlx::query(&format!("CREATE TABLE {table} {DDL}")).execute(&pg).await.unwrap();
                }
            }
        };

        if want("concord") {
            fresh("peer_concord".into(), true).await;
            let cfg = concord_config(d, "peer_concord", "postgres");
            let (secs, rss_mib) = concord(d, &cfg, PG);
            let verified = verify(pg_digest(&pg, "peer_concord").await, &source);
            results.push(Ran { tool: "concord migrate".into(), secs, rss_mib, verified });
        }
        let needs_peers = want("sling") || want("dlt") || want("mariadb");
        let (python, sling) = if needs_peers { peers() } else { (PathBuf::new(), PathBuf::new()) };
        if want("sling") {
            fresh("peer_sling".into(), false).await;
            let c = sling_run(&sling, "PEER_PG", "public.peer_sling", &["--mode", "full-refresh"]);
            let (secs, rss_mib) = timed(c, "sling run");
            let verified = verify(pg_digest(&pg, "peer_sling").await, &source);
            results.push(Ran { tool: "sling full-refresh".into(), secs, rss_mib, verified });
        }
        if want("dlt") {
            sqlx::query("DROP SCHEMA IF EXISTS peer_dlt CASCADE").execute(&pg).await.unwrap();
            let script = d.join("dlt_copy.py");
            std::fs::write(
                &script,
                format!(
                    "import dlt\nfrom dlt.sources.sql_database import sql_database\n\
                     url = '{PG_SQLALCHEMY}'\n\
                     src = sql_database(url, table_names=['{SRC}'])\n\
                     p = dlt.pipeline(pipeline_name='peer_copy', destination=dlt.destinations.postgres('{PG_DLT_DEST}'), dataset_name='peer_dlt', pipelines_dir='{}')\n\
                     info = p.run(src, write_disposition='replace')\n\
                     print(info)\n",
                    d.join("dlt").display()
                ),
            )
            .unwrap();
            let mut c = Command::new(&python);
            c.current_dir(d)
                .env("RUNTIME__LOG_LEVEL", "WARNING")
                .env("DLT_TELEMETRY_DISABLED", "1")
                .env("RUNTIME__DLTHUB_TELEMETRY", "false")
                .arg(&script);
            let (secs, rss_mib) = timed(c, "dlt pipeline");
            let verified = verify(pg_digest(&pg, &format!("peer_dlt.{SRC}")).await, &source);
            results.push(Ran { tool: "dlt sql_database".into(), secs, rss_mib, verified });
        }
        // 1 000 rows changed at the source; the tools that copied it run again, incrementally.
        let mut incremental: Vec<Ran> = Vec::new();
        let changed = 1000.min(rows);
        if want("incremental") && (want("concord") || want("sling")) {
            let step = (rows / changed).max(1);
            sqlx::query(&format!(
                "UPDATE {SRC} SET name = name || ' (edited)', updated_at = now() WHERE id % $1 = 0"
            ))
            .bind(step as i64)
            .execute(&pg)
            .await
            .unwrap();
            source = pg_digest(&pg, SRC).await;
            if want("concord") {
                let cfg = d.join("peer_concord.toml");
                let (secs, rss_mib) = concord_again(d, &cfg, PG);
                let verified = verify(pg_digest(&pg, "peer_concord").await, &source);
                incremental.push(Ran { tool: "concord migrate (column mode)".into(), secs, rss_mib, verified });
            }
            if want("sling") {
                let c = sling_run(
                    &sling,
                    "PEER_PG",
                    "public.peer_sling",
                    &["--mode", "incremental", "--primary-key", "id", "--update-key", "updated_at"],
                );
                let (secs, rss_mib) = timed(c, "sling incremental");
                let verified = verify(pg_digest(&pg, "peer_sling").await, &source);
                incremental.push(Ran { tool: "sling incremental".into(), secs, rss_mib, verified });
            }
        }
        if want("mariadb") {
            match sqlx::MySqlPool::connect(MY).await {
                Err(e) => println!("MariaDB runs skipped: {e}"),
                Ok(my) => {
                    for t in ["peer_concord", "peer_sling"] {
                        sqlx::query(&format!("DROP TABLE IF EXISTS {t}")).execute(&my).await.unwrap();
                    }
                    sqlx::query(
                        "CREATE TABLE peer_concord (id BIGINT PRIMARY KEY, name TEXT NOT NULL, \
                         email TEXT, city TEXT, amount DECIMAL(12,2), qty INT, active BOOLEAN, \
                         day DATE, updated_at DATETIME(6), notes TEXT)",
                    )
                    .execute(&my)
                    .await
                    .unwrap();
                    if want("concord") {
                        let cfg = concord_config(d, "peer_concord", "mysql");
                        let (secs, rss_mib) = concord(d, &cfg, MY);
                        let verified = verify(my_digest(&my, "peer_concord").await, &source);
                        results.push(Ran { tool: "concord migrate → MariaDB".into(), secs, rss_mib, verified });
                    }
                    if want("sling") {
                        let c = sling_run(&sling, "PEER_MY", "test.peer_sling", &["--mode", "full-refresh"]);
                        let (secs, rss_mib) = timed(c, "sling run → MariaDB");
                        let verified = verify(my_digest(&my, "peer_sling").await, &source);
                        results.push(Ran { tool: "sling full-refresh → MariaDB".into(), secs, rss_mib, verified });
                    }
                }
            }
        }

        println!("\n| {} rows | wall time | rows/s | peak RSS | identical to the source |", thousands(rows));
        println!("|---|---|---|---|---|");
        for r in &results {
            println!(
                "| {} | {:.1} s | {} | {:.0} MiB | {} |",
                r.tool,
                r.secs,
                thousands((rows as f64 / r.secs) as u64),
                r.rss_mib,
                match &r.verified {
                    Ok(()) => "yes".to_string(),
                    Err(e) => format!("**no**: {e}"),
                }
            );
        }
        let by = |prefix: &str, to_mariadb: bool| {
            results
                .iter()
                .find(|r| r.tool.starts_with(prefix) && r.tool.contains("MariaDB") == to_mariadb)
        };
        for to_mariadb in [false, true] {
            if let Some(c) = by("concord", to_mariadb) {
                for peer in ["sling", "dlt"] {
                    if let Some(p) = by(peer, to_mariadb) {
                        println!(
                            "concord{}: {:.2}× {peer}'s rows/s, {:.2}× its peak RSS",
                            if to_mariadb { " → MariaDB" } else { "" },
                            p.secs / c.secs,
                            c.rss_mib / p.rss_mib
                        );
                    }
                }
            }
        }
        if !incremental.is_empty() {
            println!(
                "\n| {} rows changed, {} stored | wall time | peak RSS | identical to the source |",
                thousands(changed),
                thousands(rows)
            );
            println!("|---|---|---|---|");
            for r in &incremental {
                let same = match &r.verified {
                    Ok(()) => "yes".to_string(),
                    Err(e) => format!("**no**: {e}"),
                };
                println!("| {} | {:.2} s | {:.0} MiB | {same} |", r.tool, r.secs, r.rss_mib);
            }
        }
        results.extend(incremental);
        let bad: Vec<&Ran> = results.iter().filter(|r| r.verified.is_err()).collect();
        assert!(bad.is_empty(), "copies that differ from the source: {}", bad.iter().map(|r| r.tool.as_str()).collect::<Vec<_>>().join(", "));
    });
}
