//! Change Data Capture: every create, update, delete and undelete of a record becomes a change
//! event with a replay id, kept (the newest [`RETAINED`]) for the Streaming API to deliver on
//! `/data/ChangeEvents` and `/data/{Object}ChangeEvent`.

use serde_json::{json, Map, Value as J};
use std::collections::VecDeque;

/// Events kept for replay (an org keeps 72 hours of them).
pub const RETAINED: usize = 100_000;

/// One change event.
#[derive(Debug, Clone)]
pub struct ChangeEvent {
    pub replay_id: u64,
    pub object: String,
    /// The event's payload: `ChangeEventHeader` and the changed fields.
    pub payload: J,
    /// The record as it was after the change (a deleted one: as it was deleted), for the
    /// PushTopics that evaluate it; empty while the org has no PushTopic.
    pub record: Map<String, J>,
}

impl ChangeEvent {
    /// The channel an object's events come on: `/data/AccountChangeEvent`,
    /// `/data/Invoice__ChangeEvent` for `Invoice__c`.
    pub fn channel_of(object: &str) -> String {
        match object.strip_suffix("__c") {
            Some(base) => format!("/data/{base}__ChangeEvent"),
            None => format!("/data/{object}ChangeEvent"),
        }
    }

    /// Whether the event is delivered on `channel` (its object's, or every object's).
    pub fn on(&self, channel: &str) -> bool {
        channel == "/data/ChangeEvents" || channel == Self::channel_of(&self.object)
    }

    /// The Bayeux message for a subscriber of `channel`.
    pub fn message(&self, channel: &str) -> J {
        json!({
            "channel": channel,
            "data": {
                "schema": format!("concord-sandbox-{}", self.object),
                "payload": self.payload,
                "event": {"replayId": self.replay_id},
            },
        })
    }
}

/// The org's event log.
#[derive(Debug, Default, Clone)]
pub struct EventLog {
    events: VecDeque<ChangeEvent>,
    last: u64,
    commit: u64,
}

impl EventLog {
    /// The newest replay id given (0: none yet).
    pub fn last_replay_id(&self) -> u64 {
        self.last
    }

    /// The oldest replay id still kept.
    pub fn oldest_replay_id(&self) -> Option<u64> {
        self.events.front().map(|e| e.replay_id)
    }

    /// Every event after `replay_id`, oldest first.
    pub fn since(&self, replay_id: u64) -> impl Iterator<Item = &ChangeEvent> {
        let start = self.events.partition_point(|e| e.replay_id <= replay_id);
        self.events.iter().skip(start)
    }

    /// Events after `replay_id` on `channel`, oldest first, at most `max`.
    pub fn after(&self, replay_id: u64, channel: &str, max: usize) -> Vec<ChangeEvent> {
        let start = self.events.partition_point(|e| e.replay_id <= replay_id);
        self.events
            .iter()
            .skip(start)
            .filter(|e| e.on(channel))
            .take(max)
            .cloned()
            .collect()
    }

    /// Records one change: `change_type` CREATE, UPDATE, DELETE or UNDELETE; `fields` the
    /// values sent (all of a created or undeleted record's, an update's changed ones, none
    /// for a delete); `nulled` the fields an update set to null.
    #[allow(clippy::too_many_arguments)]
    pub fn emit(
        &mut self,
        object: &str,
        id: &str,
        change_type: &str,
        fields: Map<String, J>,
        record: Map<String, J>,
        user: &str,
        at_ms: i64,
    ) {
        self.last += 1;
        self.commit += 1;
        let changed: Vec<&String> = if change_type == "UPDATE" {
            fields.keys().collect()
        } else {
            Vec::new()
        };
        let nulled: Vec<&String> = if change_type == "UPDATE" {
            fields
                .iter()
                .filter(|(_, v)| v.is_null())
                .map(|(k, _)| k)
                .collect()
        } else {
            Vec::new()
        };
        let mut payload = Map::new();
        payload.insert(
            "ChangeEventHeader".into(),
            json!({
                "entityName": object,
                "recordIds": [id],
                "changeType": change_type,
                "changeOrigin": "com/salesforce/api/rest",
                "transactionKey": format!("{:016x}", self.commit),
                "sequenceNumber": 1,
                "commitTimestamp": at_ms,
                "commitNumber": self.commit,
                "commitUser": user,
                "changedFields": changed,
                "nulledFields": nulled,
                "diffFields": [],
            }),
        );
        for (k, v) in fields.iter() {
            if !matches!(
                k.as_str(),
                "Id" | "attributes" | "SystemModstamp" | "IsDeleted"
            ) {
                payload.insert(k.clone(), v.clone());
            }
        }
        self.events.push_back(ChangeEvent {
            replay_id: self.last,
            object: object.to_string(),
            payload: J::Object(payload),
            record,
        });
        while self.events.len() > RETAINED {
            self.events.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_by_channel_and_replay_id() {
        let mut log = EventLog::default();
        let f = |k: &str, v: J| {
            let mut m = Map::new();
            m.insert(k.into(), v);
            m
        };
        log.emit(
            "Account",
            "001A",
            "CREATE",
            f("Name", json!("Acme")),
            Map::new(),
            "005U",
            1,
        );
        log.emit(
            "Contact",
            "003A",
            "CREATE",
            f("LastName", json!("Doe")),
            Map::new(),
            "005U",
            2,
        );
        log.emit(
            "Account",
            "001A",
            "UPDATE",
            f("Phone", J::Null),
            Map::new(),
            "005U",
            3,
        );
        assert_eq!(log.last_replay_id(), 3);
        let acc = log.after(0, "/data/AccountChangeEvent", 10);
        assert_eq!(acc.iter().map(|e| e.replay_id).collect::<Vec<_>>(), [1, 3]);
        let h = &acc[1].payload["ChangeEventHeader"];
        assert_eq!(h["changeType"], "UPDATE");
        assert_eq!(h["changedFields"], json!(["Phone"]));
        assert_eq!(h["nulledFields"], json!(["Phone"]));
        assert_eq!(log.after(1, "/data/ChangeEvents", 10).len(), 2);
        assert_eq!(
            ChangeEvent::channel_of("Invoice__c"),
            "/data/Invoice__ChangeEvent"
        );
        let m = acc[0].message("/data/AccountChangeEvent");
        assert_eq!(m["data"]["event"]["replayId"], 1);
        assert_eq!(m["data"]["payload"]["Name"], "Acme");
    }
}
