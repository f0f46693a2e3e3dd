//! When a job's passes run under `concord serve`: every N seconds, on a cron expression (UTC),
//! or only on request (`manual`).

use crate::Error;
use concord_engine::config::{JobConfig, Pattern};
use std::str::FromStr;
use std::time::Duration;

#[derive(Debug, Clone)]
pub enum Schedule {
    Every(Duration),
    Cron(Box<croner::Cron>),
    /// On request or push only.
    Manual,
}

impl Schedule {
    /// The job's schedule: `schedule` (cron or `manual`), else every `interval_secs`; a migrate
    /// job without `schedule` runs on request only.
    pub fn of(name: &str, j: &JobConfig) -> Result<Schedule, Error> {
        match j.schedule.as_deref().map(str::trim) {
            Some("manual") => Ok(Schedule::Manual),
            Some(expr) => croner::Cron::from_str(expr)
                .map(|c| Schedule::Cron(Box::new(c)))
                .map_err(|e| {
                    Error::Setup(format!(
                        "jobs.{name}.schedule: `{expr}` is not a cron expression (five fields, minute to weekday, or six with seconds first; or `manual`): {e}"
                    ))
                }),
            None if j.pattern == Pattern::Migrate => Ok(Schedule::Manual),
            None => Ok(Schedule::Every(Duration::from_secs(j.interval_secs.max(1)))),
        }
    }

    /// How long from `now` until the next pass is due (None: never on its own).
    pub fn next_in(&self, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
        match self {
            Schedule::Every(d) => Some(*d),
            Schedule::Cron(c) => c
                .find_next_occurrence(&now, false)
                .ok()
                .map(|t| (t - now).to_std().unwrap_or_default()),
            Schedule::Manual => None,
        }
    }

    /// For people and the API: `every 60s`, the cron expression, `manual`.
    pub fn describe(&self) -> String {
        match self {
            Schedule::Every(d) => format!("every {}s", d.as_secs()),
            Schedule::Cron(c) => c.pattern.to_string(),
            Schedule::Manual => "manual".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn job(extra: &str) -> JobConfig {
        toml::from_str(&format!(
            "pattern = \"broadcast\"\nsystems = [\"a\"]\nsides = {{}}\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn cron_interval_and_manual() {
        let now = chrono::Utc
            .with_ymd_and_hms(2026, 12, 7, 14, 2, 30)
            .unwrap();
        let s = Schedule::of("j", &job("schedule = \"*/5 * * * *\"")).unwrap();
        assert_eq!(s.next_in(now), Some(Duration::from_secs(150)), "14:05:00");
        let s = Schedule::of("j", &job("interval_secs = 30")).unwrap();
        assert_eq!(s.next_in(now), Some(Duration::from_secs(30)));
        let s = Schedule::of("j", &job("schedule = \"manual\"")).unwrap();
        assert_eq!(s.next_in(now), None);
        let e = Schedule::of("j", &job("schedule = \"every day\"")).unwrap_err();
        assert!(e.to_string().contains("jobs.j.schedule"), "{e}");
    }
}
