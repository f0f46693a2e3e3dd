//! sObjects: describeGlobal, describe, and one record's create, retrieve, update
//! (`If-Unmodified-Since`), delete and upsert by external id.

use super::state::*;
use crate::org::{SfError, Upserted};
use axum::extract::{Path, Query as Q, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use concord_model::model::Timestamp;
use serde_json::{json, Map, Value as J};

pub(crate) async fn sobjects(State(sb): State<St>, Path(v): Path<String>) -> Response {
    let v = match version_ok(&v) {
        Ok(v) => v,
        Err(e) => return err(e),
    };
    sb.count("describeGlobal");
    let org = sb.org.lock().expect("lock");
    let list: Vec<J> = org
        .objects()
        .iter()
        .map(|o| crate::schema::global_entry(o, v))
        .collect();
    Json(json!({"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": list})).into_response()
}

pub(crate) async fn describe(
    State(sb): State<St>,
    Path((v, s)): Path<(String, String)>,
) -> Response {
    let v = match version_ok(&v) {
        Ok(v) => v,
        Err(e) => return err(e),
    };
    sb.count("describe");
    let org = sb.org.lock().expect("lock");
    match org.object(&s) {
        Ok(o) => Json(crate::schema::describe(o, v, org.objects())).into_response(),
        Err(e) => err(e),
    }
}

/// `GET /sobjects/{S}` (basic information): the object's describeGlobal entry as
/// `objectDescribe` and `recentItems`, the object's most recently modified live records (an org
/// lists those the user viewed or referenced last; the sandbox does not track views), newest
/// first, up to 25, with their Id and Name.
pub(crate) async fn basic_info(
    State(sb): State<St>,
    Path((v, s)): Path<(String, String)>,
) -> Response {
    let v = match version_ok(&v) {
        Ok(v) => v,
        Err(e) => return err(e),
    };
    sb.count("sobject.basic");
    let org = sb.org.lock().expect("lock");
    let o = match org.object(&s) {
        Ok(o) => o,
        Err(e) => return err(e),
    };
    let named = o.field("Name").is_some();
    let soql = format!(
        "SELECT Id{} FROM {} ORDER BY LastModifiedDate DESC, Id DESC LIMIT 25",
        if named { ", Name" } else { "" },
        o.name
    );
    let recent = crate::soql::parse(&soql)
        .map_err(|e| SfError::new(500, "UNKNOWN_EXCEPTION", e.to_string()))
        .and_then(|q| org.query(&q, false, v));
    match recent {
        Ok(crate::org::QueryResult::Rows(rows)) => Json(json!({
            "objectDescribe": crate::schema::global_entry(o, v),
            "recentItems": rows,
        }))
        .into_response(),
        Ok(crate::org::QueryResult::Count(_)) => err(SfError::new(
            500,
            "UNKNOWN_EXCEPTION",
            "recent items query answered a count",
        )),
        Err(e) => err(e),
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct RecentParams {
    limit: Option<usize>,
}

/// `GET /recent[?limit=]`: the most recently modified live records of every object (an org
/// lists those the user viewed last), newest first, up to `limit` (at most 200, the default).
pub(crate) async fn recent(
    State(sb): State<St>,
    Path(v): Path<String>,
    Q(p): Q<RecentParams>,
) -> Response {
    let v = match version_ok(&v) {
        Ok(v) => v,
        Err(e) => return err(e),
    };
    sb.count("recent");
    let limit = p.limit.unwrap_or(200).min(200);
    let org = sb.org.lock().expect("lock");
    let mut all: Vec<(String, J)> = Vec::new();
    for o in org.objects() {
        let named = o.field("Name").is_some();
        let soql = format!(
            "SELECT Id, LastModifiedDate{} FROM {} ORDER BY LastModifiedDate DESC LIMIT {limit}",
            if named { ", Name" } else { "" },
            o.name
        );
        let Ok(q) = crate::soql::parse(&soql) else {
            continue;
        };
        if let Ok(crate::org::QueryResult::Rows(rows)) = org.query(&q, false, v) {
            for mut r in rows {
                let stamp = r
                    .as_object_mut()
                    .and_then(|m| m.remove("LastModifiedDate"))
                    .and_then(|s| s.as_str().map(str::to_string))
                    .unwrap_or_default();
                all.push((stamp, r));
            }
        }
    }
    // ISO stamps of one format sort as text; newest first, ties by id.
    all.sort_by(|a, b| {
        b.0.cmp(&a.0)
            .then_with(|| b.1["Id"].as_str().cmp(&a.1["Id"].as_str()))
    });
    all.truncate(limit);
    Json(J::Array(all.into_iter().map(|(_, r)| r).collect())).into_response()
}

pub(crate) async fn create(
    State(sb): State<St>,
    Path((v, s)): Path<(String, String)>,
    Json(body): Json<J>,
) -> Response {
    let v = match version_ok(&v) {
        Ok(v) => v.to_string(),
        Err(e) => return err(e),
    };
    sb.count("sobject.create");
    let Some(fields) = body.as_object() else {
        return err(SfError::new(
            400,
            "JSON_PARSER_ERROR",
            "The request body must be a JSON object",
        ));
    };
    match sb.org.lock().expect("lock").create(&s, fields) {
        Ok(id) => (
            StatusCode::CREATED,
            [("location", format!("/services/data/v{v}/sobjects/{s}/{id}"))],
            Json(json!({"id": id, "success": true, "errors": []})),
        )
            .into_response(),
        Err(e) => err(e),
    }
}

#[derive(serde::Deserialize)]
pub(crate) struct FieldsParam {
    fields: Option<String>,
}

pub(crate) async fn retrieve(
    State(sb): State<St>,
    Path((v, s, id)): Path<(String, String, String)>,
    Q(p): Q<FieldsParam>,
) -> Response {
    let v = match version_ok(&v) {
        Ok(v) => v,
        Err(e) => return err(e),
    };
    sb.count("sobject.retrieve");
    record_response(&sb, v, &s, &id, p)
}

/// `GET /sobjects/{S}/{extIdField}/{value}`: the record whose external id is `value`, as
/// retrieve answers it (`fields` too); several records sharing it answer 300 with their URLs.
pub(crate) async fn retrieve_by_external_id(
    State(sb): State<St>,
    Path((v, s, field, value)): Path<(String, String, String, String)>,
    Q(p): Q<FieldsParam>,
) -> Response {
    let v = match version_ok(&v) {
        Ok(v) => v,
        Err(e) => return err(e),
    };
    sb.count("sobject.retrieve");
    let found = sb
        .org
        .lock()
        .expect("lock")
        .one_by_external_id(&s, &field, &value);
    match found {
        Ok(id) => record_response(&sb, v, &s, &id, p),
        Err(e) => external_id_error(v, &s, e),
    }
}

/// `DELETE /sobjects/{S}/{extIdField}/{value}`: deletes the record whose external id is
/// `value` (204); several records sharing it answer 300 and nothing is deleted.
pub(crate) async fn destroy_by_external_id(
    State(sb): State<St>,
    Path((v, s, field, value)): Path<(String, String, String, String)>,
) -> Response {
    let v = match version_ok(&v) {
        Ok(v) => v,
        Err(e) => return err(e),
    };
    sb.count("sobject.delete");
    let mut org = sb.org.lock().expect("lock");
    match org
        .one_by_external_id(&s, &field, &value)
        .and_then(|id| org.delete(&s, &id))
    {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => external_id_error(v, &s, e),
    }
}

/// An external id lookup's error: MULTIPLE_CHOICES is a 300 listing the records' URLs.
fn external_id_error(v: &str, s: &str, e: SfError) -> Response {
    if e.status != 300 {
        return err(e);
    }
    let urls: Vec<String> = e
        .fields
        .iter()
        .map(|id| format!("/services/data/v{v}/sobjects/{s}/{id}"))
        .collect();
    (StatusCode::MULTIPLE_CHOICES, Json(json!(urls))).into_response()
}

/// The record `id` of `s` as retrieve answers it: every field, or those `p` lists.
fn record_response(sb: &Sandbox, v: &str, s: &str, id: &str, p: FieldsParam) -> Response {
    let org = sb.org.lock().expect("lock");
    let o = match org.object(s) {
        Ok(o) => o,
        Err(e) => return err(e),
    };
    let rec = match org.get(s, id) {
        Ok(r) => r,
        Err(e) => return err(e),
    };
    let names: Option<Vec<&str>> = p.fields.as_deref().map(|l| l.split(',').collect());
    match render_record(o, rec, v, names.as_deref()) {
        Ok(j) => Json(j).into_response(),
        Err(e) => err(e),
    }
}

/// A record as the REST API answers it: `attributes` then every field of `o`, or only the
/// `fields` named (case-insensitively, in their order; blanks skipped; an unknown one is
/// INVALID_FIELD).
pub(crate) fn render_record(
    o: &crate::schema::ObjectDef,
    rec: &crate::org::Rec,
    v: &str,
    fields: Option<&[&str]>,
) -> Result<J, SfError> {
    let mut out = Map::new();
    out.insert(
        "attributes".into(),
        json!({"type": o.name, "url": format!("/services/data/v{v}/sobjects/{}/{}", o.name, rec.fields["Id"].as_str().unwrap_or(""))}),
    );
    let value = |name: &str| rec.fields.get(name).cloned().unwrap_or(J::Null);
    match fields {
        Some(list) => {
            for name in list.iter().map(|n| n.trim()).filter(|n| !n.is_empty()) {
                let f = o.field(name).ok_or_else(|| {
                    SfError::new(
                        400,
                        "INVALID_FIELD",
                        format!("No such column '{name}' on sobject of type {}", o.name),
                    )
                })?;
                out.insert(f.name.clone(), value(&f.name));
            }
        }
        None => {
            for f in &o.fields {
                out.insert(f.name.clone(), value(&f.name));
            }
        }
    }
    Ok(J::Object(out))
}

/// `If-Unmodified-Since` (an HTTP date, second precision): the record's LastModifiedDate, to
/// the second, must not be later. Malformed: 400, as an org answers.
pub(crate) fn unmodified_since(h: &HeaderMap) -> Result<Option<i64>, SfError> {
    let Some(v) = h.get("if-unmodified-since") else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|s| chrono::DateTime::parse_from_rfc2822(s.trim()).ok())
        .map(|d| Some(d.timestamp()))
        .ok_or_else(|| {
            SfError::new(
                400,
                "INVALID_HEADER_VALUE",
                "If-Unmodified-Since must be an HTTP date (EEE, dd MMM yyyy HH:mm:ss z)",
            )
        })
}

pub(crate) async fn update(
    State(sb): State<St>,
    Path((v, s, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    Json(body): Json<J>,
) -> Response {
    if let Err(e) = version_ok(&v) {
        return err(e);
    }
    sb.count("sobject.update");
    let Some(fields) = body.as_object() else {
        return err(SfError::new(
            400,
            "JSON_PARSER_ERROR",
            "The request body must be a JSON object",
        ));
    };
    let since = match unmodified_since(&headers) {
        Ok(s) => s,
        Err(e) => return err(e),
    };
    let mut org = sb.org.lock().expect("lock");
    if let Some(since) = since {
        let modified = match org.get(&s, &id) {
            Ok(r) => r
                .fields
                .get("LastModifiedDate")
                .and_then(J::as_str)
                .and_then(|t| Timestamp::parse(t).ok())
                .map(|t| t.millis().div_euclid(1000)),
            Err(e) => return err(e),
        };
        if modified.is_some_and(|m| m > since) {
            return err(SfError::new(
                412,
                "PRECONDITION_FAILED",
                "The record was modified after the date given in If-Unmodified-Since",
            ));
        }
    }
    match org.update(&s, &id, fields) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => err(e),
    }
}

pub(crate) async fn destroy(
    State(sb): State<St>,
    Path((v, s, id)): Path<(String, String, String)>,
) -> Response {
    if let Err(e) = version_ok(&v) {
        return err(e);
    }
    sb.count("sobject.delete");
    match sb.org.lock().expect("lock").delete(&s, &id) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => err(e),
    }
}

pub(crate) async fn upsert(
    State(sb): State<St>,
    Path((v, s, field, value)): Path<(String, String, String, String)>,
    Json(body): Json<J>,
) -> Response {
    let v = match version_ok(&v) {
        Ok(v) => v,
        Err(e) => return err(e),
    };
    sb.count("sobject.upsert");
    let Some(fields) = body.as_object() else {
        return err(SfError::new(
            400,
            "JSON_PARSER_ERROR",
            "The request body must be a JSON object",
        ));
    };
    match sb
        .org
        .lock()
        .expect("lock")
        .upsert(&s, &field, &value, fields)
    {
        Ok(Upserted::Created(id)) => (
            StatusCode::CREATED,
            Json(json!({"id": id, "success": true, "errors": [], "created": true})),
        )
            .into_response(),
        Ok(Upserted::Updated(id)) => (
            StatusCode::OK,
            Json(json!({"id": id, "success": true, "errors": [], "created": false})),
        )
            .into_response(),
        Err(e) => external_id_error(v, &s, e),
    }
}
