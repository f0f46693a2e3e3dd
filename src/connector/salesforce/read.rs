//! Reads: a query ordered by (SystemModstamp, Id) paged by `nextRecordsUrl`, starting
//! `overlap_secs` before the newest SystemModstamp seen — so records sharing a timestamp or
//! committing late are found, and the engine recognises re-read ones by hash — plus the deletes
//! since then from queryAll.

use super::SalesforceConnector;
use crate::connector::{Change, ConnectorError, ReadPage};
use crate::model::{EntityId, Fields, Key, Timestamp, Value};
use serde::{Deserialize, Serialize};
use serde_json::Value as J;

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Cursor {
    /// Next read starts here (ms); none: a full read.
    since: Option<i64>,
    /// Inside a read: the next page's URL and the newest stamp seen so far.
    next: Option<String>,
    newest: Option<i64>,
    /// Inside a read: deletes still to fetch.
    deletes_pending: bool,
}

/// A Salesforce JSON value as a field value, by describe type.
pub fn to_value(ty: &str, v: &J) -> Option<Value> {
    match v {
        J::Null => None,
        J::Bool(b) => Some(Value::Bool(*b)),
        J::Number(n) => match ty {
            "int" => n.as_i64().map(Value::Int),
            _ => Value::decimal_str(&n.to_string()).ok(),
        },
        J::String(s) => match ty {
            "date" => Value::date_str(s).ok(),
            "datetime" => Value::datetime_str(s).ok(),
            "double" | "currency" | "percent" | "int" => Value::decimal_str(s).ok(),
            "boolean" => Some(Value::Bool(s.eq_ignore_ascii_case("true"))),
            _ => Some(Value::text(s.as_str())),
        },
        other => Some(Value::Json(other.clone())),
    }
}

/// SOQL datetime literal at second precision, rounded down (the overlap covers the rest).
fn soql_datetime(ms: i64) -> String {
    let t = Timestamp(ms.div_euclid(1000) * 1000)
        .to_chrono()
        .unwrap_or_default();
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

pub(super) async fn page(
    c: &SalesforceConnector,
    cursor: Option<&[u8]>,
) -> Result<ReadPage, ConnectorError> {
    let cur: Cursor = match cursor {
        Some(b) => serde_json::from_slice(b).map_err(|_| c.client_error("corrupt read cursor"))?,
        None => Cursor::default(),
    };
    let v = &c.cfg.api_version;
    let mut names: Vec<&str> = c.fields.iter().map(|f| f.name.as_str()).collect();
    names.extend(["Id", "SystemModstamp"]);
    names.dedup();
    if cur.deletes_pending {
        // Deletes since `since`, from the recycle bin (queryAll).
        let since = cur.since.unwrap_or(0);
        let q = format!(
            "SELECT Id, SystemModstamp FROM {} WHERE IsDeleted = true AND SystemModstamp >= {}",
            c.cfg.object,
            soql_datetime(since)
        );
        let mut changes = Vec::new();
        let mut url = format!("/services/data/v{v}/queryAll?q={}", urlencode(&q));
        loop {
            let r = c
                .client
                .call(reqwest::Method::GET, &url, None, Some(c.cfg.page_size))
                .await?;
            for rec in r
                .body
                .get("records")
                .and_then(J::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(id) = rec.get("Id").and_then(J::as_str) {
                    changes.push(Change {
                        key: Key::new(id),
                        entity_hint: None,
                        fields: None,
                        modstamp: rec
                            .get("SystemModstamp")
                            .and_then(J::as_str)
                            .and_then(|s| Timestamp::parse(s).ok()),
                    });
                }
            }
            match r.body.get("nextRecordsUrl").and_then(J::as_str) {
                Some(n) => url = n.to_string(),
                None => break,
            }
        }
        let next = Cursor {
            since: cur
                .newest
                .map(|n| n - c.cfg.overlap_secs as i64 * 1000)
                .or(cur.since),
            ..Cursor::default()
        };
        return Ok(ReadPage {
            changes,
            cursor: Some(serde_json::to_vec(&next).expect("cursor")),
            more: false,
            complete: false,
        });
    }
    let url = match &cur.next {
        Some(n) => n.clone(),
        None => {
            let mut q = format!("SELECT {} FROM {}", names.join(", "), c.cfg.object);
            if let Some(s) = cur.since {
                q.push_str(&format!(" WHERE SystemModstamp >= {}", soql_datetime(s)));
            }
            q.push_str(" ORDER BY SystemModstamp, Id");
            format!("/services/data/v{v}/query?q={}", urlencode(&q))
        }
    };
    let r = c
        .client
        .call(reqwest::Method::GET, &url, None, Some(c.cfg.page_size))
        .await?;
    let mut newest = cur.newest;
    let mut changes = Vec::new();
    for rec in r
        .body
        .get("records")
        .and_then(J::as_array)
        .into_iter()
        .flatten()
    {
        let Some(id) = rec.get("Id").and_then(J::as_str) else {
            continue;
        };
        let stamp = rec
            .get("SystemModstamp")
            .and_then(J::as_str)
            .and_then(|s| Timestamp::parse(s).ok());
        if let Some(t) = stamp {
            newest = Some(newest.map_or(t.millis(), |n: i64| n.max(t.millis())));
        }
        let mut fields = Fields::new();
        let mut hint = None;
        for f in &c.fields {
            if let Some(v) = rec.get(&f.name).and_then(|v| to_value(&f.ty, v)) {
                if Some(&f.name) == c.cfg.entity_id_field.as_ref() {
                    if let Value::Text(h) = &v {
                        hint = EntityId::from_hex(h);
                    }
                    continue;
                }
                fields.set(f.name.as_str(), v);
            }
        }
        changes.push(Change {
            key: Key::new(id),
            entity_hint: hint,
            fields: Some(fields),
            modstamp: stamp,
        });
    }
    let full = cur.since.is_none();
    match r.body.get("nextRecordsUrl").and_then(J::as_str) {
        Some(n) => Ok(ReadPage {
            changes,
            cursor: Some(
                serde_json::to_vec(&Cursor {
                    since: cur.since,
                    next: Some(n.to_string()),
                    newest,
                    deletes_pending: false,
                })
                .expect("cursor"),
            ),
            more: true,
            complete: full,
        }),
        None if full => {
            // A full read lists everything: deletes are what is missing. Next time: incremental.
            let next = Cursor {
                since: newest.map(|n| n - c.cfg.overlap_secs as i64 * 1000),
                ..Cursor::default()
            };
            Ok(ReadPage {
                changes,
                cursor: Some(serde_json::to_vec(&next).expect("cursor")),
                more: false,
                complete: true,
            })
        }
        None => Ok(ReadPage {
            changes,
            cursor: Some(
                serde_json::to_vec(&Cursor {
                    since: cur.since,
                    next: None,
                    newest,
                    deletes_pending: true,
                })
                .expect("cursor"),
            ),
            more: true,
            complete: false,
        }),
    }
}

/// Percent-encodes a query string value.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3 / 2);
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl SalesforceConnector {
    pub(super) fn client_error(&self, m: &str) -> ConnectorError {
        ConnectorError {
            system: self.system.to_string(),
            object: self.cfg.object.clone(),
            message: m.into(),
            retryable: false,
        }
    }
}
