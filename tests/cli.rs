//! The `concord` binary: setup/teardown on a real SQLite database, store verify, exit codes.

use std::process::Command;

fn concord() -> Command {
    Command::new(env!("CARGO_BIN_EXE_concord"))
}

#[test]
fn setup_and_teardown_of_triggers() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("erp.db");
    let url = format!("sqlite:{}", db.display());
    // Make a table with the library, then drive the CLI.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pool = rt.block_on(async {
        let p = concord::connector::sql::Pool::connect(&url, "t", "customers")
            .await
            .unwrap();
        p.execute(
            "CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)",
            &[],
        )
        .await
        .unwrap();
        p
    });
    let args = [
        "--url-env",
        "ERP_URL",
        "--table",
        "customers",
        "--key",
        "id",
    ];
    let out = concord()
        .arg("setup")
        .args(args)
        .arg("--dry-run")
        .env("ERP_URL", &url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sql = String::from_utf8_lossy(&out.stdout);
    assert!(
        sql.contains("CREATE TRIGGER") && sql.contains("concord_changelog"),
        "{sql}"
    );
    for _ in 0..2 {
        let out = concord()
            .arg("setup")
            .args(args)
            .env("ERP_URL", &url)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "setup must be idempotent: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let count = |sql: &str| {
        rt.block_on(async {
            let rows = pool.fetch(sql, &[]).await.unwrap();
            concord::connector::sql::decode::first_i64(&rows).unwrap()
        })
    };
    assert_eq!(
        count("SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger'"),
        3
    );
    let out = concord()
        .arg("teardown")
        .args(args)
        .env("ERP_URL", &url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger'"),
        0
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM sqlite_master WHERE name = 'concord_changelog'"),
        0
    );
    assert_eq!(
        count("SELECT COUNT(*) FROM sqlite_master WHERE name = 'customers'"),
        1,
        "the table itself stays"
    );
    // Errors: exit code 1 and a message naming what is wrong, never the URL.
    let out = concord()
        .arg("setup")
        .args(args)
        .env_remove("ERP_URL")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("ERP_URL"));
    let out = concord()
        .arg("setup")
        .args(["--table", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "usage error");
}

#[test]
fn store_verify_and_demo() {
    let dir = tempfile::tempdir().unwrap();
    let demo = dir.path().join("demo");
    let out = concord()
        .args(["demo", "--dir"])
        .arg(&demo)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for step in [
        "1. migrate",
        "2. bidirectional",
        "3. broadcast",
        "4. aggregate",
        "5. correlate",
    ] {
        assert!(text.contains(step), "{step}: {text}");
    }
    assert!(text.contains("parked 1"), "a conflict is shown: {text}");
    assert!(text.contains("the name everywhere: Salesforce \"Alfreds Futterkiste AG\", ERP \"Alfreds Futterkiste AG\""), "{text}");
    assert!(text.contains("nothing written:\njob accounts"), "{text}");
    assert!(text.contains("matched 2"), "{text}");
    assert!(
        text.contains("\"industry\":\"crm.Account\""),
        "provenance: {text}"
    );
    let store = demo.join(".concord-bidirectional");
    let out = concord()
        .args(["store", "verify"])
        .arg(&store)
        .args(["--instance", "hq"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("all readable"));
    let out = concord()
        .args(["store", "verify"])
        .arg(&store)
        .args(["--instance", "other"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("instance"));
    // Run again in the same folder: refused, nothing touched.
    let out = concord()
        .args(["demo", "--dir"])
        .arg(&demo)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

/// Starts `concord sandbox` with the given arguments; returns the child and the lines it printed
/// up to the "listening on" line.
#[allow(clippy::zombie_processes)] // the child is returned: the caller kills and waits for it
fn start_sandbox(args: &[&str]) -> (std::process::Child, Vec<String>) {
    use std::io::BufRead;
    let mut child = concord()
        .arg("sandbox")
        .args(["--port", "0"])
        .args(args)
        .env("CONCORD_SANDBOX_CLIENT_SECRET", "cli-secret")
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    loop {
        let mut l = String::new();
        assert!(
            out.read_line(&mut l).unwrap() > 0,
            "sandbox exited: {lines:?}"
        );
        lines.push(l.trim().to_string());
        if l.contains("listening on") {
            return (child, lines);
        }
    }
}

fn base_of(lines: &[String]) -> String {
    lines
        .iter()
        .find_map(|l| l.split("listening on ").nth(1))
        .unwrap()
        .split(' ')
        .next()
        .unwrap()
        .to_string()
}

#[test]
fn sandbox_flags_tls_data_faults_and_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("org");
    let data_s = data.to_str().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // TLS + persistence + a token given; the client secret comes from the environment.
    let (mut child, lines) = start_sandbox(&["--tls", "--data", data_s, "--token", "T1"]);
    let base = base_of(&lines);
    assert!(base.starts_with("https://127.0.0.1:"), "{lines:?}");
    let ca = lines
        .iter()
        .find_map(|l| l.strip_prefix("TLS certificate authority: "))
        .unwrap()
        .to_string();
    assert!(
        !lines.iter().any(|l| l.contains("cli-secret")),
        "secrets are never printed"
    );
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap())
        .build()
        .unwrap();
    rt.block_on(async {
        let r = client
            .post(format!("{base}/services/data/v62.0/sobjects/Account"))
            .bearer_auth("T1")
            .json(&serde_json::json!({"Name": "Persisted"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        let bad = client
            .post(format!("{base}/services/oauth2/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "concord-sandbox"),
                ("client_secret", "concord-sandbox-secret"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(
            bad.status(),
            400,
            "the default secret is replaced by the environment's"
        );
        let ok = client
            .post(format!("{base}/services/oauth2/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "concord-sandbox"),
                ("client_secret", "cli-secret"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(ok.status(), 200);
    });
    child.kill().unwrap();
    child.wait().unwrap();

    // Restarted on the same data, plain HTTP, every call answered 503 by the fault flags.
    let (mut child, lines) = start_sandbox(&[
        "--data",
        data_s,
        "--token",
        "T2",
        "--fault-503",
        "1",
        "--fault-seed",
        "3",
    ]);
    assert!(
        // The admin user, the standard price book and the account.
        lines.iter().any(|l| l.starts_with("restored 3 records")),
        "{lines:?}"
    );
    let base = base_of(&lines);
    rt.block_on(async {
        let c = reqwest::Client::new();
        let r = c
            .get(format!(
                "{base}/services/data/v62.0/query?q=SELECT+Name+FROM+Account"
            ))
            .bearer_auth("T2")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        c.post(format!("{base}/admin/faults"))
            .json(&serde_json::json!({}))
            .send()
            .await
            .unwrap();
        let q: serde_json::Value = c
            .get(format!(
                "{base}/services/data/v62.0/query?q=SELECT+Name+FROM+Account"
            ))
            .bearer_auth("T2")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(q["records"][0]["Name"], "Persisted");
    });
    child.kill().unwrap();
    child.wait().unwrap();

    // A bad fault rate is refused with a clear message and exit code 1.
    let out = concord()
        .args(["sandbox", "--port", "0", "--fault-drop", "1.5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--fault-drop must be between 0 and 1"));
}

/// The demo's data is found at run time (no build machine's path in the binary): from a folder
/// without the shared fixtures beside it, the error says how to give them.
#[test]
fn the_demo_says_where_its_data_is_looked_for() {
    let dir = tempfile::tempdir().unwrap();
    // A folder whose parent holds no `shared/fixtures` (the temporary folder's parent might).
    let cwd = dir.path().join("a/b");
    std::fs::create_dir_all(&cwd).unwrap();
    let out = concord()
        .current_dir(&cwd)
        .env_remove("CONCORD_FIXTURES")
        .args(["demo", "--dir", "d"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--dump") && err.contains("CONCORD_FIXTURES"),
        "{err}"
    );
    assert!(
        !dir.path().join("d").exists(),
        "nothing made before the data is found"
    );
}
