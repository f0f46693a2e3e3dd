//! `concord sandbox`: starts the Salesforce stand-in and prints how to reach it.

use anyhow::{Context, Result};
use std::path::PathBuf;

/// Starts the sandbox with `opts` and serves until it stops.
pub(crate) async fn sandbox(
    opts: concord::sandbox::launch::Options,
    token: Option<String>,
    daily_limit: u64,
    jwt_public_key: Option<PathBuf>,
    api_versions: concord::sandbox::server::ApiVersions,
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
    settings.versions = api_versions;
    let versions = settings.versions;
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
        l.base_url, versions
    );
    l.server.await??;
    Ok(())
}
