//! `concord serve`: jobs run on request over the HTTP API and on their schedule, the bearer
//! token on every route but health, run reports, status, metrics, the conflict queue resolved
//! over the API, one service per store, and a SIGTERM in the middle of a pass that loses
//! nothing (the binary, against the sandbox).

use concord::config::Config;
use concord::model::InstanceId;
use concord::serve::ServeOptions;
use concord::store::{SledStore, StateStore};
use serde_json::{json, Value as J};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

pub(crate) const TOKEN: &str = "serve-test-token-0123456789";

fn token_env() -> String {
    crate::sf_common::env_var("CONCORD_TEST_API_TOKEN", TOKEN)
}

pub(crate) fn write_jsonl(path: &Path, rows: &[J]) {
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(path, text).unwrap();
}

fn read_jsonl(path: &Path) -> Vec<J> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A configuration in `dir` (config text given), its state store.
fn setup(dir: &Path, text: &str) -> (Config, StateStore) {
    let path = dir.join("concord.toml");
    std::fs::write(&path, text).unwrap();
    let cfg = Config::parse(text, &path).unwrap();
    let store = SledStore::open(dir.join("state")).unwrap();
    let state = StateStore::open(Arc::new(store), InstanceId::new("main").unwrap()).unwrap();
    (cfg, state)
}

pub(crate) struct Api {
    pub(crate) base: String,
    c: reqwest::Client,
}

impl Api {
    async fn call(&self, m: reqwest::Method, path: &str, body: Option<J>) -> (u16, J) {
        let mut rb = self
            .c
            .request(m, format!("{}{path}", self.base))
            .bearer_auth(TOKEN);
        if let Some(b) = body {
            rb = rb.json(&b);
        }
        let r = rb.send().await.unwrap();
        let s = r.status().as_u16();
        let t = r.text().await.unwrap();
        (s, serde_json::from_str(&t).unwrap_or(J::String(t)))
    }
    pub(crate) async fn get(&self, path: &str) -> (u16, J) {
        self.call(reqwest::Method::GET, path, None).await
    }
    async fn metrics(&self) -> String {
        self.c
            .get(format!("{}/metrics", self.base))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }
    pub(crate) async fn post(&self, path: &str, body: J) -> (u16, J) {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }
    /// Polls a run until it has finished; its final state.
    pub(crate) async fn finished(&self, id: &str) -> J {
        for _ in 0..300 {
            let (s, r) = self.get(&format!("/runs/{id}")).await;
            assert_eq!(s, 200, "{r}");
            if !matches!(r["state"].as_str(), Some("queued" | "running")) {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("run {id} did not finish");
    }
}

/// The service on the configuration `text` in `dir`, on a free port, and its API.
async fn serve(dir: &Path, text: &str) -> (concord::serve::Started, Api) {
    let (cfg, state) = setup(dir, text);
    let started = concord::serve::start(
        cfg,
        state,
        ServeOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            token_env: token_env(),
        },
    )
    .await
    .unwrap();
    let api = Api {
        base: format!("http://{}", started.addr),
        c: reqwest::Client::new(),
    };
    (started, api)
}

/// A bidirectional job between two JSONL files whose field conflicts wait for a person.
const PEOPLE: &str = r#"
[store]
dir = "state"
[systems.a]
type = "jsonl"
dir = "a"
[systems.b]
type = "jsonl"
dir = "b"
[jobs.people]
pattern = "bidirectional"
systems = ["a", "b"]
schedule = "manual"
[jobs.people.conflict]
default = "manual"
[jobs.people.sides.a]
file = "people.jsonl"
key = ["id"]
fields = { id = "id", city = "city" }
[jobs.people.sides.b]
file = "people.jsonl"
key = ["id"]
fields = { id = "id", city = "city" }
"#;

/// The service on [`PEOPLE`], file `a` holding one person in Paris.
pub(crate) async fn people() -> (tempfile::TempDir, concord::serve::Started, Api) {
    let dir = tempfile::tempdir().unwrap();
    for d in ["a", "b"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    write_jsonl(
        &dir.path().join("a/people.jsonl"),
        &[json!({"id": 1, "city": "Paris"})],
    );
    let (started, api) = serve(dir.path(), PEOPLE).await;
    (dir, started, api)
}

const BROADCAST: &str = r#"
[store]
dir = "state"

[systems.src]
type = "jsonl"
dir = "src"

[systems.dst]
type = "jsonl"
dir = "dst"

[jobs.customers]
pattern = "broadcast"
systems = ["src", "dst"]
schedule = "manual"

[jobs.customers.sides.src]
file = "customers.jsonl"
key = ["id"]
fields = { id = "id", name = "name" }

[jobs.customers.sides.dst]
file = "customers.jsonl"
key = ["id"]
fields = { id = "id", name = "name" }
"#;

#[tokio::test]
async fn jobs_run_on_request_and_the_api_reports_them() {
    let dir = tempfile::tempdir().unwrap();
    for d in ["src", "dst"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    let rows: Vec<J> = (0..25)
        .map(|i| json!({"id": i, "name": format!("C{i}")}))
        .collect();
    write_jsonl(&dir.path().join("src/customers.jsonl"), &rows);
    let (cfg, state) = setup(dir.path(), BROADCAST);
    let opts = ServeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        token_env: token_env(),
    };
    let started = concord::serve::start(cfg.clone(), state.clone(), opts.clone())
        .await
        .unwrap();
    let api = Api {
        base: format!("http://{}", started.addr),
        c: reqwest::Client::new(),
    };
    // Health without a token; everything else asks for it.
    let h = api
        .c
        .get(format!("{}/healthz", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(h.status(), 200);
    for path in [
        "/status",
        "/jobs",
        "/metrics",
        "/runs",
        "/conflicts",
        "/readyz",
    ] {
        let r = api
            .c
            .get(format!("{}{path}", api.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path} without a token");
        let r = api
            .c
            .get(format!("{}{path}", api.base))
            .bearer_auth("serve-test-token-0123456788")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{path} with a wrong token");
    }
    assert_eq!(api.get("/readyz").await.0, 200);

    // A dry run plans and writes nothing; a run writes; the report says what.
    let (s, r) = api
        .post("/jobs/customers/runs", json!({"dry_run": true}))
        .await;
    assert_eq!(s, 202, "{r}");
    let dry = api.finished(r["id"].as_str().unwrap()).await;
    assert_eq!(dry["state"], "succeeded", "{dry}");
    assert_eq!(
        dry["report"]["planned"]["dst.customers.jsonl"]["creates"],
        25
    );
    assert!(read_jsonl(&dir.path().join("dst/customers.jsonl")).is_empty());
    let (s, r) = api.post("/jobs/customers/runs", json!({})).await;
    assert_eq!(s, 202, "{r}");
    let done = api.finished(r["id"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["trigger"], "request");
    assert_eq!(done["report"]["written"]["dst.customers.jsonl"], 25);
    assert_eq!(
        read_jsonl(&dir.path().join("dst/customers.jsonl")).len(),
        25
    );
    // Unknown job, bad body.
    assert_eq!(api.post("/jobs/nope/runs", json!({})).await.0, 404);
    assert_eq!(
        api.post("/jobs/customers/runs", json!({"dryrun": true}))
            .await
            .0,
        400
    );
    assert_eq!(api.get("/runs/run-999").await.0, 404);

    // Jobs, status, metrics.
    let (_, jobs) = api.get("/jobs").await;
    assert_eq!(jobs[0]["job"], "customers");
    assert_eq!(jobs[0]["schedule"], "manual");
    assert_eq!(jobs[0]["next_run_in_secs"], J::Null);
    assert_eq!(jobs[0]["runs"].as_array().unwrap().len(), 2);
    let (_, status) = api.get("/status").await;
    assert_eq!(status[0]["last_run"]["status"], "ok", "{status}");
    let m = api.metrics().await;
    assert!(
        m.contains(
            "concord_records_written_total{job=\"customers\",system=\"dst.customers.jsonl\"} 25"
        ),
        "{m}"
    );
    assert!(
        m.contains("concord_runs_total{job=\"customers\",outcome=\"succeeded\"} 2"),
        "{m}"
    );
    assert!(
        m.contains("concord_outbox_depth{system=\"dst.customers.jsonl\"} 0"),
        "{m}"
    );

    // One service per store.
    let second = concord::serve::start(cfg, state, opts).await.err().unwrap();
    assert!(second.to_string().contains("already served"), "{second}");

    started.stop().await;
    assert!(api
        .c
        .get(format!("{}/healthz", api.base))
        .send()
        .await
        .is_err());
}

#[tokio::test]
async fn a_scheduled_job_runs_on_its_own() {
    let dir = tempfile::tempdir().unwrap();
    for d in ["src", "dst"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    write_jsonl(
        &dir.path().join("src/customers.jsonl"),
        &[json!({"id": 1, "name": "A"})],
    );
    let text = BROADCAST.replace("schedule = \"manual\"", "interval_secs = 1");
    let (started, api) = serve(dir.path(), &text).await;
    let mut runs = J::Null;
    for _ in 0..60 {
        runs = api.get("/runs?job=customers").await.1;
        if runs
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["state"] == "succeeded" && r["trigger"] == "schedule")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        runs.as_array()
            .unwrap()
            .iter()
            .any(|r| r["trigger"] == "schedule" && r["state"] == "succeeded"),
        "{runs}"
    );
    assert_eq!(read_jsonl(&dir.path().join("dst/customers.jsonl")).len(), 1);
    started.stop().await;
}

#[tokio::test]
async fn a_parked_conflict_is_resolved_over_the_api_and_written() {
    let (dir, started, api) = people().await;
    let api = &api;
    let run = || async move {
        let (_, r) = api.post("/jobs/people/runs", json!({})).await;
        api.finished(r["id"].as_str().unwrap()).await
    };
    run().await;
    assert_eq!(read_jsonl(&dir.path().join("b/people.jsonl")).len(), 1);
    // Both sides change the city: the conflict is parked.
    write_jsonl(
        &dir.path().join("a/people.jsonl"),
        &[json!({"id": 1, "city": "Lyon"})],
    );
    write_jsonl(
        &dir.path().join("b/people.jsonl"),
        &[json!({"id": 1, "city": "Nice"})],
    );
    let r = run().await;
    assert_eq!(r["report"]["conflicts_parked"], 1, "{r}");
    let (_, list) = api.get("/conflicts").await;
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    let c = &list[0];
    assert_eq!(c["field"], "city");
    let sides: Vec<&str> = c["sides"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["value"].as_str().unwrap())
        .collect();
    assert!(
        sides.contains(&"\"Lyon\"") || sides.contains(&"Lyon"),
        "{c}"
    );
    let id = c["id"].as_str().unwrap().to_string();
    let (entity, field) = id.split_once('/').unwrap();
    // A bad choice is refused; taking b's value queues the run that writes it.
    let (s, _) = api
        .post(&format!("/conflicts/{entity}/{field}/resolve"), json!({}))
        .await;
    assert_eq!(s, 400);
    let (s, r) = api
        .post(
            &format!("/conflicts/{entity}/{field}/resolve"),
            json!({"take": "b"}),
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let done = api.finished(r["run"].as_str().unwrap()).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(
        read_jsonl(&dir.path().join("a/people.jsonl"))[0]["city"],
        "Nice"
    );
    assert_eq!(
        read_jsonl(&dir.path().join("b/people.jsonl"))[0]["city"],
        "Nice"
    );
    assert!(api.get("/conflicts").await.1.as_array().unwrap().is_empty());
    // The id in one segment (percent-encoded) works as well; an unknown one is 404.
    let (s, _) = api
        .post("/conflicts/00ff%2Fcity/resolve", json!({"take": "a"}))
        .await;
    assert_eq!(s, 404);
    // Reconcile over the API: no drift.
    let (s, r) = api.post("/jobs/people/reconcile", json!({})).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["drift_left"], 0, "{r}");
    started.stop().await;
}

/// The binary under SIGTERM in the middle of a pass: it stops after a chunk's checkpoint,
/// exits 0, and the next run writes the rest: every record once, none lost.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_pass_stops_after_a_checkpoint_and_loses_nothing() {
    use concord::sandbox::server::Faults;
    let (sb, sf) = crate::sf_common::sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    const N: usize = 3000;
    let rows: Vec<J> = (0..N)
        .map(|i| json!({"id": i, "name": format!("Acct {i:05}")}))
        .collect();
    write_jsonl(&dir.path().join("src/accounts.jsonl"), &rows);
    let text = format!(
        r#"{}
[jobs.accounts]
pattern = "migrate"
systems = ["src", "crm"]
chunk_size = 300
batch_size = 100
[jobs.accounts.sides.src]
file = "accounts.jsonl"
key = ["id"]
fields = {{ name = "name" }}
[jobs.accounts.sides.crm]
object = "Account"
entity_id_field = "Concord_Id__c"
fields = {{ name = "Name" }}
"#,
        jsonl_and_salesforce(&sf, "")
    );
    std::fs::write(dir.path().join("concord.toml"), &text).unwrap();
    // Every call takes 40 ms: the pass takes over a second.
    sb.set_faults(Faults {
        latency_ms: 40,
        ..Faults::default()
    });
    let tok = token_env();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_concord"))
        .arg("--config")
        .arg(dir.path().join("concord.toml"))
        .args(["serve", "--listen", "127.0.0.1:0", "--token-env", &tok])
        .env("CONCORD_LOG", "info")
        .env("CONCORD_LOG_FORMAT", "json")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut err = child.stderr.take().unwrap();
    let mut out = tokio::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut out, &mut line)
        .await
        .unwrap();
    let addr = line
        .split("http://")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    let api = Api {
        base: format!("http://{addr}"),
        c: reqwest::Client::new(),
    };
    let (s, r) = api.post("/jobs/accounts/runs", json!({})).await;
    assert_eq!(s, 202, "{r}");
    // Once some records are in Salesforce (a chunk or more), and well before all.
    let mut seen = 0;
    for _ in 0..400 {
        seen = crate::sf_common::count(&sb, "Account") as usize;
        if seen >= 300 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(seen > 0 && seen < N, "{seen}");
    let pid = child.id().unwrap() as i32;
    std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("stops")
        .unwrap();
    let mut rest = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut out, &mut rest)
        .await
        .unwrap();
    let mut logs = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut err, &mut logs)
        .await
        .unwrap();
    assert!(status.success(), "{status:?}\n{rest}\n{logs}");
    assert!(rest.contains("concord serve: stopped"), "{rest}");
    // CONCORD_LOG_FORMAT=json: every log line is a JSON object.
    let lines: Vec<J> = logs
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "concord serve: listening" && l["level"] == "INFO"),
        "{logs}"
    );
    let at_stop = crate::sf_common::count(&sb, "Account") as usize;
    assert!(at_stop < N, "the pass was stopped early ({at_stop} of {N})");
    // The next run (the CLI) writes the rest: every record exactly once.
    sb.set_faults(Faults::default());
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_concord"))
        .arg("--config")
        .arg(dir.path().join("concord.toml"))
        .args(["run", "accounts", "--verify"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    let names = crate::sf_common::soql(&sb, "SELECT Name FROM Account");
    let distinct: std::collections::BTreeSet<&str> =
        names.iter().map(|r| r["Name"].as_str().unwrap()).collect();
    assert_eq!((names.len(), distinct.len()), (N, N));
}

/// PostgreSQL in trigger mode announces its changes (`NOTIFY`): a manual-schedule job runs a
/// pass on the announcement alone, and the change reaches the destination.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_change_pushes_a_pass() {
    const PG: &str = "postgres://postgres@127.0.0.1:5432/test";
    let pg = match sqlx::PgPool::connect(PG).await {
        Ok(p) => p,
        Err(e) => return crate::common::skip_unreachable("PostgreSQL", e),
    };
    let table = format!("serve_push_{}", std::process::id());
    for s in [
        format!("DROP TABLE IF EXISTS {table}"),
        format!("CREATE TABLE {table} (id integer primary key, name text)"),
        format!("INSERT INTO {table} VALUES (1, 'first')"),
    ] {
        sqlx::raw_sql(&s).execute(&pg).await.unwrap();
    }
    let url = crate::sf_common::env_var("SERVE_PUSH_PG", PG);
    let o = std::process::Command::new(env!("CARGO_BIN_EXE_concord"))
        .args(["setup", "--url-env", &url, "--table", &table, "--key", "id"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("dst")).unwrap();
    let text = format!(
        r#"
[store]
dir = "state"
[systems.erp]
type = "postgres"
url_env = "{url}"
[systems.dst]
type = "jsonl"
dir = "dst"
[jobs.feed]
pattern = "broadcast"
systems = ["erp", "dst"]
schedule = "manual"
[jobs.feed.sides.erp]
table = "{table}"
key = ["id"]
mode = "trigger"
fields = {{ id = "id", name = "name" }}
[jobs.feed.sides.dst]
file = "out.jsonl"
key = ["id"]
fields = {{ id = "id", name = "name" }}
"#
    );
    let (started, api) = serve(dir.path(), &text).await;
    let (_, r) = api.post("/jobs/feed/runs", json!({})).await;
    assert_eq!(
        api.finished(r["id"].as_str().unwrap()).await["state"],
        "succeeded"
    );
    assert_eq!(read_jsonl(&dir.path().join("dst/out.jsonl")).len(), 1);
    // Give the listener its connection, then change the table: nobody asks for a run.
    tokio::time::sleep(Duration::from_millis(300)).await;
    sqlx::raw_sql(&format!("INSERT INTO {table} VALUES (2, 'pushed')"))
        .execute(&pg)
        .await
        .unwrap();
    let mut rows = Vec::new();
    for _ in 0..100 {
        rows = read_jsonl(&dir.path().join("dst/out.jsonl"));
        if rows.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, runs) = api.get("/runs?job=feed").await;
    assert_eq!(rows.len(), 2, "{rows:?} {runs}");
    assert!(
        runs.as_array()
            .unwrap()
            .iter()
            .any(|r| r["trigger"] == "push" && r["state"] == "succeeded"),
        "{runs}"
    );
    started.stop().await;
    // A change made while the service is stopped (PostgreSQL keeps no NOTIFY for a listener
    // that is gone): the service started again looks at once, push only as the job is.
    sqlx::raw_sql(&format!("INSERT INTO {table} VALUES (3, 'while stopped')"))
        .execute(&pg)
        .await
        .unwrap();
    let (started, _api) = serve(dir.path(), &text).await;
    for _ in 0..100 {
        rows = read_jsonl(&dir.path().join("dst/out.jsonl"));
        if rows.len() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(rows.len(), 3, "{rows:?}");
    started.stop().await;
    sqlx::raw_sql(&format!("DROP TABLE IF EXISTS {table}"))
        .execute(&pg)
        .await
        .unwrap();
}

/// A system that calls out: `POST /hooks/{job}` signed with the job's secret queues a pass;
/// a wrong or missing signature, or a job without a secret, queues nothing.
#[tokio::test]
async fn a_signed_webhook_runs_the_job() {
    let dir = tempfile::tempdir().unwrap();
    for d in ["src", "dst"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    write_jsonl(
        &dir.path().join("src/customers.jsonl"),
        &[json!({"id": 1, "name": "A"})],
    );
    let secret = "webhook-secret-0123456789";
    let var = crate::sf_common::env_var("SERVE_HOOK_SECRET", secret);
    let text = BROADCAST.replace(
        "schedule = \"manual\"",
        &format!("schedule = \"manual\"\nwebhook_secret_env = \"{var}\""),
    );
    let (started, api) = serve(dir.path(), &text).await;
    let body = br#"{"event": "customer.updated", "id": 1}"#;
    let post = |sig: Option<String>, job: &'static str| {
        let mut rb = api
            .c
            .post(format!("{}/hooks/{job}", api.base))
            .body(body.to_vec());
        if let Some(s) = sig {
            rb = rb.header("X-Concord-Signature", s);
        }
        rb.send()
    };
    assert_eq!(post(None, "customers").await.unwrap().status(), 401);
    let wrong = concord::serve::api::sign(b"another-secret-0123456789", body);
    assert_eq!(post(Some(wrong), "customers").await.unwrap().status(), 401);
    assert_eq!(
        post(Some("sha256=zz".into()), "customers")
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(post(Some("x".into()), "nope").await.unwrap().status(), 404);
    assert!(
        api.get("/runs").await.1.as_array().unwrap().is_empty(),
        "nothing queued"
    );
    let good = concord::serve::api::sign(secret.as_bytes(), body);
    let r = post(Some(good), "customers").await.unwrap();
    assert_eq!(r.status(), 202);
    let r: J = r.json().await.unwrap();
    let run = api.finished(r["run"].as_str().unwrap()).await;
    assert_eq!(
        (run["trigger"].as_str(), run["state"].as_str()),
        (Some("webhook"), Some("succeeded")),
        "{run}"
    );
    assert_eq!(read_jsonl(&dir.path().join("dst/customers.jsonl")).len(), 1);
    started.stop().await;
}

/// A sandbox org, a folder holding `dst/`, and the configuration of a broadcast of the org's
/// Accounts (their Name) into `dst/accounts.jsonl` on push only (`schedule = "manual"`);
/// `side` is added to the Salesforce side's table.
async fn accounts_on_push(
    side: &str,
) -> (
    std::sync::Arc<concord::sandbox::server::Sandbox>,
    tempfile::TempDir,
    String,
) {
    let (sb, sf) = crate::sf_common::sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("dst")).unwrap();
    let (sf_url, sf_tok) = (&sf.instance_url_env, sf.token_env.as_ref().unwrap());
    let text = format!(
        r#"
[store]
dir = "state"
[systems.crm]
type = "salesforce"
instance_url_env = "{sf_url}"
token_env = "{sf_tok}"
[systems.dst]
type = "jsonl"
dir = "dst"
[jobs.accounts]
pattern = "broadcast"
systems = ["crm", "dst"]
schedule = "manual"
[jobs.accounts.sides.crm]
object = "Account"
fields = {{ name = "Name" }}
{side}[jobs.accounts.sides.dst]
file = "accounts.jsonl"
key = ["id"]
fields = {{ name = "name" }}
"#
    );
    (sb, dir, text)
}

/// A configuration's store, a JSONL system `src` (folder `src`) and the sandbox org as `crm`
/// (`crm`: more keys for its system table).
fn jsonl_and_salesforce(
    sf: &concord::connector::salesforce::SalesforceConfig,
    crm: &str,
) -> String {
    let (sf_url, sf_tok) = (&sf.instance_url_env, sf.token_env.as_ref().unwrap());
    format!(
        r#"
[store]
dir = "state"
[systems.src]
type = "jsonl"
dir = "src"
[systems.crm]
type = "salesforce"
instance_url_env = "{sf_url}"
token_env = "{sf_tok}"
{crm}"#
    )
}

/// Makes an Account named `name` in the org and waits until it is the one row of
/// `dst/accounts.jsonl`; the job's runs.
async fn first_account_reaches_the_file(
    sb: &concord::sandbox::server::Sandbox,
    dir: &Path,
    api: &Api,
    name: &str,
) -> J {
    sb.org
        .lock()
        .unwrap()
        .create("Account", json!({ "Name": name }).as_object().unwrap())
        .unwrap();
    let rows = rows_reach(&dir.join("dst/accounts.jsonl"), 1).await;
    let (_, runs) = api.get("/runs?job=accounts").await;
    assert_eq!(rows.len(), 1, "{runs}");
    assert_eq!(rows[0]["name"], name);
    runs
}

/// Whether every run in `runs` (a `GET /runs` answer) was started by `trigger`.
fn every_run_by(runs: &J, trigger: &str) -> bool {
    runs.as_array()
        .unwrap()
        .iter()
        .all(|r| r["trigger"] == trigger)
}

/// `f`'s first `Some`, asked every 20 ms, `tries` times at most.
async fn eventually<T>(tries: usize, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    for _ in 0..tries {
        if let Some(v) = f() {
            return Some(v);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

/// The Streaming API calls the sandbox has answered so far.
fn streaming_calls(sb: &concord::sandbox::server::Sandbox) -> u64 {
    sb.counters().get("streaming").copied().unwrap_or(0)
}

/// The rows of a JSONL file once it holds at least `n` (or after 5 s).
async fn rows_reach(file: &Path, n: usize) -> Vec<J> {
    for _ in 0..200 {
        let rows = read_jsonl(file);
        if rows.len() >= n {
            return rows;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    read_jsonl(file)
}

/// Salesforce announces its changes through Change Data Capture over the Streaming API: a
/// manual-schedule job runs a pass on a create in the org alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_salesforce_change_pushes_a_pass() {
    let (sb, dir, text) = accounts_on_push("").await;
    let (started, api) = serve(dir.path(), &text).await;
    // Until the feed has subscribed (its first handshake), nothing is announced.
    eventually(200, || (streaming_calls(&sb) >= 4).then_some(())).await;
    let runs = first_account_reaches_the_file(&sb, dir.path(), &api, "Pushed").await;
    assert!(every_run_by(&runs, "push"), "{runs}");
    // The write's end-to-end lag (Salesforce keeps modification times) and the org's API
    // usage share are in the metrics.
    let m = api.metrics().await;
    assert!(
        m.contains("concord_lag_writes_total{job=\"accounts\",system=\"dst.accounts.jsonl\"} 1"),
        "{m}"
    );
    let lag: f64 = m
        .lines()
        .find(|l| l.starts_with("concord_lag_max_seconds{job=\"accounts\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{m}"));
    assert!((0.0..5.0).contains(&lag), "{lag}");
    assert!(
        m.contains("concord_api_usage_ratio{system=\"crm.Account\"}"),
        "{m}"
    );
    started.stop().await;
}

/// An org where the object is not selected for Change Data Capture: `push_topic` makes the
/// feed listen to a PushTopic instead, created by the connector when the org has none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_topic_announces_the_changes() {
    let (sb, dir, text) = accounts_on_push("push_topic = \"ConcordAccounts\"\n").await;
    let (started, api) = serve(dir.path(), &text).await;
    let topic = || {
        let q = concord::sandbox::soql::parse(
            "SELECT Id, Query, NotifyForFields FROM PushTopic WHERE Name = 'ConcordAccounts'",
        )
        .unwrap();
        match sb.org.lock().unwrap().query(&q, false, "59.0").unwrap() {
            concord::sandbox::org::QueryResult::Rows(r) => r,
            _ => unreachable!(),
        }
    };
    let found = eventually(200, || Some(topic()).filter(|f| !f.is_empty()))
        .await
        .unwrap_or_default();
    assert_eq!(found.len(), 1, "the connector created its PushTopic");
    assert_eq!(found[0]["Query"], "SELECT Id FROM Account");
    assert_eq!(found[0]["NotifyForFields"], "All");
    // The first pass (nothing stored yet) has run; then a change announced on the topic.
    tokio::time::sleep(Duration::from_millis(300)).await;
    first_account_reaches_the_file(&sb, dir.path(), &api, "Via topic").await;
    // The feed's position is the topic's replay id.
    let state = started.service.state.clone();
    let crm = concord::model::SystemId::new("crm.Account").unwrap();
    let pos = eventually(100, || state.feed_position("accounts", &crm).unwrap()).await;
    let pos: J = serde_json::from_slice(&pos.expect("stored")).unwrap();
    assert!(pos["/topic/ConcordAccounts"].as_i64().is_some(), "{pos}");
    drop(state);
    started.stop().await;
}

/// The Salesforce feed's position (replay ids) is stored with the cursor of each pass: a
/// change made while the service was stopped is announced again when it starts (a job run on
/// push only picks it up at once), and a stored replay id the org no longer holds makes a pass
/// look instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_salesforce_change_made_while_stopped_is_replayed_on_start() {
    let (sb, dir, text) = accounts_on_push("").await;
    let file = dir.path().join("dst/accounts.jsonl");
    let create = |name: &str| {
        sb.org
            .lock()
            .unwrap()
            .create("Account", json!({ "Name": name }).as_object().unwrap())
            .unwrap();
    };
    let listening = |n: u64| {
        let sb = sb.clone();
        async move {
            eventually(200, || (streaming_calls(&sb) >= n).then_some(()))
                .await
                .expect("the feed did not subscribe");
        }
    };
    let names_reach = |n: usize| {
        let file = file.clone();
        async move {
            let mut names: Vec<String> = rows_reach(&file, n)
                .await
                .iter()
                .map(|r| r["name"].as_str().unwrap().to_string())
                .collect();
            names.sort();
            names
        }
    };
    let crm = concord::model::SystemId::new("crm.Account").unwrap();
    let stored = |state: &StateStore| -> Option<J> {
        state
            .feed_position("accounts", &crm)
            .unwrap()
            .map(|p| serde_json::from_slice(&p).unwrap())
    };
    let streaming = || streaming_calls(&sb);

    // 1. Running: a change is pushed; the pass stores the feed's position with its cursor.
    let (started, api) = serve(dir.path(), &text).await;
    listening(streaming() + 4).await;
    create("First");
    assert_eq!(names_reach(1).await, ["First"]);
    for _ in 0..100 {
        let (_, runs) = api.get("/runs?job=accounts").await;
        if runs
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["state"] == "succeeded")
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let state = started.service.state.clone();
    let pos = stored(&state).expect("a feed position stored with the cursor");
    assert!(
        pos["/data/AccountChangeEvent"]
            .as_i64()
            .is_some_and(|r| r > 0),
        "{pos}"
    );
    started.stop().await;
    drop(state);

    // 2. Stopped: a change nobody hears. Started again (push only, no schedule), the feed
    //    subscribes from the stored replay id, the change is announced again and synced.
    create("Second");
    let before = streaming();
    let (started, api) = serve(dir.path(), &text).await;
    listening(before + 4).await;
    assert_eq!(names_reach(2).await, ["First", "Second"]);
    let (_, runs) = api.get("/runs?job=accounts").await;
    assert!(every_run_by(&runs, "push"), "{runs}");
    let state = started.service.state.clone();
    let newer = eventually(100, || stored(&state).filter(|p| *p != pos))
        .await
        .unwrap_or_else(|| stored(&state).unwrap());
    assert!(
        newer["/data/AccountChangeEvent"].as_i64() > pos["/data/AccountChangeEvent"].as_i64(),
        "{pos} then {newer}"
    );
    started.stop().await;

    // 3. A stored replay id the org does not hold (its events are gone): the feed goes on from
    //    new events and a pass looks at once.
    let mut cp = state.checkpoint();
    cp.put_feed_position(
        "accounts",
        &crm,
        json!({"/data/AccountChangeEvent": 987_654_321})
            .to_string()
            .as_bytes(),
    );
    state.commit(cp).unwrap();
    drop(state);
    create("Third");
    let before = streaming();
    let (started, _api) = serve(dir.path(), &text).await;
    assert_eq!(names_reach(3).await, ["First", "Second", "Third"]);
    // The refused id is dropped: the next change is pushed and its replay id stored (review
    // finding: the refused id stayed the feed's position, above every new one, for good).
    listening(before + 4).await;
    create("Fourth");
    assert_eq!(names_reach(4).await, ["First", "Fourth", "Second", "Third"]);
    let state = started.service.state.clone();
    let fresh = eventually(100, || {
        stored(&state).filter(|p| p["/data/AccountChangeEvent"].as_i64() < Some(987_654_321))
    })
    .await;
    assert!(fresh.is_some(), "{:?}", stored(&state));
    drop(state);
    started.stop().await;
}

/// `GET /jobs/{job}/records/{match-key}` on an aggregate job: the golden record with each
/// field's source, from the store (as of the last pass) or read through (a pass first).
#[tokio::test]
async fn the_golden_record_of_a_match_key_with_its_provenance() {
    let dir = tempfile::tempdir().unwrap();
    for d in ["erp", "crm", "out"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    write_jsonl(
        &dir.path().join("erp/customers.jsonl"),
        &[json!({"id": 1, "company": "Acme  Corp", "phone": "555"})],
    );
    write_jsonl(
        &dir.path().join("crm/accounts.jsonl"),
        &[json!({"id": "a", "company": "acme corp", "phone": "999", "city": "Paris"})],
    );
    let text = r#"
[store]
dir = "state"
[systems.erp]
type = "jsonl"
dir = "erp"
[systems.crm]
type = "jsonl"
dir = "crm"
[systems.out]
type = "jsonl"
dir = "out"
[jobs.golden]
pattern = "aggregate"
systems = ["erp", "crm", "out"]
schedule = "manual"
[jobs.golden.conflict]
default = "priority:erp,crm"
[jobs.golden.match]
fields = [{ field = "company", normalize = "whitespace" }]
[jobs.golden.sides.erp]
file = "customers.jsonl"
key = ["id"]
fields = { company = "company", phone = "phone" }
[jobs.golden.sides.crm]
file = "accounts.jsonl"
key = ["id"]
fields = { company = "company", phone = "phone", city = "city" }
[jobs.golden.sides.out]
file = "golden.jsonl"
key = ["id"]
fields = { company = "company", phone = "phone", city = "city" }
"#;
    let (started, api) = serve(dir.path(), text).await;
    let (_, r) = api.post("/jobs/golden/runs", json!({})).await;
    assert_eq!(
        api.finished(r["id"].as_str().unwrap()).await["state"],
        "succeeded"
    );
    let (s, g) = api.get("/jobs/golden/records/ACME%20corp").await;
    assert_eq!(s, 200, "{g}");
    assert_eq!(g["record"]["phone"], "555", "the ERP first: {g}");
    assert_eq!(g["record"]["city"], "Paris");
    assert_eq!(g["provenance"]["phone"], "erp.customers.jsonl");
    assert_eq!(g["provenance"]["city"], "crm.accounts.jsonl");
    assert_eq!(g["freshness"], "store");
    assert!(g["as_of_ms"].is_i64(), "{g}");
    // A source changes: the store answers what the last pass saw; read through, the new value.
    write_jsonl(
        &dir.path().join("crm/accounts.jsonl"),
        &[json!({"id": "a", "company": "acme corp", "phone": "999", "city": "Lyon"})],
    );
    assert_eq!(
        api.get("/jobs/golden/records/acme%20corp").await.1["record"]["city"],
        "Paris"
    );
    let (_, g) = api
        .get("/jobs/golden/records/acme%20corp?freshness=read_through")
        .await;
    assert_eq!(
        (g["record"]["city"].as_str(), g["freshness"].as_str()),
        (Some("Lyon"), Some("read_through")),
        "{g}"
    );
    assert_eq!(api.get("/jobs/golden/records/initech").await.0, 404);
    assert_eq!(
        api.get("/jobs/golden/records/acme?freshness=live").await.0,
        400
    );
    assert_eq!(
        api.get("/jobs/golden/records/a%7Cb").await.0,
        400,
        "one match field"
    );
    // A source that cannot be read: read through refuses instead of answering stale.
    std::fs::write(dir.path().join("crm/accounts.jsonl"), "{not json\n").unwrap();
    let (s, e) = api
        .get("/jobs/golden/records/acme%20corp?freshness=read_through")
        .await;
    assert_eq!(s, 502, "{e}");
    started.stop().await;
}

/// The web console over HTTP: sign-in with the API token (a session cookie), the dashboard, a
/// parked conflict shown escaped and resolved by its form (the CSRF token checked), the run
/// that writes it, its report page.
#[tokio::test]
async fn the_console_shows_jobs_and_resolves_a_conflict_with_csrf() {
    let (dir, started, api) = people().await;
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let base = api.base.clone();
    // Not signed in: to the sign-in page; a wrong token is refused.
    let r = c.get(format!("{base}/console")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/console/login");
    let r = c
        .post(format!("{base}/console/login"))
        .form(&[("token", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .post(format!("{base}/console/login"))
        .form(&[("token", TOKEN)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let cookie = cookie.split(';').next().unwrap().to_string();
    let page = |path: &'static str| {
        let (c, base, cookie) = (c.clone(), base.clone(), cookie.clone());
        async move {
            let r = c
                .get(format!("{base}{path}"))
                .header("cookie", cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200, "{path}");
            r.text().await.unwrap()
        }
    };
    let html = page("/console").await;
    assert!(
        html.contains("id=\"job-people\"") && html.contains("Run now") && html.contains("manual"),
        "{html}"
    );

    // A conflict, one side's value with markup in it.
    api.post("/jobs/people/runs", json!({})).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    write_jsonl(
        &dir.path().join("a/people.jsonl"),
        &[json!({"id": 1, "city": "Lyon"})],
    );
    write_jsonl(
        &dir.path().join("b/people.jsonl"),
        &[json!({"id": 1, "city": "<b>Nice</b>"})],
    );
    let (_, r) = api.post("/jobs/people/runs", json!({})).await;
    assert_eq!(
        api.finished(r["id"].as_str().unwrap()).await["report"]["conflicts_parked"],
        1
    );
    let html = page("/console/conflicts").await;
    assert!(
        html.contains("&lt;b&gt;Nice&lt;&#x2f;b&gt;") && !html.contains("<b>Nice</b>"),
        "escaped: {html}"
    );
    let field = |name: &str| {
        let pattern = format!("name=\"{name}\" value=\"");
        let at = html.find(&pattern).unwrap() + pattern.len();
        // As a browser reads the attribute: entities decoded.
        html[at..].split('"').next().unwrap().replace("&#x2f;", "/")
    };
    let (csrf, id) = (field("csrf"), field("id"));
    let resolve = |csrf: String| {
        let (c, base, cookie, id) = (c.clone(), base.clone(), cookie.clone(), id.clone());
        async move {
            c.post(format!("{base}/console/conflicts/resolve"))
                .header("cookie", cookie)
                .form(&[("csrf", csrf.as_str()), ("id", id.as_str()), ("take", "a")])
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(resolve("forged".into()).await.status(), 403);
    let r = c
        .post(format!("{base}/console/conflicts/resolve"))
        .form(&[("csrf", csrf.as_str()), ("id", id.as_str()), ("take", "a")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303, "no session: to sign-in");
    assert_eq!(r.headers()["location"], "/console/login");
    let r = resolve(csrf.clone()).await;
    assert_eq!(r.status(), 303);
    // The run it queued writes a's value everywhere.
    let mut done = false;
    for _ in 0..100 {
        let b = read_jsonl(&dir.path().join("b/people.jsonl"));
        if b[0]["city"] == "Lyon" {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(done, "resolution written");
    assert!(page("/console/conflicts")
        .await
        .contains("id=\"no-conflicts\""));
    let (_, runs) = api.get("/runs?job=people").await;
    let last = runs[0]["id"].as_str().unwrap().to_string();
    let r = c
        .get(format!("{base}/console/runs/{last}"))
        .header("cookie", cookie.clone())
        .send()
        .await
        .unwrap();
    let html = r.text().await.unwrap();
    assert!(
        html.contains("id=\"run-state\"") && html.contains("b.people.jsonl"),
        "{html}"
    );
    started.stop().await;
}

/// MariaDB under the service: no announcements there (column mode), so the job's schedule
/// polls; a row inserted in MariaDB reaches the sandbox's Account on the next scheduled pass.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mariadb_job_runs_on_its_schedule_into_salesforce() {
    const MY: &str = "mysql://root@127.0.0.1:3306/test";
    let my = match sqlx::MySqlPool::connect(MY).await {
        Ok(p) => p,
        Err(e) => return crate::common::skip_unreachable("MariaDB", e),
    };
    let table = format!("serve_my_{}", std::process::id());
    for s in [
        format!("DROP TABLE IF EXISTS {table}"),
        format!("CREATE TABLE {table} (id int primary key, name varchar(80), updated_at timestamp(3) not null default current_timestamp(3) on update current_timestamp(3))"),
        format!("INSERT INTO {table} (id, name) VALUES (1, 'First Co')"),
    ] {
        sqlx::raw_sql(&s).execute(&my).await.unwrap();
    }
    let (sb, sf) = crate::sf_common::sandbox().await;
    let (sf_url, sf_tok) = (sf.instance_url_env.clone(), sf.token_env.clone().unwrap());
    let url = crate::sf_common::env_var("SERVE_MY_URL", MY);
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        r#"
[store]
dir = "state"
[systems.erp]
type = "mysql"
url_env = "{url}"
[systems.crm]
type = "salesforce"
instance_url_env = "{sf_url}"
token_env = "{sf_tok}"
[jobs.accounts]
pattern = "broadcast"
systems = ["erp", "crm"]
interval_secs = 1
[jobs.accounts.sides.erp]
table = "{table}"
key = ["id"]
mode = "column"
updated_column = "updated_at"
fields = {{ name = "name" }}
[jobs.accounts.sides.crm]
object = "Account"
entity_id_field = "Concord_Id__c"
fields = {{ name = "Name" }}
"#
    );
    let (started, api) = serve(dir.path(), &text).await;
    let names = || -> Vec<String> {
        crate::sf_common::soql(&sb, "SELECT Name FROM Account ORDER BY Name")
            .iter()
            .map(|r| r["Name"].as_str().unwrap().to_string())
            .collect()
    };
    let wait = |want: usize| async move {
        for _ in 0..200 {
            if names().len() >= want {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    };
    wait(1).await;
    assert_eq!(names(), ["First Co"]);
    sqlx::raw_sql(&format!(
        "INSERT INTO {table} (id, name) VALUES (2, 'Second Co')"
    ))
    .execute(&my)
    .await
    .unwrap();
    wait(2).await;
    assert_eq!(names(), ["First Co", "Second Co"]);
    let (_, runs) = api.get("/runs?job=accounts").await;
    assert!(
        every_run_by(&runs, "schedule"),
        "no push from MariaDB: {runs}"
    );
    started.stop().await;
    sqlx::raw_sql(&format!("DROP TABLE IF EXISTS {table}"))
        .execute(&my)
        .await
        .unwrap();
}

/// Creates whose answer was lost and that the org may still be making wait for its in-flight
/// limit; the service comes back for them once it has passed, with no trigger (a job run on
/// request or push only might not run again for long).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creates_waiting_for_a_request_in_flight_go_out_when_its_limit_has_passed() {
    let (sb, sf) = crate::sf_common::sandbox().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    // Two records Salesforce takes, one it refuses (a Name over 255 characters).
    let long = "x".repeat(300);
    let source = dir.path().join("src/people.jsonl");
    std::fs::write(&source, "").unwrap();
    let records = format!(
        "{{\"id\": 1, \"name\": \"Ada\"}}\n{{\"id\": 2, \"name\": \"Grace\"}}\n{{\"id\": 3, \"name\": \"{long}\"}}\n"
    );
    let text = format!(
        r#"{}
[jobs.people]
pattern = "broadcast"
systems = ["src", "crm"]
schedule = "manual"
push = false
[jobs.people.sides.src]
file = "people.jsonl"
key = ["id"]
fields = {{ name = "name" }}
[jobs.people.sides.crm]
object = "Account"
fields = {{ name = "Name" }}
"#,
        jsonl_and_salesforce(&sf, "in_flight_secs = 1\n")
    );
    let (started, api) = serve(dir.path(), &text).await;
    async fn run(api: &Api) -> J {
        let (s, r) = api.post("/jobs/people/runs", json!({})).await;
        assert_eq!(s, 202, "{r}");
        api.finished(r["id"].as_str().unwrap()).await
    }
    // 0. A first run with nothing to do (the job meets the org).
    assert_eq!(run(&api).await["state"], "succeeded");
    // 1. Every answer is lost: the org makes two Accounts and refuses the third, unseen.
    std::fs::write(&source, records).unwrap();
    sb.set_faults(concord::sandbox::server::Faults {
        rate_drop: 1.0,
        ..Default::default()
    });
    let first = run(&api).await;
    assert_eq!(first["state"], "partial", "{first}");
    sb.set_faults(Default::default());
    // 2. The two made are found and linked; the third is not found, but the org may still be
    //    making it: it waits, and the report says until when.
    let second = run(&api).await;
    assert_eq!(second["report"]["in_flight"]["crm.Account"], 1, "{second}");
    assert!(
        second["report"]["in_flight_due_ms"].as_i64().is_some(),
        "{second}"
    );
    assert_eq!(crate::sf_common::count(&sb, "Account"), 2);
    let waiting = "concord_creates_in_flight{job=\"people\",system=\"crm.Account\"}";
    let m = api.metrics().await;
    assert!(m.contains(&format!("{waiting} 1")), "{m}");
    // 3. With no request, the service runs again once the limit has passed: the create goes
    //    out (and is refused); nothing is made twice.
    let mut third = J::Null;
    for _ in 0..150 {
        let (_, runs) = api.get("/runs?job=people").await;
        let runs = runs.as_array().unwrap().clone();
        if let Some(r) = runs.iter().find(|r| {
            r["trigger"] == "schedule" && !matches!(r["state"].as_str(), Some("queued" | "running"))
        }) {
            third = r.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        third["trigger"], "schedule",
        "no run came back for the waiting create"
    );
    let report = &third["report"];
    assert_eq!(report["in_flight"], json!({}), "{third}");
    assert_eq!(report["failed_writes"], 1, "refused: {third}");
    let waited = third["started_ms"].as_i64().unwrap()
        - second["report"]["in_flight_due_ms"].as_i64().unwrap();
    assert!(
        waited >= 0,
        "it ran before the limit had passed: {waited} ms"
    );
    assert_eq!(crate::sf_common::count(&sb, "Account"), 2);
    let m = api.metrics().await;
    assert!(m.contains(&format!("{waiting} 0")), "{m}");
    started.stop().await;
}
