//! The HTTP client: bearer auth with one re-authentication after a 401, retries with
//! exponential backoff and jitter on 503, UNABLE_TO_LOCK_ROW and timeouts (honouring
//! Retry-After), and the daily-limit guard fed by `Sforce-Limit-Info`.

use super::config::SalesforceConfig;
use crate::connector::ConnectorError;
use serde_json::Value as J;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

pub struct Client {
    http: reqwest::Client,
    pub base: String,
    token: Mutex<String>,
    cfg: SalesforceConfig,
    system: String,
    /// API calls this client made (every HTTP request, retries included).
    pub calls: AtomicU64,
    jitter: AtomicU64,
}

/// A response: status and JSON body (Null for 204).
pub struct Resp {
    pub status: u16,
    pub body: J,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
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
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(120))
            .build()
            .map_err(|e| fail(e.to_string()))?;
        let c = Client {
            http,
            base: base.trim_end_matches('/').to_string(),
            token: Mutex::new(String::new()),
            cfg: cfg.clone(),
            system: system.into(),
            calls: AtomicU64::new(0),
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

    /// client_credentials against `/services/oauth2/token`.
    async fn authenticate(&self) -> Result<(), ConnectorError> {
        let (Some(id), Some(secret)) = (
            self.cfg.client_id_env.as_deref().and_then(env),
            self.cfg.client_secret_env.as_deref().and_then(env),
        ) else {
            return Err(self.err(
                "no access token and no client credentials configured".into(),
                false,
            ));
        };
        self.calls.fetch_add(1, Ordering::Relaxed);
        let r = self
            .http
            .post(format!("{}/services/oauth2/token", self.base))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", &id),
                ("client_secret", &secret),
            ])
            .send()
            .await
            .map_err(|e| self.err(format!("cannot reach {}: {e}", self.base), true))?;
        let status = r.status().as_u16();
        let body: J = r.json().await.unwrap_or(J::Null);
        match body.get("access_token").and_then(J::as_str) {
            Some(t) if status == 200 => {
                *self.token.lock().expect("lock") = t.to_string();
                Ok(())
            }
            _ => Err(self.err(
                format!(
                    "authentication failed ({status}): {}",
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

    /// One API call with the retry, re-authentication and limit rules. `path` starts with `/`.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&J>,
        batch: Option<usize>,
    ) -> Result<Resp, ConnectorError> {
        let url = if path.starts_with("http") {
            path.to_string()
        } else {
            format!("{}{path}", self.base)
        };
        let mut reauthed = false;
        let mut attempt = 0;
        loop {
            let token = self.token.lock().expect("lock").clone();
            let mut rb = self.http.request(method.clone(), &url).bearer_auth(token);
            if let Some(b) = body {
                rb = rb.json(b);
            }
            if let Some(n) = batch {
                rb = rb.header(
                    "Sforce-Query-Options",
                    format!("batchSize={}", n.clamp(200, 2000)),
                );
            }
            self.calls.fetch_add(1, Ordering::Relaxed);
            let sent = rb.send().await;
            let r = match sent {
                Ok(r) => r,
                Err(e) if attempt < self.cfg.max_retries && (e.is_timeout() || e.is_connect()) => {
                    tokio::time::sleep(self.backoff(attempt, None)).await;
                    attempt += 1;
                    continue;
                }
                Err(e) => return Err(self.err(format!("cannot reach {}: {e}", self.base), true)),
            };
            let status = r.status().as_u16();
            let limit = r
                .headers()
                .get("sforce-limit-info")
                .and_then(|h| h.to_str().ok())
                .and_then(|s| s.strip_prefix("api-usage="))
                .and_then(|s| s.split_once('/'))
                .and_then(|(u, m)| {
                    Some((u.trim().parse::<u64>().ok()?, m.trim().parse::<u64>().ok()?))
                });
            let retry_after = r
                .headers()
                .get("retry-after")
                .and_then(|h| h.to_str().ok())
                .and_then(|s| s.parse().ok());
            let text = r.text().await.unwrap_or_default();
            let body: J = if text.is_empty() {
                J::Null
            } else {
                serde_json::from_str(&text).unwrap_or(J::String(text))
            };
            let code = body
                .get(0)
                .and_then(|e| e.get("errorCode"))
                .and_then(J::as_str)
                .unwrap_or("")
                .to_string();
            if status == 401 && !reauthed {
                reauthed = true;
                self.authenticate().await?;
                continue;
            }
            let retryable =
                status == 503 || code == "UNABLE_TO_LOCK_ROW" || status == 502 || status == 504;
            if retryable && attempt < self.cfg.max_retries {
                tokio::time::sleep(self.backoff(attempt, retry_after)).await;
                attempt += 1;
                continue;
            }
            if let Some((used, max)) = limit {
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
            if status >= 400 && !(status == 400 && path.contains("/composite/sobjects")) {
                let msg = body
                    .get(0)
                    .and_then(|e| e.get("message"))
                    .and_then(J::as_str)
                    .unwrap_or("");
                return Err(self.err(
                    format!("{status} {code}: {msg}"),
                    retryable || code == "REQUEST_LIMIT_EXCEEDED",
                ));
            }
            return Ok(Resp { status, body });
        }
    }
}
