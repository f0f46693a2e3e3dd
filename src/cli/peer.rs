//! `concord peer serve|sync`: the exchange protocol (`concord::exchange`: plain and hash-tree
//! exchanges as request → reply functions, MACs, nonces, freshness) carried over HTTP — axum
//! serves it, reqwest calls it. Nothing of the protocol lives here.

use super::jobs::{bundle_key, open_state};
use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use concord::config::Config;
use concord::exchange::{
    self as x, Client, ExchangeError, Server, EXCHANGE_PATH, MAC_HEADER, MAX_BUNDLE, MAX_TREE,
    TREE_EXCHANGE_PATH, TREE_PATH,
};
use concord::model::InstanceId;
use std::sync::Arc;

fn status_of(e: &ExchangeError) -> StatusCode {
    match e {
        ExchangeError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
        ExchangeError::BadRequest(_) => StatusCode::BAD_REQUEST,
        ExchangeError::Engine(_) => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

fn mac_of(headers: &HeaderMap) -> String {
    headers
        .get(MAC_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Runs one protocol step off the async threads (it reads and writes the store); its answer as
/// an HTTP reply.
async fn answer<T: Send + 'static>(
    step: impl FnOnce() -> Result<T, ExchangeError> + Send + 'static,
    ok: impl FnOnce(T) -> (HeaderMap, Vec<u8>),
) -> (StatusCode, HeaderMap, Vec<u8>) {
    match tokio::task::spawn_blocking(step).await {
        Ok(Ok(t)) => {
            let (h, body) = ok(t);
            (StatusCode::OK, h, body)
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "peer request refused");
            (status_of(&e), HeaderMap::new(), e.to_string().into_bytes())
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            HeaderMap::new(),
            e.to_string().into_bytes(),
        ),
    }
}

fn exchanged((r, reply): (concord::engine::bundle::ImportReport, Vec<u8>)) -> (HeaderMap, Vec<u8>) {
    tracing::info!(sender = %r.sender, entities = r.entities, merged = r.merged, "bundle exchanged");
    (HeaderMap::new(), reply)
}

async fn handle(State(p): State<Arc<Server>>, body: Bytes) -> (StatusCode, HeaderMap, Vec<u8>) {
    answer(move || p.exchange(&body), exchanged).await
}

async fn handle_tree(
    State(p): State<Arc<Server>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mac = mac_of(&headers);
    answer(
        move || p.tree(&body, &mac),
        |signed| {
            let mut h = HeaderMap::new();
            h.insert(
                MAC_HEADER,
                signed.mac.parse().expect("hex is a header value"),
            );
            (h, signed.body)
        },
    )
    .await
}

async fn handle_tree_exchange(
    State(p): State<Arc<Server>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let mac = mac_of(&headers);
    answer(move || p.tree_exchange(&body, &mac), exchanged).await
}

/// Serves exchanges on `listen` until interrupted (the store stays open: no `concord run` of
/// this instance meanwhile).
pub async fn serve(cfg: &Config, listen: &str) -> Result<()> {
    let server = Arc::new(Server::new(
        open_state(cfg)?,
        concord::engine::build::scopes(cfg)?,
        bundle_key()?,
    ));
    let app = axum::Router::new()
        .route(
            EXCHANGE_PATH,
            post(handle).layer(DefaultBodyLimit::max(MAX_BUNDLE)),
        )
        .route(
            TREE_PATH,
            post(handle_tree).layer(DefaultBodyLimit::max(MAX_TREE)),
        )
        .route(
            TREE_EXCHANGE_PATH,
            post(handle_tree_exchange).layer(DefaultBodyLimit::max(MAX_BUNDLE)),
        )
        .with_state(server.clone());
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("listening on {listen}"))?;
    println!(
        "instance {} exchanging bundles on http://{}{EXCHANGE_PATH}",
        server.instance(),
        listener.local_addr()?
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

/// Posts `body` to `endpoint`; the answer's bytes and MAC header, or the refusal as an error.
async fn post_to(endpoint: &str, body: Vec<u8>, mac: Option<String>) -> Result<(Vec<u8>, String)> {
    let mut req = reqwest::Client::new().post(endpoint).body(body);
    if let Some(m) = mac {
        req = req.header(MAC_HEADER, m);
    }
    let resp = req
        .send()
        .await
        .with_context(|| format!("cannot reach {endpoint}"))?;
    let status = resp.status();
    let their_mac = resp
        .headers()
        .get(MAC_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let bytes = resp.bytes().await?.to_vec();
    if !status.is_success() {
        bail!(
            "{endpoint} refused ({status}): {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    Ok((bytes, their_mac))
}

/// One exchange with the instance `peer` serving at `url`; with `tree`, by hash-tree comparison
/// of the heads first, then of exactly the entities whose versions differ.
pub async fn sync(cfg: &Config, url: &str, peer: &str, tree: bool, json: bool) -> Result<()> {
    let key = bundle_key()?;
    let peer = InstanceId::new(peer).with_context(|| format!("--peer {peer}"))?;
    let state = open_state(cfg)?;
    let scopes = concord::engine::build::scopes(cfg)?;
    let client = Client {
        state: &state,
        scopes: &scopes,
        key: &key,
        peer: peer.clone(),
    };
    let base = url.trim_end_matches('/');
    let (sent, received, summary) = if tree {
        let step = client.tree_request()?;
        let endpoint = format!("{base}{TREE_PATH}");
        let (answer, mac) = post_to(
            &endpoint,
            step.request.body.clone(),
            Some(step.request.mac.clone()),
        )
        .await?;
        let ex = client
            .tree_exchange(step, &answer, &mac)
            .with_context(|| format!("the answer of {endpoint}"))?;
        let endpoint = format!("{base}{TREE_EXCHANGE_PATH}");
        let (answer, _) = post_to(&endpoint, ex.request.body, Some(ex.request.mac)).await?;
        let r = client
            .import_answer(&answer)
            .with_context(|| format!("the answer of {endpoint}"))?;
        (ex.sent, r, Some(ex.summary))
    } else {
        let req = client.exchange_request()?;
        let endpoint = format!("{base}{EXCHANGE_PATH}");
        let (answer, _) = post_to(&endpoint, req.body, None).await?;
        let r = client
            .import_answer(&answer)
            .with_context(|| format!("the answer of {endpoint}"))?;
        (req.sent, r, None)
    };
    report(&peer, sent, &received, summary.as_ref(), json)
}

fn report(
    peer: &InstanceId,
    sent: usize,
    r: &concord::engine::bundle::ImportReport,
    tree: Option<&x::TreeSummary>,
    json: bool,
) -> Result<()> {
    match (tree, json) {
        (None, true) => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({"sent": sent, "received": r}))?
        ),
        (None, false) => println!("exchanged with {peer}: sent {sent} entities; received {r}"),
        (Some(t), true) => println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"tree": t, "sent": sent, "received": r})
            )?
        ),
        (Some(t), false) => println!(
            "compared with {peer} by hash tree: {} of {} buckets differed, {} entities differ; \
             sent {sent} entities; received {r}",
            t.differing_buckets, t.buckets, t.differing_entities
        ),
    }
    Ok(())
}
