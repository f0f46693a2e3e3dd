//! Data-safety regressions (issue 12): configurations the docs allow that made concord lose
//! edits, delete or rewrite records nobody touched, or create duplicates, each driven through
//! the `concord` binary as a user would, on real files and databases.

use sqlx::Row;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A folder with a concord.toml, a SQLite ERP and a `files/` folder.
struct Dir {
    path: PathBuf,
    erp_url: String,
}

impl Dir {
    fn new(config: &str) -> Dir {
        let path = tempfile::tempdir().unwrap().keep();
        std::fs::create_dir_all(path.join("files")).unwrap();
        std::fs::write(path.join("concord.toml"), config).unwrap();
        let erp_url = format!("sqlite:{}?mode=rwc", path.join("erp.db").display());
        Dir { path, erp_url }
    }

    fn file(&self, name: &str) -> PathBuf {
        self.path.join("files").join(name)
    }

    /// Runs the binary here; (exit code, stdout, stderr).
    fn concord(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_concord"))
            .current_dir(&self.path)
            .args(args)
            .env("ERP_URL", &self.erp_url)
            .env_remove("CONCORD_LOG")
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    fn run_ok(&self, args: &[&str]) -> String {
        let (code, out, err) = self.concord(args);
        assert_eq!(code, 0, "concord {args:?}: {out}\n{err}");
        out
    }

    async fn erp(&self) -> sqlx::SqlitePool {
        sqlx::SqlitePool::connect(&self.erp_url).await.unwrap()
    }

    /// Every row of `table` as text, in key order.
    async fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        let pool = self.erp().await;
        let rows = sqlx::query(sql).fetch_all(&pool).await.unwrap();
        pool.close().await;
        rows.iter()
            .map(|r| {
                (0..r.len())
                    .map(|i| {
                        r.try_get::<String, _>(i)
                            .or_else(|_| r.try_get::<i64, _>(i).map(|n| n.to_string()))
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .collect()
    }
}

const CSV_JOB: &str = r#"
[store]
dir = "state"

[systems.erp]
type = "sqlite"
url_env = "ERP_URL"

[systems.sheet]
type = "csv"
dir = "files"

[jobs.customers]
pattern = "bidirectional"
systems = ["erp", "sheet"]

[jobs.customers.sides.erp]
table = "customers"
key = ["customer_id"]
[jobs.customers.sides.erp.fields]
customer_id = "customer_id"
name = "name"
city = "city"

[jobs.customers.sides.sheet]
file = "customers.csv"
key = ["customer_id"]
types = { customer_id = "int" }
[jobs.customers.sides.sheet.fields]
customer_id = "customer_id"
name = "name"
city = "city"
"#;

async fn csv_job() -> Dir {
    let d = Dir::new(CSV_JOB);
    let pool = d.erp().await;
    sqlx::query("CREATE TABLE customers (customer_id INTEGER PRIMARY KEY, name TEXT, city TEXT)")
        .execute(&pool)
        .await
        .unwrap();
    for i in 1..=10 {
        sqlx::query("INSERT INTO customers VALUES (?, ?, ?)")
            .bind(i)
            .bind(format!("Customer {i}"))
            .bind(format!("City {i}"))
            .execute(&pool)
            .await
            .unwrap();
    }
    pool.close().await;
    d
}

const ALL: &str = "SELECT customer_id, name, city FROM customers ORDER BY customer_id";

/// Bug 2: one quote opened in a CSV cell took the rest of the file for one cell; the rows after
/// it looked deleted and were deleted from SQLite (exit 0). Every kind of malformed file must be
/// a read error naming the file, line and column, and the pass must change nothing elsewhere.
#[tokio::test]
async fn a_malformed_csv_is_a_read_error_and_deletes_nothing() {
    let d = csv_job().await;
    d.run_ok(&["run", "customers"]);
    let csv = d.file("customers.csv");
    let good = std::fs::read(&csv).unwrap();
    let before = d.rows(ALL).await;
    assert_eq!(before.len(), 10);
    let text = String::from_utf8(good.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 11, "{text}");
    let with_line = |n: usize, new: &str| {
        let mut l: Vec<String> = lines.iter().map(|s| s.to_string()).collect();
        l[n - 1] = new.to_string();
        l.join("\n") + "\n"
    };
    let sed_place = format!("line 5, column {}", lines[4].find(",Customer").unwrap() + 2);
    let city6 = lines.iter().position(|l| l.contains("City 6")).unwrap();
    let utf8_place = format!(
        "line {}, column {}",
        city6 + 1,
        lines[city6].find("City 6").unwrap() + 1
    );
    // (what, corrupted file, the line and column the error must name)
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "the issue's sed: a quote opened on line 5",
            with_line(5, &lines[4].replacen(",Customer", ",\"Customer", 1)).into_bytes(),
            &sed_place,
        ),
        (
            "a quote still open at the end of the file",
            (text.trim_end().to_string() + ",\"x\n").into_bytes(),
            "line 11",
        ),
        (
            "a row with fewer cells",
            with_line(7, "6,Customer 6").into_bytes(),
            "line 7",
        ),
        (
            "a row with more cells",
            with_line(3, "2,Customer 2,City 2,extra").into_bytes(),
            "line 3",
        ),
        (
            "a key that fails its declared type",
            with_line(4, "three,Customer 3,City 3").into_bytes(),
            "line 4, column 1",
        ),
        (
            "a duplicate key",
            with_line(9, "2,Customer 8,City 8").into_bytes(),
            "line 9",
        ),
        (
            "invalid UTF-8",
            {
                let mut b = good.clone();
                let at = text.find("City 6").unwrap();
                b[at] = 0xff;
                b
            },
            &utf8_place,
        ),
        (
            "a truncated last line",
            good[..good.len() - 5].to_vec(),
            "line 11",
        ),
        (
            "a character after a closing quote",
            with_line(6, "5,\"Customer 5\"x,City 5").into_bytes(),
            "line 6",
        ),
    ];
    for (what, bytes, place) in cases {
        std::fs::write(&csv, &bytes).unwrap();
        let (code, out, err) = d.concord(&["run", "customers"]);
        assert_eq!(code, 3, "{what}: exit code\n{out}\n{err}");
        let all = format!("{out}\n{err}");
        assert!(
            all.contains("customers.csv") && all.contains(place),
            "{what}: the error must name the file and {place:?}:\n{all}"
        );
        assert_eq!(d.rows(ALL).await, before, "{what}: SQLite changed");
        assert_eq!(
            std::fs::read(&csv).unwrap(),
            bytes,
            "{what}: the file was rewritten"
        );
    }
    // Mended, the file syncs again and nothing was lost or duplicated on the way.
    std::fs::write(&csv, &good).unwrap();
    let out = d.run_ok(&["run", "customers"]);
    assert_eq!(d.rows(ALL).await, before, "{out}");
    // A real edit still goes through.
    assert_eq!(lines[0], "customer_id,city,name");
    let four = lines.iter().position(|l| l.starts_with("4,")).unwrap();
    std::fs::write(&csv, with_line(four + 1, "4,Lyon,Customer 4")).unwrap();
    d.run_ok(&["run", "customers"]);
    let after = d.rows(ALL).await;
    assert_eq!(after[3], vec!["4", "Customer 4", "Lyon"]);
    assert_eq!(after.len(), 10);
    let _ = Path::new(&d.path);
}
