//! Who the session is and what it may reach: the version root (`GET /services/data/vNN.N`),
//! the identity URL (`GET /id/{org}/{user}`), OpenID Connect's `GET /services/oauth2/userinfo`
//! and token revocation (`/services/oauth2/revoke`).

use super::auth::oauth_error;
use super::state::*;
use axum::extract::{Form, Path, Query as Q, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Map, Value as J};
use std::collections::HashMap;

/// `GET /services/data/vNN.N`: the resources of the version the sandbox serves, name → URL
/// (an org lists more: only what answers here is listed).
pub(crate) async fn version_root(State(sb): State<St>, Path(v): Path<String>) -> Response {
    let v = match version_ok(&v) {
        Ok(v) => v,
        Err(e) => return err(e),
    };
    sb.count("versionRoot");
    let n: u32 = v
        .split('.')
        .next()
        .and_then(|m| m.parse().ok())
        .unwrap_or(0);
    let mut out = Map::new();
    for name in [
        "sobjects",
        "query",
        "queryAll",
        "search",
        "composite",
        "limits",
        "recent",
        "jobs",
    ] {
        if n >= resource_since(name) {
            out.insert(name.into(), json!(format!("/services/data/v{v}/{name}")));
        }
    }
    let user = sb.org.lock().expect("lock").user_id.clone();
    out.insert(
        "identity".into(),
        json!(format!("{}/id/{ORG_ID}/{user}", sb.settings.base_url)),
    );
    Json(J::Object(out)).into_response()
}

/// What an org answers an identity or userinfo request without a live session.
fn bad_token() -> Response {
    (StatusCode::FORBIDDEN, "Bad_OAuth_Token").into_response()
}

/// The org's user record's fields.
fn user_record(org: &crate::org::Org) -> Map<String, J> {
    org.get("User", &org.user_id)
        .map(|r| r.fields.clone())
        .unwrap_or_default()
}

/// The org's user record's text field `f`.
fn user_field(u: &Map<String, J>, f: &str) -> J {
    u.get(f).cloned().unwrap_or(J::Null)
}

/// The URLs of the identity response, `{version}` left for the client to fill.
fn urls(base: &str, user: &str) -> J {
    let rest = format!("{base}/services/data/v{{version}}/");
    json!({
        "enterprise": format!("{base}/services/Soap/c/{{version}}/{ORG_ID}"),
        "metadata": format!("{base}/services/Soap/m/{{version}}/{ORG_ID}"),
        "partner": format!("{base}/services/Soap/u/{{version}}/{ORG_ID}"),
        "rest": rest,
        "sobjects": format!("{rest}sobjects/"),
        "search": format!("{rest}search/"),
        "query": format!("{rest}query/"),
        "recent": format!("{rest}recent/"),
        "profile": format!("{base}/{user}"),
        "users": format!("{rest}chatter/users"),
        "custom_domain": base,
    })
}

#[derive(serde::Deserialize)]
pub(crate) struct IdParams {
    version: Option<String>,
    /// The access token as a parameter (jsforce sends it so), instead of the header.
    oauth_token: Option<String>,
}

/// `GET /id/{org}/{user}` (the token response's `id`): the user and the org, as the identity
/// service answers (JSON), with `{version}` in the URLs replaced when `?version=` is given.
pub(crate) async fn identity(
    State(sb): State<St>,
    Path((org_id, user_id)): Path<(String, String)>,
    Q(p): Q<IdParams>,
    h: HeaderMap,
) -> Response {
    let by_param = p.oauth_token.as_ref().is_some_and(|t| sb.is_session(t));
    if !by_param && sb.session_of(&h).is_none() {
        return bad_token();
    }
    sb.count("identity");
    let org = sb.org.lock().expect("lock");
    if org_id != ORG_ID || crate::ids::to18(&user_id).as_deref() != Some(org.user_id.as_str()) {
        return (StatusCode::NOT_FOUND, "Bad_Id").into_response();
    }
    let base = &sb.settings.base_url;
    let u = user_record(&org);
    let mut urls = urls(base, &org.user_id);
    if let Some(v) = p.version.as_deref() {
        let text = urls.to_string().replace("{version}", v);
        urls = serde_json::from_str(&text).unwrap_or(urls);
    }
    Json(json!({
        "id": format!("{base}/id/{ORG_ID}/{}", org.user_id),
        "asserted_user": true,
        "user_id": org.user_id,
        "organization_id": ORG_ID,
        "username": sb.settings.username,
        "nick_name": user_field(&u, "Alias"),
        "display_name": user_field(&u, "Name"),
        "email": user_field(&u, "Email"),
        "email_verified": true,
        "first_name": user_field(&u, "FirstName"),
        "last_name": user_field(&u, "LastName"),
        "timezone": "GMT",
        "photos": {"picture": null, "thumbnail": null},
        "addr_street": null, "addr_city": null, "addr_state": null, "addr_country": null,
        "addr_zip": null, "mobile_phone": null, "mobile_phone_verified": false,
        "is_lightning_login_user": false,
        "status": {"created_date": null, "body": null},
        "urls": urls,
        "active": u.get("IsActive").cloned().unwrap_or(J::Bool(true)),
        "user_type": "STANDARD",
        "language": "en_US",
        "locale": "en_US",
        "utcOffset": 0,
        "last_modified_date": user_field(&u, "LastModifiedDate"),
        "is_app_installed": true,
    }))
    .into_response()
}

/// `GET /services/oauth2/userinfo` (OpenID Connect): the session's user.
pub(crate) async fn userinfo(State(sb): State<St>, h: HeaderMap) -> Response {
    if sb.session_of(&h).is_none() {
        return bad_token();
    }
    sb.count("oauth.userinfo");
    let org = sb.org.lock().expect("lock");
    let base = &sb.settings.base_url;
    let u = user_record(&org);
    Json(json!({
        "sub": format!("{base}/id/{ORG_ID}/{}", org.user_id),
        "user_id": org.user_id,
        "organization_id": ORG_ID,
        "preferred_username": sb.settings.username,
        "nickname": user_field(&u, "Alias"),
        "name": user_field(&u, "Name"),
        "email": user_field(&u, "Email"),
        "email_verified": true,
        "given_name": user_field(&u, "FirstName"),
        "family_name": user_field(&u, "LastName"),
        "zoneinfo": "GMT",
        "photos": {"picture": null, "thumbnail": null},
        "profile": format!("{base}/{}", org.user_id),
        "picture": null,
        "address": {},
        "urls": urls(base, &org.user_id),
        "active": u.get("IsActive").cloned().unwrap_or(J::Bool(true)),
        "user_type": "STANDARD",
        "language": "en_US",
        "locale": "en_US",
        "utcOffset": 0,
        "updated_at": user_field(&u, "LastModifiedDate"),
    }))
    .into_response()
}

/// `POST /services/oauth2/revoke` (form `token=`) or `GET …?token=`: ends an access token, or
/// the refresh token and every access token the refresh grant issued. 200 with an empty body;
/// a token that is not live → 400 `unsupported_token_type`, as an org answers.
pub(crate) async fn revoke_post(
    State(sb): State<St>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    revoke(&sb, form.get("token").map(String::as_str).unwrap_or(""))
}

pub(crate) async fn revoke_get(State(sb): State<St>, Q(q): Q<HashMap<String, String>>) -> Response {
    revoke(&sb, q.get("token").map(String::as_str).unwrap_or(""))
}

fn revoke(sb: &Sandbox, token: &str) -> Response {
    sb.count("oauth.revoke");
    let mut sessions = sb.sessions.lock().expect("lock");
    if !token.is_empty() && sessions.remove(token) {
        return StatusCode::OK.into_response();
    }
    let mut refreshed = sb.refreshed.lock().expect("lock");
    if !token.is_empty() && token == sb.settings.refresh_token && !refreshed.1 {
        refreshed.1 = true;
        for t in refreshed.0.drain() {
            sessions.remove(&t);
        }
        return StatusCode::OK.into_response();
    }
    oauth_error(
        StatusCode::BAD_REQUEST,
        "unsupported_token_type",
        "this token type is not supported",
    )
}
