//! The change feed of an sObject: Change Data Capture over the Streaming API (Bayeux /
//! CometD long-polling at `/cometd/NN.N`), on the object's channel and its children's. An event
//! is a hint that a read would find something: the pass reads from its cursor as any pass does
//! (so an event missed while the feed was down loses nothing — the read finds the change).
//! The feed also sends one hint whenever it had to handshake again (events may have been
//! missed), and ends when the server cannot be reached: the caller polls and subscribes again.

use super::SalesforceConnector;
use crate::{ChangeFeed, ConnectorError};
use serde_json::{json, Value as J};
use std::sync::Arc;

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

    /// Handshake, the first connect, and a subscription (new events only) to every channel:
    /// the client id.
    async fn open(&self) -> Result<String, ConnectorError> {
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
        for ch in &self.channels {
            let r = self
                .post(
                    json!({"channel": "/meta/subscribe", "clientId": cid, "subscription": ch,
                    "ext": {"replay": {ch.as_str(): -1}}}),
                )
                .await?;
            if !r
                .iter()
                .any(|m| m["channel"] == "/meta/subscribe" && m["successful"] == true)
            {
                return Err(self.refused(&format!("subscription to {ch}"), &J::Array(r)));
            }
        }
        Ok(cid)
    }
}

/// Subscribes to the object's changes (and its children's): a feed of hints.
pub(super) async fn subscribe(c: &SalesforceConnector) -> Result<ChangeFeed, ConnectorError> {
    let mut channels = vec![channel_of(&c.cfg.object)];
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
    let mut cid = s.open().await?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
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
            if msgs
                .iter()
                .any(|m| s.channels.iter().any(|ch| m["channel"] == ch.as_str()))
                && !hint(&tx)
            {
                return;
            }
            let connect_ok = msgs
                .iter()
                .any(|m| m["channel"] == "/meta/connect" && m["successful"] == true);
            if !connect_ok {
                // The server forgot the client (a restart, a timeout): handshake again; events
                // may have been missed meanwhile, so a pass looks.
                match s.open().await {
                    Ok(id) => cid = id,
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
    Ok(rx)
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
