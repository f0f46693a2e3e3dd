//! `concord demo`: the five patterns on embedded defaults, from an empty folder, with no network
//! and no set-up. The Salesforce sandbox runs in this process, the ERP is a SQLite file loaded
//! with the shared fixtures' Northwind data, and the jobs are the documented examples
//! (docs/examples/), run through the same code as `concord run`.

use anyhow::{bail, Context, Result};
use concord::config::Config;
use concord::sandbox::launch::{launch, Options};
use concord::sandbox::server::Settings;
use serde_json::{json, Value as J};
use std::path::{Path, PathBuf};

const SCHEMA: &str = include_str!("../../docs/examples/sandbox-schema.toml");
const EXAMPLES: [(&str, &str); 5] = [
    (
        "migrate.toml",
        include_str!("../../docs/examples/migrate.toml"),
    ),
    (
        "bidirectional.toml",
        include_str!("../../docs/examples/bidirectional.toml"),
    ),
    (
        "broadcast.toml",
        include_str!("../../docs/examples/broadcast.toml"),
    ),
    (
        "aggregate.toml",
        include_str!("../../docs/examples/aggregate.toml"),
    ),
    (
        "correlate.toml",
        include_str!("../../docs/examples/correlate.toml"),
    ),
];

/// The broadcast example without its NATS destination (the demo uses no network).
fn broadcast_without_nats(text: &str) -> String {
    let mut out = String::new();
    let mut skip = false;
    for line in text.lines() {
        if line.starts_with('[') {
            skip =
                line.starts_with("[systems.bus]") || line.starts_with("[jobs.accounts.sides.bus");
        }
        if skip {
            continue;
        }
        out.push_str(&line.replace(
            "systems = [\"crm\", \"feed\", \"extract\", \"bus\"]",
            "systems = [\"crm\", \"feed\", \"extract\"]",
        ));
        out.push('\n');
    }
    out
}

fn title(n: usize, s: &str) {
    println!(
        "\n── {n}. {s} {}",
        "─".repeat(60usize.saturating_sub(s.len()))
    );
}

fn m(v: J) -> serde_json::Map<String, J> {
    v.as_object().cloned().unwrap_or_default()
}

/// Runs the demo in `dir` (a temporary folder when not given).
pub async fn demo(dir: Option<PathBuf>, fixtures: &Path) -> Result<()> {
    let dir = match dir {
        Some(d) => d,
        None => std::env::temp_dir().join(format!("concord-demo-{}", std::process::id())),
    };
    if dir.join("erp.db").exists() {
        bail!("{} already holds a demo; give another --dir", dir.display());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    println!("concord demo in {}", dir.display());
    std::fs::write(dir.join("sandbox-schema.toml"), SCHEMA)?;
    for (name, text) in EXAMPLES {
        let text = if name == "broadcast.toml" {
            broadcast_without_nats(text)
        } else {
            text.to_string()
        };
        std::fs::write(dir.join(name), text)?;
    }

    // The systems: a Salesforce org (the sandbox, in this process) and a SQLite ERP.
    let opts = Options {
        schema: Some(dir.join("sandbox-schema.toml")),
        ..Options::default()
    };
    let sb = launch(
        &opts,
        Settings {
            token: "demo".into(),
            ..Settings::default()
        },
    )
    .await?;
    let org = sb.sandbox.clone();
    let erp_url = format!("sqlite:{}?mode=rwc", dir.join("erp.db").display());
    let dump = std::fs::read_to_string(fixtures).with_context(|| {
        format!(
            "reading the Northwind fixture {} (the demo's ERP data)",
            fixtures.display()
        )
    })?;
    let pool = concord::connector::sql::Pool::connect(&erp_url, "erp", "load").await?;
    let loaded = concord::connector::sql::dump::load(&pool, None, &dump).await?;
    println!(
        "Salesforce sandbox at {} (in this process); SQLite ERP {} with {} customers and {} orders from the Northwind fixture",
        sb.base_url,
        dir.join("erp.db").display(),
        loaded.rows.get("customers").copied().unwrap_or(0),
        loaded.rows.get("orders").copied().unwrap_or(0)
    );
    for (k, v) in [
        ("SF_URL", sb.base_url.as_str()),
        ("SF_TOKEN", "demo"),
        ("ERP_URL", erp_url.as_str()),
        (
            "CONCORD_MATCH_KEY",
            "the demo's privacy key, thirty-two characters or more",
        ),
    ] {
        std::env::set_var(k, v);
    }
    let cfg = |name: &str| Config::load(&dir.join(name)).map_err(anyhow::Error::from);
    let erp_exec = |sql: &'static str| {
        let pool = &pool;
        async move { pool.execute(sql, &[]).await.context("ERP update") }
    };
    let erp_row = |sql: &'static str| {
        let pool = &pool;
        async move {
            let rows = pool.fetch(sql, &[]).await.context("ERP query")?;
            Ok::<_, anyhow::Error>(
                concord::connector::sql::decode::first_text(&rows).unwrap_or_default(),
            )
        }
    };
    let soql = |q: &str| -> Vec<J> {
        let o = org.org.lock().expect("lock");
        match o.query(
            &concord::sandbox::soql::parse(q).expect("demo SOQL"),
            false,
            "62.0",
        ) {
            Ok(concord::sandbox::org::QueryResult::Rows(r)) => r,
            Ok(concord::sandbox::org::QueryResult::Count(n)) => vec![json!(n)],
            Err(_) => Vec::new(),
        }
    };
    let mut worst = 0;
    let run = |c: Config, jobs: Vec<String>, verify: bool| async move {
        super::jobs::run(
            &c,
            &jobs,
            super::jobs::RunOptions {
                all: jobs.is_empty(),
                verify,
                ..Default::default()
            },
        )
        .await
    };

    title(
        1,
        "migrate: ERP customers and their orders into Salesforce (migrate.toml)",
    );
    worst = worst.max(run(cfg("migrate.toml")?, vec![], true).await?);
    let o = soql("SELECT Name, Amount, Account.Name FROM Opportunity WHERE Account.Erp_Id__c = 'ALFKI' LIMIT 1");
    if let Some(o) = o.first() {
        println!(
            "  e.g. Opportunity \"{}\" ({}) → Account \"{}\": the order's customer",
            o["Name"].as_str().unwrap_or(""),
            o["Amount"],
            o["Account"]["Name"].as_str().unwrap_or("")
        );
    }
    println!("  a second run changes nothing:");
    worst = worst.max(run(cfg("migrate.toml")?, vec![], false).await?);

    title(
        2,
        "bidirectional: Accounts and customers kept as one (bidirectional.toml)",
    );
    worst = worst.max(run(cfg("bidirectional.toml")?, vec!["accounts".into()], false).await?);
    let acct = soql("SELECT Id FROM Account WHERE Erp_Id__c = 'ALFKI'")
        .first()
        .and_then(|r| r["Id"].as_str().map(str::to_string))
        .context("the migrated Alfreds Account")?;
    println!("  edits on both sides of Alfreds Futterkiste:");
    println!("    Salesforce: BillingCity → Potsdam, Phone → +49 30 111, Name → Alfreds Futterkiste GmbH");
    println!("    ERP:        contact_name → Maria Anders-Schmidt, phone → 030-0074999, company_name → Alfreds Futterkiste AG");
    org.org
        .lock()
        .expect("lock")
        .update("Account", &acct, &m(json!({"BillingCity": "Potsdam", "Phone": "+49 30 111", "Name": "Alfreds Futterkiste GmbH"})))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    erp_exec("UPDATE customers SET contact_name = 'Maria Anders-Schmidt', phone = '030-0074999', company_name = 'Alfreds Futterkiste AG' WHERE customer_id = 'ALFKI'").await?;
    worst = worst.max(run(cfg("bidirectional.toml")?, vec!["accounts".into()], false).await?);
    let a = soql(&format!(
        "SELECT Name, Phone, BillingCity, Description FROM Account WHERE Id = '{acct}'"
    ));
    let a = a.first().cloned().unwrap_or_default();
    println!(
        "  merged field by field: Salesforce now has city {}, phone {} (phone: the ERP wins), contact {}",
        a["BillingCity"], a["Phone"], a["Description"]
    );
    println!(
        "  the ERP now has city {:?}; both kept their own name while the name conflict waits:",
        erp_row("SELECT city FROM customers WHERE customer_id = 'ALFKI'").await?
    );
    super::jobs::conflicts(&cfg("bidirectional.toml")?, None, None, false)?;
    let c = cfg("bidirectional.toml")?;
    let state = super::jobs::open_state(&c)?;
    let id = state
        .conflicts()?
        .first()
        .map(|e| {
            concord::engine::conflicts::conflict_id(
                &concord::model::EntityId(e.entity),
                e.field.as_deref(),
            )
        })
        .context("the parked name conflict")?;
    drop(state);
    println!(
        "  resolving it (concord conflicts resolve {id} --take erp.customers), then running again:"
    );
    super::jobs::resolve(&c, &id, Some("erp.customers".into()), None).await?;
    worst = worst.max(run(cfg("bidirectional.toml")?, vec!["accounts".into()], false).await?);
    println!(
        "  the name everywhere: Salesforce {}, ERP {:?}",
        soql(&format!("SELECT Name FROM Account WHERE Id = '{acct}'"))
            .first()
            .map(|r| r["Name"].clone())
            .unwrap_or_default(),
        erp_row("SELECT company_name FROM customers WHERE customer_id = 'ALFKI'").await?
    );
    println!("  and once more, with nothing changed — no echo, nothing written:");
    worst = worst.max(run(cfg("bidirectional.toml")?, vec!["accounts".into()], false).await?);

    title(
        3,
        "broadcast: Accounts to a JSONL feed and a CSV extract (broadcast.toml, NATS left out)",
    );
    worst = worst.max(run(cfg("broadcast.toml")?, vec!["accounts".into()], false).await?);
    let csv = std::fs::read_to_string(dir.join("out/accounts.csv")).unwrap_or_default();
    println!(
        "  out/accounts.csv: {} rows; e.g. {}",
        csv.lines().count().saturating_sub(1),
        csv.lines().find(|l| l.contains("Alfreds")).unwrap_or("")
    );

    title(
        4,
        "aggregate: one golden record per company from ERP and Salesforce (aggregate.toml)",
    );
    org.org
        .lock()
        .expect("lock")
        .update(
            "Account",
            &acct,
            &m(json!({"Industry": "Food & Beverages", "AnnualRevenue": 1250000})),
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    worst = worst.max(run(cfg("aggregate.toml")?, vec!["golden".into()], false).await?);
    let golden =
        std::fs::read_to_string(dir.join("out/golden-customers.jsonl")).unwrap_or_default();
    if let Some(l) = golden.lines().find(|l| l.contains("Alfreds")) {
        println!("  {l}");
    }
    println!("  (_sources: which system each value came from; the ERP has priority, Salesforce adds industry and revenue)");

    title(
        5,
        "correlate: only people who are on both sides (correlate.toml, privacy mode)",
    );
    {
        let mut o = org.org.lock().expect("lock");
        for (f, l, t) in [
            ("Maria", "Anders-Schmidt", "Head of Sales"),
            ("Ana", "Trujillo", "Founder & Owner"),
            ("Zelda", "Nowhere", "CEO"),
        ] {
            o.create(
                "Contact",
                &m(json!({"FirstName": f, "LastName": l, "Title": t, "Phone": "+1 555 0100"})),
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    println!("  Salesforce Contacts: Maria Anders-Schmidt, Ana Trujillo (both ERP contacts), Zelda Nowhere (not)");
    worst = worst.max(run(cfg("correlate.toml")?, vec!["people".into()], false).await?);
    println!(
        "  Ana Trujillo's title in the ERP is now {:?}; nobody was created on either side; Zelda left nothing in the store",
        erp_row("SELECT contact_title FROM customers WHERE customer_id = 'ANATR'").await?
    );

    let counters = org.counters();
    let calls: u64 = counters.values().sum();
    println!("\nSalesforce API calls used by the whole demo: {calls}");
    println!("files: {}", dir.display());
    sb.server.abort();
    if worst != 0 {
        bail!("a demo run ended with exit code {worst}");
    }
    Ok(())
}
