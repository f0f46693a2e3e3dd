//! Replication: getUpdated and getDeleted over a time window.

use super::state::*;
use crate::org::SfError;
use axum::extract::{Path, Query as Q, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use concord_model::model::Timestamp;
use serde_json::json;

#[derive(serde::Deserialize)]
pub(crate) struct Window {
    start: Option<String>,
    end: Option<String>,
}

pub(crate) fn window(w: &Window) -> Result<(Timestamp, Timestamp), SfError> {
    let parse = |s: &Option<String>, name: &str| {
        s.as_deref()
            .and_then(|x| Timestamp::parse(x).ok())
            .ok_or_else(|| {
                SfError::new(
                    400,
                    "INVALID_REPLICATION_DATE",
                    format!("{name} must be a valid dateTime"),
                )
            })
    };
    let (start, end) = (parse(&w.start, "start")?, parse(&w.end, "end")?);
    if end < start {
        return Err(SfError::new(
            400,
            "INVALID_REPLICATION_DATE",
            "end must be after start",
        ));
    }
    if end.millis() - start.millis() > 30 * 24 * 3600 * 1000 {
        return Err(SfError::new(
            400,
            "EXCEEDED_ID_LIMIT",
            "the window may not exceed 30 days",
        ));
    }
    Ok((start, end))
}

/// Record ids with their modification stamps, and the window's start and end.
pub(crate) type Changed = (Vec<(String, Timestamp)>, Timestamp, Timestamp);

/// The records of `s` modified (or deleted) within the request's window, with the window.
pub(crate) fn replication(
    sb: &Sandbox,
    v: &str,
    s: &str,
    w: &Window,
    deleted: bool,
) -> Result<Changed, SfError> {
    version_ok(v)?;
    sb.count(if deleted { "getDeleted" } else { "getUpdated" });
    let (start, end) = window(w)?;
    let org = sb.org.lock().expect("lock");
    let now = Timestamp::now().millis() + org.clock_offset_ms;
    if deleted && start.millis() < now - 15 * 86_400_000 {
        return Err(SfError::new(
            400,
            "INVALID_REPLICATION_DATE",
            "startDate is before the earliest date available: deleted records are kept for 15 days",
        ));
    }
    let list = org.changed_between(s, start, end, deleted)?;
    // Covered up to the end asked for, but never past what is known complete (a long-running
    // transaction's start, the frozen time).
    let end = Timestamp(end.millis().min(org.covered_until()));
    Ok((list, start, end))
}

pub(crate) async fn updated(
    State(sb): State<St>,
    Path((v, s)): Path<(String, String)>,
    Q(w): Q<Window>,
) -> Response {
    match replication(&sb, &v, &s, &w, false) {
        Ok((list, _, end)) => {
            let latest = end;
            Json(json!({
                "ids": list.iter().map(|(id, _)| id).collect::<Vec<_>>(),
                "latestDateCovered": crate::org::sf_datetime(latest),
            }))
            .into_response()
        }
        Err(e) => err(e),
    }
}

pub(crate) async fn deleted(
    State(sb): State<St>,
    Path((v, s)): Path<(String, String)>,
    Q(w): Q<Window>,
) -> Response {
    match replication(&sb, &v, &s, &w, true) {
        Ok((list, start, end)) => {
            let latest = end;
            let earliest = list.iter().map(|(_, t)| *t).min().unwrap_or(start);
            Json(json!({
                "deletedRecords": list
                    .iter()
                    .map(|(id, t)| json!({"id": id, "deletedDate": crate::org::sf_datetime(*t)}))
                    .collect::<Vec<_>>(),
                "earliestDateAvailable": crate::org::sf_datetime(earliest),
                "latestDateCovered": crate::org::sf_datetime(latest),
            }))
            .into_response()
        }
        Err(e) => err(e),
    }
}
