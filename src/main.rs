//! The `concord` command line. Library errors are typed; here they become messages and exit codes:
//! 0 success, 1 failure (the message says what and where), 2 usage error (from clap), 3 a run
//! finished but a system failed or writes wait in the outbox, 4 `--verify` found differences,
//! 5 the delete guard stopped a pass.

mod cli;

use clap::Parser;

/// mimalloc instead of glibc malloc: allocation was a third of a migrate's samples.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CONCORD_LOG")
        .unwrap_or_else(|_| "warn".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // CONCORD_LOG_FORMAT=json: one JSON object per line (for a log collector).
    if std::env::var("CONCORD_LOG_FORMAT").as_deref() == Ok("json") {
        logs.json().init();
    } else {
        logs.init();
    }
    let cli = cli::args::Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let code = match cli::dispatch(cli, &rt) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("concord: {e:#}");
            1
        }
    };
    // The stores are flushed, not dropped (see `cli::jobs::flush_open_stores`).
    cli::jobs::flush_open_stores();
    std::process::exit(code);
}
