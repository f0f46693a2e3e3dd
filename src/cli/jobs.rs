//! `concord init | run | plan | status | conflicts`: jobs from the configuration file.

use anyhow::{bail, Context, Result};
use concord::config::Config;
use concord::engine::build::{build_job, job_order};
use concord::engine::conflicts::Choice;
use concord::engine::{Engine, SyncReport};
use concord::model::InstanceId;
use concord::store::{SledStore, StateStore};
use concord_serve::ops;
use serde_json::{json, Value as J};
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Exit codes beyond 0 / 1 / 2.
pub const EXIT_PARTIAL: i32 = 3;
pub const EXIT_VERIFY: i32 = 4;
/// The delete guard held a pass: nothing was written, the deletes wait.
pub const EXIT_DELETE_GUARD: i32 = 5;

pub fn load(path: &Path) -> Result<Config> {
    Ok(Config::load(path)?)
}

/// The stores this process opened, by folder: each is opened once and never dropped. sled
/// 0.34's drop walks every page of its cache (minutes after a load of 1 000 000 records, on
/// the way out of a finished run); every checkpoint was flushed when it was committed, and
/// [`flush_open_stores`] flushes what was applied without one, so the process exits instead.
static OPEN: std::sync::Mutex<Vec<(std::path::PathBuf, SledStore)>> =
    std::sync::Mutex::new(Vec::new());

/// Flushes every store this process opened (before it exits without dropping them).
pub fn flush_open_stores() {
    let open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
    for (dir, s) in open.iter() {
        if let Err(e) = concord::store::Store::flush(s) {
            eprintln!("concord: flushing store {}: {e}", dir.display());
        }
    }
}

pub fn open_state(cfg: &Config) -> Result<StateStore> {
    let dir = cfg.resolve(&cfg.store.dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut open = OPEN.lock().unwrap_or_else(|p| p.into_inner());
    let store = match open.iter().find(|(d, _)| *d == dir) {
        Some((_, s)) => s.clone(),
        None => {
            let s = SledStore::open_with_cache(&dir, cfg.store.cache_mb.max(1) << 20)
                .with_context(|| format!("opening store {}", dir.display()))?;
            open.push((dir.clone(), s.clone()));
            s
        }
    };
    drop(open);
    Ok(StateStore::open(
        Arc::new(store),
        InstanceId::new(cfg.store.instance.as_str())?,
    )?)
}

fn report_human(job: &str, r: &SyncReport, secs: f64, dry: bool, aggregate: bool) -> String {
    let mut out = format!("job {job} ({secs:.2} s)\n");
    let list = |m: &BTreeMap<String, u64>| {
        if m.is_empty() {
            "none".to_string()
        } else {
            m.iter()
                .map(|(s, n)| format!("{s} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        }
    };
    out.push_str(&format!("  read:      {}\n", list(&r.read)));
    if dry {
        for (s, p) in &r.planned {
            out.push_str(&format!(
                "  would write {s}: {} creates, {} updates, {} deletes{}\n",
                p.creates,
                p.updates,
                p.deletes,
                if p.queued > 0 {
                    format!(", {} queued from earlier runs", p.queued)
                } else {
                    String::new()
                }
            ));
        }
        if r.planned.is_empty() {
            out.push_str("  would write nothing\n");
        }
    } else {
        out.push_str(&format!("  written:   {}\n", list(&r.written)));
    }
    out.push_str(&format!(
        "  changed entities {}, echoes suppressed {}, conflicts resolved {}, parked {}\n",
        r.changed, r.echoes, r.conflicts_resolved, r.conflicts_parked
    ));
    if aggregate && r.matched > 0 {
        out.push_str(&format!(
            "  matched {} records by their match key ({} new golden records)\n",
            r.matched, r.golden_created
        ));
    } else if r.matched + r.unmatched > 0 {
        out.push_str(&format!(
            "  matched {}, unmatched {}\n",
            r.matched, r.unmatched
        ));
    }
    if r.failed > 0 {
        out.push_str(&format!(
            "  {} writes failed and wait in the outbox\n",
            r.failed
        ));
    }
    for (s, e) in &r.errors {
        out.push_str(&format!("  system {s} failed: {e}\n"));
    }
    for (s, n) in &r.in_flight {
        out.push_str(&format!(
            "  {n} creates in {s} whose answer was lost wait: {s} may still make them (sent again once its in-flight limit has passed and a read has not found them)\n"
        ));
    }
    for (s, h) in &r.held_deletes {
        let share = if h.synced > 0 {
            format!(" ({:.0} %)", 100.0 * h.deletes as f64 / h.synced as f64)
        } else {
            String::new()
        };
        out.push_str(&format!(
            "  delete guard: {} {} {} of the {} records synced in {s}{share}; {}\n",
            if dry {
                "would stop:"
            } else {
                "stopped, nothing written:"
            },
            if dry {
                "the run would delete"
            } else {
                "the pass would delete"
            },
            h.deletes,
            h.synced,
            if dry {
                "a run holds them until `concord run --allow-deletes`"
            } else {
                "the deletes stay queued. Check the source; if they are right, run again with \
                 --allow-deletes (or raise max_delete_share / max_deletes)"
            }
        ));
    }
    out
}

fn spinner(msg: String) -> indicatif::ProgressBar {
    let pb =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    pb.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    pb.set_message(msg);
    pb.enable_steady_tick(Duration::from_millis(120));
    pb
}

/// Migrate `--verify`: every in-scope source record is in each target with the same content.
/// How `concord run` / `concord plan` runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    /// Every job of the configuration.
    pub all: bool,
    /// Read and plan only.
    pub dry: bool,
    /// One pass per interval until Ctrl-C.
    pub watch: bool,
    /// Compare sources and targets afterwards.
    pub verify: bool,
    pub json: bool,
    /// Let deletes held by the delete guard through.
    pub allow_deletes: bool,
}

/// `concord run` / `concord plan`.
pub async fn run(cfg: &Config, jobs: &[String], o: RunOptions) -> Result<i32> {
    let RunOptions {
        all,
        dry,
        watch,
        verify: check,
        json: as_json,
        allow_deletes,
    } = o;
    let names: Vec<String> = if all || jobs.is_empty() {
        if !all {
            bail!(
                "name the job(s) to run, or --all (jobs: {})",
                cfg.jobs.keys().cloned().collect::<Vec<_>>().join(", ")
            );
        }
        job_order(cfg)
    } else {
        let order = job_order(cfg);
        for j in jobs {
            if !cfg.jobs.contains_key(j) {
                bail!(
                    "no job named `{j}` in {} (jobs: {})",
                    cfg.file,
                    cfg.jobs.keys().cloned().collect::<Vec<_>>().join(", ")
                );
            }
        }
        order.into_iter().filter(|o| jobs.contains(o)).collect()
    };
    let state = open_state(cfg)?;
    let engine = Engine::new(state.clone());
    let mut built = Vec::new();
    for n in &names {
        let mut job = build_job(cfg, n, &state, dry).await?;
        job.options.allow_deletes = allow_deletes;
        built.push(job);
    }
    let interval = names
        .iter()
        .map(|n| cfg.jobs[n].interval_secs)
        .min()
        .unwrap_or(60)
        .max(1);
    loop {
        let mut reports = Vec::new();
        let mut code = 0;
        for job in &built {
            let pb = spinner(format!(
                "{} {}",
                if dry { "planning" } else { "running" },
                job.name
            ));
            let t = Instant::now();
            let r = engine.sync(job, None).await;
            pb.finish_and_clear();
            let r = r.with_context(|| format!("job {}", job.name))?;
            let secs = t.elapsed().as_secs_f64();
            if !r.errors.is_empty() || r.failed > 0 {
                code = code.max(EXIT_PARTIAL);
            }
            if !r.held_deletes.is_empty() {
                // A dry run says the same: `plan` in a script stops where `run` would.
                code = code.max(EXIT_DELETE_GUARD);
            }
            let mut j = ops::report_json(&job.name, &r, secs);
            let mut human = report_human(&job.name, &r, secs, dry, job.is_aggregate());
            if check && !dry {
                let (ok, v) = ops::verify(job, &state).await?;
                if !ok {
                    code = code.max(EXIT_VERIFY);
                }
                for t in v.as_array().into_iter().flatten() {
                    human.push_str(&format!(
                        "  verify {} → {}: {} source records, {} in target; missing {}, different {}, not from the source {}\n",
                        t["source"].as_str().unwrap_or(""), t["target"].as_str().unwrap_or(""), t["source_records"], t["target_records"], t["missing"], t["different"], t["not_from_source"]
                    ));
                }
                j["verify"] = v;
                j["verified"] = json!(ok);
            }
            reports.push((human, j));
        }
        if as_json {
            let all: Vec<J> = reports.into_iter().map(|(_, j)| j).collect();
            println!("{}", serde_json::to_string_pretty(&J::Array(all))?);
        } else {
            for (h, _) in reports {
                print!("{h}");
            }
        }
        if !watch || dry {
            return Ok(code);
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(interval)) => {}
            _ = tokio::signal::ctrl_c() => {
                eprintln!("stopped");
                return Ok(code);
            }
        }
    }
}

/// `concord serve`: until SIGTERM or Ctrl-C, then a graceful stop.
pub async fn serve(cfg: Config, listen: std::net::SocketAddr, token_env: String) -> Result<i32> {
    let state = open_state(&cfg)?;
    let jobs = cfg.jobs.len();
    let started = concord_serve::start(
        cfg,
        state,
        concord_serve::ServeOptions { listen, token_env },
    )
    .await?;
    // The first line says where (a caller that asked for port 0 reads it).
    println!(
        "concord serve: listening on http://{} ({jobs} jobs); SIGTERM or Ctrl-C stops",
        started.addr
    );
    use std::io::Write as _;
    let _ = std::io::stdout().flush();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    println!("concord serve: stopping (a running pass stops after its chunk's checkpoint)");
    let _ = std::io::stdout().flush();
    started.stop().await;
    println!("concord serve: stopped");
    Ok(0)
}

/// `concord status`.
pub fn status(cfg: &Config, as_json: bool) -> Result<()> {
    let state = open_state(cfg)?;
    let out = ops::status_json(cfg, &state)?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&J::Array(out))?);
        return Ok(());
    }
    for j in out {
        println!(
            "job {} ({})",
            j["job"].as_str().unwrap_or(""),
            j["pattern"].as_str().unwrap_or("")
        );
        match j["last_run"].as_object() {
            Some(r) => println!(
                "  last run: {} at {} ({} runs){}",
                r["status"].as_str().unwrap_or(""),
                concord::model::Timestamp(r["started_ms"].as_i64().unwrap_or(0)),
                j["runs"],
                r["message"]
                    .as_str()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ),
            None => println!("  never run"),
        }
        for s in j["systems"].as_array().into_iter().flatten() {
            println!(
                "  {:<24} cursor {:<4} outbox {:<6} waiting {}",
                s["id"].as_str().unwrap_or(""),
                if s["cursor"] == true { "yes" } else { "no" },
                s["outbox"],
                s["waiting"]
            );
        }
        println!("  open conflicts: {}", j["open_conflicts"]);
    }
    Ok(())
}

/// `concord conflicts list|show`.
pub fn conflicts(cfg: &Config, job: Option<&str>, id: Option<&str>, as_json: bool) -> Result<()> {
    let state = open_state(cfg)?;
    let rows = ops::conflicts_json(&state, job, id)?;
    if id.is_some() && rows.is_empty() {
        bail!("no open conflict {}", id.unwrap_or_default());
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&J::Array(rows))?);
        return Ok(());
    }
    if rows.is_empty() {
        println!("no open conflicts");
    }
    for r in rows {
        println!(
            "{}  job {}  {}",
            r["id"].as_str().unwrap_or(""),
            r["job"].as_str().unwrap_or(""),
            r["field"]
                .as_str()
                .map(|f| format!("field {f}"))
                .unwrap_or_else(|| "record (delete vs update)".into())
        );
        println!("    base: {}", r["base"].as_str().unwrap_or(""));
        for s in r["sides"].as_array().into_iter().flatten() {
            println!(
                "    {}: {}",
                s["system"].as_str().unwrap_or(""),
                s["value"].as_str().unwrap_or("")
            );
        }
    }
    Ok(())
}

/// `concord conflicts resolve`.
pub async fn resolve(
    cfg: &Config,
    id: &str,
    take: Option<String>,
    value: Option<String>,
) -> Result<()> {
    let state = open_state(cfg)?;
    let choice = match (take, value) {
        (Some(t), None) => Choice::Take(t),
        (None, Some(v)) => Choice::Value(ops::typed_value(&v)?),
        _ => bail!("give exactly one of --take SYSTEM or --value VALUE"),
    };
    let job = ops::resolve(cfg, &state, id, &choice)
        .await
        .map_err(|e| match e {
            concord_serve::Error::NotFound(m) => {
                anyhow::anyhow!("{m} (see `concord conflicts list`)")
            }
            e => e.into(),
        })?;
    println!("resolved {id}; run `concord run {job}` to write it to every system");
    Ok(())
}

/// `concord init`: a starter configuration.
pub fn init(path: &Path) -> Result<()> {
    if path.exists() {
        bail!("{} exists; not overwritten", path.display());
    }
    std::fs::write(path, STARTER).with_context(|| format!("writing {}", path.display()))?;
    println!(
        "wrote {} — edit the systems and the mapping, then `concord run --all`",
        path.display()
    );
    Ok(())
}

const STARTER: &str = include_str!("../../docs/examples/bidirectional.toml");

/// What `concord bundle` does.
pub enum BundleAction {
    Export {
        peer: String,
        out: std::path::PathBuf,
    },
    Import {
        file: std::path::PathBuf,
        json: bool,
    },
}

/// The bundle key, from CONCORD_BUNDLE_KEY (never printed).
pub fn bundle_key() -> Result<Vec<u8>> {
    let k = std::env::var("CONCORD_BUNDLE_KEY").map_err(|_| {
        anyhow::anyhow!(
            "set CONCORD_BUNDLE_KEY to the key shared by the instances that exchange bundles"
        )
    })?;
    if k.len() < 16 {
        anyhow::bail!("CONCORD_BUNDLE_KEY is shorter than 16 bytes");
    }
    Ok(k.into_bytes())
}

pub fn bundle(cfg: &Config, action: BundleAction) -> Result<()> {
    use concord::engine::bundle as eb;
    let key = bundle_key()?;
    let scopes = concord::engine::build::scopes(cfg)?;
    match action {
        BundleAction::Export { peer, out } => {
            let state = open_state(cfg)?;
            let peer = InstanceId::new(peer.as_str()).with_context(|| format!("--peer {peer}"))?;
            let b = eb::export(&state, &peer, &scopes)?;
            let bytes = concord::bundle::encode(&b, &key);
            // Written next to the target and renamed: a crash never leaves half a bundle.
            let tmp = out.with_extension("partial");
            std::fs::write(&tmp, &bytes).with_context(|| format!("writing {}", tmp.display()))?;
            std::fs::rename(&tmp, &out).with_context(|| format!("writing {}", out.display()))?;
            println!(
                "bundle {} for {peer}: {} entities, {} bytes, written to {}",
                b.number,
                b.entities.len(),
                bytes.len(),
                out.display()
            );
        }
        BundleAction::Import { file, json } => {
            let bytes =
                std::fs::read(&file).with_context(|| format!("reading {}", file.display()))?;
            // Verified before the store is even opened: a refused bundle changes nothing.
            let b = concord::bundle::decode(&bytes, &key)
                .with_context(|| format!("{}", file.display()))?;
            let state = open_state(cfg)?;
            let now = concord::model::Timestamp::now().millis();
            let r = eb::import(&state, &b, &scopes, now)?;
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!("{r}");
            }
        }
    }
    Ok(())
}

/// `concord reconcile JOB`: drift between each system and the store; with `repair`, a pass
/// with full reads turns it into ordinary changes. Exit code 4 when drift was found and not
/// repaired, 3 when a system could not be checked (the others were).
/// How `concord reconcile` runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct ReconcileOptions {
    pub json: bool,
    /// Turn the drift into ordinary changes.
    pub repair: bool,
    /// Read every record.
    pub full: bool,
    /// Let through deletes of the repair that the delete guard holds.
    pub allow_deletes: bool,
}

pub async fn reconcile(cfg: &Config, name: &str, o: ReconcileOptions) -> Result<i32> {
    let ReconcileOptions {
        json,
        repair,
        full,
        allow_deletes,
    } = o;
    let t = std::time::Instant::now();
    let state = open_state(cfg)?;
    tracing::info!(ms = t.elapsed().as_millis() as u64, "reconcile: store open");
    let mut job = build_job(cfg, name, &state, false).await?;
    tracing::info!(
        ms = t.elapsed().as_millis() as u64,
        "reconcile: systems connected"
    );
    let engine = Engine::new(state);
    job.options.full_read = full;
    job.options.allow_deletes = allow_deletes;
    let ops::Reconciled {
        report: out,
        held,
        left,
        before,
    } = ops::reconcile(&engine, &mut job, repair).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("{name}:");
        for (sys, c) in &before.checks {
            if c.method == "hash_tree" {
                println!(
                    "  {sys}: hash tree, {} records in the store, {} of {} buckets differed \
                     ({} digests listed, {} unknown looked up), {} records read",
                    c.stored, c.differing, c.buckets, c.leaves, c.unknown, c.read
                );
            } else {
                println!(
                    "  {sys}: scan, {} records read, {} in the store",
                    c.read, c.stored
                );
            }
        }
        for u in &before.unchecked {
            println!("  {}: not checked ({})", u.system, u.reason);
        }
        for d in &before.drift {
            println!("  {}", serde_json::to_string(d)?);
        }
        if before.drift.is_empty() {
            println!("  no drift");
        } else if !held.is_empty() {
            for (s, h) in &held {
                println!(
                    "  delete guard: stopped, nothing written: the repair would delete {} of the {} records synced in {s}; the deletes stay queued: if they are right, `concord run {name} --allow-deletes` sends them",
                    h.deletes, h.synced
                );
            }
        } else if repair {
            println!(
                "  repaired: {} records written; drift left: {left}",
                out["repair"]["written"]
                    .as_object()
                    .map_or(0, |m| m.values().filter_map(J::as_u64).sum::<u64>())
            );
        } else {
            println!(
                "  {} differences; `--repair` turns them into changes",
                before.drift.len()
            );
        }
    }
    Ok(if !held.is_empty() {
        EXIT_DELETE_GUARD
    } else if left > 0 {
        4
    } else if !before.unchecked.is_empty() {
        3
    } else {
        0
    })
}
