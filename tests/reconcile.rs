//! `concord reconcile` against the real PostgreSQL: changes made behind the change feed (a row
//! updated without its updated-at column, a hard delete, a row restored with an old stamp) are
//! invisible to `run`, found by `reconcile` per entity, and `--repair` turns them into ordinary
//! changes that reach the other system; the read cursor keeps working afterwards. Skips with a
//! printed reason when PostgreSQL is unreachable, unless CONCORD_REQUIRE_SERVICES=1.

use serde_json::Value as J;
use std::path::Path;
use std::process::Command;

const PG: &str = "postgres://postgres@127.0.0.1:5432/test";

fn concord(dir: &Path, args: &[&str]) -> (i32, String, String) {
    concord_with(dir, args, PG)
}

fn concord_with(dir: &Path, args: &[&str], erp_url: &str) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_concord"))
        .current_dir(dir)
        .env("ERP_URL", erp_url)
        .env_remove("CONCORD_CONFIG")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// The store and the two systems: the ERP database (`system_type`, URL from ERP_URL) and a
/// JSONL folder.
fn systems(system_type: &str) -> String {
    format!(
        "[store]\ndir = \"state\"\n[systems.erp]\ntype = \"{system_type}\"\nurl_env = \"ERP_URL\"\n\
         [systems.copy]\ntype = \"jsonl\"\ndir = \"out\"\n"
    )
}

/// A job between the PostgreSQL `table` (its side's extra keys in `erp_side`) and a JSONL copy.
fn write_config(d: &Path, job: &str, pattern: &str, table: &str, erp_side: &str) {
    let head = systems("postgres");
    std::fs::write(
        d.join("concord.toml"),
        format!(
            r#"{head}[jobs.{job}]
pattern = "{pattern}"
systems = ["erp", "copy"]
[jobs.{job}.sides.erp]
table = "{table}"
key = ["id"]
{erp_side}[jobs.{job}.sides.erp.fields]
name = "name"
city = "city"
[jobs.{job}.sides.copy]
file = "customers.jsonl"
key = ["id"]
[jobs.{job}.sides.copy.fields]
name = "name"
city = "city"
"#
        ),
    )
    .unwrap();
}

/// `reconcile JOB --repair` leaves no drift and reads exactly `n` records.
fn repair_reads(d: &Path, url: &str, job: &str, n: u64) {
    let (code, out, err) = concord_with(d, &["reconcile", job, "--repair", "--json"], url);
    assert_eq!(code, 0, "{out}\n{err}");
    let r: J = serde_json::from_str(&out).unwrap();
    assert_eq!(r["drift_after_repair"], serde_json::json!([]), "{out}");
    let read: u64 = r["repair"]["read"]
        .as_object()
        .unwrap()
        .values()
        .filter_map(J::as_u64)
        .sum();
    assert_eq!(read, n, "{out}");
}

fn written(out: &str) -> u64 {
    let r: J = serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"));
    r[0]["written"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(J::as_u64).sum())
}

#[tokio::test]
async fn drift_behind_the_feed_is_found_and_repaired() {
    let pg = match sqlx::PgPool::connect(PG).await {
        Ok(p) => p,
        Err(e) => {
            assert!(
                std::env::var("CONCORD_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "PostgreSQL unreachable: {e}"
            );
            eprintln!("skipped: PostgreSQL unreachable ({e})");
            return;
        }
    };
    let table = format!("rc_{}", std::process::id());
    let q = |s: String| {
        let pg = pg.clone();
        async move { sqlx::raw_sql(&s).execute(&pg).await.unwrap() }
    };
    q(format!("DROP TABLE IF EXISTS {table}")).await;
    q(format!("CREATE TABLE {table} (id integer primary key, name text, city text, updated_at timestamptz not null)")).await;
    q(format!("INSERT INTO {table} SELECT i, 'Customer ' || i, 'Oslo', now() - i * interval '1 hour' FROM generate_series(1, 20) i")).await;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(
        d,
        "customers",
        "bidirectional",
        &table,
        "mode = \"column\"\nupdated_column = \"updated_at\"\noverlap_secs = 60\n",
    );
    let (code, out, err) = concord(d, &["run", "customers", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(written(&out), 20);
    let (code, _, err) = concord(d, &["reconcile", "customers"]);
    assert_eq!(code, 0, "no drift after a sync: {err}");

    // Behind the feed: a quiet update, a hard delete, a row restored from a backup.
    q(format!(
        "UPDATE {table} SET name = 'Changed quietly' WHERE id = 3"
    ))
    .await;
    q(format!("DELETE FROM {table} WHERE id = 5")).await;
    q(format!(
        "INSERT INTO {table} VALUES (100, 'Restored', 'Bergen', now() - interval '2 days')"
    ))
    .await;
    let (code, out, err) = concord(d, &["run", "customers", "--json"]);
    assert_eq!(
        (code, written(&out)),
        (0, 0),
        "the feed cannot see them: {err}"
    );

    let (code, out, err) = concord(d, &["reconcile", "customers", "--json"]);
    assert_eq!(code, 4, "drift found: {err}");
    let r: J = serde_json::from_str(&out).unwrap();
    let sys = format!("erp.{table}");
    let mut drift: Vec<(String, String, String)> = r["drift"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["system"].as_str().unwrap().to_string(),
                d["kind"].as_str().unwrap().to_string(),
                d["key"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    drift.sort();
    assert_eq!(
        drift,
        vec![
            (sys.clone(), "different".into(), "3".into()),
            (sys.clone(), "extra".into(), "100".into()),
            (sys.clone(), "missing".into(), "5".into()),
        ],
        "{out}"
    );
    let diff = r["drift"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["kind"] == "different")
        .unwrap();
    assert_eq!(diff["fields"], serde_json::json!(["name"]));
    // PostgreSQL hashes its rows: digests remembered by the first reconcile, only the changed
    // row and the extra one are read whole this time.
    assert_eq!(r["checks"][&sys]["method"], "hash_tree", "{out}");
    assert_eq!(r["checks"][&sys]["read"], 2, "{out}");
    assert_eq!(r["checks"][&sys]["unknown"], 0, "{out}");

    // Repair: ordinary changes through the job (the delete by the delete rule), reading
    // exactly the three records drift was found in, nothing else.
    repair_reads(d, PG, "customers", 3);
    let copy = std::fs::read_to_string(d.join("out/customers.jsonl")).unwrap();
    assert!(copy.contains("Changed quietly"), "{copy}");
    assert!(copy.contains("Restored"), "{copy}");
    assert!(!copy.contains("\"Customer 5\""), "{copy}");
    assert_eq!(copy.lines().count(), 20);

    // The change feed still works after the repair, and nothing is written twice.
    let (code, out, _) = concord(d, &["run", "customers", "--json"]);
    assert_eq!((code, written(&out)), (0, 0));
    q(format!(
        "UPDATE {table} SET city = 'Tromsø', updated_at = now() WHERE id = 7"
    ))
    .await;
    let (code, out, _) = concord(d, &["run", "customers", "--json"]);
    assert_eq!((code, written(&out)), (0, 1), "{out}");
    assert_eq!(concord(d, &["reconcile", "customers"]).0, 0);
    // The ERP unreachable: it is listed as not checked (exit 3); the file side still is.
    let (code, out, _) = concord_with(
        d,
        &["reconcile", "customers", "--json"],
        "postgres://postgres@127.0.0.1:1/test",
    );
    assert_eq!(code, 3, "{out}");
    let r: J = serde_json::from_str(&out).unwrap();
    assert_eq!(r["unchecked"][0]["system"], sys.as_str(), "{out}");
    assert_eq!(r["checks"]["copy.customers.jsonl"]["read"], 20, "{out}");
    q(format!("DROP TABLE {table}")).await;
}

/// A migrate target is written, never read: drift there (a record deleted, one edited) is
/// found by reconcile and repaired by sending the head again.
#[tokio::test]
async fn drift_in_a_write_only_target_is_repaired() {
    let Ok(pg) = sqlx::PgPool::connect(PG).await else {
        assert!(
            std::env::var("CONCORD_REQUIRE_SERVICES").as_deref() != Ok("1"),
            "PostgreSQL unreachable"
        );
        eprintln!("skipped: PostgreSQL unreachable");
        return;
    };
    let table = format!("rcm_{}", std::process::id());
    for s in [
        format!("DROP TABLE IF EXISTS {table}"),
        format!("CREATE TABLE {table} (id integer primary key, name text, city text)"),
        format!(
            "INSERT INTO {table} SELECT i, 'Customer ' || i, 'Oslo' FROM generate_series(1, 10) i"
        ),
    ] {
        sqlx::raw_sql(&s).execute(&pg).await.unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    write_config(d, "move", "migrate", &table, "");
    assert_eq!(concord(d, &["run", "move"]).0, 0);
    let file = d.join("out/customers.jsonl");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 10);
    // Someone edits the target by hand: one line gone, one name changed.
    let kept: Vec<String> = text
        .lines()
        .filter(|l| !l.contains("\"Customer 4\""))
        .map(|l| l.replace("Customer 7", "Edited in the copy"))
        .collect();
    std::fs::write(&file, kept.join("\n") + "\n").unwrap();
    let (code, out, _) = concord(d, &["reconcile", "move", "--json"]);
    assert_eq!(code, 4, "{out}");
    let r: J = serde_json::from_str(&out).unwrap();
    let mut kinds: Vec<&str> = r["drift"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["kind"].as_str().unwrap())
        .collect();
    kinds.sort();
    assert_eq!(kinds, ["different", "missing"], "{out}");
    let (code, out, err) = concord(d, &["reconcile", "move", "--repair", "--json"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let r: J = serde_json::from_str(&out).unwrap();
    assert_eq!(r["requeued"], 2, "{out}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.lines().count(), 10, "{text}");
    assert!(
        text.contains("\"Customer 4\"") && text.contains("\"Customer 7\""),
        "{text}"
    );
    assert!(!text.contains("Edited in the copy"), "{text}");
    assert_eq!(concord(d, &["reconcile", "move"]).0, 0);
    sqlx::raw_sql(&format!("DROP TABLE {table}"))
        .execute(&pg)
        .await
        .unwrap();
}

// Hash-tree reconcile on the real PostgreSQL and MariaDB: a table with a composite key and
// decimal, timestamp, JSON and binary columns. After a first reconcile has learned the
// database's digests, drift made behind concord's back (a value set to NULL, a JSON document
// changed, a row deleted, a row inserted) is found by the hash tree reading only the rows
// concerned; a change in a column the job does not map is not drift; `--repair` reaches the
// other system reading only the drifted records.

const MY: &str = "mysql://root@127.0.0.1:3306/test";

enum Db {
    Pg(sqlx::PgPool),
    My(sqlx::MySqlPool),
}

impl Db {
    async fn connect(url: &str) -> Option<Db> {
        let db = if url.starts_with("postgres") {
            sqlx::PgPool::connect(url).await.map(Db::Pg)
        } else {
            sqlx::MySqlPool::connect(url).await.map(Db::My)
        };
        match db {
            Ok(d) => Some(d),
            Err(e) => {
                assert!(
                    std::env::var("CONCORD_REQUIRE_SERVICES").as_deref() != Ok("1"),
                    "{url} unreachable: {e}"
                );
                eprintln!("skipped: {url} unreachable ({e})");
                None
            }
        }
    }

    async fn exec(&self, sql: &str) {
        match self {
            Db::Pg(p) => sqlx::raw_sql(sql).execute(p).await.map(|_| ()),
            Db::My(p) => sqlx::raw_sql(sql).execute(p).await.map(|_| ()),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
}

fn kinds(r: &J) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = r["drift"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_string(),
                d["key"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

async fn scenario(url: &str, system_type: &str, ddl: &str, types: [&str; 2]) {
    let Some(db) = Db::connect(url).await else {
        return;
    };
    let table = format!("rht_{}_{}", system_type, std::process::id());
    db.exec(&format!("DROP TABLE IF EXISTS {table}")).await;
    db.exec(&format!("CREATE TABLE {table} ({ddl})")).await;
    let [json_literal, blob_literal] = types;
    let mut rows = Vec::new();
    for i in 1..=300 {
        let region = ["north", "south", "east"][i % 3];
        rows.push(format!(
            "('{region}', {i}, 'Customer {i}', {}.{:02}, '2026-01-0{} 10:00:00.{:06}', {}, {})",
            i * 3,
            i % 100,
            1 + i % 9,
            i * 7,
            json_literal.replace("N", &i.to_string()),
            blob_literal.replace("N", &format!("{:02x}", i % 256)),
        ));
    }
    db.exec(&format!(
        "INSERT INTO {table} (region, id, name, amount, seen, doc, photo) VALUES {}",
        rows.join(", ")
    ))
    .await;

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let head = systems(system_type);
    std::fs::write(
        d.join("concord.toml"),
        format!(
            r#"{head}[jobs.c]
pattern = "bidirectional"
systems = ["erp", "copy"]
[jobs.c.sides.erp]
table = "{table}"
key = ["region", "id"]
[jobs.c.sides.erp.fields]
region = "region"
id = "id"
name = "name"
amount = "amount"
seen = "seen"
doc = "doc"
[jobs.c.sides.copy]
file = "customers.jsonl"
key = ["region", "id"]
types = {{ amount = "decimal", seen = "datetime", doc = "json" }}
[jobs.c.sides.copy.fields]
region = "region"
id = "id"
name = "name"
amount = "amount"
seen = "seen"
doc = "doc"
"#
        ),
    )
    .unwrap();
    let (code, _, err) = concord_with(d, &["run", "c"], url);
    assert_eq!(code, 0, "{err}");
    let sys = format!("erp.{table}");
    // The first reconcile learns the digests: every row read once.
    let (code, out, err) = concord_with(d, &["reconcile", "c", "--json"], url);
    assert_eq!(code, 0, "{out}\n{err}");
    let r: J = serde_json::from_str(&out).unwrap();
    assert_eq!(r["checks"][&sys]["method"], "hash_tree", "{out}");
    assert_eq!(r["checks"][&sys]["read"], 300, "{out}");
    // The second reads nothing whole.
    let (code, out, _) = concord_with(d, &["reconcile", "c", "--json"], url);
    assert_eq!(code, 0, "{out}");
    let r: J = serde_json::from_str(&out).unwrap();
    assert_eq!(r["checks"][&sys]["read"], 0, "{out}");
    assert_eq!(r["checks"][&sys]["differing"], 0, "{out}");

    // Behind concord's back.
    let new_doc = json_literal.replace("N", "99999");
    for s in [
        format!("UPDATE {table} SET name = NULL WHERE region = 'south' AND id = 1"),
        format!("UPDATE {table} SET doc = {new_doc} WHERE region = 'east' AND id = 5"),
        format!(
            "UPDATE {table} SET photo = {} WHERE region = 'north' AND id = 6",
            blob_literal.replace("N", "ff")
        ),
        format!("DELETE FROM {table} WHERE region = 'south' AND id = 4"),
        format!(
            "INSERT INTO {table} (region, id, name, amount, seen, doc, photo) VALUES \
             ('west', 1000, 'Restored', 1.00, '2025-12-31 23:59:59', {}, NULL)",
            json_literal.replace("N", "1000")
        ),
    ] {
        db.exec(&s).await;
    }
    let (code, out, _) = concord_with(d, &["reconcile", "c", "--json"], url);
    assert_eq!(code, 4, "{out}");
    let r: J = serde_json::from_str(&out).unwrap();
    let key = |region: &str, id: u32| {
        concord::model::Key::composite(&[region.to_string(), id.to_string()]).to_string()
    };
    assert_eq!(
        kinds(&r),
        vec![
            ("different".to_string(), key("east", 5)),
            ("different".to_string(), key("south", 1)),
            ("extra".to_string(), key("west", 1000)),
            ("missing".to_string(), key("south", 4)),
        ],
        "{out}"
    );
    let c = &r["checks"][&sys];
    assert_eq!(c["method"], "hash_tree", "{out}");
    // Read whole: the two changed rows and the new one; the unmapped change costs nothing
    // (PostgreSQL and MariaDB hash only the mapped columns).
    assert_eq!(c["read"], 3, "{out}");
    assert!(c["leaves"].as_u64().unwrap() < 100, "{out}");

    // Exactly the four drifted records are read by the repair.
    repair_reads(d, url, "c", 4);
    let copy = std::fs::read_to_string(d.join("out/customers.jsonl")).unwrap();
    assert!(copy.contains("Restored"), "{copy}");
    assert!(copy.contains("99999"), "{copy}");
    assert!(!copy.contains("\"Customer 4\""), "{copy}");
    assert_eq!(concord_with(d, &["reconcile", "c"], url).0, 0);
    // The mapping changes but not the columns (region now read upper-case): the database's
    // hashes are the same, yet every record now differs from what the store holds. Digests
    // remembered under the old mapping are not trusted: the table is read again and the
    // difference reported.
    let cfg = std::fs::read_to_string(d.join("concord.toml")).unwrap();
    let cfg = cfg.replacen(
        "region = \"region\"\n",
        "region = { field = \"region\", transforms = [\"upper\"] }\n",
        1,
    );
    std::fs::write(d.join("concord.toml"), cfg).unwrap();
    let (code, out, _) = concord_with(d, &["reconcile", "c", "--json"], url);
    let r: J = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (code, &r["checks"][&sys]["read"]),
        (4, &J::from(300)),
        "{out}"
    );
    db.exec(&format!("DROP TABLE {table}")).await;
}

#[tokio::test]
async fn hash_tree_on_postgres() {
    scenario(
        PG,
        "postgres",
        "region varchar(8), id integer, name text, amount numeric(12,2), seen timestamp(6), \
         doc json, photo bytea, PRIMARY KEY (region, id)",
        ["'{\"n\": N}'", "'\\xN'"],
    )
    .await;
}

#[tokio::test]
async fn hash_tree_on_mariadb() {
    scenario(
        MY,
        "mysql",
        "region varchar(8), id integer, name text, amount decimal(12,2), seen datetime(6), \
         doc json, photo blob, PRIMARY KEY (region, id)",
        ["'{\"n\": N}'", "x'N'"],
    )
    .await;
}

// A synced child whose reference now points at a parent not synced yet waits — and meanwhile is
// neither taken for deleted by a complete scan (files are read whole) nor reported missing by
// reconcile (so `--repair` cannot delete it).
#[test]
fn a_waiting_child_is_not_taken_for_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("src")).unwrap();
    std::fs::write(
        d.join("concord.toml"),
        r#"[store]
dir = "state"
[systems.src]
type = "jsonl"
dir = "src"
[systems.dst]
type = "jsonl"
dir = "dst"
[jobs.customers]
pattern = "migrate"
systems = ["src", "dst"]
[jobs.customers.sides.src]
file = "customers.jsonl"
key = ["id"]
[jobs.customers.sides.src.fields]
id = "id"
name = "name"
[jobs.customers.sides.dst]
file = "customers.jsonl"
key = ["id"]
[jobs.customers.sides.dst.fields]
id = "id"
name = "name"
[jobs.orders]
pattern = "bidirectional"
systems = ["src", "dst"]
[jobs.orders.sides.src]
file = "orders.jsonl"
key = ["id"]
[jobs.orders.sides.src.fields]
id = "id"
item = "item"
customer = { reference = "customers", field = "customer_id" }
[jobs.orders.sides.dst]
file = "orders.jsonl"
key = ["id"]
[jobs.orders.sides.dst.fields]
id = "id"
item = "item"
customer = { reference = "customers", field = "customer_id" }
"#,
    )
    .unwrap();
    std::fs::write(
        d.join("src/customers.jsonl"),
        "{\"id\":\"c1\",\"name\":\"Alfreds\"}\n",
    )
    .unwrap();
    std::fs::write(
        d.join("src/orders.jsonl"),
        "{\"id\":\"o1\",\"item\":\"Chai\",\"customer_id\":\"c1\"}\n",
    )
    .unwrap();
    let run = |args: &[&str]| concord_with(d, args, PG);
    assert_eq!(run(&["run", "--all"]).0, 0);
    let orders = || std::fs::read_to_string(d.join("dst/orders.jsonl")).unwrap();
    assert!(orders().contains("Chai"), "{}", orders());
    // The order moves to a customer only the source knows yet.
    std::fs::write(
        d.join("src/customers.jsonl"),
        "{\"id\":\"c1\",\"name\":\"Alfreds\"}\n{\"id\":\"c2\",\"name\":\"Bon app'\"}\n",
    )
    .unwrap();
    std::fs::write(
        d.join("src/orders.jsonl"),
        "{\"id\":\"o1\",\"item\":\"Chai\",\"customer_id\":\"c2\"}\n",
    )
    .unwrap();
    let (code, _, err) = run(&["run", "orders"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        orders().contains("Chai"),
        "the waiting order was deleted: {}",
        orders()
    );
    let (code, out, _) = run(&["reconcile", "orders", "--json"]);
    assert_eq!(code, 0, "nothing missing while the order waits: {out}");
    // Once its customer is synced, the order follows it.
    assert_eq!(run(&["run", "--all"]).0, 0);
    assert!(orders().contains("\"c2\""), "{}", orders());
}
