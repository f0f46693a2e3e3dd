//! `concord peer serve|sync`: two instances that can talk exchange bundles over HTTP in one
//! round trip — the caller posts the bundle it made for the server, the server imports it and
//! answers with the bundle it made for the caller, which the caller imports. Only entities one
//! side is not known to hold move. Bundles authenticate themselves (keyed blake3 with the key
//! from CONCORD_BUNDLE_KEY); a refused bundle changes nothing on either side.

use super::jobs::{bundle_key, open_state};
use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use concord::config::Config;
use concord::engine::bundle::{self as eb, ImportReport, Scope};
use concord::model::{InstanceId, Timestamp};
use concord::store::StateStore;
use std::sync::{Arc, Mutex};

struct Peer {
    state: StateStore,
    scopes: Vec<Scope>,
    key: Vec<u8>,
    /// One exchange at a time.
    lock: Mutex<()>,
}

fn exchange(p: &Peer, body: &[u8]) -> Result<(ImportReport, Vec<u8>), (StatusCode, String)> {
    let _one = p.lock.lock().expect("lock");
    let b = concord::bundle::decode(body, &p.key).map_err(|e| {
        let code = match e {
            concord::bundle::BundleError::Foreign { .. }
            | concord::bundle::BundleError::Tampered => StatusCode::UNAUTHORIZED,
            _ => StatusCode::BAD_REQUEST,
        };
        (code, e.to_string())
    })?;
    if &b.recipient != p.state.instance() {
        return Err((
            StatusCode::BAD_REQUEST,
            format!(
                "the bundle is for {}, this instance is {}",
                b.recipient,
                p.state.instance()
            ),
        ));
    }
    let err = |e: concord::engine::EngineError| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    let report = eb::import(&p.state, &b, &p.scopes, Timestamp::now().millis()).map_err(err)?;
    let reply = eb::export(&p.state, &b.sender, &p.scopes).map_err(err)?;
    Ok((report, concord::bundle::encode(&reply, &p.key)))
}

async fn handle(State(p): State<Arc<Peer>>, body: Bytes) -> (StatusCode, Vec<u8>) {
    let p2 = p.clone();
    match tokio::task::spawn_blocking(move || exchange(&p2, &body)).await {
        Ok(Ok((r, reply))) => {
            tracing::info!(sender = %r.sender, entities = r.entities, merged = r.merged, "bundle exchanged");
            (StatusCode::OK, reply)
        }
        Ok(Err((code, msg))) => {
            tracing::warn!(%msg, "bundle refused");
            (code, msg.into_bytes())
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            e.to_string().into_bytes(),
        ),
    }
}

/// Serves exchanges on `listen` until interrupted (the store stays open: no `concord run` of
/// this instance meanwhile).
pub async fn serve(cfg: &Config, listen: &str) -> Result<()> {
    let key = bundle_key()?;
    let state = open_state(cfg)?;
    let scopes = concord::engine::build::scopes(cfg)?;
    let peer = Arc::new(Peer {
        state,
        scopes,
        key,
        lock: Mutex::new(()),
    });
    let app = axum::Router::new()
        .route("/concord/v1/exchange", post(handle))
        .with_state(peer.clone());
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    println!(
        "instance {} exchanging bundles on http://{}/concord/v1/exchange",
        peer.state.instance(),
        listener.local_addr()?
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// One exchange with the instance `peer` serving at `url`.
pub async fn sync(cfg: &Config, url: &str, peer: &str, json: bool) -> Result<()> {
    let key = bundle_key()?;
    let peer = InstanceId::new(peer).with_context(|| format!("--peer {peer}"))?;
    let state = open_state(cfg)?;
    let scopes = concord::engine::build::scopes(cfg)?;
    let out = eb::export(&state, &peer, &scopes)?;
    let sent = out.entities.len();
    let body = concord::bundle::encode(&out, &key);
    let endpoint = format!("{}/concord/v1/exchange", url.trim_end_matches('/'));
    let resp = reqwest::Client::new()
        .post(&endpoint)
        .body(body)
        .send()
        .await
        .with_context(|| format!("cannot reach {endpoint}"))?;
    let status = resp.status();
    let bytes = resp.bytes().await?;
    if !status.is_success() {
        bail!(
            "{endpoint} refused the bundle ({status}): {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    let back = concord::bundle::decode(&bytes, &key)
        .with_context(|| format!("the answer of {endpoint}"))?;
    if back.sender != peer {
        bail!("{endpoint} is instance {}, not {peer}", back.sender);
    }
    let r = eb::import(&state, &back, &scopes, Timestamp::now().millis())?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"sent": sent, "received": r}))?
        );
    } else {
        println!("exchanged with {peer}: sent {sent} entities; received {r}");
    }
    Ok(())
}
