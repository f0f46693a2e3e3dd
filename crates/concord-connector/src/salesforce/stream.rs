//! The change feed of an sObject: Change Data Capture over the Streaming API (Bayeux /
//! CometD long-polling at `/cometd/NN.N`), on the object's channel and its children's. An event
//! is a hint that a read would find something: the pass reads from its cursor as any pass does.
//! The feed's position is the newest replay id received per channel; stored with the cursor of
//! a pass that started after it, it is where a feed subscribes again after a restart, so the
//! events made while the service was down come again (and start a pass). The feed also sends
//! one hint whenever events may have been missed (it had to handshake again, or the org no
//! longer holds the stored replay id), and ends when the server cannot be reached: the caller
//! polls and subscribes again.

use super::SalesforceConnector;
use crate::{ChangeFeed, ConnectorError};
use serde_json::{json, Value as J};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// The CDC channel of an object: `/data/AccountChangeEvent`, `/data/Invoice__ChangeEvent`.
pub fn channel_of(object: &str) -> String {
    match object.strip_suffix("__c") {
        Some(base) => format!("/data/{base}__ChangeEvent"),
        None => format!("/data/{object}ChangeEvent"),
    }
}

struct Session {
    client: Arc<super::client::Client>,
    url: String,
    channels: Vec<String>,
    system: String,
    object: String,
}

/// Per channel, the replay id of the newest event received (the feed's position).
type Replay = BTreeMap<String, i64>;

/// What an `ext.replay` subscription asked for was refused because the org no longer holds
/// (or never had) that replay id.
fn replay_refused(answer: &[J]) -> bool {
    answer.iter().any(|m| {
        m["channel"] == "/meta/subscribe"
            && m["successful"] == false
            && m["error"].as_str().is_some_and(|e| e.contains("replayId"))
    })
}

impl Session {
    fn refused(&self, what: &str, answer: &J) -> ConnectorError {
        ConnectorError {
            system: self.system.clone(),
            object: self.object.clone(),
            message: format!("Streaming API {what} refused: {answer}"),
            retryable: true,
        }
    }

    async fn post(&self, msg: J) -> Result<Vec<J>, ConnectorError> {
        let r = self
            .client
            .call(
                reqwest::Method::POST,
                &self.url,
                Some(&J::Array(vec![msg])),
                None,
            )
            .await?;
        Ok(r.body.as_array().cloned().unwrap_or_default())
    }

    async fn subscribe(&self, cid: &str, ch: &str, replay: i64) -> Result<Vec<J>, ConnectorError> {
        self.post(
            json!({"channel": "/meta/subscribe", "clientId": cid, "subscription": ch,
            "ext": {"replay": {ch: replay}}}),
        )
        .await
    }

    /// Handshake, the first connect, and a subscription to every channel: from the replay id
    /// `from` holds for it (the events after it come again), else new events only. The client
    /// id, and whether a replay id was refused (the org no longer holds it: that channel goes
    /// on from now, its id leaves `from`, and events may have been missed).
    async fn open(&self, from: &mut Replay) -> Result<(String, bool), ConnectorError> {
        let hs = self
            .post(json!({"channel": "/meta/handshake", "version": "1.0",
                "supportedConnectionTypes": ["long-polling"], "ext": {"replay": true}}))
            .await?;
        let cid = hs
            .iter()
            .find(|m| m["channel"] == "/meta/handshake" && m["successful"] == true)
            .and_then(|m| m["clientId"].as_str())
            .ok_or_else(|| self.refused("handshake", &J::Array(hs.clone())))?
            .to_string();
        self.post(
            json!({"channel": "/meta/connect", "clientId": cid, "connectionType": "long-polling"}),
        )
        .await?;
        let mut gap = false;
        for ch in &self.channels {
            let asked = from.get(ch).copied().unwrap_or(-1);
            let mut r = self.subscribe(&cid, ch, asked).await?;
            if asked >= 0 && replay_refused(&r) {
                tracing::warn!(object = %self.object, channel = %ch, replay_id = asked, "change feed: the org no longer holds the stored replay id; going on from new events (a pass looks)");
                gap = true;
                from.remove(ch);
                r = self.subscribe(&cid, ch, -1).await?;
            }
            if !r
                .iter()
                .any(|m| m["channel"] == "/meta/subscribe" && m["successful"] == true)
            {
                return Err(self.refused(&format!("subscription to {ch}"), &J::Array(r)));
            }
        }
        Ok((cid, gap))
    }
}

/// The channel of the PushTopic `name`, created for the object (every change of any record:
/// `SELECT Id FROM {object}`, NotifyForFields All) when the org has none of that name. One
/// that exists is used as it is (its query may narrow what announces a change: the schedule's
/// passes still read everything); an inactive one is refused.
async fn ensure_topic(c: &SalesforceConnector, name: &str) -> Result<String, ConnectorError> {
    let v = &c.cfg.api_version;
    let q = format!(
        "SELECT Id, IsActive, Query FROM PushTopic WHERE Name = {}",
        super::soql::quote(name)
    );
    let url = format!("/services/data/v{v}/query?q={}", super::read::urlencode(&q));
    let r = c
        .client
        .call(reqwest::Method::GET, &url, None, None)
        .await?;
    match r.body["records"].as_array().and_then(|a| a.first()) {
        Some(t) if t["IsActive"] == false => {
            return Err(c.client_error(&format!(
                "PushTopic {name} is inactive (activate it, or name another in push_topic)"
            )))
        }
        Some(t) => {
            tracing::info!(object = %c.cfg.object, topic = name, query = %t["Query"], "change feed: listening to an existing PushTopic");
        }
        None => {
            let body = json!({
                "Name": name,
                "Query": format!("SELECT Id FROM {}", c.cfg.object),
                "ApiVersion": v.parse::<f64>().unwrap_or(59.0),
                "NotifyForFields": "All",
                "Description": "concord: announces every change of the object to concord serve",
            });
            c.client
                .call(
                    reqwest::Method::POST,
                    &format!("/services/data/v{v}/sobjects/PushTopic"),
                    Some(&body),
                    None,
                )
                .await?;
            tracing::info!(object = %c.cfg.object, topic = name, "change feed: PushTopic created");
        }
    }
    Ok(format!("/topic/{name}"))
}

/// The feed position stored with a cursor: `{"<channel>": <replay id>, …}`. One that does not
/// parse is not used (every channel from new events, and a pass looks).
fn parse_position(from: Option<&[u8]>, object: &str) -> (Replay, bool) {
    let Some(b) = from else {
        return (Replay::new(), false);
    };
    match serde_json::from_slice::<Replay>(b) {
        Ok(r) => (r, false),
        Err(e) => {
            tracing::warn!(object = %object, error = %e, "change feed: the stored position does not parse; going on from new events (a pass looks)");
            (Replay::new(), true)
        }
    }
}

/// Subscribes to the object's changes (and its children's) from `from` (a position this feed
/// gave earlier, see [`ChangeFeed::position`]): a feed of hints, positioned by replay ids.
pub(super) async fn subscribe(
    c: &SalesforceConnector,
    from: Option<&[u8]>,
) -> Result<ChangeFeed, ConnectorError> {
    let mut channels = vec![match &c.cfg.push_topic {
        Some(name) => ensure_topic(c, name).await?,
        None => channel_of(&c.cfg.object),
    }];
    for ch in &c.children {
        let name = channel_of(&ch.object);
        if !channels.contains(&name) {
            channels.push(name);
        }
    }
    let s = Session {
        client: c.client.clone(),
        url: format!("/cometd/{}", c.cfg.api_version),
        channels,
        system: c.system.to_string(),
        object: c.cfg.object.clone(),
    };
    let (mut replay, bad) = parse_position(from, &s.object);
    let (mut cid, gap) = s.open(&mut replay).await?;
    let position: crate::FeedPosition = Arc::new(Mutex::new(
        (!replay.is_empty()).then(|| serde_json::to_vec(&replay).expect("json")),
    ));
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    if bad || gap {
        let _ = tx.try_send(());
    }
    let at = position.clone();
    tokio::spawn(async move {
        let hint = |tx: &tokio::sync::mpsc::Sender<()>| match tx.try_send(()) {
            Ok(()) | Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => true,
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => false,
        };
        loop {
            let answer = tokio::select! {
                _ = tx.closed() => return,
                a = s.post(json!({"channel": "/meta/connect", "clientId": cid, "connectionType": "long-polling"})) => a,
            };
            let msgs = match answer {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(object = %s.object, error = %e, "change feed: the Streaming API cannot be reached; back to polling");
                    return;
                }
            };
            let mut events = false;
            for m in &msgs {
                let Some(ch) = s.channels.iter().find(|ch| m["channel"] == ch.as_str()) else {
                    continue;
                };
                events = true;
                if let Some(id) = m["data"]["event"]["replayId"].as_i64() {
                    let r = replay.entry(ch.clone()).or_insert(id);
                    *r = (*r).max(id);
                }
            }
            if events {
                // The position first: a pass started after the hint covers these events.
                *at.lock().expect("feed position") =
                    Some(serde_json::to_vec(&replay).expect("json"));
                if !hint(&tx) {
                    return;
                }
            }
            let connect_ok = msgs
                .iter()
                .any(|m| m["channel"] == "/meta/connect" && m["successful"] == true);
            if !connect_ok {
                // The server forgot the client (a restart, a timeout): handshake again and
                // subscribe from the events received so far (the org sends those made
                // meanwhile again, or, where it no longer holds them, a pass looks).
                match s.open(&mut replay).await {
                    Ok((id, _)) => {
                        cid = id;
                        // (A replay id refused here left `replay`.)
                        *at.lock().expect("feed position") = (!replay.is_empty())
                            .then(|| serde_json::to_vec(&replay).expect("json"));
                    }
                    Err(e) => {
                        tracing::warn!(object = %s.object, error = %e, "change feed: cannot subscribe again; back to polling");
                        return;
                    }
                }
                if !hint(&tx) {
                    return;
                }
            }
        }
    });
    Ok(ChangeFeed::with_position(rx, position))
}

#[cfg(test)]
mod tests {
    #[test]
    fn channels() {
        assert_eq!(super::channel_of("Account"), "/data/AccountChangeEvent");
        assert_eq!(
            super::channel_of("Invoice__c"),
            "/data/Invoice__ChangeEvent"
        );
    }
}
