//! sObject Collections: create, update, upsert and delete of up to 200 records, `allOrNone`.

use super::state::*;
use crate::org::{Org, SfError, Upserted};
use axum::extract::{Path, Query as Q, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value as J};

/// One collection result in Salesforce's form: a SaveResult, or for an upsert an UpsertResult,
/// which carries `created` whether it succeeded or not (`false` when it failed).
pub(crate) fn collection_result(r: Result<(String, Option<bool>), SfError>, upsert: bool) -> J {
    let mut j = match r {
        Ok((id, created)) => {
            let mut j = json!({"id": id, "success": true, "errors": []});
            if let Some(c) = created {
                j["created"] = json!(c);
            }
            j
        }
        Err(e) => json!({
            "id": null,
            "success": false,
            "errors": [{"statusCode": e.code, "message": e.message, "fields": e.fields}],
        }),
    };
    if upsert && j.get("created").is_none() {
        j["created"] = json!(false);
    }
    j
}

/// Takes the record id out of a collection record: field names are case-insensitive, and the
/// documented form of an sObject Collections update is the lowercase `id` (jsforce sends it).
fn take_id(fields: &mut serde_json::Map<String, J>) -> Option<J> {
    let name = fields
        .keys()
        .find(|k| k.eq_ignore_ascii_case("Id"))?
        .clone();
    fields.remove(&name)
}

#[derive(serde::Deserialize)]
pub(crate) struct CollectionBody {
    #[serde(rename = "allOrNone", default)]
    all_or_none: bool,
    records: Vec<J>,
}

pub(crate) const ROLLED_BACK: &str = "Record rolled back because not all records were valid and the request was using AllOrNone header";

/// Runs `f` on each record under one org lock; with allOrNone, any failure restores the org
/// and turns the successes into ALL_OR_NONE_OPERATION_ROLLED_BACK.
pub(crate) fn collection(
    sb: &Sandbox,
    all_or_none: bool,
    upsert: bool,
    n: usize,
    mut f: impl FnMut(&mut Org, usize) -> Result<(String, Option<bool>), SfError>,
) -> Response {
    if n > 200 {
        return err(SfError::new(
            400,
            "EXCEEDED_ID_LIMIT",
            "record limit reached. cannot submit more than 200 records into this call",
        ));
    }
    let mut org = sb.org.lock().expect("lock");
    let before = if all_or_none { Some(org.clone()) } else { None };
    let results: Vec<Result<(String, Option<bool>), SfError>> =
        (0..n).map(|i| f(&mut org, i)).collect();
    let failed = results.iter().any(|r| r.is_err());
    let out: Vec<J> = if failed && all_or_none {
        *org = before.expect("kept for allOrNone");
        results
            .into_iter()
            .map(|r| match r {
                Ok(_) => collection_result(
                    Err(SfError::new(
                        400,
                        "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                        ROLLED_BACK,
                    )),
                    upsert,
                ),
                Err(e) => collection_result(Err(e), upsert),
            })
            .collect()
    } else {
        results
            .into_iter()
            .map(|r| collection_result(r, upsert))
            .collect()
    };
    Json(J::Array(out)).into_response()
}

pub(crate) fn record_type(r: &J) -> Result<String, SfError> {
    r.get("attributes")
        .and_then(|a| a.get("type"))
        .and_then(J::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            SfError::new(
                400,
                "INVALID_TYPE",
                "Must specify a type in the attributes of every record",
            )
        })
}

pub(crate) async fn collection_create(
    State(sb): State<St>,
    Path(v): Path<String>,
    Json(body): Json<CollectionBody>,
) -> Response {
    if let Err(e) = version_ok(&v) {
        return err(e);
    }
    sb.count("composite.sobjects.create");
    let recs = body.records;
    collection(&sb, body.all_or_none, false, recs.len(), |org, i| {
        let ty = record_type(&recs[i])?;
        let fields = recs[i].as_object().cloned().unwrap_or_default();
        if fields.keys().any(|k| k.eq_ignore_ascii_case("Id")) {
            return Err(SfError::new(
                400,
                "INVALID_FIELD",
                "cannot specify Id in an insert call",
            ));
        }
        org.create(&ty, &fields).map(|id| (id, None))
    })
}

pub(crate) async fn collection_update(
    State(sb): State<St>,
    Path(v): Path<String>,
    Json(body): Json<CollectionBody>,
) -> Response {
    if let Err(e) = version_ok(&v) {
        return err(e);
    }
    sb.count("composite.sobjects.update");
    let recs = body.records;
    collection(&sb, body.all_or_none, false, recs.len(), |org, i| {
        let ty = record_type(&recs[i])?;
        let mut fields = recs[i].as_object().cloned().unwrap_or_default();
        let id = take_id(&mut fields)
            .and_then(|j| j.as_str().map(str::to_string))
            .ok_or_else(|| {
                SfError::new(
                    400,
                    "MISSING_ARGUMENT",
                    "Id not specified in an update call",
                )
            })?;
        org.update(&ty, &id, &fields)
            .map(|_| (crate::ids::to18(&id).unwrap_or(id), None))
    })
}

pub(crate) async fn collection_upsert(
    State(sb): State<St>,
    Path((v, s, field)): Path<(String, String, String)>,
    Json(body): Json<CollectionBody>,
) -> Response {
    if let Err(e) = version_ok(&v) {
        return err(e);
    }
    sb.count("composite.sobjects.upsert");
    let recs = body.records;
    collection(&sb, body.all_or_none, true, recs.len(), |org, i| {
        let mut fields = recs[i].as_object().cloned().unwrap_or_default();
        let key = match fields.remove(&field) {
            Some(J::String(k)) => k,
            Some(other) if !other.is_null() => other.to_string(),
            _ => {
                return Err(SfError::new(
                    400,
                    "MISSING_ARGUMENT",
                    format!("{field} not specified"),
                ));
            }
        };
        match org.upsert(&s, &field, &key, &fields) {
            Ok(Upserted::Created(id)) => Ok((id, Some(true))),
            Ok(Upserted::Updated(id)) => Ok((id, Some(false))),
            Err(e) if e.status == 300 => Err(SfError::new(300, "DUPLICATE_EXTERNAL_ID", e.message)),
            Err(e) => Err(e),
        }
    })
}

#[derive(serde::Deserialize)]
pub(crate) struct DeleteParams {
    ids: String,
    #[serde(rename = "allOrNone", default)]
    all_or_none: bool,
}

pub(crate) async fn collection_delete(
    State(sb): State<St>,
    Path(v): Path<String>,
    Q(p): Q<DeleteParams>,
) -> Response {
    if let Err(e) = version_ok(&v) {
        return err(e);
    }
    sb.count("composite.sobjects.delete");
    let ids: Vec<String> = p
        .ids
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    collection(&sb, p.all_or_none, false, ids.len(), |org, i| {
        let prefix = crate::ids::prefix(&ids[i]).unwrap_or("");
        let object = org
            .objects()
            .iter()
            .find(|o| o.prefix() == prefix)
            .map(|o| o.name.clone())
            .ok_or_else(|| SfError::new(400, "MALFORMED_ID", format!("malformed id {}", ids[i])))?;
        org.delete(&object, &ids[i])
            .map(|_| (crate::ids::to18(&ids[i]).unwrap_or_default(), None))
    })
}

/// The most records one sObject Collections retrieve returns (the POST form's documented
/// limit; the GET form meets the URL length first, at about 800 ids).
const RETRIEVE_LIMIT: usize = 2000;

#[derive(serde::Deserialize)]
pub(crate) struct RetrieveParams {
    ids: Option<String>,
    fields: Option<String>,
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RetrieveBody {
    ids: Vec<String>,
    fields: Vec<String>,
}

/// `GET …/composite/sobjects/{S}?ids=&fields=`: the records of `S`, in the order of `ids`.
pub(crate) async fn collection_retrieve(
    State(sb): State<St>,
    Path((v, s)): Path<(String, String)>,
    Q(p): Q<RetrieveParams>,
) -> Response {
    let list = |x: &Option<String>| -> Vec<String> {
        x.as_deref()
            .unwrap_or("")
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect()
    };
    retrieve_many(&sb, &v, &s, &list(&p.ids), &list(&p.fields))
}

/// `POST …/composite/sobjects/{S}` with `{"ids": [...], "fields": [...]}`: as the GET form,
/// for more ids than a URL holds.
pub(crate) async fn collection_retrieve_post(
    State(sb): State<St>,
    Path((v, s)): Path<(String, String)>,
    Json(body): Json<RetrieveBody>,
) -> Response {
    retrieve_many(&sb, &v, &s, &body.ids, &body.fields)
}

/// One record per id, in order: `null` where the id is malformed, of another object, unknown or
/// deleted (as an org answers ids the user cannot see); an unknown field fails the whole call
/// (400 INVALID_FIELD). Counts as one API call.
fn retrieve_many(sb: &Sandbox, v: &str, s: &str, ids: &[String], fields: &[String]) -> Response {
    let v = match version_ok(v) {
        Ok(v) => v,
        Err(e) => return err(e),
    };
    sb.count("composite.sobjects.retrieve");
    for (what, list) in [("ids", ids), ("fields", fields)] {
        if list.iter().all(|x| x.trim().is_empty()) {
            return err(SfError::new(
                400,
                "MISSING_ARGUMENT",
                format!("{what} is required: a list of one or more {what}"),
            ));
        }
    }
    if ids.len() > RETRIEVE_LIMIT {
        return err(SfError::new(
            400,
            "EXCEEDED_ID_LIMIT",
            format!("Maximum number of ids exceeded: {RETRIEVE_LIMIT}"),
        ));
    }
    let org = sb.org.lock().expect("lock");
    let o = match org.object(s) {
        Ok(o) => o,
        Err(e) => return err(e),
    };
    let names: Vec<&str> = fields.iter().map(String::as_str).collect();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        match org.get(&o.name, id.trim()) {
            Ok(rec) => match super::sobjects::render_record(o, rec, v, Some(&names)) {
                Ok(j) => out.push(j),
                Err(e) => return err(e),
            },
            Err(_) => out.push(J::Null),
        }
    }
    if out.iter().all(J::is_null) {
        // The fields are still checked when no record was found.
        if let Some(bad) = names
            .iter()
            .map(|n| n.trim())
            .find(|n| !n.is_empty() && o.field(n).is_none())
        {
            return err(SfError::new(
                400,
                "INVALID_FIELD",
                format!("No such column '{bad}' on sobject of type {}", o.name),
            ));
        }
    }
    Json(J::Array(out)).into_response()
}
