//! The runs a service has queued, run and finished: what `POST /jobs/{job}/runs` returns and
//! `GET /runs/{id}` shows. Kept in memory (the newest [`KEEP`]); every finished pass is also in
//! the store's run log (`concord status`).

use serde::Serialize;
use serde_json::Value as J;
use std::collections::VecDeque;

/// Finished runs kept for `GET /runs`.
pub const KEEP: usize = 1000;

/// What started a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Trigger {
    Schedule,
    Request,
    Push,
    Webhook,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    Queued,
    Running,
    /// Finished: everything written.
    Succeeded,
    /// Finished with some system or record failing (the report says which).
    Partial,
    /// The delete guard held the pass: nothing written.
    Held,
    Failed,
    /// Stopped by the service's shutdown after a checkpoint.
    Stopped,
}

#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub id: String,
    pub job: String,
    pub trigger: Trigger,
    pub dry_run: bool,
    pub verify: bool,
    pub state: RunState,
    pub queued_ms: i64,
    pub started_ms: Option<i64>,
    pub finished_ms: Option<i64>,
    /// The pass's report (`concord run --json`'s), once finished.
    pub report: Option<J>,
    pub error: Option<String>,
}

impl Run {
    pub fn finished(&self) -> bool {
        !matches!(self.state, RunState::Queued | RunState::Running)
    }
}

/// Every run of the service, oldest first.
#[derive(Debug, Default)]
pub struct Runs {
    next: u64,
    list: VecDeque<Run>,
}

impl Runs {
    /// A new queued run; its id.
    pub fn queue(&mut self, job: &str, trigger: Trigger, dry_run: bool, verify: bool) -> String {
        self.next += 1;
        let id = format!("run-{}", self.next);
        self.list.push_back(Run {
            id: id.clone(),
            job: job.to_string(),
            trigger,
            dry_run,
            verify,
            state: RunState::Queued,
            queued_ms: concord_model::model::Timestamp::now().millis(),
            started_ms: None,
            finished_ms: None,
            report: None,
            error: None,
        });
        // Finished runs beyond KEEP go, oldest first; queued and running ones stay.
        while self.list.len() > KEEP {
            match self.list.iter().position(Run::finished) {
                Some(i) => {
                    self.list.remove(i);
                }
                None => break,
            }
        }
        id
    }

    pub fn get(&self, id: &str) -> Option<&Run> {
        self.list.iter().find(|r| r.id == id)
    }

    pub fn update(&mut self, id: &str, f: impl FnOnce(&mut Run)) {
        if let Some(r) = self.list.iter_mut().find(|r| r.id == id) {
            f(r);
        }
    }

    /// Whether the job has a run queued by `trigger` not yet started (a tick or push that
    /// finds one waiting does not queue another).
    pub fn waiting(&self, job: &str, trigger: Trigger) -> bool {
        self.list
            .iter()
            .any(|r| r.job == job && r.trigger == trigger && r.state == RunState::Queued)
    }

    /// The runs of one job (or all), newest first.
    pub fn list(&self, job: Option<&str>) -> Vec<&Run> {
        self.list
            .iter()
            .rev()
            .filter(|r| job.is_none_or(|j| r.job == j))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_are_numbered_listed_newest_first_and_bounded() {
        let mut r = Runs::default();
        let a = r.queue("j", Trigger::Request, false, false);
        let b = r.queue("k", Trigger::Schedule, true, false);
        assert_eq!((a.as_str(), b.as_str()), ("run-1", "run-2"));
        assert!(r.waiting("k", Trigger::Schedule));
        assert!(!r.waiting("j", Trigger::Schedule));
        r.update(&a, |x| x.state = RunState::Succeeded);
        assert_eq!(r.list(None)[0].id, "run-2");
        assert_eq!(r.list(Some("j")).len(), 1);
        for _ in 0..KEEP + 5 {
            let id = r.queue("j", Trigger::Request, false, false);
            r.update(&id, |x| x.state = RunState::Failed);
        }
        assert_eq!(r.list.len(), KEEP);
        assert!(r.get(&b).is_some(), "a queued run is never dropped");
    }
}
