//! Hashing in the database for hash-tree drift detection: PostgreSQL 14 and later, MariaDB
//! 10.6 and later, MySQL 8 (SQLite is checked by a scan).
//!
//! Each row gets two 64-bit hashes computed by the database itself: the *key hash* over the key
//! columns (its top bits are the row's bucket) and the *row digest* over the mapped columns.
//!
//! - PostgreSQL: `hash_record_extended(ROW(…), 0)`, which hashes each column with its type's own
//!   extended hash function (the functions hash partitioning relies on, stable across versions
//!   and platforms) without rendering text, so a bucket sum over a million rows costs one
//!   parallel scan. Columns whose type hash is not exact for concord's purposes (floats, `jsonb`,
//!   `json`, `citext`, anything not known: see `pg_hashed`) are hashed through their text form,
//!   text under the "C" collation, and each column's NULL-ness is hashed with it.
//! - MariaDB/MySQL: the first 64 bits of `MD5` over the key columns joined by 0x1f, and over
//!   `JSON_ARRAY(mapped columns)` (binary columns as hex), which tells NULL from text and keeps
//!   every value's exact rendering.
//!
//! Bucket sums are compared *in the database*: concord sends the store's sums for every
//! non-empty bucket (PostgreSQL: three arrays; MariaDB/MySQL: one JSON document read through
//! `JSON_TABLE`) and reads back only the numbers of the buckets that differ, so what comes back
//! from the database follows the drift, not the table.

use super::decode::{decode, row_key, select_expr, Cursor};
use super::{client, ColType, Column, Dialect, SqlConnector};
use crate::{BucketSum, Change, ConnectorError, DigestSource, ReadPage, RowDigest};
use async_trait::async_trait;
use concord_model::model::{Key, Value};

const KH: &str = "\u{0}concord_key_hash";
const DG: &str = "\u{0}concord_row_digest";

/// The deepest tree MariaDB/MySQL get: the store's sums travel as one JSON parameter, which must
/// stay well under the default `max_allowed_packet` (16 MiB): 2^17 buckets ≈ 6 MiB.
const MYSQL_MAX_BITS: u32 = 17;

fn int8(name: &str) -> Column {
    Column {
        name: name.into(),
        ty: ColType::Int {
            bits: 64,
            unsigned: false,
        },
        db_type: "int8".into(),
    }
}

/// A PostgreSQL column as hashed: itself where its type's hash tells apart every two values
/// concord tells apart, else its text form. Left out on purpose: floats (0 hashes to the seed
/// like NULL, and -0 like 0), `jsonb` (`{}` and `[]`, `1` and `[1]` hash alike), `json`
/// (no hash), `citext` (ignores case). Text is hashed under the "C" collation, so a column
/// with a case-insensitive collation still tells case apart.
fn pg_hashed(c: &Column) -> String {
    let q = Dialect::Postgres.quote(&c.name);
    match c.db_type.as_str() {
        "text" | "varchar" | "bpchar" => format!("{q} COLLATE \"C\""),
        "bool" | "int2" | "int4" | "int8" | "numeric" | "date" | "timestamp" | "timestamptz"
        | "uuid" | "bytea" => q,
        _ => format!("{q}::text"),
    }
}

/// The columns of a PostgreSQL row digest: each hashed column and whether it is NULL
/// (`hash_record_extended` counts a NULL as 0, which some values also hash to).
fn pg_row(cols: &[Column]) -> String {
    let mut parts = Vec::with_capacity(cols.len() * 2);
    for c in cols {
        parts.push(pg_hashed(c));
        parts.push(format!("{} IS NULL", Dialect::Postgres.quote(&c.name)));
    }
    parts.join(", ")
}

/// A MariaDB/MySQL column as it enters the row digest's JSON array.
fn my_hashed(c: &Column) -> String {
    let q = Dialect::MySql.quote(&c.name);
    match c.ty {
        ColType::Bytes => format!("HEX({q})"),
        ColType::Other => format!("CAST({q} AS CHAR)"),
        _ => q,
    }
}

/// The first 64 bits of an MD5, as a signed BIGINT (MariaDB/MySQL).
fn my_md5_64(expr: &str) -> String {
    format!("CAST(CAST(CONV(LEFT(MD5({expr}), 16), 16, 10) AS UNSIGNED) AS SIGNED)")
}

impl SqlConnector {
    /// Whether this table can be hashed in its database.
    pub(crate) fn can_digest(&self) -> bool {
        self.digest_ok && matches!(self.dialect(), Dialect::Postgres | Dialect::MySql)
    }

    /// The key hash, a signed 64-bit expression.
    fn key_hash_expr(&self) -> String {
        match self.dialect() {
            Dialect::MySql => {
                let cols: Vec<String> = self
                    .key
                    .iter()
                    .map(|c| format!("CAST({} AS CHAR)", Dialect::MySql.quote(&c.name)))
                    .collect();
                my_md5_64(&format!("CONCAT_WS(0x1f, {})", cols.join(", ")))
            }
            _ => {
                let cols: Vec<String> = self.key.iter().map(pg_hashed).collect();
                format!("hash_record_extended(ROW({}), 0)", cols.join(", "))
            }
        }
    }

    /// The row digest, a signed 64-bit expression.
    fn row_digest_expr(&self) -> String {
        match self.dialect() {
            Dialect::MySql => {
                let cols: Vec<String> = self.columns.iter().map(my_hashed).collect();
                my_md5_64(&format!("JSON_ARRAY({})", cols.join(", ")))
            }
            _ => format!("hash_record_extended(ROW({}), 0)", pg_row(&self.columns)),
        }
    }

    /// The bucket of the signed key hash column `kh` at depth `bits`: its top bits, sign kept
    /// (`core::tree::bucket_of`). MariaDB/MySQL shift unsigned, so the sign is put back.
    fn bucket_expr(&self, bits: u32) -> String {
        let bits = bits.clamp(1, 32);
        let shift = 64 - bits;
        match self.dialect() {
            Dialect::MySql => format!(
                "(CAST(CAST(kh AS UNSIGNED) >> {shift} AS SIGNED) - IF(kh < 0, {}, 0))",
                1u64 << bits
            ),
            _ => format!("(kh >> {shift})"),
        }
    }

    /// Every row as (key columns, kh, dg).
    fn hashed_rows(&self) -> String {
        let d = self.dialect();
        let keys: Vec<String> = self
            .key
            .iter()
            .map(|c| format!("{} AS {}", select_expr(d, c), d.quote(&c.name)))
            .collect();
        format!(
            "(SELECT {k}, {kh} AS kh, {dg} AS dg FROM {t}) r",
            k = keys.join(", "),
            kh = self.key_hash_expr(),
            dg = self.row_digest_expr(),
            t = self.table_ref(),
        )
    }

    fn digest_extra(&self) -> Vec<(String, Column)> {
        vec![
            (self.key_hash_expr(), int8(KH)),
            (self.row_digest_expr(), int8(DG)),
        ]
    }

    fn check_digest(&self) -> Result<(), ConnectorError> {
        if self.can_digest() {
            Ok(())
        } else {
            Err(self.bad(
                "hashing in the database needs PostgreSQL 14, MariaDB 10.6 or MySQL 8 or later",
            ))
        }
    }

    /// Takes the two digest fields out of a row read with `digest_extra`.
    fn take_digest(&self, c: &mut Change) -> Result<Option<RowDigest>, ConnectorError> {
        let Some(f) = c.fields.as_mut() else {
            return Ok(None);
        };
        match (f.remove(KH), f.remove(DG)) {
            (Some(Value::Int(k)), Some(Value::Int(r))) => Ok(Some(RowDigest {
                key_hash: k,
                row: r,
            })),
            _ => Err(self.bad(format!("row {}: the database returned no digest", c.key))),
        }
    }
}

#[async_trait]
impl DigestSource for SqlConnector {
    fn fingerprint(&self) -> String {
        format!(
            "sql v1 {} | {} | {}",
            self.dialect().name(),
            self.key_hash_expr(),
            self.row_digest_expr()
        )
    }

    fn max_bits(&self) -> u32 {
        match self.dialect() {
            Dialect::MySql => MYSQL_MAX_BITS,
            _ => 24,
        }
    }

    async fn differing_buckets(
        &self,
        bits: u32,
        expected: &[BucketSum],
    ) -> Result<Vec<i64>, ConnectorError> {
        self.check_digest()?;
        let bucket = self.bucket_expr(bits);
        let rows = self.hashed_rows();
        let b: Vec<i64> = expected.iter().map(|e| e.bucket).collect();
        let n: Vec<i64> = expected.iter().map(|e| e.count).collect();
        let x: Vec<i64> = expected.iter().map(|e| e.xor).collect();
        let found: Vec<i64> = match &self.pool {
            client::Pool::Pg(pool) => {
                // One aggregation over the table's rows and the store's sums taken away (a
                // parallel plan; a FULL JOIN of the two would not be): a bucket is equal when
                // its count comes to zero and its XOR to zero.
                let sql = format!(
                    "SELECT b FROM (SELECT {bucket} AS b, 1::int8 AS n, dg AS x FROM {rows} \
                     UNION ALL SELECT b, -n, x FROM unnest($1::int8[], $2::int8[], $3::int8[]) \
                     AS s(b, n, x)) u GROUP BY b HAVING sum(n) <> 0 OR bit_xor(x) <> 0"
                );
                let out: Vec<(i64,)> = sqlx::query_as(&sql)
                    .bind(b)
                    .bind(n)
                    .bind(x)
                    .fetch_all(pool)
                    .await
                    .map_err(|e| self.error(&e))?;
                out.into_iter().map(|(b,)| b).collect()
            }
            _ => {
                // One aggregation over the table's rows and the store's sums taken away: a
                // bucket is equal when its count comes to zero and its XOR to zero.
                let sql = format!(
                    "SELECT b FROM (SELECT {bucket} AS b, 1 AS n, dg AS x FROM {rows} \
                     UNION ALL SELECT b, -n, x FROM JSON_TABLE(?, '$[*]' COLUMNS(\
                     b BIGINT PATH '$[0]', n BIGINT PATH '$[1]', x BIGINT PATH '$[2]')) j) u \
                     GROUP BY b HAVING SUM(n) <> 0 OR BIT_XOR(x) <> 0"
                );
                let json: Vec<[i64; 3]> = expected
                    .iter()
                    .map(|e| [e.bucket, e.count, e.xor])
                    .collect();
                let param = client::Param::Text(serde_json::to_string(&json).expect("JSON"));
                let out = self
                    .pool
                    .fetch(&sql, &[param])
                    .await
                    .map_err(|e| self.error(&e))?;
                decode(&out, &[int8("b")], self.offset)
                    .map_err(|e| self.bad(e))?
                    .into_iter()
                    .filter_map(|f| match f.get("b") {
                        Some(Value::Int(b)) => Some(*b),
                        _ => None,
                    })
                    .collect()
            }
        };
        Ok(found)
    }

    async fn leaves(
        &self,
        bits: u32,
        buckets: &[i64],
    ) -> Result<Vec<(Key, RowDigest)>, ConnectorError> {
        self.check_digest()?;
        let d = self.dialect();
        let keys: Vec<String> = self.key.iter().map(|c| d.quote(&c.name)).collect();
        let (set, param) = match d {
            Dialect::MySql => (
                "SELECT b FROM JSON_TABLE(?, '$[*]' COLUMNS(b BIGINT PATH '$')) j",
                client::Param::Text(serde_json::to_string(buckets).expect("JSON")),
            ),
            _ => ("SELECT unnest($1::int8[])", client::Param::Null),
        };
        let sql = format!(
            "SELECT {k}, kh, dg FROM {rows} WHERE {bucket} IN ({set})",
            k = keys.join(", "),
            rows = self.hashed_rows(),
            bucket = self.bucket_expr(bits),
        );
        let rows = match &self.pool {
            client::Pool::Pg(pool) => client::Rows::Pg(
                sqlx::query(&sql)
                    .bind(buckets.to_vec())
                    .fetch_all(pool)
                    .await
                    .map_err(|e| self.error(&e))?,
            ),
            _ => self
                .pool
                .fetch(&sql, &[param])
                .await
                .map_err(|e| self.error(&e))?,
        };
        let mut cols: Vec<Column> = self.key.clone();
        cols.push(int8(KH));
        cols.push(int8(DG));
        let decoded = decode(&rows, &cols, self.offset).map_err(|e| self.bad(e))?;
        let kc: Vec<&Column> = self.key.iter().collect();
        let mut out = Vec::with_capacity(decoded.len());
        for f in decoded {
            let key = row_key(&f, &kc).map_err(|e| self.bad(e))?;
            let mut c = Change {
                key,
                entity_hint: None,
                fields: Some(f),
                modstamp: None,
            };
            let dg = self.take_digest(&mut c)?.expect("a present row");
            out.push((c.key, dg));
        }
        Ok(out)
    }

    async fn fetch_digested(
        &self,
        keys: &[Key],
    ) -> Result<Vec<(Change, Option<RowDigest>)>, ConnectorError> {
        self.check_digest()?;
        let parts: Vec<Vec<String>> = keys.iter().map(|k| k.parts()).collect();
        let found = self.fetch_keys_with(&parts, &self.digest_extra()).await?;
        let mut out = Vec::with_capacity(found.len());
        for mut c in found {
            let dg = self.take_digest(&mut c)?;
            out.push((c, dg));
        }
        Ok(out)
    }

    async fn scan_digested(
        &self,
        cursor: Option<&[u8]>,
    ) -> Result<(ReadPage, Vec<Option<RowDigest>>), ConnectorError> {
        self.check_digest()?;
        let cursor: Cursor = match cursor {
            None => Cursor::default(),
            Some(b) => serde_json::from_slice(b).map_err(|_| self.bad("corrupt scan cursor"))?,
        };
        let mut page = self.read_scan_with(cursor, &self.digest_extra()).await?;
        let mut digests = Vec::with_capacity(page.changes.len());
        for c in &mut page.changes {
            digests.push(self.take_digest(c)?);
        }
        Ok((page, digests))
    }
}
