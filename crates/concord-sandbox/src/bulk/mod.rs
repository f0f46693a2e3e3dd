//! Bulk API 2.0: ingest jobs (`jobs/ingest`: create, one CSV upload, `UploadComplete`, the state
//! machine to `JobComplete` / `Failed`, successful / failed / unprocessed result CSVs) and query
//! jobs (`jobs/query`: CSV result pages with `Sforce-Locator` and `maxRecords`).
//!
//! Ingest rows are applied one by one with the same validation as the REST API; a row's error
//! never stops the others (Bulk API semantics: no allOrNone). An empty cell leaves the field as
//! it is, `#N/A` sets it to null, and a `Relationship.ExternalId__c` column resolves a lookup by
//! the parent's external id, as in Salesforce.

use crate::org::{QueryResult, SfError};
use crate::server::state::{err, version_ok, St};
use crate::soql;
use axum::body::Bytes;
use axum::extract::{Path, Query as Q, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use concord_model::model::Timestamp;
use serde_json::{json, Value as J};

pub(crate) mod jobs;
pub(crate) mod v1;

use jobs::*;
pub use jobs::{Jobs, MAX_UPLOAD};

/// Every handler's prologue: the API version in the path checked, the call counted.
fn enter(sb: &St, v: &str, counter: &str) -> Option<Response> {
    if let Err(e) = version_ok(v) {
        return Some(err(e));
    }
    sb.count(counter);
    None
}

fn not_found() -> Response {
    err(SfError::new(
        404,
        "NOT_FOUND",
        "The requested resource does not exist",
    ))
}

fn invalid_job(msg: impl Into<String>) -> Response {
    err(SfError::new(400, "INVALIDJOB", msg))
}

fn csv_body(header: Vec<String>, rows: impl Iterator<Item = Vec<String>>) -> Response {
    let mut w = csv_writer();
    let _ = w.write_record(&header);
    for r in rows {
        let _ = w.write_record(&r);
    }
    let body = w.into_inner().unwrap_or_default();
    (StatusCode::OK, [("content-type", "text/csv")], body).into_response()
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct IngestBody {
    object: String,
    operation: String,
    #[serde(rename = "externalIdFieldName", default)]
    external_id: Option<String>,
    #[serde(rename = "contentType", default)]
    content_type: Option<String>,
    #[serde(rename = "lineEnding", default)]
    line_ending: Option<String>,
    #[serde(rename = "columnDelimiter", default)]
    column_delimiter: Option<String>,
    #[serde(rename = "assignmentRuleId", default)]
    _assignment_rule_id: Option<String>,
}

pub(crate) fn next_id(sb: &St, prefix: &str) -> String {
    let mut n = sb.next_cursor.lock().expect("lock");
    *n += 1;
    crate::ids::mint(prefix, *n)
}

pub(super) async fn ingest_create(
    State(sb): State<St>,
    Path(v): Path<String>,
    body: Result<Json<IngestBody>, axum::extract::rejection::JsonRejection>,
) -> Response {
    let v = match version_ok(&v) {
        Ok(v) => v.to_string(),
        Err(e) => return err(e),
    };
    sb.count("bulk.ingest.create");
    let Json(body) = match body {
        Ok(b) => b,
        Err(e) => return invalid_job(format!("InvalidJob : {}", e.body_text())),
    };
    if !matches!(
        body.operation.as_str(),
        "insert" | "update" | "upsert" | "delete" | "hardDelete"
    ) {
        return invalid_job(format!(
            "InvalidJob : Invalid operation: {}",
            body.operation
        ));
    }
    if body.content_type.as_deref().is_some_and(|c| c != "CSV") {
        return invalid_job("InvalidJob : contentType must be CSV");
    }
    let crlf = match body.line_ending.as_deref() {
        None | Some("LF") => false,
        Some("CRLF") => true,
        Some(other) => return invalid_job(format!("InvalidJob : Invalid lineEnding: {other}")),
    };
    let Some(delim) = delimiter(body.column_delimiter.as_deref().unwrap_or("COMMA")) else {
        return invalid_job("InvalidJob : Invalid columnDelimiter");
    };
    let (object, user) = {
        let org = sb.org.lock().expect("lock");
        match org.object(&body.object) {
            Ok(o) => {
                if body.operation == "upsert" {
                    match body.external_id.as_deref() {
                        None | Some("") => {
                            return invalid_job("InvalidJob : External ID was blank for upsert")
                        }
                        Some(x) => {
                            if !o.field(x).is_some_and(|f| f.external_id || f.name == "Id") {
                                return invalid_job(format!(
                                    "InvalidJob : Field {x} is not an external id field of {}",
                                    o.name
                                ));
                            }
                        }
                    }
                }
                (o.name.clone(), org.user_id.clone())
            }
            Err(_) => {
                return invalid_job(format!(
                    "InvalidJob : Object type {} is not supported",
                    body.object
                ))
            }
        }
    };
    let id = next_id(&sb, "750");
    let job = IngestJob {
        id: id.clone(),
        object,
        operation: body.operation,
        external_id: body.external_id.filter(|_| true),
        delimiter: delim,
        crlf,
        api_version: v,
        created: crate::org::sf_datetime(Timestamp::now()),
        created_by: user,
        state: JobState::Open,
        in_progress_polls: 0,
        data: None,
        header: Vec::new(),
        ok: Vec::new(),
        failed: Vec::new(),
        unprocessed: Vec::new(),
        error_message: None,
        processing_ms: 0,
    };
    let info = job.info();
    let mut jobs = sb.bulk.lock().expect("lock");
    jobs.ingest.insert(id.clone(), job);
    jobs.order.push(id);
    Json(info).into_response()
}

pub(super) async fn ingest_upload(
    State(sb): State<St>,
    Path((v, id)): Path<(String, String)>,
    headers: HeaderMap,
    data: Bytes,
) -> Response {
    if let Some(refused) = enter(&sb, &v, "bulk.ingest.upload") {
        return refused;
    }
    let ct = headers
        .get("content-type")
        .and_then(|c| c.to_str().ok())
        .unwrap_or("");
    if !ct.starts_with("text/csv") {
        return err(SfError::new(
            400,
            "INVALIDJOB",
            "InvalidJob : Content-Type must be text/csv",
        ));
    }
    let mut jobs = sb.bulk.lock().expect("lock");
    let Some(job) = jobs.ingest.get_mut(&id) else {
        return not_found();
    };
    if job.state != JobState::Open {
        return err(SfError::new(
            409,
            "INVALIDJOBSTATE",
            format!("InvalidJobState : Job {id} is not open for uploads"),
        ));
    }
    if job.data.is_some() {
        return err(SfError::new(
            400,
            "INVALIDJOB",
            "InvalidJob : Only one data upload is allowed per job",
        ));
    }
    if data.len() > MAX_UPLOAD {
        return err(SfError::new(
            400,
            "INVALIDJOB",
            "InvalidJob : Upload exceeds 150 MB",
        ));
    }
    job.data = Some(data.to_vec());
    StatusCode::CREATED.into_response()
}

#[derive(serde::Deserialize)]
pub(super) struct StateBody {
    state: String,
}

pub(super) async fn ingest_patch(
    State(sb): State<St>,
    Path((v, id)): Path<(String, String)>,
    Json(body): Json<StateBody>,
) -> Response {
    if let Some(refused) = enter(&sb, &v, "bulk.ingest.state") {
        return refused;
    }
    let mut jobs = sb.bulk.lock().expect("lock");
    let Some(job) = jobs.ingest.get_mut(&id) else {
        return not_found();
    };
    match (body.state.as_str(), job.state) {
        ("UploadComplete", JobState::Open) => {
            if job.data.is_none() {
                return err(SfError::new(
                    400,
                    "INVALIDJOB",
                    "InvalidJob : No data was uploaded for this job",
                ));
            }
            job.state = JobState::UploadComplete;
            let reported = job.info();
            let mut org = sb.org.lock().expect("lock");
            job.process(&mut org);
            Json(reported).into_response()
        }
        ("Aborted", JobState::Open | JobState::UploadComplete) => {
            job.state = JobState::Aborted;
            if let Some(data) = job.data.take() {
                let mut rdr = csv::ReaderBuilder::new()
                    .delimiter(job.delimiter)
                    .from_reader(data.as_slice());
                job.header = rdr
                    .headers()
                    .map(|h| h.iter().map(str::to_string).collect())
                    .unwrap_or_default();
                job.unprocessed = rdr
                    .records()
                    .filter_map(Result::ok)
                    .map(|r| r.iter().map(str::to_string).collect())
                    .collect();
            }
            Json(job.info()).into_response()
        }
        (wanted, now) => err(SfError::new(
            400,
            "INVALIDJOBSTATE",
            format!(
                "InvalidJobState : Cannot change the state of a job from {} to {wanted}",
                now.name()
            ),
        )),
    }
}

pub(super) async fn ingest_info(
    State(sb): State<St>,
    Path((v, id)): Path<(String, String)>,
) -> Response {
    if let Some(refused) = enter(&sb, &v, "bulk.ingest.info") {
        return refused;
    }
    let mut jobs = sb.bulk.lock().expect("lock");
    let Some(job) = jobs.ingest.get_mut(&id) else {
        return not_found();
    };
    if job.in_progress_polls > 0 && matches!(job.state, JobState::JobComplete | JobState::Failed) {
        job.in_progress_polls -= 1;
        let mut j = job.info();
        j["state"] = json!("InProgress");
        return Json(j).into_response();
    }
    Json(job.info()).into_response()
}

pub(super) async fn ingest_delete(
    State(sb): State<St>,
    Path((v, id)): Path<(String, String)>,
) -> Response {
    if let Some(refused) = enter(&sb, &v, "bulk.ingest.delete") {
        return refused;
    }
    let mut jobs = sb.bulk.lock().expect("lock");
    match jobs.ingest.get(&id).map(|j| j.state) {
        None => not_found(),
        Some(JobState::Open) => err(SfError::new(
            400,
            "INVALIDJOBSTATE",
            "InvalidJobState : Only jobs in UploadComplete, JobComplete, Aborted or Failed state can be deleted",
        )),
        Some(_) => {
            jobs.ingest.remove(&id);
            jobs.order.retain(|j| j != &id);
            StatusCode::NO_CONTENT.into_response()
        }
    }
}

pub(super) async fn ingest_results(
    State(sb): State<St>,
    Path((v, id, kind)): Path<(String, String, String)>,
) -> Response {
    let kind = kind.trim_end_matches('/').to_string();
    if let Some(refused) = enter(&sb, &v, &format!("bulk.ingest.{kind}")) {
        return refused;
    }
    let jobs = sb.bulk.lock().expect("lock");
    let Some(job) = jobs.ingest.get(&id) else {
        return not_found();
    };
    let finished = matches!(
        job.state,
        JobState::JobComplete | JobState::Failed | JobState::Aborted
    ) && job.in_progress_polls == 0;
    if kind != "unprocessedrecords" && !finished {
        return err(SfError::new(
            400,
            "INVALIDJOBSTATE",
            "InvalidJobState : The job is not complete; results are not available yet",
        ));
    }
    let head = |a: &str, b: &str| {
        let mut h = vec![a.to_string(), b.to_string()];
        h.extend(job.header.iter().cloned());
        h
    };
    match kind.as_str() {
        "successfulResults" => csv_body(
            head("sf__Id", "sf__Created"),
            job.ok.iter().map(|(id, c, row)| {
                let mut r = vec![id.clone(), c.to_string()];
                r.extend(row.iter().cloned());
                r
            }),
        ),
        "failedResults" => csv_body(
            head("sf__Id", "sf__Error"),
            job.failed.iter().map(|(id, e, row)| {
                let mut r = vec![id.clone(), e.clone()];
                r.extend(row.iter().cloned());
                r
            }),
        ),
        "unprocessedrecords" => csv_body(job.header.clone(), job.unprocessed.iter().cloned()),
        _ => not_found(),
    }
}

/// `GET jobs/ingest` and `GET jobs/query`: every job of the kind, oldest first.
pub(super) async fn ingest_list(State(sb): State<St>, Path(v): Path<String>) -> Response {
    if let Some(refused) = enter(&sb, &v, "bulk.ingest.list") {
        return refused;
    }
    let jobs = sb.bulk.lock().expect("lock");
    let records: Vec<J> = jobs
        .order
        .iter()
        .filter_map(|id| jobs.ingest.get(id).map(IngestJob::info))
        .collect();
    Json(json!({"done": true, "records": records, "nextRecordsUrl": null})).into_response()
}

pub(super) async fn query_list(State(sb): State<St>, Path(v): Path<String>) -> Response {
    if let Some(refused) = enter(&sb, &v, "bulk.query.list") {
        return refused;
    }
    let jobs = sb.bulk.lock().expect("lock");
    let records: Vec<J> = jobs
        .order
        .iter()
        .filter_map(|id| jobs.query.get(id).map(|j| j.info.clone()))
        .collect();
    Json(json!({"done": true, "records": records, "nextRecordsUrl": null})).into_response()
}

pub(super) async fn query_delete(
    State(sb): State<St>,
    Path((v, id)): Path<(String, String)>,
) -> Response {
    if let Some(refused) = enter(&sb, &v, "bulk.query.delete") {
        return refused;
    }
    let mut jobs = sb.bulk.lock().expect("lock");
    if jobs.query.remove(&id).is_none() {
        return not_found();
    }
    jobs.order.retain(|j| j != &id);
    StatusCode::NO_CONTENT.into_response()
}

pub(super) async fn query_patch(
    State(sb): State<St>,
    Path((v, id)): Path<(String, String)>,
    Json(body): Json<StateBody>,
) -> Response {
    if let Some(refused) = enter(&sb, &v, "bulk.query.state") {
        return refused;
    }
    let jobs = sb.bulk.lock().expect("lock");
    let Some(job) = jobs.query.get(&id) else {
        return not_found();
    };
    // Query jobs run at creation, so they are complete before any abort can arrive.
    err(SfError::new(
        400,
        "INVALIDJOBSTATE",
        format!(
            "InvalidJobState : Cannot change the state of a job from {} to {}",
            job.info["state"].as_str().unwrap_or("JobComplete"),
            body.state
        ),
    ))
}

/// What Bulk API queries (1.0 and 2.0) do not take: aggregates and GROUP BY, child subqueries,
/// OFFSET, compound fields (their components are).
pub(crate) fn query_refusal(parsed: &soql::Query, org: &crate::org::Org) -> Option<&'static str> {
    if parsed.is_count() {
        Some("COUNT() is not supported by Bulk API query")
    } else if parsed.is_aggregate() {
        Some("Aggregate queries (GROUP BY, aggregate and date functions) are not supported by Bulk API query")
    } else if parsed
        .select
        .iter()
        .any(|s| matches!(s, soql::SelectItem::Subquery(_)))
    {
        Some("Aggregate Relationships not supported in Bulk Query")
    } else if parsed.offset.is_some() {
        Some("OFFSET is not supported by Bulk API query")
    } else {
        org.object(&parsed.object).ok().and_then(|o| {
            parsed.select.iter().find_map(|s| match s {
                soql::SelectItem::Field(p) if p.len() == 1 => o
                    .field(&p[0])
                    .filter(|f| f.ty == crate::schema::FieldType::Address)
                    .map(|_| "Selecting compound data not supported in Bulk Query"),
                _ => None,
            })
        })
    }
}

#[derive(serde::Deserialize)]
pub(super) struct BulkQueryBody {
    operation: String,
    query: String,
    #[serde(rename = "contentType", default)]
    content_type: Option<String>,
}

/// The value at a field path of a rendered query row (`Account.Name`).
fn path_value<'a>(row: &'a J, path: &[String]) -> Option<&'a J> {
    let mut cur = row;
    for p in path {
        cur = cur.get(p.as_str())?;
    }
    Some(cur)
}

/// A query row's CSV cell at a field path: empty for null or absent, text as is, other
/// values in JSON form.
pub(crate) fn csv_cell(row: &J, path: &[String]) -> String {
    match path_value(row, path) {
        None | Some(J::Null) => String::new(),
        Some(J::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    }
}

/// `Account.Name` → `["Account", "Name"]`, for each column.
pub(crate) fn column_paths(columns: &[String]) -> Vec<Vec<String>> {
    columns
        .iter()
        .map(|c| c.split('.').map(str::to_string).collect())
        .collect()
}

/// The select list's field paths (`Account.Name`): a bulk query's CSV columns.
pub(crate) fn select_columns(q: &soql::Query) -> Vec<String> {
    q.select
        .iter()
        .filter_map(|s| match s {
            soql::SelectItem::Field(p) => Some(p.join(".")),
            _ => None,
        })
        .collect()
}

pub(super) async fn query_create(
    State(sb): State<St>,
    Path(v): Path<String>,
    Json(body): Json<BulkQueryBody>,
) -> Response {
    let v = match version_ok(&v) {
        Ok(v) => v.to_string(),
        Err(e) => return err(e),
    };
    sb.count("bulk.query.create");
    if !matches!(body.operation.as_str(), "query" | "queryAll")
        || body.content_type.as_deref().is_some_and(|c| c != "CSV")
    {
        return err(SfError::new(
            400,
            "INVALIDJOB",
            "operation must be query or queryAll, contentType CSV",
        ));
    }
    let parsed = match soql::parse(&body.query) {
        Ok(p) => p,
        Err(e) => {
            return err(SfError::new(
                400,
                "INVALIDJOB",
                format!("MALFORMED_QUERY: {}", e.message),
            ))
        }
    };
    if parsed.is_count() {
        return err(SfError::new(
            400,
            "INVALIDJOB",
            "COUNT() is not supported by Bulk API query",
        ));
    }
    let unsupported = query_refusal(&parsed, &sb.org.lock().expect("lock"));
    if let Some(why) = unsupported {
        return err(SfError::new(400, "API_ERROR", why));
    }
    let rows = match sb
        .org
        .lock()
        .expect("lock")
        .query(&parsed, body.operation == "queryAll", &v)
    {
        Ok(QueryResult::Rows(r)) => r,
        Ok(QueryResult::Count(_)) => Vec::new(),
        Err(e) => return err(e),
    };
    let columns = select_columns(&parsed);
    let id = {
        let mut n = sb.next_cursor.lock().expect("lock");
        *n += 1;
        crate::ids::mint("750", *n)
    };
    let info = json!({
        "id": id, "operation": body.operation, "object": parsed.object, "createdById": sb.org.lock().expect("lock").user_id,
        "createdDate": crate::org::sf_datetime(Timestamp::now()), "state": "JobComplete", "concurrencyMode": "Parallel",
        "contentType": "CSV", "apiVersion": v.parse::<f64>().unwrap_or(59.0), "lineEnding": "LF", "columnDelimiter": "COMMA",
        "numberRecordsProcessed": rows.len(), "retries": 0, "totalProcessingTime": 0,
    });
    let mut jobs = sb.bulk.lock().expect("lock");
    jobs.query.insert(
        id.clone(),
        QueryJob {
            info: info.clone(),
            columns,
            rows,
        },
    );
    jobs.order.push(id);
    let mut created = info;
    created["state"] = json!("UploadComplete");
    Json(created).into_response()
}

pub(super) async fn query_info(
    State(sb): State<St>,
    Path((v, id)): Path<(String, String)>,
) -> Response {
    if let Some(refused) = enter(&sb, &v, "bulk.query.info") {
        return refused;
    }
    match sb.bulk.lock().expect("lock").query.get(&id) {
        Some(j) => Json(j.info.clone()).into_response(),
        None => err(SfError::new(
            404,
            "NOT_FOUND",
            "The requested resource does not exist",
        )),
    }
}

#[derive(serde::Deserialize)]
pub(super) struct ResultsParams {
    locator: Option<String>,
    #[serde(rename = "maxRecords")]
    max_records: Option<usize>,
}

pub(super) async fn query_results(
    State(sb): State<St>,
    Path((v, id)): Path<(String, String)>,
    Q(p): Q<ResultsParams>,
) -> Response {
    if let Some(refused) = enter(&sb, &v, "bulk.query.results") {
        return refused;
    }
    let jobs = sb.bulk.lock().expect("lock");
    let Some(job) = jobs.query.get(&id) else {
        return not_found();
    };
    let start: usize = match p.locator.as_deref() {
        None | Some("") => 0,
        Some(l) => match l.parse() {
            Ok(n) => n,
            Err(_) => return err(SfError::new(400, "INVALIDLOCATOR", "invalid locator")),
        },
    };
    let max = p.max_records.unwrap_or(50_000).max(1);
    let end = (start + max).min(job.rows.len());
    let mut w = csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(Vec::new());
    let _ = w.write_record(&job.columns);
    let paths = column_paths(&job.columns);
    for row in &job.rows[start.min(end)..end] {
        let _ = w.write_record(paths.iter().map(|p| csv_cell(row, p)));
    }
    let body = w.into_inner().unwrap_or_default();
    let locator = if end < job.rows.len() {
        end.to_string()
    } else {
        "null".into()
    };
    (
        StatusCode::OK,
        [
            ("content-type", "text/csv".to_string()),
            ("sforce-locator", locator),
            ("sforce-numberofrecords", (end - start.min(end)).to_string()),
        ],
        body,
    )
        .into_response()
}
