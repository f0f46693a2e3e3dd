//! Bulk API 2.0 job records: ingest and query jobs, their state machine, and how an ingest
//! job's CSV is applied to the org.

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
        let mut rdr = csv::ReaderBuilder::new()
            .delimiter(self.delimiter)
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
            match r {
                Ok(r) => rows.push(r.iter().map(str::to_string).collect::<Vec<_>>()),
                Err(e) => {
                    return Err(format!(
                        "ClientInputError : CSV error at data row {}: {e}",
                        n + 1
                    ))
                }
            }
        }
        self.header = header.clone();
        // Column checks first: an unknown column fails the whole job, as in Salesforce.
        let o = org.object(&self.object).map_err(|e| e.message)?.clone();
        let needs_id = matches!(self.operation.as_str(), "update" | "delete" | "hardDelete");
        for h in &header {
            let known = match h.split_once('.') {
                Some((rel, field)) => o
                    .relationship(rel)
                    .and_then(|f| f.reference_to.first())
                    .and_then(|t| org.object(t).ok())
                    .is_some_and(|t| t.field(field).is_some()),
                None => o.field(h).is_some(),
            };
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
        let o = org.object(object)?.clone();
        let mut fields = Map::new();
        let mut id = None;
        for (h, cell) in header.iter().zip(row) {
            if h.eq_ignore_ascii_case("Id") {
                if !cell.is_empty() {
                    id = Some(cell.clone());
                }
                continue;
            }
            if cell.is_empty() {
                continue; // Bulk API: an empty cell leaves the field unchanged
            }
            if let Some((rel, ext)) = h.split_once('.') {
                let f = o.relationship(rel).expect("checked with the header");
                let target = f.reference_to.first().cloned().unwrap_or_default();
                let parent = org.find_by(&target, ext, cell)?;
                fields.insert(f.name.clone(), J::String(parent));
                continue;
            }
            let name = o.field(h).map(|f| f.name.clone()).unwrap_or(h.clone());
            let v = if cell == "#N/A" {
                J::Null
            } else {
                J::String(cell.clone())
            };
            fields.insert(name, v);
        }
        let need_id = || {
            id.clone().ok_or_else(|| {
                SfError::new(
                    400,
                    "MISSING_ARGUMENT",
                    "Id not specified in an update call",
                )
            })
        };
        match self.operation.as_str() {
            "insert" => org.create(object, &fields).map(|i| (i, true)),
            "update" => {
                let id = need_id()?;
                org.update(object, &id, &fields)?;
                Ok((crate::ids::to18(&id).unwrap_or(id), false))
            }
            "delete" => {
                let id = need_id()?;
                org.delete(object, &id)?;
                Ok((crate::ids::to18(&id).unwrap_or(id), false))
            }
            "hardDelete" => {
                let id = need_id()?;
                org.hard_delete(object, &id)?;
                Ok((crate::ids::to18(&id).unwrap_or(id), false))
            }
            _ => {
                let ext = self.external_id.clone().unwrap_or_default();
                if ext.eq_ignore_ascii_case("Id") {
                    return match id {
                        Some(id) => {
                            org.update(object, &id, &fields)?;
                            Ok((crate::ids::to18(&id).unwrap_or(id), false))
                        }
                        None => org.create(object, &fields).map(|i| (i, true)),
                    };
                }
                let key = o
                    .field(&ext)
                    .and_then(|f| fields.remove(&f.name))
                    .and_then(|v| v.as_str().map(str::to_string))
                    .ok_or_else(|| {
                        SfError::new(400, "MISSING_ARGUMENT", format!("{ext} not specified"))
                    })?;
                match org.upsert(object, &ext, &key, &fields) {
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
}
