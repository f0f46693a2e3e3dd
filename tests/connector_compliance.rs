//! Runs the compliance suite (tests/compliance) against the real PostgreSQL and MariaDB on this
//! machine, against SQLite, and (the scenarios that apply to files) against CSV and JSONL files.
//! The Salesforce connector runs the same scenarios against the sandbox in
//! tests/salesforce_connector.rs (read all, changes since a cursor, batch write, delete, own
//! writes not read back, restart from a saved cursor, many records sharing one SystemModstamp,
//! a late commit behind the watermark, unreachable system and bad credentials).

use crate::compliance;
use compliance::*;

macro_rules! suite {
    ($modname:ident, $kind:expr) => {
        mod $modname {
            use super::*;
            #[tokio::test]
            async fn read_all() {
                read_all_pages($kind).await
            }
            #[tokio::test]
            async fn write_update_delete_batch() {
                write_update_delete($kind).await
            }
            #[tokio::test]
            async fn own_writes_are_not_read_back_as_changes() {
                own_writes_are_not_changes($kind).await
            }
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

suite!(postgres, Kind::Postgres);
suite!(mariadb, Kind::MariaDb);
suite!(sqlite, Kind::Sqlite);

#[tokio::test]
async fn postgres_trigger_mode_late_commit_is_not_skipped() {
    trigger_mode_late_commit_postgres().await
}

/// The files connector runs the scenarios that apply to a file (it is always read whole: no
/// cursor, column or trigger modes).
macro_rules! file_suite {
    ($modname:ident, $kind:expr) => {
        mod $modname {
            use super::*;
            #[tokio::test]
            async fn read_all() {
                read_all_pages($kind).await
            }
            #[tokio::test]
            async fn write_update_delete_batch() {
                write_update_delete($kind).await
            }
            #[tokio::test]
            async fn own_writes_are_not_read_back_as_changes() {
                own_writes_are_not_changes($kind).await
            }
            #[tokio::test]
            async fn errors_name_file_and_line() {
                file_errors($kind).await
            }
        }
    };
}

file_suite!(csv, Kind::Csv);
file_suite!(jsonl, Kind::Jsonl);
