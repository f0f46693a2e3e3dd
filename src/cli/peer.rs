//! `concord peer serve|sync`: two instances that can talk exchange bundles over HTTP in one
//! round trip — the caller posts the bundle it made for the server, the server imports it and
//! answers with the bundle it made for the caller, which the caller imports. Only entities one
//! side is not known to hold move. Bundles authenticate themselves (keyed blake3 with the key
//! from CONCORD_BUNDLE_KEY); a refused bundle changes nothing on either side.
//!
//! `sync --tree` compares the two instances' heads by hash tree first (what each actually holds,
//! not what each is known to hold: after a store restored from a backup, say), then moves
//! exactly the entities whose versions differ, both ways. Its messages carry a MAC with a key
//! derived from the same secret, a random nonce and the sender's clock: a captured message is
//! refused when replayed (nonce already seen) or after five minutes (stale); the answer echoes
//! the nonce. Bundles are encrypted (format 3).

use super::jobs::{bundle_key, open_state};
use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use concord::config::Config;
use concord::core::tree::{self, BucketSum, RowDigest};
use concord::engine::bundle::{self as eb, ImportReport, Scope};
use concord::model::{EntityId, InstanceId, Timestamp};
use concord::store::StateStore;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashSet};
use std::sync::{Arc, Mutex};

/// The largest bundle a request may carry (read whole before its MAC is checked).
const MAX_BUNDLE: usize = 256 << 20;
/// The largest tree summary: 2^20 buckets of JSON with room to spare (deeper trees are for
/// tens of millions of entities).
const MAX_TREE: usize = 64 << 20;
const MAC_HEADER: &str = "x-concord-mac";

/// How long a tree message is valid: its `sent_ms` must be within this of the server's
/// clock, and its nonce is remembered this long (a replay within it is refused; after it the
/// message is stale).
const MESSAGE_LIFETIME_MS: i64 = 5 * 60 * 1000;

/// Freshness of a MAC'd tree message: a random nonce and the sender's clock.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Fresh {
    nonce: String,
    sent_ms: i64,
}

impl Fresh {
    fn now() -> Fresh {
        Fresh {
            nonce: concord::bundle::message_nonce(),
            sent_ms: Timestamp::now().millis(),
        }
    }
}

/// A hash-tree summary of the caller's heads.
#[derive(Debug, Serialize, Deserialize)]
struct TreeRequest {
    sender: String,
    recipient: String,
    bits: u32,
    sums: Vec<BucketSum>,
    #[serde(flatten)]
    fresh: Fresh,
}

/// The server's answer: the buckets whose sums differ and its leaves in them, with the
/// request's nonce (an old answer cannot pass for this one).
#[derive(Debug, Serialize, Deserialize)]
struct TreeReply {
    sender: String,
    buckets: Vec<i64>,
    leaves: Vec<(String, RowDigest)>,
    nonce: String,
}

/// What the caller wants back in a tree exchange (before its bundle, in the same body).
#[derive(Debug, Serialize, Deserialize)]
struct Want {
    want: Vec<String>,
    #[serde(flatten)]
    fresh: Fresh,
}

struct Peer {
    state: StateStore,
    scopes: Vec<Scope>,
    key: Vec<u8>,
    /// One exchange at a time.
    lock: Mutex<()>,
    /// Nonces of tree messages seen within their lifetime, with their `sent_ms`.
    seen: Mutex<std::collections::HashMap<String, i64>>,
}

impl Peer {
    /// Refuses a message outside its lifetime or seen before (a replay); remembers it.
    fn fresh(&self, f: &Fresh) -> Result<(), (StatusCode, String)> {
        let now = Timestamp::now().millis();
        if (now - f.sent_ms).abs() > MESSAGE_LIFETIME_MS {
            return Err((
                StatusCode::UNAUTHORIZED,
                format!(
                    "stale message: sent {} s from this instance's clock (the limit is {} s; are the clocks set?)",
                    (now - f.sent_ms) / 1000,
                    MESSAGE_LIFETIME_MS / 1000
                ),
            ));
        }
        let mut seen = self.seen.lock().expect("lock");
        seen.retain(|_, t| (now - *t).abs() <= 2 * MESSAGE_LIFETIME_MS);
        if seen.insert(f.nonce.clone(), f.sent_ms).is_some() {
            return Err((
                StatusCode::UNAUTHORIZED,
                "replayed message: this nonce was already used".into(),
            ));
        }
        Ok(())
    }
}

fn exchange(p: &Peer, body: &[u8]) -> Exchanged {
    let _one = p.lock.lock().expect("lock");
    let b = concord::bundle::decode(body, &p.key).map_err(refused)?;
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

fn refused(e: concord::bundle::BundleError) -> (StatusCode, String) {
    let code = match e {
        concord::bundle::BundleError::Foreign { .. } | concord::bundle::BundleError::Tampered => {
            StatusCode::UNAUTHORIZED
        }
        _ => StatusCode::BAD_REQUEST,
    };
    (code, e.to_string())
}

fn mac_of(headers: &HeaderMap) -> &str {
    headers
        .get(MAC_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

fn unauthorized() -> (StatusCode, String) {
    (
        StatusCode::UNAUTHORIZED,
        "the message's MAC does not match (another key, or altered)".into(),
    )
}

/// `/concord/v1/tree`: compares the caller's bucket sums with this instance's heads.
fn tree_answer(
    p: &Peer,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<u8>, (StatusCode, String)> {
    if !concord::bundle::message_mac_ok(&p.key, body, mac_of(headers)) {
        return Err(unauthorized());
    }
    let req: TreeRequest = serde_json::from_slice(body)
        .map_err(|e| (StatusCode::BAD_REQUEST, format!("tree request: {e}")))?;
    p.fresh(&req.fresh)?;
    if req.recipient != p.state.instance().as_str() {
        return Err((
            StatusCode::BAD_REQUEST,
            format!(
                "the request is for {}, this instance is {}",
                req.recipient,
                p.state.instance()
            ),
        ));
    }
    let bits = req.bits.clamp(1, 24);
    let _one = p.lock.lock().expect("lock");
    let ours = eb::head_digests(&p.state)
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    let buckets = tree::differing(&tree::sums(ours.iter().map(|(_, d)| d), bits), &req.sums);
    let wanted: HashSet<i64> = buckets.iter().copied().collect();
    let leaves = ours
        .iter()
        .filter(|(_, d)| wanted.contains(&tree::bucket_of(d.key_hash, bits)))
        .map(|(e, d)| (e.to_hex(), *d))
        .collect();
    let reply = TreeReply {
        sender: p.state.instance().to_string(),
        buckets,
        leaves,
        nonce: req.fresh.nonce.clone(),
    };
    Ok(serde_json::to_vec(&reply).expect("serialises"))
}

async fn handle_tree(
    State(p): State<Arc<Peer>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, HeaderMap, Vec<u8>) {
    let p2 = p.clone();
    let answer = tokio::task::spawn_blocking(move || tree_answer(&p2, &headers, &body)).await;
    let mut out = HeaderMap::new();
    match answer {
        Ok(Ok(reply)) => {
            let mac = blake3::Hash::from(concord::bundle::message_mac(&p.key, &reply)).to_hex();
            out.insert(
                MAC_HEADER,
                mac.as_str().parse().expect("hex is a header value"),
            );
            (StatusCode::OK, out, reply)
        }
        Ok(Err((code, msg))) => {
            tracing::warn!(%msg, "tree request refused");
            (code, out, msg.into_bytes())
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            out,
            e.to_string().into_bytes(),
        ),
    }
}

/// `/concord/v1/tree/exchange`: body = 4-byte big-endian length, the `Want` JSON, the caller's
/// bundle; the MAC header covers the whole body. Imports the bundle, answers with a bundle of
/// exactly the wanted entities this instance holds.
fn tree_exchange(p: &Peer, headers: &HeaderMap, body: &[u8]) -> Exchanged {
    if !concord::bundle::message_mac_ok(&p.key, body, mac_of(headers)) {
        return Err(unauthorized());
    }
    let bad = |m: String| (StatusCode::BAD_REQUEST, m);
    let n = body
        .get(..4)
        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
        .ok_or_else(|| bad("tree exchange: body too short".into()))?;
    let json = body
        .get(4..4 + n)
        .ok_or_else(|| bad("tree exchange: truncated".into()))?;
    let want: Want =
        serde_json::from_slice(json).map_err(|e| bad(format!("tree exchange: {e}")))?;
    p.fresh(&want.fresh)?;
    let mut only = BTreeSet::new();
    for h in &want.want {
        only.insert(
            EntityId::from_hex(h)
                .ok_or_else(|| bad(format!("tree exchange: bad entity id {h}")))?,
        );
    }
    let b = concord::bundle::decode(&body[4 + n..], &p.key).map_err(refused)?;
    if &b.recipient != p.state.instance() {
        return Err(bad(format!(
            "the bundle is for {}, this instance is {}",
            b.recipient,
            p.state.instance()
        )));
    }
    let _one = p.lock.lock().expect("lock");
    let err = |e: concord::engine::EngineError| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    let report = eb::import(&p.state, &b, &p.scopes, Timestamp::now().millis()).map_err(err)?;
    let reply = eb::export_only(&p.state, &b.sender, &p.scopes, &only).map_err(err)?;
    Ok((report, concord::bundle::encode(&reply, &p.key)))
}

async fn handle_tree_exchange(
    State(p): State<Arc<Peer>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, Vec<u8>) {
    let p2 = p.clone();
    reply_of(tokio::task::spawn_blocking(move || tree_exchange(&p2, &headers, &body)).await)
}

/// An exchange's outcome: the import and the answer's bytes, or a refusal.
type Exchanged = Result<(ImportReport, Vec<u8>), (StatusCode, String)>;

fn reply_of(r: Result<Exchanged, tokio::task::JoinError>) -> (StatusCode, Vec<u8>) {
    match r {
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

async fn handle(State(p): State<Arc<Peer>>, body: Bytes) -> (StatusCode, Vec<u8>) {
    let p2 = p.clone();
    reply_of(tokio::task::spawn_blocking(move || exchange(&p2, &body)).await)
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
        seen: Mutex::new(Default::default()),
    });
    let app = axum::Router::new()
        .route(
            "/concord/v1/exchange",
            post(handle).layer(DefaultBodyLimit::max(MAX_BUNDLE)),
        )
        .route(
            "/concord/v1/tree",
            post(handle_tree).layer(DefaultBodyLimit::max(MAX_TREE)),
        )
        .route(
            "/concord/v1/tree/exchange",
            post(handle_tree_exchange).layer(DefaultBodyLimit::max(MAX_BUNDLE)),
        )
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
    let (bytes, _) = post_to(&endpoint, body, None).await?;
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

/// Posts `body` to `endpoint`; the answer's bytes, or the refusal as an error.
async fn post_to(
    endpoint: &str,
    body: Vec<u8>,
    mac: Option<String>,
) -> Result<(Vec<u8>, Option<String>)> {
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
        .map(String::from);
    let bytes = resp.bytes().await?.to_vec();
    if !status.is_success() {
        bail!(
            "{endpoint} refused ({status}): {}",
            String::from_utf8_lossy(&bytes)
        );
    }
    Ok((bytes, their_mac))
}

fn hex_mac(key: &[u8], body: &[u8]) -> String {
    blake3::Hash::from(concord::bundle::message_mac(key, body))
        .to_hex()
        .to_string()
}

/// `peer sync --tree`: hash-tree comparison of the heads, then an exchange of exactly the
/// entities whose versions differ.
pub async fn sync_tree(cfg: &Config, url: &str, peer: &str, json: bool) -> Result<()> {
    let key = bundle_key()?;
    let peer = InstanceId::new(peer).with_context(|| format!("--peer {peer}"))?;
    let state = open_state(cfg)?;
    let scopes = concord::engine::build::scopes(cfg)?;
    let base = url.trim_end_matches('/');

    // 1. Bucket sums of our heads; the server answers with the differing buckets' leaves.
    let ours = eb::head_digests(&state)?;
    let bits = tree::bucket_bits(ours.len());
    let req = TreeRequest {
        sender: state.instance().to_string(),
        recipient: peer.to_string(),
        bits,
        sums: tree::sums(ours.iter().map(|(_, d)| d), bits),
        fresh: Fresh::now(),
    };
    let body = serde_json::to_vec(&req)?;
    let endpoint = format!("{base}/concord/v1/tree");
    let (bytes, mac) = post_to(&endpoint, body.clone(), Some(hex_mac(&key, &body))).await?;
    if !concord::bundle::message_mac_ok(&key, &bytes, mac.as_deref().unwrap_or("")) {
        bail!("the answer of {endpoint} does not carry a valid MAC (another key, or altered)");
    }
    let reply: TreeReply =
        serde_json::from_slice(&bytes).with_context(|| format!("the answer of {endpoint}"))?;
    if reply.sender != peer.as_str() {
        bail!("{endpoint} is instance {}, not {peer}", reply.sender);
    }
    if reply.nonce != req.fresh.nonce {
        bail!("the answer of {endpoint} is not the answer to this request (another nonce)");
    }

    // 2. The entities whose leaves differ: ours go out, theirs are asked for.
    let differing: HashSet<i64> = reply.buckets.iter().copied().collect();
    let our_leaves: Vec<(EntityId, RowDigest)> = ours
        .iter()
        .filter(|(_, d)| differing.contains(&tree::bucket_of(d.key_hash, bits)))
        .copied()
        .collect();
    let mut their_leaves = Vec::with_capacity(reply.leaves.len());
    for (h, d) in &reply.leaves {
        let e = EntityId::from_hex(h)
            .with_context(|| format!("the answer of {endpoint}: bad entity id {h}"))?;
        their_leaves.push((e, *d));
    }
    let diff = eb::differing_entities(&our_leaves, &their_leaves);
    let mine: BTreeSet<EntityId> = our_leaves.iter().map(|(e, _)| *e).collect();
    let send: BTreeSet<EntityId> = diff.iter().filter(|e| mine.contains(e)).copied().collect();
    let want: Vec<String> = their_leaves
        .iter()
        .filter(|(e, _)| diff.contains(e))
        .map(|(e, _)| e.to_hex())
        .collect();

    // 3. One exchange of exactly those.
    let out = eb::export_only(&state, &peer, &scopes, &send)?;
    let sent = out.entities.len();
    let wanted = want.len();
    let head = serde_json::to_vec(&Want {
        want,
        fresh: Fresh::now(),
    })?;
    let mut body = (head.len() as u32).to_be_bytes().to_vec();
    body.extend_from_slice(&head);
    body.extend_from_slice(&concord::bundle::encode(&out, &key));
    let endpoint = format!("{base}/concord/v1/tree/exchange");
    let mac = hex_mac(&key, &body);
    let (bytes, _) = post_to(&endpoint, body, Some(mac)).await?;
    let back = concord::bundle::decode(&bytes, &key)
        .with_context(|| format!("the answer of {endpoint}"))?;
    if back.sender != peer {
        bail!("{endpoint} is instance {}, not {peer}", back.sender);
    }
    let r = eb::import(&state, &back, &scopes, Timestamp::now().millis())?;
    let summary = serde_json::json!({
        "bits": bits,
        "buckets": req.sums.len(),
        "differing_buckets": reply.buckets.len(),
        "leaves_received": reply.leaves.len(),
        "differing_entities": diff.len(),
        "asked_for": wanted,
    });
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({"tree": summary, "sent": sent, "received": r})
            )?
        );
    } else {
        println!(
            "compared with {peer} by hash tree: {} of {} buckets differed, {} entities differ; \
             sent {sent} entities; received {r}",
            reply.buckets.len(),
            req.sums.len(),
            diff.len()
        );
    }
    Ok(())
}
