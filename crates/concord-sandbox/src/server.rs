//! The sandbox's HTTP server (REST API subset; in progress — see `docs/sandbox.md` once it
//! exists). Versions, OAuth token, describeGlobal/describe, sObject CRUD and upsert by external
//! id, query/queryAll with paging and `Sforce-Query-Options: batchSize`, getUpdated/getDeleted,
//! limits, `Sforce-Limit-Info` on every response, a daily API limit, and per-endpoint call
//! counters under `/admin/counters`.

use super::org::{Org, QueryResult, SfError, Upserted};
use super::{bulk, soql};
use axum::extract::{Form, Path, Query as Q, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use concord_model::model::Timestamp;
use serde_json::{json, Map, Value as J};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

/// API versions the sandbox answers.
pub const VERSIONS: [&str; 5] = ["58.0", "59.0", "60.0", "61.0", "62.0"];

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
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("daily_limit", &self.daily_limit)
            .field("base_url", &self.base_url)
            .field("client_id", &self.client_id)
            .field("username", &self.username)
            .field("jwt", &self.jwt_public_key.is_some())
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

struct Cursor {
    rows: Vec<J>,
    total: usize,
    batch: usize,
}

/// Shared state.
pub struct Sandbox {
    pub org: Mutex<Org>,
    pub settings: Settings,
    usage: Mutex<u64>,
    counters: Mutex<BTreeMap<String, u64>>,
    cursors: Mutex<HashMap<String, Cursor>>,
    pub(super) next_cursor: Mutex<u64>,
    faults: Mutex<(Faults, u64)>,
    pub(super) bulk: Mutex<super::bulk::Jobs>,
    /// Marks composite subrequests dispatched internally (one API call for the whole composite).
    internal_key: String,
    router: Mutex<Option<Router>>,
    /// Valid access tokens (the configured one and every one an OAuth grant issued).
    sessions: Mutex<std::collections::HashSet<String>>,
    /// `--data`: the org's persistent copy.
    store: Mutex<Option<super::persist::Persist>>,
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
            store: Mutex::new(None),
            bulk: Mutex::new(super::bulk::Jobs::default()),
        })
    }

    /// Keeps the org in `p` from now on (writes what changed after every call that changed
    /// something) and writes everything not yet written.
    pub fn attach_store(
        &self,
        p: super::persist::Persist,
    ) -> Result<(), super::persist::PersistError> {
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
    pub fn persist(&self) -> Result<(), super::persist::PersistError> {
        let store = self.store.lock().expect("lock");
        match store.as_ref() {
            Some(p) => p.save(&mut self.org.lock().expect("lock")),
            None => Ok(()),
        }
    }

    /// Issues a new access token (an OAuth grant).
    fn new_session(&self) -> String {
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
    fn draw(&self) -> f64 {
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

    pub(super) fn count(&self, what: &str) {
        *self
            .counters
            .lock()
            .expect("lock")
            .entry(what.to_string())
            .or_default() += 1;
    }
}

pub(super) type St = Arc<Sandbox>;

pub(super) fn err(e: SfError) -> Response {
    let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST);
    (status, Json(e.body())).into_response()
}

pub(super) fn version_ok(v: &str) -> Result<&str, SfError> {
    let v = v.strip_prefix('v').unwrap_or(v);
    if VERSIONS.contains(&v) {
        Ok(v)
    } else {
        Err(SfError::new(
            404,
            "NOT_FOUND",
            "The requested resource does not exist",
        ))
    }
}

/// Bearer-token check, daily limit, usage counting and the `Sforce-Limit-Info` header.
async fn api_guard(State(sb): State<St>, req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get("authorization")
        .and_then(|h| h.to_str().ok())
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("OAuth "))
        })
        .is_some_and(|t| sb.sessions.lock().expect("lock").contains(t));
    if !ok {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!([{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}])),
        )
            .into_response();
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
        return err(SfError::new(
            403,
            "REQUEST_LIMIT_EXCEEDED",
            "TotalRequests Limit exceeded.",
        ));
    }
    if faults.rate_503 > 0.0 && sb.draw() < faults.rate_503 {
        sb.count("fault.503");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [("retry-after", "1")],
            Json(json!([{"message": "Service Unavailable", "errorCode": "SERVER_UNAVAILABLE"}])),
        )
            .into_response();
    }
    let write = matches!(req.method().as_str(), "POST" | "PATCH" | "DELETE");
    let req_is_put = req.method() == axum::http::Method::PUT;
    if write && faults.rate_lock > 0.0 && sb.draw() < faults.rate_lock {
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
        let mut r = err(SfError::new(
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
fn dropped_connection(resp: Response) -> Response {
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

fn limit_header(h: &mut HeaderMap, used: u64, max: u64) {
    if let Ok(v) = HeaderValue::from_str(&format!("api-usage={used}/{max}")) {
        h.insert("sforce-limit-info", v);
    }
}

async fn versions(State(sb): State<St>) -> Json<J> {
    sb.count("versions");
    Json(J::Array(
        VERSIONS
            .iter()
            .map(|v| json!({"label": format!("API {v}"), "url": format!("/services/data/v{v}"), "version": v}))
            .collect(),
    ))
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// Claims of a JWT bearer assertion (Salesforce's OAuth 2.0 JWT bearer flow).
#[derive(serde::Deserialize)]
struct JwtClaims {
    sub: String,
}

/// Checks a JWT bearer assertion: RS256 signature by the configured key, `iss` = the consumer
/// key, `aud` = the login URL (or the sandbox's own), `sub` = the org's user, `exp` not past and
/// at most 3 minutes ahead (as Salesforce requires).
fn check_jwt(sb: &Sandbox, assertion: &str) -> Result<(), &'static str> {
    use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
    let pem = sb
        .settings
        .jwt_public_key
        .as_deref()
        .ok_or("JWT bearer is not enabled (no public key configured)")?;
    let key = DecodingKey::from_rsa_pem(pem)
        .map_err(|_| "the configured public key is not an RSA PEM key")?;
    let mut v = Validation::new(Algorithm::RS256);
    v.set_audience(&[
        "https://login.salesforce.com",
        "https://test.salesforce.com",
        sb.settings.base_url.as_str(),
    ]);
    v.set_issuer(&[sb.settings.client_id.as_str()]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    v.leeway = 0;
    let data = decode::<serde_json::Value>(assertion, &key, &v).map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::ExpiredSignature => "expired assertion",
        jsonwebtoken::errors::ErrorKind::InvalidIssuer => "client identifier invalid",
        jsonwebtoken::errors::ErrorKind::InvalidAudience => "audience is invalid",
        _ => "invalid assertion",
    })?;
    let exp = data.claims.get("exp").and_then(J::as_i64).unwrap_or(0);
    if exp > Timestamp::now().millis() / 1000 + 180 {
        return Err("invalid assertion: exp is more than 3 minutes ahead");
    }
    let claims: JwtClaims = serde_json::from_value(data.claims).map_err(|_| "invalid assertion")?;
    if !claims.sub.eq_ignore_ascii_case(&sb.settings.username) {
        return Err("user hasn't approved this consumer");
    }
    Ok(())
}

/// `POST /services/oauth2/token`: client_credentials, password (password or password + security
/// token), refresh_token and JWT bearer grants, each checked like Salesforce checks them.
async fn token(State(sb): State<St>, Form(form): Form<HashMap<String, String>>) -> Response {
    sb.count("oauth.token");
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let s = &sb.settings;
    let client_ok = get("client_id") == s.client_id;
    let secret_ok = get("client_secret") == s.client_secret;
    match get("grant_type") {
        "client_credentials" => {
            if !client_ok {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_client_id",
                    "client identifier invalid",
                );
            }
            if !secret_ok {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_client",
                    "invalid client credentials",
                );
            }
        }
        "password" => {
            if !client_ok {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_client_id",
                    "client identifier invalid",
                );
            }
            if !secret_ok {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_client",
                    "invalid client credentials",
                );
            }
            let pw = get("password");
            if !get("username").eq_ignore_ascii_case(&s.username)
                || !(pw == s.password
                    || pw
                        .strip_prefix(s.password.as_str())
                        .is_some_and(|t| !t.is_empty()))
            {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "authentication failure",
                );
            }
        }
        "refresh_token" => {
            if !client_ok {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_client_id",
                    "client identifier invalid",
                );
            }
            if form.contains_key("client_secret") && !secret_ok {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_client",
                    "invalid client credentials",
                );
            }
            if get("refresh_token") != s.refresh_token {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "invalid_grant",
                    "expired access/refresh token",
                );
            }
        }
        "urn:ietf:params:oauth:grant-type:jwt-bearer" => {
            if let Err(why) = check_jwt(&sb, get("assertion")) {
                let code = if why == "client identifier invalid" {
                    "invalid_client_id"
                } else {
                    "invalid_grant"
                };
                return oauth_error(StatusCode::BAD_REQUEST, code, why);
            }
        }
        _ => {
            return oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "grant type not supported",
            )
        }
    }
    let now = Timestamp::now().millis();
    let user = sb.org.lock().expect("lock").user_id.clone();
    let access = sb.new_session();
    let signature = {
        let mac = blake3::keyed_hash(
            blake3::hash(s.client_secret.as_bytes()).as_bytes(),
            format!("{}/id/00D000000000001AAA/{user}{now}", s.base_url).as_bytes(),
        );
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, mac.as_bytes())
    };
    Json(json!({
        "access_token": access,
        "instance_url": s.base_url,
        "id": format!("{}/id/00D000000000001AAA/{user}", s.base_url),
        "token_type": "Bearer",
        "issued_at": now.to_string(),
        "signature": signature,
        "scope": "api",
    }))
    .into_response()
}

async fn sobjects(State(sb): State<St>, Path(v): Path<String>) -> Response {
    let v = match version_ok(&v) {
        Ok(v) => v,
        Err(e) => return err(e),
    };
    sb.count("describeGlobal");
    let org = sb.org.lock().expect("lock");
    let list: Vec<J> = org
        .objects()
        .iter()
        .map(|o| super::schema::global_entry(o, v))
        .collect();
    Json(json!({"encoding": "UTF-8", "maxBatchSize": 200, "sobjects": list})).into_response()
}

async fn describe(State(sb): State<St>, Path((v, s)): Path<(String, String)>) -> Response {
    let v = match version_ok(&v) {
        Ok(v) => v,
        Err(e) => return err(e),
    };
    sb.count("describe");
    let org = sb.org.lock().expect("lock");
    match org.object(&s) {
        Ok(o) => Json(super::schema::describe(o, v)).into_response(),
        Err(e) => err(e),
    }
}

async fn create(
    State(sb): State<St>,
    Path((v, s)): Path<(String, String)>,
    Json(body): Json<J>,
) -> Response {
    let v = match version_ok(&v) {
        Ok(v) => v.to_string(),
        Err(e) => return err(e),
    };
    sb.count("sobject.create");
    let Some(fields) = body.as_object() else {
        return err(SfError::new(
            400,
            "JSON_PARSER_ERROR",
            "The request body must be a JSON object",
        ));
    };
    match sb.org.lock().expect("lock").create(&s, fields) {
        Ok(id) => (
            StatusCode::CREATED,
            [("location", format!("/services/data/v{v}/sobjects/{s}/{id}"))],
            Json(json!({"id": id, "success": true, "errors": []})),
        )
            .into_response(),
        Err(e) => err(e),
    }
}

#[derive(serde::Deserialize)]
struct FieldsParam {
    fields: Option<String>,
}

async fn retrieve(
    State(sb): State<St>,
    Path((v, s, id)): Path<(String, String, String)>,
    Q(p): Q<FieldsParam>,
) -> Response {
    let v = match version_ok(&v) {
        Ok(v) => v,
        Err(e) => return err(e),
    };
    sb.count("sobject.retrieve");
    let org = sb.org.lock().expect("lock");
    let o = match org.object(&s) {
        Ok(o) => o.clone(),
        Err(e) => return err(e),
    };
    let rec = match org.get(&s, &id) {
        Ok(r) => r,
        Err(e) => return err(e),
    };
    let mut out = Map::new();
    out.insert(
        "attributes".into(),
        json!({"type": o.name, "url": format!("/services/data/v{v}/sobjects/{}/{}", o.name, rec.fields["Id"].as_str().unwrap_or(""))}),
    );
    match p.fields {
        Some(list) => {
            for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                match o.field(name) {
                    Some(f) => {
                        out.insert(
                            f.name.clone(),
                            rec.fields.get(&f.name).cloned().unwrap_or(J::Null),
                        );
                    }
                    None => {
                        return err(SfError::new(
                            400,
                            "INVALID_FIELD",
                            format!("No such column '{name}' on sobject of type {}", o.name),
                        ))
                    }
                }
            }
        }
        None => {
            for f in &o.fields {
                out.insert(
                    f.name.clone(),
                    rec.fields.get(&f.name).cloned().unwrap_or(J::Null),
                );
            }
        }
    }
    Json(J::Object(out)).into_response()
}

/// `If-Unmodified-Since` (an HTTP date, second precision): the record's LastModifiedDate, to
/// the second, must not be later. Malformed: 400, as an org answers.
fn unmodified_since(h: &HeaderMap) -> Result<Option<i64>, SfError> {
    let Some(v) = h.get("if-unmodified-since") else {
        return Ok(None);
    };
    v.to_str()
        .ok()
        .and_then(|s| chrono::DateTime::parse_from_rfc2822(s.trim()).ok())
        .map(|d| Some(d.timestamp()))
        .ok_or_else(|| {
            SfError::new(
                400,
                "INVALID_HEADER_VALUE",
                "If-Unmodified-Since must be an HTTP date (EEE, dd MMM yyyy HH:mm:ss z)",
            )
        })
}

async fn update(
    State(sb): State<St>,
    Path((v, s, id)): Path<(String, String, String)>,
    headers: HeaderMap,
    Json(body): Json<J>,
) -> Response {
    if let Err(e) = version_ok(&v) {
        return err(e);
    }
    sb.count("sobject.update");
    let Some(fields) = body.as_object() else {
        return err(SfError::new(
            400,
            "JSON_PARSER_ERROR",
            "The request body must be a JSON object",
        ));
    };
    let since = match unmodified_since(&headers) {
        Ok(s) => s,
        Err(e) => return err(e),
    };
    let mut org = sb.org.lock().expect("lock");
    if let Some(since) = since {
        let modified = match org.get(&s, &id) {
            Ok(r) => r
                .fields
                .get("LastModifiedDate")
                .and_then(J::as_str)
                .and_then(|t| Timestamp::parse(t).ok())
                .map(|t| t.millis().div_euclid(1000)),
            Err(e) => return err(e),
        };
        if modified.is_some_and(|m| m > since) {
            return err(SfError::new(
                412,
                "PRECONDITION_FAILED",
                "The record was modified after the date given in If-Unmodified-Since",
            ));
        }
    }
    match org.update(&s, &id, fields) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => err(e),
    }
}

async fn destroy(
    State(sb): State<St>,
    Path((v, s, id)): Path<(String, String, String)>,
) -> Response {
    if let Err(e) = version_ok(&v) {
        return err(e);
    }
    sb.count("sobject.delete");
    match sb.org.lock().expect("lock").delete(&s, &id) {
        Ok(()) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => err(e),
    }
}

async fn upsert(
    State(sb): State<St>,
    Path((v, s, field, value)): Path<(String, String, String, String)>,
    Json(body): Json<J>,
) -> Response {
    if let Err(e) = version_ok(&v) {
        return err(e);
    }
    sb.count("sobject.upsert");
    let Some(fields) = body.as_object() else {
        return err(SfError::new(
            400,
            "JSON_PARSER_ERROR",
            "The request body must be a JSON object",
        ));
    };
    match sb
        .org
        .lock()
        .expect("lock")
        .upsert(&s, &field, &value, fields)
    {
        Ok(Upserted::Created(id)) => (
            StatusCode::CREATED,
            Json(json!({"id": id, "success": true, "errors": [], "created": true})),
        )
            .into_response(),
        Ok(Upserted::Updated(id)) => (
            StatusCode::OK,
            Json(json!({"id": id, "success": true, "errors": [], "created": false})),
        )
            .into_response(),
        Err(e) if e.status == 300 => {
            let urls: Vec<String> = e
                .fields
                .iter()
                .map(|id| format!("/services/data/v{v}/sobjects/{s}/{id}"))
                .collect();
            (StatusCode::MULTIPLE_CHOICES, Json(json!(urls))).into_response()
        }
        Err(e) => err(e),
    }
}

/// One collection result in Salesforce's form.
fn collection_result(r: Result<(String, Option<bool>), SfError>) -> J {
    match r {
        Ok((id, created)) => {
            let mut j = json!({"id": id, "success": true, "errors": []});
            if let Some(c) = created {
                j["created"] = json!(c);
            }
            j
        }
        Err(e) => json!({
            "id": null,
            "success": false,
            "errors": [{"statusCode": e.code, "message": e.message, "fields": e.fields}],
        }),
    }
}

#[derive(serde::Deserialize)]
struct CollectionBody {
    #[serde(rename = "allOrNone", default)]
    all_or_none: bool,
    records: Vec<J>,
}

const ROLLED_BACK: &str = "Record rolled back because not all records were valid and the request was using AllOrNone header";

/// Runs `f` on each record under one org lock; with allOrNone, any failure restores the org
/// and turns the successes into ALL_OR_NONE_OPERATION_ROLLED_BACK.
fn collection(
    sb: &Sandbox,
    all_or_none: bool,
    n: usize,
    mut f: impl FnMut(&mut Org, usize) -> Result<(String, Option<bool>), SfError>,
) -> Response {
    if n > 200 {
        return err(SfError::new(
            400,
            "EXCEEDED_ID_LIMIT",
            "record limit reached. cannot submit more than 200 records into this call",
        ));
    }
    let mut org = sb.org.lock().expect("lock");
    let before = if all_or_none { Some(org.clone()) } else { None };
    let results: Vec<Result<(String, Option<bool>), SfError>> =
        (0..n).map(|i| f(&mut org, i)).collect();
    let failed = results.iter().any(|r| r.is_err());
    let out: Vec<J> = if failed && all_or_none {
        *org = before.expect("kept for allOrNone");
        results
            .into_iter()
            .map(|r| match r {
                Ok(_) => collection_result(Err(SfError::new(
                    400,
                    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                    ROLLED_BACK,
                ))),
                Err(e) => collection_result(Err(e)),
            })
            .collect()
    } else {
        results.into_iter().map(collection_result).collect()
    };
    Json(J::Array(out)).into_response()
}

fn record_type(r: &J) -> Result<String, SfError> {
    r.get("attributes")
        .and_then(|a| a.get("type"))
        .and_then(J::as_str)
        .map(str::to_string)
        .ok_or_else(|| {
            SfError::new(
                400,
                "INVALID_TYPE",
                "Must specify a type in the attributes of every record",
            )
        })
}

async fn collection_create(
    State(sb): State<St>,
    Path(v): Path<String>,
    Json(body): Json<CollectionBody>,
) -> Response {
    if let Err(e) = version_ok(&v) {
        return err(e);
    }
    sb.count("composite.sobjects.create");
    let recs = body.records;
    collection(&sb, body.all_or_none, recs.len(), |org, i| {
        let ty = record_type(&recs[i])?;
        let fields = recs[i].as_object().cloned().unwrap_or_default();
        if fields.contains_key("Id") {
            return Err(SfError::new(
                400,
                "INVALID_FIELD",
                "cannot specify Id in an insert call",
            ));
        }
        org.create(&ty, &fields).map(|id| (id, None))
    })
}

async fn collection_update(
    State(sb): State<St>,
    Path(v): Path<String>,
    Json(body): Json<CollectionBody>,
) -> Response {
    if let Err(e) = version_ok(&v) {
        return err(e);
    }
    sb.count("composite.sobjects.update");
    let recs = body.records;
    collection(&sb, body.all_or_none, recs.len(), |org, i| {
        let ty = record_type(&recs[i])?;
        let mut fields = recs[i].as_object().cloned().unwrap_or_default();
        let id = fields
            .remove("Id")
            .and_then(|j| j.as_str().map(str::to_string))
            .ok_or_else(|| {
                SfError::new(
                    400,
                    "MISSING_ARGUMENT",
                    "Id not specified in an update call",
                )
            })?;
        org.update(&ty, &id, &fields)
            .map(|_| (super::ids::to18(&id).unwrap_or(id), None))
    })
}

async fn collection_upsert(
    State(sb): State<St>,
    Path((v, s, field)): Path<(String, String, String)>,
    Json(body): Json<CollectionBody>,
) -> Response {
    if let Err(e) = version_ok(&v) {
        return err(e);
    }
    sb.count("composite.sobjects.upsert");
    let recs = body.records;
    collection(&sb, body.all_or_none, recs.len(), |org, i| {
        let mut fields = recs[i].as_object().cloned().unwrap_or_default();
        let key = match fields.remove(&field) {
            Some(J::String(k)) => k,
            Some(other) if !other.is_null() => other.to_string(),
            _ => {
                return Err(SfError::new(
                    400,
                    "MISSING_ARGUMENT",
                    format!("{field} not specified"),
                ));
            }
        };
        match org.upsert(&s, &field, &key, &fields) {
            Ok(Upserted::Created(id)) => Ok((id, Some(true))),
            Ok(Upserted::Updated(id)) => Ok((id, Some(false))),
            Err(e) if e.status == 300 => Err(SfError::new(300, "DUPLICATE_EXTERNAL_ID", e.message)),
            Err(e) => Err(e),
        }
    })
}

#[derive(serde::Deserialize)]
struct DeleteParams {
    ids: String,
    #[serde(rename = "allOrNone", default)]
    all_or_none: bool,
}

async fn collection_delete(
    State(sb): State<St>,
    Path(v): Path<String>,
    Q(p): Q<DeleteParams>,
) -> Response {
    if let Err(e) = version_ok(&v) {
        return err(e);
    }
    sb.count("composite.sobjects.delete");
    let ids: Vec<String> = p
        .ids
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    collection(&sb, p.all_or_none, ids.len(), |org, i| {
        let prefix = super::ids::prefix(&ids[i]).unwrap_or("");
        let object = org
            .objects()
            .iter()
            .find(|o| o.prefix() == prefix)
            .map(|o| o.name.clone())
            .ok_or_else(|| SfError::new(400, "MALFORMED_ID", format!("malformed id {}", ids[i])))?;
        org.delete(&object, &ids[i])
            .map(|_| (super::ids::to18(&ids[i]).unwrap_or_default(), None))
    })
}

#[derive(serde::Deserialize)]
struct CompositeBody {
    #[serde(rename = "allOrNone", default)]
    all_or_none: bool,
    #[serde(rename = "compositeRequest")]
    requests: Vec<SubRequest>,
}

#[derive(serde::Deserialize)]
struct SubRequest {
    method: String,
    url: String,
    #[serde(rename = "referenceId")]
    reference_id: String,
    #[serde(default)]
    body: Option<J>,
}

/// Replaces `@{ref.path}` in text with the value at that path of an earlier response
/// (`@{NewAccount.id}`, `@{Query.records[0].Id}`). `Err` names the reference that has no value.
fn substitute(text: &str, results: &HashMap<String, J>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = text;
    while let Some(i) = rest.find("@{") {
        out.push_str(&rest[..i]);
        let end = rest[i..].find('}').ok_or_else(|| rest[i..].to_string())? + i;
        let expr = &rest[i + 2..end];
        let mut parts = expr.split('.');
        let head = parts.next().unwrap_or("");
        let mut cur = results.get(head).ok_or_else(|| expr.to_string())?;
        for p in parts {
            let (name, index) = match p.find('[') {
                Some(b) => (&p[..b], p[b + 1..p.len() - 1].parse::<usize>().ok()),
                None => (p, None),
            };
            cur = cur.get(name).ok_or_else(|| expr.to_string())?;
            if let Some(ix) = index {
                cur = cur.get(ix).ok_or_else(|| expr.to_string())?;
            }
        }
        match cur {
            J::String(s) => out.push_str(s),
            J::Null => return Err(expr.to_string()),
            other => out.push_str(&other.to_string()),
        }
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn substitute_json(j: &J, results: &HashMap<String, J>) -> Result<J, String> {
    Ok(match j {
        J::String(s) => J::String(substitute(s, results)?),
        J::Array(a) => J::Array(
            a.iter()
                .map(|x| substitute_json(x, results))
                .collect::<Result<_, _>>()?,
        ),
        J::Object(m) => J::Object(
            m.iter()
                .map(|(k, v)| Ok((k.clone(), substitute_json(v, results)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

const HALTED: &str =
    "The transaction was rolled back since another operation in the same transaction failed.";

async fn composite(
    State(sb): State<St>,
    Path(v): Path<String>,
    Json(body): Json<CompositeBody>,
) -> Response {
    if let Err(e) = version_ok(&v) {
        return err(e);
    }
    sb.count("composite");
    if body.requests.len() > 25 {
        return err(SfError::new(
            400,
            "LIMIT_EXCEEDED",
            "Composite request may not exceed 25 subrequests",
        ));
    }
    let router = sb
        .router
        .lock()
        .expect("lock")
        .clone()
        .expect("router installed");
    let before = if body.all_or_none {
        Some(sb.org.lock().expect("lock").clone())
    } else {
        None
    };
    let mut results: HashMap<String, J> = HashMap::new();
    let mut out: Vec<J> = Vec::new();
    let mut failed = false;
    for sr in &body.requests {
        let halted = |message: String| json!({"body": [{"errorCode": "PROCESSING_HALTED", "message": message}], "httpHeaders": {}, "httpStatusCode": 400, "referenceId": sr.reference_id});
        if failed && body.all_or_none {
            out.push(halted(HALTED.into()));
            continue;
        }
        let (url, req_body) = match (
            substitute(&sr.url, &results),
            sr.body
                .as_ref()
                .map(|b| substitute_json(b, &results))
                .transpose(),
        ) {
            (Ok(u), Ok(b)) => (u, b),
            (Err(r), _) | (_, Err(r)) => {
                failed = true;
                out.push(halted(format!("Invalid reference specified. No value for {r} found in {}. Provided referenceId ids are case-sensitive.", r.split('.').next().unwrap_or(""))));
                continue;
            }
        };
        let mut rb = axum::http::Request::builder()
            .method(sr.method.to_ascii_uppercase().as_str())
            .uri(url)
            .header("authorization", format!("Bearer {}", sb.settings.token))
            .header("x-concord-internal", sb.internal_key.clone());
        let payload = match &req_body {
            Some(b) => {
                rb = rb.header("content-type", "application/json");
                axum::body::Body::from(b.to_string())
            }
            None => axum::body::Body::empty(),
        };
        let req = match rb.body(payload) {
            Ok(r) => r,
            Err(e) => return err(SfError::new(400, "INVALID_REQUEST", e.to_string())),
        };
        let resp = match tower::ServiceExt::oneshot(router.clone(), trim_trailing_slash(req)).await
        {
            Ok(r) => r,
            Err(e) => match e {},
        };
        let status = resp.status().as_u16();
        let location = resp
            .headers()
            .get("location")
            .and_then(|h| h.to_str().ok())
            .map(str::to_string);
        let bytes = axum::body::to_bytes(resp.into_body(), 64 << 20)
            .await
            .unwrap_or_default();
        let json_body: J = serde_json::from_slice(&bytes).unwrap_or(J::Null);
        if status >= 400 {
            failed = true;
        } else {
            results.insert(sr.reference_id.clone(), json_body.clone());
        }
        let mut headers = Map::new();
        if let Some(l) = location {
            headers.insert("Location".into(), J::String(l));
        }
        out.push(json!({"body": json_body, "httpHeaders": headers, "httpStatusCode": status, "referenceId": sr.reference_id}));
    }
    if failed && body.all_or_none {
        *sb.org.lock().expect("lock") = before.expect("kept for allOrNone");
        for r in out.iter_mut() {
            if r["httpStatusCode"].as_u64().is_some_and(|s| s < 400) {
                *r = json!({"body": [{"errorCode": "PROCESSING_HALTED", "message": HALTED}], "httpHeaders": {}, "httpStatusCode": 400, "referenceId": r["referenceId"]});
            }
        }
    }
    Json(json!({"compositeResponse": out})).into_response()
}

#[derive(serde::Deserialize)]
struct QParam {
    q: Option<String>,
}

fn batch_size(h: &HeaderMap) -> usize {
    h.get("sforce-query-options")
        .and_then(|v| v.to_str().ok())
        .and_then(|s| {
            s.split(',')
                .find_map(|kv| kv.trim().strip_prefix("batchSize="))
        })
        .and_then(|n| n.trim().parse::<usize>().ok())
        .map_or(2000, |n| n.clamp(200, 2000))
}

fn page(sb: &Sandbox, v: &str, locator: Option<String>, mut cur: Cursor) -> J {
    let take = cur.batch.min(cur.rows.len());
    let rest = cur.rows.split_off(take);
    let records = std::mem::replace(&mut cur.rows, rest);
    let done = cur.rows.is_empty();
    let mut body = json!({"totalSize": cur.total, "done": done, "records": records});
    if !done {
        let loc = locator.unwrap_or_else(|| {
            let mut n = sb.next_cursor.lock().expect("lock");
            *n += 1;
            format!("01g{:015}", *n)
        });
        let served = cur.total - cur.rows.len();
        let name = format!("{}-{served}", loc.split('-').next().unwrap_or(&loc));
        body["nextRecordsUrl"] = json!(format!("/services/data/v{v}/query/{name}"));
        sb.cursors.lock().expect("lock").insert(name, cur);
    }
    body
}

async fn run_query(
    sb: &St,
    v: &str,
    q: Option<String>,
    all: bool,
    headers: &HeaderMap,
) -> Response {
    let Some(text) = q else {
        return err(SfError::new(
            400,
            "MALFORMED_QUERY",
            "A query string has to be specified",
        ));
    };
    let parsed = match soql::parse(&text) {
        Ok(p) => p,
        Err(e) => {
            return err(SfError::new(
                400,
                "MALFORMED_QUERY",
                format!(
                    "\n{text}\n^\nERROR at Row:1:Column:{}\n{}",
                    e.at + 1,
                    e.message
                ),
            ))
        }
    };
    let result = sb.org.lock().expect("lock").query(&parsed, all, v);
    match result {
        Ok(QueryResult::Count(n)) => {
            Json(json!({"totalSize": n, "done": true, "records": []})).into_response()
        }
        Ok(QueryResult::Rows(rows)) => {
            let total = rows.len();
            Json(page(
                sb,
                v,
                None,
                Cursor {
                    rows,
                    total,
                    batch: batch_size(headers),
                },
            ))
            .into_response()
        }
        Err(e) => err(e),
    }
}

async fn query(
    State(sb): State<St>,
    Path(v): Path<String>,
    Q(p): Q<QParam>,
    headers: HeaderMap,
) -> Response {
    let v = match version_ok(&v) {
        Ok(v) => v.to_string(),
        Err(e) => return err(e),
    };
    sb.count("query");
    run_query(&sb, &v, p.q, false, &headers).await
}

async fn query_all(
    State(sb): State<St>,
    Path(v): Path<String>,
    Q(p): Q<QParam>,
    headers: HeaderMap,
) -> Response {
    let v = match version_ok(&v) {
        Ok(v) => v.to_string(),
        Err(e) => return err(e),
    };
    sb.count("queryAll");
    run_query(&sb, &v, p.q, true, &headers).await
}

async fn query_more(State(sb): State<St>, Path((v, locator)): Path<(String, String)>) -> Response {
    let v = match version_ok(&v) {
        Ok(v) => v.to_string(),
        Err(e) => return err(e),
    };
    sb.count("query.more");
    let cur = sb.cursors.lock().expect("lock").remove(&locator);
    match cur {
        Some(c) => Json(page(&sb, &v, Some(locator), c)).into_response(),
        None => err(SfError::new(
            400,
            "INVALID_QUERY_LOCATOR",
            "invalid query locator",
        )),
    }
}

#[derive(serde::Deserialize)]
struct Window {
    start: Option<String>,
    end: Option<String>,
}

fn window(w: &Window) -> Result<(Timestamp, Timestamp), SfError> {
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
type Changed = (Vec<(String, Timestamp)>, Timestamp, Timestamp);

/// The records of `s` modified (or deleted) within the request's window, with the window.
fn replication(
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
    // Covered up to the end asked for, but never past this moment.
    let end = Timestamp(end.millis().min(now));
    Ok((list, start, end))
}

async fn updated(
    State(sb): State<St>,
    Path((v, s)): Path<(String, String)>,
    Q(w): Q<Window>,
) -> Response {
    match replication(&sb, &v, &s, &w, false) {
        Ok((list, _, end)) => {
            let latest = end;
            Json(json!({
                "ids": list.iter().map(|(id, _)| id).collect::<Vec<_>>(),
                "latestDateCovered": super::org::sf_datetime(latest),
            }))
            .into_response()
        }
        Err(e) => err(e),
    }
}

async fn deleted(
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
                    .map(|(id, t)| json!({"id": id, "deletedDate": super::org::sf_datetime(*t)}))
                    .collect::<Vec<_>>(),
                "earliestDateAvailable": super::org::sf_datetime(earliest),
                "latestDateCovered": super::org::sf_datetime(latest),
            }))
            .into_response()
        }
        Err(e) => err(e),
    }
}

async fn limits(State(sb): State<St>, Path(v): Path<String>) -> Response {
    if let Err(e) = version_ok(&v) {
        return err(e);
    }
    sb.count("limits");
    let used = *sb.usage.lock().expect("lock");
    let max = sb.settings.daily_limit;
    Json(json!({
        "DailyApiRequests": {"Max": max, "Remaining": max.saturating_sub(used)},
        "DailyBulkV2QueryJobs": {"Max": 10000, "Remaining": 10000},
        "DailyBulkApiBatches": {"Max": 15000, "Remaining": 15000},
    }))
    .into_response()
}

async fn admin_counters(State(sb): State<St>) -> Json<J> {
    let used = *sb.usage.lock().expect("lock");
    Json(json!({"api_usage": used, "endpoints": sb.counters()}))
}

async fn admin_faults(State(sb): State<St>, Json(f): Json<Faults>) -> Json<Faults> {
    sb.set_faults(f.clone());
    Json(f)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ClockBody {
    /// Freeze modification stamps at this time (ms since the epoch); null unfreezes.
    frozen_ms: Option<i64>,
    #[serde(default)]
    offset_ms: i64,
}

async fn admin_clock(State(sb): State<St>, Json(c): Json<ClockBody>) -> StatusCode {
    let mut org = sb.org.lock().expect("lock");
    org.frozen_ms = c.frozen_ms;
    org.clock_offset_ms = c.offset_ms;
    StatusCode::NO_CONTENT
}

async fn admin_expire_sessions(State(sb): State<St>) -> StatusCode {
    sb.expire_sessions();
    StatusCode::NO_CONTENT
}

async fn admin_empty_recycle_bin(State(sb): State<St>) -> Response {
    let n = sb.org.lock().expect("lock").empty_recycle_bin();
    if let Err(e) = sb.persist() {
        return err(SfError::new(500, "UNKNOWN_EXCEPTION", e.to_string()));
    }
    Json(json!({"purged": n})).into_response()
}

async fn admin_reset(State(sb): State<St>) -> StatusCode {
    sb.counters.lock().expect("lock").clear();
    *sb.usage.lock().expect("lock") = 0;
    StatusCode::NO_CONTENT
}

/// The router.
pub fn router(sb: St) -> Router {
    let api = Router::new()
        .route("/services/data/{v}/sobjects", get(sobjects))
        .route("/services/data/{v}/sobjects/{s}", post(create))
        .route("/services/data/{v}/sobjects/{s}/describe", get(describe))
        .route("/services/data/{v}/sobjects/{s}/updated", get(updated))
        .route("/services/data/{v}/sobjects/{s}/deleted", get(deleted))
        .route(
            "/services/data/{v}/sobjects/{s}/{id}",
            get(retrieve).patch(update).delete(destroy),
        )
        .route(
            "/services/data/{v}/sobjects/{s}/{field}/{value}",
            axum::routing::patch(upsert),
        )
        .route(
            "/services/data/{v}/composite/sobjects",
            post(collection_create)
                .patch(collection_update)
                .delete(collection_delete),
        )
        .route(
            "/services/data/{v}/composite/sobjects/{s}/{field}",
            axum::routing::patch(collection_upsert),
        )
        .route(
            "/services/data/{v}/jobs/query",
            post(bulk::query_create).get(bulk::query_list),
        )
        .route(
            "/services/data/{v}/jobs/query/{id}",
            get(bulk::query_info)
                .delete(bulk::query_delete)
                .patch(bulk::query_patch),
        )
        .route(
            "/services/data/{v}/jobs/query/{id}/results",
            get(bulk::query_results),
        )
        .route(
            "/services/data/{v}/jobs/ingest",
            post(bulk::ingest_create).get(bulk::ingest_list),
        )
        .route(
            "/services/data/{v}/jobs/ingest/{id}",
            get(bulk::ingest_info)
                .patch(bulk::ingest_patch)
                .delete(bulk::ingest_delete),
        )
        .route(
            "/services/data/{v}/jobs/ingest/{id}/batches",
            axum::routing::put(bulk::ingest_upload),
        )
        .route(
            "/services/data/{v}/jobs/ingest/{id}/{kind}",
            get(bulk::ingest_results),
        )
        .route("/services/data/{v}/composite", post(composite))
        .route("/services/data/{v}/query", get(query))
        .route("/services/data/{v}/query/{locator}", get(query_more))
        .route("/services/data/{v}/queryAll", get(query_all))
        .route("/services/data/{v}/limits", get(limits))
        .route_layer(middleware::from_fn_with_state(sb.clone(), api_guard));
    let router = Router::new()
        .route("/services/data", get(versions))
        .route("/services/oauth2/token", post(token))
        .route("/admin/counters", get(admin_counters))
        .route("/admin/reset", post(admin_reset))
        .route("/admin/faults", post(admin_faults))
        .route("/admin/clock", post(admin_clock))
        .route("/admin/expire-sessions", post(admin_expire_sessions))
        .route("/admin/empty-recycle-bin", post(admin_empty_recycle_bin))
        .merge(api)
        .with_state(sb.clone());
    *sb.router.lock().expect("lock") = Some(router.clone());
    router
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

/// The router behind [`trim_trailing_slash`].
pub type App = tower::util::MapRequest<Router, fn(Request) -> Request>;

/// The router behind [`trim_trailing_slash`], ready to serve.
pub fn app(sb: St) -> axum::routing::IntoMakeService<App> {
    let f: fn(Request) -> Request = trim_trailing_slash;
    axum::ServiceExt::<Request>::into_make_service(tower::util::MapRequest::new(router(sb), f))
}

/// Serves on `listener` until the future is dropped.
pub async fn serve(sb: St, listener: tokio::net::TcpListener) -> std::io::Result<()> {
    axum::serve(listener, app(sb)).await
}
