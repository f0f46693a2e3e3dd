//! The Northwind ERP dataset (../shared/fixtures/erp/northwind.sql) loads into PostgreSQL,
//! MariaDB and SQLite, and the three hold the same canonical records.

use crate::compliance;
use compliance::service;
use concord::connector::sql::{dump, Pool, SqlConnector, SqlTableConfig};
use concord::connector::Connector;
use concord::model::{Fields, SystemId};
use std::collections::BTreeMap;

fn dump_text() -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/fixtures/erp/northwind.sql");
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

async fn records(
    env: &str,
    schema: Option<&str>,
    table: &str,
    key: &[&str],
) -> BTreeMap<String, Fields> {
    let mut cfg = SqlTableConfig::new(env, table, key);
    cfg.schema = schema.map(str::to_string);
    cfg.batch_size = 500;
    let c = SqlConnector::connect(SystemId::new("erp").unwrap(), cfg)
        .await
        .expect("connector");
    let mut out = BTreeMap::new();
    let mut cursor: Option<Vec<u8>> = None;
    loop {
        let page = c.read(cursor.as_deref()).await.unwrap();
        for ch in page.changes {
            out.insert(ch.key.to_string(), ch.fields.unwrap());
        }
        if !page.more {
            return out;
        }
        cursor = page.cursor;
    }
}

#[tokio::test]
async fn northwind_loads_everywhere_with_the_same_content() {
    let text = dump_text();
    let schema = format!("northwind_{}", std::process::id());
    let mut targets: Vec<(&str, String, Option<String>)> = Vec::new();
    if service("PostgreSQL", 5432).await {
        targets.push((
            "pg",
            "postgres://postgres@127.0.0.1:5432/test".into(),
            Some(schema.clone()),
        ));
    }
    if service("MariaDB", 3306).await {
        targets.push((
            "maria",
            "mysql://root@127.0.0.1:3306/test".into(),
            Some(schema.clone()),
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    targets.push((
        "lite",
        format!("sqlite:{}", dir.path().join("nw.db").display()),
        None,
    ));

    let mut per_target = Vec::new();
    for (name, url, schema) in &targets {
        let pool = Pool::connect(url, name, "northwind").await.unwrap();
        if let Some(s) = schema {
            drop_schema(&pool, s).await;
        }
        let report = dump::load(&pool, schema.as_deref(), &text)
            .await
            .expect("load");
        assert_eq!(report.rows.get("customers"), Some(&91), "{name}");
        assert_eq!(report.rows.get("orders"), Some(&830), "{name}");
        assert_eq!(report.rows.get("order_details"), Some(&2155), "{name}");
        assert_eq!(report.rows.get("products"), Some(&77), "{name}");
        let env = format!("CONCORD_TEST_NW_{}", name.to_uppercase());
        unsafe { std::env::set_var(&env, url) };
        let customers = records(&env, schema.as_deref(), "customers", &["customer_id"]).await;
        let details = records(
            &env,
            schema.as_deref(),
            "order_details",
            &["order_id", "product_id"],
        )
        .await;
        let employees = records(&env, schema.as_deref(), "employees", &["employee_id"]).await;
        assert_eq!(
            (customers.len(), details.len(), employees.len()),
            (91, 2155, 9),
            "{name}"
        );
        per_target.push((*name, customers, details, employees));
        if let Some(s) = schema {
            drop_schema(&pool, s).await;
        }
        pool.close().await;
    }
    // Every database holds the same canonical records: same keys, same content hashes (real
    // prices, dates, text with accents, empty bytea all normalise alike).
    let (first, rest) = per_target.split_first().unwrap();
    for other in rest {
        same(first.0, &first.1, other.0, &other.1, "customers");
        same(first.0, &first.2, other.0, &other.2, "order_details");
        same(first.0, &first.3, other.0, &other.3, "employees");
    }
}

async fn drop_schema(pool: &Pool, schema: &str) {
    let q = pool.dialect().quote(schema);
    let drop = match pool.dialect() {
        concord::connector::sql::Dialect::Postgres => format!("DROP SCHEMA IF EXISTS {q} CASCADE"),
        _ => format!("DROP DATABASE IF EXISTS {q}"),
    };
    pool.execute(&drop, &[]).await.unwrap();
}

/// Same keys and same content hashes; on a difference, shows the first differing record only.
fn same(
    a: &str,
    ra: &BTreeMap<String, Fields>,
    b: &str,
    rb: &BTreeMap<String, Fields>,
    table: &str,
) {
    assert_eq!(
        ra.len(),
        rb.len(),
        "{table}: {a} has {} rows, {b} {}",
        ra.len(),
        rb.len()
    );
    for (k, fa) in ra {
        let fb = rb
            .get(k)
            .unwrap_or_else(|| panic!("{table}: key {k} in {a}, not in {b}"));
        assert!(
            fa.content_hash() == fb.content_hash(),
            "{table} {k} differs:\n {a}: {fa:?}\n {b}: {fb:?}"
        );
    }
}
