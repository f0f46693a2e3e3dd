//! The SOQL subset the sandbox answers and the connector writes:
//!
//! ```text
//! SELECT field [, field]* | COUNT()  FROM object
//!   [WHERE cond]  [ORDER BY field [ASC|DESC] [NULLS FIRST|LAST] [, …]]  [LIMIT n]  [OFFSET n]
//! cond  := cond AND cond | cond OR cond | NOT cond | ( cond )
//!        | field (= | != | <> | < | > | <= | >=) literal
//!        | field [NOT] LIKE 'pattern' | field [NOT] IN (literal, …)
//! field := Name | Account.Name (parent relationship path)
//! literal := 'string' | number | true | false | null | 2024-01-31 | 2024-01-31T10:00:00Z
//! ```
//!
//! Keywords are case-insensitive; string comparison, LIKE and text ordering are
//! case-insensitive, as in Salesforce. `field = null` / `field != null` test for null.
//!
//! Files: here the query's shape; `parse` (lexer and parser), `eval` (conditions, comparison,
//! LIKE, ordering).

mod eval;
mod parse;
#[cfg(test)]
mod tests;

pub use eval::{compare, eval, like, sort};
pub use parse::parse;

use concord_model::model::{Timestamp, Value};
use rust_decimal::Decimal;
use std::cmp::Ordering;
use std::str::FromStr;

/// A parse error, reported by the sandbox as `MALFORMED_QUERY`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SoqlError {
    pub message: String,
    /// Character offset in the query.
    pub at: usize,
}

/// A literal value in a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Literal {
    Null,
    Bool(bool),
    Number(Decimal),
    Str(String),
    Date(chrono::NaiveDate),
    DateTime(Timestamp),
}

impl Literal {
    /// As a field value (for comparisons).
    pub fn to_value(&self) -> Value {
        match self {
            Literal::Null => Value::Null,
            Literal::Bool(b) => Value::Bool(*b),
            Literal::Number(d) => Value::from(*d),
            Literal::Str(s) => Value::text(s.as_str()),
            Literal::Date(d) => Value::Date(*d),
            Literal::DateTime(t) => Value::DateTime(*t),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    Eq,
    Ne,
    Lt,
    Gt,
    Le,
    Ge,
}

/// A WHERE condition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cond {
    And(Box<Cond>, Box<Cond>),
    Or(Box<Cond>, Box<Cond>),
    Not(Box<Cond>),
    Cmp {
        field: Vec<String>,
        op: CmpOp,
        value: Literal,
    },
    Like {
        field: Vec<String>,
        pattern: String,
        negated: bool,
    },
    In {
        field: Vec<String>,
        values: Vec<Literal>,
        negated: bool,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SelectItem {
    /// A field or a parent relationship path (`Account.Name` → `["Account", "Name"]`).
    Field(Vec<String>),
    Count,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderItem {
    pub field: Vec<String>,
    pub descending: bool,
    /// Salesforce's default: nulls first ascending, last descending.
    pub nulls_first: bool,
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    pub select: Vec<SelectItem>,
    pub object: String,
    pub filter: Option<Cond>,
    pub order: Vec<OrderItem>,
    pub limit: Option<u64>,
    pub offset: Option<u64>,
}

impl Query {
    pub fn is_count(&self) -> bool {
        self.select == vec![SelectItem::Count]
    }
}
