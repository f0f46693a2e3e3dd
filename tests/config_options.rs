//! Each connector owns its configuration: every option its doc's tables list is settable in a
//! job's configuration and reaches the connector, and an option of another kind of system (or
//! of another capture mode) is an error naming its key path and line.

use concord::config::{Config, SideOptions, SystemConfig};
use concord::connector::files::{FileConfig, FilesSystem};
use concord::connector::salesforce::SalesforceConfig;
use concord::connector::sql::SqlTableConfig;
use std::collections::BTreeMap;
use std::path::Path;

/// The kinds of system, each with the connector doc that documents its keys, the heading of its
/// `[systems.NAME]` table, a minimal system and a minimal side.
struct Kind {
    kind: &'static str,
    doc: &'static str,
    system_heading: &'static str,
    system: &'static [(&'static str, &'static str)],
    side: &'static [(&'static str, &'static str)],
}

const KINDS: [Kind; 7] = [
    Kind {
        kind: "salesforce",
        doc: "salesforce.md",
        system_heading: "(`type = \"salesforce\"`)",
        system: &[("instance_url_env", "\"U\"")],
        side: &[("object", "\"Account\"")],
    },
    Kind {
        kind: "postgres",
        doc: "sql.md",
        system_heading: "\"postgres\"",
        system: &[("url_env", "\"U\"")],
        side: &[("table", "\"t\""), ("key", "[\"id\"]")],
    },
    Kind {
        kind: "mysql",
        doc: "sql.md",
        system_heading: "\"mysql\"",
        system: &[("url_env", "\"U\"")],
        side: &[("table", "\"t\""), ("key", "[\"id\"]")],
    },
    Kind {
        kind: "sqlite",
        doc: "sql.md",
        system_heading: "\"sqlite\"",
        system: &[("url_env", "\"U\"")],
        side: &[("table", "\"t\""), ("key", "[\"id\"]")],
    },
    Kind {
        kind: "csv",
        doc: "files.md",
        system_heading: "(`type = \"csv\"`)",
        system: &[("dir", "\"out\"")],
        side: &[("file", "\"b.csv\""), ("key", "[\"id\"]")],
    },
    Kind {
        kind: "jsonl",
        doc: "files.md",
        system_heading: "(`type = \"jsonl\"`)",
        system: &[("dir", "\"out\"")],
        side: &[("file", "\"b.jsonl\""), ("key", "[\"id\"]")],
    },
    Kind {
        kind: "nats",
        doc: "nats.md",
        system_heading: "(`type = \"nats\"`)",
        system: &[("url_env", "\"U\"")],
        side: &[("subject", "\"a.b\"")],
    },
];

/// The keys of the table under the first heading (`### …`) that contains `heading` in `doc`.
fn table_keys(doc: &str, heading: &str) -> Vec<String> {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("docs/connectors")
            .join(doc),
    )
    .unwrap();
    let mut lines = text.lines();
    lines
        .by_ref()
        .find(|l| l.starts_with("### ") && l.contains(heading))
        .unwrap_or_else(|| panic!("{doc}: no heading with {heading}"));
    let mut keys = Vec::new();
    for l in lines {
        if l.starts_with("### ") || l.starts_with("## ") {
            break;
        }
        let Some(first) = l.strip_prefix("| ").and_then(|r| r.split(" |").next()) else {
            continue;
        };
        if first == "key" || first.starts_with("---") {
            continue;
        }
        for k in first.split(", ") {
            keys.push(k.trim_matches('`').to_string());
        }
    }
    assert!(
        !keys.is_empty(),
        "{doc}: the table under {heading} is empty"
    );
    keys
}

fn system_keys(k: &Kind) -> Vec<String> {
    table_keys(k.doc, k.system_heading)
}
fn side_keys(k: &Kind) -> Vec<String> {
    table_keys(k.doc, "[jobs.JOB.sides.NAME]")
}

/// What an option needs beside it, and two different values of it (neither its default).
type Sample = (Vec<(&'static str, &'static str)>, String, String);

fn sample(kind: &str, key: &str) -> Option<Sample> {
    let s = |a: &str, b: &str| Some((Vec::new(), a.to_string(), b.to_string()));
    let sql = matches!(kind, "postgres" | "mysql" | "sqlite");
    let column = vec![("mode", "\"column\""), ("updated_column", "\"ts\"")];
    let trigger = vec![("mode", "\"trigger\"")];
    match key {
        "updated_column" => Some((
            vec![("mode", "\"column\"")],
            "\"ts\"".into(),
            "\"at\"".into(),
        )),
        "overlap_secs" if sql => Some((column, "9".into(), "10".into())),
        "changelog_table" => Some((trigger, "\"log_a\"".into(), "\"log_b\"".into())),
        "settle_secs" => Some((trigger, "9".into(), "10".into())),
        "mode" => s("\"trigger\"", "\"scan\""),
        "key" => s("[\"code\"]", "[\"a\", \"b\"]"),
        "types" => s("{ n = \"int\" }", "{ n = \"date\" }"),
        "write_mode" => s("\"append\"", "\"rewrite\""),
        "delimiter" => s("\";\"", "\"|\""),
        "require_final_newline" | "allow_short_rows" => s("true", "false"),
        "jwt_audience" => s("\"https://test.salesforce.com\"", "\"https://x\""),
        "ca_cert" => s("\"ca.pem\"", "\"/etc/ca.pem\""),
        "api_version" => s("\"60.0\"", "\"61.0\""),
        "max_limit_share" => s("0.5", "0.6"),
        "naive_utc_offset_minutes" => s("60", "-60"),
        "subject" => s("\"x.y\"", "\"x.z\""),
        "dir" => s("\"d1\"", "\"d2\""),
        "max_retries"
        | "request_timeout_secs"
        | "bulk_timeout_secs"
        | "in_flight_secs"
        | "overlap_secs"
        | "page_size"
        | "bulk_threshold"
        | "bulk_read_threshold" => s("300", "400"),
        "children" => s(
            "[{ relationship = \"Contacts\", fields = [\"LastName\"] }]",
            "[{ relationship = \"Contacts\", fields = [\"Email\"] }]",
        ),
        k if k.ends_with("_env") => s("\"A\"", "\"B\""),
        "object" | "table" | "file" | "schema" | "entity_id_field" | "stream" | "push_topic" => {
            s("\"Aa\"", "\"Bb\"")
        }
        _ => None,
    }
}

fn table(lines: &BTreeMap<&str, String>) -> String {
    lines.iter().map(|(k, v)| format!("{k} = {v}\n")).collect()
}

/// A migrate job from a CSV file to system `x` of kind `kind`, with `system` and `side` as
/// `x`'s tables.
fn config_text(kind: &str, system: &str, side: &str) -> String {
    format!(
        "[systems.src]\ntype = \"csv\"\ndir = \"in\"\n\
         [systems.x]\ntype = \"{kind}\"\n{system}\
         [jobs.j]\npattern = \"migrate\"\nsystems = [\"src\", \"x\"]\n\
         [jobs.j.sides.src]\nfile = \"a.csv\"\nkey = [\"id\"]\nfields = {{ id = \"id\", n = \"n\" }}\n\
         [jobs.j.sides.x]\n{side}\
         [jobs.j.sides.x.fields]\nid = \"id\"\nn = \"n\"\n"
    )
}

fn parse(text: &str) -> Result<Config, String> {
    Config::parse(text, Path::new("/cfg/concord.toml")).map_err(|e| e.to_string())
}

/// What the connector of side `x` runs with, as text (its runtime config, built the way a job
/// builds it).
fn runtime(cfg: &Config) -> String {
    let side = &cfg.jobs["j"].sides["x"];
    let fields = vec!["id".to_string(), "n".to_string()];
    match (&cfg.systems["x"], &side.options) {
        (SystemConfig::Salesforce(s), SideOptions::Salesforce(o)) => format!(
            "{:?}",
            SalesforceConfig::from_parts(s, o, fields, &cfg.base_dir)
        ),
        (
            SystemConfig::Postgres(s) | SystemConfig::Mysql(s) | SystemConfig::Sqlite(s),
            SideOptions::Sql(o),
        ) => format!("{:?}", SqlTableConfig::from_parts(s, o, fields)),
        (SystemConfig::Csv(s), SideOptions::Files(o)) => format!(
            "{:?}",
            FileConfig::from_parts(FilesSystem::Csv(s), o, fields, &cfg.base_dir)
        ),
        (SystemConfig::Jsonl(s), SideOptions::Files(o)) => format!(
            "{:?}",
            FileConfig::from_parts(FilesSystem::Jsonl(s), o, fields, &cfg.base_dir)
        ),
        (SystemConfig::Nats(s), SideOptions::Nats(o)) => format!("{s:?} {o:?}"),
        other => panic!("side parsed as another kind: {other:?}"),
    }
}

#[test]
fn every_documented_option_is_settable_and_reaches_the_connector() {
    let mut checked = 0;
    for k in &KINDS {
        for (on_system, keys) in [(true, system_keys(k)), (false, side_keys(k))] {
            for key in keys {
                let (needs, a, b) = sample(k.kind, &key)
                    .unwrap_or_else(|| panic!("{}: no sample value for `{key}`", k.doc));
                let with = |v: &str| {
                    let mut system: BTreeMap<&str, String> =
                        k.system.iter().map(|(k, v)| (*k, v.to_string())).collect();
                    let mut side: BTreeMap<&str, String> =
                        k.side.iter().map(|(k, v)| (*k, v.to_string())).collect();
                    let at = if on_system { &mut system } else { &mut side };
                    for (n, v) in &needs {
                        at.insert(n, v.to_string());
                    }
                    at.insert(key.as_str(), v.to_string());
                    let text = config_text(k.kind, &table(&system), &table(&side));
                    let cfg = parse(&text).unwrap_or_else(|e| {
                        panic!("{} `{key}` = {v} is refused: {e}\n{text}", k.kind)
                    });
                    runtime(&cfg)
                };
                assert_ne!(
                    with(&a),
                    with(&b),
                    "{}: `{key}` does not reach the connector",
                    k.kind
                );
                checked += 1;
            }
        }
    }
    println!("{checked} documented options set and seen in the connector's config");
    assert!(checked >= 60, "only {checked} options checked");
}

/// The 1-based line of the first line of `text` that starts with `prefix`.
fn line_of(text: &str, prefix: &str) -> usize {
    let lines: Vec<&str> = text.lines().collect();
    lines.iter().rposition(|l| l.starts_with(prefix)).unwrap() + 1
}

#[test]
fn an_option_of_another_kind_is_an_error_naming_its_path_and_line() {
    let mut refused = 0;
    for k in &KINDS {
        let (own_system, own_side) = (system_keys(k), side_keys(k));
        for other in &KINDS {
            for (on_system, keys) in [(true, system_keys(other)), (false, side_keys(other))] {
                for key in keys {
                    let own = if on_system { &own_system } else { &own_side };
                    if own.contains(&key) {
                        continue;
                    }
                    let (_, v, _) = sample(other.kind, &key).unwrap();
                    let mut system =
                        table(&k.system.iter().map(|(k, v)| (*k, v.to_string())).collect());
                    let mut side =
                        table(&k.side.iter().map(|(k, v)| (*k, v.to_string())).collect());
                    let line = format!("{key} = {v}\n");
                    if on_system {
                        system.push_str(&line);
                    } else {
                        side.push_str(&line);
                    }
                    let text = config_text(k.kind, &system, &side);
                    let err = parse(&text).expect_err(&format!(
                        "`{key}` of a {} {} is accepted on a {}",
                        other.kind,
                        if on_system { "system" } else { "side" },
                        k.kind
                    ));
                    let place = format!(
                        "/cfg/concord.toml:{}:",
                        line_of(&text, &format!("{key} = "))
                    );
                    let path = if on_system {
                        "systems.x"
                    } else {
                        "jobs.j.sides.x"
                    };
                    assert!(
                        err.starts_with(&place) && err.contains(path) && err.contains(&key),
                        "{}: `{key}`: want {place} {path} and the key, got: {err}",
                        k.kind
                    );
                    refused += 1;
                }
            }
        }
    }
    println!("{refused} misplaced options refused at their line");
    assert!(refused > 100, "only {refused} misplaced options tried");
}

#[test]
fn sql_options_of_another_capture_mode_are_errors() {
    let cases = [
        (
            "mode = \"scan\"\nupdated_column = \"ts\"\n",
            "updated_column",
        ),
        (
            "mode = \"trigger\"\nupdated_column = \"ts\"\n",
            "updated_column",
        ),
        ("updated_column = \"ts\"\n", "updated_column"),
        ("mode = \"column\"\n", "updated_column"),
        ("overlap_secs = 60\n", "overlap_secs"),
        ("mode = \"trigger\"\noverlap_secs = 60\n", "overlap_secs"),
        ("changelog_table = \"log\"\n", "changelog_table"),
        (
            "mode = \"column\"\nupdated_column = \"ts\"\nsettle_secs = 5\n",
            "settle_secs",
        ),
        ("key = []\n", "key"),
    ];
    for (extra, key) in cases {
        let side = format!(
            "table = \"t\"\n{}{extra}",
            if extra.starts_with("key") {
                ""
            } else {
                "key = [\"id\"]\n"
            }
        );
        let text = config_text("postgres", "url_env = \"U\"\n", &side);
        let err = parse(&text).expect_err(&format!("accepted:\n{extra}"));
        let place = format!("/cfg/concord.toml:{}:", line_of(&text, "[jobs.j.sides.x]"));
        assert!(
            err.starts_with(&place)
                && err.contains("jobs.j.sides.x")
                && err.contains(&format!("`{key}`")),
            "{extra}: want {place}, the side's path and `{key}`, got: {err}"
        );
    }
}

/// `concord setup --changelog NAME` makes a change log of another name; before, no job could
/// read it (`changelog_table` was refused in a job's side). Now a trigger-mode job reads it,
/// deletes included.
#[tokio::test]
async fn a_job_reads_a_change_log_of_its_own_name() {
    use concord::connector::sql::{CaptureMode, SqlConnector};
    use concord::model::{InstanceId, SystemId};
    use concord::store::{MemoryStore, StateStore};
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let url = format!("sqlite:{}?mode=rwc", d.join("erp.db").display());
    let env = format!("CONCORD_TEST_CHANGELOG_URL_{}", std::process::id());
    // SAFETY of set_var: this test's own variable, set before anything reads it.
    unsafe { std::env::set_var(&env, &url) };
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE items (id integer primary key, name text)")
        .execute(&pool)
        .await
        .unwrap();
    let mut t = SqlTableConfig::new(&env, "items", &["id"]);
    t.mode = CaptureMode::Trigger;
    t.changelog_table = "erp_log".into();
    SqlConnector::connect(SystemId::new("erp").unwrap(), t)
        .await
        .unwrap()
        .setup()
        .await
        .unwrap();
    sqlx::query("INSERT INTO items VALUES (1, 'Chai'), (2, 'Chang'), (3, 'Tofu')")
        .execute(&pool)
        .await
        .unwrap();
    let text = format!(
        "[systems.erp]\ntype = \"sqlite\"\nurl_env = \"{env}\"\n\
         [systems.out]\ntype = \"jsonl\"\ndir = \"out\"\n\
         [jobs.items]\npattern = \"migrate\"\nsystems = [\"erp\", \"out\"]\nmax_delete_share = 1\n\
         [jobs.items.sides.erp]\ntable = \"items\"\nkey = [\"id\"]\nmode = \"trigger\"\n\
         changelog_table = \"erp_log\"\nfields = {{ id = \"id\", name = \"name\" }}\n\
         [jobs.items.sides.out]\nfile = \"items.jsonl\"\nkey = [\"id\"]\n\
         fields = {{ id = \"id\", name = \"name\" }}\n"
    );
    let cfg = Config::parse(&text, &d.join("concord.toml")).unwrap();
    let state = StateStore::open(
        std::sync::Arc::new(MemoryStore::new()),
        InstanceId::new("main").unwrap(),
    )
    .unwrap();
    let engine = concord::engine::Engine::new(state.clone());
    let lines = || {
        std::fs::read_to_string(d.join("out/items.jsonl"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    let pass = || async {
        let j = concord::engine::build::build_job(&cfg, "items", &state, false)
            .await
            .unwrap();
        let r = engine.sync(&j, None).await.unwrap();
        assert!(r.errors.is_empty(), "{:?}", r.errors);
    };
    pass().await;
    assert_eq!(lines(), 3);
    sqlx::query("DELETE FROM items WHERE id = 2")
        .execute(&pool)
        .await
        .unwrap();
    pass().await;
    assert_eq!(
        lines(),
        2,
        "the delete logged in erp_log did not reach the file"
    );
}

#[test]
fn a_system_without_a_text_type_is_an_error_at_its_place() {
    let base = config_text(
        "csv",
        "dir = \"out\"\n",
        "file = \"b.csv\"\nkey = [\"id\"]\n",
    );
    let no_type = base.replace("[systems.x]\ntype = \"csv\"\n", "[systems.x]\n");
    let err = parse(&no_type).unwrap_err();
    assert!(
        err.contains("systems.x") && err.contains("missing field `type`"),
        "{err}"
    );
    let number = base.replace("type = \"csv\"\ndir = \"out\"", "type = 5\ndir = \"out\"");
    let err = parse(&number).unwrap_err();
    let line = line_of(&number, "type = 5");
    assert!(
        err.starts_with(&format!("/cfg/concord.toml:{line}:")) && err.contains("systems.x"),
        "{err}"
    );
    let unknown = base.replace("type = \"csv\"\ndir", "type = \"excel\"\ndir");
    let err = parse(&unknown).unwrap_err();
    assert!(err.contains("unknown variant `excel`"), "{err}");
}

#[test]
fn chunk_and_cache_sizes_are_read_and_a_zero_chunk_is_refused_at_its_path() {
    let base = config_text(
        "csv",
        "dir = \"out\"\n",
        "file = \"b.csv\"\nkey = [\"id\"]\n",
    );
    let cfg = parse(&base).unwrap();
    assert_eq!(cfg.jobs["j"].chunk_size, concord::engine::DEFAULT_CHUNK);
    assert_eq!(cfg.store.cache_mb, 256);
    let text = base.replace(
        "pattern = \"migrate\"\n",
        "pattern = \"migrate\"\nchunk_size = 500\n",
    );
    assert_eq!(parse(&text).unwrap().jobs["j"].chunk_size, 500);
    let text = format!("[store]\ncache_mb = 64\n{base}");
    assert_eq!(parse(&text).unwrap().store.cache_mb, 64);
    let text = base.replace(
        "pattern = \"migrate\"\n",
        "pattern = \"migrate\"\nchunk_size = 0\n",
    );
    let err = parse(&text).unwrap_err();
    assert!(
        err.contains("jobs.j.chunk_size") && err.contains("at least 1"),
        "{err}"
    );
}
