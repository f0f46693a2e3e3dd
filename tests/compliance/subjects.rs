//! The subjects beside SQL tables and files: a memory table, Salesforce's Account in the sandbox,
//! and a JetStream stream (a destination only).

use super::read_all;
use super::subject::{sys, Holds, Names, Subject};
use crate::sf_common;
use concord::connector::memory::MemorySystem;
use concord::connector::nats::NatsConnector;
use concord::connector::salesforce::{SalesforceConfig, SalesforceConnector};
use concord::connector::Connector;
use concord::model::{Fields, Key, Value};
use concord::sandbox::org::QueryResult;
use concord::sandbox::server::Sandbox;
use serde_json::{json, Value as J};
use std::sync::Arc;

const PLAIN: Names = Names {
    id: "id",
    name: "name",
    amount: "amount",
};

fn text(f: &Fields, n: &str) -> String {
    match f.get(n) {
        Some(Value::Text(t)) => t.clone(),
        other => panic!("{n}: {other:?}"),
    }
}

fn int(f: &Fields, n: &str) -> i64 {
    match f.get(n) {
        Some(Value::Int(i)) => *i,
        other => panic!("{n}: {other:?}"),
    }
}

/// A memory table (the engine's own test system): one connector, shared by every call.
pub struct Memory(Arc<MemorySystem>);

impl Memory {
    pub fn new() -> Self {
        Memory(Arc::new(MemorySystem::new(sys()).with_page_size(7)))
    }

    fn key(&self, id: i64) -> Key {
        self.0
            .rows()
            .into_iter()
            .find(|(_, r)| int(&r.fields, "id") == id)
            .map(|(k, _)| k)
            .unwrap_or_else(|| panic!("no record {id}"))
    }
}

#[async_trait::async_trait]
impl Subject for Memory {
    async fn connector(&self) -> Arc<dyn Connector> {
        self.0.clone()
    }
    fn names(&self) -> Names {
        PLAIN
    }
    fn missing_key(&self) -> Option<Key> {
        Some(Key::new("erp-999999"))
    }
    async fn insert(&self, id: i64, name: &str, amount: &str) {
        self.0.user_create(
            Fields::new()
                .with("id", id)
                .with("name", name)
                .with("amount", Value::decimal_str(amount).unwrap()),
        );
    }
    async fn update_name(&self, id: i64, name: &str) {
        let k = self.key(id);
        let f = self.0.rows()[&k].fields.clone().with("name", name);
        assert!(self.0.user_update(&k, f));
    }
    async fn delete(&self, id: i64) {
        assert!(self.0.user_delete(&self.key(id)));
    }
    async fn holds(&self) -> Holds {
        self.0
            .rows()
            .values()
            .map(|r| {
                (
                    int(&r.fields, "id"),
                    (
                        text(&r.fields, "name"),
                        r.fields.get("amount").cloned().unwrap(),
                    ),
                )
            })
            .collect()
    }
}

/// Account in an in-process sandbox, with the External ID field `Concord_Id__c`; the suite's
/// `id` is `NumberOfEmployees`, `amount` a custom currency field with cents, `Amount__c`
/// (Account's `AnnualRevenue` has no decimals in Salesforce: 12.5 is stored as 13).
pub struct Salesforce {
    sb: Arc<Sandbox>,
    cfg: SalesforceConfig,
}

const SF: Names = Names {
    id: "NumberOfEmployees",
    name: "Name",
    amount: "Amount__c",
};

impl Salesforce {
    pub async fn new() -> Self {
        let (sb, mut cfg) = sf_common::sandbox_with(
            "[[objects.fields]]\nname = \"Amount__c\"\ntype = \"currency\"\nprecision = 16\nscale = 2\n",
        )
        .await;
        cfg.fields = Some(vec![
            SF.id.into(),
            SF.name.into(),
            SF.amount.into(),
            "Concord_Id__c".into(),
        ]);
        Salesforce { sb, cfg }
    }

    fn query(&self, soql: &str) -> Vec<J> {
        let org = self.sb.org.lock().unwrap();
        let q = concord::sandbox::soql::parse(soql).unwrap();
        match org.query(&q, false, "59.0").unwrap() {
            QueryResult::Rows(rows) => rows,
            QueryResult::Count(_) => unreachable!("not a count"),
        }
    }

    fn id_of(&self, id: i64) -> String {
        let rows = self.query(&format!(
            "SELECT Id FROM Account WHERE NumberOfEmployees = {id}"
        ));
        assert_eq!(rows.len(), 1, "Account {id}: {rows:?}");
        rows[0]["Id"].as_str().unwrap().to_string()
    }

    /// A native edit (a person in the org's UI), on the org's own clock.
    fn edit<T>(&self, f: impl FnOnce(&mut concord::sandbox::org::Org) -> T) -> T {
        f(&mut self.sb.org.lock().unwrap())
    }
}

#[async_trait::async_trait]
impl Subject for Salesforce {
    async fn connector(&self) -> Arc<dyn Connector> {
        Arc::new(
            SalesforceConnector::connect(sys(), self.cfg.clone())
                .await
                .unwrap(),
        )
    }
    fn names(&self) -> Names {
        SF
    }
    fn missing_key(&self) -> Option<Key> {
        // Well-formed, never issued.
        Some(Key::new("001000000000999AAA"))
    }
    fn refused(&self) -> Vec<(&'static str, Value, &'static str)> {
        vec![
            (SF.name, Value::text("x".repeat(300)), "STRING_TOO_LONG"),
            (SF.amount, Value::text("lots"), "Amount__c"),
        ]
    }
    async fn insert(&self, id: i64, name: &str, amount: &str) {
        let amount: f64 = amount.parse().unwrap();
        self.edit(|org| {
            org.create(
                "Account",
                json!({"NumberOfEmployees": id, "Name": name, "Amount__c": amount})
                    .as_object()
                    .unwrap(),
            )
            .unwrap()
        });
    }
    async fn update_name(&self, id: i64, name: &str) {
        let sf_id = self.id_of(id);
        self.edit(|org| {
            org.update(
                "Account",
                &sf_id,
                json!({ "Name": name }).as_object().unwrap(),
            )
            .unwrap()
        });
    }
    async fn delete(&self, id: i64) {
        let sf_id = self.id_of(id);
        self.edit(|org| org.delete("Account", &sf_id).unwrap());
    }
    async fn holds(&self) -> Holds {
        self.query("SELECT NumberOfEmployees, Name, Amount__c FROM Account")
            .into_iter()
            .map(|r| {
                (
                    r["NumberOfEmployees"].as_i64().unwrap(),
                    (
                        r["Name"].as_str().unwrap().to_string(),
                        Value::decimal_str(&r["Amount__c"].to_string()).unwrap(),
                    ),
                )
            })
            .collect()
    }
}

/// A JetStream stream and subject of its own (a destination only): what it holds is the fold of
/// its change events, read from the stream by sequence.
pub struct Nats {
    stream: String,
    subject: String,
    url_env: String,
}

impl Nats {
    /// `None` when NATS is unreachable (and not required).
    pub async fn new() -> Option<Self> {
        if !super::service("NATS", 4222).await {
            return None;
        }
        let n = sf_common::N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let tag = format!("{}x{n}", std::process::id());
        Some(Nats {
            stream: format!("CC{tag}"),
            subject: format!("cc{tag}.records"),
            url_env: sf_common::env_var("CC_NATS_URL", "nats://127.0.0.1:4222"),
        })
    }

    async fn events(&self) -> Vec<J> {
        let js =
            async_nats::jetstream::new(async_nats::connect("nats://127.0.0.1:4222").await.unwrap());
        let Ok(mut stream) = js.get_stream(&self.stream).await else {
            return Vec::new();
        };
        let last = stream.info().await.unwrap().state.last_sequence;
        let mut out = Vec::new();
        for seq in 1..=last {
            let m = stream.get_raw_message(seq).await.unwrap();
            out.push(serde_json::from_slice(&m.payload).unwrap());
        }
        out
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let stream = self.stream.clone();
        // Best effort: the test's stream is removed when the subject goes.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(c) = async_nats::connect("nats://127.0.0.1:4222").await {
                    let _ = async_nats::jetstream::new(c).delete_stream(&stream).await;
                }
            })
        })
        .join();
    }
}

#[async_trait::async_trait]
impl Subject for Nats {
    async fn connector(&self) -> Arc<dyn Connector> {
        Arc::new(
            NatsConnector::connect(sys(), &self.url_env, &self.stream, &self.subject)
                .await
                .unwrap(),
        )
    }
    fn names(&self) -> Names {
        PLAIN
    }
    fn missing_key(&self) -> Option<Key> {
        None
    }
    async fn insert(&self, _: i64, _: &str, _: &str) {
        unreachable!("a NATS subject is a destination only")
    }
    async fn update_name(&self, _: i64, _: &str) {
        unreachable!("a NATS subject is a destination only")
    }
    async fn delete(&self, _: i64) {
        unreachable!("a NATS subject is a destination only")
    }
    async fn holds(&self) -> Holds {
        // The fold of the events: the last upsert of each entity, unless deleted since.
        let mut by_entity: std::collections::BTreeMap<String, Option<(i64, String, Value)>> =
            Default::default();
        for e in self.events().await {
            let entity = e["entity"].as_str().unwrap().to_string();
            let v = match e["op"].as_str().unwrap() {
                "upsert" => {
                    let f = &e["fields"];
                    Some((
                        f["id"].as_i64().unwrap(),
                        f["name"].as_str().unwrap().to_string(),
                        Value::decimal_str(f["amount"].as_str().unwrap()).unwrap(),
                    ))
                }
                _ => None,
            };
            by_entity.insert(entity, v);
        }
        by_entity
            .into_values()
            .flatten()
            .map(|(id, name, amount)| (id, (name, amount)))
            .collect()
    }
}

/// Reads every record of a connector (for subjects whose own view is a second connector).
pub async fn held_by(c: &dyn Connector, n: Names) -> Holds {
    read_all(c)
        .await
        .into_iter()
        .map(|(_, f)| {
            (
                int(&f, n.id),
                (text(&f, n.name), f.get(n.amount).cloned().unwrap()),
            )
        })
        .collect()
}
