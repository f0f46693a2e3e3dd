//! `setup` / `teardown` for `mode = "trigger"`: the change-log table and one trigger set per
//! mapped table. Identifiers are quoted and the one string literal (the table name) is escaped;
//! no value from a record ever reaches this DDL.

use super::client::{Dialect, Tx};
use super::SqlConnector;
use crate::Connector;
use crate::ConnectorError;

/// The name part used for concord's trigger and function names for `table`.
fn slug(table: &str) -> String {
    table
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl SqlConnector {
    fn qualified(&self, name: &str) -> String {
        let d = self.dialect();
        match (&self.config().schema, d) {
            (Some(s), Dialect::Postgres | Dialect::MySql) => {
                format!("{}.{}", d.quote(s), d.quote(name))
            }
            _ => d.quote(name),
        }
    }

    fn bad_config(&self, message: impl Into<String>) -> ConnectorError {
        ConnectorError {
            system: self.system().to_string(),
            object: self.config().table.clone(),
            message: message.into(),
            retryable: false,
        }
    }

    /// The quoted change-log table.
    pub fn changelog_ref(&self) -> String {
        self.qualified(&self.config().changelog_table)
    }

    fn trigger_names(&self) -> Vec<String> {
        let base = format!("concord_{}", slug(&self.config().table));
        match self.dialect() {
            Dialect::Postgres => vec![base],
            _ => vec![
                format!("{base}_ai"),
                format!("{base}_au"),
                format!("{base}_ad"),
            ],
        }
    }

    /// The statements `setup` runs, in order (also shown by `concord setup --dry-run`).
    pub fn setup_sql(&self) -> Vec<String> {
        let d = self.dialect();
        let log = self.changelog_ref();
        let t = self.table_ref();
        let tname = literal(&self.config().table);
        let keys: Vec<String> = self.key_cols().iter().map(|c| d.quote(&c.name)).collect();
        let names = self.trigger_names();
        match d {
            Dialect::Postgres => {
                let func = self.qualified(&format!("concord_log_{}", slug(&self.config().table)));
                let arr = |row: &str| {
                    let parts: Vec<String> =
                        keys.iter().map(|k| format!("{row}.{k}::text")).collect();
                    format!("jsonb_build_array({})", parts.join(", "))
                };
                let old_k: Vec<String> = keys.iter().map(|k| format!("OLD.{k}")).collect();
                let new_k: Vec<String> = keys.iter().map(|k| format!("NEW.{k}")).collect();
                vec![
                    format!(
                        "CREATE TABLE IF NOT EXISTS {log} (seq bigserial PRIMARY KEY, tbl text NOT NULL, \
                         op char(1) NOT NULL, pk jsonb NOT NULL, at timestamptz NOT NULL DEFAULT clock_timestamp(), \
                         txid bigint NOT NULL DEFAULT txid_current())"
                    ),
                    format!(
                        "CREATE INDEX IF NOT EXISTS {} ON {log} (tbl, seq)",
                        d.quote(&format!("{}_tbl_seq", self.config().changelog_table))
                    ),
                    format!(
                        "CREATE OR REPLACE FUNCTION {func}() RETURNS trigger LANGUAGE plpgsql AS $concord$\n\
                         BEGIN\n\
                           IF coalesce(current_setting('concord.writer', true), '') = 'on' THEN RETURN NULL; END IF;\n\
                           IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND ({old}) IS DISTINCT FROM ({new})) THEN\n\
                             INSERT INTO {log} (tbl, op, pk) VALUES ({tname}, 'D', {old_arr});\n\
                           END IF;\n\
                           IF TG_OP IN ('INSERT', 'UPDATE') THEN\n\
                             INSERT INTO {log} (tbl, op, pk) VALUES ({tname}, left(TG_OP, 1), {new_arr});\n\
                           END IF;\n\
                           PERFORM pg_notify('concord_changes', {tname});\n\
                           RETURN NULL;\n\
                         END $concord$",
                        old = old_k.join(", "),
                        new = new_k.join(", "),
                        old_arr = arr("OLD"),
                        new_arr = arr("NEW"),
                    ),
                    format!("DROP TRIGGER IF EXISTS {} ON {t}", d.quote(&names[0])),
                    format!(
                        "CREATE TRIGGER {} AFTER INSERT OR UPDATE OR DELETE ON {t} FOR EACH ROW EXECUTE FUNCTION {func}()",
                        d.quote(&names[0])
                    ),
                ]
            }
            Dialect::MySql => {
                let arr = |row: &str| {
                    let parts: Vec<String> = keys
                        .iter()
                        .map(|k| format!("CAST({row}.{k} AS CHAR)"))
                        .collect();
                    format!("JSON_ARRAY({})", parts.join(", "))
                };
                let changed: Vec<String> = keys
                    .iter()
                    .map(|k| format!("NOT (OLD.{k} <=> NEW.{k})"))
                    .collect();
                let ins = |op: &str, row: &str| {
                    format!(
                        "INSERT INTO {log} (tbl, op, pk) VALUES ({tname}, '{op}', {})",
                        arr(row)
                    )
                };
                vec![
                    format!(
                        "CREATE TABLE IF NOT EXISTS {log} (seq BIGINT AUTO_INCREMENT PRIMARY KEY, tbl VARCHAR(191) NOT NULL, \
                         op CHAR(1) NOT NULL, pk TEXT NOT NULL, at TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3), \
                         KEY concord_tbl_seq (tbl, seq))"
                    ),
                    format!(
                        "CREATE OR REPLACE TRIGGER {} AFTER INSERT ON {t} FOR EACH ROW BEGIN \
                         IF @concord_writer IS NULL THEN {}; END IF; END",
                        d.quote(&names[0]),
                        ins("I", "NEW")
                    ),
                    format!(
                        "CREATE OR REPLACE TRIGGER {} AFTER UPDATE ON {t} FOR EACH ROW BEGIN \
                         IF @concord_writer IS NULL THEN \
                           IF {} THEN {}; END IF; \
                           {}; \
                         END IF; END",
                        d.quote(&names[1]),
                        changed.join(" OR "),
                        ins("D", "OLD"),
                        ins("U", "NEW")
                    ),
                    format!(
                        "CREATE OR REPLACE TRIGGER {} AFTER DELETE ON {t} FOR EACH ROW BEGIN \
                         IF @concord_writer IS NULL THEN {}; END IF; END",
                        d.quote(&names[2]),
                        ins("D", "OLD")
                    ),
                ]
            }
            Dialect::Sqlite => {
                let arr = |row: &str| {
                    let parts: Vec<String> = keys
                        .iter()
                        .map(|k| format!("CAST({row}.{k} AS TEXT)"))
                        .collect();
                    format!("json_array({})", parts.join(", "))
                };
                let changed: Vec<String> = keys
                    .iter()
                    .map(|k| format!("OLD.{k} IS NOT NEW.{k}"))
                    .collect();
                let guard = "NOT EXISTS (SELECT 1 FROM concord_writer)";
                let ins = |op: &str, row: &str| {
                    format!(
                        "INSERT INTO {log} (tbl, op, pk) VALUES ({tname}, '{op}', {});",
                        arr(row)
                    )
                };
                vec![
                    format!(
                        "CREATE TABLE IF NOT EXISTS {log} (seq INTEGER PRIMARY KEY AUTOINCREMENT, tbl TEXT NOT NULL, \
                         op TEXT NOT NULL, pk TEXT NOT NULL, at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')))"
                    ),
                    "CREATE TABLE IF NOT EXISTS concord_writer (id INTEGER PRIMARY KEY)".into(),
                    format!(
                        "CREATE TRIGGER IF NOT EXISTS {} AFTER INSERT ON {t} WHEN {guard} BEGIN {} END",
                        d.quote(&names[0]),
                        ins("I", "NEW")
                    ),
                    format!(
                        "CREATE TRIGGER IF NOT EXISTS {} AFTER UPDATE ON {t} WHEN {guard} BEGIN \
                         INSERT INTO {log} (tbl, op, pk) SELECT {tname}, 'D', {} WHERE {}; {} END",
                        d.quote(&names[1]),
                        arr("OLD"),
                        changed.join(" OR "),
                        ins("U", "NEW")
                    ),
                    format!(
                        "CREATE TRIGGER IF NOT EXISTS {} AFTER DELETE ON {t} WHEN {guard} BEGIN {} END",
                        d.quote(&names[2]),
                        ins("D", "OLD")
                    ),
                ]
            }
        }
    }

    /// Installs the change log and the triggers. Idempotent.
    pub async fn setup(&self) -> Result<(), ConnectorError> {
        let mut tx = self.pool().begin().await.map_err(|e| self.error(&e))?;
        for sql in self.setup_sql() {
            tx.execute(&sql, &[]).await.map_err(|e| self.error(&e))?;
        }
        tx.commit().await.map_err(|e| self.error(&e))
    }

    /// Removes this table's triggers (and function), and the change-log table once no concord
    /// trigger uses it any more. Removes nothing `setup` did not install.
    pub async fn teardown(&self) -> Result<(), ConnectorError> {
        let d = self.dialect();
        let t = self.table_ref();
        let mut stmts: Vec<String> = Vec::new();
        for n in self.trigger_names() {
            stmts.push(match d {
                Dialect::Postgres => format!("DROP TRIGGER IF EXISTS {} ON {t}", d.quote(&n)),
                _ => format!("DROP TRIGGER IF EXISTS {}", d.quote(&n)),
            });
        }
        if d == Dialect::Postgres {
            let func = self.qualified(&format!("concord_log_{}", slug(&self.config().table)));
            stmts.push(format!("DROP FUNCTION IF EXISTS {func}()"));
        }
        let tname = literal(&self.config().table);
        stmts.push(format!(
            "DELETE FROM {} WHERE tbl = {tname}",
            self.changelog_ref()
        ));
        let mut tx = self.pool().begin().await.map_err(|e| self.error(&e))?;
        for sql in &stmts {
            // The log may not exist (teardown without setup): dropping triggers is still done.
            if let Err(e) = tx.execute(sql, &[]).await {
                if sql.starts_with("DELETE") {
                    continue;
                }
                return Err(self.error(&e));
            }
        }
        tx.commit().await.map_err(|e| self.error(&e))?;
        // Drop the log (and SQLite's writer flag table) when no concord trigger remains.
        let remaining = self.concord_triggers().await?;
        if remaining == 0 {
            let mut tx = self.pool().begin().await.map_err(|e| self.error(&e))?;
            tx.execute(
                &format!("DROP TABLE IF EXISTS {}", self.changelog_ref()),
                &[],
            )
            .await
            .map_err(|e| self.error(&e))?;
            if d == Dialect::Sqlite {
                tx.execute("DROP TABLE IF EXISTS concord_writer", &[])
                    .await
                    .map_err(|e| self.error(&e))?;
            }
            tx.commit().await.map_err(|e| self.error(&e))?;
        }
        Ok(())
    }

    /// How many concord triggers (PostgreSQL: trigger functions) still write to this change log.
    async fn concord_triggers(&self) -> Result<i64, ConnectorError> {
        use super::client::Param;
        let d = self.dialect();
        // The log's quoted name as it appears in the trigger bodies `setup` wrote.
        let pattern = format!("%{}%", d.quote(&self.config().changelog_table));
        let schema = self
            .config()
            .schema
            .clone()
            .map_or(Param::Null, Param::Text);
        let (sql, params) = match d {
            Dialect::Postgres => (
                "SELECT COUNT(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                 WHERE p.proname LIKE 'concord\\_log\\_%' AND n.nspname = COALESCE($1, current_schema()) \
                 AND p.prosrc LIKE $2",
                vec![schema, Param::Text(pattern)],
            ),
            Dialect::MySql => (
                "SELECT COUNT(*) FROM information_schema.triggers WHERE trigger_name LIKE 'concord\\_%' \
                 AND trigger_schema = COALESCE(?, DATABASE()) AND action_statement LIKE ?",
                vec![schema, Param::Text(pattern)],
            ),
            Dialect::Sqlite => (
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'trigger' AND name LIKE 'concord\\_%' ESCAPE '\\' \
                 AND sql LIKE ?",
                vec![Param::Text(pattern)],
            ),
        };
        let rows = self
            .pool()
            .fetch(sql, &params)
            .await
            .map_err(|e| self.error(&e))?;
        super::decode::first_i64(&rows).map_err(|e| self.bad_config(e))
    }

    /// Trigger mode on PostgreSQL: waits until the triggers announce a change of this table
    /// (`NOTIFY concord_changes`) or `timeout` passes. Returns whether a change was announced.
    /// Other databases have no notifications: it sleeps for `timeout` and returns false, and a
    /// watching engine polls.
    pub async fn wait_for_change(
        &self,
        timeout: std::time::Duration,
    ) -> Result<bool, ConnectorError> {
        let Some(mut feed) = self.change_feed().await? else {
            tokio::time::sleep(timeout).await;
            return Ok(false);
        };
        Ok(matches!(
            tokio::time::timeout(timeout, feed.recv()).await,
            Ok(Some(()))
        ))
    }

    /// The announcements of this table's changes on PostgreSQL (`LISTEN concord_changes`,
    /// payload: the table), forwarded by a task that owns the listener; `None` on other
    /// databases. When the connection is lost the listener makes it again and the feed sends
    /// one message (announcements made meanwhile are lost: a pass then looks); it ends when
    /// listening fails or the receiver is dropped.
    pub(crate) async fn change_feed(&self) -> Result<Option<crate::ChangeFeed>, ConnectorError> {
        let super::client::Pool::Pg(pool) = self.pool() else {
            return Ok(None);
        };
        let mut listener = sqlx::postgres::PgListener::connect_with(pool)
            .await
            .map_err(|e| self.error(&e))?;
        listener
            .listen("concord_changes")
            .await
            .map_err(|e| self.error(&e))?;
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let table = self.config().table.clone();
        tokio::spawn(async move {
            loop {
                let got = tokio::select! {
                    _ = tx.closed() => return,
                    got = listener.try_recv() => got,
                };
                let hint = match got {
                    Ok(Some(n)) => n.payload() == table,
                    // The connection was lost; the next call connects again.
                    Ok(None) => true,
                    Err(e) => {
                        tracing::warn!(table = %table, error = %e, "change feed: listening failed; back to polling");
                        return;
                    }
                };
                if hint {
                    match tx.try_send(()) {
                        // A full channel already says "look": one message is enough.
                        Ok(()) | Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {}
                        Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => return,
                    }
                }
            }
        });
        Ok(Some(crate::ChangeFeed::new(rx)))
    }

    /// Marks the write transaction as concord's, so the triggers do not log it.
    pub(crate) async fn mark_writer(&self, tx: &mut Tx, on: bool) -> Result<(), sqlx::Error> {
        if self.config().mode != super::CaptureMode::Trigger {
            return Ok(());
        }
        let sql = match (self.dialect(), on) {
            (Dialect::Postgres, true) => "SELECT set_config('concord.writer', 'on', true)",
            (Dialect::Postgres, false) => return Ok(()), // local to the transaction
            (Dialect::MySql, true) => "SET @concord_writer = 1",
            (Dialect::MySql, false) => "SET @concord_writer = NULL",
            (Dialect::Sqlite, true) => "INSERT OR IGNORE INTO concord_writer (id) VALUES (1)",
            (Dialect::Sqlite, false) => "DELETE FROM concord_writer",
        };
        tx.execute(sql, &[]).await.map(|_| ())
    }
}
