//! Writes as change events: one JetStream publish per op, acknowledged before it counts.

use super::NatsConnector;
use crate::{ConnectorError, WriteOp, WriteResult};
use concord_model::model::{Key, Value};
use serde_json::{json, Map, Value as J};

fn value_json(v: &Value) -> J {
    match v {
        Value::Null => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => json!(i),
        Value::Decimal(d) => J::String(d.to_string()),
        Value::Text(s) => J::String(s.clone()),
        Value::Json(j) => j.clone(),
        other => J::String(other.plain_text()),
    }
}

/// The event for one write.
pub fn event(op: &WriteOp) -> (String, J) {
    match op {
        // An event carries the whole record: a consumer applies it without a base.
        WriteOp::Upsert { entity, fields, .. } | WriteOp::Update { entity, fields, .. } => {
            let hash = fields.content_hash().to_hex();
            let mut m = Map::new();
            for (k, v) in fields.iter() {
                m.insert(k.to_string(), value_json(v));
            }
            (
                format!("{}:{hash}", entity.to_hex()),
                json!({"entity": entity.to_hex(), "op": "upsert", "hash": hash, "fields": m}),
            )
        }
        WriteOp::Delete { entity, .. } => (
            format!("{}:deleted", entity.to_hex()),
            json!({"entity": entity.to_hex(), "op": "delete", "hash": null, "fields": null}),
        ),
    }
}

/// Publishes one event per op and waits for JetStream's acknowledgements.
pub(super) async fn publish(
    conn: &NatsConnector,
    ops: Vec<WriteOp>,
) -> Result<Vec<WriteResult>, ConnectorError> {
    let mut acks = Vec::with_capacity(ops.len());
    for op in &ops {
        let (id, body) = event(op);
        let mut headers = async_nats::HeaderMap::new();
        headers.insert("Nats-Msg-Id", id.as_str());
        let ack = conn
            .js
            .publish_with_headers(conn.subject.clone(), headers, body.to_string().into())
            .await
            .map_err(|e| conn.err(format!("publish: {e}"), true))?;
        acks.push((op.entity(), ack));
    }
    let mut out = Vec::with_capacity(acks.len());
    for (entity, ack) in acks {
        match ack.await {
            Ok(_) => out.push(WriteResult::Ok {
                key: Key::new(entity.to_hex()),
            }),
            Err(e) => out.push(WriteResult::Err {
                kind: crate::WriteErrorKind::Retryable,
                message: format!("not acknowledged by JetStream: {e}"),
            }),
        }
    }
    Ok(out)
}
