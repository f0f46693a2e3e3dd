//! A bidirectional job at scale: N entities kept between the Salesforce sandbox (Accounts) and
//! PostgreSQL (a table read in `column` mode), then 1 % changed on each side and one pass run.
//! ERP rows carry updated_at stamps spread over the past (ten rows a second). Before the
//! changes, a settling pass and a quiet pass half an hour later (the steady state). Reports
//! for the pass that picks up the changes: wall time, API calls against the floor, records written (and that
//! none is an echo), and the concord process's peak RSS. N from CONCORD_BENCH_ENTITIES
//! (default 100 000; e.g. `CONCORD_BENCH_ENTITIES=1000000 cargo bench --bench bidirectional`).
//! Needs PostgreSQL at 127.0.0.1:5432 (database `test`, user postgres).

#[path = "common/mod.rs"]
mod common;
use common::thousands;
use concord::sandbox::launch::{launch, Options};
use concord::sandbox::server::Settings;
use serde_json::{json, Value as J};
use std::path::Path;
use std::time::Instant;

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Runs `concord run` as a child; returns (report, seconds, peak RSS in MiB of that child).
fn run(dir: &Path, sf_url: &str) -> (J, f64, f64) {
    run_with(dir, sf_url, None)
}

/// As [`run`]; `massif`: profile this run's heap with valgrind's massif into that file.
///
/// The peak RSS comes from GNU time (`/usr/bin/time -f %M`), which starts concord itself: the
/// kernel's high-water mark of a process forked from this one (holding the sandbox and all its
/// records) would count this process's pages until the exec.
fn run_with(dir: &Path, sf_url: &str, massif: Option<&str>) -> (J, f64, f64) {
    use std::io::Read;
    let t = Instant::now();
    let rss_file = dir.join("rss.txt");
    let timer = Path::new("/usr/bin/time").exists();
    let mut cmd = if timer {
        let mut c = std::process::Command::new("/usr/bin/time");
        c.arg("-f").arg("%M").arg("-o").arg(&rss_file);
        c
    } else {
        eprintln!("/usr/bin/time not found: peak RSS not measured");
        std::process::Command::new("env")
    };
    if let Some(out) = massif {
        cmd.args([
            "valgrind",
            "--tool=massif",
            &format!("--massif-out-file={out}"),
        ]);
    }
    let mut child = cmd
        .arg(env!("CARGO_BIN_EXE_concord"))
        .current_dir(dir)
        .env("SF_URL", sf_url)
        .env("SF_TOKEN", "bench")
        .env("ERP_URL", PG)
        .env("CONCORD_LOG", "error")
        .args(["--config", "bench.toml", "run", "accounts", "--json"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("concord runs");
    let mut stdout = Vec::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_end(&mut stdout)
        .unwrap();
    let status = child.wait().unwrap();
    let secs = t.elapsed().as_secs_f64();
    assert!(
        status.success(),
        "concord failed ({status}): {}",
        String::from_utf8_lossy(&stdout)
    );
    let rss_mib = std::fs::read_to_string(&rss_file)
        .ok()
        .and_then(|s| s.trim().lines().last()?.trim().parse::<f64>().ok())
        .map_or(f64::NAN, |kib| kib / 1024.0);
    let r: J = serde_json::from_slice(&stdout).expect("JSON report");
    (r[0].clone(), secs, rss_mib)
}

fn api_calls(sb: &concord::sandbox::server::Sandbox) -> u64 {
    sb.counters()
        .iter()
        .filter(|(k, _)| !k.starts_with("fault."))
        .map(|(_, v)| v)
        .sum()
}

fn main() {
    let total: u64 = std::env::var("CONCORD_BENCH_ENTITIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let changed = (total / 100).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        // CONCORD_BENCH_KEEP: leave the folder (store, config) for inspection.
        let (_guard, path) = match std::env::var_os("CONCORD_BENCH_KEEP") {
            Some(_) => {
                let kept = dir.keep();
                println!("(keeping {})", kept.display());
                (None, kept)
            }
            None => {
                let p = dir.path().to_path_buf();
                (Some(dir), p)
            }
        };
        let d = path.as_path();
        std::fs::write(d.join("schema.toml"), "[[objects]]\nname = \"Account\"\n[[objects.fields]]\nname = \"Concord_Id__c\"\ntype = \"string\"\nexternal_id = true\nunique = true\n").unwrap();
        let l = launch(
            &Options { schema: Some(d.join("schema.toml")), ..Options::default() },
            Settings { token: "bench".into(), daily_limit: 100_000_000, ..Settings::default() },
        )
        .await
        .unwrap();
        let table = format!("bench_customers_{}", std::process::id());
        // CONCORD_BENCH_CACHE_MB: the store's page cache (default: concord's own default).
        let cache_mb: u64 = std::env::var("CONCORD_BENCH_CACHE_MB")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(concord::store::sled_store::DEFAULT_CACHE_BYTES >> 20);
        std::fs::write(
            d.join("bench.toml"),
            format!(
                r#"[store]
dir = "state"
cache_mb = {cache_mb}
[systems.crm]
type = "salesforce"
instance_url_env = "SF_URL"
token_env = "SF_TOKEN"
[systems.erp]
type = "postgres"
url_env = "ERP_URL"
[jobs.accounts]
pattern = "bidirectional"
systems = ["crm", "erp"]
batch_size = 2000
[jobs.accounts.sides.crm]
object = "Account"
entity_id_field = "Concord_Id__c"
overlap_secs = 60
[jobs.accounts.sides.crm.fields]
name = "Name"
phone = "Phone"
city = "BillingCity"
[jobs.accounts.sides.erp]
table = "{table}"
key = ["id"]
mode = "column"
updated_column = "updated_at"
overlap_secs = 60
page_size = 5000
[jobs.accounts.sides.erp.fields]
name = "name"
phone = "phone"
city = "city"
"#
            ),
        )
        .unwrap();
        let pg = sqlx::PgPool::connect(PG).await.expect("PostgreSQL at 127.0.0.1:5432");
        sqlx::query(&format!("CREATE TABLE {table} (id bigint primary key, name text not null, phone text, city text, updated_at timestamptz not null default now())")).execute(&pg).await.unwrap();
        let t = Instant::now();
        sqlx::query(&format!("INSERT INTO {table} (id, name, phone, city, updated_at) SELECT i, 'Customer ' || i, '+1 555 ' || lpad((i % 10000)::text, 4, '0'), (ARRAY['Berlin','Lyon','Austin','Osaka'])[1 + i % 4], now() - interval '2 hours' - (i / 10) * interval '1 second' FROM generate_series(1, {total}) i")).execute(&pg).await.unwrap();
        println!("{} ERP rows made in {:.1} s", thousands(total), t.elapsed().as_secs_f64());

        // Initial sync: every ERP row becomes an Account (Bulk API above 10 000 records).
        let before = api_calls(&l.sandbox);
        let (r, secs, rss) = run(d, &l.base_url);
        println!(
            "initial sync: {:.1} s, {} API calls, written {}, peak RSS {:.0} MiB",
            secs,
            api_calls(&l.sandbox) - before,
            r["written"],
            rss
        );
        let before = api_calls(&l.sandbox);
        let (r, secs, _) = run(d, &l.base_url);
        println!(
            "settling pass (echoes of the initial writes): {:.1} s, {} API calls, read {}, written {}, echoes {}",
            secs,
            api_calls(&l.sandbox) - before,
            r["read"],
            r["written"],
            r["echoes"]
        );

        // Half an hour later, a quiet scheduled pass (nothing changed): the steady state the
        // changes arrive in.
        l.sandbox.org.lock().unwrap().clock_offset_ms = 1_800_000;
        let before = api_calls(&l.sandbox);
        let (r, secs, _) = run(d, &l.base_url);
        println!(
            "quiet pass: {:.1} s, {} API calls, read {}, written {}",
            secs,
            api_calls(&l.sandbox) - before,
            r["read"],
            r["written"]
        );

        // An hour later, 1 % changes on each side (different records).
        {
            let mut org = l.sandbox.org.lock().unwrap();
            org.clock_offset_ms = 3_600_000;
            let ids: Vec<String> = match org
                .query(&concord::sandbox::soql::parse(&format!("SELECT Id FROM Account ORDER BY Id LIMIT {changed}")).unwrap(), false, "62.0")
                .unwrap()
            {
                concord::sandbox::org::QueryResult::Rows(r) => r.iter().map(|x| x["Id"].as_str().unwrap().to_string()).collect(),
                _ => unreachable!(),
            };
            for id in ids {
                org.update("Account", &id, json!({"Phone": "+49 30 changed in SF"}).as_object().unwrap()).unwrap();
            }
        }
        sqlx::query(&format!("UPDATE {table} SET city = 'Changed in ERP', updated_at = now() + interval '1 hour' WHERE id > {total} - {changed}")).execute(&pg).await.unwrap();
        let before = api_calls(&l.sandbox);
        let counters_before = l.sandbox.counters();
        let massif = std::env::var("CONCORD_BENCH_MASSIF").ok();
        let (r, secs, rss) = run_with(d, &l.base_url, massif.as_deref());
        let calls = api_calls(&l.sandbox) - before;
        let written: u64 = r["written"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
        let delta: Vec<String> = l
            .sandbox
            .counters()
            .iter()
            .filter_map(|(k, v)| {
                let d = v - counters_before.get(k).copied().unwrap_or(0);
                (d > 0).then(|| format!("{k} {d}"))
            })
            .collect();
        let floor = changed.div_ceil(2000) + changed.div_ceil(200);
        println!("\n| N entities | 1 % changed per side | wall time | API calls (floor) | records written | echo writes | peak RSS |");
        println!("|---|---|---|---|---|---|---|");
        println!(
            "| {} | {} | {:.2} s | {} ({}) | {} | {} | {:.0} MiB |",
            thousands(total),
            thousands(changed),
            secs,
            calls,
            floor,
            thousands(written),
            written.saturating_sub(2 * changed),
            rss
        );
        println!("API calls by endpoint: {}", delta.join(", "));
        println!("report: {r}");
        sqlx::query(&format!("DROP TABLE {table}")).execute(&pg).await.unwrap();
    });
}
