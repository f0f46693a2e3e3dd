//! Bulk API 1.0 jobs and batches: what they hold, their states, and how a batch is processed
//! (records applied to the org, or a query run, PK-chunked when the job asks).

use super::format::{self, Format};
use crate::bulk::jobs::{apply_record, known_column};
use crate::org::{Org, QueryResult, SfError};
use crate::soql;
use serde_json::{json, Value as J};
use std::collections::HashMap;

/// Most records in one batch, and most bytes (Bulk API 1.0 limits).
pub const MAX_BATCH_RECORDS: usize = 10_000;
pub const MAX_BATCH_BYTES: usize = 10_000_000;
/// PK chunking: the default and the largest chunk.
pub const PK_CHUNK_DEFAULT: usize = 100_000;
pub const PK_CHUNK_MAX: usize = 250_000;

/// The Bulk API 1.0 jobs of a sandbox, and their batches.
#[derive(Default)]
pub struct Store {
    pub(crate) jobs: HashMap<String, Job>,
    pub(crate) batches: HashMap<String, Batch>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobState {
    Open,
    Closed,
    Aborted,
}

impl JobState {
    pub(crate) fn name(self) -> &'static str {
        match self {
            JobState::Open => "Open",
            JobState::Closed => "Closed",
            JobState::Aborted => "Aborted",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BatchState {
    Queued,
    InProgress,
    Completed,
    Failed,
    NotProcessed,
}

impl BatchState {
    pub(crate) fn name(self) -> &'static str {
        match self {
            BatchState::Queued => "Queued",
            BatchState::InProgress => "InProgress",
            BatchState::Completed => "Completed",
            BatchState::Failed => "Failed",
            BatchState::NotProcessed => "NotProcessed",
        }
    }
}

/// `Sforce-Enable-PKChunking`: query batches split by ranges of Id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PkChunking {
    pub(crate) size: usize,
    pub(crate) start_row: Option<String>,
}

impl PkChunking {
    /// `TRUE`, `true`, or `chunkSize=50000; startRow=001…` (the header's forms).
    pub(crate) fn parse(v: &str) -> Result<Option<PkChunking>, String> {
        let v = v.trim();
        if v.eq_ignore_ascii_case("false") {
            return Ok(None);
        }
        let mut pk = PkChunking {
            size: PK_CHUNK_DEFAULT,
            start_row: None,
        };
        if v.eq_ignore_ascii_case("true") {
            return Ok(Some(pk));
        }
        for part in v.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, val) = part
                .split_once('=')
                .ok_or_else(|| format!("Invalid Sforce-Enable-PKChunking value: {part}"))?;
            match k.trim() {
                "chunkSize" => {
                    pk.size = val
                        .trim()
                        .parse()
                        .ok()
                        .filter(|n| (1..=PK_CHUNK_MAX).contains(n))
                        .ok_or_else(|| {
                            format!("chunkSize must be a number from 1 to {PK_CHUNK_MAX}")
                        })?
                }
                "startRow" => pk.start_row = Some(val.trim().to_string()),
                // `parent=` names the object chunked for sharing objects: the sandbox has none.
                "parent" => {}
                other => return Err(format!("Unknown PK chunking option: {other}")),
            }
        }
        Ok(Some(pk))
    }
}

/// A job.
pub(crate) struct Job {
    pub(crate) id: String,
    pub(crate) object: String,
    pub(crate) operation: String,
    pub(crate) external_id: Option<String>,
    pub(crate) serial: bool,
    pub(crate) format: Format,
    pub(crate) api_version: String,
    pub(crate) created: String,
    pub(crate) modstamp: String,
    pub(crate) created_by: String,
    pub(crate) state: JobState,
    pub(crate) pk_chunking: Option<PkChunking>,
    /// Batch ids, in the order they were added.
    pub(crate) batches: Vec<String>,
}

impl Job {
    pub(crate) fn is_query(&self) -> bool {
        matches!(self.operation.as_str(), "query" | "queryAll")
    }
}

/// One record's outcome.
#[derive(Debug, Clone)]
pub(crate) struct RowResult {
    pub(crate) id: Option<String>,
    pub(crate) created: bool,
    pub(crate) error: Option<SfError>,
}

/// A query batch's result (one result file).
pub(crate) struct QueryOut {
    pub(crate) result_id: String,
    pub(crate) object: String,
    pub(crate) columns: Vec<String>,
    pub(crate) rows: Vec<J>,
}

/// A batch.
pub(crate) struct Batch {
    pub(crate) id: String,
    pub(crate) job_id: String,
    pub(crate) state: BatchState,
    pub(crate) state_message: Option<String>,
    pub(crate) created: String,
    pub(crate) modstamp: String,
    /// The request as uploaded (`GET …/request`).
    pub(crate) request: Vec<u8>,
    pub(crate) results: Vec<RowResult>,
    pub(crate) query: Option<QueryOut>,
    pub(crate) processing_ms: u64,
}

impl Batch {
    pub(crate) fn new(id: String, job_id: String, now: &str, request: Vec<u8>) -> Batch {
        Batch {
            id,
            job_id,
            state: BatchState::Queued,
            state_message: None,
            created: now.to_string(),
            modstamp: now.to_string(),
            request,
            results: Vec::new(),
            query: None,
            processing_ms: 0,
        }
    }

    pub(crate) fn processed(&self) -> usize {
        match &self.query {
            Some(q) => q.rows.len(),
            None => self.results.len(),
        }
    }

    pub(crate) fn failed(&self) -> usize {
        self.results.iter().filter(|r| r.error.is_some()).count()
    }

    fn fail(&mut self, msg: String) {
        self.state = BatchState::Failed;
        self.state_message = Some(msg);
    }

    /// Applies a data batch's records to the org: a batch-level problem (unparsable data, an
    /// unknown field, too many records) fails the batch and changes nothing; a record's error
    /// is that record's result and never stops the others.
    pub(crate) fn process_records(&mut self, job: &Job, org: &mut Org) {
        let started = std::time::Instant::now();
        let outcome = (|| -> Result<(), String> {
            let records = format::parse_records(job.format, &self.request)?;
            if records.len() > MAX_BATCH_RECORDS {
                return Err(format!(
                    "ClientInputError : Exceeded number of records : {}. Number of records should be less than or equal to {MAX_BATCH_RECORDS}",
                    records.len()
                ));
            }
            let o = org.object(&job.object).map_err(|e| e.message)?.clone();
            for rec in &records {
                if let Some(c) = rec.columns().find(|c| !known_column(org, &o, c)) {
                    return Err(format!("InvalidBatch : Field name not found : {c}"));
                }
            }
            if job.format == Format::Csv {
                let header = format::csv_header(&self.request);
                let has = |name: &str| header.iter().any(|h| h.eq_ignore_ascii_case(name));
                if matches!(job.operation.as_str(), "update" | "delete" | "hardDelete")
                    && !has("Id")
                {
                    return Err("InvalidBatch : Field name not found : Id".into());
                }
                if let Some(ext) = job
                    .external_id
                    .as_deref()
                    .filter(|_| job.operation == "upsert")
                {
                    if !has(ext) {
                        return Err(format!("InvalidBatch : Field name not found : {ext}"));
                    }
                }
            }
            for rec in records {
                let given = rec.id.clone();
                self.results.push(
                    match apply_record(
                        org,
                        &o.name,
                        &job.operation,
                        job.external_id.as_deref(),
                        rec,
                    ) {
                        Ok((id, created)) => RowResult {
                            id: Some(id),
                            created,
                            error: None,
                        },
                        Err(e) => RowResult {
                            id: given.filter(|_| job.operation != "insert"),
                            created: false,
                            error: Some(e),
                        },
                    },
                );
            }
            Ok(())
        })();
        match outcome {
            Ok(()) => self.state = BatchState::Completed,
            Err(msg) => {
                self.results.clear();
                self.fail(msg);
            }
        }
        self.processing_ms = started.elapsed().as_millis() as u64;
    }

    /// Runs a query batch (the request is the SOQL text), within `range` of Ids when the job
    /// is PK-chunked.
    pub(crate) fn process_query(
        &mut self,
        job: &Job,
        org: &Org,
        range: Option<(&str, Option<&str>)>,
        result_id: String,
    ) {
        let started = std::time::Instant::now();
        let soql_text = String::from_utf8_lossy(&self.request).trim().to_string();
        let outcome = (|| -> Result<QueryOut, String> {
            let mut q = soql::parse(&soql_text).map_err(|e| {
                format!(
                    "InvalidBatch : Failed to process query: MALFORMED_QUERY: {}",
                    e.message
                )
            })?;
            if let Some(why) = crate::bulk::query_refusal(&q, org) {
                return Err(format!("InvalidBatch : Failed to process query: {why}"));
            }
            let o = org
                .object(&q.object)
                .map_err(|e| format!("InvalidBatch : Failed to process query: {}", e.message))?;
            if !o.name.eq_ignore_ascii_case(&job.object) {
                return Err(format!(
                    "InvalidBatch : Failed to process query: the query's object {} is not the job's object {}",
                    o.name, job.object
                ));
            }
            let object = o.name.clone();
            if let Some((from, to)) = range {
                let cmp = |op, v: &str| soql::Cond::Cmp {
                    field: vec!["Id".into()],
                    func: None,
                    op,
                    value: soql::Literal::Str(v.to_string()),
                };
                let mut c = cmp(soql::CmpOp::Ge, from);
                if let Some(to) = to {
                    c = soql::Cond::And(Box::new(c), Box::new(cmp(soql::CmpOp::Lt, to)));
                }
                q.filter = Some(match q.filter.take() {
                    Some(f) => soql::Cond::And(Box::new(f), Box::new(c)),
                    None => c,
                });
            }
            let rows = match org
                .query(&q, job.operation == "queryAll", &job.api_version)
                .map_err(|e| format!("InvalidBatch : Failed to process query: {}", e.message))?
            {
                QueryResult::Rows(r) => r,
                QueryResult::Count(_) => Vec::new(),
            };
            let columns = crate::bulk::select_columns(&q);
            Ok(QueryOut {
                result_id,
                object,
                columns,
                rows,
            })
        })();
        match outcome {
            Ok(out) => {
                self.query = Some(out);
                self.state = BatchState::Completed;
            }
            Err(msg) => self.fail(msg),
        }
        self.processing_ms = started.elapsed().as_millis() as u64;
    }
}

/// The Id ranges PK chunking splits an object into: `[from, to)` of `size` records each (the
/// last open-ended), from `start_row` when given.
pub(crate) fn pk_ranges(ids: &[String], pk: &PkChunking) -> Vec<(String, Option<String>)> {
    let start = pk
        .start_row
        .as_deref()
        .map(|s| ids.partition_point(|i| i.as_str() < s))
        .unwrap_or(0);
    let ids = &ids[start..];
    let mut out = Vec::new();
    let mut i = 0;
    while i < ids.len() {
        let end = i + pk.size;
        out.push((ids[i].clone(), ids.get(end).cloned()));
        i = end;
    }
    if out.is_empty() {
        // An empty object still gets one (empty) chunk, as the job must have a batch to finish.
        out.push((pk.start_row.clone().unwrap_or_default(), None));
    }
    out
}

/// The job's info fields in Bulk API 1.0's order (rendered as XML or JSON).
pub(crate) fn job_info(job: &Job, batches: &HashMap<String, Batch>) -> Vec<(&'static str, J)> {
    let mine: Vec<&Batch> = job.batches.iter().filter_map(|b| batches.get(b)).collect();
    let n = |s: BatchState| mine.iter().filter(|b| b.state == s).count();
    let processed: usize = mine.iter().map(|b| b.processed()).sum();
    let failed: usize = mine.iter().map(|b| b.failed()).sum();
    let ms: u64 = mine.iter().map(|b| b.processing_ms).sum();
    vec![
        ("id", json!(job.id)),
        ("operation", json!(job.operation)),
        ("object", json!(job.object)),
        ("createdById", json!(job.created_by)),
        ("createdDate", json!(job.created)),
        ("systemModstamp", json!(job.modstamp)),
        ("state", json!(job.state.name())),
        ("externalIdFieldName", json!(job.external_id)),
        (
            "concurrencyMode",
            json!(if job.serial { "Serial" } else { "Parallel" }),
        ),
        ("contentType", json!(job.format.name())),
        ("numberBatchesQueued", json!(n(BatchState::Queued))),
        ("numberBatchesInProgress", json!(n(BatchState::InProgress))),
        ("numberBatchesCompleted", json!(n(BatchState::Completed))),
        ("numberBatchesFailed", json!(n(BatchState::Failed))),
        ("numberBatchesTotal", json!(mine.len())),
        ("numberRecordsProcessed", json!(processed)),
        ("numberRetries", json!(0)),
        (
            "apiVersion",
            json!(job.api_version.parse::<f64>().unwrap_or(0.0)),
        ),
        ("numberRecordsFailed", json!(failed)),
        ("totalProcessingTime", json!(ms)),
        ("apiActiveProcessingTime", json!(ms)),
        ("apexProcessingTime", json!(0)),
    ]
}

/// A batch's info fields in Bulk API 1.0's order.
pub(crate) fn batch_info(b: &Batch) -> Vec<(&'static str, J)> {
    let mut v = vec![
        ("id", json!(b.id)),
        ("jobId", json!(b.job_id)),
        ("state", json!(b.state.name())),
    ];
    if let Some(m) = &b.state_message {
        v.push(("stateMessage", json!(m)));
    }
    v.extend([
        ("createdDate", json!(b.created)),
        ("systemModstamp", json!(b.modstamp)),
        ("numberRecordsProcessed", json!(b.processed())),
        ("numberRecordsFailed", json!(b.failed())),
        ("totalProcessingTime", json!(b.processing_ms)),
        ("apiActiveProcessingTime", json!(b.processing_ms)),
        ("apexProcessingTime", json!(0)),
    ]);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pk_chunking_header_forms() {
        assert_eq!(
            PkChunking::parse("TRUE").unwrap(),
            Some(PkChunking {
                size: PK_CHUNK_DEFAULT,
                start_row: None
            })
        );
        assert_eq!(PkChunking::parse("false").unwrap(), None);
        let p = PkChunking::parse("chunkSize=3; startRow=001B")
            .unwrap()
            .unwrap();
        assert_eq!((p.size, p.start_row.as_deref()), (3, Some("001B")));
        assert!(PkChunking::parse("chunkSize=250001").is_err());
        assert!(PkChunking::parse("chunkSize=0").is_err());
        assert!(PkChunking::parse("size=5").is_err());
    }

    #[test]
    fn pk_ranges_cover_every_id_once() {
        let ids: Vec<String> = (0..7).map(|i| format!("001{i}")).collect();
        let pk = PkChunking {
            size: 3,
            start_row: None,
        };
        let r = pk_ranges(&ids, &pk);
        assert_eq!(
            r,
            vec![
                ("0010".into(), Some("0013".into())),
                ("0013".into(), Some("0016".into())),
                ("0016".into(), None)
            ]
        );
        let from = PkChunking {
            size: 10,
            start_row: Some("0015".into()),
        };
        assert_eq!(pk_ranges(&ids, &from), vec![("0015".into(), None)]);
        assert_eq!(pk_ranges(&[], &pk).len(), 1);
    }
}
