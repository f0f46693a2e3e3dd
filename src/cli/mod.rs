//! The command line: its arguments ([`args`]), one module per command group, and [`dispatch`],
//! which runs a parsed command and gives its exit code.

pub mod args;
pub mod demo;
pub mod jobs;
pub mod peer;
pub mod sandbox;
pub mod tools;

use anyhow::Result;
use args::{BundleCommand, Cli, Command, ConflictsCommand, PeerCommand, StoreCommand};

/// Runs `cli`'s command on `rt`; the exit code (0: success) or the error to report.
pub fn dispatch(cli: Cli, rt: &tokio::runtime::Runtime) -> Result<i32> {
    let config = cli.config.clone();
    match cli.command {
        Command::Init => jobs::init(&config).map(|_| 0),
        Command::Run {
            jobs,
            all,
            dry_run,
            watch,
            verify,
            json,
            allow_deletes,
        } => rt.block_on(async {
            let cfg = jobs::load(&config)?;
            let o = jobs::RunOptions {
                all,
                dry: dry_run,
                watch,
                verify,
                json,
                allow_deletes,
            };
            jobs::run(&cfg, &jobs, o).await
        }),
        Command::Plan { jobs, all, json } => rt.block_on(async {
            let cfg = jobs::load(&config)?;
            let o = jobs::RunOptions {
                all,
                dry: true,
                json,
                ..Default::default()
            };
            jobs::run(&cfg, &jobs, o).await
        }),
        Command::Serve { listen, token_env } => rt.block_on(async {
            let cfg = jobs::load(&config)?;
            jobs::serve(cfg, listen, token_env).await
        }),
        Command::Status { json } => jobs::load(&config)
            .and_then(|cfg| jobs::status(&cfg, json))
            .map(|_| 0),
        Command::Reconcile {
            job,
            repair,
            full,
            json,
            allow_deletes,
        } => rt.block_on(async {
            let cfg = jobs::load(&config)?;
            let o = jobs::ReconcileOptions {
                json,
                repair,
                full,
                allow_deletes,
            };
            jobs::reconcile(&cfg, &job, o).await
        }),
        Command::Peer { command } => rt.block_on(async {
            let cfg = jobs::load(&config)?;
            match command {
                PeerCommand::Serve { listen } => peer::serve(&cfg, &listen).await,
                PeerCommand::Sync {
                    url,
                    peer,
                    tree,
                    json,
                } => peer::sync(&cfg, &url, &peer, tree, json).await,
            }
            .map(|_| 0)
        }),
        Command::Bundle { command } => jobs::load(&config)
            .and_then(|cfg| jobs::bundle(&cfg, command_of(command)))
            .map(|_| 0),
        Command::Conflicts { command } => rt.block_on(async {
            let cfg = jobs::load(&config)?;
            match command {
                ConflictsCommand::List { job, json } => {
                    jobs::conflicts(&cfg, job.as_deref(), None, json)
                }
                ConflictsCommand::Show { id, json } => jobs::conflicts(&cfg, None, Some(&id), json),
                ConflictsCommand::Resolve { id, take, value } => {
                    jobs::resolve(&cfg, &id, take, value).await
                }
            }
            .map(|_| 0)
        }),
        Command::LoadErp { url_env, dump } => {
            rt.block_on(tools::load_erp(&url_env, dump)).map(|_| 0)
        }
        Command::Demo { dir, dump } => {
            let dump = tools::northwind_path(dump)?;
            rt.block_on(demo::demo(dir, &dump)).map(|_| 0)
        }
        Command::Store {
            command: StoreCommand::Verify { dir, instance },
        } => tools::verify(dir, &instance).map(|_| 0),
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
            api_versions,
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
            rt.block_on(sandbox::sandbox(
                opts,
                token,
                daily_limit,
                jwt_public_key,
                api_versions,
            ))
            .map(|_| 0)
        }
        Command::Teardown { table } => rt.block_on(async {
            let c = table.connect().await?;
            c.teardown().await?;
            println!("teardown: triggers removed for {}", table.table);
            Ok(0)
        }),
    }
}

fn command_of(c: BundleCommand) -> jobs::BundleAction {
    match c {
        BundleCommand::Export { peer, out } => jobs::BundleAction::Export { peer, out },
        BundleCommand::Import { file, json } => jobs::BundleAction::Import { file, json },
    }
}
