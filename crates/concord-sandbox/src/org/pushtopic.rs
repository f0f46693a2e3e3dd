//! PushTopics: a `PushTopic` record names a SOQL query; the Streaming API delivers, on
//! `/topic/{Name}`, a notification for each create, update, delete and undelete of a record of
//! its object that the query selects, as its `NotifyForFields` and `NotifyForOperation…`
//! fields say. Notifications come from the org's change events (the same replay ids), with
//! the record as it was at the change.

use super::*;
use crate::org::events::ChangeEvent;

/// `PushTopic.NotifyForFields`: which changed fields make an update evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotifyFor {
    All,
    Referenced,
    Select,
    Where,
}

/// An active PushTopic, its query parsed.
#[derive(Debug, Clone)]
pub struct Topic {
    pub name: String,
    pub object: String,
    /// The selected fields (the notification's `sobject`), as the schema spells them.
    select: Vec<String>,
    filter: Option<Cond>,
    /// The fields the WHERE clause names (lower case).
    where_fields: BTreeSet<String>,
    notify_for: NotifyFor,
    /// Create, update, delete, undelete.
    ops: [bool; 4],
}

fn invalid(message: impl Into<String>) -> SfError {
    SfError::new(400, "INVALID_FIELD", message).field("Query")
}

fn cond_fields(c: &Cond, out: &mut BTreeSet<String>, not: &mut bool) {
    match c {
        Cond::And(a, b) | Cond::Or(a, b) => {
            cond_fields(a, out, not);
            cond_fields(b, out, not);
        }
        Cond::Not(a) => {
            *not = true;
            cond_fields(a, out, not);
        }
        Cond::Cmp { field, .. } | Cond::Like { field, .. } | Cond::In { field, .. } => {
            out.insert(field.join(".").to_lowercase());
        }
    }
}

fn flag(fields: &Map<String, J>, name: &str) -> bool {
    fields.get(name).and_then(J::as_bool).unwrap_or(true)
}

impl Topic {
    /// The topic a PushTopic record defines; an error naming what Salesforce refuses in a
    /// PushTopic query (the `INVALID_FIELD` messages of the Streaming API guide).
    pub fn of(org: &Org, fields: &Map<String, J>) -> Result<Topic, SfError> {
        let name = fields
            .get("Name")
            .and_then(J::as_str)
            .unwrap_or_default()
            .to_string();
        let text = fields.get("Query").and_then(J::as_str).unwrap_or_default();
        let q = soql::parse(text).map_err(|e| invalid(e.to_string()))?;
        if q.is_aggregate() || q.is_count() {
            return Err(invalid("Aggregate queries are not supported"));
        }
        if q.limit.is_some() {
            return Err(invalid("'LIMIT' is not allowed"));
        }
        if !q.order.is_empty() {
            return Err(invalid("'ORDER BY' clause is not allowed"));
        }
        if q.offset.is_some() {
            return Err(invalid("'OFFSET' is not allowed"));
        }
        let o = org.object(&q.object).map_err(|_| {
            SfError::new(
                400,
                "INVALID_TYPE",
                format!("sObject type '{}' is not supported.", q.object),
            )
            .field("Query")
        })?;
        let mut select = Vec::new();
        for item in &q.select {
            match item {
                SelectItem::Field(p) if p.len() == 1 => {
                    let f = o.field(&p[0]).ok_or_else(|| {
                        invalid(format!("No such column '{}' on entity '{}'", p[0], o.name))
                    })?;
                    select.push(f.name.clone());
                }
                SelectItem::Field(_) => return Err(invalid("relationships are not supported")),
                SelectItem::Subquery(_) => {
                    return Err(invalid("semi/anti join sub-selects are not supported"))
                }
                _ => return Err(invalid("Aggregate queries are not supported")),
            }
        }
        if !select.iter().any(|f| f == "Id") {
            return Err(invalid(
                "The Id field must be selected in a PushTopic query",
            ));
        }
        let mut where_fields = BTreeSet::new();
        let mut not = false;
        if let Some(c) = &q.filter {
            cond_fields(c, &mut where_fields, &mut not);
        }
        if not {
            return Err(invalid("'NOT' is not supported"));
        }
        if where_fields.iter().any(|f| f.contains('.')) {
            return Err(invalid("relationships are not supported"));
        }
        for f in &where_fields {
            match o.field(f) {
                None => {
                    return Err(invalid(format!(
                        "No such column '{f}' on entity '{}'",
                        o.name
                    )))
                }
                // Values in text areas are not searched (nor compound fields filtered).
                Some(d) if !d.filterable() => {
                    return Err(invalid(format!(
                        "field '{}' can not be filtered in query call",
                        d.name
                    )))
                }
                Some(_) => {}
            }
        }
        let notify_for = match fields
            .get("NotifyForFields")
            .and_then(J::as_str)
            .unwrap_or("Referenced")
        {
            "All" => NotifyFor::All,
            "Select" => NotifyFor::Select,
            "Where" => NotifyFor::Where,
            _ => NotifyFor::Referenced,
        };
        if notify_for == NotifyFor::Referenced
            && select.len() < 2
            && where_fields.iter().all(|f| f == "id")
        {
            return Err(invalid("With NotifyForFields set to Referenced, the query must select or filter on a field other than Id").field("NotifyForFields"));
        }
        Ok(Topic {
            name,
            object: o.name.clone(),
            select,
            filter: q.filter.clone(),
            where_fields,
            notify_for,
            ops: [
                flag(fields, "NotifyForOperationCreate"),
                flag(fields, "NotifyForOperationUpdate"),
                flag(fields, "NotifyForOperationDelete"),
                flag(fields, "NotifyForOperationUndelete"),
            ],
        })
    }

    /// The notification this topic gives for `e` on `channel`, if any.
    pub fn notification(&self, org: &Org, e: &ChangeEvent, channel: &str) -> Option<J> {
        // (An event without its record was made before the org had any topic.)
        if e.record.is_empty() || !e.object.eq_ignore_ascii_case(&self.object) {
            return None;
        }
        let header = &e.payload["ChangeEventHeader"];
        let (kind, op) = match header["changeType"].as_str()? {
            "CREATE" => ("created", 0),
            "UPDATE" => ("updated", 1),
            "DELETE" => ("deleted", 2),
            "UNDELETE" => ("undeleted", 3),
            _ => return None,
        };
        if !self.ops[op] {
            return None;
        }
        if op == 1 {
            let changed: Vec<String> = header["changedFields"]
                .as_array()?
                .iter()
                .filter_map(|f| f.as_str())
                .filter(|f| !matches!(*f, "LastModifiedDate" | "LastModifiedById"))
                .map(str::to_lowercase)
                .collect();
            let selected = |f: &String| self.select.iter().any(|s| s.eq_ignore_ascii_case(f));
            let in_where = |f: &String| self.where_fields.contains(f);
            let evaluated = match self.notify_for {
                NotifyFor::All => !changed.is_empty(),
                NotifyFor::Referenced => changed.iter().any(|f| selected(f) || in_where(f)),
                NotifyFor::Select => changed.iter().any(selected),
                NotifyFor::Where => changed.iter().any(in_where),
            };
            if !evaluated {
                return None;
            }
        }
        let o = org.object(&self.object).ok()?;
        let rec = super::Rec {
            fields: e.record.clone(),
            deleted: false,
        };
        if let Some(c) = &self.filter {
            if !soql::eval(c, &|p: &[String]| json_to_value(&org.resolve(o, &rec, p))) {
                return None;
            }
        }
        let mut sobject = Map::new();
        for f in &self.select {
            if op == 2 && f != "Id" {
                continue; // a deleted record's notification carries its Id only
            }
            sobject.insert(f.clone(), e.record.get(f).cloned().unwrap_or(J::Null));
        }
        let at = header["commitTimestamp"].as_i64().unwrap_or_default();
        Some(json!({
            "channel": channel,
            "data": {
                "event": {
                    "type": kind,
                    // (`…Z`, as the Streaming API writes it; REST writes `+0000`)
                    "createdDate": sf_datetime(Timestamp(at)).replace("+0000", "Z"),
                    "replayId": e.replay_id,
                },
                "sobject": sobject,
            },
        }))
    }
}

impl Org {
    /// The active PushTopic whose channel is `channel` (`/topic/{Name}`).
    pub fn topic(&self, channel: &str) -> Option<Topic> {
        let name = channel.strip_prefix("/topic/")?;
        let recs = self.records.get("PushTopic")?;
        let rec = recs.values().find(|r| {
            !r.deleted
                && r.fields.get("Name").and_then(J::as_str) == Some(name)
                && r.fields.get("IsActive").and_then(J::as_bool) != Some(false)
        })?;
        Topic::of(self, &rec.fields).ok()
    }

    /// A PushTopic record about to be stored: its defaults on create, a unique name, and a
    /// query a PushTopic accepts.
    pub(super) fn check_push_topic(
        &self,
        id: Option<&str>,
        fields: &mut Map<String, J>,
        creating: bool,
    ) -> Result<(), SfError> {
        if creating {
            for f in [
                "IsActive",
                "NotifyForOperationCreate",
                "NotifyForOperationUpdate",
                "NotifyForOperationDelete",
                "NotifyForOperationUndelete",
            ] {
                if fields.get(f).is_none_or(J::is_null) {
                    fields.insert(f.into(), J::Bool(true));
                }
            }
            if fields.get("NotifyForFields").is_none_or(J::is_null) {
                fields.insert("NotifyForFields".into(), json!("Referenced"));
            }
        }
        let name = fields.get("Name").and_then(J::as_str).unwrap_or_default();
        if let Some((other, _)) = self.records.get("PushTopic").and_then(|m| {
            m.iter().find(|(k, r)| {
                Some(k.as_str()) != id
                    && !r.deleted
                    && r.fields.get("Name").and_then(J::as_str) == Some(name)
            })
        }) {
            return Err(SfError::new(
                400,
                "DUPLICATE_VALUE",
                format!("duplicate value found: Name duplicates value on record with id: {other}"),
            )
            .field("Name"));
        }
        Topic::of(self, fields).map(|_| ())
    }
}
