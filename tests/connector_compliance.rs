//! The connector compliance suite (tests/compliance): every connector runs the contract's
//! scenarios (`compliance::subject`) on a subject of its own — the real PostgreSQL and MariaDB
//! on this machine, SQLite, CSV and JSONL files, a memory table, Account in the Salesforce
//! sandbox, and (the destination scenarios) a JetStream stream. SQL tables also run the
//! scenarios only they have: capture modes, change logs, types, composite keys, errors.
//! A new connector joins by implementing `Subject` and adding one `contract!` line here.

use crate::compliance;
use compliance::subject::{self, Subject};
use compliance::subjects;
use compliance::*;

/// One test per scenario for the subject `make` builds (`None`: its server is unreachable and
/// not required; the reason is printed).
macro_rules! contract {
    ($modname:ident, $make:expr, [$($scenario:ident),* $(,)?]) => {
        mod $modname {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $scenario() {
                    if let Some(s) = ($make)(stringify!($scenario)).await {
                        subject::$scenario(s.as_ref()).await;
                        s.finish().await;
                    }
                }
            )*
        }
    };
}

/// Every scenario of the contract: for connectors that read and write.
macro_rules! full_contract {
    ($modname:ident, $make:expr) => {
        contract!(
            $modname,
            $make,
            [
                reads_every_record,
                writes_creates_updates_and_deletes,
                own_writes_are_not_read_back_as_changes,
                a_restart_from_a_saved_cursor_loses_and_repeats_nothing,
                a_destination_holds_what_the_source_holds,
            ]
        );
    };
}

async fn table(kind: Kind, scenario: &str) -> Option<Box<dyn Subject>> {
    // Table names stay short (MariaDB: 64 characters): the scenario's initials.
    let tag: String = scenario
        .split('_')
        .filter_map(|w| w.chars().next())
        .collect();
    Table::new(kind, &tag)
        .await
        .map(|t| Box::new(t) as Box<dyn Subject>)
}

full_contract!(postgres, |s| table(Kind::Postgres, s));
full_contract!(mariadb, |s| table(Kind::MariaDb, s));
full_contract!(sqlite, |s| table(Kind::Sqlite, s));
full_contract!(csv, |s| table(Kind::Csv, s));
full_contract!(jsonl, |s| table(Kind::Jsonl, s));
full_contract!(memory, |_: &'static str| async {
    Some(Box::new(subjects::Memory::new()) as Box<dyn Subject>)
});
full_contract!(salesforce, |_: &'static str| async {
    Some(Box::new(subjects::Salesforce::new().await) as Box<dyn Subject>)
});
// A destination only: the write and destination scenarios.
contract!(
    nats,
    |_: &'static str| async {
        subjects::Nats::new()
            .await
            .map(|n| Box::new(n) as Box<dyn Subject>)
    },
    [
        writes_creates_updates_and_deletes,
        a_destination_holds_what_the_source_holds,
    ]
);

/// The scenarios only SQL tables have.
macro_rules! sql_suite {
    ($modname:ident, $kind:expr) => {
        mod $modname {
            use super::*;
            #[tokio::test]
            async fn column_mode_ties_late_commits_and_restart() {
                column_mode_cursor_ties_late_commits_restart($kind).await
            }
            #[tokio::test]
            async fn column_mode_quiet_table_is_not_reread() {
                compliance::column_mode_quiet_table_is_not_reread($kind).await
            }
            #[tokio::test]
            async fn column_mode_engine_repeats_nothing() {
                column_mode_through_the_engine_repeats_nothing($kind).await
            }
            #[tokio::test]
            async fn composite_keys_create_update_delete() {
                composite_keys($kind).await
            }
            #[tokio::test]
            async fn large_batches_of_updates_and_deletes() {
                compliance::large_batches_of_updates_and_deletes($kind).await
            }
            #[tokio::test]
            async fn bulk_creates_round_trip() {
                compliance::bulk_creates_round_trip($kind).await
            }
            #[tokio::test]
            async fn every_type_round_trips() {
                types_round_trip($kind).await
            }
            #[tokio::test]
            async fn trigger_mode_captures_inserts_updates_deletes() {
                trigger_mode_captures_everything($kind).await
            }
            #[tokio::test]
            async fn trigger_mode_engine() {
                trigger_mode_through_the_engine($kind).await
            }
            #[tokio::test]
            async fn errors_name_system_and_object() {
                clear_errors($kind).await
            }
        }
    };
}

sql_suite!(postgres_sql, Kind::Postgres);
sql_suite!(mariadb_sql, Kind::MariaDb);
sql_suite!(sqlite_sql, Kind::Sqlite);

#[tokio::test]
async fn postgres_trigger_mode_late_commit_is_not_skipped() {
    trigger_mode_late_commit_postgres().await
}

/// Files are always read whole: their own scenario is malformed input.
#[tokio::test]
async fn csv_errors_name_file_and_line() {
    file_errors(Kind::Csv).await
}

#[tokio::test]
async fn jsonl_errors_name_file_and_line() {
    file_errors(Kind::Jsonl).await
}
