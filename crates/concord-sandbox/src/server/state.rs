//! The sandbox's shared state: settings, faults, sessions, cursors, counters, and the error
//! and version helpers every API area uses.

use crate::org::{Org, SfError};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use serde_json::Value as J;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// The org's id (18 characters, key prefix 00D).
pub const ORG_ID: &str = "00D000000000001AAA";

/// The newest REST API version an org serves (Winter '27), the default newest of
/// [`ApiVersions`].
pub const CURRENT_API_VERSION: u32 = 68;
/// The oldest version an org serves: 7.0 – 30.0 are retired (21.0 – 30.0 since Summer '25) and
/// answer 410 GONE.
pub const OLDEST_API_VERSION: u32 = 31;

/// The REST API versions the sandbox serves, `oldest.0` to `newest.0`: older ones answer as
/// retired versions do (410 GONE), newer ones as unknown resources (404 NOT_FOUND). Behaviour is
/// the same in every version but for the resources that came later (see [`resource_since`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ApiVersions {
    pub oldest: u32,
    pub newest: u32,
}

impl Default for ApiVersions {
    fn default() -> Self {
        ApiVersions {
            oldest: OLDEST_API_VERSION,
            newest: CURRENT_API_VERSION,
        }
    }
}

impl std::str::FromStr for ApiVersions {
    type Err = String;
    /// `31.0-67.0` (or `31-67`); one version alone serves only it.
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, b) = s.split_once('-').unwrap_or((s, s));
        let one = |x: &str| {
            let x = x.trim();
            version_number(x)
                .or_else(|| x.parse::<u32>().ok().filter(|n| *n > 0))
                .ok_or_else(|| format!("`{x}` is not an API version (such as 62.0)"))
        };
        let (oldest, newest) = (one(a)?, one(b)?);
        if oldest > newest {
            return Err(format!("{oldest}.0 is newer than {newest}.0"));
        }
        Ok(ApiVersions { oldest, newest })
    }
}

impl std::fmt::Display for ApiVersions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.0-{}.0", self.oldest, self.newest)
    }
}

impl ApiVersions {
    /// Every version served, oldest first ("31.0", …).
    pub fn list(&self) -> Vec<String> {
        (self.oldest..=self.newest)
            .map(|n| format!("{n}.0"))
            .collect()
    }

    /// Whether a request to `/services/data/{v}/{rest}` reaches a resource: a retired version
    /// is 410 GONE, a version not (yet) served or a resource newer than the version 404.
    pub(crate) fn check(&self, v: &str, rest: &str) -> Result<(), SfError> {
        let not_found = || SfError::new(404, "NOT_FOUND", "The requested resource does not exist");
        let n = v
            .strip_prefix('v')
            .and_then(version_number)
            .ok_or_else(not_found)?;
        if n < self.oldest {
            return Err(SfError::new(
                410,
                "GONE",
                format!("API version {n}.0 has been retired and is no longer available"),
            ));
        }
        if n > self.newest || n < resource_since(rest) {
            return Err(not_found());
        }
        Ok(())
    }
}

/// `62.0` → 62 (API versions are whole: "NN.0").
fn version_number(v: &str) -> Option<u32> {
    let (major, minor) = v.split_once('.')?;
    let n = major.parse::<u32>().ok().filter(|n| *n > 0)?;
    (minor == "0" && !major.starts_with('+')).then_some(n)
}

/// The version a REST resource (the path after `/services/data/vNN.N/`) first appeared in, as
/// the REST API Developer Guide gives it: sObject Collections 42.0 (their upsert 46.0), Bulk
/// API 2.0 ingest 41.0 and query 47.0, composite 38.0; every other resource the sandbox serves
/// predates 31.0.
pub(crate) fn resource_since(rest: &str) -> u32 {
    let mut parts = rest.split('/');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some("composite"), Some("sobjects"), Some(_), Some(_)) => 46,
        (Some("composite"), Some("sobjects"), _, _) => 42,
        (Some("composite"), _, _, _) => 38,
        (Some("jobs"), Some("query"), _, _) => 47,
        (Some("jobs"), _, _, _) => 41,
        _ => 0,
    }
}

/// Sandbox settings.
#[derive(Clone)]
pub struct Settings {
    /// A bearer token that is valid from the start (every OAuth grant mints another).
    pub token: String,
    /// Daily API request limit.
    pub daily_limit: u64,
    /// The URL clients reach the sandbox at (`instance_url` in token responses).
    pub base_url: String,
    /// The connected app's consumer key (`client_id`) and secret.
    pub client_id: String,
    pub client_secret: String,
    /// The org's user for the password and JWT bearer grants, and its password.
    pub username: String,
    pub password: String,
    /// A refresh token the `refresh_token` grant accepts (as if issued by a web-server flow).
    pub refresh_token: String,
    /// PEM public key (or certificate) that verifies JWT bearer assertions (RS256); none: the
    /// JWT bearer grant is refused.
    pub jwt_public_key: Option<Vec<u8>>,
    /// The API versions served (the org's range by default).
    pub versions: ApiVersions,
    /// How long a Streaming API `/meta/connect` waits for events (ms; 110 000 as an org).
    pub streaming_timeout_ms: u64,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("daily_limit", &self.daily_limit)
            .field("base_url", &self.base_url)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("jwt", &self.jwt_public_key.is_some())
            .field("versions", &self.versions)
            .finish_non_exhaustive()
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            token: String::new(),
            daily_limit: 100_000,
            base_url: String::new(),
            client_id: "concord-sandbox".into(),
            client_secret: "concord-sandbox-secret".into(),
            username: "admin@sandbox.concord".into(),
            password: "concord-sandbox-password".into(),
            refresh_token: "5Aep861concordSandboxRefreshToken".into(),
            jwt_public_key: None,
            versions: ApiVersions::default(),
            streaming_timeout_ms: super::streaming::CONNECT_TIMEOUT_MS,
        }
    }
}

/// Faults the sandbox injects (set by `POST /admin/faults`; tests and benchmarks use them).
#[derive(Debug, Clone, Default, PartialEq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Faults {
    /// Share of API calls answered 503 SERVER_UNAVAILABLE (0.0 – 1.0).
    pub rate_503: f64,
    /// Share of writes (POST, PATCH, DELETE) answered UNABLE_TO_LOCK_ROW.
    pub rate_lock: f64,
    /// Added latency per API call, in milliseconds.
    pub latency_ms: u64,
    /// Share of API calls that are slow: delayed by `slow_ms` more (client timeouts).
    pub rate_slow: f64,
    pub slow_ms: u64,
    /// Every API call answers 403 REQUEST_LIMIT_EXCEEDED.
    pub limit_exceeded: bool,
    /// Share of API calls whose connection is dropped after the sandbox has processed them:
    /// the client gets no response (a write it sent may have been applied).
    pub rate_drop: f64,
    /// Seed of the fault generator (the same seed gives the same faults in the same order).
    pub seed: u64,
}

/// An open query cursor: every row of the query, served `batch` at a time. A page can be
/// asked for again (a client retrying a call whose answer it lost) while the cursor is open.
pub(crate) struct Cursor {
    pub(crate) rows: Vec<J>,
    pub(crate) batch: usize,
    /// The order it was opened in (the oldest is closed first, see [`OPEN_CURSORS`]).
    pub(crate) opened: u64,
}

/// Query cursors kept open at once; opening another closes the oldest (an org keeps a limited
/// number per user and closes the oldest likewise).
pub(crate) const OPEN_CURSORS: usize = 50;

/// Shared state.
pub struct Sandbox {
    pub org: Mutex<Org>,
    pub settings: Settings,
    pub(crate) usage: Mutex<u64>,
    pub(crate) counters: Mutex<BTreeMap<String, u64>>,
    pub(crate) cursors: Mutex<HashMap<String, std::sync::Arc<Cursor>>>,
    pub(crate) next_cursor: Mutex<u64>,
    pub(crate) faults: Mutex<(Faults, u64)>,
    pub(crate) bulk: Mutex<crate::bulk::jobs::Jobs>,
    /// Marks composite subrequests dispatched internally (one API call for the whole composite).
    pub(crate) internal_key: String,
    pub(crate) router: Mutex<Option<Router>>,
    /// Valid access tokens (the configured one and every one an OAuth grant issued).
    pub(crate) sessions: Mutex<std::collections::HashSet<String>>,
    /// Access tokens the refresh token grant issued (revoking the refresh token ends them),
    /// and whether the refresh token was revoked (`/services/oauth2/revoke`).
    pub(crate) refreshed: Mutex<(std::collections::HashSet<String>, bool)>,
    /// `--data`: the org's persistent copy.
    pub(crate) store: Mutex<Option<crate::persist::Persist>>,
    /// Streaming API clients and their subscriptions.
    pub(crate) bayeux: Mutex<super::streaming::Bayeux>,
}

impl Sandbox {
    pub fn new(org: Org, settings: Settings) -> Arc<Self> {
        Arc::new(Sandbox {
            org: Mutex::new(org),
            settings: settings.clone(),
            usage: Mutex::new(0),
            counters: Mutex::new(BTreeMap::new()),
            cursors: Mutex::new(HashMap::new()),
            next_cursor: Mutex::new(1),
            faults: Mutex::new((Faults::default(), 0)),
            internal_key: blake3::hash(
                format!("{:?}{}", std::time::SystemTime::now(), std::process::id()).as_bytes(),
            )
            .to_hex()
            .to_string(),
            router: Mutex::new(None),
            sessions: Mutex::new([settings.token.clone()].into_iter().collect()),
            refreshed: Mutex::new(Default::default()),
            store: Mutex::new(None),
            bulk: Mutex::new(crate::bulk::jobs::Jobs::default()),
            bayeux: Mutex::new(Default::default()),
        })
    }

    /// Keeps the org in `p` from now on (writes what changed after every call that changed
    /// something) and writes everything not yet written.
    pub fn attach_store(
        &self,
        p: crate::persist::Persist,
    ) -> Result<(), crate::persist::PersistError> {
        p.save(&mut self.org.lock().expect("lock"))?;
        *self.store.lock().expect("lock") = Some(p);
        Ok(())
    }

    /// Releases what the sandbox holds: the `--data` store (flushed and closed, so another
    /// sandbox can open it) and the router's reference to the sandbox.
    pub fn shutdown(&self) {
        let _ = self.persist();
        self.store.lock().expect("lock").take();
        self.router.lock().expect("lock").take();
    }

    /// Writes what changed to the `--data` store, if there is one.
    pub fn persist(&self) -> Result<(), crate::persist::PersistError> {
        let store = self.store.lock().expect("lock");
        match store.as_ref() {
            Some(p) => p.save(&mut self.org.lock().expect("lock")),
            None => Ok(()),
        }
    }

    /// Issues a new access token (an OAuth grant).
    pub(crate) fn new_session(&self) -> String {
        let mut n = self.next_cursor.lock().expect("lock");
        *n += 1;
        let t = format!(
            "00D000000000001!{}",
            &blake3::hash(
                format!(
                    "{}{}{:?}",
                    self.internal_key,
                    *n,
                    std::time::SystemTime::now()
                )
                .as_bytes()
            )
            .to_hex()[..48]
        );
        self.sessions.lock().expect("lock").insert(t.clone());
        t
    }

    /// The access token of a request's `Authorization: Bearer …` (or `OAuth …`) header, when
    /// it is a live session.
    pub(crate) fn session_of(&self, h: &axum::http::HeaderMap) -> Option<String> {
        let v = h.get("authorization")?.to_str().ok()?;
        let t = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("OAuth "))?;
        self.is_session(t).then(|| t.to_string())
    }

    /// The session of a Bulk API 1.0 call: `X-SFDC-Session` (what its clients send), else a
    /// bearer `Authorization` header.
    pub(crate) fn bulk_session_of(&self, h: &axum::http::HeaderMap) -> Option<String> {
        match h.get("x-sfdc-session").and_then(|v| v.to_str().ok()) {
            Some(t) => self.is_session(t.trim()).then(|| t.trim().to_string()),
            None => self.session_of(h),
        }
    }

    /// Whether `token` is a live session.
    pub(crate) fn is_session(&self, token: &str) -> bool {
        self.sessions.lock().expect("lock").contains(token)
    }

    /// Ends every session: all access tokens become invalid (`POST /admin/expire-sessions`).
    pub fn expire_sessions(&self) {
        self.sessions.lock().expect("lock").clear();
    }

    /// Replaces the fault settings (and restarts the generator from their seed).
    pub fn set_faults(&self, f: Faults) {
        let seed = f.seed;
        *self.faults.lock().expect("lock") = (f, seed);
    }

    /// A pseudo-random draw in [0, 1) from the fault generator (splitmix64).
    pub(crate) fn draw(&self) -> f64 {
        let mut g = self.faults.lock().expect("lock");
        g.1 = g.1.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = g.1;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// API calls per endpoint kind so far (`query`, `sobject.create`, …).
    pub fn counters(&self) -> BTreeMap<String, u64> {
        self.counters.lock().expect("lock").clone()
    }

    pub(crate) fn count(&self, what: &str) {
        *self
            .counters
            .lock()
            .expect("lock")
            .entry(what.to_string())
            .or_default() += 1;
    }
}

pub(crate) type St = Arc<Sandbox>;

pub(crate) fn err(e: SfError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    (status, Json(e.body())).into_response()
}

/// The version of a `/services/data/{v}/…` path (`v62.0` → `62.0`). The range and the
/// resource's own version were checked by the API guard ([`ApiVersions::check`]) before any
/// handler runs.
pub(crate) fn version_ok(v: &str) -> Result<&str, SfError> {
    match v.strip_prefix('v') {
        Some(n) if version_number(n).is_some() => Ok(n),
        _ => Err(SfError::new(
            404,
            "NOT_FOUND",
            "The requested resource does not exist",
        )),
    }
}

/// Salesforce answers a resource with or without a trailing slash (`sobjects/Account/`, as
/// simple-salesforce sends it): the path loses it before routing.
pub fn trim_trailing_slash<B>(mut req: axum::http::Request<B>) -> axum::http::Request<B> {
    let path = req.uri().path();
    if path.len() > 1 && path.ends_with('/') {
        let trimmed = path.trim_end_matches('/');
        let pq = match req.uri().query() {
            Some(q) => format!("{trimmed}?{q}"),
            None => trimmed.to_string(),
        };
        let mut parts = req.uri().clone().into_parts();
        if let Ok(pq) = pq.parse() {
            parts.path_and_query = Some(pq);
            if let Ok(uri) = axum::http::Uri::from_parts(parts) {
                *req.uri_mut() = uri;
            }
        }
    }
    req
}

/// Gives the answers the router and the request extractors make on their own (an unknown
/// resource, a method the resource does not take, a body or query string that does not parse)
/// Salesforce's error array instead of an empty or plain-text body: 404 `NOT_FOUND`, 405
/// `METHOD_NOT_ALLOWED` (the `Allow` header kept), 415 `UNSUPPORTED_MEDIA_TYPE`, a malformed
/// JSON body 400 `JSON_PARSER_ERROR`, a malformed query string 400 `MALFORMED_QUERY`. Answers
/// that already are JSON, and everything outside the REST API, pass unchanged. Under Bulk API
/// 1.0's `/services/async`, a 404 or 405 is its `InvalidUrl` error (XML, or JSON when asked).
pub(crate) async fn error_bodies(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    let content_type = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bulk_json = crate::bulk::v1::wants_json(req.headers());
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    if path.starts_with("/services/async/")
        && matches!(status, 404 | 405)
        && resp
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .is_none()
    {
        return crate::bulk::v1::unknown_url(status, bulk_json);
    }
    let json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("application/json"));
    if json || !path.starts_with("/services/data") || !matches!(status, 400 | 404 | 405 | 415 | 422)
    {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 64 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let e = match status {
        404 => SfError::new(404, "NOT_FOUND", "The requested resource does not exist"),
        405 => {
            let allowed = parts
                .headers
                .get(axum::http::header::ALLOW)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .replace(' ', "");
            let mut r = err(SfError::new(
                405,
                "METHOD_NOT_ALLOWED",
                format!("HTTP Method '{method}' not allowed. Allowed are {allowed}"),
            ));
            if let Some(a) = parts.headers.get(axum::http::header::ALLOW) {
                r.headers_mut().insert(axum::http::header::ALLOW, a.clone());
            }
            return r;
        }
        415 => SfError::new(
            415,
            "UNSUPPORTED_MEDIA_TYPE",
            format!(
                "Content-Type header specified in HTTP request is not supported: {}",
                if content_type.is_empty() {
                    "none"
                } else {
                    &content_type
                }
            ),
        ),
        _ if text.contains("query string") => SfError::new(400, "MALFORMED_QUERY", text),
        _ => SfError::new(400, "JSON_PARSER_ERROR", text),
    };
    err(e)
}
