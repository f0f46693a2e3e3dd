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

    /// The child object and its reference field behind the child relationship `rel` of `parent`
    /// (`Contacts` of Account → Contact.AccountId).
    pub(super) fn child_relation(
        &self,
        parent: &ObjectDef,
        rel: &str,
    ) -> Option<(&ObjectDef, &FieldDef)> {
        self.objects.iter().find_map(|child| {
            let f = child.fields.iter().find(|f| {
                f.ty == FieldType::Reference
                    && f.reference_to.iter().any(|t| t == &parent.name)
                    && crate::schema::child_relationship(child, f)
                        .is_some_and(|n| n.eq_ignore_ascii_case(rel))
            })?;
            Some((child, f))
        })
    }

    pub(super) fn check_paths(&self, o: &ObjectDef, q: &Query) -> Result<(), SfError> {
        #[derive(Clone, Copy)]
        enum Use {
            Select,
            Filter,
            Sort,
            Group,
        }
        let mut paths: Vec<&Vec<String>> = Vec::new();
        // The paths used beyond SELECT, and how (a field that cannot be used so is refused).
        let mut used: Vec<(&Vec<String>, Use)> = Vec::new();
        for s in &q.select {
            match s {
                SelectItem::Field(p)
                | SelectItem::Agg { field: p, .. }
                | SelectItem::DateFn { field: p, .. } => paths.push(p),
                SelectItem::Count => {}
                SelectItem::Subquery(sq) => {
                    let (child, _) = self.child_relation(o, &sq.object).ok_or_else(|| {
                        SfError::new(
                            400,
                            "INVALID_TYPE",
                            format!(
                                "Didn't understand relationship '{}' in FROM part of query call. If you are attempting to use a custom relationship, be sure to append the '__r' after the custom relationship name.",
                                sq.object
                            ),
                        )
                    })?;
                    self.check_paths(child, sq)?;
                }
            }
        }
        used.extend(q.group_by.iter().map(|g| (&g.field, Use::Group)));
        if !q.is_aggregate() {
            used.extend(q.order.iter().map(|o| (&o.field, Use::Sort)));
        }
        fn cond_paths<'a>(c: &'a Cond, out: &mut Vec<(&'a Vec<String>, Use)>) {
            match c {
                Cond::And(a, b) | Cond::Or(a, b) => {
                    cond_paths(a, out);
                    cond_paths(b, out);
                }
                Cond::Not(a) => cond_paths(a, out),
                Cond::Cmp { field, .. } | Cond::Like { field, .. } | Cond::In { field, .. } => {
                    out.push((field, Use::Filter))
                }
            }
        }
        if let Some(c) = &q.filter {
            cond_paths(c, &mut used);
        }
        let all = paths.into_iter().map(|p| (p, Use::Select)).chain(used);
        for (p, how) in all {
            let mut obj = o;
            for (i, part) in p.iter().enumerate() {
                if i + 1 == p.len() {
                    let Some(f) = obj.field(part) else {
                        return Err(SfError::new(
                            400,
                            "INVALID_FIELD",
                            format!("No such column '{part}' on entity '{}'. If you are attempting to use a custom field, be sure to append the '__c' after the custom field name.", obj.name),
                        ));
                    };
                    // Long text areas and compound fields are selected, never filtered,
                    // sorted or grouped (Salesforce's messages).
                    let refused = match how {
                        Use::Select => None,
                        Use::Filter if !f.filterable() => Some("can not be filtered in query call"),
                        Use::Sort if !f.sortable() => Some("can not be sorted in a query call"),
                        Use::Group if !f.groupable() => Some("can not be grouped in a query call"),
                        _ => None,
                    };
                    if let Some(what) = refused {
                        return Err(SfError::new(
                            400,
                            "INVALID_FIELD",
                            format!("field '{}' {what}", f.name),
                        )
                        .field(&f.name));
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
        // Relative date literals resolve on the org's clock (a copy only when there are any).
        let resolved;
        let q = if q.has_relative_dates() {
            resolved = q.resolve_dates(Timestamp(Timestamp::now().millis() + self.clock_offset_ms));
            &resolved
        } else {
            q
        };
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
        if q.is_aggregate() {
            return Ok(QueryResult::Rows(self.aggregate(o, hits, q)));
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
            match s {
                SelectItem::Field(path) => self.render_path(o, r, path, &mut out, version),
                SelectItem::Subquery(sq) => {
                    if let Some((name, v)) = self.children(o, r, sq, version) {
                        out.insert(name, v);
                    }
                }
                _ => {}
            }
        }
        J::Object(out)
    }

    /// A subquery's answer for one parent record: the relationship's name and its live
    /// children matching the subquery (filtered, ordered, limited) as a nested query result,
    /// or null when there are none.
    fn children(&self, o: &ObjectDef, r: &Rec, sq: &Query, version: &str) -> Option<(String, J)> {
        let (child, f) = self.child_relation(o, &sq.object)?;
        let name = crate::schema::child_relationship(child, f)?;
        let id = r.fields.get("Id")?;
        let mut kids: Vec<&Rec> = self
            .records
            .get(&child.name)
            .into_iter()
            .flat_map(|m| m.values())
            .filter(|k| !k.deleted && k.fields.get(&f.name) == Some(id))
            .filter(|k| match &sq.filter {
                None => true,
                Some(c) => soql::eval(c, &|p: &[String]| json_to_value(&self.resolve(child, k, p))),
            })
            .collect();
        soql::sort(&mut kids, &sq.order, &|k: &&Rec, p: &[String]| {
            json_to_value(&self.resolve(child, k, p))
        });
        let rows: Vec<J> = kids
            .into_iter()
            .skip(sq.offset.unwrap_or(0) as usize)
            .take(sq.limit.map_or(usize::MAX, |l| l as usize))
            .map(|k| self.render(child, k, sq, version))
            .collect();
        if rows.is_empty() {
            return Some((name, J::Null));
        }
        Some((
            name,
            json!({"totalSize": rows.len(), "done": true, "records": rows}),
        ))
    }

    /// An aggregate query's AggregateResult rows: one per group (one for the whole set without
    /// GROUP BY), grouped fields under their names, aggregates and date functions under their
    /// aliases or `expr0`, `expr1`, … in select order; ORDER BY, OFFSET and LIMIT over the rows.
    fn aggregate(&self, o: &ObjectDef, hits: Vec<&Rec>, q: &Query) -> Vec<J> {
        let key_of = |r: &Rec| -> Vec<Value> {
            q.group_by
                .iter()
                .map(|g| {
                    let v = json_to_value(&self.resolve(o, r, &g.field));
                    g.func.map_or(v.clone(), |f| f.apply(&v))
                })
                .collect()
        };
        let mut groups: Vec<(Vec<Value>, Vec<&Rec>)> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for r in hits {
            let key = key_of(r);
            let text = format!("{:?}", key.iter().map(soql_key).collect::<Vec<_>>());
            match index.get(&text) {
                Some(&i) => groups[i].1.push(r),
                None => {
                    index.insert(text, groups.len());
                    groups.push((key, vec![r]));
                }
            }
        }
        if groups.is_empty() && q.group_by.is_empty() {
            groups.push((Vec::new(), Vec::new()));
        }
        let mut rows: Vec<Map<String, J>> = Vec::new();
        for (key, recs) in &groups {
            let mut row = Map::new();
            row.insert("attributes".into(), json!({"type": "AggregateResult"}));
            let mut expr = 0;
            let mut name_of = |alias: &Option<String>| match alias {
                Some(a) => a.clone(),
                None => {
                    expr += 1;
                    format!("expr{}", expr - 1)
                }
            };
            for s in &q.select {
                match s {
                    SelectItem::Field(p) => {
                        let v = recs
                            .first()
                            .map(|r| self.resolve(o, r, p))
                            .unwrap_or(J::Null);
                        let name = p
                            .last()
                            .and_then(|n| {
                                if p.len() == 1 {
                                    o.field(n).map(|f| f.name.clone())
                                } else {
                                    Some(n.clone())
                                }
                            })
                            .unwrap_or_default();
                        row.insert(name, v);
                    }
                    SelectItem::DateFn { func, field, alias } => {
                        let at = q
                            .group_by
                            .iter()
                            .position(|g| g.func == Some(*func) && &g.field == field);
                        let v = match at.and_then(|i| key.get(i)) {
                            Some(v) => value_json(v),
                            None => recs
                                .first()
                                .map(|r| {
                                    value_json(
                                        &func.apply(&json_to_value(&self.resolve(o, r, field))),
                                    )
                                })
                                .unwrap_or(J::Null),
                        };
                        row.insert(name_of(alias), v);
                    }
                    SelectItem::Agg { func, field, alias } => {
                        let vals: Vec<(J, Value)> = recs
                            .iter()
                            .map(|r| {
                                let j = self.resolve(o, r, field);
                                let v = json_to_value(&j);
                                (j, v)
                            })
                            .filter(|(_, v)| !v.is_null())
                            .collect();
                        let num = |v: &Value| v.to_string().trim_matches('"').parse::<f64>().ok();
                        let v = match func {
                            soql::AggFn::Count => json!(vals.len()),
                            soql::AggFn::CountDistinct => {
                                let mut seen: Vec<String> =
                                    vals.iter().map(|(_, v)| soql_key(v)).collect();
                                seen.sort();
                                seen.dedup();
                                json!(seen.len())
                            }
                            soql::AggFn::Sum | soql::AggFn::Avg => {
                                let ns: Vec<f64> =
                                    vals.iter().filter_map(|(_, v)| num(v)).collect();
                                if ns.is_empty() {
                                    J::Null
                                } else {
                                    let sum: f64 = ns.iter().sum();
                                    if *func == soql::AggFn::Sum {
                                        json!(sum)
                                    } else {
                                        json!(sum / ns.len() as f64)
                                    }
                                }
                            }
                            soql::AggFn::Min | soql::AggFn::Max => {
                                let pick = vals.iter().reduce(|a, b| {
                                    let o = soql::compare(&a.1, &b.1)
                                        .unwrap_or(std::cmp::Ordering::Equal);
                                    let keep_a = if *func == soql::AggFn::Min {
                                        o != std::cmp::Ordering::Greater
                                    } else {
                                        o != std::cmp::Ordering::Less
                                    };
                                    if keep_a {
                                        a
                                    } else {
                                        b
                                    }
                                });
                                pick.map(|(j, _)| j.clone()).unwrap_or(J::Null)
                            }
                        };
                        row.insert(name_of(alias), v);
                    }
                    _ => {}
                }
            }
            rows.push(row);
        }
        soql::sort(
            &mut rows,
            &q.order,
            &|row: &Map<String, J>, p: &[String]| {
                let name = p.last().map(String::as_str).unwrap_or("");
                row.iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(name))
                    .map(|(_, v)| json_to_value(v))
                    .unwrap_or(Value::Null)
            },
        );
        rows.into_iter()
            .skip(q.offset.unwrap_or(0) as usize)
            .take(q.limit.map_or(usize::MAX, |l| l as usize))
            .map(J::Object)
            .collect()
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

/// A value's grouping key (text case-insensitive, as SOQL groups).
fn soql_key(v: &Value) -> String {
    match v {
        Value::Text(t) => format!("t:{}", t.to_lowercase()),
        other => format!("{other:?}"),
    }
}

/// A date function's or grouped value as JSON.
fn value_json(v: &Value) -> J {
    match v {
        Value::Null => J::Null,
        Value::Int(i) => json!(i),
        Value::Date(d) => json!(d.format("%Y-%m-%d").to_string()),
        Value::Text(t) => json!(t.to_string()),
        other => json!(other.to_string()),
    }
}
