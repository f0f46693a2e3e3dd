//! The sandbox's OAuth grants (client_credentials, password, refresh_token, JWT bearer with
//! RS256 keys made by openssl), session expiry, the dropped-connection fault, `--data`
//! persistence across a restart, and `--tls` with the generated certificate authority.

use crate::common::rsa_pair;
use concord::sandbox::launch::{launch, Launched, Options};
use concord::sandbox::server::{Faults, Settings};
use serde_json::{json, Value as J};

const TOKEN: &str = "00Dsandbox!auth";

async fn start(opts: Options, jwt: Option<Vec<u8>>) -> Launched {
    let settings = Settings {
        token: TOKEN.into(),
        jwt_public_key: jwt,
        ..Settings::default()
    };
    launch(&opts, settings).await.unwrap()
}

async fn grant(base: &str, form: &[(&str, &str)]) -> (u16, J) {
    let r = reqwest::Client::new()
        .post(format!("{base}/services/oauth2/token"))
        .form(form)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn limits_status(base: &str, token: &str) -> u16 {
    reqwest::Client::new()
        .get(format!("{base}/services/data/v62.0/limits"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn jwt(private: &[u8], iss: &str, sub: &str, aud: &str, exp_in: i64) -> String {
    let claims =
        json!({"iss": iss, "sub": sub, "aud": aud, "exp": chrono::Utc::now().timestamp() + exp_in});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(private).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn oauth_grants_are_checked_and_sessions_expire() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = rsa_pair(dir.path(), "app");
    let (other, _) = rsa_pair(dir.path(), "other");
    let l = start(Options::default(), Some(public)).await;
    let b = l.base_url.as_str();
    let d = Settings::default();
    let cc = [
        ("grant_type", "client_credentials"),
        ("client_id", d.client_id.as_str()),
        ("client_secret", d.client_secret.as_str()),
    ];
    let (s, t) = grant(b, &cc).await;
    assert_eq!(s, 200, "{t}");
    for k in [
        "access_token",
        "instance_url",
        "id",
        "token_type",
        "issued_at",
        "signature",
    ] {
        assert!(t.get(k).is_some(), "token response lacks {k}");
    }
    assert_eq!(t["instance_url"], b);
    let session = t["access_token"].as_str().unwrap().to_string();
    assert_eq!(limits_status(b, &session).await, 200);

    let (s, e) = grant(
        b,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", "nope"),
            ("client_secret", &d.client_secret),
        ],
    )
    .await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_client_id")));
    let (s, e) = grant(
        b,
        &[
            ("grant_type", "client_credentials"),
            ("client_id", &d.client_id),
            ("client_secret", "nope"),
        ],
    )
    .await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_client")));

    // Password grant: password alone or followed by a security token.
    let with_token = format!("{}SECURITYTOKEN", d.password);
    for pw in [d.password.as_str(), with_token.as_str()] {
        let (s, t) = grant(
            b,
            &[
                ("grant_type", "password"),
                ("client_id", &d.client_id),
                ("client_secret", &d.client_secret),
                ("username", &d.username),
                ("password", pw),
            ],
        )
        .await;
        assert_eq!(s, 200, "{t}");
    }
    let (s, e) = grant(
        b,
        &[
            ("grant_type", "password"),
            ("client_id", &d.client_id),
            ("client_secret", &d.client_secret),
            ("username", &d.username),
            ("password", "wrong"),
        ],
    )
    .await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_grant")));

    // Refresh token.
    let (s, _) = grant(
        b,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &d.client_id),
            ("refresh_token", &d.refresh_token),
        ],
    )
    .await;
    assert_eq!(s, 200);
    let (s, e) = grant(
        b,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &d.client_id),
            ("refresh_token", "stale"),
        ],
    )
    .await;
    assert_eq!((s, e["error"].as_str()), (400, Some("invalid_grant")));

    // JWT bearer: valid; signed by another key; wrong issuer; wrong user; expired; too far ahead.
    let bearer = "urn:ietf:params:oauth:grant-type:jwt-bearer";
    let aud = "https://login.salesforce.com";
    let (s, t) = grant(
        b,
        &[
            ("grant_type", bearer),
            (
                "assertion",
                &jwt(&private, &d.client_id, &d.username, aud, 120),
            ),
        ],
    )
    .await;
    assert_eq!(s, 200, "{t}");
    assert_eq!(
        limits_status(b, t["access_token"].as_str().unwrap()).await,
        200
    );
    for (assertion, why) in [
        (
            jwt(&other, &d.client_id, &d.username, aud, 120),
            "invalid assertion",
        ),
        (
            jwt(&private, "someone-else", &d.username, aud, 120),
            "client identifier invalid",
        ),
        (
            jwt(&private, &d.client_id, "eve@example.com", aud, 120),
            "user hasn't approved this consumer",
        ),
        (
            jwt(&private, &d.client_id, &d.username, aud, -60),
            "expired assertion",
        ),
        (
            jwt(&private, &d.client_id, &d.username, aud, 3600),
            "invalid assertion: exp is more than 3 minutes ahead",
        ),
        (
            jwt(
                &private,
                &d.client_id,
                &d.username,
                "https://evil.example",
                120,
            ),
            "audience is invalid",
        ),
    ] {
        let (s, e) = grant(b, &[("grant_type", bearer), ("assertion", &assertion)]).await;
        assert_eq!(
            (s, e["error_description"].as_str()),
            (400, Some(why)),
            "{e}"
        );
    }
    let (s, e) = grant(b, &[("grant_type", "authorization_code")]).await;
    assert_eq!(
        (s, e["error"].as_str()),
        (400, Some("unsupported_grant_type"))
    );

    // Sessions expire: every token is refused until a new grant.
    reqwest::Client::new()
        .post(format!("{b}/admin/expire-sessions"))
        .send()
        .await
        .unwrap();
    assert_eq!(limits_status(b, &session).await, 401);
    assert_eq!(limits_status(b, TOKEN).await, 401);
    let (_, t) = grant(b, &cc).await;
    assert_eq!(
        limits_status(b, t["access_token"].as_str().unwrap()).await,
        200
    );
}

#[tokio::test]
async fn dropped_connections_happen_after_processing() {
    let l = start(Options::default(), None).await;
    let api = format!("{}/services/data/v62.0", l.base_url);
    l.sandbox.set_faults(Faults {
        rate_drop: 1.0,
        ..Faults::default()
    });
    let c = reqwest::Client::new();
    let sent = c
        .post(format!("{api}/sobjects/Account"))
        .bearer_auth(TOKEN)
        .json(&json!({"Name": "Dropped"}))
        .send()
        .await;
    let failed = match sent {
        Err(_) => true,
        Ok(r) => r.text().await.is_err(),
    };
    assert!(failed, "the client gets no complete answer");
    l.sandbox.set_faults(Faults::default());
    let q: J = c
        .get(format!("{api}/query?q=SELECT+Name+FROM+Account"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        q["totalSize"], 1,
        "the write was applied although its answer was lost"
    );
    assert_eq!(l.sandbox.counters()["fault.drop"], 1);
    // Added latency delays every call.
    l.sandbox.set_faults(Faults {
        latency_ms: 300,
        ..Faults::default()
    });
    let t = std::time::Instant::now();
    c.get(format!("{api}/limits"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert!(t.elapsed() >= std::time::Duration::from_millis(300));
}

#[tokio::test]
async fn data_persists_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        data: Some(dir.path().join("org")),
        ..Options::default()
    };
    let l = start(opts.clone(), None).await;
    let api = format!("{}/services/data/v62.0", l.base_url);
    let c = reqwest::Client::new();
    let mut ids = Vec::new();
    for name in ["Kept", "Binned", "Purged"] {
        let r: J = c
            .post(format!("{api}/sobjects/Account"))
            .bearer_auth(TOKEN)
            .json(&json!({"Name": name}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        ids.push(r["id"].as_str().unwrap().to_string());
    }
    c.patch(format!("{api}/sobjects/Account/{}", ids[0]))
        .bearer_auth(TOKEN)
        .json(&json!({"Phone": "555"}))
        .send()
        .await
        .unwrap();
    c.delete(format!("{api}/sobjects/Account/{}", ids[1]))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    c.delete(format!("{api}/sobjects/Account/{}", ids[2]))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    l.sandbox
        .org
        .lock()
        .unwrap()
        .hard_delete("Account", &ids[2])
        .unwrap();
    l.sandbox.persist().unwrap();
    let before: J = c.get(format!("{api}/queryAll?q=SELECT+Id,Name,Phone,IsDeleted,SystemModstamp+FROM+Account+ORDER+BY+Id")).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
    l.server.abort();
    l.sandbox.shutdown();
    drop(l);

    let l = start(opts, None).await;
    assert_eq!(
        l.restored,
        Some(4),
        "the admin user, the standard price book and two accounts (the purged one is gone)"
    );
    let api = format!("{}/services/data/v62.0", l.base_url);
    let after: J = c.get(format!("{api}/queryAll?q=SELECT+Id,Name,Phone,IsDeleted,SystemModstamp+FROM+Account+ORDER+BY+Id")).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
    assert_eq!(
        after["records"], before["records"],
        "same records, same stamps"
    );
    assert_eq!(after["totalSize"], 2);
    let now = chrono::Utc::now();
    let d: J = c
        .get(format!(
            "{api}/sobjects/Account/deleted/?start={}&end={}",
            (now - chrono::Duration::days(1)).format("%Y-%m-%dT%H:%M:%SZ"),
            (now + chrono::Duration::minutes(1)).format("%Y-%m-%dT%H:%M:%SZ")
        ))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["deletedRecords"].as_array().unwrap().len(), 2, "{d}");
    // New ids continue after the restored ones.
    let r: J = c
        .post(format!("{api}/sobjects/Account"))
        .bearer_auth(TOKEN)
        .json(&json!({"Name": "New"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let new_id = r["id"].as_str().unwrap();
    assert!(!ids.iter().any(|i| i == new_id));
    assert!(
        new_id[..15] > ids[2][..15],
        "ids keep increasing: {new_id} after {}",
        ids[2]
    );
}

#[tokio::test]
async fn tls_with_the_generated_authority() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        tls: true,
        cert_dir: Some(dir.path().to_path_buf()),
        ..Options::default()
    };
    let l = start(opts, None).await;
    assert!(l.base_url.starts_with("https://127.0.0.1:"));
    let ca = std::fs::read(l.ca_path.as_ref().unwrap()).unwrap();
    let trusted = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let v: J = trusted
        .get(format!("{}/services/data/", l.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(v.as_array().is_some_and(|a| !a.is_empty()));
    // Also by name: the certificate covers localhost.
    let local = l.base_url.replace("127.0.0.1", "localhost");
    assert!(trusted
        .get(format!("{local}/services/data/"))
        .send()
        .await
        .is_ok());
    let untrusting = reqwest::Client::new();
    assert!(
        untrusting
            .get(format!("{}/services/data/", l.base_url))
            .send()
            .await
            .is_err(),
        "an unknown authority is refused"
    );
}
