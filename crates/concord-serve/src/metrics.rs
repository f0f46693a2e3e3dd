//! `/metrics`: Prometheus / OpenMetrics text through `prometheus-client`. Per job and system:
//! records read, written and failed; per job: pass durations, runs by outcome, delete-guard
//! stops, open conflicts; per system: outbox depth.

use concord_engine::engine::SyncReport;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobSystem {
    pub job: String,
    pub system: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabel {
    pub job: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobOutcome {
    pub job: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SystemLabel {
    pub system: String,
}

type Buckets = fn() -> Histogram;

fn pass_buckets() -> Histogram {
    // 10 ms to ~5.5 min.
    Histogram::new(exponential_buckets(0.01, 2.0, 16))
}

pub struct Metrics {
    registry: Registry,
    pub read: Family<JobSystem, Counter>,
    pub written: Family<JobSystem, Counter>,
    pub failed: Family<JobSystem, Counter>,
    pub pass_seconds: Family<JobLabel, Histogram, Buckets>,
    pub runs: Family<JobOutcome, Counter>,
    pub delete_guard_stops: Family<JobLabel, Counter>,
    pub conflicts_open: Family<JobLabel, Gauge>,
    pub outbox: Family<SystemLabel, Gauge>,
    pub lag_seconds: Family<JobSystem, Counter<f64, std::sync::atomic::AtomicU64>>,
    pub lag_writes: Family<JobSystem, Counter>,
    pub lag_max: Family<JobSystem, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub in_flight: Family<JobSystem, Gauge>,
    pub api_usage: Family<SystemLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("concord");
        let m = Metrics {
            read: Family::default(),
            written: Family::default(),
            failed: Family::default(),
            pass_seconds: Family::new_with_constructor(pass_buckets as Buckets),
            runs: Family::default(),
            delete_guard_stops: Family::default(),
            conflicts_open: Family::default(),
            outbox: Family::default(),
            lag_seconds: Family::default(),
            lag_writes: Family::default(),
            lag_max: Family::default(),
            in_flight: Family::default(),
            api_usage: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "records_read",
            "Records read, per job and system",
            m.read.clone(),
        );
        registry.register(
            "records_written",
            "Records written (created, updated or deleted), per job and system",
            m.written.clone(),
        );
        registry.register(
            "records_failed",
            "Writes that failed and stay in the outbox, per job and system",
            m.failed.clone(),
        );
        registry.register(
            "pass_duration_seconds",
            "Duration of a job's passes",
            m.pass_seconds.clone(),
        );
        registry.register(
            "runs",
            "Runs finished, per job and outcome (succeeded, partial, held, failed, stopped)",
            m.runs.clone(),
        );
        registry.register(
            "delete_guard_stops",
            "Passes the delete guard held (nothing written), per job",
            m.delete_guard_stops.clone(),
        );
        registry.register(
            "conflicts_open",
            "Conflicts parked for a person, per job",
            m.conflicts_open.clone(),
        );
        registry.register(
            "outbox_depth",
            "Writes waiting in a system's outbox",
            m.outbox.clone(),
        );
        registry.register(
            "lag_seconds",
            "End-to-end lag of writes, summed: from the change's modification time at its source to the write's acknowledgement (rate of this over the rate of lag_writes is the mean lag)",
            m.lag_seconds.clone(),
        );
        registry.register(
            "lag_writes",
            "Writes whose end-to-end lag was measured (their source keeps modification times)",
            m.lag_writes.clone(),
        );
        registry.register(
            "lag_max_seconds",
            "The largest end-to-end lag of the last pass that wrote to the system",
            m.lag_max.clone(),
        );
        registry.register(
            "creates_in_flight",
            "Creates whose answer was lost that wait because the system may still be making them (as of the job's last pass)",
            m.in_flight.clone(),
        );
        registry.register(
            "api_usage_ratio",
            "Share of the system's own daily API limit used, as it last reported it (Salesforce Sforce-Limit-Info)",
            m.api_usage.clone(),
        );
        Metrics { registry, ..m }
    }

    /// The creates waiting for a request in flight after a pass, for each of the job's
    /// `systems` (zero where none wait).
    pub fn in_flight<'a>(
        &self,
        job: &str,
        systems: impl IntoIterator<Item = &'a str>,
        r: &SyncReport,
    ) {
        for s in systems {
            let n = r.in_flight.get(s).copied().unwrap_or(0);
            self.in_flight
                .get_or_create(&JobSystem {
                    job: job.to_string(),
                    system: s.to_string(),
                })
                .set(n as i64);
        }
    }

    /// Counts a finished pass.
    pub fn pass(&self, job: &str, r: &SyncReport, seconds: f64) {
        let js = |s: &String| JobSystem {
            job: job.to_string(),
            system: s.clone(),
        };
        for (s, n) in &r.read {
            self.read.get_or_create(&js(s)).inc_by(*n);
        }
        for (s, n) in &r.written {
            self.written.get_or_create(&js(s)).inc_by(*n);
        }
        for (s, l) in &r.lag {
            self.lag_seconds
                .get_or_create(&js(s))
                .inc_by(l.sum_ms as f64 / 1000.0);
            self.lag_writes.get_or_create(&js(s)).inc_by(l.count);
            self.lag_max
                .get_or_create(&js(s))
                .set(l.max_ms as f64 / 1000.0);
        }
        let j = JobLabel {
            job: job.to_string(),
        };
        for (s, n) in &r.failed_in {
            self.failed.get_or_create(&js(s)).inc_by(*n);
        }
        self.pass_seconds.get_or_create(&j).observe(seconds);
        if !r.held_deletes.is_empty() {
            self.delete_guard_stops.get_or_create(&j).inc();
        }
    }

    pub fn outcome(&self, job: &str, outcome: &str) {
        self.runs
            .get_or_create(&JobOutcome {
                job: job.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// The exposition text.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pass_shows_in_the_exposition() {
        let m = Metrics::new();
        let mut r = SyncReport::default();
        r.read.insert("erp.customers".into(), 3);
        r.written.insert("crm.Account".into(), 2);
        r.failed_in.insert("crm.Account".into(), 1);
        r.lag.insert(
            "crm.Account".into(),
            concord_engine::engine::Lag {
                count: 2,
                sum_ms: 3000,
                max_ms: 2500,
            },
        );
        r.lag.insert(
            "crm.Account".into(),
            concord_engine::engine::Lag {
                count: 2,
                sum_ms: 3000,
                max_ms: 2500,
            },
        );
        m.pass("customers", &r, 0.5);
        m.outcome("customers", "succeeded");
        m.outbox
            .get_or_create(&SystemLabel {
                system: "crm.Account".into(),
            })
            .set(4);
        let t = m.render();
        assert!(
            t.contains("concord_records_read_total{job=\"customers\",system=\"erp.customers\"} 3"),
            "{t}"
        );
        assert!(
            t.contains("concord_records_written_total{job=\"customers\",system=\"crm.Account\"} 2"),
            "{t}"
        );
        assert!(
            t.contains("concord_pass_duration_seconds_count{job=\"customers\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("concord_runs_total{job=\"customers\",outcome=\"succeeded\"} 1"),
            "{t}"
        );
        assert!(
            t.contains("concord_outbox_depth{system=\"crm.Account\"} 4"),
            "{t}"
        );
        for want in [
            "concord_lag_seconds_total{job=\"customers\",system=\"crm.Account\"} 3.0",
            "concord_lag_writes_total{job=\"customers\",system=\"crm.Account\"} 2",
            "concord_lag_max_seconds{job=\"customers\",system=\"crm.Account\"} 2.5",
            "concord_records_failed_total{job=\"customers\",system=\"crm.Account\"} 1",
        ] {
            assert!(t.contains(want), "{want} in {t}");
        }
    }
}
