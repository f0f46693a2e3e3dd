//! Composite: subrequests dispatched through the sandbox's own router, `@{ref}` substitution,
//! `allOrNone`.

use super::state::*;
use crate::org::SfError;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value as J};
use std::collections::HashMap;

#[derive(serde::Deserialize)]
pub(crate) struct CompositeBody {
    #[serde(rename = "allOrNone", default)]
    all_or_none: bool,
    #[serde(rename = "compositeRequest")]
    requests: Vec<SubRequest>,
}

#[derive(serde::Deserialize)]
pub(crate) struct SubRequest {
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

pub(crate) const HALTED: &str =
    "The transaction was rolled back since another operation in the same transaction failed.";

pub(crate) async fn composite(
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
