//! The HTTP API (JSON; docs/api.md): runs on request, run reports, jobs, status, conflicts and
//! their resolution, reconcile, metrics, health. Every route but `/healthz` asks for
//! `Authorization: Bearer <token>` (the token from the variable `serve` names).

use crate::runs::Trigger;
use crate::service::Service;
use crate::{ops, Error};
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use concord_engine::engine::conflicts::Choice;
use serde::Deserialize;
use serde_json::{json, Value as J};
use std::sync::Arc;

type St = Arc<Service>;

/// An error answer: `{"error": …}` with the status its kind calls for.
fn fail(e: Error) -> Response {
    let status = match &e {
        Error::NotFound(_) => StatusCode::NOT_FOUND,
        Error::Request(_) => StatusCode::BAD_REQUEST,
        Error::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
        Error::Upstream(_) => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    (status, Json(json!({"error": e.to_string()}))).into_response()
}

/// Equal without an early exit (a token is not guessed byte by byte from answer times).
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn auth(State(s): State<St>, req: Request, next: Next) -> Response {
    let given = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !same(given.as_bytes(), s.token.as_bytes()) {
        return (
            StatusCode::UNAUTHORIZED,
            [("www-authenticate", "Bearer")],
            Json(json!({"error": "a valid bearer token is required"})),
        )
            .into_response();
    }
    next.run(req).await
}

pub fn router(s: St) -> Router {
    let guarded = Router::new()
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/status", get(status))
        .route("/jobs", get(jobs))
        .route("/jobs/{job}/runs", post(run_job).get(job_runs))
        .route("/jobs/{job}/reconcile", post(reconcile))
        .route("/jobs/{job}/records/{key}", get(golden))
        .route("/runs", get(all_runs))
        .route("/runs/{id}", get(run))
        .route("/conflicts", get(conflicts))
        .route("/conflicts/{id}/resolve", post(resolve))
        .route("/conflicts/{entity}/{field}/resolve", post(resolve_field))
        .route_layer(middleware::from_fn_with_state(s.clone(), auth));
    Router::new()
        .route("/healthz", get(|| async { "ok" }))
        // Signed by the caller instead of carrying the token (see `hook`).
        .route("/hooks/{job}", post(hook))
        .merge(guarded)
        // The console signs in with the token and keeps a session cookie (see `console`).
        .merge(crate::console::router())
        .fallback(|| async {
            (
                StatusCode::NOT_FOUND,
                Json(json!({"error": "no such route (docs/api.md lists them)"})),
            )
        })
        .with_state(s)
}

async fn readyz(State(s): State<St>) -> Response {
    if s.stopping() {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping").into_response();
    }
    match s.state.run_log() {
        Ok(_) => "ready".into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the store does not answer: {e}"),
        )
            .into_response(),
    }
}

async fn metrics(State(s): State<St>) -> Response {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        s.metrics.render(),
    )
        .into_response()
}

async fn status(State(s): State<St>) -> Response {
    match ops::status_json(&s.cfg, &s.state) {
        Ok(v) => Json(J::Array(v)).into_response(),
        Err(e) => fail(e),
    }
}

async fn jobs(State(s): State<St>) -> Response {
    let status = match ops::status_json(&s.cfg, &s.state) {
        Ok(v) => v,
        Err(e) => return fail(e),
    };
    let runs = s.runs.lock().expect("runs");
    let out: Vec<J> = s
        .schedules()
        .into_iter()
        .map(|(name, schedule, next)| {
            let st = status.iter().find(|j| j["job"] == json!(name));
            json!({
                "job": name,
                "pattern": st.map(|j| j["pattern"].clone()),
                "schedule": schedule,
                "next_run_in_secs": next.map(|d| d.as_secs()),
                "systems": st.map(|j| j["systems"].clone()),
                "last_run": st.map(|j| j["last_run"].clone()),
                "open_conflicts": st.map(|j| j["open_conflicts"].clone()),
                "runs": runs.list(Some(&name)).into_iter().take(5).collect::<Vec<_>>(),
            })
        })
        .collect();
    Json(J::Array(out)).into_response()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RunBody {
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    verify: bool,
}

/// The body of a POST: absent or empty means every default; else JSON of `T`.
fn body_of<T: for<'de> Deserialize<'de> + Default>(b: &axum::body::Bytes) -> Result<T, Error> {
    if b.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(b).map_err(|e| Error::Request(format!("the body: {e}")))
}

async fn run_job(
    State(s): State<St>,
    Path(job): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let b: RunBody = match body_of(&body) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    match s.request_run(&job, Trigger::Request, b.dry_run, b.verify) {
        Ok(id) => (
            StatusCode::ACCEPTED,
            [("location", format!("/runs/{id}"))],
            Json(json!({"id": id, "job": job, "state": "queued", "url": format!("/runs/{id}")})),
        )
            .into_response(),
        Err(e) => fail(e),
    }
}

#[derive(Deserialize)]
struct JobFilter {
    job: Option<String>,
}

async fn all_runs(State(s): State<St>, Query(q): Query<JobFilter>) -> Response {
    let runs = s.runs.lock().expect("runs");
    Json(json!(runs.list(q.job.as_deref()))).into_response()
}

async fn job_runs(State(s): State<St>, Path(job): Path<String>) -> Response {
    let runs = s.runs.lock().expect("runs");
    Json(json!(runs.list(Some(&job)))).into_response()
}

async fn run(State(s): State<St>, Path(id): Path<String>) -> Response {
    match s.runs.lock().expect("runs").get(&id) {
        Some(r) => Json(json!(r)).into_response(),
        None => fail(Error::NotFound(format!("no run {id}"))),
    }
}

async fn conflicts(State(s): State<St>, Query(q): Query<JobFilter>) -> Response {
    match ops::conflicts_json(&s.state, q.job.as_deref(), None) {
        Ok(v) => Json(J::Array(v)).into_response(),
        Err(e) => fail(e),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ResolveBody {
    /// Take this system's value (or record).
    take: Option<String>,
    /// Or this value (field conflicts): JSON, or text.
    value: Option<J>,
    /// Queue a run of the job at once, so the resolution is written (default true).
    run: Option<bool>,
}

async fn resolve_id(s: &St, id: &str, body: axum::body::Bytes) -> Response {
    let b: ResolveBody = match body_of(&body) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let choice = match (b.take, b.value) {
        (Some(t), None) => Choice::Take(t),
        (None, Some(v)) => {
            let text = match &v {
                J::String(s) => s.clone(),
                other => other.to_string(),
            };
            match ops::typed_value(&text) {
                Ok(v) => Choice::Value(v),
                Err(e) => return fail(e),
            }
        }
        _ => {
            return fail(Error::Request(
                "give exactly one of `take` (a system) or `value`".into(),
            ))
        }
    };
    let job = {
        let _one = s.pass_guard().await;
        match ops::resolve(&s.cfg, &s.state, id, &choice).await {
            Ok(j) => j,
            Err(e) => return fail(e),
        }
    };
    s.refresh_gauges();
    let run = if b.run.unwrap_or(true) {
        s.request_run(&job, Trigger::Request, false, false).ok()
    } else {
        None
    };
    Json(json!({"resolved": id, "job": job, "run": run})).into_response()
}

async fn resolve(State(s): State<St>, Path(id): Path<String>, body: axum::body::Bytes) -> Response {
    resolve_id(&s, &id, body).await
}

async fn resolve_field(
    State(s): State<St>,
    Path((entity, field)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Response {
    resolve_id(&s, &format!("{entity}/{field}"), body).await
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReconcileBody {
    #[serde(default)]
    repair: bool,
}

async fn reconcile(
    State(s): State<St>,
    Path(job): Path<String>,
    body: axum::body::Bytes,
) -> Response {
    let b: ReconcileBody = match body_of(&body) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    match s.reconcile(&job, b.repair).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => fail(e),
    }
}

/// The signature a sender puts on `body`: `sha256=` and the hex HMAC-SHA256 under `secret`.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Whether `signature` (`sha256=HEX`, as GitHub and most senders write it) is the HMAC-SHA256
/// of `body` under `secret` (checked in constant time).
pub fn signed(secret: &[u8], body: &[u8], signature: &str) -> bool {
    use hmac::Mac;
    let Some(hex_sig) = signature.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// `POST /hooks/{job}`: a system that calls out says something changed. The body is the
/// sender's (not read, only signed): `X-Concord-Signature: sha256=HEX` (or GitHub's
/// `X-Hub-Signature-256`) must be its HMAC-SHA256 under the job's `webhook_secret_env`. A run
/// of the job is queued unless one from a webhook is still waiting.
async fn hook(
    State(s): State<St>,
    Path(job): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let Some(j) = s.cfg.jobs.get(&job) else {
        return fail(Error::NotFound(format!("no job named `{job}`")));
    };
    let Some(var) = j.webhook_secret_env.as_deref() else {
        return fail(Error::NotFound(format!(
            "job `{job}` takes no webhook (set webhook_secret_env)"
        )));
    };
    let secret = std::env::var(var).unwrap_or_default();
    if secret.len() < 16 {
        return fail(Error::Setup(format!(
            "job `{job}`: {var} holds no webhook secret (at least 16 characters)"
        )));
    }
    let sig = headers
        .get("x-concord-signature")
        .or_else(|| headers.get("x-hub-signature-256"))
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if !signed(secret.as_bytes(), &body, sig) {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "the signature does not match the body (X-Concord-Signature: sha256=HMAC)"})),
        )
            .into_response();
    }
    if s.stopping() {
        return fail(Error::Busy("the service is stopping".into()));
    }
    let run = s.push(&job, Trigger::Webhook);
    (StatusCode::ACCEPTED, Json(json!({"job": job, "run": run}))).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Freshness {
    /// `store` (default: as of the last pass) or `read_through` (a pass first).
    freshness: Option<String>,
}

/// `GET /jobs/{job}/records/{match-key}` (aggregate jobs): the golden record with its per-field
/// provenance; a composite key's values separated by `|`.
async fn golden(
    State(s): State<St>,
    Path((job, key)): Path<(String, String)>,
    Query(q): Query<Freshness>,
) -> Response {
    let read_through = match q.freshness.as_deref() {
        None | Some("store") => false,
        Some("read_through") => true,
        Some(other) => {
            return fail(Error::Request(format!(
                "freshness is `store` or `read_through`, not `{other}`"
            )))
        }
    };
    let values: Vec<&str> = key.split('|').collect();
    match s.golden(&job, &values, read_through).await {
        Ok(Some(v)) => Json(v).into_response(),
        Ok(None) => fail(Error::NotFound(format!(
            "no golden record of job `{job}` has the match key `{key}`"
        ))),
        Err(e) => fail(e),
    }
}
