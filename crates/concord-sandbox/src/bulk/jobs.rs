//! Bulk API 2.0 job records: ingest and query jobs, their state machine, and how an ingest
//! job's CSV is applied to the org; how one uploaded record is applied, for both Bulk APIs.

use crate::org::{Org, SfError, Upserted};
use serde_json::{json, Map, Value as J};
use std::collections::HashMap;

/// The bulk jobs of a sandbox.
#[derive(Default)]
pub struct Jobs {
    pub(crate) query: HashMap<String, QueryJob>,
    pub(crate) ingest: HashMap<String, IngestJob>,
    /// Creation order, for the job lists.
    pub(crate) order: Vec<String>,
    /// Bulk API 1.0 jobs and batches.
    pub(crate) v1: super::v1::Store,
}

/// A query job: the sandbox runs the query when the job is created.
pub(crate) struct QueryJob {
    pub(crate) info: J,
    pub(crate) columns: Vec<String>,
    pub(crate) rows: Vec<J>,
}

/// Largest upload accepted (Salesforce: 150 MB of CSV per job).
pub const MAX_UPLOAD: usize = 150 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobState {
    Open,
    UploadComplete,
    JobComplete,
    Failed,
    Aborted,
}

impl JobState {
    pub(crate) fn name(self) -> &'static str {
        match self {
            JobState::Open => "Open",
            JobState::UploadComplete => "UploadComplete",
            JobState::JobComplete => "JobComplete",
            JobState::Failed => "Failed",
            JobState::Aborted => "Aborted",
        }
    }
}

/// An ingest job.
pub(crate) struct IngestJob {
    pub(crate) id: String,
    pub(crate) object: String,
    pub(crate) operation: String,
    pub(crate) external_id: Option<String>,
    pub(crate) delimiter: u8,
    pub(crate) crlf: bool,
    pub(crate) api_version: String,
    pub(crate) created: String,
    pub(crate) created_by: String,
    pub(crate) state: JobState,
    /// Polls left that still report `InProgress` after processing (clients must poll).
    pub(crate) in_progress_polls: u8,
    pub(crate) data: Option<Vec<u8>>,
    pub(crate) header: Vec<String>,
    /// (sf__Id, sf__Created, row)
    pub(crate) ok: Vec<(String, bool, Vec<String>)>,
    /// (sf__Id, sf__Error, row)
    pub(crate) failed: Vec<(String, String, Vec<String>)>,
    pub(crate) unprocessed: Vec<Vec<String>>,
    pub(crate) error_message: Option<String>,
    pub(crate) processing_ms: u64,
}

pub(crate) fn delimiter(name: &str) -> Option<u8> {
    Some(match name {
        "COMMA" => b',',
        "TAB" => b'\t',
        "SEMICOLON" => b';',
        "PIPE" => b'|',
        "CARET" => b'^',
        "BACKQUOTE" => b'`',
        _ => return None,
    })
}

pub(crate) fn delimiter_name(d: u8) -> &'static str {
    match d {
        b'\t' => "TAB",
        b';' => "SEMICOLON",
        b'|' => "PIPE",
        b'^' => "CARET",
        b'`' => "BACKQUOTE",
        _ => "COMMA",
    }
}

impl IngestJob {
    pub(crate) fn info(&self) -> J {
        let mut j = json!({
            "id": self.id,
            "operation": self.operation,
            "object": self.object,
            "createdById": self.created_by,
            "createdDate": self.created,
            "systemModstamp": self.created,
            "state": self.state.name(),
            "concurrencyMode": "Parallel",
            "contentType": "CSV",
            "apiVersion": self.api_version.parse::<f64>().unwrap_or(62.0),
            "jobType": "V2Ingest",
            "contentUrl": format!("services/data/v{}/jobs/ingest/{}/batches", self.api_version, self.id),
            "lineEnding": if self.crlf { "CRLF" } else { "LF" },
            "columnDelimiter": delimiter_name(self.delimiter),
            "numberRecordsProcessed": self.ok.len() + self.failed.len(),
            "numberRecordsFailed": self.failed.len(),
            "retries": 0,
            "totalProcessingTime": self.processing_ms,
            "apiActiveProcessingTime": self.processing_ms,
            "apexProcessingTime": 0,
        });
        if let Some(e) = &self.external_id {
            j["externalIdFieldName"] = json!(e);
        }
        if let Some(m) = &self.error_message {
            j["errorMessage"] = json!(m);
        }
        j
    }

    /// Parses the upload and applies every row to the org.
    pub(crate) fn process(&mut self, org: &mut Org) {
        let started = std::time::Instant::now();
        let data = self.data.take().unwrap_or_default();
        let result = self.apply(org, &data);
        if let Err(msg) = result {
            self.state = JobState::Failed;
            self.error_message = Some(msg);
        } else {
            self.state = JobState::JobComplete;
        }
        self.in_progress_polls = 1;
        self.processing_ms = started.elapsed().as_millis() as u64;
    }

    fn apply(&mut self, org: &mut Org, data: &[u8]) -> Result<(), String> {
        // An upload with no bytes (or nothing but line endings) is an empty job: an org
        // completes it with no record processed rather than failing it.
        if data.iter().all(|b| matches!(b, b'\r' | b'\n')) {
            return Ok(());
        }
        if !self.crlf && data.windows(2).any(|w| w == b"\r\n") {
            return Err(
                "ClientInputError : LineEnding is invalid on user data. Current LineEnding setting is LF"
                    .into(),
            );
        }
        let (header, rows) = read_csv(data, self.delimiter)?;
        self.header = header.clone();
        // Column checks first: an unknown column fails the whole job, as in Salesforce.
        let o = org.object(&self.object).map_err(|e| e.message)?.clone();
        let needs_id = matches!(self.operation.as_str(), "update" | "delete" | "hardDelete");
        for h in &header {
            let known = known_column(org, &o, h);
            if !known {
                return Err(format!("InvalidBatch : Field name not found : {h}"));
            }
        }
        if needs_id && !header.iter().any(|h| h.eq_ignore_ascii_case("Id")) {
            return Err("InvalidBatch : Field name not found : Id".into());
        }
        if self.operation == "upsert" {
            let ext = self.external_id.clone().unwrap_or_default();
            if !header.iter().any(|h| h.eq_ignore_ascii_case(&ext)) {
                return Err(format!(
                    "InvalidBatch : Field name not found : {ext} (the external id column)"
                ));
            }
        }
        for row in rows {
            match self.apply_row(org, &o.name, &header, &row) {
                Ok((id, created)) => self.ok.push((id, created, row)),
                Err(e) => {
                    let id = header
                        .iter()
                        .position(|h| h.eq_ignore_ascii_case("Id"))
                        .map(|i| row[i].clone())
                        .unwrap_or_default();
                    let msg = format!("{}:{}:{} --", e.code, e.message, e.fields.join(","));
                    self.failed.push((id, msg, row));
                }
            }
        }
        Ok(())
    }

    pub(crate) fn apply_row(
        &self,
        org: &mut Org,
        object: &str,
        header: &[String],
        row: &[String],
    ) -> Result<(String, bool), SfError> {
        let rec = InRecord::from_csv(header, row);
        apply_record(
            org,
            object,
            &self.operation,
            self.external_id.as_deref(),
            rec,
        )
    }
}

/// A CSV upload read whole: its header and rows. A missing header or a row with the wrong
/// number of cells is an error naming the row.
pub(crate) fn read_csv(
    data: &[u8],
    delimiter: u8,
) -> Result<(Vec<String>, Vec<Vec<String>>), String> {
    let mut rdr = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .flexible(false)
        .from_reader(data);
    let header: Vec<String> = rdr
        .headers()
        .map_err(|e| format!("InvalidBatch : Failed to parse CSV header: {e}"))?
        .iter()
        .map(str::to_string)
        .collect();
    if header.is_empty() || header.iter().all(String::is_empty) {
        return Err("InvalidBatch : Failed to parse CSV header: empty".into());
    }
    let mut rows = Vec::new();
    for (n, r) in rdr.records().enumerate() {
        let r =
            r.map_err(|e| format!("ClientInputError : CSV error at data row {}: {e}", n + 1))?;
        rows.push(r.iter().map(str::to_string).collect());
    }
    Ok((header, rows))
}

/// A CSV writer as the Bulk APIs write results: LF line ends, every cell quoted.
pub(crate) fn csv_writer() -> csv::Writer<Vec<u8>> {
    csv::WriterBuilder::new()
        .terminator(csv::Terminator::Any(b'\n'))
        .quote_style(csv::QuoteStyle::Always)
        .from_writer(Vec::new())
}

/// One record of a bulk upload, whatever its format (a CSV row, a JSON object, an XML
/// `sObject`): its Id, its field values as given (names as the client spelled them; JSON null
/// or `#N/A` or `xsi:nil` for null) and its lookups by a parent's external id
/// (`Parent.Ext__c` column, nested object or element).
#[derive(Debug, Default, Clone)]
pub(crate) struct InRecord {
    pub(crate) id: Option<String>,
    pub(crate) fields: Map<String, J>,
    pub(crate) refs: Vec<ExtRef>,
}

/// A lookup set by the parent's external id: `relationship.field = value` (`Account.Erp_Id__c`),
/// with the parent's type when the upload names it (polymorphic lookups).
#[derive(Debug, Clone)]
pub(crate) struct ExtRef {
    pub(crate) relationship: String,
    pub(crate) object: Option<String>,
    pub(crate) field: String,
    pub(crate) value: String,
}

impl InRecord {
    /// A CSV row: an empty cell leaves the field as it is, `#N/A` sets it to null, an `Id`
    /// column is the record's Id, `Rel.Field` columns are lookups by external id.
    pub(crate) fn from_csv(header: &[String], row: &[String]) -> InRecord {
        let mut rec = InRecord::default();
        for (h, cell) in header.iter().zip(row) {
            if h.eq_ignore_ascii_case("Id") {
                if !cell.is_empty() {
                    rec.id = Some(cell.clone());
                }
                continue;
            }
            if cell.is_empty() {
                continue;
            }
            if let Some((rel, field)) = h.split_once('.') {
                rec.refs.push(ExtRef {
                    relationship: rel.to_string(),
                    object: None,
                    field: field.to_string(),
                    value: cell.clone(),
                });
                continue;
            }
            let v = if cell == "#N/A" {
                J::Null
            } else {
                J::String(cell.clone())
            };
            rec.fields.insert(h.clone(), v);
        }
        rec
    }

    /// The column names the record uses (`Rel.Field` for lookups), for the upload's field check.
    pub(crate) fn columns(&self) -> impl Iterator<Item = String> + '_ {
        self.fields.keys().cloned().chain(
            self.refs
                .iter()
                .map(|r| format!("{}.{}", r.relationship, r.field)),
        )
    }
}

/// Whether `column` (`Name`, `Account.Erp_Id__c`) names a field of `object` or a field of the
/// parent a relationship points at.
pub(crate) fn known_column(org: &Org, o: &crate::schema::ObjectDef, column: &str) -> bool {
    match column.split_once('.') {
        Some((rel, field)) => o.relationship(rel).is_some_and(|f| {
            f.reference_to
                .iter()
                .filter_map(|t| org.object(t).ok())
                .any(|t| t.field(field).is_some())
        }),
        None => column.eq_ignore_ascii_case("Id") || o.field(column).is_some(),
    }
}

/// Applies one uploaded record with `operation` (`insert`, `update`, `upsert` by
/// `external_id`, `delete`, `hardDelete`), with the REST API's validation. Returns the record's
/// 18-character Id and whether it was created.
pub(crate) fn apply_record(
    org: &mut Org,
    object: &str,
    operation: &str,
    external_id: Option<&str>,
    rec: InRecord,
) -> Result<(String, bool), SfError> {
    let o = org.object(object)?.clone();
    let mut fields = Map::new();
    for (name, v) in rec.fields {
        let name = o.field(&name).map(|f| f.name.clone()).unwrap_or(name);
        fields.insert(name, v);
    }
    for r in rec.refs {
        let f = o.relationship(&r.relationship).ok_or_else(|| {
            SfError::new(
                400,
                "INVALID_FIELD",
                format!("No such relationship: {}", r.relationship),
            )
        })?;
        let target = match &r.object {
            Some(t) => t.clone(),
            None => f
                .reference_to
                .iter()
                .find(|t| org.object(t).is_ok_and(|d| d.field(&r.field).is_some()))
                .cloned()
                .unwrap_or_default(),
        };
        let parent = org.find_by(&target, &r.field, &r.value)?;
        fields.insert(f.name.clone(), J::String(parent));
    }
    let id = rec.id;
    let need_id = || {
        id.clone().ok_or_else(|| {
            SfError::new(
                400,
                "MISSING_ARGUMENT",
                "Id not specified in an update call",
            )
        })
    };
    let long = |id: String| crate::ids::to18(&id).unwrap_or(id);
    match operation {
        "insert" => org.create(object, &fields).map(|i| (i, true)),
        "update" => {
            let id = need_id()?;
            org.update(object, &id, &fields)?;
            Ok((long(id), false))
        }
        "delete" => {
            let id = need_id()?;
            org.delete(object, &id)?;
            Ok((long(id), false))
        }
        "hardDelete" => {
            let id = need_id()?;
            org.hard_delete(object, &id)?;
            Ok((long(id), false))
        }
        _ => {
            let ext = external_id.unwrap_or_default();
            if ext.eq_ignore_ascii_case("Id") {
                return match id {
                    Some(id) => {
                        org.update(object, &id, &fields)?;
                        Ok((long(id), false))
                    }
                    None => org.create(object, &fields).map(|i| (i, true)),
                };
            }
            let key = o
                .field(ext)
                .and_then(|f| fields.remove(&f.name))
                .and_then(|v| match v {
                    J::String(s) => Some(s),
                    J::Number(n) => Some(n.to_string()),
                    _ => None,
                })
                .ok_or_else(|| {
                    SfError::new(400, "MISSING_ARGUMENT", format!("{ext} not specified"))
                })?;
            match org.upsert(object, ext, &key, &fields) {
                Ok(Upserted::Created(i)) => Ok((i, true)),
                Ok(Upserted::Updated(i)) => Ok((i, false)),
                Err(e) if e.status == 300 => {
                    Err(SfError::new(300, "DUPLICATE_EXTERNAL_ID", e.message))
                }
                Err(e) => Err(e),
            }
        }
    }
}
