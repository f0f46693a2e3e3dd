//! Shared by the Salesforce connector tests: an in-process sandbox with an Account External ID
//! field, a connector config pointing at it, and helpers.

use concord::connector::salesforce::SalesforceConfig;
use concord::connector::{Connector, WriteOp};
use concord::model::{EntityId, Fields, SystemId, Value};
use concord::sandbox::org::Org;
use concord::sandbox::schema::{build, SchemaFile};
use concord::sandbox::server::{serve, Sandbox, Settings};
use std::sync::Arc;

pub static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

pub async fn sandbox() -> (Arc<Sandbox>, SalesforceConfig) {
    sandbox_with("").await
}

/// A sandbox serving in this process on a free port, with the standard objects plus `schema`
/// (a schema file's text) and `settings` (its `base_url` is set here): its base URL and state.
pub async fn serve_in_process(schema: &str, settings: Settings) -> (String, Arc<Sandbox>) {
    let schema: SchemaFile = toml::from_str(schema).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let sb = Sandbox::new(
        Org::new(build(&schema).unwrap()),
        Settings {
            base_url: base.clone(),
            ..settings
        },
    );
    tokio::spawn(serve(sb.clone(), listener));
    (base, sb)
}

/// [`sandbox`] with more Account fields (`[[objects.fields]]` tables of a schema file).
pub async fn sandbox_with(fields: &str) -> (Arc<Sandbox>, SalesforceConfig) {
    let (base, sb) = serve_in_process(
        &format!(
            "[[objects]]\nname = \"Account\"\n[[objects.fields]]\nname = \"Concord_Id__c\"\ntype = \"string\"\nexternal_id = true\nunique = true\n{fields}"
        ),
        Settings {
            token: "tok".into(),
            daily_limit: 1_000_000,
            ..Default::default()
        },
    )
    .await;
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let (u, t) = (format!("SF_TEST_URL_{n}"), format!("SF_TEST_TOKEN_{n}"));
    unsafe {
        std::env::set_var(&u, &base);
        std::env::set_var(&t, "tok");
    }
    let mut cfg = SalesforceConfig::new(&u, &t, "Account");
    cfg.fields = Some(vec![
        "Name".into(),
        "Phone".into(),
        "AnnualRevenue".into(),
        "Concord_Id__c".into(),
    ]);
    cfg.entity_id_field = Some("Concord_Id__c".into());
    cfg.page_size = 200;
    (sb, cfg)
}

pub async fn read_all(
    c: &dyn Connector,
    mut cursor: Option<Vec<u8>>,
) -> (Vec<concord::connector::Change>, Option<Vec<u8>>) {
    let mut out = Vec::new();
    loop {
        let p = c.read(cursor.as_deref()).await.unwrap();
        out.extend(p.changes);
        cursor = p.cursor;
        if !p.more {
            return (out, cursor);
        }
    }
}

pub fn creates(n: usize, sys: &SystemId) -> Vec<WriteOp> {
    (0..n)
        .map(|i| WriteOp::Upsert {
            entity: EntityId::derive(sys, &i.to_string()),
            key: None,
            fields: Fields::new()
                .with("Name", format!("Acct {i:04}"))
                .with("AnnualRevenue", Value::Int(1000 + i as i64)),
        })
        .collect()
}

/// Sets a fresh, uniquely named environment variable to `value`; returns its name.
pub fn env_var(prefix: &str, value: &str) -> String {
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let name = format!("{prefix}_{n}");
    unsafe { std::env::set_var(&name, value) };
    name
}

/// A sandbox started by `launch` (TLS, persistence and credentials as given) and a connector
/// config for its Account object that has no access token: it must authenticate.
pub async fn launched(
    opts: concord::sandbox::launch::Options,
    settings: Settings,
) -> (concord::sandbox::launch::Launched, SalesforceConfig) {
    let dir = tempfile::tempdir().unwrap().keep();
    let schema = dir.join("schema.toml");
    std::fs::write(
        &schema,
        "[[objects]]\nname = \"Account\"\n[[objects.fields]]\nname = \"Concord_Id__c\"\ntype = \"string\"\nexternal_id = true\nunique = true\n",
    )
    .unwrap();
    let opts = concord::sandbox::launch::Options {
        schema: Some(schema),
        ..opts
    };
    let l = concord::sandbox::launch::launch(&opts, settings)
        .await
        .unwrap();
    let url = env_var("SF_TEST_URL", &l.base_url);
    let mut cfg = SalesforceConfig::new(&url, "SF_TEST_NO_TOKEN", "Account");
    cfg.token_env = None;
    cfg.fields = Some(vec![
        "Name".into(),
        "Phone".into(),
        "AnnualRevenue".into(),
        "Concord_Id__c".into(),
    ]);
    cfg.entity_id_field = Some("Concord_Id__c".into());
    cfg.page_size = 200;
    (l, cfg)
}

/// Live records of `object` in the sandbox.
pub fn count(sb: &Sandbox, object: &str) -> u64 {
    let org = sb.org.lock().unwrap();
    let q = concord::sandbox::soql::parse(&format!("SELECT COUNT() FROM {object}")).unwrap();
    match org.query(&q, false, "59.0").unwrap() {
        concord::sandbox::org::QueryResult::Count(n) => n,
        _ => unreachable!(),
    }
}

/// The sandbox the pattern tests use: the docs/examples sandbox schema, token `dev`.
pub async fn examples_sandbox(schema: std::path::PathBuf) -> concord::sandbox::launch::Launched {
    concord::sandbox::launch::launch(
        &concord::sandbox::launch::Options {
            schema: Some(schema),
            ..concord::sandbox::launch::Options::default()
        },
        Settings {
            token: "dev".into(),
            ..Settings::default()
        },
    )
    .await
    .unwrap()
}

/// A SOQL query straight against the org (rows, or `[n]` for COUNT()).
pub fn soql(sb: &Sandbox, q: &str) -> Vec<serde_json::Value> {
    let org = sb.org.lock().unwrap();
    match org
        .query(&concord::sandbox::soql::parse(q).unwrap(), false, "62.0")
        .unwrap()
    {
        concord::sandbox::org::QueryResult::Rows(r) => r,
        concord::sandbox::org::QueryResult::Count(n) => vec![serde_json::json!(n)],
    }
}
