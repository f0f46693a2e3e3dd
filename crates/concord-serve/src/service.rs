//! The service: one worker per job waiting for its schedule or a queued run, one pass at a
//! time over the store, and the graceful stop: no new run starts, the running pass stops at
//! its next chunk boundary after that chunk's checkpoint, the workers and the HTTP server end.

use crate::lock::ServeLock;
use crate::metrics::{JobLabel, Metrics, SystemLabel};
use crate::ops;
use crate::runs::{RunState, Runs, Trigger};
use crate::schedule::Schedule;
use crate::Error;
use concord_engine::config::Config;
use concord_engine::engine::build::{build_job, side_system};
use concord_engine::engine::{Engine, EngineError, SyncJob};
use concord_model::model::{SystemId, Timestamp};
use concord_store::StateStore;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// How the service runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Where the API listens (default 127.0.0.1:8686: loopback only).
    pub listen: SocketAddr,
    /// The variable holding the API's bearer token (required: every route but `/healthz`
    /// asks for it).
    pub token_env: String,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 8686)),
            token_env: "CONCORD_API_TOKEN".into(),
        }
    }
}

struct JobSlot {
    schedule: Schedule,
    queue: mpsc::UnboundedSender<String>,
    /// The job as built for ordinary runs, kept between passes (its connectors stay
    /// connected); dropped after a failed pass, so the next one connects again.
    built: tokio::sync::Mutex<Option<SyncJob>>,
    /// Per system the job reads, its change feed's position (see `ChangeFeed::position`):
    /// taken when a pass begins and committed with that system's cursor.
    feeds: Mutex<BTreeMap<SystemId, concord_connector::FeedPosition>>,
}

/// A running service.
pub struct Service {
    pub cfg: Config,
    pub state: StateStore,
    pub metrics: Metrics,
    pub runs: Mutex<Runs>,
    engine: Engine,
    jobs: BTreeMap<String, JobSlot>,
    /// One pass at a time: jobs that share a system share its records' state.
    pass: tokio::sync::Mutex<()>,
    stop: Arc<AtomicBool>,
    pub(crate) token: String,
    /// Console sessions: id → CSRF token.
    pub(crate) console_sessions: Mutex<BTreeMap<String, String>>,
    /// The last reconcile of each job (the console shows its drift).
    pub(crate) last_reconcile: Mutex<BTreeMap<String, serde_json::Value>>,
    _lock: ServeLock,
}

/// What [`start`] returns: where the API listens, the service, and how to stop it.
pub struct Started {
    pub addr: SocketAddr,
    pub service: Arc<Service>,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Started {
    /// Stops gracefully: no new run starts; the running pass stops after its chunk's
    /// checkpoint; returns once every worker and the server have ended.
    pub async fn stop(self) {
        self.service.stop.store(true, Ordering::SeqCst);
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

/// Starts the service on `state` (the store of `cfg`): takes the store's service lock, checks
/// every job's schedule and the API token, binds the API, and starts one worker per job.
pub async fn start(cfg: Config, state: StateStore, opts: ServeOptions) -> Result<Started, Error> {
    let lock = ServeLock::acquire(&cfg.resolve(&cfg.store.dir))?;
    let token = std::env::var(&opts.token_env).unwrap_or_default();
    if token.len() < 16 {
        return Err(Error::Setup(format!(
            "set {} to the API's bearer token (at least 16 characters): every route but /healthz asks for it",
            opts.token_env
        )));
    }
    let mut receivers = Vec::new();
    let mut jobs = BTreeMap::new();
    for (name, j) in &cfg.jobs {
        let (tx, rx) = mpsc::unbounded_channel();
        receivers.push((name.clone(), rx));
        jobs.insert(
            name.clone(),
            JobSlot {
                schedule: Schedule::of(name, j)?,
                queue: tx,
                built: tokio::sync::Mutex::new(None),
                feeds: Mutex::new(BTreeMap::new()),
            },
        );
    }
    let listener = tokio::net::TcpListener::bind(opts.listen)
        .await
        .map_err(|e| Error::Io(format!("listening on {}", opts.listen), e))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Io("the listening address".into(), e))?;
    let service = Arc::new(Service {
        engine: Engine::new(state.clone()),
        cfg,
        state,
        metrics: Metrics::new(),
        runs: Mutex::new(Runs::default()),
        jobs,
        pass: tokio::sync::Mutex::new(()),
        stop: Arc::new(AtomicBool::new(false)),
        token,
        console_sessions: Mutex::new(BTreeMap::new()),
        last_reconcile: Mutex::new(BTreeMap::new()),
        _lock: lock,
    });
    service.refresh_gauges();
    let (shutdown, watch_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for (name, rx) in receivers {
        let s = service.clone();
        let w = watch_rx.clone();
        tasks.push(tokio::spawn(async move { s.worker(&name, rx, w).await }));
    }
    for name in service.cfg.jobs.keys() {
        if service.may_push(name) {
            let s = service.clone();
            let w = watch_rx.clone();
            let name = name.clone();
            tasks.push(tokio::spawn(async move { s.watch_pushes(&name, w).await }));
        }
    }
    let app = crate::api::router(service.clone());
    let mut w = watch_rx.clone();
    tasks.push(tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = w.wait_for(|s| *s).await;
            })
            .await;
    }));
    tracing::info!(%addr, jobs = service.jobs.len(), "concord serve: listening");
    Ok(Started {
        addr,
        service,
        shutdown,
        tasks,
    })
}

impl Service {
    /// Holds the pass lock (no pass runs meanwhile): for changes to the store made beside the
    /// passes, such as resolving a conflict.
    pub async fn pass_guard(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.pass.lock().await
    }

    /// A new console session: its id (the cookie) and CSRF token, both unguessable (keyed by
    /// the API token, a counter and the time).
    pub(crate) fn new_console_session(&self) -> (String, String) {
        let mut sessions = self.console_sessions.lock().expect("sessions");
        let n = sessions.len() as u64;
        let seed = format!(
            "{}/{n}/{:?}/{}",
            self.token,
            std::time::SystemTime::now(),
            std::process::id()
        );
        let id = blake3::derive_key("concord console session", seed.as_bytes());
        let csrf = blake3::derive_key("concord console csrf", seed.as_bytes());
        let (id, csrf) = (hex(&id), hex(&csrf));
        sessions.insert(id.clone(), csrf.clone());
        (id, csrf)
    }

    /// Whether the service is stopping (no run starts any more).
    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// The job names and their schedules.
    pub fn schedules(&self) -> Vec<(String, String, Option<Duration>)> {
        let now = chrono::Utc::now();
        self.jobs
            .iter()
            .map(|(n, s)| (n.clone(), s.schedule.describe(), s.schedule.next_in(now)))
            .collect()
    }

    /// Queues a run of `job`; its id. Refused while stopping or for an unknown job.
    pub fn request_run(
        &self,
        job: &str,
        trigger: Trigger,
        dry_run: bool,
        verify: bool,
    ) -> Result<String, Error> {
        if self.stopping() {
            return Err(Error::Busy("the service is stopping".into()));
        }
        let slot = self.jobs.get(job).ok_or_else(|| {
            Error::NotFound(format!(
                "no job named `{job}` (jobs: {})",
                self.jobs.keys().cloned().collect::<Vec<_>>().join(", ")
            ))
        })?;
        let id = self
            .runs
            .lock()
            .expect("runs")
            .queue(job, trigger, dry_run, verify);
        slot.queue
            .send(id.clone())
            .map_err(|_| Error::Busy("the job's worker has ended".into()))?;
        Ok(id)
    }

    async fn worker(
        self: Arc<Self>,
        name: &str,
        mut rx: mpsc::UnboundedReceiver<String>,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let slot = &self.jobs[name];
        // Creates whose answer was lost wait for their system's in-flight limit: the service
        // comes back for them when it has passed, whatever the schedule (a push-only job
        // might not run again for long).
        let mut due: Option<i64> = None;
        loop {
            let scheduled = slot.schedule.next_in(chrono::Utc::now());
            let again =
                due.map(|d| Duration::from_millis((d - Timestamp::now().millis()).max(200) as u64));
            let wait = match (scheduled, again) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let tick = async {
                match wait {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            let id = tokio::select! {
                biased;
                _ = shutdown.wait_for(|s| *s) => break,
                id = rx.recv() => match id {
                    Some(id) => id,
                    None => break,
                },
                _ = tick => {
                    if self.runs.lock().expect("runs").waiting(name, Trigger::Schedule) {
                        continue;
                    }
                    self.runs.lock().expect("runs").queue(name, Trigger::Schedule, false, false)
                }
            };
            // (A run that did not get as far as the writes keeps the earlier due time.)
            let now = Timestamp::now().millis();
            due = self.run(name, &id).await.or(due.filter(|d| *d > now));
        }
        // Runs still queued never start.
        while let Ok(id) = rx.try_recv() {
            self.runs.lock().expect("runs").update(&id, |r| {
                r.state = RunState::Stopped;
                r.error = Some("the service stopped before this run started".into());
                r.finished_ms = Some(Timestamp::now().millis());
            });
        }
    }

    /// Whether a system the job reads can announce its changes: PostgreSQL in trigger mode,
    /// Salesforce (Change Data Capture over the Streaming API).
    fn may_push(&self, name: &str) -> bool {
        use concord_engine::config::SystemConfig;
        let j = &self.cfg.jobs[name];
        if j.push == Some(false) {
            return false;
        }
        j.systems.iter().any(|s| match self.cfg.systems.get(s) {
            Some(SystemConfig::Postgres(_)) => {
                j.sides[s].sql_mode() == Some(concord_connector::sql::CaptureMode::Trigger)
            }
            Some(SystemConfig::Salesforce(_)) => true,
            _ => false,
        })
    }

    /// A push: a run of the job, unless one started by a push is still waiting.
    pub fn push(&self, name: &str, trigger: Trigger) -> Option<String> {
        if self.runs.lock().expect("runs").waiting(name, trigger) {
            return None;
        }
        self.request_run(name, trigger, false, false).ok()
    }

    /// Listens to the change feeds of the job's systems (their own connections, apart from
    /// the passes'), and runs a pass on every announcement. A feed that cannot be had or ends
    /// is asked for again after a pause; meanwhile the schedule polls.
    async fn watch_pushes(self: Arc<Self>, name: &str, shutdown: watch::Receiver<bool>) {
        let job = loop {
            match build_job(&self.cfg, name, &self.state, false).await {
                Ok(j) => break j,
                Err(e) => {
                    tracing::warn!(job = name, error = %e, "push: cannot connect the job's systems; retrying in 5 s (the schedule polls meanwhile)");
                    let mut w = shutdown.clone();
                    tokio::select! {
                        _ = w.wait_for(|s| *s) => return,
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    }
                }
            }
        };
        let mut feeds = Vec::new();
        for conn in job.systems.iter().filter(|c| job.role(c.system()).read) {
            let conn = conn.clone();
            let s = self.clone();
            let mut w = shutdown.clone();
            let name = name.to_string();
            feeds.push(tokio::spawn(async move {
                let sys = conn.system().clone();
                let mut first = true;
                loop {
                    // From where the last feed stood in this process, else from the position
                    // stored with the cursor (the events made since come again).
                    let held = s.jobs[&name].feeds.lock().expect("feeds").get(&sys).cloned();
                    let from = match held.and_then(|p| p.lock().expect("feed position").clone()) {
                        Some(p) => Some(p),
                        None => s.state.feed_position(&name, &sys).unwrap_or_else(|e| {
                            tracing::warn!(job = %name, system = %sys, error = %e, "push: the stored feed position cannot be read; listening from now");
                            None
                        }),
                    };
                    match conn.subscribe(from.as_deref()).await {
                        Ok(None) => return,
                        Ok(Some(mut rx)) => {
                            let replays = rx.position();
                            if let Some(p) = &replays {
                                s.jobs[&name].feeds.lock().expect("feeds").insert(sys.clone(), p.clone());
                            }
                            tracing::info!(job = %name, system = %conn.system(), "push: listening");
                            if std::mem::take(&mut first) && (replays.is_none() || from.is_none()) {
                                // The service starts, and nothing announced while it was stopped
                                // comes again (PostgreSQL keeps no NOTIFY; no replay id stored
                                // yet): a pass looks.
                                s.push(&name, Trigger::Push);
                            }
                            loop {
                                tokio::select! {
                                    _ = w.wait_for(|s| *s) => return,
                                    got = rx.recv() => match got {
                                        Some(()) => { s.push(&name, Trigger::Push); }
                                        None => break,
                                    }
                                }
                            }
                            tracing::warn!(job = %name, system = %conn.system(), "push: the change feed ended; polling until it is back");
                        }
                        Err(e) => {
                            tracing::warn!(job = %name, system = %conn.system(), error = %e, "push: cannot listen; polling until it is back");
                        }
                    }
                    // Whatever was announced while the feed was down: a pass looks.
                    tokio::select! {
                        _ = w.wait_for(|s| *s) => return,
                        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    }
                    s.push(&name, Trigger::Push);
                }
            }));
        }
        for f in feeds {
            let _ = f.await;
        }
    }

    /// Runs one queued run to its end.
    /// Runs the queued run `id`; when creates it could not send yet may go out (its report's
    /// `in_flight_due_ms`).
    async fn run(&self, name: &str, id: &str) -> Option<i64> {
        let (dry, check) = match self.runs.lock().expect("runs").get(id) {
            Some(r) => (r.dry_run, r.verify),
            None => return None,
        };
        let _one = self.pass.lock().await;
        let now = || Timestamp::now().millis();
        if self.stopping() {
            self.runs.lock().expect("runs").update(id, |r| {
                r.state = RunState::Stopped;
                r.error = Some("the service stopped before this run started".into());
                r.finished_ms = Some(now());
            });
            return None;
        }
        self.runs.lock().expect("runs").update(id, |r| {
            r.state = RunState::Running;
            r.started_ms = Some(now());
        });
        let t = Instant::now();
        let outcome = self.pass_of(name, dry, check).await;
        let secs = t.elapsed().as_secs_f64();
        let (state, report, error) = match outcome {
            Ok((report, state)) => (state, Some(report), None),
            Err(Error::Engine(e @ EngineError::Stopped { .. })) => {
                (RunState::Stopped, None, Some(e.to_string()))
            }
            Err(e) => (RunState::Failed, None, Some(e.to_string())),
        };
        let outcome_name = serde_json::to_value(state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        self.metrics.outcome(name, &outcome_name);
        if report.is_none() {
            self.metrics
                .pass_seconds
                .get_or_create(&JobLabel {
                    job: name.to_string(),
                })
                .observe(secs);
        }
        let due = report
            .as_ref()
            .and_then(|r| r["in_flight_due_ms"].as_i64())
            .filter(|_| !dry);
        self.runs.lock().expect("runs").update(id, |r| {
            r.state = state;
            r.report = report;
            r.error = error;
            r.finished_ms = Some(now());
        });
        self.refresh_gauges();
        due
    }

    /// One pass of the job (built once and kept for ordinary runs); the report and outcome.
    async fn pass_of(
        &self,
        name: &str,
        dry: bool,
        check: bool,
    ) -> Result<(serde_json::Value, RunState), Error> {
        let slot = &self.jobs[name];
        let mut fresh;
        let mut kept = slot.built.lock().await;
        let job: &mut SyncJob = if dry {
            fresh = build_job(&self.cfg, name, &self.state, true).await?;
            &mut fresh
        } else {
            if kept.is_none() {
                *kept = Some(build_job(&self.cfg, name, &self.state, false).await?);
            }
            kept.as_mut().expect("built")
        };
        job.options.stop = Some(self.stop.clone());
        // Where the change feeds stand now: the pass's reads cover what they announced so far.
        job.options.feed_positions = slot
            .feeds
            .lock()
            .expect("feeds")
            .iter()
            .filter_map(|(sys, p)| Some((sys.clone(), p.lock().expect("feed position").clone()?)))
            .collect();
        let t = Instant::now();
        let r = match self.engine.sync(job, None).await {
            Ok(r) => r,
            Err(e) => {
                if !matches!(e, EngineError::Stopped { .. }) {
                    *kept = None;
                }
                return Err(e.into());
            }
        };
        let secs = t.elapsed().as_secs_f64();
        if !dry {
            self.metrics.pass(name, &r, secs);
            self.metrics
                .in_flight(name, job.systems.iter().map(|c| c.system().as_str()), &r);
        }
        for c in &job.systems {
            if let Some((used, max)) = c.api_usage().filter(|(_, m)| *m > 0) {
                self.metrics
                    .api_usage
                    .get_or_create(&SystemLabel {
                        system: c.system().to_string(),
                    })
                    .set(used as f64 / max as f64);
            }
        }
        let mut report = ops::report_json(name, &r, secs);
        let mut state = if !r.held_deletes.is_empty() {
            RunState::Held
        } else if !r.errors.is_empty() || r.failed > 0 {
            RunState::Partial
        } else {
            RunState::Succeeded
        };
        if check && !dry {
            let (ok, v) = ops::verify(job, &self.state).await?;
            report["verify"] = v;
            report["verified"] = serde_json::json!(ok);
            if !ok && state == RunState::Succeeded {
                state = RunState::Partial;
            }
        }
        Ok((report, state))
    }

    /// An aggregate job's golden record for a match key. `read_through`: a pass of the job runs
    /// first (reading every source's changes since its cursor) and must succeed — a source that
    /// fails makes the answer an error, never a stale record given as fresh; otherwise the
    /// record is the store's, as of the last pass (`as_of_ms`).
    pub async fn golden(
        &self,
        name: &str,
        values: &[&str],
        read_through: bool,
    ) -> Result<Option<serde_json::Value>, Error> {
        if !self.jobs.contains_key(name) {
            return Err(Error::NotFound(format!("no job named `{name}`")));
        }
        let slot = &self.jobs[name];
        let _one = self.pass.lock().await;
        let mut kept = slot.built.lock().await;
        if kept.is_none() {
            *kept = Some(build_job(&self.cfg, name, &self.state, false).await?);
        }
        let job = kept.as_mut().expect("built");
        if read_through {
            job.options.stop = Some(self.stop.clone());
            let t = Instant::now();
            let r = match self.engine.sync(job, None).await {
                Ok(r) => r,
                Err(e) => {
                    *kept = None;
                    return Err(e.into());
                }
            };
            self.metrics.pass(name, &r, t.elapsed().as_secs_f64());
            if let Some((sys, e)) = r.errors.iter().next() {
                return Err(Error::Upstream(format!(
                    "read through: {sys} could not be read ({e}); not answering from a partial read"
                )));
            }
        }
        let job = kept.as_ref().expect("built");
        let mut out = ops::golden_record(job, &self.state, values)?;
        if let Some(o) = out.as_mut() {
            let as_of = self
                .state
                .run_log()?
                .iter()
                .filter(|r| r.job == name && r.status == "ok")
                .map(|r| r.finished_ms)
                .max();
            o["freshness"] = serde_json::json!(if read_through {
                "read_through"
            } else {
                "store"
            });
            o["as_of_ms"] = serde_json::json!(as_of);
        }
        Ok(out)
    }

    /// Reconciles a job (under the pass lock: no pass runs meanwhile).
    pub async fn reconcile(&self, name: &str, repair: bool) -> Result<serde_json::Value, Error> {
        if !self.jobs.contains_key(name) {
            return Err(Error::NotFound(format!("no job named `{name}`")));
        }
        let _one = self.pass.lock().await;
        let mut job = build_job(&self.cfg, name, &self.state, false).await?;
        let r = ops::reconcile(&self.engine, &mut job, repair).await?;
        self.refresh_gauges();
        let mut out = r.report;
        out["drift_left"] = serde_json::json!(r.left);
        self.last_reconcile
            .lock()
            .expect("reconcile")
            .insert(name.to_string(), out.clone());
        out["held_deletes"] = serde_json::json!(r
            .held
            .iter()
            .map(|(s, h)| (
                s.clone(),
                serde_json::json!({"deletes": h.deletes, "synced": h.synced})
            ))
            .collect::<BTreeMap<_, _>>());
        Ok(out)
    }

    /// Outbox depths and open conflicts, read from the store.
    pub fn refresh_gauges(&self) {
        for (name, j) in &self.cfg.jobs {
            for s in &j.systems {
                if let Ok(id) = side_system(s, &j.sides[s]) {
                    if let Ok(n) = self.state.outbox_len(&id) {
                        self.metrics
                            .outbox
                            .get_or_create(&SystemLabel {
                                system: id.to_string(),
                            })
                            .set(n as i64);
                    }
                }
            }
            let open = self
                .state
                .conflicts()
                .map(|c| c.iter().filter(|c| c.job == *name).count())
                .unwrap_or(0);
            self.metrics
                .conflicts_open
                .get_or_create(&JobLabel { job: name.clone() })
                .set(open as i64);
        }
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
