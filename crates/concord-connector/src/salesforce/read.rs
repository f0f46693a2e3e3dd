//! Reads: a query ordered by (SystemModstamp, Id) paged by `nextRecordsUrl`. The next read
//! starts strictly after the newest second seen when the server's `latestDateCovered` (asked
//! before the read's query) shows nothing can still commit there; otherwise at the later of that
//! bound and `overlap_secs` before the newest stamp — so records sharing a timestamp or
//! committing late are found, and the engine recognises re-read ones by hash. When the first
//! page reports at least `bulk_read_threshold` records, the rest of the read continues as one
//! Bulk API 2.0 query job (CSV pages of up to 50 000 records). An incremental read ends with the
//! deletes since its start: `getDeleted` (which also reports hard-deleted records), or, when
//! that start is beyond getDeleted's window, `queryAll` for `IsDeleted = true` rows. With
//! `children`, each record carries its child lists (parent-to-child subqueries, followed to the
//! end when paged), an incremental read also fetches again the parents whose children changed,
//! and reads stay on the REST API.

use super::client::Payload;
use super::SalesforceConnector;
use crate::{Change, ConnectorError, ReadPage};
use concord_model::model::{EntityId, Fields, Key, Timestamp, Value};
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
    /// Where the next getDeleted window starts (server time, from its `latestDateCovered`).
    #[serde(default)]
    del_since: Option<i64>,
    /// Inside a read continued by a Bulk API query job: the job, and the next page's locator.
    #[serde(default)]
    bulk_job: Option<String>,
    #[serde(default)]
    bulk_locator: Option<String>,
    /// Records of the first page within the second the bulk query starts at: the job returns
    /// them again and they are skipped (SOQL datetimes have no milliseconds).
    #[serde(default)]
    bulk_skip: Vec<String>,
    /// Inside a read: the server's clock (its `Date` header, less 2 s for its rounding and
    /// the time spent answering) when the read's first query was answered.
    #[serde(default)]
    read_started: Option<i64>,
    /// `since` is exclusive: the read takes records stamped after its second (every record
    /// of that second and before was read and none can still commit there).
    #[serde(default)]
    strict: bool,
    /// The server's `latestDateCovered` (floored to the minute) of the last replication call
    /// made before this read's first query: every change stamped before it had committed by
    /// then, so the query sees it. Later stamps may belong to transactions still running.
    #[serde(default)]
    bound: Option<i64>,
}

/// Where the next read starts: `overlap` before the newest stamp seen, so records committed
/// late with an older stamp are still found. Records stamped `overlap` before the read began
/// were all committed by then and seen, so where the server's clock is known the start moves
/// up to the older of that moment and the newest stamp (a quiet object is not re-read over the
/// whole window on every pass).
fn next_since(newest: i64, read_started: Option<i64>, overlap: i64) -> i64 {
    match read_started {
        Some(now) => newest.min(now - overlap).max(newest - overlap),
        None => newest - overlap,
    }
}

/// Where the next read starts after a read whose newest record is stamped `newest`, given the
/// read's server bound (see [`Cursor::bound`]): strictly after the newest second when that
/// second lies wholly before the bound (nothing stamped there can still commit: its records
/// are not read again, however many share it). Otherwise the later of the overlap start
/// ([`next_since`]) and the bound: what was stamped since may still be joined by late commits
/// and is read again (deduplicated by hash), over no more than the overlap and no earlier than
/// the server says is needed. `(since, strict)`.
fn next_position(
    newest: i64,
    bound: Option<i64>,
    read_started: Option<i64>,
    overlap: i64,
) -> (i64, bool) {
    let second = newest.div_euclid(1000) * 1000;
    let window = next_since(newest, read_started, overlap);
    match bound {
        Some(b) if second + 1000 <= b => (second, true),
        Some(b) => (window.max(b.min(newest)), false),
        None => (window, false),
    }
}

/// A replication answer's `latestDateCovered`, floored to the minute (an org's replication
/// calls work in whole minutes).
fn covered_of(body: &J) -> Option<i64> {
    body.get("latestDateCovered")
        .and_then(J::as_str)
        .and_then(|s| Timestamp::parse(s).ok())
        .map(|t| t.millis().div_euclid(60_000) * 60_000)
}

/// Records per Bulk API query result page.
const BULK_PAGE: usize = 50_000;
/// getDeleted answers for no more than this far back.
const GET_DELETED_DAYS: i64 = 15;

/// A Salesforce value (JSON, or CSV text from the Bulk API) as a field value, by describe type.
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
            "int" => match s.parse::<i64>() {
                Ok(i) => Some(Value::Int(i)),
                Err(_) => Value::decimal_str(s).ok(),
            },
            "double" | "currency" | "percent" => Value::decimal_str(s).ok(),
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

fn stamp_of(rec: &J) -> Option<Timestamp> {
    rec.get("SystemModstamp")
        .and_then(J::as_str)
        .and_then(|s| Timestamp::parse(s).ok())
}

/// One record (a query row, or a Bulk CSV row as JSON text) as a change.
fn change_of(c: &SalesforceConnector, rec: &J) -> Option<Change> {
    let id = rec.get("Id").and_then(J::as_str)?;
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
    for ch in &c.children {
        fields.set(ch.name.as_str(), Value::Json(J::Array(child_list(ch, rec))));
    }
    Some(Change {
        key: Key::new(id),
        entity_hint: hint,
        fields: Some(fields),
        modstamp: stamp_of(rec),
    })
}

/// A record's children of one relationship as the native value: its Id and the configured
/// fields of each child, ordered by Id (none: an empty list).
fn child_list(ch: &super::ChildRel, rec: &J) -> Vec<J> {
    let mut out: Vec<J> = rec
        .get(&ch.name)
        .and_then(|r| r.get("records"))
        .and_then(J::as_array)
        .into_iter()
        .flatten()
        .map(|k| {
            let mut m = serde_json::Map::new();
            m.insert("Id".into(), k.get("Id").cloned().unwrap_or(J::Null));
            for f in &ch.fields {
                m.insert(f.name.clone(), k.get(&f.name).cloned().unwrap_or(J::Null));
            }
            J::Object(m)
        })
        .collect();
    out.sort_by(|a, b| a["Id"].as_str().cmp(&b["Id"].as_str()));
    out
}

/// Follows every child result a record holds only in part (`done: false`) to its end, so a
/// record is never taken with part of its children; a result without the rest's URL is an
/// error.
async fn complete_children(
    c: &SalesforceConnector,
    records: &mut [J],
) -> Result<(), ConnectorError> {
    for rec in records.iter_mut() {
        for ch in &c.children {
            let Some(result) = rec.get_mut(&ch.name).filter(|r| r.is_object()) else {
                continue;
            };
            while result.get("done").and_then(J::as_bool) == Some(false) {
                let url = result
                    .get("nextRecordsUrl")
                    .and_then(J::as_str)
                    .ok_or_else(|| {
                        c.client_error(&format!(
                            "a {} result is not done and has no nextRecordsUrl",
                            ch.name
                        ))
                    })?
                    .to_string();
                let more = c
                    .client
                    .call(reqwest::Method::GET, &url, None, None)
                    .await?
                    .body;
                let rows = more
                    .get("records")
                    .and_then(J::as_array)
                    .cloned()
                    .ok_or_else(|| c.client_error("a child result page without records"))?;
                if let Some(J::Array(have)) = result.get_mut("records") {
                    have.extend(rows);
                }
                result["done"] = more.get("done").cloned().unwrap_or(J::Bool(true));
                result["nextRecordsUrl"] = more.get("nextRecordsUrl").cloned().unwrap_or(J::Null);
            }
        }
    }
    Ok(())
}

/// The parent-to-child subqueries of a read: `(SELECT Id, … FROM Contacts ORDER BY Id)`.
fn subqueries(c: &SalesforceConnector) -> Vec<String> {
    c.children
        .iter()
        .map(|ch| {
            let mut f = vec!["Id"];
            f.extend(ch.fields.iter().map(|x| x.name.as_str()));
            format!("(SELECT {} FROM {} ORDER BY Id)", f.join(", "), ch.name)
        })
        .collect()
}

fn encode(c: &Cursor) -> Option<Vec<u8>> {
    Some(serde_json::to_vec(c).expect("cursor"))
}

/// The page that ends the record part of a read: a full read is complete (deletes are what is
/// missing); an incremental one goes on with its deletes.
fn end_of_records(
    c: &SalesforceConnector,
    cur: &Cursor,
    newest: Option<i64>,
    changes: Vec<Change>,
) -> ReadPage {
    let overlap = c.cfg.overlap_secs as i64 * 1000;
    if cur.since.is_none() {
        let pos = newest.map(|n| next_position(n, cur.bound, cur.read_started, overlap));
        let next = Cursor {
            since: pos.map(|p| p.0),
            strict: pos.is_some_and(|p| p.1),
            del_since: newest.map(|n| n - c.cfg.overlap_secs as i64 * 1000),
            // The full read's own bound stays valid for the next read (its call came first).
            bound: cur.bound,
            ..Cursor::default()
        };
        return ReadPage {
            changes,
            cursor: encode(&next),
            more: false,
            complete: true,
        };
    }
    ReadPage {
        changes,
        cursor: encode(&Cursor {
            since: cur.since,
            strict: cur.strict,
            bound: cur.bound,
            newest,
            deletes_pending: true,
            del_since: cur.del_since,
            read_started: cur.read_started,
            ..Cursor::default()
        }),
        more: true,
        complete: false,
    }
}

/// The fields a read asks for: the configured ones, Id and SystemModstamp.
fn read_fields(c: &SalesforceConnector) -> Vec<&str> {
    let mut names: Vec<&str> = c.fields.iter().map(|f| f.name.as_str()).collect();
    names.extend(["Id", "SystemModstamp"]);
    names.dedup();
    names
}

/// The record query of a read (`after`: continue strictly after this stamp's second).
fn record_query(
    c: &SalesforceConnector,
    since: Option<i64>,
    strict: bool,
    after: Option<i64>,
    ordered: bool,
) -> String {
    let mut names: Vec<String> = read_fields(c).into_iter().map(str::to_string).collect();
    names.extend(subqueries(c));
    let mut q = format!("SELECT {} FROM {}", names.join(", "), c.cfg.object);
    let mut conds = Vec::new();
    if let Some(s) = since {
        let op = if strict { ">" } else { ">=" };
        conds.push(format!("SystemModstamp {op} {}", soql_datetime(s)));
    }
    if let Some(a) = after {
        conds.push(format!("SystemModstamp >= {}", soql_datetime(a)));
    }
    if !conds.is_empty() {
        q.push_str(" WHERE ");
        q.push_str(&conds.join(" AND "));
    }
    if ordered {
        q.push_str(" ORDER BY SystemModstamp, Id");
    }
    q
}

pub(super) async fn page(
    c: &SalesforceConnector,
    cursor: Option<&[u8]>,
) -> Result<ReadPage, ConnectorError> {
    let cur: Cursor = match cursor {
        Some(b) => serde_json::from_slice(b).map_err(|_| c.client_error("corrupt read cursor"))?,
        None => Cursor::default(),
    };
    if cur.deletes_pending {
        return deletes(c, cur).await;
    }
    if cur.bulk_job.is_some() {
        return bulk_page(c, cur).await;
    }
    let v = &c.cfg.api_version;
    let first = cur.next.is_none();
    let cur = if first && cur.since.is_none() {
        Cursor {
            bound: server_bound(c).await?,
            ..cur
        }
    } else {
        cur
    };
    let url = match &cur.next {
        Some(n) => n.clone(),
        None => format!(
            "/services/data/v{v}/query?q={}",
            urlencode(&record_query(c, cur.since, cur.strict, None, true))
        ),
    };
    let r = c
        .client
        .call(reqwest::Method::GET, &url, None, Some(c.cfg.page_size))
        .await?;
    let mut newest = cur.newest;
    let mut changes = Vec::new();
    let cur = Cursor {
        read_started: if first {
            r.date.map(|d| d - 2000)
        } else {
            cur.read_started
        },
        ..cur
    };
    let mut records = r
        .body
        .get("records")
        .and_then(J::as_array)
        .cloned()
        .unwrap_or_default();
    complete_children(c, &mut records).await?;
    for rec in &records {
        if let Some(t) = stamp_of(rec) {
            newest = Some(newest.map_or(t.millis(), |n: i64| n.max(t.millis())));
        }
        changes.extend(change_of(c, rec));
    }
    let full = cur.since.is_none();
    let total = r.body.get("totalSize").and_then(J::as_u64).unwrap_or(0) as usize;
    match r.body.get("nextRecordsUrl").and_then(J::as_str) {
        // (Bulk API queries take no subqueries: a read with children stays on the REST API.)
        Some(_) if first && total >= c.cfg.bulk_read_threshold && c.children.is_empty() => {
            // A large set: the rest through one Bulk API query job (records of the last
            // second seen are read again; the engine knows them by hash).
            let q = record_query(c, cur.since, cur.strict, newest, false);
            let job = c
                .client
                .call(
                    reqwest::Method::POST,
                    &format!("/services/data/v{v}/jobs/query"),
                    Some(&serde_json::json!({"operation": "query", "query": q, "contentType": "CSV"})),
                    None,
                )
                .await?;
            let id = job
                .body
                .get("id")
                .and_then(J::as_str)
                .ok_or_else(|| c.client_error("Bulk API query job created without an id"))?;
            wait_for_job(c, "query", id).await?;
            let second = newest.map(|n| n.div_euclid(1000) * 1000);
            let bulk_skip = changes
                .iter()
                .filter(|ch| matches!((ch.modstamp, second), (Some(t), Some(s)) if t.millis() >= s))
                .map(|ch| ch.key.to_string())
                .collect();
            Ok(ReadPage {
                changes,
                cursor: encode(&Cursor {
                    since: cur.since,
                    strict: cur.strict,
                    bound: cur.bound,
                    newest,
                    del_since: cur.del_since,
                    bulk_job: Some(id.to_string()),
                    bulk_skip,
                    read_started: cur.read_started,
                    ..Cursor::default()
                }),
                more: true,
                complete: full,
            })
        }
        Some(n) => Ok(ReadPage {
            changes,
            cursor: encode(&Cursor {
                since: cur.since,
                strict: cur.strict,
                bound: cur.bound,
                next: Some(n.to_string()),
                newest,
                del_since: cur.del_since,
                read_started: cur.read_started,
                ..Cursor::default()
            }),
            more: true,
            complete: full,
        }),
        None => Ok(end_of_records(c, &cur, newest, changes)),
    }
}

/// The records with these Ids, in order; a missing one comes back as a delete. From API 42.0
/// on through sObject Collections retrieve (2 000 ids a call, one `null` per id without a
/// record); before, by a query `WHERE Id IN (…)` (200 ids a call).
pub(super) async fn fetch(
    c: &SalesforceConnector,
    keys: &[Key],
) -> Result<Vec<Change>, ConnectorError> {
    let major = c
        .cfg
        .api_version
        .split('.')
        .next()
        .and_then(|m| m.parse::<u32>().ok())
        .unwrap_or(0);
    // Collections retrieve takes fields, not subqueries: records with children are fetched
    // by a query.
    if major < 42 || !c.children.is_empty() {
        return fetch_by_query(c, keys).await;
    }
    let v = &c.cfg.api_version;
    let names = read_fields(c);
    let url = format!("/services/data/v{v}/composite/sobjects/{}", c.cfg.object);
    let mut out = Vec::with_capacity(keys.len());
    for chunk in keys.chunks(2000) {
        let ids: Vec<&str> = chunk.iter().map(Key::as_str).collect();
        let body = serde_json::json!({"ids": ids, "fields": names});
        let r = c
            .client
            .call(reqwest::Method::POST, &url, Some(&body), None)
            .await?;
        // One entry per id asked, in order: anything else is a read cut short, never taken as
        // deletes.
        let recs = r
            .body
            .as_array()
            .filter(|a| a.len() == chunk.len())
            .ok_or_else(|| {
                c.client_error(&format!(
                "sObject Collections retrieve of {} ids answered something else than {} records",
                chunk.len(),
                chunk.len()
            ))
            })?;
        for (k, rec) in chunk.iter().zip(recs) {
            let ch = if rec.is_null() {
                None
            } else {
                let ch = change_of(c, rec).ok_or_else(|| {
                    c.client_error(&format!(
                        "retrieve of {} answered a record without Id",
                        k.as_str()
                    ))
                })?;
                if !same_id(ch.key.as_str(), k.as_str()) {
                    return Err(c.client_error(&format!(
                        "retrieve of {} answered record {}",
                        k.as_str(),
                        ch.key.as_str()
                    )));
                }
                Some(Change {
                    key: k.clone(),
                    ..ch
                })
            };
            out.push(ch.unwrap_or(Change {
                key: k.clone(),
                entity_hint: None,
                fields: None,
                modstamp: None,
            }));
        }
    }
    Ok(out)
}

/// Whether two record ids name one record: equal, or one is the 15-character (case-sensitive)
/// form of the other.
fn same_id(a: &str, b: &str) -> bool {
    a == b
        || (a.len() >= 15
            && b.len() >= 15
            && a[..15] == b[..15]
            && (a.len() == 15 || b.len() == 15))
}

/// [`fetch`] before API 42.0: a query `WHERE Id IN (…)`, 200 ids a call.
async fn fetch_by_query(
    c: &SalesforceConnector,
    keys: &[Key],
) -> Result<Vec<Change>, ConnectorError> {
    let v = &c.cfg.api_version;
    let mut found: std::collections::HashMap<String, Change> = std::collections::HashMap::new();
    for chunk in keys.chunks(200) {
        let ids: Vec<String> = chunk
            .iter()
            .map(|k| super::soql::quote(k.as_str()))
            .collect();
        let mut q = record_query(c, None, false, None, false);
        q.push_str(&format!(" WHERE Id IN ({})", ids.join(", ")));
        let mut url = format!("/services/data/v{v}/query?q={}", urlencode(&q));
        loop {
            let r = c
                .client
                .call(reqwest::Method::GET, &url, None, None)
                .await?;
            let mut records = r
                .body
                .get("records")
                .and_then(J::as_array)
                .cloned()
                .unwrap_or_default();
            complete_children(c, &mut records).await?;
            for rec in &records {
                if let Some(ch) = change_of(c, rec) {
                    found.insert(ch.key.as_str().to_string(), ch);
                }
            }
            match r.body.get("nextRecordsUrl").and_then(J::as_str) {
                Some(n) => url = n.to_string(),
                None => break,
            }
        }
    }
    Ok(keys
        .iter()
        .map(|k| {
            found.remove(k.as_str()).unwrap_or(Change {
                key: k.clone(),
                entity_hint: None,
                fields: None,
                modstamp: None,
            })
        })
        .collect())
}

/// Polls a bulk job until it has finished; an error when it failed, was aborted or timed out.
pub(super) async fn wait_for_job(
    c: &SalesforceConnector,
    kind: &str,
    id: &str,
) -> Result<J, ConnectorError> {
    let v = &c.cfg.api_version;
    let started = std::time::Instant::now();
    let mut wait = std::time::Duration::from_millis(50);
    loop {
        let info = c
            .client
            .call(
                reqwest::Method::GET,
                &format!("/services/data/v{v}/jobs/{kind}/{id}"),
                None,
                None,
            )
            .await?;
        match info.body.get("state").and_then(J::as_str).unwrap_or("") {
            "JobComplete" => return Ok(info.body),
            "Failed" | "Aborted" => {
                return Err(c.client_error(&format!(
                    "Bulk API {kind} job {id} {}: {}",
                    info.body["state"].as_str().unwrap_or("failed"),
                    info.body
                        .get("errorMessage")
                        .and_then(J::as_str)
                        .unwrap_or("no error message")
                )))
            }
            _ => {}
        }
        if started.elapsed().as_secs() >= c.cfg.bulk_timeout_secs {
            return Err(ConnectorError {
                retryable: true,
                ..c.client_error(&format!(
                    "Bulk API {kind} job {id} not finished after {} s",
                    c.cfg.bulk_timeout_secs
                ))
            });
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(std::time::Duration::from_secs(5));
    }
}

/// CSV text (header row first) as JSON objects of text cells; empty cells are null.
pub(super) fn csv_rows(text: &str) -> Result<Vec<serde_json::Map<String, J>>, crate::InvalidData> {
    let mut rdr = csv::ReaderBuilder::new().from_reader(text.as_bytes());
    let header: Vec<String> = rdr
        .headers()
        .map_err(|e| e.to_string())?
        .iter()
        .map(str::to_string)
        .collect();
    let mut out = Vec::new();
    for r in rdr.records() {
        let r = r.map_err(|e| e.to_string())?;
        let mut m = serde_json::Map::new();
        for (h, cell) in header.iter().zip(r.iter()) {
            m.insert(
                h.clone(),
                if cell.is_empty() {
                    J::Null
                } else {
                    J::String(cell.to_string())
                },
            );
        }
        out.push(m);
    }
    Ok(out)
}

async fn bulk_page(c: &SalesforceConnector, cur: Cursor) -> Result<ReadPage, ConnectorError> {
    let v = &c.cfg.api_version;
    let id = cur.bulk_job.clone().unwrap_or_default();
    let mut url = format!("/services/data/v{v}/jobs/query/{id}/results?maxRecords={BULK_PAGE}");
    if let Some(l) = &cur.bulk_locator {
        url.push_str(&format!("&locator={}", urlencode(l)));
    }
    let r = c
        .client
        .request(reqwest::Method::GET, &url, Payload::None, None)
        .await?;
    let rows = csv_rows(&r.text)
        .map_err(|e| c.client_error(&format!("Bulk API query job {id}: bad CSV page: {e}")))?;
    let mut newest = cur.newest;
    let mut changes = Vec::with_capacity(rows.len());
    let skip: std::collections::HashSet<&str> = cur.bulk_skip.iter().map(String::as_str).collect();
    for m in rows {
        if m.get("Id")
            .and_then(J::as_str)
            .is_some_and(|id| skip.contains(id))
        {
            continue;
        }
        let rec = J::Object(m);
        if let Some(t) = stamp_of(&rec) {
            newest = Some(newest.map_or(t.millis(), |n: i64| n.max(t.millis())));
        }
        changes.extend(change_of(c, &rec));
    }
    match r.locator {
        Some(l) => Ok(ReadPage {
            changes,
            cursor: encode(&Cursor {
                bulk_locator: Some(l),
                newest,
                ..cur.clone()
            }),
            more: true,
            complete: cur.since.is_none(),
        }),
        None => Ok(end_of_records(c, &cur, newest, changes)),
    }
}

/// The server's bound for a full read, asked before its first query: getUpdated over the last
/// minute, for its `latestDateCovered` (one call; the ids are not used). None when the object
/// does not support replication: the next read then falls back to the overlap.
async fn server_bound(c: &SalesforceConnector) -> Result<Option<i64>, ConnectorError> {
    let v = &c.cfg.api_version;
    let now = Timestamp::now().millis();
    let url = format!(
        "/services/data/v{v}/sobjects/{}/updated/?start={}&end={}",
        c.cfg.object,
        urlencode(&soql_datetime(now - 60_000)),
        urlencode(&soql_datetime(now + 999))
    );
    match c.client.call(reqwest::Method::GET, &url, None, None).await {
        Ok(r) => Ok(covered_of(&r.body)),
        Err(e) if e.retryable => Err(e),
        Err(e) => {
            tracing::info!(object = %c.cfg.object, "getUpdated refused ({e}): reads fall back to the overlap window");
            Ok(None)
        }
    }
}

/// Every row of a `queryAll` (deleted rows included), page by page, to `each`.
async fn query_all(
    c: &SalesforceConnector,
    q: &str,
    mut each: impl FnMut(&J),
) -> Result<(), ConnectorError> {
    let v = &c.cfg.api_version;
    let mut url = format!("/services/data/v{v}/queryAll?q={}", urlencode(q));
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
            each(rec);
        }
        match r.body.get("nextRecordsUrl").and_then(J::as_str) {
            Some(n) => url = n.to_string(),
            None => return Ok(()),
        }
    }
}

/// The parents whose children changed within an incremental read's window (a child's edit
/// does not touch its parent's SystemModstamp): queryAll over each child object — deleted and
/// undeleted children change their parent's list too — then the parents fetched again with
/// their children. Also the newest child stamp seen, which the next read starts from.
async fn child_changes(
    c: &SalesforceConnector,
    cur: &Cursor,
) -> Result<(Vec<Change>, Option<i64>), ConnectorError> {
    let Some(since) = cur.since.filter(|_| !c.children.is_empty()) else {
        return Ok((Vec::new(), None));
    };
    let op = if cur.strict { ">" } else { ">=" };
    let mut parents = std::collections::BTreeSet::new();
    let mut newest: Option<i64> = None;
    for ch in &c.children {
        let q = format!(
            "SELECT {}, SystemModstamp FROM {} WHERE SystemModstamp {op} {}",
            ch.parent_field,
            ch.object,
            soql_datetime(since)
        );
        query_all(c, &q, |rec| {
            if let Some(p) = rec.get(&ch.parent_field).and_then(J::as_str) {
                parents.insert(p.to_string());
            }
            if let Some(t) = stamp_of(rec) {
                newest = Some(newest.map_or(t.millis(), |n| n.max(t.millis())));
            }
        })
        .await?;
    }
    let keys: Vec<Key> = parents.into_iter().map(Key::new).collect();
    Ok((fetch_by_query(c, &keys).await?, newest))
}

/// The deletes since the read's start: getDeleted, or queryAll beyond getDeleted's window.
async fn deletes(c: &SalesforceConnector, cur: Cursor) -> Result<ReadPage, ConnectorError> {
    let v = &c.cfg.api_version;
    let since = match (cur.del_since, cur.since) {
        (Some(d), Some(s)) => d.min(s),
        (d, s) => d.or(s).unwrap_or(0),
    };
    let now = Timestamp::now().millis();
    let (mut changes, child_newest) = child_changes(c, &cur).await?;
    let mut covered = None;
    // The next read's bound: this call's, made before that read's query (a queryAll fallback
    // gives none: the bound this read had stays).
    let mut bound = None;
    if since > now - GET_DELETED_DAYS * 86_400_000 + 3_600_000 {
        let url = format!(
            "/services/data/v{v}/sobjects/{}/deleted/?start={}&end={}",
            c.cfg.object,
            urlencode(&soql_datetime(since)),
            urlencode(&soql_datetime(now.max(since + 60_000) + 999))
        );
        match c.client.call(reqwest::Method::GET, &url, None, None).await {
            Ok(r) => {
                for d in r
                    .body
                    .get("deletedRecords")
                    .and_then(J::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(id) = d.get("id").and_then(J::as_str) {
                        changes.push(Change {
                            key: Key::new(id),
                            entity_hint: None,
                            fields: None,
                            modstamp: d
                                .get("deletedDate")
                                .and_then(J::as_str)
                                .and_then(|s| Timestamp::parse(s).ok()),
                        });
                    }
                }
                covered = r
                    .body
                    .get("latestDateCovered")
                    .and_then(J::as_str)
                    .and_then(|s| Timestamp::parse(s).ok())
                    .map(|t| t.millis());
                bound = covered_of(&r.body);
            }
            Err(e) if e.message.contains("INVALID_REPLICATION_DATE") => {}
            Err(e) => return Err(e),
        }
    }
    if covered.is_none() {
        // Beyond getDeleted's window: what is still in the recycle bin.
        let q = format!(
            "SELECT Id, SystemModstamp FROM {} WHERE IsDeleted = true AND SystemModstamp >= {}",
            c.cfg.object,
            soql_datetime(since)
        );
        query_all(c, &q, |rec| {
            if let Some(id) = rec.get("Id").and_then(J::as_str) {
                changes.push(Change {
                    key: Key::new(id),
                    entity_hint: None,
                    fields: None,
                    modstamp: stamp_of(rec),
                });
            }
        })
        .await?;
        covered = changes
            .iter()
            .filter_map(|ch| ch.modstamp.map(|t| t.millis()))
            .max()
            .or(cur.newest);
    }
    let overlap = c.cfg.overlap_secs as i64 * 1000;
    let newest = match (cur.newest, child_newest) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let pos = newest.map(|n| next_position(n, cur.bound, cur.read_started, overlap));
    let next = Cursor {
        since: pos.map(|p| p.0).or(cur.since),
        strict: pos.map_or(cur.strict, |p| p.1),
        del_since: covered.map(|t| t - overlap).or(Some(since)),
        bound: bound.or(cur.bound),
        ..Cursor::default()
    };
    Ok(ReadPage {
        changes,
        cursor: encode(&next),
        more: false,
        complete: false,
    })
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
