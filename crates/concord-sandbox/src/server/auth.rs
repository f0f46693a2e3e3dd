//! OAuth 2.0 token endpoint: client credentials, password, refresh token and JWT bearer grants.

use super::state::*;
use axum::extract::{Form, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use concord_model::model::Timestamp;
use serde_json::{json, Value as J};
use std::collections::HashMap;

pub(crate) fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

/// Claims of a JWT bearer assertion (Salesforce's OAuth 2.0 JWT bearer flow).
#[derive(serde::Deserialize)]
pub(crate) struct JwtClaims {
    sub: String,
}

/// Checks a JWT bearer assertion: RS256 signature by the configured key, `iss` = the consumer
/// key, `aud` = the login URL (or the sandbox's own), `sub` = the org's user, `exp` not past and
/// at most 3 minutes ahead (as Salesforce requires).
pub(crate) fn check_jwt(sb: &Sandbox, assertion: &str) -> Result<(), &'static str> {
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

/// A refused grant: the OAuth error code and its description, as Salesforce words them.
type Refused = (&'static str, &'static str);

const BAD_CLIENT_ID: Refused = ("invalid_client_id", "client identifier invalid");
const BAD_SECRET: Refused = ("invalid_client", "invalid client credentials");

/// Checks a token request's grant like Salesforce: the connected app's client id (and secret,
/// where the grant needs it), then the grant's own credential.
fn grant(sb: &Sandbox, form: &HashMap<String, String>) -> Result<(), Refused> {
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let s = &sb.settings;
    let client = || {
        if get("client_id") == s.client_id {
            Ok(())
        } else {
            Err(BAD_CLIENT_ID)
        }
    };
    let secret = || {
        if get("client_secret") == s.client_secret {
            Ok(())
        } else {
            Err(BAD_SECRET)
        }
    };
    match get("grant_type") {
        "client_credentials" => {
            client()?;
            secret()
        }
        "password" => {
            client()?;
            secret()?;
            let pw = get("password");
            // The password, or the password followed by the user's security token.
            let pw_ok = pw == s.password
                || pw
                    .strip_prefix(s.password.as_str())
                    .is_some_and(|t| !t.is_empty());
            if get("username").eq_ignore_ascii_case(&s.username) && pw_ok {
                Ok(())
            } else {
                Err(("invalid_grant", "authentication failure"))
            }
        }
        "refresh_token" => {
            client()?;
            // The secret is optional for this grant, but checked when given.
            if form.contains_key("client_secret") {
                secret()?;
            }
            if get("refresh_token") == s.refresh_token {
                Ok(())
            } else {
                Err(("invalid_grant", "expired access/refresh token"))
            }
        }
        "urn:ietf:params:oauth:grant-type:jwt-bearer" => {
            check_jwt(sb, get("assertion")).map_err(|why| {
                if why == BAD_CLIENT_ID.1 {
                    BAD_CLIENT_ID
                } else {
                    ("invalid_grant", why)
                }
            })
        }
        _ => Err(("unsupported_grant_type", "grant type not supported")),
    }
}

/// `POST /services/oauth2/token`: client_credentials, password (password or password + security
/// token), refresh_token and JWT bearer grants, each checked like Salesforce checks them.
pub(crate) async fn token(
    State(sb): State<St>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    sb.count("oauth.token");
    if let Err((code, why)) = grant(&sb, &form) {
        return oauth_error(StatusCode::BAD_REQUEST, code, why);
    }
    let s = &sb.settings;
    let now = Timestamp::now().millis();
    let user = sb.org.lock().expect("lock").user_id.clone();
    if form.get("grant_type").map(String::as_str) == Some("refresh_token")
        && sb.refreshed.lock().expect("lock").1
    {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "expired access/refresh token",
        );
    }
    let access = sb.new_session();
    if form.get("grant_type").map(String::as_str) == Some("refresh_token") {
        sb.refreshed.lock().expect("lock").0.insert(access.clone());
    }
    let signature = {
        let mac = blake3::keyed_hash(
            blake3::hash(s.client_secret.as_bytes()).as_bytes(),
            format!("{}/id/{ORG_ID}/{user}{now}", s.base_url).as_bytes(),
        );
        base64::Engine::encode(&base64::engine::general_purpose::STANDARD, mac.as_bytes())
    };
    Json(json!({
        "access_token": access,
        "instance_url": s.base_url,
        "id": format!("{}/id/{ORG_ID}/{user}", s.base_url),
        "token_type": "Bearer",
        "issued_at": now.to_string(),
        "signature": signature,
        "scope": "api",
    }))
    .into_response()
}
