//! The instance-to-instance exchange protocol as functions from request bytes to reply bytes:
//! no HTTP here (the binary's `concord peer serve|sync` carries the bytes over axum and reqwest),
//! so the protocol is reusable and tested without a network.
//!
//! **Plain exchange** ([`EXCHANGE_PATH`]): the caller posts the bundle it made for the server;
//! the server imports it and answers with the bundle it made for the caller, which the caller
//! imports. Only entities one side is not known to hold move. Bundles authenticate (and encrypt)
//! themselves with the shared secret; a refused bundle changes nothing on either side.
//!
//! **Tree exchange** ([`TREE_PATH`], then [`TREE_EXCHANGE_PATH`]): the caller sends bucket sums
//! of its heads; the server answers with the differing buckets and its leaves in them; the
//! caller then sends exactly the entities whose versions differ and asks for the server's. Its
//! messages carry a MAC ([`MAC_HEADER`]) with a key derived from the same secret, a random nonce
//! and the sender's clock: a captured message is refused when replayed (nonce already seen) or
//! after [`MESSAGE_LIFETIME_MS`] (stale); the answer echoes the nonce.

use crate::bundle::{self, BundleError};
use crate::engine::bundle::{self as eb, ImportReport, Scope};
use crate::engine::EngineError;
use concord_model::core::tree::{self, BucketSum, RowDigest};
use concord_model::model::{EntityId, InstanceId, Timestamp};
use concord_store::StateStore;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Mutex;

pub const EXCHANGE_PATH: &str = "/concord/v1/exchange";
pub const TREE_PATH: &str = "/concord/v1/tree";
pub const TREE_EXCHANGE_PATH: &str = "/concord/v1/tree/exchange";
/// The header carrying a tree message's MAC (hex).
pub const MAC_HEADER: &str = "x-concord-mac";
/// The largest bundle a request may carry (read whole before its MAC is checked).
pub const MAX_BUNDLE: usize = 256 << 20;
/// The largest tree summary: 2^20 buckets of JSON with room to spare.
pub const MAX_TREE: usize = 64 << 20;
/// How long a tree message is valid: its `sent_ms` must be within this of the receiver's
/// clock, and its nonce is remembered this long.
pub const MESSAGE_LIFETIME_MS: i64 = 5 * 60 * 1000;

/// Why a request is refused (the server's answer) or an answer is not accepted (the caller's).
#[derive(Debug, thiserror::Error)]
pub enum ExchangeError {
    /// Another key, an altered message, a replay, a stale message.
    #[error("{0}")]
    Unauthorized(String),
    /// A malformed message, or one meant for another instance.
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl From<BundleError> for ExchangeError {
    fn from(e: BundleError) -> Self {
        match e {
            BundleError::Foreign { .. } | BundleError::Tampered => {
                ExchangeError::Unauthorized(e.to_string())
            }
            _ => ExchangeError::BadRequest(e.to_string()),
        }
    }
}

/// Freshness of a MAC'd tree message: a random nonce and the sender's clock.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Fresh {
    nonce: String,
    sent_ms: i64,
}

impl Fresh {
    fn now() -> Fresh {
        Fresh {
            nonce: bundle::message_nonce(),
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
/// request's nonce.
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

/// A MAC'd message: its body and the MAC to send with it (hex).
#[derive(Debug, Clone)]
pub struct Signed {
    pub body: Vec<u8>,
    pub mac: String,
}

fn sign(key: &[u8], body: Vec<u8>) -> Signed {
    let mac = blake3::Hash::from(bundle::message_mac(key, &body))
        .to_hex()
        .to_string();
    Signed { body, mac }
}

fn mac_ok(key: &[u8], body: &[u8], mac: &str) -> Result<(), ExchangeError> {
    if bundle::message_mac_ok(key, body, mac) {
        Ok(())
    } else {
        Err(ExchangeError::Unauthorized(
            "the message's MAC does not match (another key, or altered)".into(),
        ))
    }
}

fn bad(m: impl Into<String>) -> ExchangeError {
    ExchangeError::BadRequest(m.into())
}

/// The serving side: one instance's state, the scopes of its jobs and the shared secret.
pub struct Server {
    state: StateStore,
    scopes: Vec<Scope>,
    key: Vec<u8>,
    /// One exchange at a time.
    lock: Mutex<()>,
    /// Nonces of tree messages seen within their lifetime, with their `sent_ms`.
    seen: Mutex<HashMap<String, i64>>,
}

impl Server {
    pub fn new(state: StateStore, scopes: Vec<Scope>, key: Vec<u8>) -> Self {
        Server {
            state,
            scopes,
            key,
            lock: Mutex::new(()),
            seen: Mutex::new(HashMap::new()),
        }
    }

    pub fn instance(&self) -> &InstanceId {
        self.state.instance()
    }

    /// Refuses a message outside its lifetime or seen before (a replay); remembers it.
    fn fresh(&self, f: &Fresh, now: i64) -> Result<(), ExchangeError> {
        if (now - f.sent_ms).abs() > MESSAGE_LIFETIME_MS {
            return Err(ExchangeError::Unauthorized(format!(
                "stale message: sent {} s from this instance's clock (the limit is {} s; are the clocks set?)",
                (now - f.sent_ms) / 1000,
                MESSAGE_LIFETIME_MS / 1000
            )));
        }
        let mut seen = self.seen.lock().expect("lock");
        seen.retain(|_, t| (now - *t).abs() <= 2 * MESSAGE_LIFETIME_MS);
        if seen.insert(f.nonce.clone(), f.sent_ms).is_some() {
            return Err(ExchangeError::Unauthorized(
                "replayed message: this nonce was already used".into(),
            ));
        }
        Ok(())
    }

    fn for_me(&self, recipient: &str, what: &str) -> Result<(), ExchangeError> {
        if recipient != self.state.instance().as_str() {
            return Err(bad(format!(
                "the {what} is for {recipient}, this instance is {}",
                self.state.instance()
            )));
        }
        Ok(())
    }

    /// [`EXCHANGE_PATH`]: imports the caller's bundle, answers with the bundle made for it.
    pub fn exchange(&self, body: &[u8]) -> Result<(ImportReport, Vec<u8>), ExchangeError> {
        let _one = self.lock.lock().expect("lock");
        let b = bundle::decode(body, &self.key)?;
        self.for_me(b.recipient.as_str(), "bundle")?;
        let report = eb::import(&self.state, &b, &self.scopes, Timestamp::now().millis())?;
        let reply = eb::export(&self.state, &b.sender, &self.scopes)?;
        Ok((report, bundle::encode(&reply, &self.key)))
    }

    /// [`TREE_PATH`]: compares the caller's bucket sums with this instance's heads; the answer
    /// is signed.
    pub fn tree(&self, body: &[u8], mac: &str) -> Result<Signed, ExchangeError> {
        mac_ok(&self.key, body, mac)?;
        let req: TreeRequest =
            serde_json::from_slice(body).map_err(|e| bad(format!("tree request: {e}")))?;
        self.fresh(&req.fresh, Timestamp::now().millis())?;
        self.for_me(&req.recipient, "request")?;
        let bits = req.bits.clamp(1, 24);
        let _one = self.lock.lock().expect("lock");
        let ours = eb::head_digests(&self.state)?;
        let buckets = tree::differing(&tree::sums(ours.iter().map(|(_, d)| d), bits), &req.sums);
        let wanted: HashSet<i64> = buckets.iter().copied().collect();
        let leaves = ours
            .iter()
            .filter(|(_, d)| wanted.contains(&tree::bucket_of(d.key_hash, bits)))
            .map(|(e, d)| (e.to_hex(), *d))
            .collect();
        let reply = TreeReply {
            sender: self.state.instance().to_string(),
            buckets,
            leaves,
            nonce: req.fresh.nonce.clone(),
        };
        Ok(sign(
            &self.key,
            serde_json::to_vec(&reply).expect("serialises"),
        ))
    }

    /// [`TREE_EXCHANGE_PATH`]: body = 4-byte big-endian length, the `Want` JSON, the caller's
    /// bundle; the MAC covers the whole body. Imports the bundle, answers with a bundle of
    /// exactly the wanted entities this instance holds.
    pub fn tree_exchange(
        &self,
        body: &[u8],
        mac: &str,
    ) -> Result<(ImportReport, Vec<u8>), ExchangeError> {
        mac_ok(&self.key, body, mac)?;
        let n = body
            .get(..4)
            .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")) as usize)
            .ok_or_else(|| bad("tree exchange: body too short"))?;
        let json = body
            .get(4..4 + n)
            .ok_or_else(|| bad("tree exchange: truncated"))?;
        let want: Want =
            serde_json::from_slice(json).map_err(|e| bad(format!("tree exchange: {e}")))?;
        self.fresh(&want.fresh, Timestamp::now().millis())?;
        let mut only = BTreeSet::new();
        for h in &want.want {
            only.insert(
                EntityId::from_hex(h)
                    .ok_or_else(|| bad(format!("tree exchange: bad entity id {h}")))?,
            );
        }
        let b = bundle::decode(&body[4 + n..], &self.key)?;
        self.for_me(b.recipient.as_str(), "bundle")?;
        let _one = self.lock.lock().expect("lock");
        let report = eb::import(&self.state, &b, &self.scopes, Timestamp::now().millis())?;
        let reply = eb::export_only(&self.state, &b.sender, &self.scopes, &only)?;
        Ok((report, bundle::encode(&reply, &self.key)))
    }
}

/// The calling side of one exchange with instance `peer`.
pub struct Client<'a> {
    pub state: &'a StateStore,
    pub scopes: &'a [Scope],
    pub key: &'a [u8],
    pub peer: InstanceId,
}

/// A plain exchange's request: the bundle for the peer, and how many entities it carries.
pub struct ExchangeRequest {
    pub body: Vec<u8>,
    pub sent: usize,
}

/// A tree exchange after its first step: what was asked, for checking the answer.
pub struct TreeStep {
    pub request: Signed,
    bits: u32,
    buckets: usize,
    nonce: String,
    ours: Vec<(EntityId, RowDigest)>,
}

/// A tree exchange after its second step: the body to post to [`TREE_EXCHANGE_PATH`] and what
/// the comparison found.
pub struct TreeExchange {
    pub request: Signed,
    pub sent: usize,
    pub summary: TreeSummary,
}

/// What a tree comparison found.
#[derive(Debug, Clone, Serialize)]
pub struct TreeSummary {
    pub bits: u32,
    pub buckets: usize,
    pub differing_buckets: usize,
    pub leaves_received: usize,
    pub differing_entities: usize,
    pub asked_for: usize,
}

impl Client<'_> {
    /// The plain exchange's request.
    pub fn exchange_request(&self) -> Result<ExchangeRequest, ExchangeError> {
        let out = eb::export(self.state, &self.peer, self.scopes)?;
        Ok(ExchangeRequest {
            sent: out.entities.len(),
            body: bundle::encode(&out, self.key),
        })
    }

    /// Imports the peer's answer (a bundle it made for this instance).
    pub fn import_answer(&self, bytes: &[u8]) -> Result<ImportReport, ExchangeError> {
        let back = bundle::decode(bytes, self.key)?;
        if back.sender != self.peer {
            return Err(bad(format!(
                "the answer is from instance {}, not {}",
                back.sender, self.peer
            )));
        }
        Ok(eb::import(
            self.state,
            &back,
            self.scopes,
            Timestamp::now().millis(),
        )?)
    }

    /// A tree exchange's first request: bucket sums of this instance's heads.
    pub fn tree_request(&self) -> Result<TreeStep, ExchangeError> {
        let ours = eb::head_digests(self.state)?;
        let bits = tree::bucket_bits(ours.len());
        let req = TreeRequest {
            sender: self.state.instance().to_string(),
            recipient: self.peer.to_string(),
            bits,
            sums: tree::sums(ours.iter().map(|(_, d)| d), bits),
            fresh: Fresh::now(),
        };
        let body = serde_json::to_vec(&req).expect("serialises");
        Ok(TreeStep {
            request: sign(self.key, body),
            bits,
            buckets: req.sums.len(),
            nonce: req.fresh.nonce,
            ours,
        })
    }

    /// From the peer's answer to the tree request (checked: MAC, sender, nonce), the exchange
    /// of exactly the entities whose versions differ: ours go out, theirs are asked for.
    pub fn tree_exchange(
        &self,
        step: TreeStep,
        answer: &[u8],
        mac: &str,
    ) -> Result<TreeExchange, ExchangeError> {
        mac_ok(self.key, answer, mac)?;
        let reply: TreeReply =
            serde_json::from_slice(answer).map_err(|e| bad(format!("tree answer: {e}")))?;
        if reply.sender != self.peer.as_str() {
            return Err(bad(format!(
                "the answer is from instance {}, not {}",
                reply.sender, self.peer
            )));
        }
        if reply.nonce != step.nonce {
            return Err(ExchangeError::Unauthorized(
                "the answer is not the answer to this request (another nonce)".into(),
            ));
        }
        let differing: HashSet<i64> = reply.buckets.iter().copied().collect();
        let our_leaves: Vec<(EntityId, RowDigest)> = step
            .ours
            .iter()
            .filter(|(_, d)| differing.contains(&tree::bucket_of(d.key_hash, step.bits)))
            .copied()
            .collect();
        let mut their_leaves = Vec::with_capacity(reply.leaves.len());
        for (h, d) in &reply.leaves {
            let e = EntityId::from_hex(h)
                .ok_or_else(|| bad(format!("tree answer: bad entity id {h}")))?;
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
        let out = eb::export_only(self.state, &self.peer, self.scopes, &send)?;
        let summary = TreeSummary {
            bits: step.bits,
            buckets: step.buckets,
            differing_buckets: reply.buckets.len(),
            leaves_received: reply.leaves.len(),
            differing_entities: diff.len(),
            asked_for: want.len(),
        };
        let head = serde_json::to_vec(&Want {
            want,
            fresh: Fresh::now(),
        })
        .expect("serialises");
        let mut body = (head.len() as u32).to_be_bytes().to_vec();
        body.extend_from_slice(&head);
        body.extend_from_slice(&bundle::encode(&out, self.key));
        Ok(TreeExchange {
            request: sign(self.key, body),
            sent: out.entities.len(),
            summary,
        })
    }
}
