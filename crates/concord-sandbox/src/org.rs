//! The sandbox org's data: records per object with Salesforce's validation, system fields and
//! soft delete, and SOQL execution with parent relationship paths. Values are kept as the JSON
//! Salesforce returns (text, number, boolean, null; dates and datetimes as text).

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
    last_stamp: i64,
    /// Records removed for good (hard delete, emptied recycle bin): object → id → deletion
    /// time. `getDeleted` still reports them; `queryAll` and retrieve no longer see them.
    delete_log: BTreeMap<String, BTreeMap<String, Timestamp>>,
    /// Records changed since the last [`Org::take_dirty`] (what `--data` persists).
    dirty: BTreeSet<(String, String)>,
    /// Live records by the value of each unique or External ID field: object → field →
    /// value key → ids (duplicate checks and upserts without scanning).
    index: HashMap<String, HashMap<String, HashMap<String, BTreeSet<String>>>>,
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
            last_stamp: 0,
            delete_log: BTreeMap::new(),
            dirty: BTreeSet::new(),
            index: HashMap::new(),
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
        org
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
        for (o, id, r) in records {
            org.records.entry(o).or_default().insert(id, r);
        }
        for (o, id, t) in purged {
            org.delete_log.entry(o).or_default().insert(id, t);
        }
        org.dirty.clear();
        org.reindex();
        org
    }

    /// Number of records held (live and in the recycle bin).
    pub fn record_count(&self) -> usize {
        self.records.values().map(BTreeMap::len).sum()
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

    fn coerce(&self, f: &FieldDef, v: &J) -> Result<J, SfError> {
        let bad = |what: &str| {
            SfError::new(
                400,
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                format!("{}: value not of required type {what}: {v}", f.name),
            )
            .field(&f.name)
        };
        if v.is_null() {
            return Ok(J::Null);
        }
        Ok(match f.ty {
            FieldType::Boolean => match v {
                J::Bool(_) => v.clone(),
                J::String(s)
                    if s.eq_ignore_ascii_case("true") || s.eq_ignore_ascii_case("false") =>
                {
                    J::Bool(s.eq_ignore_ascii_case("true"))
                }
                _ => return Err(bad("boolean")),
            },
            FieldType::Int => match v
                .as_i64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            {
                Some(i) => json!(i),
                None => return Err(bad("int")),
            },
            FieldType::Double | FieldType::Currency | FieldType::Percent => {
                let text = match v {
                    J::Number(n) => n.to_string(),
                    J::String(s) => s.clone(),
                    _ => return Err(bad("number")),
                };
                let d = Value::decimal_str(&text).map_err(|_| bad("number"))?;
                let scale = f
                    .scale
                    .unwrap_or(if f.ty == FieldType::Currency { 2 } else { 0 });
                let rounded = match d {
                    Value::Decimal(x) => x.round_dp_with_strategy(
                        scale,
                        rust_decimal::RoundingStrategy::MidpointAwayFromZero,
                    ),
                    Value::Int(i) => rust_decimal::Decimal::from(i),
                    _ => return Err(bad("number")),
                };
                let f64v: f64 = rounded.to_string().parse().map_err(|_| bad("number"))?;
                json!(f64v)
            }
            FieldType::Date => match v
                .as_str()
                .and_then(|s| chrono::NaiveDate::parse_from_str(s.get(..10)?, "%Y-%m-%d").ok())
            {
                Some(d) => json!(d.format("%Y-%m-%d").to_string()),
                None => return Err(bad("date")),
            },
            FieldType::Datetime => match v.as_str().and_then(|s| Timestamp::parse(s).ok()) {
                Some(t) => json!(sf_datetime(t)),
                None => return Err(bad("datetime")),
            },
            FieldType::Reference => {
                let s = v.as_str().ok_or_else(|| bad("reference"))?;
                let id = ids::to18(s).ok_or_else(|| {
                    SfError::new(
                        400,
                        "MALFORMED_ID",
                        format!("{}: id value of incorrect type: {s}", f.name),
                    )
                    .field(&f.name)
                })?;
                let ok = f.reference_to.iter().any(|t| {
                    self.records
                        .get(t.as_str())
                        .is_some_and(|m| m.get(&id).is_some_and(|r| !r.deleted))
                });
                if !ok {
                    return Err(SfError::new(
                        400,
                        "INVALID_CROSS_REFERENCE_KEY",
                        "invalid cross reference id",
                    )
                    .field(&f.name));
                }
                json!(id)
            }
            _ => {
                let s = match v {
                    J::String(s) => s.clone(),
                    J::Number(n) => n.to_string(),
                    J::Bool(b) => b.to_string(),
                    _ => return Err(bad("text")),
                };
                let len = f.text_length() as usize;
                if s.chars().count() > len {
                    return Err(SfError::new(
                        400,
                        "STRING_TOO_LONG",
                        format!(
                            "{}: data value too large: {} (max length={len})",
                            f.name,
                            s.chars().take(40).collect::<String>()
                        ),
                    )
                    .field(&f.name));
                }
                json!(s)
            }
        })
    }

    /// Validates and converts client fields for `o` (create when `creating`).
    fn prepare(
        &self,
        o: &ObjectDef,
        input: &Map<String, J>,
        creating: bool,
    ) -> Result<Map<String, J>, SfError> {
        let mut out = Map::new();
        for (k, v) in input {
            if k == "attributes" {
                continue;
            }
            let f = o.field(k).ok_or_else(|| {
                SfError::new(
                    400,
                    "INVALID_FIELD",
                    format!("No such column '{k}' on sobject of type {}", o.name),
                )
            })?;
            if f.system {
                return Err(SfError::new(
                    400,
                    "INVALID_FIELD_FOR_INSERT_UPDATE",
                    format!("Unable to create/update fields: {}. Please check the security settings of this field and verify that it is read/write for your profile or permission set.", f.name),
                )
                .field(&f.name));
            }
            out.insert(f.name.clone(), self.coerce(f, v)?);
        }
        if creating {
            for f in o.fields.iter().filter(|f| f.default_value.is_some()) {
                if out.get(&f.name).is_none_or(J::is_null) {
                    out.insert(f.name.clone(), json!(f.default_value));
                }
            }
            let missing: Vec<String> = o
                .fields
                .iter()
                .filter(|f| f.required && out.get(&f.name).is_none_or(J::is_null))
                .map(|f| f.name.clone())
                .collect();
            if !missing.is_empty() {
                let mut e = SfError::new(
                    400,
                    "REQUIRED_FIELD_MISSING",
                    format!("Required fields are missing: [{}]", missing.join(", ")),
                );
                e.fields = missing;
                return Err(e);
            }
        }
        Ok(out)
    }

    fn check_unique(
        &self,
        o: &ObjectDef,
        id: Option<&str>,
        fields: &Map<String, J>,
    ) -> Result<(), SfError> {
        for f in o.fields.iter().filter(|f| f.unique || f.external_id) {
            let Some(v) = fields.get(&f.name).filter(|v| !v.is_null()) else {
                continue;
            };
            if !f.unique {
                continue;
            }
            let dup = self
                .lookup(&o.name, &f.name, v)
                .unwrap_or_default()
                .into_iter()
                .find(|rid| Some(rid.as_str()) != id);
            if let Some(rid) = dup {
                return Err(SfError::new(
                    400,
                    "DUPLICATE_VALUE",
                    format!(
                        "duplicate value found: {} duplicates value on record with id: {rid}",
                        f.name
                    ),
                )
                .field(&f.name));
            }
        }
        Ok(())
    }

    pub fn create(&mut self, object: &str, input: &Map<String, J>) -> Result<String, SfError> {
        let o = self.object(object)?.clone();
        let mut fields = self.prepare(&o, input, true)?;
        self.check_unique(&o, None, &fields)?;
        let id = ids::mint(o.prefix(), self.next);
        self.next += 1;
        let now = self.now();
        for f in &o.fields {
            fields.entry(f.name.clone()).or_insert(match f.ty {
                FieldType::Boolean => J::Bool(false),
                _ => J::Null,
            });
        }
        compound_name(&o, &mut fields);
        fields.insert("Id".into(), json!(id));
        fields.insert("IsDeleted".into(), J::Bool(false));
        for k in ["CreatedDate", "LastModifiedDate", "SystemModstamp"] {
            fields.insert(k.into(), json!(now));
        }
        for k in ["CreatedById", "LastModifiedById"] {
            fields.insert(k.into(), json!(self.user_id));
        }
        if o.field("OwnerId").is_some() && fields.get("OwnerId").is_none_or(J::is_null) {
            fields.insert("OwnerId".into(), json!(self.user_id));
        }
        self.dirty.insert((o.name.clone(), id.clone()));
        self.records.entry(o.name.clone()).or_default().insert(
            id.clone(),
            Rec {
                fields,
                deleted: false,
            },
        );
        self.index_record(&o.name, &id, true);
        Ok(id)
    }

    fn find_live(&self, o: &ObjectDef, id: &str) -> Result<String, SfError> {
        let id18 = ids::to18(id)
            .filter(|i| ids::prefix(i) == Some(o.prefix()))
            .ok_or_else(|| {
                SfError::new(404, "NOT_FOUND", "The requested resource does not exist")
            })?;
        match self.records.get(&o.name).and_then(|m| m.get(&id18)) {
            Some(r) if r.deleted => {
                Err(SfError::new(404, "ENTITY_IS_DELETED", "entity is deleted"))
            }
            Some(_) => Ok(id18),
            None => Err(SfError::new(
                404,
                "NOT_FOUND",
                "The requested resource does not exist",
            )),
        }
    }

    pub fn update(
        &mut self,
        object: &str,
        id: &str,
        input: &Map<String, J>,
    ) -> Result<(), SfError> {
        let o = self.object(object)?.clone();
        let id18 = self.find_live(&o, id)?;
        let fields = self.prepare(&o, input, false)?;
        self.check_unique(&o, Some(&id18), &fields)?;
        for f in o.fields.iter().filter(|f| f.required) {
            if fields.get(&f.name).is_some_and(J::is_null) {
                return Err(SfError::new(
                    400,
                    "REQUIRED_FIELD_MISSING",
                    format!("Required fields are missing: [{}]", f.name),
                )
                .field(&f.name));
            }
        }
        let now = self.now();
        let uid = self.user_id.clone();
        self.index_record(&o.name, &id18, false);
        let rec = self
            .records
            .get_mut(&o.name)
            .and_then(|m| m.get_mut(&id18))
            .expect("found above");
        for (k, v) in fields {
            rec.fields.insert(k, v);
        }
        compound_name(&o, &mut rec.fields);
        rec.fields.insert("LastModifiedDate".into(), json!(now));
        rec.fields.insert("SystemModstamp".into(), json!(now));
        rec.fields.insert("LastModifiedById".into(), json!(uid));
        self.index_record(&o.name, &id18, true);
        self.dirty.insert((o.name, id18));
        Ok(())
    }

    /// Soft delete: the record leaves queries, stays for `queryAll` and `getDeleted`.
    pub fn delete(&mut self, object: &str, id: &str) -> Result<(), SfError> {
        let o = self.object(object)?.clone();
        let id18 = self.find_live(&o, id)?;
        let now = self.now();
        self.index_record(&o.name, &id18, false);
        let rec = self
            .records
            .get_mut(&o.name)
            .and_then(|m| m.get_mut(&id18))
            .expect("found above");
        rec.deleted = true;
        rec.fields.insert("IsDeleted".into(), J::Bool(true));
        rec.fields.insert("SystemModstamp".into(), json!(now));
        self.dirty.insert((o.name, id18));
        Ok(())
    }

    /// Hard delete (Bulk API `hardDelete`): the record bypasses the recycle bin and is gone for
    /// good; only `getDeleted` still reports it. Works on live and recycle-bin records.
    pub fn hard_delete(&mut self, object: &str, id: &str) -> Result<(), SfError> {
        let o = self.object(object)?.clone();
        let id18 = ids::to18(id)
            .filter(|i| ids::prefix(i) == Some(o.prefix()))
            .ok_or_else(|| SfError::new(400, "MALFORMED_ID", format!("malformed id {id}")))?;
        self.index_record(&o.name, &id18, false);
        if self
            .records
            .get_mut(&o.name)
            .and_then(|m| m.remove(&id18))
            .is_none()
        {
            return Err(SfError::new(404, "ENTITY_IS_DELETED", "entity is deleted"));
        }
        let now = self.now();
        let t = Timestamp::parse(&now).unwrap_or(Timestamp(0));
        self.dirty.insert((o.name.clone(), id18.clone()));
        self.delete_log.entry(o.name).or_default().insert(id18, t);
        Ok(())
    }

    /// Empties the recycle bin: every soft-deleted record is purged (kept in the delete log).
    /// Returns how many were purged.
    pub fn empty_recycle_bin(&mut self) -> usize {
        let mut n = 0;
        for (object, m) in self.records.iter_mut() {
            let gone: Vec<String> = m
                .iter()
                .filter(|(_, r)| r.deleted)
                .map(|(id, _)| id.clone())
                .collect();
            for id in gone {
                let r = m.remove(&id).expect("listed");
                let t = r
                    .fields
                    .get("SystemModstamp")
                    .and_then(J::as_str)
                    .and_then(|s| Timestamp::parse(s).ok())
                    .unwrap_or(Timestamp(0));
                self.dirty.insert((object.clone(), id.clone()));
                self.delete_log
                    .entry(object.clone())
                    .or_default()
                    .insert(id, t);
                n += 1;
            }
        }
        n
    }

    /// The id of the one live record of `object` whose `field` equals `value` (relationship
    /// columns of Bulk API uploads: `Account.External_Id__c`).
    pub fn find_by(&self, object: &str, field: &str, value: &str) -> Result<String, SfError> {
        let o = self.object(object)?;
        let f = o
            .field(field)
            .filter(|f| f.external_id || f.name == "Id")
            .ok_or_else(|| {
                SfError::new(
                    400,
                    "INVALID_FIELD",
                    format!("{field} is not an external id field of {}", o.name),
                )
            })?;
        let key = J::String(value.to_string());
        let found: Vec<&String> = self
            .records
            .get(&o.name)
            .into_iter()
            .flatten()
            .filter(|(_, r)| !r.deleted && r.fields.get(&f.name).is_some_and(|x| eq_ci(x, &key)))
            .map(|(id, _)| id)
            .collect();
        match found.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(SfError::new(
                400,
                "INVALID_FIELD",
                format!(
                    "Foreign key external ID: {value} not found for field {} in entity {}",
                    f.name, o.name
                ),
            )),
            _ => Err(SfError::new(
                400,
                "INVALID_FIELD",
                format!(
                    "Foreign key external ID: {value} matches more than one record for field {} in entity {}",
                    f.name, o.name
                ),
            )),
        }
    }

    pub fn get(&self, object: &str, id: &str) -> Result<&Rec, SfError> {
        let o = self.object(object)?;
        let id18 = self.find_live(o, id)?;
        Ok(&self.records[&o.name][&id18])
    }

    /// Upsert by external id: creates, updates, or 300 when several records match.
    pub fn upsert(
        &mut self,
        object: &str,
        ext_field: &str,
        value: &str,
        input: &Map<String, J>,
    ) -> Result<Upserted, SfError> {
        let o = self.object(object)?.clone();
        let f = o.field(ext_field).ok_or_else(|| {
            SfError::new(
                404,
                "NOT_FOUND",
                format!(
                    "Provided external ID field does not exist or is not accessible: {ext_field}"
                ),
            )
        })?;
        if !(f.external_id || f.name == "Id") {
            return Err(SfError::new(
                400,
                "INVALID_FIELD",
                format!("Field {} is not an external id field", f.name),
            ));
        }
        let key = J::String(value.to_string());
        let matches: Vec<String> = match self.lookup(&o.name, &f.name, &key) {
            Some(ids) => ids,
            None => self
                .records
                .get(&o.name)
                .map(|m| {
                    m.iter()
                        .filter(|(_, r)| {
                            !r.deleted && r.fields.get(&f.name).is_some_and(|x| eq_ci(x, &key))
                        })
                        .map(|(id, _)| id.clone())
                        .collect()
                })
                .unwrap_or_default(),
        };
        match matches.len() {
            0 => {
                let mut with_key = input.clone();
                with_key.insert(f.name.clone(), key);
                self.create(&o.name, &with_key).map(Upserted::Created)
            }
            1 => {
                self.update(&o.name, &matches[0], input)?;
                Ok(Upserted::Updated(matches[0].clone()))
            }
            _ => {
                let mut e = SfError::new(
                    300,
                    "MULTIPLE_CHOICES",
                    format!("Multiple records found for {} = {value}", f.name),
                );
                e.fields = matches;
                Err(e)
            }
        }
    }

    /// Resolves a field path on a record (`Account.Name` follows `AccountId`).
    fn resolve(&self, o: &ObjectDef, rec: &Rec, path: &[String]) -> J {
        if path.len() == 1 {
            return o
                .field(&path[0])
                .and_then(|f| rec.fields.get(&f.name))
                .cloned()
                .unwrap_or(J::Null);
        }
        let Some(rel) = o.relationship(&path[0]) else {
            return J::Null;
        };
        let Some(J::String(pid)) = rec.fields.get(&rel.name) else {
            return J::Null;
        };
        for target in &rel.reference_to {
            if let (Ok(po), Some(pr)) = (
                self.object(target),
                self.records.get(target.as_str()).and_then(|m| m.get(pid)),
            ) {
                return self.resolve(po, pr, &path[1..]);
            }
        }
        J::Null
    }

    fn check_paths(&self, o: &ObjectDef, q: &Query) -> Result<(), SfError> {
        let mut paths: Vec<&Vec<String>> = q
            .select
            .iter()
            .filter_map(|s| match s {
                SelectItem::Field(p) => Some(p),
                SelectItem::Count => None,
            })
            .collect();
        paths.extend(q.order.iter().map(|o| &o.field));
        fn cond_paths<'a>(c: &'a Cond, out: &mut Vec<&'a Vec<String>>) {
            match c {
                Cond::And(a, b) | Cond::Or(a, b) => {
                    cond_paths(a, out);
                    cond_paths(b, out);
                }
                Cond::Not(a) => cond_paths(a, out),
                Cond::Cmp { field, .. } | Cond::Like { field, .. } | Cond::In { field, .. } => {
                    out.push(field)
                }
            }
        }
        if let Some(c) = &q.filter {
            cond_paths(c, &mut paths);
        }
        for p in paths {
            let mut obj = o;
            for (i, part) in p.iter().enumerate() {
                if i + 1 == p.len() {
                    if obj.field(part).is_none() {
                        return Err(SfError::new(
                            400,
                            "INVALID_FIELD",
                            format!("No such column '{part}' on entity '{}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name.", obj.name),
                        ));
                    }
                } else {
                    let rel = obj.relationship(part).ok_or_else(|| {
                        SfError::new(
                            400,
                            "INVALID_FIELD",
                            format!("Didn't understand relationship '{part}' in field path."),
                        )
                    })?;
                    obj = self.object(&rel.reference_to[0])?;
                }
            }
        }
        Ok(())
    }

    /// Runs a query: the matching records in order (each a JSON object with `attributes` and the
    /// selected fields, parent paths nested), or the count for `COUNT()`. `all` includes deleted
    /// records (`queryAll`).
    pub fn query(&self, q: &Query, all: bool, version: &str) -> Result<QueryResult, SfError> {
        let o = self.object(&q.object).map_err(|_| {
            SfError::new(
                400,
                "INVALID_TYPE",
                format!("sObject type '{}' is not supported.", q.object),
            )
        })?;
        self.check_paths(o, q)?;
        let empty = BTreeMap::new();
        let recs = self.records.get(&o.name).unwrap_or(&empty);
        let mut hits: Vec<&Rec> = recs
            .values()
            .filter(|r| all || !r.deleted)
            .filter(|r| match &q.filter {
                None => true,
                Some(c) => soql::eval(c, &|p: &[String]| json_to_value(&self.resolve(o, r, p))),
            })
            .collect();
        if q.is_count() {
            return Ok(QueryResult::Count(hits.len() as u64));
        }
        soql::sort(&mut hits, &q.order, &|r: &&Rec, p: &[String]| {
            json_to_value(&self.resolve(o, r, p))
        });
        let offset = q.offset.unwrap_or(0) as usize;
        let limit = q.limit.map_or(usize::MAX, |l| l as usize);
        let rows = hits
            .into_iter()
            .skip(offset)
            .take(limit)
            .map(|r| self.render(o, r, q, version))
            .collect();
        Ok(QueryResult::Rows(rows))
    }

    fn attributes(o: &ObjectDef, id: &J, version: &str) -> J {
        json!({"type": o.name, "url": format!("/services/data/v{version}/sobjects/{}/{}", o.name, id.as_str().unwrap_or(""))})
    }

    fn render(&self, o: &ObjectDef, r: &Rec, q: &Query, version: &str) -> J {
        let mut out = Map::new();
        out.insert(
            "attributes".into(),
            Self::attributes(o, r.fields.get("Id").unwrap_or(&J::Null), version),
        );
        for s in &q.select {
            let SelectItem::Field(path) = s else { continue };
            self.render_path(o, r, path, &mut out, version);
        }
        J::Object(out)
    }

    fn render_path(
        &self,
        o: &ObjectDef,
        r: &Rec,
        path: &[String],
        out: &mut Map<String, J>,
        version: &str,
    ) {
        if path.len() == 1 {
            if let Some(f) = o.field(&path[0]) {
                out.insert(
                    f.name.clone(),
                    r.fields.get(&f.name).cloned().unwrap_or(J::Null),
                );
            }
            return;
        }
        let Some(rel) = o.relationship(&path[0]) else {
            return;
        };
        let rel_name = rel.relationship_name.clone().unwrap_or_default();
        let parent = match r.fields.get(&rel.name) {
            Some(J::String(pid)) => rel.reference_to.iter().find_map(|t| {
                let po = self.object(t).ok()?;
                let pr = self.records.get(t.as_str())?.get(pid)?;
                Some((po, pr))
            }),
            _ => None,
        };
        match parent {
            None => {
                out.insert(rel_name, J::Null);
            }
            Some((po, pr)) => {
                let entry = out.entry(rel_name).or_insert_with(|| {
                    let mut m = Map::new();
                    m.insert(
                        "attributes".into(),
                        Self::attributes(po, pr.fields.get("Id").unwrap_or(&J::Null), version),
                    );
                    J::Object(m)
                });
                if let J::Object(m) = entry {
                    self.render_path(po, pr, &path[1..], m, version);
                }
            }
        }
    }

    /// Records of `object` whose SystemModstamp lies in [start, end], split by deleted or not
    /// (for `updated/` and `deleted/`).
    pub fn changed_between(
        &self,
        object: &str,
        start: Timestamp,
        end: Timestamp,
        deleted: bool,
    ) -> Result<Vec<(String, Timestamp)>, SfError> {
        let o = self.object(object)?;
        let mut out = Vec::new();
        if let Some(m) = self.records.get(&o.name) {
            for (id, r) in m {
                if r.deleted != deleted {
                    continue;
                }
                let stamp = r
                    .fields
                    .get("SystemModstamp")
                    .and_then(J::as_str)
                    .and_then(|s| Timestamp::parse(s).ok());
                if let Some(t) = stamp {
                    if t >= start && t <= end {
                        out.push((id.clone(), t));
                    }
                }
            }
        }
        if deleted {
            for (id, t) in self.delete_log.get(&o.name).into_iter().flatten() {
                if *t >= start && *t <= end {
                    out.push((id.clone(), *t));
                }
            }
        }
        Ok(out)
    }
}

/// A query's result before paging.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryResult {
    Rows(Vec<J>),
    Count(u64),
}

fn eq_ci(a: &J, b: &J) -> bool {
    match (a, b) {
        (J::String(x), J::String(y)) => x.eq_ignore_ascii_case(y),
        _ => a == b,
    }
}

/// A JSON field value as a model value, for SOQL comparison: text that looks like a date or a
/// Salesforce datetime compares as one.
pub fn json_to_value(j: &J) -> Value {
    match j {
        J::Null => Value::Null,
        J::Bool(b) => Value::Bool(*b),
        J::Number(n) => Value::decimal_str(&n.to_string()).unwrap_or(Value::Null),
        J::String(s) => {
            if s.len() == 10 {
                if let Ok(d) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
                    return Value::Date(d);
                }
            }
            if s.len() >= 20 && s.as_bytes().get(10) == Some(&b'T') {
                if let Ok(t) = Timestamp::parse(s) {
                    return Value::DateTime(t);
                }
            }
            Value::text(s.as_str())
        }
        other => Value::Json(other.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{build, SchemaFile};

    fn org() -> Org {
        let schema: SchemaFile = toml::from_str(
            "[[objects]]\nname = \"Account\"\n[[objects.fields]]\nname = \"Erp_Id__c\"\ntype = \"string\"\nexternal_id = true\nunique = true\n",
        )
        .unwrap();
        Org::new(build(&schema).unwrap())
    }

    fn m(v: J) -> Map<String, J> {
        v.as_object().unwrap().clone()
    }

    fn rows(org: &Org, soql: &str) -> Vec<J> {
        match org
            .query(&soql::parse(soql).unwrap(), false, "62.0")
            .unwrap()
        {
            QueryResult::Rows(r) => r,
            QueryResult::Count(_) => panic!("rows expected"),
        }
    }

    #[test]
    fn the_unique_index_follows_updates_deletes_and_restores() {
        let mut org = org();
        let a = org
            .create("Account", &m(json!({"Name": "A", "Erp_Id__c": "K1"})))
            .unwrap();
        let dup = org
            .create("Account", &m(json!({"Name": "B", "Erp_Id__c": "k1"})))
            .unwrap_err();
        assert_eq!(
            dup.code, "DUPLICATE_VALUE",
            "case-insensitive, as Salesforce"
        );
        org.update("Account", &a, &m(json!({"Erp_Id__c": "K2"})))
            .unwrap();
        let b = org
            .create("Account", &m(json!({"Name": "B", "Erp_Id__c": "K1"})))
            .unwrap();
        assert_eq!(
            org.upsert("Account", "Erp_Id__c", "K2", &m(json!({"Name": "A2"})))
                .unwrap(),
            Upserted::Updated(a.clone())
        );
        org.delete("Account", &b).unwrap();
        org.create("Account", &m(json!({"Name": "C", "Erp_Id__c": "K1"})))
            .unwrap();
        // After a restore (`--data`), the index is rebuilt.
        let recs: Vec<(String, String, Rec)> = org
            .records
            .iter()
            .flat_map(|(o, ms)| {
                ms.iter()
                    .map(move |(id, r)| (o.clone(), id.clone(), r.clone()))
            })
            .collect();
        let mut back = Org::restore(org.meta(), recs, Vec::new());
        assert_eq!(
            back.create("Account", &m(json!({"Name": "D", "Erp_Id__c": "K2"})))
                .unwrap_err()
                .code,
            "DUPLICATE_VALUE"
        );
    }

    #[test]
    fn people_have_a_compound_read_only_name() {
        let mut org = org();
        let u = rows(&org, "SELECT Name, FirstName, LastName FROM User");
        assert_eq!(u[0]["Name"], "Admin");
        let id = org
            .create(
                "Contact",
                &m(json!({"FirstName": "Ada", "LastName": "Lovelace"})),
            )
            .unwrap();
        org.create("Lead", &m(json!({"LastName": "Solo", "Company": "X"})))
            .unwrap();
        let c = rows(&org, "SELECT Name FROM Contact WHERE Name = 'Ada Lovelace'");
        assert_eq!(c.len(), 1, "Name is queryable and filterable");
        org.update(
            "Contact",
            &id,
            &m(json!({"FirstName": null, "LastName": "Byron"})),
        )
        .unwrap();
        assert_eq!(org.get("Contact", &id).unwrap().fields["Name"], "Byron");
        assert_eq!(rows(&org, "SELECT Name FROM Lead")[0]["Name"], "Solo");
        let e = org
            .update("Contact", &id, &m(json!({"Name": "Someone"})))
            .unwrap_err();
        assert_eq!(e.code, "INVALID_FIELD_FOR_INSERT_UPDATE");
        let d = crate::schema::describe(org.object("Contact").unwrap(), "62.0");
        let name = d["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "Name")
            .unwrap();
        assert_eq!(
            (
                name["createable"].as_bool(),
                name["updateable"].as_bool(),
                name["nameField"].as_bool()
            ),
            (Some(false), Some(false), Some(true))
        );
    }

    #[test]
    fn crud_with_salesforce_errors() {
        let mut o = org();
        let id = o
            .create(
                "Account",
                &m(json!({"Name": "Acme", "AnnualRevenue": "1000.4", "Erp_Id__c": "E-1"})),
            )
            .unwrap();
        assert_eq!(id.len(), 18);
        let r = o.get("account", &id[..15]).unwrap();
        assert_eq!(r.fields["Name"], json!("Acme"));
        assert_eq!(
            r.fields["AnnualRevenue"],
            json!(1000.0),
            "currency scale 0 for AnnualRevenue"
        );
        assert_eq!(r.fields["OwnerId"], json!(o.user_id));
        let e = o.create("Account", &m(json!({"Phone": "1"}))).unwrap_err();
        assert_eq!((e.status, e.code), (400, "REQUIRED_FIELD_MISSING"));
        assert_eq!(e.fields, vec!["Name"]);
        let e = o
            .create("Account", &m(json!({"Name": "x", "Nope__c": 1})))
            .unwrap_err();
        assert_eq!(e.code, "INVALID_FIELD");
        let e = o
            .create("Account", &m(json!({"Name": "x", "Erp_Id__c": "e-1"})))
            .unwrap_err();
        assert_eq!(e.code, "DUPLICATE_VALUE");
        let e = o
            .create(
                "Contact",
                &m(json!({"LastName": "x", "AccountId": "001000000000000AAA"})),
            )
            .unwrap_err();
        assert!(
            matches!(e.code, "INVALID_CROSS_REFERENCE_KEY" | "MALFORMED_ID"),
            "{e:?}"
        );
        let e = o
            .create("Account", &m(json!({"Name": "x".repeat(256)})))
            .unwrap_err();
        assert_eq!(e.code, "STRING_TOO_LONG");
        let e = o
            .create("Account", &m(json!({"Name": "x", "Id": "001"})))
            .unwrap_err();
        assert_eq!(e.code, "INVALID_FIELD_FOR_INSERT_UPDATE");
        o.update("Account", &id, &m(json!({"Phone": "555"})))
            .unwrap();
        o.delete("Account", &id).unwrap();
        assert_eq!(o.get("Account", &id).unwrap_err().code, "ENTITY_IS_DELETED");
        assert_eq!(
            o.update("Account", &id, &m(json!({"Phone": "1"})))
                .unwrap_err()
                .code,
            "ENTITY_IS_DELETED"
        );
        assert_eq!(
            o.get("Account", "001000000000000").unwrap_err().code,
            "NOT_FOUND"
        );
        assert_eq!(o.get("Nope", "x").unwrap_err().status, 404);
    }

    #[test]
    fn upsert_by_external_id() {
        let mut o = org();
        let body = m(json!({"Name": "Acme"}));
        let Upserted::Created(id) = o.upsert("Account", "Erp_Id__c", "E-9", &body).unwrap() else {
            panic!()
        };
        assert_eq!(
            o.upsert("Account", "Erp_Id__c", "E-9", &m(json!({"Phone": "1"})))
                .unwrap(),
            Upserted::Updated(id.clone())
        );
        assert_eq!(o.get("Account", &id).unwrap().fields["Phone"], json!("1"));
        assert_eq!(
            o.upsert("Account", "Name", "x", &body).unwrap_err().code,
            "INVALID_FIELD"
        );
    }

    #[test]
    fn queries_with_parents_order_limit_and_deleted() {
        let mut o = org();
        let a = o.create("Account", &m(json!({"Name": "Edge"}))).unwrap();
        let b = o
            .create("Account", &m(json!({"Name": "burlington"})))
            .unwrap();
        for (n, acc) in [("Zed", &a), ("Amy", &b), ("Bob", &a)] {
            o.create("Contact", &m(json!({"LastName": n, "AccountId": acc})))
                .unwrap();
        }
        let q = soql::parse("SELECT Id, LastName, Account.Name FROM Contact WHERE Account.Name LIKE 'ed%' ORDER BY LastName").unwrap();
        let QueryResult::Rows(rows) = o.query(&q, false, "59.0").unwrap() else {
            panic!()
        };
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0]["LastName"], json!("Bob"));
        assert_eq!(rows[0]["Account"]["Name"], json!("Edge"));
        assert_eq!(rows[0]["attributes"]["type"], json!("Contact"));
        let q = soql::parse("SELECT COUNT() FROM Account").unwrap();
        assert_eq!(o.query(&q, false, "59.0").unwrap(), QueryResult::Count(2));
        o.delete("Account", &b).unwrap();
        assert_eq!(o.query(&q, false, "59.0").unwrap(), QueryResult::Count(1));
        assert_eq!(
            o.query(&q, true, "59.0").unwrap(),
            QueryResult::Count(2),
            "queryAll sees deleted"
        );
        let q = soql::parse("SELECT Name FROM Account WHERE IsDeleted = true").unwrap();
        let QueryResult::Rows(rows) = o.query(&q, true, "59.0").unwrap() else {
            panic!()
        };
        assert_eq!(rows.len(), 1);
        let q = soql::parse("SELECT Nope FROM Account").unwrap();
        assert_eq!(
            o.query(&q, false, "59.0").unwrap_err().code,
            "INVALID_FIELD"
        );
        let q = soql::parse("SELECT Id FROM Nope").unwrap();
        assert_eq!(o.query(&q, false, "59.0").unwrap_err().code, "INVALID_TYPE");
        let q =
            soql::parse("SELECT Id FROM Contact ORDER BY LastName DESC LIMIT 1 OFFSET 1").unwrap();
        let QueryResult::Rows(rows) = o.query(&q, false, "59.0").unwrap() else {
            panic!()
        };
        assert_eq!(rows.len(), 1);
    }

    #[test]
    fn modstamps_strictly_increase_and_feed_updated_deleted() {
        let mut o = org();
        let start = Timestamp::now();
        let a = o.create("Account", &m(json!({"Name": "a"}))).unwrap();
        let b = o.create("Account", &m(json!({"Name": "b"}))).unwrap();
        let sa = o.get("Account", &a).unwrap().fields["SystemModstamp"].clone();
        let sb = o.get("Account", &b).unwrap().fields["SystemModstamp"].clone();
        assert!(sa.as_str() < sb.as_str(), "{sa} {sb}");
        o.delete("Account", &a).unwrap();
        let end = Timestamp(Timestamp::now().millis() + 10_000);
        assert_eq!(
            o.changed_between("Account", start, end, false)
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            o.changed_between("Account", start, end, true)
                .unwrap()
                .len(),
            1
        );
    }
}
