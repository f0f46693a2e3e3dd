//! End-to-end latency under `concord serve`: a bidirectional job between a PostgreSQL table
//! (trigger mode) and the sandbox's Account. N changes (CONCORD_LATENCY_CHANGES, default 200)
//! each way, one at a time: an update made through jsforce (unmodified, from npm) until the
//! PostgreSQL row holds it, and an update made in PostgreSQL (its own connection, as psql)
//! until the sandbox's record holds it; p50/p95/max. Then the same with push off and a 1 s
//! schedule (the polling fallback), over a tenth of the changes. `cargo bench --bench latency`;
//! needs PostgreSQL and node (jsforce is installed into target/ when missing).

use concord::config::Config;
use concord::model::InstanceId;
use concord::sandbox::server::Settings;
use concord::store::{SledStore, StateStore};
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";
const TOKEN: &str = "latency-bench-token";

fn jsforce_dir() -> std::path::PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/tmp/standard-clients/node");
    if !dir.join("node_modules/jsforce/package.json").exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let o = Command::new("npm")
            .args([
                "install",
                "--no-audit",
                "--no-fund",
                "--loglevel=error",
                "--prefix",
            ])
            .arg(&dir)
            .arg("jsforce@3.10.16")
            .output()
            .expect("npm");
        assert!(o.status.success(), "npm install jsforce failed");
    }
    dir
}

fn percentiles(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |p: f64| v[((v.len() as f64 - 1.0) * p).round() as usize];
    (at(0.5), at(0.95), *v.last().unwrap())
}

async fn sf_phone(sb: &concord::sandbox::server::Sandbox, id: &str) -> Option<String> {
    let org = sb.org.lock().unwrap();
    org.get("Account", id).ok().and_then(|r| {
        r.fields
            .get("Phone")
            .and_then(|v| v.as_str().map(str::to_string))
    })
}

async fn pg_phone(pg: &sqlx::PgPool, table: &str) -> Option<String> {
    sqlx::query_scalar::<_, Option<String>>(&format!("SELECT phone FROM {table} WHERE id = 1"))
        .fetch_one(pg)
        .await
        .ok()
        .flatten()
}

/// One direction's latencies (seconds) for `n` changes.
#[allow(clippy::too_many_arguments)]
async fn measure(
    n: usize,
    tag: &str,
    sf_to_pg: bool,
    sb: &concord::sandbox::server::Sandbox,
    pg: &sqlx::PgPool,
    table: &str,
    sf_id: &str,
    js: &mut (
        std::process::ChildStdin,
        BufReader<std::process::ChildStdout>,
    ),
) -> Vec<f64> {
    let mut out = Vec::new();
    for i in 0..n {
        let value = format!("{tag}-{i}");
        let t = Instant::now();
        if sf_to_pg {
            writeln!(js.0, "{sf_id} Phone {value}").unwrap();
            js.0.flush().unwrap();
            let mut line = String::new();
            js.1.read_line(&mut line).unwrap();
            assert_eq!(line.trim(), "done", "{line}");
        } else {
            sqlx::raw_sql(&format!(
                "UPDATE {table} SET phone = '{value}' WHERE id = 1"
            ))
            .execute(pg)
            .await
            .unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = if sf_to_pg {
                pg_phone(pg, table).await
            } else {
                sf_phone(sb, sf_id).await
            };
            if got.as_deref() == Some(value.as_str()) {
                break;
            }
            assert!(Instant::now() < deadline, "{tag} change {i} did not arrive");
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        out.push(t.elapsed().as_secs_f64());
    }
    out
}

async fn run(n: usize) {
    let pg = match sqlx::PgPool::connect(PG).await {
        Ok(p) => p,
        Err(e) => {
            eprintln!("skipped: PostgreSQL unreachable ({e})");
            return;
        }
    };
    let table = format!("latency_{}", std::process::id());
    for s in [
        format!("DROP TABLE IF EXISTS {table}"),
        format!("CREATE TABLE {table} (id integer primary key, name text, phone text)"),
        format!("INSERT INTO {table} VALUES (1, 'Latency Inc', 'start')"),
    ] {
        sqlx::raw_sql(&s).execute(&pg).await.unwrap();
    }
    // The sandbox, in process.
    let schema: concord::sandbox::schema::SchemaFile = toml::from_str(
        "[[objects]]\nname = \"Account\"\n[[objects.fields]]\nname = \"Concord_Id__c\"\ntype = \"string\"\nexternal_id = true\nunique = true\n",
    )
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let sb = concord::sandbox::server::Sandbox::new(
        concord::sandbox::org::Org::new(concord::sandbox::schema::build(&schema).unwrap()),
        Settings {
            base_url: base.clone(),
            token: TOKEN.into(),
            daily_limit: 10_000_000,
            ..Settings::default()
        },
    );
    tokio::spawn(concord::sandbox::server::serve(sb.clone(), listener));
    std::env::set_var("LAT_SF_URL", &base);
    std::env::set_var("LAT_SF_TOKEN", TOKEN);
    std::env::set_var("LAT_PG_URL", PG);
    std::env::set_var("LAT_API_TOKEN", "latency-bench-api-token");
    let o = Command::new(env!("CARGO_BIN_EXE_concord"))
        .args([
            "setup",
            "--url-env",
            "LAT_PG_URL",
            "--table",
            &table,
            "--key",
            "id",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dir = jsforce_dir();
    let mut node = Command::new("node")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/clients/jsforce_updates.js"))
        .env("NODE_PATH", dir.join("node_modules"))
        .env("SANDBOX_URL", &base)
        .env("TOKEN", TOKEN)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("node");
    let mut js = (
        node.stdin.take().unwrap(),
        BufReader::new(node.stdout.take().unwrap()),
    );
    let mut rows = Vec::new();
    for (mode, push, changes) in [
        ("push", true, n),
        ("polling, 1 s schedule", false, (n / 10).max(5)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            r#"
[store]
dir = "state"
[systems.erp]
type = "postgres"
url_env = "LAT_PG_URL"
[systems.crm]
type = "salesforce"
instance_url_env = "LAT_SF_URL"
token_env = "LAT_SF_TOKEN"
[jobs.accounts]
pattern = "bidirectional"
systems = ["erp", "crm"]
push = {push}
interval_secs = 1
{schedule}
[jobs.accounts.conflict]
default = "prefer:crm"
[jobs.accounts.sides.erp]
table = "{table}"
key = ["id"]
mode = "trigger"
[jobs.accounts.sides.erp.fields]
name = "name"
phone = "phone"
[jobs.accounts.sides.crm]
object = "Account"
entity_id_field = "Concord_Id__c"
[jobs.accounts.sides.crm.fields]
name = "Name"
phone = "Phone"
"#,
            schedule = if push { "schedule = \"manual\"" } else { "" }
        );
        let path = dir.path().join("concord.toml");
        std::fs::write(&path, &text).unwrap();
        let cfg = Config::parse(&text, &path).unwrap();
        let store = SledStore::open(dir.path().join("state")).unwrap();
        let state = StateStore::open(Arc::new(store), InstanceId::new("main").unwrap()).unwrap();
        let started = concord::serve::start(
            cfg,
            state,
            concord::serve::ServeOptions {
                listen: "127.0.0.1:0".parse().unwrap(),
                token_env: "LAT_API_TOKEN".into(),
            },
        )
        .await
        .unwrap();
        // The initial pass links (or creates) the account.
        let id = started
            .service
            .request_run(
                "accounts",
                concord::serve::runs::Trigger::Request,
                false,
                false,
            )
            .unwrap();
        loop {
            let done = started
                .service
                .runs
                .lock()
                .unwrap()
                .get(&id)
                .is_some_and(|r| r.finished());
            if done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let sf_id = {
            let org = sb.org.lock().unwrap();
            let q = concord::sandbox::soql::parse("SELECT Id FROM Account").unwrap();
            match org.query(&q, false, "62.0").unwrap() {
                concord::sandbox::org::QueryResult::Rows(r) => {
                    r[0]["Id"].as_str().unwrap().to_string()
                }
                _ => unreachable!(),
            }
        };
        // Let the change feeds subscribe.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let tag = if push { "p" } else { "q" };
        let sf = measure(
            changes,
            &format!("{tag}sf"),
            true,
            &sb,
            &pg,
            &table,
            &sf_id,
            &mut js,
        )
        .await;
        let pgl = measure(
            changes,
            &format!("{tag}pg"),
            false,
            &sb,
            &pg,
            &table,
            &sf_id,
            &mut js,
        )
        .await;
        rows.push((
            mode,
            "Salesforce (jsforce) → PostgreSQL",
            changes,
            percentiles(sf),
        ));
        rows.push((mode, "PostgreSQL → Salesforce", changes, percentiles(pgl)));
        started.stop().await;
    }
    // Closing its input ends the node helper.
    drop(js);
    let _ = node.wait();
    println!("\n| mode | direction | changes | p50 | p95 | max |");
    println!("|---|---|---|---|---|---|");
    for (mode, dir, n, (p50, p95, max)) in rows {
        println!(
            "| {mode} | {dir} | {n} | {:.0} ms | {:.0} ms | {:.0} ms |",
            p50 * 1000.0,
            p95 * 1000.0,
            max * 1000.0
        );
    }
    sqlx::raw_sql(&format!("DROP TABLE IF EXISTS {table}"))
        .execute(&pg)
        .await
        .unwrap();
}

fn main() {
    let n: usize = std::env::var("CONCORD_LATENCY_CHANGES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run(n));
}
