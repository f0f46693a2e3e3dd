//! The capture modes' page reads: `scan` (paged by key, complete), `column` (an updated-at
//! column with a compound cursor and an overlap window) and `trigger` (the change log by
//! sequence), and point reads by key.

use super::*;
use client::Param;
use concord_model::model::Fields;

impl SqlConnector {
    pub(super) fn page_size(&self) -> usize {
        self.cfg.batch_size.clamp(1, 100_000)
    }

    /// One page's statement run and its rows decoded as `cols`; whether a full page came back
    /// (there may be more).
    async fn fetch_page(
        &self,
        sql: &str,
        params: &[Param],
        cols: &[Column],
    ) -> Result<(Vec<Fields>, bool), ConnectorError> {
        let rows = self
            .pool
            .fetch(sql, params)
            .await
            .map_err(|e| self.error(&e))?;
        let decoded = decode(&rows, cols, self.offset).map_err(|e| self.bad(e))?;
        let more = decoded.len() == self.page_size();
        Ok((decoded, more))
    }

    pub(super) async fn read_scan(&self, cursor: Cursor) -> Result<ReadPage, ConnectorError> {
        self.read_scan_with(cursor, &[]).await
    }

    /// A scan page; `extra` (expression, column) are selected too and come back as fields of
    /// those column names (the caller takes them out).
    pub(crate) async fn read_scan_with(
        &self,
        cursor: Cursor,
        extra: &[(String, Column)],
    ) -> Result<ReadPage, ConnectorError> {
        let d = self.dialect();
        let mut list: Vec<String> = self.columns.iter().map(|c| select_expr(d, c)).collect();
        list.extend(extra.iter().map(|(e, _)| e.clone()));
        let mut cols = self.columns.clone();
        cols.extend(extra.iter().map(|(_, c)| c.clone()));
        let keys: Vec<&Column> = self.key.iter().collect();
        let order: Vec<String> = keys.iter().map(|c| d.quote(&c.name)).collect();
        let mut params = Vec::new();
        let mut sql = format!("SELECT {} FROM {}", list.join(", "), self.table_ref());
        if let Some(after) = &cursor.after_key {
            sql.push_str(&format!(" WHERE {}", tuple_gt(d, &keys, 1)));
            for (c, hex) in keys.iter().zip(after) {
                let v = value_unhex(hex).ok_or_else(|| self.bad("corrupt read cursor"))?;
                params.push(param_for(d, c, Some(&v), self.offset).map_err(|e| self.bad(e))?);
            }
        }
        sql.push_str(&format!(
            " ORDER BY {} LIMIT {}",
            order.join(", "),
            self.page_size()
        ));
        let (decoded, more) = self.fetch_page(&sql, &params, &cols).await?;
        let mut changes = Vec::with_capacity(decoded.len());
        let mut last_key = None;
        for f in decoded {
            let key = row_key(&f, &keys).map_err(|e| self.bad(e))?;
            last_key = Some(
                keys.iter()
                    .map(|c| value_hex(f.get(&c.name).unwrap_or(&Value::Null)))
                    .collect(),
            );
            changes.push(Change {
                key,
                entity_hint: None,
                fields: Some(f),
                modstamp: None,
            });
        }
        let cursor = if more {
            Some(
                serde_json::to_vec(&Cursor {
                    after_key: last_key,
                    ..Cursor::default()
                })
                .expect("cursor serialises"),
            )
        } else {
            None
        };
        Ok(ReadPage {
            changes,
            cursor,
            more,
            complete: true,
        })
    }

    /// Trigger mode. The first read ever scans the table (noting the log's position first, so
    /// nothing written during the scan is missed); later reads consume the change log by sequence
    /// and fetch the current rows of the keys it names (a key with no row is a delete).
    pub(super) async fn read_trigger(&self, cursor: Cursor) -> Result<ReadPage, ConnectorError> {
        if cursor.log_seq.is_none() || cursor.after_key.is_some() {
            let log_seq = match cursor.log_seq {
                Some(s) => s,
                None => self.max_log_seq().await?,
            };
            let mut page = self.read_scan(cursor.clone()).await?;
            let next = match &page.cursor {
                Some(c) => {
                    let mut c: Cursor = serde_json::from_slice(c).expect("own cursor");
                    c.log_seq = Some(log_seq);
                    c.in_read = true;
                    c
                }
                None => Cursor {
                    log_seq: Some(log_seq),
                    ..Cursor::default()
                },
            };
            page.cursor = Some(serde_json::to_vec(&next).expect("cursor serialises"));
            return Ok(page);
        }
        let d = self.dialect();
        let seq = cursor.log_seq.unwrap_or(0);
        let log = self.changelog_ref();
        let tbl = client::Param::Text(self.cfg.table.clone());
        if !cursor.in_read && seq > 0 {
            // Everything up to the checkpointed cursor has been committed by the engine.
            let sql = format!(
                "DELETE FROM {log} WHERE tbl = {} AND seq <= {}",
                decode::ph(d, 1, "text"),
                decode::ph(d, 2, "int8")
            );
            self.pool
                .execute(&sql, &[tbl.clone(), client::Param::Int(seq)])
                .await
                .map_err(|e| self.error(&e))?;
        }
        let page = self.page_size() as i64;
        let (sql, params) = match d {
            Dialect::Postgres => (
                format!(
                    "SELECT seq, pk::text, (txid >= txid_snapshot_xmin(txid_current_snapshot())) FROM {log} \
                     WHERE tbl = $1::text AND seq > $2::int8 ORDER BY seq LIMIT {page}"
                ),
                vec![tbl, client::Param::Int(seq)],
            ),
            Dialect::MySql => (
                format!(
                    "SELECT seq, pk, (at > NOW(3) - INTERVAL ? SECOND) FROM {log} \
                     WHERE tbl = ? AND seq > ? ORDER BY seq LIMIT {page}"
                ),
                vec![client::Param::Int(self.cfg.settle_secs as i64), tbl, client::Param::Int(seq)],
            ),
            Dialect::Sqlite => (
                format!("SELECT seq, pk, 0 FROM {log} WHERE tbl = ? AND seq > ? ORDER BY seq LIMIT {page}"),
                vec![tbl, client::Param::Int(seq)],
            ),
        };
        let rows = self
            .pool
            .fetch(&sql, &params)
            .await
            .map_err(|e| self.error(&e))?;
        let entries = decode::log_entries(&rows).map_err(|e| self.bad(e))?;
        let full = entries.len() as i64 == page;
        let mut next_seq = seq;
        let mut blocked = false;
        let mut keys: Vec<Vec<String>> = Vec::new();
        for (s, pk, unsettled) in entries {
            if unsettled {
                blocked = true;
            }
            if !blocked {
                next_seq = s;
            }
            let parts: Vec<String> = serde_json::from_str(&pk)
                .map_err(|_| self.bad(format!("change log entry {s}: bad key {pk}")))?;
            if !keys.contains(&parts) {
                keys.push(parts);
            }
        }
        let changes = self.fetch_keys(&keys).await?;
        let more = full && !blocked;
        let next = Cursor {
            log_seq: Some(next_seq),
            in_read: more,
            ..Cursor::default()
        };
        Ok(ReadPage {
            changes,
            cursor: Some(serde_json::to_vec(&next).expect("cursor serialises")),
            more,
            complete: false,
        })
    }

    pub(super) async fn max_log_seq(&self) -> Result<i64, ConnectorError> {
        let d = self.dialect();
        let sql = format!(
            "SELECT COALESCE(MAX(seq), 0) FROM {} WHERE tbl = {}",
            self.changelog_ref(),
            decode::ph(d, 1, "text")
        );
        let rows = self
            .pool
            .fetch(&sql, &[client::Param::Text(self.cfg.table.clone())])
            .await
            .map_err(|e| {
                let mut err = self.error(&e);
                err.message = format!(
                    "{} (has `concord setup` been run for this table?)",
                    err.message
                );
                err
            })?;
        decode::first_i64(&rows).map_err(|e| self.bad(e))
    }

    /// The current rows for the given native keys (as key-part strings); keys without a row
    /// come back as deletes.
    pub(super) async fn fetch_keys(
        &self,
        keys: &[Vec<String>],
    ) -> Result<Vec<Change>, ConnectorError> {
        self.fetch_keys_with(keys, &[]).await
    }

    /// `fetch_keys` selecting `extra` (expression, column) too, as in `read_scan_with`.
    pub(crate) async fn fetch_keys_with(
        &self,
        keys: &[Vec<String>],
        extra: &[(String, Column)],
    ) -> Result<Vec<Change>, ConnectorError> {
        let mut cols = self.columns.clone();
        cols.extend(extra.iter().map(|(_, c)| c.clone()));
        let kc: Vec<&Column> = self.key.iter().collect();
        let mut out = Vec::new();
        for chunk in keys.chunks(self.keys_per_select()) {
            let (sql, params, wanted) = self.select_by_keys(chunk, extra, "")?;
            let rows = self
                .pool
                .fetch(&sql, &params)
                .await
                .map_err(|e| self.error(&e))?;
            let found = decode(&rows, &cols, self.offset).map_err(|e| self.bad(e))?;
            let mut present = std::collections::BTreeMap::new();
            for f in found {
                present.insert(row_key(&f, &kc).map_err(|e| self.bad(e))?, f);
            }
            for k in wanted {
                let fields = present.remove(&k);
                out.push(Change {
                    key: k,
                    entity_hint: None,
                    fields,
                    modstamp: None,
                });
            }
        }
        Ok(out)
    }

    /// Keys per [`Self::select_by_keys`] statement.
    pub(crate) fn keys_per_select(&self) -> usize {
        (self.dialect().max_params() / self.key.len().max(1)).clamp(1, 500)
    }

    /// `SELECT <mapped columns, extra> FROM table WHERE key = … OR …` for these keys (as
    /// key-part strings) followed by `suffix` (`FOR UPDATE`); also the keys as the rows will
    /// carry them.
    pub(crate) fn select_by_keys(
        &self,
        keys: &[Vec<String>],
        extra: &[(String, Column)],
        suffix: &str,
    ) -> Result<(String, Vec<client::Param>, Vec<concord_model::model::Key>), ConnectorError> {
        let d = self.dialect();
        let mut list: Vec<String> = self.columns.iter().map(|c| select_expr(d, c)).collect();
        list.extend(extra.iter().map(|(e, _)| e.clone()));
        let (cond, params, wanted) = self.key_condition(keys)?;
        let sql = format!(
            "SELECT {} FROM {} WHERE {cond}{suffix}",
            list.join(", "),
            self.table_ref(),
        );
        Ok((sql, params, wanted))
    }

    /// `(key = … AND …) OR …` for these keys (as key-part strings), its parameters, and the
    /// keys as rows carry them.
    pub(crate) fn key_condition(
        &self,
        keys: &[Vec<String>],
    ) -> Result<(String, Vec<client::Param>, Vec<concord_model::model::Key>), ConnectorError> {
        let d = self.dialect();
        let kc: Vec<&Column> = self.key.iter().collect();
        let mut params = Vec::new();
        let mut ors = Vec::new();
        let mut wanted = Vec::new();
        for parts in keys {
            if parts.len() != kc.len() {
                return Err(self.bad(format!("key {parts:?} does not match the key columns")));
            }
            let mut ands = Vec::new();
            let mut f = concord_model::model::Fields::new();
            for (c, p) in kc.iter().zip(parts) {
                let v = decode::value_from_key_part(c, p, self.offset).map_err(|e| self.bad(e))?;
                params.push(param_for(d, c, Some(&v), self.offset).map_err(|e| self.bad(e))?);
                ands.push(format!(
                    "{} = {}",
                    d.quote(&c.name),
                    decode::placeholder(d, params.len(), c)
                ));
                f.set(c.name.as_str(), v);
            }
            wanted.push(row_key(&f, &kc).map_err(|e| self.bad(e))?);
            ors.push(format!("({})", ands.join(" AND ")));
        }
        Ok((ors.join(" OR "), params, wanted))
    }

    pub(super) async fn read_column(&self, cursor: Cursor) -> Result<ReadPage, ConnectorError> {
        let d = self.dialect();
        let upd = self
            .updated
            .as_ref()
            .expect("column mode has an updated column");
        // The database's clock at the start of a read (timestamp columns only): rows stamped
        // `overlap` before it were committed before the read began, so the next read need not
        // go back further than that (see below).
        let read_started = match (cursor.in_read, &upd.ty) {
            (true, _) => cursor.read_started,
            (false, ColType::Timestamp | ColType::TimestampTz) => {
                let sql = match d {
                    Dialect::Postgres => "SELECT (EXTRACT(EPOCH FROM now()) * 1000)::bigint",
                    Dialect::MySql => "SELECT CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED)",
                    Dialect::Sqlite => {
                        "SELECT CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)"
                    }
                };
                let rows = self
                    .pool
                    .fetch(sql, &[])
                    .await
                    .map_err(|e| self.error(&e))?;
                Some(decode::first_i64(&rows).map_err(|e| self.bad(e))?)
            }
            (false, _) => None,
        };
        let list: Vec<String> = self.columns.iter().map(|c| select_expr(d, c)).collect();
        let mut order_cols: Vec<&Column> = vec![upd];
        order_cols.extend(self.key.iter().filter(|k| k.name != upd.name));
        let order: Vec<String> = order_cols.iter().map(|c| d.quote(&c.name)).collect();
        let mut params = Vec::new();
        // Timestamps are also read in the database's own text form: the page cursor must hold
        // the exact value (PostgreSQL keeps microseconds, concord's values milliseconds; a
        // cursor rounded down would return the same rows again and never end a page of ties).
        let exact = matches!(upd.ty, ColType::Timestamp | ColType::TimestampTz);
        let raw_expr = if exact {
            let q = d.quote(&upd.name);
            match d {
                Dialect::Postgres => format!(", {q}::text AS concord_exact_updated"),
                Dialect::MySql => format!(", CAST({q} AS CHAR) AS concord_exact_updated"),
                Dialect::Sqlite => format!(", CAST({q} AS TEXT) AS concord_exact_updated"),
            }
        } else {
            String::new()
        };
        let mut sql = format!(
            "SELECT {}, {}{raw_expr} FROM {}",
            list.join(", "),
            select_expr(d, upd),
            self.table_ref()
        );
        let mut wheres = vec![format!("{} IS NOT NULL", d.quote(&upd.name))];
        if let (Some(u), Some(k)) = (&cursor.after_updated, &cursor.after_key) {
            wheres.push(tuple_gt(d, &order_cols, 1));
            let mut values = vec![u.clone()];
            values.extend(k.iter().cloned());
            for (i, (c, hex)) in order_cols.iter().zip(&values).enumerate() {
                match (&cursor.after_updated_raw, i) {
                    (Some(raw), 0) => params.push(client::Param::Text(raw.clone())),
                    _ => {
                        let v = value_unhex(hex).ok_or_else(|| self.bad("corrupt read cursor"))?;
                        params
                            .push(param_for(d, c, Some(&v), self.offset).map_err(|e| self.bad(e))?);
                    }
                }
            }
        } else if let Some(since) = &cursor.since {
            let v = value_unhex(since).ok_or_else(|| self.bad("corrupt read cursor"))?;
            wheres.push(format!(
                "{} >= {}",
                d.quote(&upd.name),
                decode::placeholder(d, 1, upd)
            ));
            params.push(param_for(d, upd, Some(&v), self.offset).map_err(|e| self.bad(e))?);
        }
        sql.push_str(&format!(" WHERE {}", wheres.join(" AND ")));
        sql.push_str(&format!(
            " ORDER BY {} LIMIT {}",
            order.join(", "),
            self.page_size()
        ));
        let mut cols = self.columns.clone();
        cols.push(Column {
            name: format!("{}\u{0}updated", upd.name),
            ..upd.clone()
        });
        if exact {
            cols.push(Column {
                name: format!("{}\u{0}raw", upd.name),
                ty: ColType::Text { padded: false },
                db_type: "text".into(),
            });
        }
        let (decoded, more) = self.fetch_page(&sql, &params, &cols).await?;
        let keys: Vec<&Column> = self.key.iter().collect();
        let mut changes = Vec::with_capacity(decoded.len());
        let mut last = None;
        let mut newest: Option<Value> = None;
        for mut f in decoded {
            let u = f
                .remove(&format!("{}\u{0}updated", upd.name))
                .unwrap_or(Value::Null);
            let raw = match f.remove(&format!("{}\u{0}raw", upd.name)) {
                Some(Value::Text(t)) => Some(t),
                _ => None,
            };
            let key = row_key(&f, &keys).map_err(|e| self.bad(e))?;
            let k: Vec<String> = order_cols[1..]
                .iter()
                .map(|c| value_hex(f.get(&c.name).unwrap_or(&Value::Null)))
                .collect();
            last = Some((value_hex(&u), k, raw));
            let modstamp = match &u {
                Value::DateTime(t) => Some(*t),
                _ => None,
            };
            newest = Some(u);
            changes.push(Change {
                key,
                entity_hint: None,
                fields: Some(f),
                modstamp,
            });
        }
        let next = if more {
            let (u, k, raw) = last.expect("a full page has a last row");
            Cursor {
                after_key: Some(k),
                after_updated: Some(u),
                after_updated_raw: raw,
                since: cursor.since.clone(),
                log_seq: None,
                read_started,
                in_read: true,
            }
        } else {
            // The next read starts `overlap` before the newest value seen (or where this one
            // started): rows committed late with an older timestamp are still found, and rows
            // read twice are recognised by their unchanged hash. Where the database's clock at
            // the read's start is known, rows stamped `overlap` before it were all committed
            // and seen: the next read starts at the older of that moment and the newest value
            // (so quiet tables are not re-read over the whole window on every pass).
            let overlap = (self.cfg.overlap_secs as i64) * 1000;
            // A read that ends on an empty page (the one before it was full): the newest value
            // is the previous page's last.
            let newest = newest.or_else(|| cursor.after_updated.as_deref().and_then(value_unhex));
            let since = match newest {
                Some(Value::DateTime(t)) => {
                    let from = match read_started {
                        Some(now) => t.millis().min(now - overlap).max(t.millis() - overlap),
                        None => t.millis() - overlap,
                    };
                    Some(value_hex(&Value::DateTime(Timestamp(from))))
                }
                Some(Value::Int(i)) => {
                    Some(value_hex(&Value::Int(i - self.cfg.overlap_secs as i64)))
                }
                Some(other) => Some(value_hex(&other)),
                None => cursor.since.clone(),
            };
            Cursor {
                since,
                ..Cursor::default()
            }
        };
        Ok(ReadPage {
            changes,
            cursor: Some(serde_json::to_vec(&next).expect("cursor serialises")),
            more,
            complete: false,
        })
    }
}
