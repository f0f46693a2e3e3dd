//! SOQL execution over the org's records: relationship paths, filters, order, limits,
//! `queryAll`, and the replication feeds (getUpdated / getDeleted).

use super::*;

impl Org {
    /// Resolves a field path on a record (`Account.Name` follows `AccountId`).
    pub(super) fn resolve(&self, o: &ObjectDef, rec: &Rec, path: &[String]) -> J {
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

    pub(super) fn check_paths(&self, o: &ObjectDef, q: &Query) -> Result<(), SfError> {
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

    pub(super) fn attributes(o: &ObjectDef, id: &J, version: &str) -> J {
        json!({"type": o.name, "url": format!("/services/data/v{version}/sobjects/{}/{}", o.name, id.as_str().unwrap_or(""))})
    }

    pub(super) fn render(&self, o: &ObjectDef, r: &Rec, q: &Query, version: &str) -> J {
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

    pub(super) fn render_path(
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

pub(super) fn eq_ci(a: &J, b: &J) -> bool {
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
