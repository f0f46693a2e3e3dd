//! The HTTP client: bearer auth with one re-authentication after a 401 (JWT bearer,
//! refresh_token or client_credentials, whichever is configured), retries with exponential
//! backoff and jitter on 503, UNABLE_TO_LOCK_ROW and timeouts (honouring Retry-After), and the
//! daily-limit guard fed by `Sforce-Limit-Info`.
//!
//! A call whose answer is lost (connection dropped, timeout after sending) is retried only when
//! repeating it cannot duplicate anything: every method but POST, and POSTs that create bulk
//! jobs. A lost answer to a plain create fails the call with "outcome unknown" instead; creates
//! by `entity_id_field` are upserts (PATCH) and so are retried safely.

use super::config::SalesforceConfig;
use crate::ConnectorError;
use serde_json::Value as J;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

pub struct Client {
    http: reqwest::Client,
    pub base: String,
    login: String,
    token: Mutex<String>,
    cfg: SalesforceConfig,
    system: String,
    /// API calls this client made (every HTTP request, retries and token requests included).
    pub calls: AtomicU64,
    /// The org's daily API usage as its last answer gave it (`Sforce-Limit-Info`): used, max.
    pub usage: Mutex<Option<(u64, u64)>>,
    jitter: AtomicU64,
}

/// A response: status and JSON body (Null for 204).
pub struct Resp {
    pub status: u16,
    pub body: J,
    /// The server's clock when it answered (its `Date` header, ms), when sent.
    pub date: Option<i64>,
}

/// A response as text, with the Bulk API's `Sforce-Locator`.
pub struct RawResp {
    pub status: u16,
    pub text: String,
    pub locator: Option<String>,
    /// The server's clock when it answered (its `Date` header, ms), when sent.
    pub date: Option<i64>,
}

/// What a request carries.
pub enum Payload<'a> {
    None,
    Json(&'a J),
    Csv(String),
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The grants that can renew an access token, as configured.
const GRANTS: &str = "client_id_env with client_secret_env, refresh_token_env, or jwt_key_env with client_id_env and username_env";

/// A token request's form fields (secrets: never logged).
type GrantForm = Vec<(&'static str, String)>;

/// Claims of a JWT bearer assertion.
#[derive(serde::Serialize)]
struct Claims<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    exp: i64,
}

impl Client {
    pub async fn connect(system: &str, cfg: SalesforceConfig) -> Result<Client, ConnectorError> {
        let fail = |m: String| ConnectorError {
            system: system.into(),
            object: cfg.object.clone(),
            message: m,
            retryable: false,
        };
        let base = env(&cfg.instance_url_env).ok_or_else(|| {
            fail(format!(
                "environment variable {} is not set (the instance URL)",
                cfg.instance_url_env
            ))
        })?;
        let login = match &cfg.login_url_env {
            Some(v) => env(v).ok_or_else(|| {
                fail(format!(
                    "environment variable {v} is not set (the login URL)"
                ))
            })?,
            None => base.clone(),
        };
        let mut builder = reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.request_timeout_secs.max(1)));
        if let Some(p) = &cfg.ca_cert {
            let pem =
                std::fs::read(p).map_err(|e| fail(format!("ca_cert {}: {e}", p.display())))?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|e| {
                fail(format!(
                    "ca_cert {}: not a PEM certificate: {e}",
                    p.display()
                ))
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|e| fail(e.to_string()))?;
        let c = Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            login: login.trim_end_matches('/').to_string(),
            token: Mutex::new(String::new()),
            cfg: cfg.clone(),
            system: system.into(),
            calls: AtomicU64::new(0),
            usage: Mutex::new(None),
            jitter: AtomicU64::new(0x2545_F491_4F6C_DD1D),
        };
        match cfg.token_env.as_deref().and_then(env) {
            Some(t) => *c.token.lock().expect("lock") = t,
            None => c.authenticate().await?,
        }
        Ok(c)
    }

    fn err(&self, message: String, retryable: bool) -> ConnectorError {
        ConnectorError {
            system: self.system.clone(),
            object: self.cfg.object.clone(),
            message,
            retryable,
        }
    }

    /// The grant to use: JWT bearer, else refresh_token, else client_credentials. The form
    /// holds secrets: it is never logged.
    fn grant_form(&self) -> Result<(&'static str, GrantForm), ConnectorError> {
        let var = |name: &Option<String>| name.as_deref().and_then(env);
        let id = var(&self.cfg.client_id_env);
        if let Some(key) = var(&self.cfg.jwt_key_env) {
            let (Some(id), Some(user)) = (id.clone(), var(&self.cfg.username_env)) else {
                return Err(self.err(
                    "the JWT bearer grant needs client_id_env and username_env set".into(),
                    false,
                ));
            };
            let key = jsonwebtoken::EncodingKey::from_rsa_pem(key.as_bytes()).map_err(|_| {
                self.err(
                    format!(
                        "{} does not hold a PEM RSA private key",
                        self.cfg.jwt_key_env.as_deref().unwrap_or_default()
                    ),
                    false,
                )
            })?;
            let claims = Claims {
                iss: &id,
                sub: &user,
                aud: &self.cfg.jwt_audience,
                exp: chrono::Utc::now().timestamp() + 150,
            };
            let assertion = jsonwebtoken::encode(
                &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
                &claims,
                &key,
            )
            .map_err(|e| self.err(format!("signing the JWT assertion: {e}"), false))?;
            return Ok((
                "JWT bearer",
                vec![
                    (
                        "grant_type",
                        "urn:ietf:params:oauth:grant-type:jwt-bearer".into(),
                    ),
                    ("assertion", assertion),
                ],
            ));
        }
        if let Some(refresh) = var(&self.cfg.refresh_token_env) {
            let Some(id) = id else {
                return Err(self.err(
                    "the refresh_token grant needs client_id_env set".into(),
                    false,
                ));
            };
            let mut form = vec![
                ("grant_type", "refresh_token".to_string()),
                ("client_id", id),
                ("refresh_token", refresh),
            ];
            if let Some(secret) = var(&self.cfg.client_secret_env) {
                form.push(("client_secret", secret));
            }
            return Ok(("refresh_token", form));
        }
        match (id, var(&self.cfg.client_secret_env)) {
            (Some(id), Some(secret)) => Ok((
                "client_credentials",
                vec![
                    ("grant_type", "client_credentials".into()),
                    ("client_id", id),
                    ("client_secret", secret),
                ],
            )),
            _ => Err(self.err(
                match self.cfg.token_env.as_deref() {
                    Some(t) => format!(
                        "no access token: environment variable {t} (token_env) is not set, and no grant is configured to get one ({GRANTS})"
                    ),
                    None => format!("no access token and no grant configured ({GRANTS})"),
                },
                false,
            )),
        }
    }

    /// Whether any grant is configured to get a new access token.
    fn has_grant(&self) -> bool {
        let set = |name: &Option<String>| name.as_deref().and_then(env).is_some();
        set(&self.cfg.jwt_key_env)
            || set(&self.cfg.refresh_token_env)
            || (set(&self.cfg.client_id_env) && set(&self.cfg.client_secret_env))
    }

    /// Gets a new access token from `/services/oauth2/token`.
    async fn authenticate(&self) -> Result<(), ConnectorError> {
        let (grant, form) = self.grant_form()?;
        self.calls.fetch_add(1, Ordering::Relaxed);
        let r = self
            .http
            .post(format!("{}/services/oauth2/token", self.login))
            .form(&form)
            .send()
            .await
            .map_err(|e| self.err(format!("cannot reach {}: {e}", self.login), true))?;
        let status = r.status().as_u16();
        let body: J = r.json().await.unwrap_or(J::Null);
        match body.get("access_token").and_then(J::as_str) {
            Some(t) if status == 200 => {
                *self.token.lock().expect("lock") = t.to_string();
                Ok(())
            }
            _ => Err(self.err(
                format!(
                    "authentication ({grant}) failed ({status}): {}: {}",
                    body.get("error").and_then(J::as_str).unwrap_or("error"),
                    body.get("error_description")
                        .and_then(J::as_str)
                        .unwrap_or("no token in the response")
                ),
                false,
            )),
        }
    }

    fn backoff(&self, attempt: u32, retry_after: Option<u64>) -> Duration {
        if let Some(s) = retry_after {
            return Duration::from_secs(s.min(60));
        }
        let x = self
            .jitter
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed);
        let base = 100u64 << attempt.min(6);
        Duration::from_millis(base / 2 + (x >> 40) % base.max(1))
    }

    /// One API call with a JSON answer. `path` starts with `/` (or is a full URL).
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&J>,
        batch: Option<usize>,
    ) -> Result<Resp, ConnectorError> {
        let payload = match body {
            Some(b) => Payload::Json(b),
            None => Payload::None,
        };
        let r = self.request(method, path, payload, batch).await?;
        let body = if r.text.is_empty() {
            J::Null
        } else {
            serde_json::from_str(&r.text).unwrap_or(J::String(r.text))
        };
        Ok(Resp {
            status: r.status,
            body,
            date: r.date,
        })
    }

    /// One API call with the retry, re-authentication and limit rules; the answer as text.
    pub async fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        payload: Payload<'_>,
        batch: Option<usize>,
    ) -> Result<RawResp, ConnectorError> {
        self.request_with(method, path, payload, batch, &[], &[])
            .await
    }

    /// [`Self::request`] with extra request headers; answers with a status in `accept` are
    /// returned (with their body) instead of failing the call.
    pub async fn request_with(
        &self,
        method: reqwest::Method,
        path: &str,
        payload: Payload<'_>,
        batch: Option<usize>,
        headers: &[(&'static str, String)],
        accept: &[u16],
    ) -> Result<RawResp, ConnectorError> {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        // Repeating the call cannot duplicate anything (see the module documentation).
        let idempotent = idempotent(&method, path);
        let mut reauthed = false;
        let mut attempt = 0;
        loop {
            let token = self.token.lock().expect("lock").clone();
            let mut rb = self.http.request(method.clone(), &url).bearer_auth(token);
            match &payload {
                Payload::None => {}
                Payload::Json(b) => rb = rb.json(b),
                Payload::Csv(t) => {
                    rb = rb.header("content-type", "text/csv").body(t.clone());
                }
            }
            for (k, v) in headers {
                rb = rb.header(*k, v.as_str());
            }
            if let Some(n) = batch {
                rb = rb.header(
                    "Sforce-Query-Options",
                    format!("batchSize={}", n.clamp(200, 2000)),
                );
            }
            self.calls.fetch_add(1, Ordering::Relaxed);
            // Sent and answered, or the error and whether the request may have been processed.
            let answer = match rb.send().await {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let h = r.headers();
                    let get = |k: &str| h.get(k).and_then(|v| v.to_str().ok()).map(str::to_string);
                    let limit = get("sforce-limit-info");
                    let retry_after = get("retry-after").and_then(|s| s.parse::<u64>().ok());
                    let locator = get("sforce-locator").filter(|l| l != "null" && !l.is_empty());
                    let date = get("date")
                        .and_then(|d| chrono::DateTime::parse_from_rfc2822(&d).ok())
                        .map(|t| t.timestamp_millis());
                    match r.text().await {
                        Ok(text) => Ok((status, limit, retry_after, (locator, date), text)),
                        Err(e) => Err((e, true)),
                    }
                }
                Err(e) => {
                    let unsent = e.is_connect();
                    Err((e, !unsent))
                }
            };
            let (status, limit, retry_after, (locator, date), text) = match answer {
                Ok(a) => a,
                Err((e, maybe_processed)) => {
                    let safe = !maybe_processed || idempotent;
                    if safe && attempt < self.cfg.max_retries {
                        tokio::time::sleep(self.backoff(attempt, None)).await;
                        attempt += 1;
                        continue;
                    }
                    let what = if maybe_processed && !idempotent {
                        format!(
                            "outcome unknown: the answer to {method} {path} was lost ({e}); not retried, as repeating it could duplicate records (set entity_id_field to make creates idempotent upserts)"
                        )
                    } else {
                        format!("cannot reach {}: {e}", self.base)
                    };
                    return Err(self.err(what, safe));
                }
            };
            let body_err: Option<J> = serde_json::from_str::<J>(&text).ok();
            let code = body_err
                .as_ref()
                .and_then(|b| b.get(0))
                .and_then(|e| e.get("errorCode"))
                .and_then(J::as_str)
                .unwrap_or("")
                .to_string();
            if status == 401 && !reauthed {
                reauthed = true;
                let msg = body_err
                    .as_ref()
                    .and_then(|b| b.get(0))
                    .and_then(|e| e.get("message"))
                    .and_then(J::as_str)
                    .unwrap_or("")
                    .to_string();
                let refused = format!(
                    "401 {code}{}",
                    if msg.is_empty() {
                        String::new()
                    } else {
                        format!(": {msg}")
                    }
                );
                if !self.has_grant() {
                    return Err(self.err(
                        format!(
                            "the access token{} was refused ({refused}), and no grant is configured to get a new one ({GRANTS})",
                            self.cfg
                                .token_env
                                .as_deref()
                                .map(|t| format!(" from {t}"))
                                .unwrap_or_default()
                        ),
                        false,
                    ));
                }
                if let Err(e) = self.authenticate().await {
                    return Err(self.err(
                        format!(
                            "the access token was refused ({refused}); getting a new one failed: {}",
                            e.message
                        ),
                        e.retryable,
                    ));
                }
                continue;
            }
            let retryable =
                status == 503 || code == "UNABLE_TO_LOCK_ROW" || status == 502 || status == 504;
            if retryable && attempt < self.cfg.max_retries {
                tokio::time::sleep(self.backoff(attempt, retry_after)).await;
                attempt += 1;
                continue;
            }
            let usage = limit
                .as_deref()
                .and_then(|s| s.strip_prefix("api-usage="))
                .and_then(|s| s.split_once('/'))
                .and_then(|(u, m)| {
                    Some((u.trim().parse::<u64>().ok()?, m.trim().parse::<u64>().ok()?))
                });
            if let Some((used, max)) = usage {
                *self.usage.lock().expect("usage") = Some((used, max));
                if max > 0 && used as f64 >= self.cfg.max_limit_share * max as f64 {
                    return Err(self.err(
                        format!(
                            "stopping: {used} of the daily limit of {max} API calls used (the configured share is {:.0} %)",
                            self.cfg.max_limit_share * 100.0
                        ),
                        false,
                    ));
                }
            }
            if status >= 400
                && !(status == 400 && path.contains("/composite/sobjects"))
                && !accept.contains(&status)
            {
                let msg = body_err
                    .as_ref()
                    .and_then(|b| b.get(0))
                    .and_then(|e| e.get("message"))
                    .and_then(J::as_str)
                    .unwrap_or("");
                return Err(self.err(
                    format!("{status} {code}: {msg}"),
                    retryable || code == "REQUEST_LIMIT_EXCEEDED",
                ));
            }
            return Ok(RawResp {
                status,
                text,
                locator,
                date,
            });
        }
    }
}

/// Whether repeating a call whose answer was lost cannot duplicate anything: every method but
/// POST; of POSTs, Bulk API job calls (a job's state moves only forward) and sObject
/// Collections retrieve (`POST …/composite/sobjects/{S}`, a read), not creates.
fn idempotent(method: &reqwest::Method, path: &str) -> bool {
    if method != reqwest::Method::POST || path.contains("/jobs/") {
        return true;
    }
    let path = path.split('?').next().unwrap_or(path);
    path.split_once("/composite/sobjects/")
        .is_some_and(|(_, object)| !object.is_empty() && !object.contains('/'))
}

#[cfg(test)]
mod idempotence {
    use super::idempotent;
    use reqwest::Method;

    #[test]
    fn only_reads_and_job_calls_are_repeated() {
        let v = "/services/data/v59.0";
        for (m, p, want) in [
            (Method::GET, format!("{v}/query?q=x"), true),
            (
                Method::PATCH,
                format!("{v}/composite/sobjects/Account/Ext__c"),
                true,
            ),
            (
                Method::POST,
                format!("{v}/composite/sobjects/Account"),
                true,
            ),
            (Method::POST, format!("{v}/jobs/ingest"), true),
            (Method::POST, format!("{v}/composite/sobjects"), false),
            (Method::POST, format!("{v}/composite/sobjects?x=1"), false),
            (Method::POST, format!("{v}/sobjects/Account"), false),
            (Method::POST, format!("{v}/composite"), false),
        ] {
            assert_eq!(idempotent(&m, &p), want, "{m} {p}");
        }
    }
}
