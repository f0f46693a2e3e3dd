//! What every API call goes through: the bearer-token check, the daily limit and
//! `Sforce-Limit-Info`, injected faults (503, row locks, latency, dropped connections), and
//! `GET /limits`.

use super::state::*;
use crate::bulk::v1;
use crate::org::SfError;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;
use concord_model::model::Timestamp;
use serde_json::{json, Value as J};

/// A REST call without a live session: 401 with Salesforce's body.
fn invalid_session() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        Json(json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])),
    )
        .into_response()
}

/// Salesforce finishes a request whose client went away (a killed process, a cut connection):
/// a request received is processed to its end — its effects land — whether or not its answer
/// can still be delivered. (Dropping the handler with the connection would make every lost
/// answer one whose write did not happen, and hide what a client must cope with.) Streaming
/// long polls are the exception: one left behind would take events its client then misses.
pub(crate) async fn to_completion(req: Request, next: Next) -> Response {
    if req.uri().path().starts_with("/cometd/") {
        return next.run(req).await;
    }
    match tokio::spawn(next.run(req)).await {
        Ok(r) => r,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => StatusCode::SERVICE_UNAVAILABLE.into_response(),
    }
}

/// Bearer-token check, daily limit, usage counting and the `Sforce-Limit-Info` header.
pub(crate) async fn api_guard(State(sb): State<St>, req: Request, next: Next) -> Response {
    // Bulk API 1.0 (`/services/async/{v}/…`) answers refusals in its own form, XML or JSON.
    let bulk_v1 = req.uri().path().starts_with("/services/async/");
    let json = bulk_v1 && v1::wants_json(req.headers());
    let refuse = |e: SfError| {
        if !bulk_v1 {
            return err(e);
        }
        let code = match e.code {
            "REQUEST_LIMIT_EXCEEDED" => "ExceededQuota",
            "SERVER_UNAVAILABLE" => "ServerUnavailable",
            other => other,
        };
        v1::refusal(e.status, code, &e.message, json)
    };
    // `/services/data/{v}/{rest}`: a retired version, one not served or a resource newer than
    // the version answers before anything else (composite subrequests included).
    if let Some(tail) = req.uri().path().strip_prefix("/services/data/") {
        let (v, rest) = tail.split_once('/').unwrap_or((tail, ""));
        if let Err(e) = sb.settings.versions.check(v, rest) {
            return err(e);
        }
    }
    // Bulk API 1.0 names its version without the `v` and refuses one it does not serve (a
    // retired one included) with 400 InvalidVersion.
    if let Some(tail) = req.uri().path().strip_prefix("/services/async/") {
        let v = tail.split('/').next().unwrap_or("");
        if sb.settings.versions.check(&format!("v{v}"), "").is_err() {
            return v1::refusal(
                400,
                "InvalidVersion",
                &format!("Invalid Api version specified on URL: {v}"),
                json,
            );
        }
    }
    // The Streaming API (`/cometd/{v}`): its version is a REST one; its long polls do not count
    // as API requests (an org counts streaming apart), and faults do not apply.
    if let Some(tail) = req.uri().path().strip_prefix("/cometd/") {
        let v = tail.split('/').next().unwrap_or("");
        if let Err(e) = sb.settings.versions.check(&format!("v{v}"), "") {
            return err(e);
        }
        if sb.session_of(req.headers()).is_none() {
            return invalid_session();
        }
        return next.run(req).await;
    }
    let session = if bulk_v1 {
        sb.bulk_session_of(req.headers())
    } else {
        sb.session_of(req.headers())
    };
    if session.is_none() {
        if bulk_v1 {
            // What jsforce's Bulk client takes as an expired session (it then refreshes).
            return v1::refusal(400, "InvalidSessionId", "Invalid session id", json);
        }
        return invalid_session();
    }
    if req
        .headers()
        .get("x-concord-internal")
        .is_some_and(|v| v.as_bytes() == sb.internal_key.as_bytes())
    {
        return next.run(req).await; // a composite subrequest: counted with its composite
    }
    let faults = sb.faults.lock().expect("lock").0.clone();
    if faults.latency_ms > 0 {
        tokio::time::sleep(std::time::Duration::from_millis(faults.latency_ms)).await;
    }
    if faults.rate_slow > 0.0 && sb.draw() < faults.rate_slow {
        sb.count("fault.slow");
        tokio::time::sleep(std::time::Duration::from_millis(faults.slow_ms)).await;
    }
    if faults.limit_exceeded {
        sb.count("fault.limit_exceeded");
        return refuse(SfError::new(
            403,
            "REQUEST_LIMIT_EXCEEDED",
            "TotalRequests Limit exceeded.",
        ));
    }
    if faults.rate_503 > 0.0 && sb.draw() < faults.rate_503 {
        sb.count("fault.503");
        let mut r = if bulk_v1 {
            refuse(SfError::new(
                503,
                "SERVER_UNAVAILABLE",
                "Service Unavailable",
            ))
        } else {
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(
                    json!([{"message": "Service Unavailable", "errorCode": "SERVER_UNAVAILABLE"}]),
                ),
            )
                .into_response()
        };
        r.headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
        return r;
    }
    let write = matches!(req.method().as_str(), "POST" | "PATCH" | "DELETE");
    let req_is_put = req.method() == axum::http::Method::PUT;
    // A row lock fails a REST write whole; Bulk API 1.0 meets locks record by record inside a
    // batch, so the fault does not apply to its calls.
    if write && !bulk_v1 && faults.rate_lock > 0.0 && sb.draw() < faults.rate_lock {
        sb.count("fault.lock");
        return err(SfError::new(
            400,
            "UNABLE_TO_LOCK_ROW",
            "unable to obtain exclusive access to this record or 1 records",
        ));
    }
    let used = {
        let mut u = sb.usage.lock().expect("lock");
        if *u >= sb.settings.daily_limit {
            None
        } else {
            *u += 1;
            Some(*u)
        }
    };
    let Some(used) = used else {
        let mut r = refuse(SfError::new(
            403,
            "REQUEST_LIMIT_EXCEEDED",
            "TotalRequests Limit exceeded.",
        ));
        limit_header(
            r.headers_mut(),
            sb.settings.daily_limit,
            sb.settings.daily_limit,
        );
        return r;
    };
    let mut resp = next.run(req).await;
    if write || req_is_put {
        if let Err(e) = sb.persist() {
            tracing::error!("sandbox: {e}");
            resp = err(SfError::new(
                500,
                "UNKNOWN_EXCEPTION",
                format!("the sandbox could not persist the change: {e}"),
            ));
        }
    }
    if faults.rate_drop > 0.0 && sb.draw() < faults.rate_drop {
        sb.count("fault.drop");
        return dropped_connection(resp);
    }
    limit_header(resp.headers_mut(), used, sb.settings.daily_limit);
    // The org's own clock (which tests and benchmarks may move), as Salesforce sends its time.
    let now_ms = Timestamp::now().millis() + sb.org.lock().expect("lock").clock_offset_ms;
    if let Some(t) = chrono::DateTime::from_timestamp_millis(now_ms) {
        if let Ok(v) = HeaderValue::from_str(&t.format("%a, %d %b %Y %H:%M:%S GMT").to_string()) {
            resp.headers_mut().insert("date", v);
        }
    }
    resp
}

/// A response whose body fails after the head: the server closes the connection mid-response,
/// so the client sees a broken connection instead of an answer.
pub(crate) fn dropped_connection(resp: Response) -> Response {
    struct Broken;
    impl http_body::Body for Broken {
        type Data = axum::body::Bytes;
        type Error = std::io::Error;
        fn poll_frame(
            self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
            std::task::Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "sandbox fault: connection dropped",
            ))))
        }
    }
    let (mut parts, _) = resp.into_parts();
    parts.headers.remove("content-length");
    parts
        .headers
        .insert("connection", HeaderValue::from_static("close"));
    Response::from_parts(parts, axum::body::Body::new(Broken))
}

pub(crate) fn limit_header(h: &mut HeaderMap, used: u64, max: u64) {
    if let Ok(v) = HeaderValue::from_str(&format!("api-usage={used}/{max}")) {
        h.insert("sforce-limit-info", v);
    }
}

/// `GET /limits`: the org's limits as an Enterprise Edition org reports them, every one with
/// `Max` and `Remaining`. Tracked: `DailyApiRequests` (the daily limit and this day's calls),
/// `DailyBulkV2QueryJobs` (Bulk 2.0 query jobs created), `DailyBulkApiBatches` (Bulk API 1.0 batches,
/// PK chunks included, and Bulk API 2.0 ingest jobs: each job's data is one batch here; also as `DailyBulkApiRequests`, its older name) and `DataStorageMB` (2 KB a record, as an org
/// counts most records, recycle bin included). The others report their edition's maximum as
/// remaining: the sandbox does not consume them.
pub(crate) async fn limits(State(sb): State<St>, Path(v): Path<String>) -> Response {
    if let Err(e) = version_ok(&v) {
        return err(e);
    }
    sb.count("limits");
    let used = *sb.usage.lock().expect("lock");
    let max = sb.settings.daily_limit;
    let counters = sb.counters();
    let count = |k: &str| counters.get(k).copied().unwrap_or(0);
    let records = sb.org.lock().expect("lock").record_count() as u64;
    let storage_max: u64 = 1024;
    let storage_used = (records * 2).div_ceil(1024);
    let mut out = serde_json::Map::new();
    let mut put = |k: &str, max: u64, remaining: u64| {
        out.insert(
            k.into(),
            json!({"Max": max, "Remaining": remaining.min(max)}),
        );
    };
    put("DailyApiRequests", max, max.saturating_sub(used));
    put(
        "DailyBulkV2QueryJobs",
        10_000,
        10_000u64.saturating_sub(count("bulk.query.create")),
    );
    put("DailyBulkV2QueryFileStorageMB", 976_562, 976_562);
    // Older orgs name the Bulk API's daily batches DailyBulkApiRequests: both are reported.
    for k in ["DailyBulkApiBatches", "DailyBulkApiRequests"] {
        put(
            k,
            15_000,
            15_000u64.saturating_sub(count("bulk.ingest.create") + count("bulk.v1.batch")),
        );
    }
    put(
        "DataStorageMB",
        storage_max,
        storage_max.saturating_sub(storage_used),
    );
    for (k, m) in UNTRACKED {
        put(k, *m, *m);
    }
    Json(J::Object(out)).into_response()
}

/// Limits the sandbox reports but does not consume, with an Enterprise Edition org's maximum.
const UNTRACKED: &[(&str, u64)] = &[
    ("ActiveScratchOrgs", 3),
    ("AnalyticsExternalDataSizeMB", 40_960),
    ("ConcurrentAsyncGetReportInstances", 200),
    ("ConcurrentEinsteinDataInsightsStoryCreation", 5),
    ("ConcurrentEinsteinDiscoveryStoryCreation", 2),
    ("ConcurrentSyncReportRuns", 20),
    ("DailyAnalyticsDataflowJobExecutions", 60),
    ("DailyAnalyticsUploadedFilesSizeMB", 51_200),
    ("DailyAsyncApexExecutions", 250_000),
    ("DailyAsyncApexTests", 500),
    ("DailyDeliveredPlatformEvents", 50_000),
    ("DailyDurableGenericStreamingApiEvents", 10_000),
    ("DailyDurableStreamingApiEvents", 10_000),
    ("DailyEinsteinDataInsightsStoryCreation", 1_000),
    ("DailyEinsteinDiscoveryPredictAPICalls", 50_000),
    ("DailyEinsteinDiscoveryPredictionsByCDC", 500_000),
    ("DailyEinsteinDiscoveryStoryCreation", 100),
    ("DailyFunctionsApiCallLimit", 235_000),
    ("DailyGenericStreamingApiEvents", 10_000),
    ("DailyScratchOrgs", 6),
    ("DailyStandardVolumePlatformEvents", 10_000),
    ("DailyStreamingApiEvents", 10_000),
    ("DailyWorkflowEmails", 2_000),
    ("DurableStreamingApiConcurrentClients", 20),
    ("FileStorageMB", 10_240),
    ("HourlyAsyncReportRuns", 1_200),
    ("HourlyDashboardRefreshes", 200),
    ("HourlyDashboardResults", 5_000),
    ("HourlyDashboardStatuses", 999_999_999),
    ("HourlyLongTermIdMapping", 100_000),
    ("HourlyManagedContentPublicRequests", 50_000),
    ("HourlyODataCallout", 10_000),
    ("HourlyPublishedPlatformEvents", 50_000),
    ("HourlyPublishedStandardVolumePlatformEvents", 1_000),
    ("HourlyShortTermIdMapping", 100_000),
    ("HourlySyncReportRuns", 500),
    ("HourlyTimeBasedWorkflow", 50),
    ("MassEmail", 10),
    ("MonthlyEinsteinDiscoveryStoryCreation", 500),
    ("MonthlyPlatformEventsUsageEntitlement", 0),
    ("Package2VersionCreates", 6),
    ("Package2VersionCreatesWithoutValidation", 500),
    ("PermissionSets", 1_500),
    ("PrivateConnectOutboundCalloutHourlyLimitMB", 0),
    ("PublishCallbackUsageInApex", 5_000_000),
    ("SingleEmail", 15),
    ("StreamingApiConcurrentClients", 20),
];
