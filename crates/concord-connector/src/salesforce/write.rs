//! Writes through sObject Collections: 200 records a call, allOrNone=false, each record's
//! result mapped back to it. With `entity_id_field`, creates are upserts by concord's entity id.
//! A group of at least `bulk_threshold` writes of one kind (upserts by entity id, updates,
//! deletes) goes through one Bulk API 2.0 ingest job instead; its success and failure CSVs are
//! mapped back to the records by their key column. Plain creates (no `entity_id_field`) always
//! use collections: bulk results could not be matched to them reliably.
//!
//! Updates carrying a base ([`WriteOp::Update`]) send only the fields that change; a batch of
//! one goes through sObject Rows with `If-Unmodified-Since` (412: `Stale`). Collections and
//! Bulk take no precondition (see `docs/connectors/salesforce.md`).

use super::SalesforceConnector;
use crate::{ConnectorError, WriteErrorKind, WriteOp, WriteResult};
use concord_model::model::{Fields, Key, Value};
use serde_json::{json, Map, Value as J};

fn to_json(v: &Value) -> J {
    match v {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => json!(i),
        Value::Decimal(d) => d
            .to_string()
            .parse::<f64>()
            .map(|f| json!(f))
            .unwrap_or(J::Null),
        Value::Text(s) => J::String(s.clone()),
        Value::Date(d) => J::String(d.format("%Y-%m-%d").to_string()),
        Value::DateTime(t) => J::String(t.to_string()),
        Value::Json(j) => j.clone(),
        Value::Bytes(b) => J::String(b.iter().map(|x| format!("{x:02x}")).collect()),
    }
}

fn body(c: &SalesforceConnector, f: &Fields, creating: bool) -> Map<String, J> {
    let mut m = Map::new();
    for field in c.fields() {
        if Some(&field.name) == c.cfg.entity_id_field.as_ref() {
            continue;
        }
        let allowed = if creating {
            field.createable
        } else {
            field.updateable
        };
        if !allowed {
            continue;
        }
        // Every mapped field is sent: a field the record lacks is null (cleared).
        m.insert(
            field.name.clone(),
            f.get(&field.name).map_or(J::Null, to_json),
        );
    }
    m
}

/// The body of a partial update: only the updateable mapped fields in `names`, a field the
/// record lacks sent as null (cleared).
fn delta_body(
    c: &SalesforceConnector,
    f: &Fields,
    names: &[&std::sync::Arc<str>],
) -> Map<String, J> {
    let mut m = Map::new();
    for field in c.fields() {
        if Some(&field.name) == c.cfg.entity_id_field.as_ref() || !field.updateable {
            continue;
        }
        if names.iter().any(|n| ***n == *field.name) {
            m.insert(
                field.name.clone(),
                f.get(&field.name).map_or(J::Null, to_json),
            );
        }
    }
    m
}

/// `If-Unmodified-Since` for a record last seen at `t`: the HTTP date of its second (the
/// record's LastModifiedDate, which Salesforce keeps to the second, is at or before it).
fn http_date(t: concord_model::model::Timestamp) -> Option<String> {
    let c = t.to_chrono()?;
    Some(c.format("%a, %d %b %Y %H:%M:%S GMT").to_string())
}

/// One record updated through sObject Rows, conditionally when its last modification time is
/// known: a 412 (changed since) is [`WriteErrorKind::Stale`].
async fn update_one(
    c: &SalesforceConnector,
    id: &str,
    body: &J,
    since: Option<concord_model::model::Timestamp>,
) -> Result<WriteResult, ConnectorError> {
    use super::client::Payload;
    let v = &c.cfg.api_version;
    let mut headers = Vec::new();
    if let Some(d) = since.and_then(http_date) {
        headers.push(("If-Unmodified-Since", d));
    }
    let r = c
        .client
        .request_with(
            reqwest::Method::PATCH,
            &format!("/services/data/v{v}/sobjects/{}/{id}", c.cfg.object),
            Payload::Json(body),
            None,
            &headers,
            &[400, 404, 412],
        )
        .await?;
    let err = || -> (String, String) {
        let e: J = serde_json::from_str(&r.text).unwrap_or(J::Null);
        let e = e.get(0).cloned().unwrap_or(J::Null);
        (
            e.get("errorCode")
                .and_then(J::as_str)
                .unwrap_or("UNKNOWN")
                .to_string(),
            e.get("message")
                .and_then(J::as_str)
                .unwrap_or("")
                .to_string(),
        )
    };
    Ok(match r.status {
        412 => WriteResult::Err {
            kind: WriteErrorKind::Stale,
            message: format!("record {id} was modified after it was read (412)"),
        },
        400 | 404 => {
            let (code, msg) = err();
            WriteResult::Err {
                kind: if r.status == 404 {
                    WriteErrorKind::NotFound
                } else {
                    kind_of(&code)
                },
                message: format!("{code}: {msg}"),
            }
        }
        _ => WriteResult::Ok { key: Key::new(id) },
    })
}

/// A value as a Bulk API CSV cell (`#N/A` clears the field).
fn csv_cell(j: &J) -> String {
    match j {
        J::Null => "#N/A".into(),
        J::String(s) if s.is_empty() => "#N/A".into(),
        J::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn kind_of(code: &str) -> WriteErrorKind {
    match code {
        "ENTITY_IS_DELETED" | "NOT_FOUND" => WriteErrorKind::NotFound,
        "UNABLE_TO_LOCK_ROW" | "ALL_OR_NONE_OPERATION_ROLLED_BACK" => WriteErrorKind::NotApplied,
        _ => WriteErrorKind::Rejected,
    }
}

/// One Bulk API 2.0 ingest job: `rows` are (op index, key cell, other cells) under `header`
/// (whose first column is the key column). Returns each op's result.
async fn bulk_job(
    c: &SalesforceConnector,
    spec: J,
    header: Vec<String>,
    rows: Vec<(usize, String, Vec<String>)>,
    deleting: bool,
) -> Result<Vec<(usize, WriteResult)>, ConnectorError> {
    use super::client::Payload;
    let v = &c.cfg.api_version;
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let io = |e: csv::Error| c.client_error(&format!("building the bulk CSV: {e}"));
    w.write_record(&header).map_err(io)?;
    let mut by_key: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
    for (i, k, cells) in &rows {
        let mut rec = vec![k.clone()];
        rec.extend(cells.iter().cloned());
        w.write_record(&rec).map_err(io)?;
        by_key.insert(k.clone(), *i);
    }
    let data = String::from_utf8(w.into_inner().map_err(|e| c.client_error(&e.to_string()))?)
        .expect("CSV of UTF-8 cells");
    let job = c
        .client
        .call(
            reqwest::Method::POST,
            &format!("/services/data/v{v}/jobs/ingest"),
            Some(&spec),
            None,
        )
        .await?;
    let id = job
        .body
        .get("id")
        .and_then(J::as_str)
        .ok_or_else(|| c.client_error("Bulk API ingest job created without an id"))?
        .to_string();
    let base = format!("/services/data/v{v}/jobs/ingest/{id}");
    match c
        .client
        .request(
            reqwest::Method::PUT,
            &format!("{base}/batches"),
            Payload::Csv(data),
            None,
        )
        .await
    {
        Ok(_) => {}
        // A retried upload whose first attempt landed.
        Err(e) if e.message.contains("Only one data upload") => {}
        Err(e) => return Err(e),
    }
    match c
        .client
        .call(
            reqwest::Method::PATCH,
            &base,
            Some(&json!({"state": "UploadComplete"})),
            None,
        )
        .await
    {
        Ok(_) => {}
        // A retried state change whose first attempt landed: the job is past Open.
        Err(e) if e.message.contains("INVALIDJOBSTATE") => {}
        Err(e) => return Err(e),
    }
    let info = super::read::wait_for_job(c, "ingest", &id).await?;
    let mut out = Vec::with_capacity(rows.len());
    let key_col = 2; // sf__Id, sf__Created | sf__Error, then our columns
    let ok = c
        .client
        .request(
            reqwest::Method::GET,
            &format!("{base}/successfulResults/"),
            Payload::None,
            None,
        )
        .await?;
    let bad_csv = |e: String| c.client_error(&format!("Bulk API job {id}: bad result CSV: {e}"));
    for r in result_rows(&ok.text).map_err(bad_csv)? {
        if let Some(i) = r.get(key_col).and_then(|k| by_key.remove(k)) {
            out.push((
                i,
                WriteResult::Ok {
                    key: Key::new(r[0].as_str()),
                },
            ));
        }
    }
    if info
        .get("numberRecordsFailed")
        .and_then(J::as_u64)
        .unwrap_or(0)
        > 0
    {
        let failed = c
            .client
            .request(
                reqwest::Method::GET,
                &format!("{base}/failedResults/"),
                Payload::None,
                None,
            )
            .await?;
        for r in result_rows(&failed.text).map_err(bad_csv)? {
            let Some(i) = r.get(key_col).and_then(|k| by_key.remove(k)) else {
                continue;
            };
            let code = r[1].split(':').next().unwrap_or("UNKNOWN").to_string();
            let kind = kind_of(&code);
            out.push((
                i,
                if deleting && kind == WriteErrorKind::NotFound {
                    // Deleting what is already deleted is done.
                    WriteResult::Ok {
                        key: Key::new(r[key_col].as_str()),
                    }
                } else {
                    WriteResult::Err {
                        kind,
                        message: r[1].trim_end_matches(" --").to_string(),
                    }
                },
            ));
        }
    }
    // Whatever the job did not process is tried again later.
    for (_, i) in by_key {
        out.push((
            i,
            WriteResult::Err {
                kind: WriteErrorKind::NotApplied,
                message: format!("not processed by Bulk API job {id}"),
            },
        ));
    }
    Ok(out)
}

fn result_rows(text: &str) -> Result<Vec<Vec<String>>, String> {
    let mut rdr = csv::ReaderBuilder::new().from_reader(text.as_bytes());
    let mut out = Vec::new();
    for r in rdr.records() {
        out.push(
            r.map_err(|e| e.to_string())?
                .iter()
                .map(str::to_string)
                .collect(),
        );
    }
    Ok(out)
}

/// Bulk-writes `group` (op index, JSON body) when it is large enough; returns the results, or
/// `None` to use collections.
async fn maybe_bulk(
    c: &SalesforceConnector,
    group: &[(usize, J)],
    operation: &str,
    key_field: &str,
) -> Result<Option<Vec<(usize, WriteResult)>>, ConnectorError> {
    if group.len() < c.cfg.bulk_threshold.max(1) {
        return Ok(None);
    }
    let mut columns: Vec<String> = Vec::new();
    for (_, b) in group {
        for k in b.as_object().into_iter().flat_map(|m| m.keys()) {
            if k != "attributes" && k != key_field && !columns.contains(k) {
                columns.push(k.clone());
            }
        }
    }
    let rows = group
        .iter()
        .map(|(i, b)| {
            let key = b.get(key_field).map(csv_cell).unwrap_or_default();
            let cells = columns
                .iter()
                // A field the record's body lacks is left as it is (an empty cell); one it
                // holds as null is cleared (`#N/A`).
                .map(|col| b.get(col).map_or_else(String::new, csv_cell))
                .collect();
            (*i, key, cells)
        })
        .collect();
    let mut header = vec![key_field.to_string()];
    header.extend(columns);
    let mut spec = json!({"object": c.cfg.object, "operation": operation, "contentType": "CSV", "lineEnding": "LF"});
    if operation == "upsert" {
        spec["externalIdFieldName"] = json!(key_field);
    }
    bulk_job(c, spec, header, rows, operation == "delete")
        .await
        .map(Some)
}

fn result(r: &J) -> WriteResult {
    if r.get("success").and_then(J::as_bool) == Some(true) {
        return WriteResult::Ok {
            key: Key::new(r.get("id").and_then(J::as_str).unwrap_or_default()),
        };
    }
    let e = r
        .get("errors")
        .and_then(|e| e.get(0))
        .cloned()
        .unwrap_or(J::Null);
    let code = e.get("statusCode").and_then(J::as_str).unwrap_or("UNKNOWN");
    let message = format!(
        "{code}: {}",
        e.get("message").and_then(J::as_str).unwrap_or("")
    );
    WriteResult::Err {
        kind: kind_of(code),
        message,
    }
}

/// Child relationships are read with their parent, never written through it: an op that
/// would set or change one is refused (rejected, nothing written) rather than written without
/// it. Their records are written by a job of their own object.
fn writes_children(c: &SalesforceConnector, op: &WriteOp) -> Option<WriteResult> {
    let empty = |v: Option<&Value>| match v {
        None | Some(Value::Null) => true,
        Some(Value::Json(J::Array(a))) => a.is_empty(),
        _ => false,
    };
    let name = c
        .children()
        .iter()
        .map(|ch| ch.name.as_str())
        .find(|n| match op {
            WriteOp::Upsert { fields, .. } => !empty(fields.get(n)),
            WriteOp::Update { fields, base, .. } => fields.get(n) != base.fields.get(n),
            WriteOp::Delete { .. } => false,
        })?;
    Some(WriteResult::Err {
        kind: WriteErrorKind::Rejected,
        message: format!(
            "{name} are child records of {}, read with it and not written through it: write them with a job of their own object",
            c.cfg.object
        ),
    })
}

pub(super) async fn apply(
    c: &SalesforceConnector,
    ops: Vec<WriteOp>,
) -> Result<Vec<WriteResult>, ConnectorError> {
    let v = &c.cfg.api_version;
    let obj = &c.cfg.object;
    let mut out: Vec<Option<WriteResult>> = vec![None; ops.len()];
    let mut creates: Vec<(usize, J)> = Vec::new();
    let mut updates: Vec<(usize, J)> = Vec::new();
    let mut deletes: Vec<(usize, String)> = Vec::new();
    let mut since: std::collections::HashMap<usize, Option<concord_model::model::Timestamp>> =
        std::collections::HashMap::new();
    for (i, op) in ops.iter().enumerate() {
        if let Some(refused) = writes_children(c, op) {
            out[i] = Some(refused);
            continue;
        }
        match op {
            WriteOp::Upsert {
                entity,
                key: None,
                fields,
            } => {
                let mut b = body(c, fields, true);
                b.insert("attributes".into(), json!({"type": obj}));
                if let Some(ext) = &c.cfg.entity_id_field {
                    b.insert(ext.clone(), J::String(entity.to_hex()));
                }
                creates.push((i, J::Object(b)));
            }
            WriteOp::Upsert {
                key: Some(k),
                fields,
                ..
            } => {
                let mut b = body(c, fields, false);
                b.insert("attributes".into(), json!({"type": obj}));
                b.insert("Id".into(), J::String(k.as_str().to_string()));
                updates.push((i, J::Object(b)));
            }
            WriteOp::Update {
                key, fields, base, ..
            } => {
                let names = base.changed(fields);
                let mut b = delta_body(c, fields, &names);
                if b.is_empty() {
                    // Nothing this object lets us write differs.
                    out[i] = Some(WriteResult::Ok { key: key.clone() });
                    continue;
                }
                b.insert("attributes".into(), json!({"type": obj}));
                b.insert("Id".into(), J::String(key.as_str().to_string()));
                since.insert(i, base.modstamp);
                updates.push((i, J::Object(b)));
            }
            WriteOp::Delete { key, .. } => deletes.push((i, key.as_str().to_string())),
        }
    }
    // A single update goes through sObject Rows, conditionally (If-Unmodified-Since); the
    // same one call as a collection of one.
    if updates.len() == 1 {
        if let Some(Some(t)) = since.get(&updates[0].0).copied() {
            let (i, mut b) = updates.pop().expect("one");
            let id = b["Id"].as_str().unwrap_or_default().to_string();
            if let Some(m) = b.as_object_mut() {
                m.remove("attributes");
                m.remove("Id");
            }
            out[i] = Some(update_one(c, &id, &b, Some(t)).await?);
        }
    }
    if let Some(ext) = &c.cfg.entity_id_field {
        if let Some(done) = maybe_bulk(c, &creates, "upsert", ext).await? {
            for (i, r) in done {
                out[i] = Some(r);
            }
            creates.clear();
        }
    }
    if let Some(done) = maybe_bulk(c, &updates, "update", "Id").await? {
        for (i, r) in done {
            out[i] = Some(r);
        }
        updates.clear();
    }
    if deletes.len() >= c.cfg.bulk_threshold.max(1) {
        let group: Vec<(usize, J)> = deletes
            .iter()
            .map(|(i, id)| (*i, json!({"Id": id})))
            .collect();
        if let Some(done) = maybe_bulk(c, &group, "delete", "Id").await? {
            for (i, r) in done {
                out[i] = Some(r);
            }
            deletes.clear();
        }
    }
    for chunk in creates.chunks(200) {
        let records: Vec<J> = chunk.iter().map(|(_, r)| r.clone()).collect();
        let (method, url) = match &c.cfg.entity_id_field {
            Some(ext) => (
                reqwest::Method::PATCH,
                format!("/services/data/v{v}/composite/sobjects/{obj}/{ext}"),
            ),
            None => (
                reqwest::Method::POST,
                format!("/services/data/v{v}/composite/sobjects"),
            ),
        };
        let r = c
            .client
            .call(
                method,
                &url,
                Some(&json!({"allOrNone": false, "records": records})),
                None,
            )
            .await?;
        for ((i, _), res) in chunk.iter().zip(r.body.as_array().into_iter().flatten()) {
            out[*i] = Some(result(res));
        }
    }
    for chunk in updates.chunks(200) {
        let records: Vec<J> = chunk.iter().map(|(_, r)| r.clone()).collect();
        let url = format!("/services/data/v{v}/composite/sobjects");
        let r = c
            .client
            .call(
                reqwest::Method::PATCH,
                &url,
                Some(&json!({"allOrNone": false, "records": records})),
                None,
            )
            .await?;
        for ((i, _), res) in chunk.iter().zip(r.body.as_array().into_iter().flatten()) {
            out[*i] = Some(result(res));
        }
    }
    for chunk in deletes.chunks(200) {
        let ids: Vec<&str> = chunk.iter().map(|(_, id)| id.as_str()).collect();
        let url = format!(
            "/services/data/v{v}/composite/sobjects?ids={}&allOrNone=false",
            ids.join(",")
        );
        let r = c
            .client
            .call(reqwest::Method::DELETE, &url, None, None)
            .await?;
        for ((i, id), res) in chunk.iter().zip(r.body.as_array().into_iter().flatten()) {
            // Deleting what is already deleted is done.
            out[*i] = Some(match result(res) {
                WriteResult::Err {
                    kind: WriteErrorKind::NotFound,
                    ..
                } => WriteResult::Ok {
                    key: Key::new(id.as_str()),
                },
                other => other,
            });
        }
    }
    Ok(out
        .into_iter()
        .map(|r| {
            r.unwrap_or(WriteResult::Err {
                kind: WriteErrorKind::Retryable,
                message: "no result returned for this record".into(),
            })
        })
        .collect())
}
