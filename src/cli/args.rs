//! The command line's arguments (clap): every command and its flags.

use anyhow::Result;
use clap::{Parser, Subcommand};
use concord::model::SystemId;
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "concord",
    version,
    about = "Change-tracking sync engine for business records"
)]
pub(crate) struct Cli {
    /// The job configuration file.
    #[arg(
        long,
        global = true,
        env = "CONCORD_CONFIG",
        default_value = "concord.toml"
    )]
    pub(crate) config: PathBuf,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
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
    /// Run as a service: jobs on their schedule (interval or cron) and on request over the HTTP
    /// API (docs/api.md), `/metrics`, `/healthz`, `/readyz`; one per store. SIGTERM or Ctrl-C
    /// stops it gracefully: the running pass stops after its chunk's checkpoint.
    Serve {
        /// Where the API listens (loopback by default; port 0 picks a free one).
        #[arg(long, default_value = "127.0.0.1:8686")]
        listen: std::net::SocketAddr,
        /// The variable holding the API's bearer token (at least 16 characters).
        #[arg(long, default_value = "CONCORD_API_TOKEN")]
        token_env: String,
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
        /// The PostgreSQL dump to load (default: `$CONCORD_FIXTURES/erp/northwind.sql`, else
        /// `../shared/fixtures/erp/northwind.sql`).
        #[arg(long)]
        dump: Option<PathBuf>,
    },
    /// Run the demonstration on embedded defaults (no network, no set-up).
    Demo {
        /// Keep the demo's store in this directory instead of a temporary one.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The Northwind dump the demo's ERP is loaded from (default as for `load-erp`).
        #[arg(long)]
        dump: Option<PathBuf>,
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
        /// The REST API versions served, OLDEST-NEWEST: older ones answer 410 GONE as retired
        /// versions do, newer ones 404 (default: an org's range).
        #[arg(long, value_name = "OLDEST-NEWEST", default_value_t = concord::sandbox::server::ApiVersions::default())]
        api_versions: concord::sandbox::server::ApiVersions,
    },
    /// Remove exactly what `setup` installed for a table.
    Teardown {
        #[command(flatten)]
        table: TableArgs,
    },
}

#[derive(Subcommand)]
pub(crate) enum PeerCommand {
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
pub(crate) enum BundleCommand {
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
pub(crate) struct TableArgs {
    /// Environment variable holding the connection URL (the URL itself is never a flag).
    #[arg(long)]
    pub(crate) url_env: String,
    /// Table name.
    #[arg(long)]
    pub(crate) table: String,
    /// Key columns, comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    pub(crate) key: Vec<String>,
    /// Schema (PostgreSQL) or database (MySQL).
    #[arg(long)]
    pub(crate) schema: Option<String>,
    /// Change-log table name.
    #[arg(long, default_value = "concord_changelog")]
    pub(crate) changelog: String,
}

impl TableArgs {
    pub(crate) async fn connect(&self) -> Result<concord::connector::sql::SqlConnector> {
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
pub(crate) enum ConflictsCommand {
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
pub(crate) enum StoreCommand {
    /// Decode every entry of a store and report the first corrupt one (read-only).
    Verify {
        /// The store directory.
        dir: PathBuf,
        /// The instance the store belongs to.
        #[arg(long, default_value = "local")]
        instance: String,
    },
}
