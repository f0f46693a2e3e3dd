//! Writes through sObject Collections: 200 records a call, allOrNone=false, each record's
//! result mapped back to it. With `entity_id_field`, creates are upserts by concord's entity id.

use super::SalesforceConnector;
use crate::connector::{ConnectorError, WriteErrorKind, WriteOp, WriteResult};
use crate::model::{Fields, Key, Value};
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
    let kind = match code {
        "ENTITY_IS_DELETED" | "NOT_FOUND" => WriteErrorKind::NotFound,
        "UNABLE_TO_LOCK_ROW" | "ALL_OR_NONE_OPERATION_ROLLED_BACK" => WriteErrorKind::Retryable,
        _ => WriteErrorKind::Rejected,
    };
    WriteResult::Err { kind, message }
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
    for (i, op) in ops.iter().enumerate() {
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
            WriteOp::Delete { key, .. } => deletes.push((i, key.as_str().to_string())),
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
