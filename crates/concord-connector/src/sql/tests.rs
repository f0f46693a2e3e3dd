//! Statement building and type mapping (no database needed; the real-database tests are in
//! `tests/sql_connectors.rs`).

use super::client::{mysql_type, pg_type, sqlite_type, ColType, Column, Dialect};
use super::write::{delete_sql, update_sql, upsert_sql};

fn col(name: &str, ty: ColType, db: &str) -> Column {
    Column {
        name: name.into(),
        ty,
        db_type: db.into(),
    }
}

#[test]
fn identifiers_are_quoted_and_escaped() {
    assert_eq!(Dialect::Postgres.quote("a\"b"), "\"a\"\"b\"");
    assert_eq!(Dialect::MySql.quote("a`b"), "`a``b`");
    assert_eq!(Dialect::Sqlite.quote("order"), "\"order\"");
}

#[test]
fn upserts_per_dialect() {
    let cols = vec![
        col(
            "id",
            ColType::Int {
                bits: 32,
                unsigned: false,
            },
            "int4",
        ),
        col("name", ColType::Text { padded: false }, "varchar"),
    ];
    let key = vec!["id".to_string()];
    assert_eq!(
        upsert_sql(Dialect::Postgres, "\"t\"", &cols, &key, 2),
        "INSERT INTO \"t\" (\"id\", \"name\") VALUES ($1::int4, $2::varchar), ($3::int4, $4::varchar) \
         ON CONFLICT (\"id\") DO UPDATE SET \"name\" = EXCLUDED.\"name\""
    );
    assert_eq!(
        upsert_sql(Dialect::MySql, "`t`", &cols, &key, 1),
        "INSERT INTO `t` (`id`, `name`) VALUES (?, ?) ON DUPLICATE KEY UPDATE `name` = VALUES(`name`)"
    );
    assert_eq!(
        upsert_sql(Dialect::Sqlite, "\"t\"", &cols, &key, 1),
        "INSERT INTO \"t\" (\"id\", \"name\") VALUES (?, ?) ON CONFLICT (\"id\") DO UPDATE SET \"name\" = excluded.\"name\""
    );
    assert_eq!(
        update_sql(Dialect::Postgres, "\"t\"", &cols, &key),
        "UPDATE \"t\" SET \"name\" = $1::varchar WHERE \"id\" = $2::int4"
    );
    assert_eq!(
        delete_sql(Dialect::MySql, "`t`", &cols, &key),
        "DELETE FROM `t` WHERE `id` = ?"
    );
}

#[test]
fn type_mapping() {
    assert_eq!(pg_type("numeric", "numeric"), ColType::Decimal);
    assert_eq!(
        pg_type("character", "bpchar"),
        ColType::Text { padded: true }
    );
    assert_eq!(pg_type("real", "float4"), ColType::Float32);
    assert_eq!(mysql_type("tinyint", "tinyint(1)"), ColType::Bool);
    assert_eq!(
        mysql_type("bigint", "bigint(20) unsigned"),
        ColType::Int {
            bits: 64,
            unsigned: true
        }
    );
    assert_eq!(mysql_type("datetime", "datetime(3)"), ColType::Timestamp);
    assert_eq!(sqlite_type("VARCHAR(40)"), ColType::Text { padded: false });
    assert_eq!(sqlite_type("DECIMAL(10,2)"), ColType::Decimal);
    assert_eq!(
        sqlite_type("INTEGER"),
        ColType::Int {
            bits: 64,
            unsigned: false
        }
    );
}
