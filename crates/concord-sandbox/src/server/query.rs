//! SOQL query, queryAll and queryMore, with `Sforce-Query-Options: batchSize` paging.

use super::state::*;
use crate::org::{QueryResult, SfError};
use crate::soql;
use axum::extract::{Path, Query as Q, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value as J};

#[derive(serde::Deserialize)]
pub(crate) struct QParam {
    q: Option<String>,
    /// `?explain=`: the query plan instead of the rows.
    explain: Option<String>,
}

pub(crate) fn batch_size(h: &HeaderMap) -> usize {
    h.get("sforce-query-options")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| {
            s.split(',')
                .find_map(|kv| kv.trim().strip_prefix("batchSize="))
        })
        .and_then(|n| n.trim().parse::<usize>().ok())
        .map_or(2000, |n| n.clamp(200, 2000))
}

/// Children a subquery answers per parent in one response; the rest wait behind the child
/// result's own `nextRecordsUrl`, as an org pages a large subquery result.
pub const CHILD_BATCH: usize = 200;

/// The page of `cur` from row `pos`; a page that is not the last names the next one
/// (`{locator}-{next row}`), opening the cursor under a new locator the first time.
pub(crate) fn page(
    sb: &Sandbox,
    v: &str,
    locator: Option<&str>,
    cur: std::sync::Arc<Cursor>,
    pos: usize,
) -> J {
    let total = cur.rows.len();
    let end = pos.saturating_add(cur.batch.max(1)).min(total);
    let records: Vec<J> = cur.rows[pos.min(end)..end]
        .iter()
        .cloned()
        .map(|r| page_children(sb, v, r))
        .collect();
    let done = end >= total;
    let mut body = json!({"totalSize": total, "done": done, "records": records});
    if !done {
        let loc = match locator {
            Some(l) => l.to_string(),
            None => {
                let loc = {
                    let mut n = sb.next_cursor.lock().expect("lock");
                    *n += 1;
                    format!("01g{:015}", *n)
                };
                let mut open = sb.cursors.lock().expect("lock");
                if open.len() >= OPEN_CURSORS {
                    if let Some(oldest) = open
                        .iter()
                        .min_by_key(|(_, c)| c.opened)
                        .map(|(k, _)| k.clone())
                    {
                        open.remove(&oldest);
                    }
                }
                open.insert(loc.clone(), cur.clone());
                loc
            }
        };
        body["nextRecordsUrl"] = json!(format!("/services/data/v{v}/query/{loc}-{end}"));
    }
    body
}

/// A new cursor over `rows`, `batch` at a time.
fn cursor(sb: &Sandbox, rows: Vec<J>, batch: usize) -> std::sync::Arc<Cursor> {
    let opened = *sb.next_cursor.lock().expect("lock");
    std::sync::Arc::new(Cursor {
        rows,
        batch,
        opened,
    })
}

/// A record whose subquery results hold more than [`CHILD_BATCH`] children: each such result
/// keeps the first ones, `done: false` and a `nextRecordsUrl` for the rest.
fn page_children(sb: &Sandbox, v: &str, mut rec: J) -> J {
    if let J::Object(m) = &mut rec {
        for val in m.values_mut() {
            let long = val.get("totalSize").is_some()
                && val
                    .get("records")
                    .and_then(J::as_array)
                    .is_some_and(|r| r.len() > CHILD_BATCH);
            if !long {
                continue;
            }
            let rows = match val.get_mut("records").map(J::take) {
                Some(J::Array(rows)) => rows,
                _ => continue,
            };
            *val = page(sb, v, None, cursor(sb, rows, CHILD_BATCH), 0);
        }
    }
    rec
}

pub(crate) async fn run_query(
    sb: &St,
    v: &str,
    q: Option<String>,
    all: bool,
    headers: &HeaderMap,
) -> Response {
    let Some(text) = q else {
        return err(SfError::new(
            400,
            "MALFORMED_QUERY",
            "A query string has to be specified",
        ));
    };
    let parsed = match soql::parse(&text) {
        Ok(p) => p,
        Err(e) => {
            return err(SfError::new(
                400,
                "MALFORMED_QUERY",
                format!(
                    "\n{text}\n^\nERROR at Row:1:Column:{}\n{}",
                    e.at + 1,
                    e.message
                ),
            ))
        }
    };
    let result = sb.org.lock().expect("lock").query(&parsed, all, v);
    match result {
        Ok(QueryResult::Count(n)) => {
            Json(json!({"totalSize": n, "done": true, "records": []})).into_response()
        }
        Ok(QueryResult::Rows(rows)) => {
            let cur = cursor(sb, rows, batch_size(headers));
            Json(page(sb, v, None, cur, 0)).into_response()
        }
        Err(e) => err(e),
    }
}

pub(crate) async fn query(
    State(sb): State<St>,
    Path(v): Path<String>,
    Q(p): Q<QParam>,
    headers: HeaderMap,
) -> Response {
    let v = match version_ok(&v) {
        Ok(v) => v.to_string(),
        Err(e) => return err(e),
    };
    if let Some(text) = p.explain {
        sb.count("query.explain");
        return explain(&sb, &text);
    }
    sb.count("query");
    run_query(&sb, &v, p.q, false, &headers).await
}

/// `GET /query?explain=`: the plan an org would choose, as its Query Plan tool shows it: an
/// index when the filter (or one AND branch of it) compares an indexed field — Id, Name,
/// OwnerId, CreatedDate, SystemModstamp, a lookup, an External ID or unique field — by `=` or
/// IN; a table scan otherwise. Cardinality is the number of matching records, counted.
fn explain(sb: &Sandbox, text: &str) -> Response {
    let parsed = match soql::parse(text) {
        Ok(p) => p,
        Err(e) => return err(SfError::new(400, "MALFORMED_QUERY", e.message)),
    };
    let org = sb.org.lock().expect("lock");
    let o = match org.object(&parsed.object) {
        Ok(o) => o.clone(),
        Err(_) => {
            return err(SfError::new(
                400,
                "INVALID_TYPE",
                format!("sObject type '{}' is not supported.", parsed.object),
            ))
        }
    };
    let total = match org.query(
        &crate::soql::parse(&format!("SELECT COUNT() FROM {}", o.name)).expect("count query"),
        false,
        "62.0",
    ) {
        Ok(QueryResult::Count(n)) => n,
        _ => 0,
    };
    let mut counted = parsed.clone();
    counted.select = vec![soql::SelectItem::Count];
    counted.group_by.clear();
    counted.order.clear();
    let matching = match org.query(&counted, false, "62.0") {
        Ok(QueryResult::Count(n)) => n,
        Ok(_) => 0,
        Err(e) => return err(e),
    };
    let indexed = |name: &str| {
        o.field(name).is_some_and(|f| {
            matches!(
                f.name.as_str(),
                "Id" | "Name" | "OwnerId" | "CreatedDate" | "SystemModstamp"
            ) || f.external_id
                || f.unique
                || f.ty == crate::schema::FieldType::Reference
        })
    };
    fn leading<'a>(c: &'a soql::Cond, out: &mut Vec<&'a str>) {
        match c {
            soql::Cond::And(a, b) => {
                leading(a, out);
                leading(b, out);
            }
            soql::Cond::Cmp {
                field,
                func: None,
                op: soql::CmpOp::Eq,
                ..
            }
            | soql::Cond::In {
                field,
                negated: false,
                ..
            } if field.len() == 1 => out.push(&field[0]),
            _ => {}
        }
    }
    let mut candidates = Vec::new();
    if let Some(c) = &parsed.filter {
        leading(c, &mut candidates);
    }
    let used: Vec<String> = candidates
        .into_iter()
        .filter(|f| indexed(f))
        .filter_map(|f| o.field(f).map(|d| d.name.clone()))
        .collect();
    let index = !used.is_empty();
    let cost = if total == 0 {
        0.0
    } else if index {
        (matching as f64 / total as f64) * 0.1
    } else {
        0.66 + (matching as f64 / total as f64) * 0.34
    };
    let notes: Vec<J> = if index || parsed.filter.is_none() {
        Vec::new()
    } else {
        vec![
            json!({"description": "Not considering filter for optimization because unindexed", "fields": [], "tableEnumOrId": o.name}),
        ]
    };
    Json(json!({
        "plans": [{
            "cardinality": matching,
            "fields": used,
            "leadingOperationType": if index { "Index" } else { "TableScan" },
            "notes": notes,
            "relativeCost": cost,
            "sobjectCardinality": total,
            "sobjectType": o.name,
        }],
        "sourceQuery": text,
    }))
    .into_response()
}

pub(crate) async fn query_all(
    State(sb): State<St>,
    Path(v): Path<String>,
    Q(p): Q<QParam>,
    headers: HeaderMap,
) -> Response {
    let v = match version_ok(&v) {
        Ok(v) => v.to_string(),
        Err(e) => return err(e),
    };
    sb.count("queryAll");
    run_query(&sb, &v, p.q, true, &headers).await
}

pub(crate) async fn query_more(
    State(sb): State<St>,
    Path((v, locator)): Path<(String, String)>,
) -> Response {
    let v = match version_ok(&v) {
        Ok(v) => v.to_string(),
        Err(e) => return err(e),
    };
    sb.count("query.more");
    // `{locator}-{row}`: the page of the open cursor from that row on.
    let found = locator.rsplit_once('-').and_then(|(loc, pos)| {
        let pos: usize = pos.parse().ok()?;
        let cur = sb.cursors.lock().expect("lock").get(loc).cloned()?;
        (pos <= cur.rows.len()).then(|| (loc.to_string(), cur, pos))
    });
    match found {
        Some((loc, cur, pos)) => Json(page(&sb, &v, Some(&loc), cur, pos)).into_response(),
        None => err(SfError::new(
            400,
            "INVALID_QUERY_LOCATOR",
            "invalid query locator",
        )),
    }
}
