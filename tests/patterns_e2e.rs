//! Every pattern from its documented example (docs/examples/*.toml), end to end: the `concord`
//! binary against the Salesforce sandbox (in this process) and a SQLite ERP loaded with the
//! shared fixtures' Northwind data; NATS JetStream for broadcast (skipped with a printed reason
//! when unreachable, unless CONCORD_REQUIRE_SERVICES=1).

use crate::sf_common;
use concord::sandbox::launch::Launched;
use serde_json::{json, Value as J};
use sqlx::Row;
use std::path::{Path, PathBuf};

const MATCH_KEY: &str = "an e2e secret of at least thirty-two characters";

struct Env {
    dir: PathBuf,
    sb: Launched,
    erp_url: String,
    erp: sqlx::SqlitePool,
}

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/examples")
}

async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap().keep();
    for f in std::fs::read_dir(examples()).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml") {
            std::fs::copy(&p, dir.join(p.file_name().unwrap())).unwrap();
        }
    }
    let sb = sf_common::examples_sandbox(dir.join("sandbox-schema.toml")).await;
    let erp_url = format!("sqlite:{}?mode=rwc", dir.join("erp.db").display());
    let pool = concord::connector::sql::Pool::connect(&erp_url, "erp", "load")
        .await
        .unwrap();
    let dump = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/erp/northwind.sql"),
    )
    .unwrap();
    concord::connector::sql::dump::load(&pool, None, &dump)
        .await
        .unwrap();
    pool.close().await;
    let erp = sqlx::SqlitePool::connect(&erp_url).await.unwrap();
    Env {
        dir,
        sb,
        erp_url,
        erp,
    }
}

impl Env {
    /// Runs the binary in the env's folder; returns (exit code, stdout, stderr).
    async fn concord(&self, args: &[&str]) -> (i32, String, String) {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_concord"));
        cmd.current_dir(&self.dir)
            .env("SF_URL", &self.sb.base_url)
            .env("SF_TOKEN", "dev")
            .env("ERP_URL", &self.erp_url)
            .env("NATS_URL", "nats://127.0.0.1:4222")
            .env("CONCORD_MATCH_KEY", MATCH_KEY)
            .env_remove("CONCORD_CONFIG")
            .args(args);
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .unwrap()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// `concord run` with a JSON report; asserts the exit code.
    async fn run(&self, config: &str, args: &[&str], want: i32) -> J {
        let mut a = vec!["--config", config, "run", "--json"];
        a.extend_from_slice(args);
        let (code, out, err) = self.concord(&a).await;
        assert_eq!(code, want, "concord {a:?}\nstdout: {out}\nstderr: {err}");
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    fn soql(&self, q: &str) -> Vec<J> {
        sf_common::soql(&self.sb.sandbox, q)
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query(sql)
            .fetch_one(&self.erp)
            .await
            .unwrap()
            .get::<i64, _>(0)
    }
}

fn total(report: &J, what: &str) -> u64 {
    report
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|j| j[what].as_object().cloned().unwrap_or_default())
        .map(|(_, n)| n.as_u64().unwrap_or(0))
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_example_with_references_verify_and_rerun() {
    let e = env().await;
    let r = e.run("migrate.toml", &["--all", "--verify"], 0).await;
    let scope = "('Germany', 'France', 'UK', 'USA')";
    let customers = e
        .count(&format!(
            "SELECT COUNT(*) FROM customers WHERE country IN {scope}"
        ))
        .await;
    let orders = e
        .count(&format!(
            "SELECT COUNT(*) FROM orders WHERE ship_country IN {scope}"
        ))
        .await;
    assert!(customers > 30 && orders > 300);
    assert_eq!(e.soql("SELECT COUNT() FROM Account")[0], json!(customers));
    assert_eq!(e.soql("SELECT COUNT() FROM Opportunity")[0], json!(orders));
    assert!(
        r.as_array().unwrap().iter().all(|j| j["verified"] == true),
        "{r}"
    );
    // References: every Opportunity's Account is the one its order's customer became.
    let rows = sqlx::query(&format!(
        "SELECT ship_name, customer_id, freight FROM orders WHERE ship_country IN {scope} LIMIT 25"
    ))
    .fetch_all(&e.erp)
    .await
    .unwrap();
    for row in rows {
        let name: String = row.get(0);
        let cust: String = row.get(1);
        let opps = e.soql(&format!(
            "SELECT Name, Account.Erp_Id__c FROM Opportunity WHERE Name = '{}'",
            name.replace('\'', "\\'")
        ));
        assert!(!opps.is_empty(), "{name}");
        assert!(
            opps.iter()
                .all(|o| o["Account"]["Erp_Id__c"] == json!(cust)),
            "{name}: {opps:?}"
        );
    }
    // Idempotent: a second run writes nothing and still verifies.
    let r = e.run("migrate.toml", &["--all", "--verify"], 0).await;
    assert_eq!(total(&r, "written"), 0, "{r}");
    // A source change flows on the next run; the target is never read back.
    sqlx::query("UPDATE customers SET phone = '030-0000000' WHERE customer_id = 'ALFKI'")
        .execute(&e.erp)
        .await
        .unwrap();
    let r = e.run("migrate.toml", &["accounts"], 0).await;
    assert_eq!(total(&r, "written"), 1, "{r}");
    assert_eq!(
        e.soql("SELECT Phone FROM Account WHERE Erp_Id__c = 'ALFKI'")[0]["Phone"],
        "030-0000000"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidirectional_example_merges_parks_resolves_and_never_echoes() {
    let e = env().await;
    let r = e.run("bidirectional.toml", &["accounts"], 0).await;
    assert_eq!(
        total(&r, "written"),
        91,
        "every customer became an Account: {r}"
    );
    let r = e.run("bidirectional.toml", &["accounts"], 0).await;
    assert_eq!(total(&r, "written"), 0, "no echo writes: {r}");
    // Concurrent edits of different fields merge; the same field edited on both sides goes to
    // the policy: phone prefers the ERP, name waits for a person.
    let acct = e.soql("SELECT Id FROM Account WHERE Name = 'Alfreds Futterkiste'")[0]["Id"]
        .as_str()
        .unwrap()
        .to_string();
    {
        let mut org = e.sb.sandbox.org.lock().unwrap();
        let m = |v: J| v.as_object().unwrap().clone();
        org.update(
            "Account",
            &acct,
            &m(json!({"BillingCity": "Potsdam", "Phone": "sf-phone", "Name": "Alfreds (SF)"})),
        )
        .unwrap();
    }
    sqlx::query("UPDATE customers SET contact_name = 'Maria Anders-Schmidt', phone = 'erp-phone', company_name = 'Alfreds (ERP)' WHERE customer_id = 'ALFKI'")
        .execute(&e.erp)
        .await
        .unwrap();
    let r = e.run("bidirectional.toml", &["accounts"], 0).await;
    assert_eq!(r[0]["conflicts_parked"], 1, "{r}");
    let a = &e.soql(&format!(
        "SELECT Name, Phone, BillingCity, Description FROM Account WHERE Id = '{acct}'"
    ))[0];
    assert_eq!(
        (
            a["BillingCity"].as_str(),
            a["Phone"].as_str(),
            a["Description"].as_str()
        ),
        (
            Some("Potsdam"),
            Some("erp-phone"),
            Some("Maria Anders-Schmidt")
        )
    );
    let row =
        sqlx::query("SELECT city, phone, company_name FROM customers WHERE customer_id = 'ALFKI'")
            .fetch_one(&e.erp)
            .await
            .unwrap();
    assert_eq!(
        (row.get::<String, _>(0), row.get::<String, _>(1)),
        ("Potsdam".into(), "erp-phone".into())
    );
    assert_eq!(
        row.get::<String, _>(2),
        "Alfreds (ERP)",
        "the parked field keeps each side's value"
    );
    assert_eq!(a["Name"], "Alfreds (SF)");
    // The queue shows it; resolving writes the choice everywhere.
    let (code, out, _) = e
        .concord(&[
            "--config",
            "bidirectional.toml",
            "conflicts",
            "list",
            "--json",
        ])
        .await;
    assert_eq!(code, 0);
    let list: J = serde_json::from_str(&out).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1);
    let id = list[0]["id"].as_str().unwrap().to_string();
    assert!(id.ends_with("/name"));
    // A side that is not one names the sides; the system's name is enough when it names one
    // side (issue 12: `--take erp` was refused, wanting `erp.customers`, without saying so).
    let (code, _, err) = e
        .concord(&[
            "--config",
            "bidirectional.toml",
            "conflicts",
            "resolve",
            &id,
            "--take",
            "nope",
        ])
        .await;
    assert_eq!(code, 1);
    assert!(
        err.contains("the sides are: ")
            && err.contains("crm.Account")
            && err.contains("erp.customers"),
        "{err}"
    );
    let (code, _, err) = e
        .concord(&[
            "--config",
            "bidirectional.toml",
            "conflicts",
            "resolve",
            &id,
            "--take",
            "erp",
        ])
        .await;
    assert_eq!(code, 0, "{err}");
    e.run("bidirectional.toml", &["accounts"], 0).await;
    assert_eq!(
        e.soql(&format!("SELECT Name FROM Account WHERE Id = '{acct}'"))[0]["Name"],
        "Alfreds (ERP)"
    );
    let (_, out, _) = e
        .concord(&[
            "--config",
            "bidirectional.toml",
            "conflicts",
            "list",
            "--json",
        ])
        .await;
    assert_eq!(serde_json::from_str::<J>(&out).unwrap(), json!([]));
    // A delete in Salesforce deletes the customer (delete_wins).
    let gone = e.soql("SELECT Id FROM Account WHERE Name = 'Around the Horn'")[0]["Id"]
        .as_str()
        .unwrap()
        .to_string();
    e.sb.sandbox
        .org
        .lock()
        .unwrap()
        .delete("Account", &gone)
        .unwrap();
    e.run("bidirectional.toml", &["accounts"], 0).await;
    assert_eq!(
        e.count("SELECT COUNT(*) FROM customers WHERE customer_id = 'AROUT'")
            .await,
        0
    );
    let r = e.run("bidirectional.toml", &["accounts"], 0).await;
    assert_eq!(total(&r, "written"), 0, "settled: {r}");
    // Status shows the job.
    let (code, out, _) = e
        .concord(&["--config", "bidirectional.toml", "status", "--json"])
        .await;
    assert_eq!(code, 0);
    let s: J = serde_json::from_str(&out).unwrap();
    assert_eq!(s[0]["job"], "accounts");
    assert_eq!(s[0]["open_conflicts"], 0);
    assert!(s[0]["runs"].as_u64().unwrap() >= 5);
}

async fn nats_ok() -> bool {
    crate::compliance::service("NATS", 4222).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_example_to_files_and_nats_with_an_isolated_failure() {
    if !nats_ok().await {
        return;
    }
    let e = env().await;
    e.run("bidirectional.toml", &["accounts"], 0).await; // Accounts to broadcast
                                                         // A unique stream and subject for this test run.
    let tag = format!("{}", std::process::id());
    let cfg = std::fs::read_to_string(e.dir.join("broadcast.toml"))
        .unwrap()
        .replace("stream = \"CONCORD\"", &format!("stream = \"E2E{tag}\""))
        .replace(
            "subject = \"concord.accounts\"",
            &format!("subject = \"e2e{tag}.accounts\""),
        );
    std::fs::write(e.dir.join("broadcast.toml"), cfg).unwrap();
    let r = e.run("broadcast.toml", &["accounts"], 0).await;
    let w = &r[0]["written"];
    assert_eq!(
        (
            w["feed.accounts.jsonl"].as_u64(),
            w["extract.accounts.csv"].as_u64()
        ),
        (Some(91), Some(91)),
        "{r}"
    );
    assert_eq!(w[format!("bus.e2e{tag}.accounts")].as_u64(), Some(91));
    let csv = std::fs::read_to_string(e.dir.join("out/accounts.csv")).unwrap();
    assert_eq!(csv.lines().count(), 92);
    assert!(csv.contains("BERLIN"), "the extract's city is upper-cased");
    // The stream holds one event per record.
    let js =
        async_nats::jetstream::new(async_nats::connect("nats://127.0.0.1:4222").await.unwrap());
    let mut stream = js.get_stream(format!("E2E{tag}")).await.unwrap();
    assert_eq!(stream.info().await.unwrap().state.messages, 91);
    // NATS goes away: the files still get the change, the bus's writes wait (exit 3).
    let acct = e.soql("SELECT Id FROM Account WHERE Name = 'Alfreds Futterkiste'")[0]["Id"]
        .as_str()
        .unwrap()
        .to_string();
    {
        let mut org = e.sb.sandbox.org.lock().unwrap();
        org.clock_offset_ms = 5_000;
        org.update(
            "Account",
            &acct,
            json!({"Phone": "+49 30 1"}).as_object().unwrap(),
        )
        .unwrap();
    }
    let cfg = std::fs::read_to_string(e.dir.join("broadcast.toml"))
        .unwrap()
        .replace("url_env = \"NATS_URL\"", "url_env = \"NATS_DOWN_URL\"");
    std::fs::write(e.dir.join("broadcast-down.toml"), cfg).unwrap();
    let mut a = vec![
        "--config",
        "broadcast-down.toml",
        "run",
        "--json",
        "accounts",
    ];
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_concord"));
    cmd.current_dir(&e.dir)
        .env("SF_URL", &e.sb.base_url)
        .env("SF_TOKEN", "dev")
        .env("NATS_DOWN_URL", "nats://127.0.0.1:1")
        .args(a.drain(..));
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: J = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r[0]["written"]["feed.accounts.jsonl"], 1);
    assert!(
        r[0]["system_errors"]
            .as_object()
            .unwrap()
            .keys()
            .any(|k| k.starts_with("bus.")),
        "{r}"
    );
    // Back up: the bus gets what it missed.
    let r = e.run("broadcast.toml", &["accounts"], 0).await;
    assert_eq!(r[0]["written"][format!("bus.e2e{tag}.accounts")], 1, "{r}");
    assert_eq!(stream.info().await.unwrap().state.messages, 92);
    js.delete_stream(format!("E2E{tag}")).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregate_example_golden_records_with_priority_and_provenance() {
    let e = env().await;
    {
        let mut org = e.sb.sandbox.org.lock().unwrap();
        let m = |v: J| v.as_object().unwrap().clone();
        let id = org.create("Account", &m(json!({"Name": "  Alfreds   Futterkiste ", "Phone": "sf-only-phone", "Industry": "Food", "AnnualRevenue": 1000}))).unwrap();
        let _ = id;
        org.create(
            "Account",
            &m(json!({"Name": "Only In Salesforce", "Industry": "Tech"})),
        )
        .unwrap();
    }
    let r = e.run("aggregate.toml", &["golden"], 0).await;
    let lines: Vec<J> = std::fs::read_to_string(e.dir.join("out/golden-customers.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // 91 ERP customers (the Salesforce Alfreds joins its customer by name), plus one
    // Salesforce-only company.
    assert_eq!(lines.len(), 92, "{r}");
    let alfreds = lines
        .iter()
        .filter(|l| l["company"] == "Alfreds Futterkiste")
        .collect::<Vec<_>>();
    assert_eq!(
        alfreds.len(),
        1,
        "the Account and the customer are one golden record"
    );
    let a = alfreds[0];
    assert_eq!(a["phone"], "030-0074321", "the ERP has priority");
    assert_eq!(
        a["industry"], "Food",
        "fields only Salesforce has come from it"
    );
    assert_eq!(a["_sources"]["phone"], "erp.customers");
    assert_eq!(a["_sources"]["industry"], "crm.Account");
    assert!(
        lines
            .iter()
            .any(|l| l["company"] == "Only In Salesforce"
                && l["_sources"]["company"] == "crm.Account")
    );
    let r = e.run("aggregate.toml", &["golden"], 0).await;
    assert_eq!(total(&r, "written"), 0, "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correlate_example_syncs_only_people_on_both_sides() {
    let e = env().await;
    {
        let mut org = e.sb.sandbox.org.lock().unwrap();
        let m = |v: J| v.as_object().unwrap().clone();
        for (f, l, t) in [
            ("Maria", "Anders", "Head of Sales"),
            ("Ana", "Trujillo", "Owner"),
            ("Zelda", "Unmatched-Person", "CEO"),
        ] {
            org.create(
                "Contact",
                &m(json!({"FirstName": f, "LastName": l, "Title": t})),
            )
            .unwrap();
        }
    }
    let r = e.run("correlate.toml", &["people"], 0).await;
    assert_eq!(r[0]["matched"], 2, "{r}");
    assert_eq!(
        e.soql("SELECT COUNT() FROM Contact")[0],
        json!(3),
        "nothing created in Salesforce"
    );
    assert_eq!(
        e.count("SELECT COUNT(*) FROM customers").await,
        91,
        "nothing created in the ERP"
    );
    // Both sides now agree for the matched two; the unmatched are untouched.
    let row = sqlx::query("SELECT phone FROM customers WHERE contact_name = 'Maria Anders'")
        .fetch_one(&e.erp)
        .await
        .unwrap();
    let sf = e.soql("SELECT Phone, Title FROM Contact WHERE LastName = 'Anders'");
    assert_eq!(
        sf[0]["Phone"].as_str(),
        Some(row.get::<String, _>(0).as_str())
    );
    assert_eq!(
        e.soql("SELECT Phone FROM Contact WHERE LastName = 'Unmatched-Person'")[0]["Phone"],
        J::Null
    );
    // Privacy: nothing of the unmatched is in the store, in clear.
    let mut raw = Vec::new();
    for f in walk(&e.dir.join(".concord-correlate")) {
        raw.extend(std::fs::read(f).unwrap());
    }
    for secret in [
        "Unmatched-Person",
        "Zelda",
        "Thomas Hardy",
        "Christina Berglund",
    ] {
        assert!(
            !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "{secret} stored"
        );
    }
    assert!(
        raw.windows(6).any(|w| w == b"Anders"),
        "matched people are synced (and stored)"
    );
    let r = e.run("correlate.toml", &["people"], 0).await;
    assert_eq!(total(&r, "written"), 0, "{r}");
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_errors_name_the_key_path_and_plan_changes_nothing() {
    let e = env().await;
    let bad = std::fs::read_to_string(e.dir.join("bidirectional.toml"))
        .unwrap()
        .replace(
            "phone = \"phone\"",
            "phone = { field = \"phone\", transfroms = [\"trim\"] }",
        );
    std::fs::write(e.dir.join("bad.toml"), bad).unwrap();
    let (code, _, err) = e.concord(&["--config", "bad.toml", "status"]).await;
    assert_eq!(code, 1);
    assert!(
        err.contains("jobs.accounts.sides.erp.fields.phone") && err.contains("transfroms"),
        "{err}"
    );
    let (code, out, err) = e
        .concord(&["--config", "bidirectional.toml", "plan", "accounts"])
        .await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("would write crm.Account: 91 creates"), "{out}");
    assert_eq!(
        e.soql("SELECT COUNT() FROM Account")[0],
        json!(0),
        "a plan writes nothing"
    );
    let (code, _, err) = e
        .concord(&["--config", "bidirectional.toml", "run", "nope"])
        .await;
    assert_eq!(code, 1);
    assert!(err.contains("no job named `nope`"), "{err}");
}
