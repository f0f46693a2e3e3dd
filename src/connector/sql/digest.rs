//! Hashing in the database for hash-tree drift detection (PostgreSQL 14 and later).
//!
//! Each row gets two 64-bit hashes computed by PostgreSQL itself: the key hash
//! `hash_record_extended(ROW(key columns), 0)` (its top bits are the row's bucket) and the row
//! digest `hash_record_extended(ROW(mapped columns), 0)`. `hash_record_extended` hashes each
//! column with its type's own extended hash function (the functions hash partitioning relies on,
//! stable across versions and platforms) without rendering text, so a bucket sum over a million
//! rows costs one parallel scan. Columns whose type hash is not exact for concord's purposes
//! (`json`, which has none; `citext`, which ignores case; anything not known) are hashed through
//! their text form.
//!
//! Bucket sums are compared *in the database*: concord sends the store's sums for every
//! non-empty bucket as three arrays and reads back only the numbers of the buckets that differ,
//! so what comes back from the database follows the drift, not the table.

use super::read::Cursor;
use super::{ColType, Column, Dialect, SqlConnector};
use crate::connector::{BucketSum, Change, ConnectorError, DigestSource, ReadPage, RowDigest};
use crate::model::{Key, Value};
use async_trait::async_trait;

const KH: &str = "\u{0}concord_key_hash";
const DG: &str = "\u{0}concord_row_digest";

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

/// The column as hashed: itself where its type's hash tells every difference concord sees,
/// else its text form.
fn hashed(d: Dialect, c: &Column) -> String {
    let q = d.quote(&c.name);
    let exact = matches!(
        c.db_type.as_str(),
        "bool"
            | "int2"
            | "int4"
            | "int8"
            | "numeric"
            | "float4"
            | "float8"
            | "text"
            | "varchar"
            | "bpchar"
            | "date"
            | "timestamp"
            | "timestamptz"
            | "uuid"
            | "bytea"
            | "jsonb"
    );
    if exact {
        q
    } else {
        format!("{q}::text")
    }
}

impl SqlConnector {
    /// Whether this table can be hashed in its database (PostgreSQL ≥ 14).
    pub(crate) fn can_digest(&self) -> bool {
        self.dialect() == Dialect::Postgres && self.pg_version >= 140_000
    }

    fn key_hash_expr(&self) -> String {
        let d = self.dialect();
        let cols: Vec<String> = self.key.iter().map(|c| hashed(d, c)).collect();
        format!("hash_record_extended(ROW({}), 0)", cols.join(", "))
    }

    fn row_digest_expr(&self) -> String {
        let d = self.dialect();
        let cols: Vec<String> = self.columns.iter().map(|c| hashed(d, c)).collect();
        format!("hash_record_extended(ROW({}), 0)", cols.join(", "))
    }

    fn digest_extra(&self) -> Vec<(String, Column)> {
        vec![
            (self.key_hash_expr(), int8(KH)),
            (self.row_digest_expr(), int8(DG)),
        ]
    }

    fn pg(&self) -> Result<&sqlx::PgPool, ConnectorError> {
        match &self.pool {
            super::Pool::Pg(p) if self.can_digest() => Ok(p),
            _ => Err(self.bad(
                "hashing in the database needs PostgreSQL 14 or later (hash_record_extended)"
                    .into(),
            )),
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

    fn shift(bits: u32) -> u32 {
        64 - bits.clamp(1, 32)
    }
}

#[async_trait]
impl DigestSource for SqlConnector {
    async fn differing_buckets(
        &self,
        bits: u32,
        expected: &[BucketSum],
    ) -> Result<Vec<i64>, ConnectorError> {
        let pool = self.pg()?;
        let sql = format!(
            "WITH d AS (SELECT {kh} >> {shift} AS b, count(*) AS n, bit_xor({dg}) AS x \
             FROM {t} GROUP BY 1) \
             SELECT coalesce(d.b, s.b) FROM d FULL JOIN \
             unnest($1::int8[], $2::int8[], $3::int8[]) AS s(b, n, x) ON d.b = s.b \
             WHERE d.n IS DISTINCT FROM s.n OR d.x IS DISTINCT FROM s.x",
            kh = self.key_hash_expr(),
            dg = self.row_digest_expr(),
            shift = Self::shift(bits),
            t = self.table_ref(),
        );
        let b: Vec<i64> = expected.iter().map(|e| e.bucket).collect();
        let n: Vec<i64> = expected.iter().map(|e| e.count).collect();
        let x: Vec<i64> = expected.iter().map(|e| e.xor).collect();
        let rows: Vec<(i64,)> = sqlx::query_as(&sql)
            .bind(b)
            .bind(n)
            .bind(x)
            .fetch_all(pool)
            .await
            .map_err(|e| self.error(&e))?;
        Ok(rows.into_iter().map(|(b,)| b).collect())
    }

    async fn leaves(
        &self,
        bits: u32,
        buckets: &[i64],
    ) -> Result<Vec<(Key, RowDigest)>, ConnectorError> {
        let pool = self.pg()?;
        let d = self.dialect();
        let keys: Vec<String> = self
            .key
            .iter()
            .map(|c| super::read::select_expr(d, c))
            .collect();
        let sql = format!(
            "SELECT * FROM (SELECT {k}, {kh} AS kh, {dg} AS dg FROM {t}) r \
             WHERE (kh >> {shift}) IN (SELECT unnest($1::int8[]))",
            k = keys.join(", "),
            kh = self.key_hash_expr(),
            dg = self.row_digest_expr(),
            shift = Self::shift(bits),
            t = self.table_ref(),
        );
        let rows = sqlx::query(&sql)
            .bind(buckets.to_vec())
            .fetch_all(pool)
            .await
            .map_err(|e| self.error(&e))?;
        let mut cols: Vec<Column> = self.key.clone();
        cols.push(int8(KH));
        cols.push(int8(DG));
        let decoded = super::read::decode(&super::client::Rows::Pg(rows), &cols, self.offset)
            .map_err(|e| self.bad(e))?;
        let kc: Vec<&Column> = self.key.iter().collect();
        let mut out = Vec::with_capacity(decoded.len());
        for f in decoded {
            let key = super::read::row_key(&f, &kc).map_err(|e| self.bad(e))?;
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
        self.pg()?;
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
    ) -> Result<(ReadPage, Vec<RowDigest>), ConnectorError> {
        self.pg()?;
        let cursor: Cursor = match cursor {
            None => Cursor::default(),
            Some(b) => {
                serde_json::from_slice(b).map_err(|_| self.bad("corrupt scan cursor".into()))?
            }
        };
        let mut page = self.read_scan_with(cursor, &self.digest_extra()).await?;
        let mut digests = Vec::with_capacity(page.changes.len());
        for c in &mut page.changes {
            digests.push(self.take_digest(c)?.expect("a scanned row"));
        }
        Ok((page, digests))
    }
}
