//! The admin API (not Salesforce's): call counters, faults, the clock, expiring sessions,
//! emptying the recycle bin, restoring a record from it, reset.

use super::state::*;
use crate::org::SfError;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value as J};

pub(crate) async fn admin_counters(State(sb): State<St>) -> Json<J> {
    let used = *sb.usage.lock().expect("lock");
    Json(json!({"api_usage": used, "endpoints": sb.counters()}))
}

pub(crate) async fn admin_faults(State(sb): State<St>, Json(f): Json<Faults>) -> Json<Faults> {
    sb.set_faults(f.clone());
    Json(f)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ClockBody {
    /// Freeze modification stamps at this time (ms since the epoch); null unfreezes.
    frozen_ms: Option<i64>,
    #[serde(default)]
    offset_ms: i64,
    /// A long-running transaction in flight since this time (ms since the epoch): replication
    /// calls cover no later until it is cleared (null).
    #[serde(default)]
    open_transaction_since_ms: Option<i64>,
}

pub(crate) async fn admin_clock(State(sb): State<St>, Json(c): Json<ClockBody>) -> StatusCode {
    let mut org = sb.org.lock().expect("lock");
    org.frozen_ms = c.frozen_ms;
    org.clock_offset_ms = c.offset_ms;
    org.open_transaction_since = c.open_transaction_since_ms;
    StatusCode::NO_CONTENT
}

pub(crate) async fn admin_expire_sessions(State(sb): State<St>) -> StatusCode {
    sb.expire_sessions();
    StatusCode::NO_CONTENT
}

pub(crate) async fn admin_empty_recycle_bin(State(sb): State<St>) -> Response {
    let n = sb.org.lock().expect("lock").empty_recycle_bin();
    if let Err(e) = sb.persist() {
        return err(SfError::new(500, "UNKNOWN_EXCEPTION", e.to_string()));
    }
    Json(json!({"purged": n})).into_response()
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UndeleteBody {
    object: String,
    id: String,
}

/// `POST /admin/undelete`: a user restores a record from the Recycle Bin (no REST call does).
pub(crate) async fn admin_undelete(State(sb): State<St>, Json(b): Json<UndeleteBody>) -> Response {
    let r = sb.org.lock().expect("lock").undelete(&b.object, &b.id);
    match r {
        Ok(id) => {
            if let Err(e) = sb.persist() {
                return err(SfError::new(500, "UNKNOWN_EXCEPTION", e.to_string()));
            }
            Json(json!({"id": id, "success": true})).into_response()
        }
        Err(e) => err(e),
    }
}

pub(crate) async fn admin_reset(State(sb): State<St>) -> StatusCode {
    sb.counters.lock().expect("lock").clear();
    *sb.usage.lock().expect("lock") = 0;
    StatusCode::NO_CONTENT
}
