//! The Streaming API: Bayeux / CometD long-polling at `/cometd/NN.N` (`/meta/handshake`,
//! `/meta/connect`, `/meta/subscribe`, `/meta/unsubscribe`, `/meta/disconnect`, each message
//! posted alone or in a batch, to the endpoint or to `…/meta/{type}` style URLs), delivering
//! Change Data Capture events on `/data/ChangeEvents` and `/data/{Object}ChangeEvent`, and
//! PushTopic notifications on `/topic/{Name}`, with replay ids (`ext.replay`: -1 new events
//! only, -2 every retained one, N those after N).

use super::state::*;
use crate::org::events::ChangeEvent;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value as J};
use std::collections::HashMap;
use std::time::Duration;

/// How long a `/meta/connect` waits for events before it answers with none (Salesforce:
/// 110 s), unless the settings say otherwise.
pub const CONNECT_TIMEOUT_MS: u64 = 110_000;
/// Events one connect delivers at most.
const BATCH: usize = 1000;

struct Subscription {
    channel: String,
    /// The last replay id delivered (or the replay point asked for).
    cursor: u64,
}

struct Client {
    subscriptions: Vec<Subscription>,
    /// Whether a connect was answered: the first one is answered at once (CometD), so the
    /// client can subscribe; later ones wait for events.
    connected: bool,
}

/// The Bayeux clients of a sandbox.
#[derive(Default)]
pub struct Bayeux {
    clients: HashMap<String, Client>,
    next: u64,
}

fn reply(m: &J, extra: J) -> J {
    let mut r = json!({"channel": m.get("channel").cloned().unwrap_or(J::Null)});
    if let Some(id) = m.get("id") {
        r["id"] = id.clone();
    }
    if let Some(c) = m.get("clientId") {
        r["clientId"] = c.clone();
    }
    if let (J::Object(a), J::Object(b)) = (&mut r, extra) {
        a.extend(b);
    }
    r
}

fn advice(timeout: u64) -> J {
    json!({"reconnect": "retry", "interval": 0, "timeout": timeout})
}

/// Whether `channel` is one the org delivers: every object's changes, or one object's.
fn known_channel(sb: &Sandbox, channel: &str) -> bool {
    if channel == "/data/ChangeEvents" {
        return true;
    }
    let org = sb.org.lock().expect("lock");
    if channel.starts_with("/topic/") {
        return org.topic(channel).is_some();
    }
    org.objects()
        .iter()
        .any(|o| ChangeEvent::channel_of(&o.name) == channel)
}

/// `POST /cometd/{v}` (and `/cometd/{v}/…`): a batch of Bayeux messages; the answers, and for a
/// connect the events of the client's subscriptions, waiting for them up to the timeout.
pub(crate) async fn cometd(State(sb): State<St>, body: Bytes) -> Response {
    sb.count("streaming");
    let msgs: Vec<J> = match serde_json::from_slice::<J>(&body) {
        Ok(J::Array(a)) => a,
        Ok(o @ J::Object(_)) => vec![o],
        _ => {
            return (
                axum::http::StatusCode::BAD_REQUEST,
                Json(json!([{"channel": null, "successful": false, "error": "400::a Bayeux message is a JSON object or an array of them"}])),
            )
                .into_response()
        }
    };
    let timeout = sb.settings.streaming_timeout_ms;
    let mut out = Vec::new();
    let mut connect: Option<J> = None;
    for m in msgs {
        let channel = m.get("channel").and_then(J::as_str).unwrap_or("");
        let client = m.get("clientId").and_then(J::as_str).map(str::to_string);
        match channel {
            "/meta/handshake" => {
                let id = {
                    let mut b = sb.bayeux.lock().expect("lock");
                    b.next += 1;
                    // Not guessable from another client's id.
                    let h = blake3::hash(format!("{}/{}", sb.internal_key, b.next).as_bytes());
                    let id = h.to_hex()[..24].to_string();
                    b.clients.insert(
                        id.clone(),
                        Client {
                            subscriptions: Vec::new(),
                            connected: false,
                        },
                    );
                    id
                };
                out.push(reply(
                    &m,
                    json!({"clientId": id, "successful": true, "version": "1.0", "minimumVersion": "1.0",
                        "supportedConnectionTypes": ["long-polling"], "advice": advice(timeout),
                        "ext": {"replay": true, "payload.format": true}}),
                ));
            }
            "/meta/connect" => connect = Some(m),
            "/meta/subscribe" | "/meta/unsubscribe" => {
                let subs: Vec<String> = match m.get("subscription") {
                    Some(J::String(s)) => vec![s.clone()],
                    Some(J::Array(a)) => a.iter().filter_map(J::as_str).map(str::to_string).collect(),
                    _ => Vec::new(),
                };
                let Some(cid) = client.clone().filter(|c| sb.bayeux.lock().expect("lock").clients.contains_key(c)) else {
                    out.push(reply(&m, json!({"successful": false, "error": "403::Unknown client", "advice": {"reconnect": "handshake", "interval": 0}})));
                    continue;
                };
                for sub in subs {
                    if channel == "/meta/unsubscribe" {
                        if let Some(c) = sb.bayeux.lock().expect("lock").clients.get_mut(&cid) {
                            c.subscriptions.retain(|s| s.channel != sub);
                        }
                        out.push(reply(&m, json!({"subscription": sub, "successful": true})));
                        continue;
                    }
                    if !known_channel(&sb, &sub) {
                        out.push(reply(&m, json!({"subscription": sub, "successful": false,
                            "error": format!("400::The channel you requested to subscribe to does not exist {sub}")})));
                        continue;
                    }
                    let asked = m
                        .get("ext")
                        .and_then(|e| e.get("replay"))
                        .and_then(|r| r.get(&sub))
                        .and_then(J::as_i64)
                        .unwrap_or(-1);
                    let (last, oldest) = {
                        let org = sb.org.lock().expect("lock");
                        (org.events.last_replay_id(), org.events.oldest_replay_id())
                    };
                    let floor = oldest.map_or(last, |o| o - 1);
                    let cursor = match asked {
                        -1 => Some(last),
                        -2 => Some(floor),
                        n if n >= 0 && (n as u64) >= floor && (n as u64) <= last => Some(n as u64),
                        _ => None,
                    };
                    let Some(cursor) = cursor else {
                        out.push(reply(&m, json!({"subscription": sub, "successful": false,
                            "error": format!("400::The replayId {{{asked}}} you provided was invalid.  Please provide a valid ID, -2 to replay all events, or -1 to replay only new events.")})));
                        continue;
                    };
                    if let Some(c) = sb.bayeux.lock().expect("lock").clients.get_mut(&cid) {
                        c.subscriptions.retain(|s| s.channel != sub);
                        c.subscriptions.push(Subscription { channel: sub.clone(), cursor });
                    }
                    out.push(reply(&m, json!({"subscription": sub, "successful": true})));
                }
            }
            "/meta/disconnect" => {
                if let Some(c) = &client {
                    sb.bayeux.lock().expect("lock").clients.remove(c);
                }
                out.push(reply(&m, json!({"successful": true})));
            }
            other => out.push(reply(
                &m,
                json!({"successful": false, "error": format!("403::Publishing to {other} is not supported")}),
            )),
        }
    }
    if let Some(m) = connect {
        let cid = m
            .get("clientId")
            .and_then(J::as_str)
            .unwrap_or("")
            .to_string();
        let first = match sb.bayeux.lock().expect("lock").clients.get_mut(&cid) {
            Some(c) => !std::mem::replace(&mut c.connected, true),
            None => {
                out.push(reply(&m, json!({"successful": false, "error": "403::Unknown client", "advice": {"reconnect": "handshake", "interval": 0}})));
                return Json(J::Array(out)).into_response();
            }
        };
        let wait = if first { 0 } else { timeout };
        let deadline = tokio::time::Instant::now() + Duration::from_millis(wait);
        loop {
            let events = deliver(&sb, &cid);
            if !events.is_empty() || tokio::time::Instant::now() >= deadline {
                out.extend(events);
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        out.push(reply(
            &m,
            json!({"successful": true, "advice": advice(timeout)}),
        ));
    }
    Json(J::Array(out)).into_response()
}

/// The client's undelivered events, as messages; its cursors move past them.
fn deliver(sb: &Sandbox, cid: &str) -> Vec<J> {
    let mut b = sb.bayeux.lock().expect("lock");
    let Some(client) = b.clients.get_mut(cid) else {
        return Vec::new();
    };
    let org = sb.org.lock().expect("lock");
    let mut out = Vec::new();
    for s in &mut client.subscriptions {
        if s.channel.starts_with("/topic/") {
            // A PushTopic as it is now (deactivated or deleted: nothing more comes); its
            // notifications from the events of its object, the cursor past every event seen.
            // (Looked up only when there are events to evaluate: a waiting connect asks often.)
            if org.events.last_replay_id() <= s.cursor {
                continue;
            }
            let Some(topic) = org.topic(&s.channel) else {
                continue;
            };
            let mut sent = 0;
            for e in org.events.since(s.cursor) {
                if sent == BATCH {
                    break;
                }
                s.cursor = e.replay_id;
                if let Some(m) = topic.notification(&org, e, &s.channel) {
                    out.push(m);
                    sent += 1;
                }
            }
            continue;
        }
        for e in org.events.after(s.cursor, &s.channel, BATCH) {
            s.cursor = e.replay_id;
            out.push(e.message(&s.channel));
        }
    }
    out
}
