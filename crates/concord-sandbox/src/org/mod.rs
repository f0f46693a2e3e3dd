//! The sandbox org's data: records per object with Salesforce's validation, system fields and
//! soft delete, and SOQL execution with parent relationship paths. Values are kept as the JSON
//! Salesforce returns (text, number, boolean, null; dates and datetimes as text).
//!
//! Files: here the records, indexes and schema of an org; `validate` (coercion of client
//! values, required and unique fields), `records` (create, update, delete, upsert, look-ups),
//! `query` (SOQL execution, relationship paths, the replication feeds).

mod derive;
pub mod events;
pub mod pushtopic;
mod query;
mod records;
#[cfg(test)]
mod tests;
mod validate;

use query::eq_ci;
pub use query::{json_to_value, QueryResult};

use super::ids;
use super::schema::{FieldDef, FieldType, ObjectDef};
use super::soql::{self, Cond, Query, SelectItem};
use concord_model::model::{Timestamp, Value};
use serde_json::{json, Map, Value as J};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// An API error in Salesforce's form: HTTP status, error code, message, fields.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct SfError {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub fields: Vec<String>,
}

impl SfError {
    pub fn new(status: u16, code: &'static str, message: impl Into<String>) -> Self {
        SfError {
            status,
            code,
            message: message.into(),
            fields: Vec::new(),
        }
    }
    fn field(mut self, f: &str) -> Self {
        self.fields.push(f.to_string());
        self
    }
    /// The JSON body: `[{"message": …, "errorCode": …, "fields": […]}]`.
    pub fn body(&self) -> J {
        json!([{ "message": self.message, "errorCode": self.code, "fields": self.fields }])
    }
}

/// One stored record.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Rec {
    pub fields: Map<String, J>,
    pub deleted: bool,
}

/// Outcome of an upsert by external id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upserted {
    Created(String),
    Updated(String),
}

/// The org.
#[derive(Debug, Clone)]
pub struct Org {
    objects: Vec<ObjectDef>,
    records: BTreeMap<String, BTreeMap<String, Rec>>,
    next: u64,
    /// The user every change is attributed to.
    pub user_id: String,
    /// Milliseconds added to the wall clock (tests move time).
    pub clock_offset_ms: i64,
    /// When set, every write gets exactly this modification time (tests of records sharing one
    /// SystemModstamp).
    pub frozen_ms: Option<i64>,
    /// A long-running transaction in flight since this time (ms): replication calls report no
    /// `latestDateCovered` past its start, as an org does until it completes (tests of late
    /// commits: a write stamped back to then may still come).
    pub open_transaction_since: Option<i64>,
    last_stamp: i64,
    /// Records removed for good (hard delete, emptied recycle bin): object → id → deletion
    /// time. `getDeleted` still reports them; `queryAll` and retrieve no longer see them.
    delete_log: BTreeMap<String, BTreeMap<String, Timestamp>>,
    /// Records changed since the last [`Org::take_dirty`] (what `--data` persists).
    dirty: BTreeSet<(String, String)>,
    /// Live records by the value of each unique or External ID field: object → field →
    /// value key → ids (duplicate checks and upserts without scanning).
    index: HashMap<String, HashMap<String, HashMap<String, BTreeSet<String>>>>,
    /// The last number each AutoNumber field (`Object.Field`) gave.
    auto_numbers: BTreeMap<String, u64>,
    /// Change Data Capture events (the Streaming API's), in memory only.
    pub events: events::EventLog,
}

/// What the org holds for one (object, id), for persistence.
pub enum Stored<'a> {
    Record(&'a Rec),
    Purged(Timestamp),
    Absent,
}

/// The org's scalar state, persisted beside its records.
#[derive(serde::Serialize, serde::Deserialize)]
pub struct OrgMeta {
    pub objects: Vec<ObjectDef>,
    pub next: u64,
    pub user_id: String,
    pub last_stamp: i64,
    #[serde(default)]
    pub auto_numbers: BTreeMap<String, u64>,
}

/// The compound `Name` of people objects (Contact, Lead, User): FirstName and LastName, kept by
/// the org, read-only for clients.
fn compound_name(o: &ObjectDef, fields: &mut Map<String, J>) {
    let computed = o.field("Name").is_some_and(|f| f.system) && o.field("LastName").is_some();
    if !computed {
        return;
    }
    let part = |k: &str| fields.get(k).and_then(J::as_str).filter(|s| !s.is_empty());
    let name: Vec<&str> = [part("FirstName"), part("LastName")]
        .into_iter()
        .flatten()
        .collect();
    let name = name.join(" ");
    fields.insert(
        "Name".into(),
        if name.is_empty() {
            J::Null
        } else {
            J::String(name)
        },
    );
}

/// Compound address fields (BillingAddress, MailingAddress, a Lead's Address): an object of
/// their components, or null when every component is.
fn compound_addresses(o: &ObjectDef, fields: &mut Map<String, J>) {
    for f in o.fields.iter().filter(|f| f.ty == FieldType::Address) {
        let prefix = f.name.strip_suffix("Address").unwrap_or("");
        let mut v = Map::new();
        for (key, suffix) in crate::schema::ADDRESS_PARTS {
            v.insert(
                key.into(),
                fields
                    .get(&format!("{prefix}{suffix}"))
                    .cloned()
                    .unwrap_or(J::Null),
            );
        }
        let value = if v.values().all(J::is_null) {
            J::Null
        } else {
            J::Object(v)
        };
        fields.insert(f.name.clone(), value);
    }
}

/// An AutoNumber's display format applied to `n`: `{0000}` is `n` zero-padded to 4 digits.
pub(crate) fn auto_number_text(format: &str, n: u64) -> String {
    match (format.find('{'), format.find('}')) {
        (Some(a), Some(b)) if b > a => {
            let width = format[a + 1..b].chars().filter(|c| *c == '0').count();
            format!("{}{n:0width$}{}", &format[..a], &format[b + 1..])
        }
        _ => format!("{format}{n}"),
    }
}

/// Salesforce's datetime format: `2024-05-01T08:00:00.000+0000`.
pub fn sf_datetime(t: Timestamp) -> String {
    match t.to_chrono() {
        Some(d) => d.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string(),
        None => String::new(),
    }
}

impl Org {
    pub fn new(objects: Vec<ObjectDef>) -> Self {
        let mut org = Org {
            objects,
            records: BTreeMap::new(),
            next: 1,
            user_id: String::new(),
            clock_offset_ms: 0,
            frozen_ms: None,
            open_transaction_since: None,
            last_stamp: 0,
            delete_log: BTreeMap::new(),
            dirty: BTreeSet::new(),
            index: HashMap::new(),
            auto_numbers: BTreeMap::new(),
            events: events::EventLog::default(),
        };
        let uid = ids::mint("005", 1);
        org.next = 2;
        let now = org.now();
        let mut u = Map::new();
        for (k, v) in [
            ("Id", json!(uid)),
            ("Username", json!("admin@sandbox.concord")),
            ("LastName", json!("Admin")),
            ("Name", json!("Admin")),
            ("Email", json!("admin@sandbox.concord")),
            ("IsActive", json!(true)),
            ("IsDeleted", json!(false)),
            ("CreatedDate", json!(now)),
            ("LastModifiedDate", json!(now)),
            ("SystemModstamp", json!(now)),
            ("CreatedById", json!(uid)),
            ("LastModifiedById", json!(uid)),
        ] {
            u.insert(k.into(), v);
        }
        org.records.entry("User".into()).or_default().insert(
            uid.clone(),
            Rec {
                fields: u,
                deleted: false,
            },
        );
        org.dirty.insert(("User".into(), uid.clone()));
        org.user_id = uid;
        // Every org has its standard price book.
        org.ensure_standard_price_book();
        org
    }

    /// How far changes are known complete (ms): the org's clock, held back to the start of a
    /// long-running transaction in flight, and to the frozen time while stamps are frozen
    /// (any write may still get it). Replication calls cover no later.
    pub fn covered_until(&self) -> i64 {
        let now = Timestamp::now().millis() + self.clock_offset_ms;
        let now = self.frozen_ms.map_or(now, |f| f.min(now));
        self.open_transaction_since.map_or(now, |t| t.min(now))
    }

    /// Strictly increasing modification stamps (two writes never share a SystemModstamp unless
    /// the caller moves the clock back).
    fn now(&mut self) -> String {
        if let Some(f) = self.frozen_ms {
            return sf_datetime(Timestamp(f));
        }
        let mut ms = Timestamp::now().millis() + self.clock_offset_ms;
        if ms <= self.last_stamp && self.clock_offset_ms == 0 {
            ms = self.last_stamp + 1;
        }
        self.last_stamp = ms;
        sf_datetime(Timestamp(ms))
    }

    /// The index key of a value (text compares case-insensitively, as `eq_ci`).
    fn index_key(v: &J) -> Option<String> {
        match v {
            J::Null => None,
            J::String(s) => Some(format!("s{}", s.to_lowercase())),
            other => Some(format!("j{other}")),
        }
    }

    /// Adds (or with `add = false` removes) a live record's indexed values.
    fn index_record(&mut self, object: &str, id: &str, add: bool) {
        let Some(o) = self.objects.iter().find(|o| o.name == object) else {
            return;
        };
        let indexed: Vec<String> = o
            .fields
            .iter()
            .filter(|f| f.unique || f.external_id)
            .map(|f| f.name.clone())
            .collect();
        let Some(rec) = self.records.get(object).and_then(|m| m.get(id)) else {
            return;
        };
        if rec.deleted {
            return;
        }
        let keys: Vec<(String, String)> = indexed
            .into_iter()
            .filter_map(|f| {
                let k = rec.fields.get(&f).and_then(Self::index_key)?;
                Some((f, k))
            })
            .collect();
        let by_field = self.index.entry(object.to_string()).or_default();
        for (f, k) in keys {
            let m = by_field.entry(f).or_default();
            if add {
                m.entry(k).or_default().insert(id.to_string());
            } else if let Some(ids) = m.get_mut(&k) {
                ids.remove(id);
                if ids.is_empty() {
                    m.remove(&k);
                }
            }
        }
    }

    /// Rebuilds every index (after a restore or a schema change).
    fn reindex(&mut self) {
        self.index.clear();
        let all: Vec<(String, String)> = self
            .records
            .iter()
            .flat_map(|(o, m)| m.keys().map(move |id| (o.clone(), id.clone())))
            .collect();
        for (o, id) in all {
            self.index_record(&o, &id, true);
        }
    }

    /// Live ids of `object` whose indexed `field` equals `v`; `None` when the field is not
    /// indexed.
    fn lookup(&self, object: &str, field: &str, v: &J) -> Option<Vec<String>> {
        let o = self.objects.iter().find(|o| o.name == object)?;
        let f = o.field(field).filter(|f| f.unique || f.external_id)?;
        let k = Self::index_key(v)?;
        Some(
            self.index
                .get(object)
                .and_then(|m| m.get(&f.name))
                .and_then(|m| m.get(&k))
                .map(|ids| ids.iter().cloned().collect())
                .unwrap_or_default(),
        )
    }

    /// The (object, id) pairs changed since the last call.
    pub fn take_dirty(&mut self) -> Vec<(String, String)> {
        std::mem::take(&mut self.dirty).into_iter().collect()
    }

    /// What the org holds for `id` of `object`.
    pub fn stored(&self, object: &str, id: &str) -> Stored<'_> {
        if let Some(r) = self.records.get(object).and_then(|m| m.get(id)) {
            return Stored::Record(r);
        }
        match self.delete_log.get(object).and_then(|m| m.get(id)) {
            Some(t) => Stored::Purged(*t),
            None => Stored::Absent,
        }
    }

    /// The scalar state persisted beside the records.
    pub fn meta(&self) -> OrgMeta {
        OrgMeta {
            objects: self.objects.clone(),
            next: self.next,
            user_id: self.user_id.clone(),
            last_stamp: self.last_stamp,
            auto_numbers: self.auto_numbers.clone(),
        }
    }

    /// Rebuilds an org from persisted parts.
    pub fn restore(
        meta: OrgMeta,
        records: impl IntoIterator<Item = (String, String, Rec)>,
        purged: impl IntoIterator<Item = (String, String, Timestamp)>,
    ) -> Org {
        let mut org = Org::new(meta.objects);
        org.records.clear();
        org.next = meta.next;
        org.user_id = meta.user_id;
        org.last_stamp = meta.last_stamp;
        org.auto_numbers = meta.auto_numbers;
        // Objects and fields added to the standard schema since the store was written.
        for def in crate::schema::standard_objects() {
            org.extend_schema(def);
        }
        for (o, id, r) in records {
            org.records.entry(o).or_default().insert(id, r);
        }
        for (o, id, t) in purged {
            org.delete_log.entry(o).or_default().insert(id, t);
        }
        org.dirty.clear();
        org.reindex();
        // A store written before price books were known gets the standard one.
        org.ensure_standard_price_book();
        org
    }

    /// Creates the standard price book unless the org has one (or knows no price books).
    fn ensure_standard_price_book(&mut self) {
        if self.object("Pricebook2").is_err() || self.standard_price_book_id().is_some() {
            return;
        }
        let mut pb = Map::new();
        pb.insert("Name".into(), json!("Standard Price Book"));
        pb.insert("IsActive".into(), json!(true));
        if let Ok(id) = self.create("Pricebook2", &pb) {
            if let Some(r) = self
                .records
                .get_mut("Pricebook2")
                .and_then(|m| m.get_mut(&id))
            {
                r.fields.insert("IsStandard".into(), json!(true));
            }
        }
    }

    /// The standard price book's id, when the org has one.
    pub fn standard_price_book_id(&self) -> Option<String> {
        self.records.get("Pricebook2")?.iter().find_map(|(id, r)| {
            (!r.deleted && r.fields.get("IsStandard") == Some(&J::Bool(true))).then(|| id.clone())
        })
    }

    /// Number of records held (live and in the recycle bin).
    pub fn record_count(&self) -> usize {
        self.records.values().map(BTreeMap::len).sum()
    }

    /// Every Id of an object's records (deleted ones included), in Id order: the ranges Bulk
    /// API 1.0's PK chunking splits a query by.
    pub fn ids(&self, object: &str) -> Vec<String> {
        self.records
            .get(object)
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn objects(&self) -> &[ObjectDef] {
        &self.objects
    }

    /// Adds an object, or adds fields to an existing one (fields it already has are kept).
    pub fn extend_schema(&mut self, def: ObjectDef) {
        match self
            .objects
            .iter_mut()
            .find(|o| o.name.eq_ignore_ascii_case(&def.name))
        {
            Some(o) => {
                for f in def.fields {
                    if o.field(&f.name).is_none() {
                        o.fields.push(f);
                    }
                }
            }
            None => self.objects.push(def),
        }
        self.reindex();
    }

    pub fn object(&self, name: &str) -> Result<&ObjectDef, SfError> {
        self.objects
            .iter()
            .find(|o| o.name.eq_ignore_ascii_case(name))
            .ok_or_else(|| SfError::new(404, "NOT_FOUND", format!("The requested resource does not exist: sObject type '{name}' is not supported.")))
    }
}
