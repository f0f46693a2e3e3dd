//! The documented bidirectional and migrate examples run by the `concord` binary against the
//! Salesforce sandbox and the Northwind ERP loaded into the real PostgreSQL and MariaDB of this
//! machine (tests/patterns_e2e.rs runs every example on SQLite). Each test gets a database of
//! its own. Skips with a printed reason when a server is unreachable, unless
//! CONCORD_REQUIRE_SERVICES=1.

use crate::sf_common;
use concord::connector::sql::{decode, Pool};
use concord::sandbox::launch::Launched;
use serde_json::{json, Value as J};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

static SEQ: AtomicU32 = AtomicU32::new(0);

#[derive(Clone, Copy, Debug)]
enum Server {
    Postgres,
    MariaDb,
}

impl Server {
    fn url(self, db: &str) -> String {
        match self {
            Server::Postgres => format!("postgres://postgres@127.0.0.1:5432/{db}"),
            Server::MariaDb => format!("mysql://root@127.0.0.1:3306/{db}"),
        }
    }
    fn system_type(self) -> &'static str {
        match self {
            Server::Postgres => "postgres",
            Server::MariaDb => "mysql",
        }
    }
}

struct Env {
    server: Server,
    db: String,
    dir: PathBuf,
    sb: Launched,
    erp_url: String,
    erp: Pool,
}

async fn env(server: Server) -> Option<Env> {
    let admin = match Pool::connect(&server.url("test"), "erp", "setup").await {
        Ok(p) => p,
        Err(e) => {
            assert!(
                std::env::var("CONCORD_REQUIRE_SERVICES").as_deref() != Ok("1"),
                "{server:?} unreachable: {e}"
            );
            eprintln!("skipped: {server:?} unreachable ({e})");
            return None;
        }
    };
    let db = format!(
        "concord_e2e_{}_{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    );
    admin.close().await;
    // Simple-query protocol: PostgreSQL refuses CREATE DATABASE in an implicit transaction.
    let ddl = format!("DROP DATABASE IF EXISTS {db}; CREATE DATABASE {db}");
    match server {
        Server::Postgres => {
            let pg = sqlx::PgPool::connect(&server.url("test")).await.unwrap();
            for q in ddl.split("; ") {
                sqlx::raw_sql(q).execute(&pg).await.unwrap();
            }
            pg.close().await;
        }
        Server::MariaDb => {
            let my = sqlx::MySqlPool::connect(&server.url("test")).await.unwrap();
            for q in ddl.split("; ") {
                sqlx::raw_sql(q).execute(&my).await.unwrap();
            }
            my.close().await;
        }
    }
    let erp_url = server.url(&db);
    let erp = Pool::connect(&erp_url, "erp", "load").await.unwrap();
    let dump = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/erp/northwind.sql"),
    )
    .unwrap();
    concord::connector::sql::dump::load(&erp, None, &dump)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap().keep();
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/examples");
    for f in std::fs::read_dir(examples).unwrap() {
        let p = f.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml") {
            // The same examples, with the ERP on this server instead of SQLite.
            let text = std::fs::read_to_string(&p).unwrap().replace(
                "type = \"sqlite\"",
                &format!("type = \"{}\"", server.system_type()),
            );
            std::fs::write(dir.join(p.file_name().unwrap()), text).unwrap();
        }
    }
    let sb = sf_common::examples_sandbox(dir.join("sandbox-schema.toml")).await;
    Some(Env {
        server,
        db,
        dir,
        sb,
        erp_url,
        erp,
    })
}

impl Env {
    async fn run(&self, config: &str, args: &[&str], want: i32) -> J {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_concord"));
        cmd.current_dir(&self.dir)
            .env("SF_URL", &self.sb.base_url)
            .env("SF_TOKEN", "dev")
            .env("ERP_URL", &self.erp_url)
            .env_remove("CONCORD_CONFIG")
            .args(["--config", config, "run", "--json"])
            .args(args);
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .unwrap()
            .unwrap();
        let (o, e) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(want), "{config} {args:?}\n{o}\n{e}");
        serde_json::from_str(&o).unwrap_or_else(|x| panic!("{x}: {o}"))
    }

    fn soql(&self, q: &str) -> Vec<J> {
        sf_common::soql(&self.sb.sandbox, q)
    }

    /// Drops the test's database (a failed test leaves it, named by its process id).
    async fn finish(self) {
        self.erp.close().await;
        let drop = format!("DROP DATABASE IF EXISTS {}", self.db);
        match self.server {
            Server::Postgres => {
                let pg = sqlx::PgPool::connect(&self.server.url("test"))
                    .await
                    .unwrap();
                sqlx::raw_sql(&format!("{drop} WITH (FORCE)"))
                    .execute(&pg)
                    .await
                    .unwrap();
                pg.close().await;
            }
            Server::MariaDb => {
                let my = sqlx::MySqlPool::connect(&self.server.url("test"))
                    .await
                    .unwrap();
                sqlx::raw_sql(&drop).execute(&my).await.unwrap();
                my.close().await;
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    async fn sql(&self, q: &str) {
        self.erp.execute(q, &[]).await.unwrap();
    }

    async fn text(&self, q: &str) -> String {
        decode::first_text(&self.erp.fetch(q, &[]).await.unwrap()).unwrap()
    }

    async fn count(&self, q: &str) -> i64 {
        decode::first_i64(&self.erp.fetch(q, &[]).await.unwrap()).unwrap()
    }
}

fn written(r: &J) -> u64 {
    r.as_array()
        .unwrap()
        .iter()
        .flat_map(|j| j["written"].as_object().cloned().unwrap_or_default())
        .map(|(_, n)| n.as_u64().unwrap_or(0))
        .sum()
}

async fn bidirectional(server: Server) {
    let Some(e) = env(server).await else {
        return;
    };
    let customers = e.count("SELECT COUNT(*) FROM customers").await;
    let r = e.run("bidirectional.toml", &["accounts"], 0).await;
    assert_eq!(written(&r) as i64, customers, "{server:?}: {r}");
    let r = e.run("bidirectional.toml", &["accounts"], 0).await;
    assert_eq!(written(&r), 0, "{server:?}: no echo writes: {r}");

    // Concurrent edits of different fields merge; a hard delete in the ERP propagates.
    let acct = e.soql("SELECT Id FROM Account WHERE Name = 'Alfreds Futterkiste'")[0]["Id"]
        .as_str()
        .unwrap()
        .to_string();
    {
        let mut org = e.sb.sandbox.org.lock().unwrap();
        org.update(
            "Account",
            &acct,
            json!({"BillingCity": "Potsdam"}).as_object().unwrap(),
        )
        .unwrap();
    }
    e.sql("UPDATE customers SET contact_name = 'Maria Anders-Schmidt' WHERE customer_id = 'ALFKI'")
        .await;
    // PARIS has no orders: nothing references it.
    e.sql("DELETE FROM customers WHERE customer_id = 'PARIS'")
        .await;
    let r = e.run("bidirectional.toml", &["accounts"], 0).await;
    assert_eq!(written(&r), 3, "{server:?}: {r}");
    let a = &e.soql(&format!(
        "SELECT BillingCity, Description FROM Account WHERE Id = '{acct}'"
    ))[0];
    assert_eq!(
        (a["BillingCity"].as_str(), a["Description"].as_str()),
        (Some("Potsdam"), Some("Maria Anders-Schmidt")),
        "{server:?}"
    );
    assert_eq!(
        e.text("SELECT city FROM customers WHERE customer_id = 'ALFKI'")
            .await,
        "Potsdam"
    );
    assert!(e
        .soql("SELECT Id FROM Account WHERE Name = 'Paris spécialités'")
        .is_empty());
    let r = e.run("bidirectional.toml", &["accounts"], 0).await;
    assert_eq!(written(&r), 0, "{server:?}: settled: {r}");
    e.finish().await;
}

async fn migrate(server: Server) {
    let Some(e) = env(server).await else {
        return;
    };
    let r = e.run("migrate.toml", &["--all", "--verify"], 0).await;
    assert!(written(&r) > 0, "{server:?}: {r}");
    let accounts = e.soql("SELECT COUNT() FROM Account")[0].as_u64().unwrap();
    let scope = e
        .count("SELECT COUNT(*) FROM customers WHERE country IN ('Germany', 'France', 'UK', 'USA')")
        .await;
    assert_eq!(
        accounts as i64, scope,
        "{server:?}: the scoped customers migrated"
    );
    let orders = e
        .count(
            "SELECT COUNT(*) FROM orders WHERE ship_country IN ('Germany', 'France', 'UK', 'USA')",
        )
        .await;
    let opps = e.soql("SELECT COUNT() FROM Opportunity")[0]
        .as_u64()
        .unwrap();
    assert_eq!(
        opps as i64, orders,
        "{server:?}: their orders, with references"
    );
    assert!(
        r.as_array().unwrap().iter().all(|j| j["verified"] == true),
        "{server:?}: {r}"
    );
    let r = e.run("migrate.toml", &["--all", "--verify"], 0).await;
    assert_eq!(written(&r), 0, "{server:?}: a re-run is idempotent: {r}");
    e.finish().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidirectional_example_on_postgres() {
    bidirectional(Server::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidirectional_example_on_mariadb() {
    bidirectional(Server::MariaDb).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_example_on_postgres() {
    migrate(Server::Postgres).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_example_on_mariadb() {
    migrate(Server::MariaDb).await
}
