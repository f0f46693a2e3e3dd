//! Configuration of one NATS subject as a (destination) system: [`NatsSystem`] is
//! `[systems.NAME]` with `type = "nats"`, [`NatsSide`] a job's side on it; unknown keys are
//! refused.

use serde::Deserialize;

/// `[systems.NAME]`, `type = "nats"`: a NATS server with JetStream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSystem {
    pub url_env: String,
    /// The JetStream stream that holds the subjects (created, or extended with a job's subject,
    /// when needed).
    #[serde(default = "default_stream")]
    pub stream: String,
}

/// A job's side on a NATS system: the subject its change events are published on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NatsSide {
    pub subject: String,
}

impl NatsSide {
    /// What serde cannot check: the key named and the message.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        let bad = self.subject.is_empty()
            || self.subject.contains(char::is_whitespace)
            || self
                .subject
                .split('.')
                .any(|t| t.is_empty() || t == "*" || t == ">");
        if bad {
            return Err((
                "subject",
                format!(
                    "`{}` is not a subject to publish on (dot-separated tokens, no spaces, no wildcards)",
                    self.subject
                ),
            ));
        }
        Ok(())
    }
}

fn default_stream() -> String {
    "CONCORD".into()
}
