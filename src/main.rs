//! The `concord` command line. Library errors are typed; here they become messages and exit codes:
//! 0 success, 1 failure (the message says what and where), 2 usage error (from clap), 3 a run
//! finished but a system failed or writes wait in the outbox, 4 `--verify` found differences.

mod cli;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use concord::model::{InstanceId, SystemId};
use concord::store::{SledStore, StateStore, Store};
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "concord",
    version,
    about = "Change-tracking sync engine for business records"
)]
struct Cli {
    /// The job configuration file.
    #[arg(
        long,
        global = true,
        env = "CONCORD_CONFIG",
        default_value = "concord.toml"
    )]
    config: PathBuf,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a starter configuration (a bidirectional job) to --config.
    Init,
    /// Run jobs: read every side, merge, write (in reference order with --all).
    Run {
        /// Job names (see `concord status`).
        jobs: Vec<String>,
        /// Every job of the configuration.
        #[arg(long)]
        all: bool,
        /// Read and plan only: show what would be written, change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Keep running, one pass per job interval, until Ctrl-C.
        #[arg(long)]
        watch: bool,
        /// After the run, compare every source record with each target (migrate).
        #[arg(long)]
        verify: bool,
        /// The run report as JSON.
        #[arg(long)]
        json: bool,
        /// Let through deletes the delete guard holds (a pass deleting more than the job's
        /// max_delete_share or max_deletes of a system's records).
        #[arg(long)]
        allow_deletes: bool,
    },
    /// What a run would change, writing nothing (same as `run --dry-run`).
    Plan {
        jobs: Vec<String>,
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// Jobs, cursors, last runs, outbox depths, waiting records, open conflicts.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Compare each system of JOB with the store by a complete scan: records missing, extra or
    /// different (changed behind every change feed). Exit 4 when drift is found.
    Reconcile {
        job: String,
        /// Turn the drift into ordinary changes (a pass with full reads), then check again.
        #[arg(long)]
        repair: bool,
        /// Read every record, even where the system hashes on its side (and learn every
        /// digest again).
        #[arg(long)]
        full: bool,
        #[arg(long)]
        json: bool,
        /// With --repair: let through deletes the delete guard holds.
        #[arg(long)]
        allow_deletes: bool,
    },
    /// Bundle exchange over HTTP between instances that can talk (docs/offline.md).
    Peer {
        #[command(subcommand)]
        command: PeerCommand,
    },
    /// Change bundles between instances that cannot talk (docs/offline.md). The key comes
    /// from the variable CONCORD_BUNDLE_KEY (at least 16 bytes), the same at every instance.
    Bundle {
        #[command(subcommand)]
        command: BundleCommand,
    },
    /// The conflict queue.
    Conflicts {
        #[command(subcommand)]
        command: ConflictsCommand,
    },
    /// Load the Northwind sample ERP (shared fixtures) into the database in VAR.
    LoadErp {
        /// Variable holding the database URL (`sqlite:erp.db?mode=rwc`, `postgres://…`).
        #[arg(long)]
        url_env: String,
        /// The PostgreSQL dump to load (default: the shared fixtures' northwind.sql).
        #[arg(long)]
        dump: Option<PathBuf>,
    },
    /// Run the demonstration on embedded defaults (no network, no set-up).
    Demo {
        /// Keep the demo's store in this directory instead of a temporary one.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Store maintenance.
    Store {
        #[command(subcommand)]
        command: StoreCommand,
    },
    /// Install the change log and triggers for a table (SQL `mode = "trigger"`). Idempotent.
    Setup {
        #[command(flatten)]
        table: TableArgs,
        /// Print the statements instead of running them.
        #[arg(long)]
        dry_run: bool,
    },
    /// Run the local Salesforce-compatible server (REST, OAuth, composite, Bulk API 2.0,
    /// limits, fault injection); see docs/sandbox.md. Credentials come from the environment:
    /// CONCORD_SANDBOX_CLIENT_ID, CONCORD_SANDBOX_CLIENT_SECRET, CONCORD_SANDBOX_USERNAME,
    /// CONCORD_SANDBOX_PASSWORD, CONCORD_SANDBOX_REFRESH_TOKEN (documented defaults otherwise).
    Sandbox {
        /// Port on 127.0.0.1.
        #[arg(long, default_value_t = 8443)]
        port: u16,
        /// The valid bearer token; printed when not given.
        #[arg(long)]
        token: Option<String>,
        /// Daily API request limit.
        #[arg(long, default_value_t = 100_000)]
        daily_limit: u64,
        /// Schema file (TOML) with custom objects and fields.
        #[arg(long)]
        schema: Option<PathBuf>,
        /// SFDX data tree plans or files to load at start, into an empty org only (`@Ref`
        /// references resolved across all of them; undeclared custom objects and fields
        /// inferred from the data).
        #[arg(long, num_args = 1..)]
        seed: Vec<PathBuf>,
        /// Keep the org in a sled store in DIR (restarts keep records, ids, recycle bin).
        #[arg(long, value_name = "DIR")]
        data: Option<PathBuf>,
        /// Serve HTTPS with a certificate generated at start (its CA's path is printed).
        #[arg(long)]
        tls: bool,
        /// PEM RSA public key that verifies JWT bearer assertions (enables that grant).
        #[arg(long, value_name = "FILE")]
        jwt_public_key: Option<PathBuf>,
        /// Share of API calls answered 503 SERVER_UNAVAILABLE (0–1).
        #[arg(long, default_value_t = 0.0)]
        fault_503: f64,
        /// Share of writes answered UNABLE_TO_LOCK_ROW (0–1).
        #[arg(long, default_value_t = 0.0)]
        fault_lock: f64,
        /// Share of API calls whose connection drops after processing (0–1).
        #[arg(long, default_value_t = 0.0)]
        fault_drop: f64,
        /// Latency added to every API call, in milliseconds.
        #[arg(long, default_value_t = 0)]
        fault_latency_ms: u64,
        /// Share of API calls delayed by --fault-slow-ms more (client timeouts) (0–1).
        #[arg(long, default_value_t = 0.0)]
        fault_slow: f64,
        /// Delay of a slow call, in milliseconds.
        #[arg(long, default_value_t = 30_000)]
        fault_slow_ms: u64,
        /// Answer every API call 403 REQUEST_LIMIT_EXCEEDED.
        #[arg(long)]
        fault_limit_exceeded: bool,
        /// Seed of the fault generator (same seed, same faults in the same order).
        #[arg(long, default_value_t = 0)]
        fault_seed: u64,
    },
    /// Remove exactly what `setup` installed for a table.
    Teardown {
        #[command(flatten)]
        table: TableArgs,
    },
}

#[derive(Subcommand)]
enum PeerCommand {
    /// Answer exchanges from other instances (keeps this instance's store open).
    Serve {
        #[arg(long, default_value = "127.0.0.1:7420")]
        listen: String,
    },
    /// One exchange with the instance PEER serving at URL.
    Sync {
        url: String,
        #[arg(long)]
        peer: String,
        /// Compare what both instances actually hold by hash tree first, then move exactly the
        /// entities that differ, both ways (after a store was restored from a backup, say).
        #[arg(long)]
        tree: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum BundleCommand {
    /// Write a bundle for PEER: every entity it is not known to hold.
    Export {
        /// The receiving instance's name (its `store.instance`).
        #[arg(long)]
        peer: String,
        /// The bundle file to write.
        #[arg(long)]
        out: PathBuf,
    },
    /// Apply a bundle; the next `concord run` writes the result to this instance's systems.
    Import {
        file: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

/// Which table `setup` / `teardown` act on.
#[derive(clap::Args)]
struct TableArgs {
    /// Environment variable holding the connection URL (the URL itself is never a flag).
    #[arg(long)]
    url_env: String,
    /// Table name.
    #[arg(long)]
    table: String,
    /// Key columns, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    key: Vec<String>,
    /// Schema (PostgreSQL) or database (MySQL).
    #[arg(long)]
    schema: Option<String>,
    /// Change-log table name.
    #[arg(long, default_value = "concord_changelog")]
    changelog: String,
}

impl TableArgs {
    async fn connect(&self) -> Result<concord::connector::sql::SqlConnector> {
        let keys: Vec<&str> = self.key.iter().map(String::as_str).collect();
        let mut cfg =
            concord::connector::sql::SqlTableConfig::new(&self.url_env, &self.table, &keys);
        cfg.schema = self.schema.clone();
        cfg.mode = concord::connector::sql::CaptureMode::Trigger;
        cfg.changelog_table = self.changelog.clone();
        Ok(concord::connector::sql::SqlConnector::connect(SystemId::new("sql")?, cfg).await?)
    }
}

#[derive(Subcommand)]
enum ConflictsCommand {
    /// Open conflicts.
    List {
        #[arg(long)]
        job: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// One conflict: base and each side's value.
    Show {
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Decide a conflict: take one system's value, or give one.
    Resolve {
        id: String,
        #[arg(long)]
        take: Option<String>,
        #[arg(long)]
        value: Option<String>,
    },
}

#[derive(Subcommand)]
enum StoreCommand {
    /// Decode every entry of a store and report the first corrupt one (read-only).
    Verify {
        /// The store directory.
        dir: PathBuf,
        /// The instance the store belongs to.
        #[arg(long, default_value = "local")]
        instance: String,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CONCORD_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let config = cli.config.clone();
    let res: Result<i32> = match cli.command {
        Command::Init => cli::jobs::init(&config).map(|_| 0),
        Command::Run {
            jobs,
            all,
            dry_run,
            watch,
            verify,
            json,
            allow_deletes,
        } => rt.block_on(async {
            let cfg = cli::jobs::load(&config)?;
            let o = cli::jobs::RunOptions {
                all,
                dry: dry_run,
                watch,
                verify,
                json,
                allow_deletes,
            };
            cli::jobs::run(&cfg, &jobs, o).await
        }),
        Command::Plan { jobs, all, json } => rt.block_on(async {
            let cfg = cli::jobs::load(&config)?;
            let o = cli::jobs::RunOptions {
                all,
                dry: true,
                json,
                ..Default::default()
            };
            cli::jobs::run(&cfg, &jobs, o).await
        }),
        Command::Status { json } => cli::jobs::load(&config)
            .and_then(|cfg| cli::jobs::status(&cfg, json))
            .map(|_| 0),
        Command::Reconcile {
            job,
            repair,
            full,
            json,
            allow_deletes,
        } => rt.block_on(async {
            let cfg = cli::jobs::load(&config)?;
            let o = cli::jobs::ReconcileOptions {
                json,
                repair,
                full,
                allow_deletes,
            };
            cli::jobs::reconcile(&cfg, &job, o).await
        }),
        Command::Peer { command } => rt.block_on(async {
            let cfg = cli::jobs::load(&config)?;
            match command {
                PeerCommand::Serve { listen } => cli::peer::serve(&cfg, &listen).await,
                PeerCommand::Sync {
                    url,
                    peer,
                    tree,
                    json,
                } => {
                    if tree {
                        cli::peer::sync_tree(&cfg, &url, &peer, json).await
                    } else {
                        cli::peer::sync(&cfg, &url, &peer, json).await
                    }
                }
            }
            .map(|_| 0)
        }),
        Command::Bundle { command } => cli::jobs::load(&config)
            .and_then(|cfg| cli::jobs::bundle(&cfg, command_of(command)))
            .map(|_| 0),
        Command::Conflicts { command } => rt.block_on(async {
            let cfg = cli::jobs::load(&config)?;
            match command {
                ConflictsCommand::List { job, json } => {
                    cli::jobs::conflicts(&cfg, job.as_deref(), None, json)
                }
                ConflictsCommand::Show { id, json } => {
                    cli::jobs::conflicts(&cfg, None, Some(&id), json)
                }
                ConflictsCommand::Resolve { id, take, value } => {
                    cli::jobs::resolve(&cfg, &id, take, value).await
                }
            }
            .map(|_| 0)
        }),
        Command::LoadErp { url_env, dump } => rt.block_on(load_erp(&url_env, dump)).map(|_| 0),
        Command::Demo { dir } => rt
            .block_on(cli::demo::demo(dir, &northwind_path()))
            .map(|_| 0),
        Command::Store {
            command: StoreCommand::Verify { dir, instance },
        } => verify(dir, &instance).map(|_| 0),
        Command::Setup { table, dry_run } => rt.block_on(async {
            let c = table.connect().await?;
            if dry_run {
                for s in c.setup_sql() {
                    println!("{s};\n");
                }
                return Ok(0);
            }
            c.setup().await?;
            println!(
                "setup: change log and triggers installed for {}",
                table.table
            );
            Ok(0)
        }),
        Command::Sandbox {
            port,
            token,
            daily_limit,
            schema,
            seed,
            data,
            tls,
            jwt_public_key,
            fault_503,
            fault_lock,
            fault_drop,
            fault_latency_ms,
            fault_slow,
            fault_slow_ms,
            fault_limit_exceeded,
            fault_seed,
        } => {
            let faults = concord::sandbox::server::Faults {
                rate_503: fault_503,
                rate_lock: fault_lock,
                rate_drop: fault_drop,
                latency_ms: fault_latency_ms,
                rate_slow: fault_slow,
                slow_ms: fault_slow_ms,
                limit_exceeded: fault_limit_exceeded,
                seed: fault_seed,
            };
            let opts = concord::sandbox::launch::Options {
                port,
                schema,
                seed,
                data,
                tls,
                cert_dir: None,
                faults,
            };
            rt.block_on(sandbox(opts, token, daily_limit, jwt_public_key))
                .map(|_| 0)
        }
        Command::Teardown { table } => rt.block_on(async {
            let c = table.connect().await?;
            c.teardown().await?;
            println!("teardown: triggers removed for {}", table.table);
            Ok(0)
        }),
    };
    match res {
        Ok(0) => {}
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("concord: {e:#}");
            std::process::exit(1);
        }
    }
}

/// The shared fixtures' Northwind dump, as found at build time.
fn northwind_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/fixtures/erp/northwind.sql")
}

async fn load_erp(url_env: &str, dump: Option<PathBuf>) -> Result<()> {
    let path = dump.unwrap_or_else(northwind_path);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading the dump {}", path.display()))?;
    let url = std::env::var(url_env)
        .ok()
        .filter(|u| !u.is_empty())
        .with_context(|| format!("environment variable {url_env} is not set"))?;
    let pool = concord::connector::sql::Pool::connect(&url, "erp", "load").await?;
    let report = concord::connector::sql::dump::load(&pool, None, &text)
        .await
        .map_err(anyhow::Error::msg)?;
    println!("loaded {}: {report:?}", path.display());
    Ok(())
}

fn verify(dir: PathBuf, instance: &str) -> Result<()> {
    if !dir.is_dir() {
        anyhow::bail!("{} is not a store directory", dir.display());
    }
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&dir)?);
    let state = StateStore::open(store, InstanceId::new(instance)?)
        .with_context(|| format!("opening store {}", dir.display()))?;
    let n = state.verify()?;
    println!("{}: {n} entries, all readable", dir.display());
    Ok(())
}

async fn sandbox(
    opts: concord::sandbox::launch::Options,
    token: Option<String>,
    daily_limit: u64,
    jwt_public_key: Option<PathBuf>,
) -> Result<()> {
    use concord::sandbox::{launch, server};
    for (name, rate) in [
        ("--fault-503", opts.faults.rate_503),
        ("--fault-lock", opts.faults.rate_lock),
        ("--fault-drop", opts.faults.rate_drop),
        ("--fault-slow", opts.faults.rate_slow),
    ] {
        if !(0.0..=1.0).contains(&rate) {
            anyhow::bail!("{name} must be between 0 and 1, got {rate}");
        }
    }
    let mut settings = server::Settings::default();
    let printed_token = token.is_none();
    settings.token = token.unwrap_or_else(|| {
        format!(
            "00Dsandbox!{}",
            &blake3::hash(
                format!("{}{:?}", std::process::id(), std::time::SystemTime::now()).as_bytes()
            )
            .to_hex()[..32]
        )
    });
    settings.daily_limit = daily_limit;
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    if let Some(v) = env("CONCORD_SANDBOX_CLIENT_ID") {
        settings.client_id = v;
    }
    if let Some(v) = env("CONCORD_SANDBOX_CLIENT_SECRET") {
        settings.client_secret = v;
    }
    if let Some(v) = env("CONCORD_SANDBOX_USERNAME") {
        settings.username = v;
    }
    if let Some(v) = env("CONCORD_SANDBOX_PASSWORD") {
        settings.password = v;
    }
    if let Some(v) = env("CONCORD_SANDBOX_REFRESH_TOKEN") {
        settings.refresh_token = v;
    }
    if let Some(p) = &jwt_public_key {
        settings.jwt_public_key = Some(
            std::fs::read(p).with_context(|| format!("reading JWT public key {}", p.display()))?,
        );
    }
    let client_id = settings.client_id.clone();
    let username = settings.username.clone();
    let token = settings.token.clone();
    let l = launch::launch(&opts, settings).await?;
    for (path, loaded) in &l.seeded {
        let loaded: Vec<String> = loaded.iter().map(|(o, n)| format!("{n} {o}")).collect();
        println!("seeded {}: {}", path.display(), loaded.join(", "));
    }
    if let (Some(n), Some(d)) = (l.restored, &opts.data) {
        println!("restored {n} records from {}", d.display());
        if !opts.seed.is_empty() {
            println!("(--seed ignored: the org in --data is not empty)");
        }
    }
    if printed_token {
        println!("access token: {token}");
    }
    println!("client id: {client_id}   user: {username}");
    if let Some(ca) = &l.ca_path {
        println!("TLS certificate authority: {}", ca.display());
    }
    println!(
        "concord sandbox listening on {} (API versions {})",
        l.base_url,
        server::VERSIONS.join(", ")
    );
    l.server.await??;
    Ok(())
}

fn command_of(c: BundleCommand) -> cli::jobs::BundleAction {
    match c {
        BundleCommand::Export { peer, out } => cli::jobs::BundleAction::Export { peer, out },
        BundleCommand::Import { file, json } => cli::jobs::BundleAction::Import { file, json },
    }
}
