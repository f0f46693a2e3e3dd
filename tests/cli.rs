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
            concord::connector::sql::read::first_i64(&rows).unwrap()
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
    let store = dir.path().join("store");
    let out = concord()
        .args(["demo", "--dir"])
        .arg(&store)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("writes: 0 (no echo"), "{text}");
    let out = concord()
        .args(["store", "verify"])
        .arg(&store)
        .args(["--instance", "demo"])
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
}
