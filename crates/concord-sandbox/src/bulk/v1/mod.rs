//! Bulk API 1.0 (`/services/async/NN.N/…`), what Data Loader, jsforce's `bulk` and
//! simple-salesforce's `bulk` use: jobs (`insert`, `update`, `upsert`, `delete`, `hardDelete`,
//! `query`, `queryAll`) in CSV, JSON or XML, batches added to an open job and processed as they
//! arrive, batch state (`Queued` → `Completed` / `Failed` / `NotProcessed`), per-record results
//! in the job's format, query result files, PK chunking (`Sforce-Enable-PKChunking`), and
//! errors as `<error><exceptionCode>…` (or JSON). The session comes in `X-SFDC-Session` (a
//! bearer `Authorization` header is taken too); the API guard checks it, the version (a retired
//! one answers 400 `InvalidVersion`) and the daily limit as for REST calls.

pub(crate) mod format;
pub(crate) mod jobs;
pub(crate) mod xml;

use crate::bulk::next_id;
use crate::server::state::St;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use concord_model::model::Timestamp;
use format::Format;
use jobs::*;
use serde_json::Value as J;

pub use jobs::Store;

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("")
}

/// Whether the request asks for JSON answers (its Content-Type or Accept), else XML; a request
/// that says neither gets its job's format when that is JSON.
fn answer_format(h: &HeaderMap, job: Option<Format>) -> Format {
    let ct = header(h, "content-type");
    let accept = header(h, "accept");
    if ct.starts_with("application/json")
        || accept.starts_with("application/json")
        || (ct.is_empty() && job == Some(Format::Json))
    {
        Format::Json
    } else {
        Format::Xml
    }
}

/// Whether a refused request (answered before any handler) gets JSON: its Content-Type or
/// Accept says so.
pub(crate) fn wants_json(h: &HeaderMap) -> bool {
    answer_format(h, None) == Format::Json
}

/// A Bulk API 1.0 error answer.
pub(crate) fn refusal(status: u16, code: &str, message: &str, json: bool) -> Response {
    format::error(status, code, message, json)
}

fn now(sb: &St) -> String {
    let offset = sb.org.lock().expect("lock").clock_offset_ms;
    chrono::DateTime::from_timestamp_millis(Timestamp::now().millis() + offset)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

fn answer(status: StatusCode, f: Format, root: &str, fields: &[(&'static str, J)]) -> Response {
    let f = if f == Format::Csv { Format::Xml } else { f };
    format::body(status, f, format::info(root, fields, f))
}

pub(crate) async fn job_create(
    State(sb): State<St>,
    Path(v): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    sb.count("bulk.v1.job.create");
    let json_body = Format::Json.accepts(header(&headers, "content-type"));
    let out = answer_format(&headers, None);
    let bad = |code: &str, msg: String| refusal(400, code, &msg, out == Format::Json);
    let m = match format::read_job_body(&body, json_body) {
        Ok(m) => m,
        Err(e) if json_body => return bad("InvalidJob", e),
        Err(e) => return bad("InvalidXML", e),
    };
    let text = |k: &str| -> Option<String> {
        m.get(k).and_then(|v| match v {
            J::String(s) => Some(s.trim().to_string()),
            J::Number(n) => Some(n.to_string()),
            _ => None,
        })
    };
    const KNOWN: [&str; 7] = [
        "operation",
        "object",
        "externalIdFieldName",
        "concurrencyMode",
        "contentType",
        "assignmentRuleId",
        "numberRetries",
    ];
    if let Some(k) = m.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return bad("InvalidJob", format!("Unrecognized field in jobInfo: {k}"));
    }
    let operation = text("operation").unwrap_or_default();
    if !matches!(
        operation.as_str(),
        "insert" | "update" | "upsert" | "delete" | "hardDelete" | "query" | "queryAll"
    ) {
        return bad("InvalidJob", format!("Invalid operation: {operation}"));
    }
    let content = text("contentType").unwrap_or_else(|| "XML".into());
    let Some(fmt) = Format::parse(&content) else {
        let why = if content.starts_with("ZIP_") {
            format!("Content type {content} (binary attachments) is not supported by the sandbox")
        } else {
            format!("Invalid content type: {content}")
        };
        return bad("InvalidJob", why);
    };
    // simple-salesforce sends 0 and 1, the enumeration's ordinals; Salesforce takes them.
    let serial = match text("concurrencyMode").as_deref() {
        None | Some("Parallel") | Some("0") => false,
        Some("Serial") | Some("1") => true,
        Some(other) => return bad("InvalidJob", format!("Invalid concurrencyMode: {other}")),
    };
    let pk_header = header(&headers, "sforce-enable-pkchunking");
    let pk_chunking = match pk_header {
        "" => None,
        h => match PkChunking::parse(h) {
            Ok(p) => p,
            Err(e) => return bad("InvalidJob", e),
        },
    };
    let is_query = matches!(operation.as_str(), "query" | "queryAll");
    if pk_chunking.is_some() && !is_query {
        return bad(
            "InvalidJob",
            "PK chunking is only supported for query and queryAll jobs".into(),
        );
    }
    let object_name = text("object").unwrap_or_default();
    let external_id = text("externalIdFieldName").filter(|s| !s.is_empty());
    let (object, user) = {
        let org = sb.org.lock().expect("lock");
        let Ok(o) = org.object(&object_name) else {
            return bad(
                "InvalidJob",
                format!("Unable to find object: {object_name}"),
            );
        };
        if operation == "upsert" {
            match external_id.as_deref() {
                None => {
                    return bad(
                        "InvalidJob",
                        format!("External ID was blank for {}. An External ID must be specified for upsert.", o.name),
                    )
                }
                Some(x) if !o.field(x).is_some_and(|f| f.external_id || f.name == "Id") => {
                    return bad(
                        "InvalidJob",
                        format!("Field name provided, {x} is not an External ID or indexed field for {}", o.name),
                    )
                }
                Some(_) => {}
            }
        }
        (o.name.clone(), org.user_id.clone())
    };
    let id = next_id(&sb, "750");
    let at = now(&sb);
    let job = Job {
        id: id.clone(),
        object,
        operation,
        external_id: external_id.filter(|_| !is_query),
        serial,
        format: fmt,
        api_version: v,
        created: at.clone(),
        modstamp: at,
        created_by: user,
        state: JobState::Open,
        pk_chunking,
        batches: Vec::new(),
    };
    let mut all = sb.bulk.lock().expect("lock");
    let info = job_info(&job, &all.v1.batches);
    all.v1.jobs.insert(id, job);
    answer(StatusCode::CREATED, out, "jobInfo", &info)
}

/// The job, or the error answer for an unknown one.
macro_rules! job_or_refuse {
    ($store:expr, $id:expr, $headers:expr) => {
        match $store.jobs.get_mut(&$id) {
            Some(j) => j,
            None => {
                return refusal(
                    400,
                    "InvalidJob",
                    &format!("Invalid job id: {}", $id),
                    wants_json(&$headers),
                )
            }
        }
    };
}

pub(crate) async fn job_get(
    State(sb): State<St>,
    Path((_v, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    sb.count("bulk.v1.job.info");
    let mut all = sb.bulk.lock().expect("lock");
    let store = &mut all.v1;
    let job = job_or_refuse!(store, id, headers);
    let out = answer_format(&headers, Some(job.format));
    answer(
        StatusCode::OK,
        out,
        "jobInfo",
        &job_info(job, &store.batches),
    )
}

/// `POST job/{id}` with `state`: `Closed` (no more batches) or `Aborted` (batches not yet
/// processed become `NotProcessed`).
pub(crate) async fn job_state(
    State(sb): State<St>,
    Path((_v, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    sb.count("bulk.v1.job.state");
    let json_body = Format::Json.accepts(header(&headers, "content-type"));
    let at = now(&sb);
    let mut all = sb.bulk.lock().expect("lock");
    let store = &mut all.v1;
    let job = job_or_refuse!(store, id, headers);
    let out = answer_format(&headers, Some(job.format));
    let bad = |code: &str, msg: String| refusal(400, code, &msg, out == Format::Json);
    let m = match format::read_job_body(&body, json_body) {
        Ok(m) => m,
        Err(e) => {
            return bad(
                if json_body {
                    "InvalidJob"
                } else {
                    "InvalidXML"
                },
                e,
            )
        }
    };
    if let Some(k) = m.keys().find(|k| k.as_str() != "state") {
        return bad(
            "InvalidJob",
            format!("Only the state of a job can be changed, not {k}"),
        );
    }
    let wanted = m.get("state").and_then(J::as_str).unwrap_or("");
    match (wanted, job.state) {
        ("Closed", JobState::Open) => job.state = JobState::Closed,
        ("Aborted", JobState::Open | JobState::Closed) => {
            job.state = JobState::Aborted;
            for b in &job.batches {
                if let Some(b) = store.batches.get_mut(b) {
                    if matches!(b.state, BatchState::Queued | BatchState::InProgress) {
                        b.state = BatchState::NotProcessed;
                    }
                }
            }
        }
        ("Closed" | "Aborted", now) => {
            return bad(
                "InvalidJobState",
                format!(
                    "Cannot change the state of a job from {} to {wanted}",
                    now.name()
                ),
            )
        }
        _ => return bad("InvalidJob", format!("Invalid job state: {wanted}")),
    }
    job.modstamp = at;
    answer(
        StatusCode::OK,
        out,
        "jobInfo",
        &job_info(job, &store.batches),
    )
}

/// `POST job/{id}/batch`: a batch in the job's format (a query job's batch is its SOQL),
/// processed at once; the answer shows it `Queued`, as an org's does.
pub(crate) async fn batch_create(
    State(sb): State<St>,
    Path((_v, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    sb.count("bulk.v1.batch.create");
    let at = now(&sb);
    let mut all = sb.bulk.lock().expect("lock");
    let store = &mut all.v1;
    let job = job_or_refuse!(store, id, headers);
    let out = answer_format(&headers, Some(job.format));
    let json = out == Format::Json;
    if job.state != JobState::Open {
        return refusal(
            400,
            "InvalidJobState",
            &format!(
                "Job {} is {}: batches can be added to open jobs only",
                job.id,
                job.state.name()
            ),
            json,
        );
    }
    let ct = header(&headers, "content-type");
    if !job.format.accepts(ct) {
        return refusal(
            400,
            "InvalidBatch",
            &format!(
                "The batch's Content-Type ({ct}) is not the job's content type ({})",
                job.format.mime()
            ),
            json,
        );
    }
    if body.len() > MAX_BATCH_BYTES {
        return refusal(
            400,
            "ClientInputError",
            &format!("Failed to read request. Exceeded max size limit of {MAX_BATCH_BYTES}"),
            json,
        );
    }
    let batch_id = next_id(&sb, "751");
    sb.count("bulk.v1.batch");
    let mut batch = Batch::new(batch_id.clone(), job.id.clone(), &at, body.to_vec());
    let created_info = batch_info(&batch);
    let mut extra = Vec::new();
    {
        let mut org = sb.org.lock().expect("lock");
        if !job.is_query() {
            batch.process_records(job, &mut org);
        } else if let Some(pk) = job.pk_chunking.clone() {
            // The original batch is not processed: one batch per range of Ids is.
            batch.state = BatchState::NotProcessed;
            for (from, to) in pk_ranges(&org.ids(&job.object), &pk) {
                let mut chunk = Batch::new(next_id(&sb, "751"), job.id.clone(), &at, body.to_vec());
                sb.count("bulk.v1.batch");
                chunk.process_query(job, &org, Some((&from, to.as_deref())), next_id(&sb, "752"));
                extra.push(chunk);
            }
        } else {
            batch.process_query(job, &org, None, next_id(&sb, "752"));
        }
    }
    job.batches.push(batch_id.clone());
    job.modstamp = at;
    store.batches.insert(batch_id, batch);
    for b in extra {
        job.batches.push(b.id.clone());
        store.batches.insert(b.id.clone(), b);
    }
    answer(StatusCode::CREATED, out, "batchInfo", &created_info)
}

pub(crate) async fn batch_list(
    State(sb): State<St>,
    Path((_v, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    sb.count("bulk.v1.batch.list");
    let mut all = sb.bulk.lock().expect("lock");
    let store = &mut all.v1;
    let job = job_or_refuse!(store, id, headers);
    let out = answer_format(&headers, Some(job.format));
    let out = if out == Format::Csv { Format::Xml } else { out };
    let items: Vec<_> = job
        .batches
        .iter()
        .filter_map(|b| store.batches.get(b).map(batch_info))
        .collect();
    format::body(
        StatusCode::OK,
        out,
        format::info_list("batchInfoList", "batchInfo", &items, out),
    )
}

/// `f`'s answer for the batch of a job, or the error answer for an unknown job or batch.
fn with_batch(
    sb: &St,
    job_id: &str,
    batch_id: &str,
    headers: &HeaderMap,
    f: impl FnOnce(&Job, &Batch) -> Response,
) -> Response {
    let all = sb.bulk.lock().expect("lock");
    let json = wants_json(headers);
    let Some(job) = all.v1.jobs.get(job_id) else {
        return refusal(
            400,
            "InvalidJob",
            &format!("Invalid job id: {job_id}"),
            json,
        );
    };
    match all.v1.batches.get(batch_id).filter(|b| b.job_id == job.id) {
        Some(b) => f(job, b),
        None => refusal(
            400,
            "InvalidBatch",
            &format!("Invalid batch id: {batch_id}"),
            answer_format(headers, Some(job.format)) == Format::Json,
        ),
    }
}

pub(crate) async fn batch_get(
    State(sb): State<St>,
    Path((_v, job, batch)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    sb.count("bulk.v1.batch.info");
    with_batch(&sb, &job, &batch, &headers, |j, b| {
        answer(
            StatusCode::OK,
            answer_format(&headers, Some(j.format)),
            "batchInfo",
            &batch_info(b),
        )
    })
}

/// `GET …/batch/{id}/request`: the batch as it was uploaded.
pub(crate) async fn batch_request(
    State(sb): State<St>,
    Path((_v, job, batch)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    sb.count("bulk.v1.batch.request");
    with_batch(&sb, &job, &batch, &headers, |j, b| {
        let f = if j.is_query() { Format::Csv } else { j.format };
        let mut r = format::body(StatusCode::OK, f, b.request.clone());
        if j.is_query() {
            r.headers_mut().insert(
                "content-type",
                axum::http::HeaderValue::from_static("text/plain; charset=UTF-8"),
            );
        }
        r
    })
}

/// `GET …/batch/{id}/result`: a data batch's per-record results in the job's format, or a
/// query batch's result ids.
pub(crate) async fn batch_result(
    State(sb): State<St>,
    Path((_v, job, batch)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> Response {
    sb.count("bulk.v1.batch.result");
    with_batch(&sb, &job, &batch, &headers, |j, b| {
        let json = answer_format(&headers, Some(j.format)) == Format::Json;
        let done = b.state == BatchState::Completed
            || (b.state == BatchState::Failed && b.processed() > 0);
        if !done {
            return refusal(
                400,
                "InvalidBatch",
                &format!("Batch not completed: {} is {}", b.id, b.state.name()),
                json,
            );
        }
        if let Some(q) = &b.query {
            let (f, text) = format::result_list(j.format, &[q.result_id.as_str()]);
            return format::body(StatusCode::OK, f, text);
        }
        format::body(
            StatusCode::OK,
            j.format,
            format::results(j.format, &b.results),
        )
    })
}

/// `GET …/batch/{id}/result/{resultId}`: a query result file in the job's format.
pub(crate) async fn query_result(
    State(sb): State<St>,
    Path((_v, job, batch, result)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> Response {
    sb.count("bulk.v1.query.result");
    with_batch(&sb, &job, &batch, &headers, |j, b| {
        match b.query.as_ref().filter(|q| q.result_id == result) {
            Some(q) => {
                let org = sb.org.lock().expect("lock");
                format::body(
                    StatusCode::OK,
                    j.format,
                    format::query_result(j.format, q, &org),
                )
            }
            None => refusal(
                400,
                "InvalidBatch",
                &format!("Invalid result id: {result}"),
                answer_format(&headers, Some(j.format)) == Format::Json,
            ),
        }
    })
}

/// The error answer of a path under `/services/async` no route serves (404) or a method it
/// does not take (405).
pub(crate) fn unknown_url(status: u16, json: bool) -> Response {
    refusal(
        status,
        "InvalidUrl",
        "The requested resource does not exist",
        json,
    )
}
