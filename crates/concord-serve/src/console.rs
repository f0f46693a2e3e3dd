//! The web console: server-rendered HTML (minijinja templates built into the binary, escaped),
//! no JavaScript. Jobs with their schedule, last runs, lag, outbox and drift from the last
//! reconcile; a run's report; the conflict queue with base and each side, resolved by taking a
//! side or entering a value. Sign-in with the API token sets a session cookie (HttpOnly,
//! SameSite=Strict); every form carries the session's CSRF token, checked on every POST.

use crate::runs::Trigger;
use crate::service::Service;
use crate::{ops, Error};
use axum::extract::{Form, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use concord_engine::engine::conflicts::Choice;
use serde::Deserialize;
use serde_json::{json, Value as J};
use std::sync::Arc;

type St = Arc<Service>;

const COOKIE: &str = "concord_console";

fn templates() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    for (name, text) in [
        ("base.html", include_str!("console/base.html")),
        ("login.html", include_str!("console/login.html")),
        ("dashboard.html", include_str!("console/dashboard.html")),
        ("run.html", include_str!("console/run.html")),
        ("conflicts.html", include_str!("console/conflicts.html")),
    ] {
        env.add_template(name, text).expect("console template");
    }
    env
}

fn render(name: &str, ctx: J) -> Response {
    match templates()
        .get_template(name)
        .and_then(|t| t.render(minijinja::value::Serde(&ctx)))
    {
        Ok(html) => Html(html).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("console: {e}")).into_response(),
    }
}

/// The signed-in session's CSRF token, from the request's cookie.
fn session(s: &Service, h: &HeaderMap) -> Option<String> {
    let cookies = h.get("cookie")?.to_str().ok()?;
    let id = cookies
        .split(';')
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())?;
    s.console_sessions
        .lock()
        .expect("sessions")
        .get(&id)
        .cloned()
}

fn when(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

fn state_class(state: &str) -> &'static str {
    match state {
        "succeeded" | "ok" => "ok",
        "partial" | "held" | "stopped" | "queued" | "running" => "warn",
        _ => "bad",
    }
}

pub fn router() -> Router<St> {
    Router::new()
        .route("/console", get(dashboard))
        .route("/console/login", get(login_page).post(login))
        .route("/console/runs/{id}", get(run_page))
        .route("/console/conflicts", get(conflicts_page))
        .route("/console/conflicts/resolve", post(resolve))
        .route("/console/jobs/{job}/run", post(run_job))
        .route("/console/jobs/{job}/reconcile", post(reconcile))
}

async fn login_page() -> Response {
    render("login.html", json!({}))
}

#[derive(Deserialize)]
struct Login {
    token: String,
}

async fn login(State(s): State<St>, Form(f): Form<Login>) -> Response {
    if !crate::api::same(f.token.as_bytes(), s.token.as_bytes()) {
        return (
            StatusCode::UNAUTHORIZED,
            render("login.html", json!({"error": "That is not the API token."})),
        )
            .into_response();
    }
    let (id, _csrf) = s.new_console_session();
    (
        StatusCode::SEE_OTHER,
        [
            (
                "set-cookie",
                format!("{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/console"),
            ),
            ("location", "/console".to_string()),
        ],
    )
        .into_response()
}

/// The session's CSRF token, or the answer for a request without a session.
fn signed_in(s: &Service, h: &HeaderMap) -> Result<String, Box<Response>> {
    session(s, h).ok_or_else(|| Box::new(Redirect::to("/console/login").into_response()))
}

async fn dashboard(State(s): State<St>, h: HeaderMap) -> Response {
    let csrf = match signed_in(&s, &h) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    let status = match ops::status_json(&s.cfg, &s.state) {
        Ok(v) => v,
        Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    };
    let runs = s.runs.lock().expect("runs");
    let drift = s.last_reconcile.lock().expect("reconcile").clone();
    let jobs: Vec<J> = s
        .schedules()
        .into_iter()
        .map(|(name, schedule, next)| {
            let st = status.iter().find(|j| j["job"] == json!(name)).cloned().unwrap_or(J::Null);
            let last_report = runs
                .list(Some(&name))
                .into_iter()
                .find_map(|r| r.report.clone());
            let lag: Vec<J> = last_report
                .as_ref()
                .and_then(|r| r["lag"].as_object().cloned())
                .into_iter()
                .flatten()
                .map(|(sys, l)| json!({"system": sys, "mean_ms": l["mean_ms"], "max_ms": l["max_ms"]}))
                .collect();
            let last = st["last_run"].clone();
            json!({
                "job": name,
                "pattern": st["pattern"],
                "schedule": schedule,
                "next_in": next.map(|d| d.as_secs()),
                "last": if last.is_null() { J::Null } else { last.clone() },
                "last_class": state_class(last["status"].as_str().unwrap_or("")),
                "last_when": when(last["finished_ms"].as_i64()),
                "systems": st["systems"],
                "open_conflicts": st["open_conflicts"],
                "lag": lag,
                "drift": drift.get(&name).map(|d| json!({"left": d["drift_left"], "checks": d["checks"].as_object().map(|c| c.keys().cloned().collect::<Vec<_>>().join(", ")).unwrap_or_default()})),
            })
        })
        .collect();
    let recent: Vec<J> = runs
        .list(None)
        .into_iter()
        .take(20)
        .map(|r| {
            let state = serde_json::to_value(r.state).unwrap_or(J::Null);
            json!({
                "id": r.id, "job": r.job, "trigger": r.trigger, "state": state,
                "class": state_class(state.as_str().unwrap_or("")),
                "written": r.report.as_ref().and_then(|x| x["written"].as_object().map(|w| w.values().filter_map(J::as_u64).sum::<u64>())).unwrap_or(0),
                "when": when(Some(r.queued_ms)),
            })
        })
        .collect();
    render(
        "dashboard.html",
        json!({"jobs": jobs, "runs": recent, "csrf": csrf}),
    )
}

async fn run_page(State(s): State<St>, h: HeaderMap, Path(id): Path<String>) -> Response {
    if let Err(r) = signed_in(&s, &h) {
        return *r;
    }
    let Some(run) = s.runs.lock().expect("runs").get(&id).cloned() else {
        return (StatusCode::NOT_FOUND, format!("no run {id}")).into_response();
    };
    let report = run.report.clone().unwrap_or(J::Null);
    let mut names: Vec<String> = Vec::new();
    for k in ["read", "written", "lag"] {
        for n in report[k].as_object().into_iter().flat_map(|m| m.keys()) {
            if !names.contains(n) {
                names.push(n.clone());
            }
        }
    }
    let systems: Vec<J> = names
        .iter()
        .map(|n| json!({"name": n, "read": report["read"][n].as_u64().unwrap_or(0), "written": report["written"][n].as_u64().unwrap_or(0), "lag": report["lag"].get(n)}))
        .collect();
    let state = serde_json::to_value(run.state).unwrap_or(J::Null);
    render(
        "run.html",
        json!({"run": run, "class": state_class(state.as_str().unwrap_or("")), "report": if report.is_null() { J::Null } else { report.clone() }, "systems": systems}),
    )
}

async fn conflicts_page(State(s): State<St>, h: HeaderMap) -> Response {
    let csrf = match signed_in(&s, &h) {
        Ok(c) => c,
        Err(r) => return *r,
    };
    match ops::conflicts_json(&s.state, None, None) {
        Ok(list) => render("conflicts.html", json!({"conflicts": list, "csrf": csrf})),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// A POST's CSRF token must be the session's.
fn checked(s: &Service, h: &HeaderMap, csrf: &str) -> Result<(), Box<Response>> {
    let want = signed_in(s, h)?;
    if crate::api::same(want.as_bytes(), csrf.as_bytes()) {
        Ok(())
    } else {
        Err(Box::new(
            (
                StatusCode::FORBIDDEN,
                "the form's CSRF token is not this session's",
            )
                .into_response(),
        ))
    }
}

#[derive(Deserialize)]
struct ResolveForm {
    csrf: String,
    id: String,
    take: Option<String>,
    value: Option<String>,
}

async fn resolve(State(s): State<St>, h: HeaderMap, Form(f): Form<ResolveForm>) -> Response {
    if let Err(r) = checked(&s, &h, &f.csrf) {
        return *r;
    }
    let choice = match (f.take.filter(|t| !t.is_empty()), f.value) {
        (Some(t), _) => Choice::Take(t),
        (None, Some(v)) => match ops::typed_value(&v) {
            Ok(v) => Choice::Value(v),
            Err(e) => return (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
        },
        _ => return (StatusCode::BAD_REQUEST, "take a side or enter a value").into_response(),
    };
    let job = {
        let _one = s.pass_guard().await;
        match ops::resolve(&s.cfg, &s.state, &f.id, &choice).await {
            Ok(j) => j,
            Err(Error::NotFound(m)) => return (StatusCode::NOT_FOUND, m).into_response(),
            Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        }
    };
    s.refresh_gauges();
    // The next pass writes the decision everywhere: queue it now.
    let _ = s.request_run(&job, Trigger::Request, false, false);
    Redirect::to("/console/conflicts").into_response()
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn run_job(
    State(s): State<St>,
    h: HeaderMap,
    Path(job): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(r) = checked(&s, &h, &f.csrf) {
        return *r;
    }
    match s.request_run(&job, Trigger::Request, false, false) {
        Ok(id) => Redirect::to(&format!("/console/runs/{id}")).into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}

async fn reconcile(
    State(s): State<St>,
    h: HeaderMap,
    Path(job): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(r) = checked(&s, &h, &f.csrf) {
        return *r;
    }
    match s.reconcile(&job, false).await {
        Ok(_) => Redirect::to("/console").into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e.to_string()).into_response(),
    }
}
