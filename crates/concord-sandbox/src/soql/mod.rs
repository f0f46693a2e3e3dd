//! The SOQL subset the sandbox answers and the connector writes:
//!
//! ```text
//! SELECT item [, item]* | COUNT()  FROM object
//!   [WHERE cond]  [GROUP BY group [, group]*]  [ORDER BY key [ASC|DESC] [NULLS FIRST|LAST] [, …]]
//!   [LIMIT n]  [OFFSET n]  [FOR VIEW | FOR REFERENCE | FOR UPDATE]
//! item  := field | agg(field) [alias] | datefn(field) [alias] | ( subquery )
//! agg   := COUNT | COUNT_DISTINCT | SUM | AVG | MIN | MAX
//! datefn := CALENDAR_YEAR | CALENDAR_QUARTER | CALENDAR_MONTH | DAY_IN_MONTH | DAY_IN_WEEK
//!         | DAY_IN_YEAR | DAY_ONLY | FISCAL_YEAR | FISCAL_QUARTER | FISCAL_MONTH | HOUR_IN_DAY
//!         | WEEK_IN_MONTH | WEEK_IN_YEAR
//! subquery := SELECT field, … FROM ChildRelationship [WHERE …] [ORDER BY …] [LIMIT n]
//! group := field | datefn(field)
//! cond  := cond AND cond | cond OR cond | NOT cond | ( cond )
//!        | [datefn(]field[)] (= | != | <> | < | > | <= | >=) literal
//!        | field [NOT] LIKE 'pattern' | field [NOT] IN (literal, …)
//! field := Name | Account.Name (parent relationship path)
//! literal := 'string' | number | true | false | null | 2024-01-31 | 2024-01-31T10:00:00Z
//!          | TODAY | YESTERDAY | LAST_WEEK | THIS_MONTH | … | LAST_N_DAYS:n | N_MONTHS_AGO:n | …
//! ```
//!
//! A relative date literal is a range of days in UTC (the org user's time zone), resolved
//! against the org's clock when the query runs: `=` is inside it, `<` before it, `>` after it.
//! Fiscal years are calendar years (an org's default).
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
    /// A relative date literal, before the query runs.
    Relative(RelativeDate),
    /// A relative date literal resolved: `[start, end)`.
    Range(Timestamp, Timestamp),
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
            Literal::Range(start, _) => Value::DateTime(*start),
            Literal::Relative(_) => Value::Null,
        }
    }
}

/// A relative date literal: its name and `n` (1 when it takes none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelativeDate {
    pub name: &'static str,
    pub n: i64,
}

/// The relative date literals (those ending in `:n` take a number).
pub const RELATIVE_DATES: [&str; 47] = [
    "TODAY",
    "YESTERDAY",
    "TOMORROW",
    "LAST_WEEK",
    "THIS_WEEK",
    "NEXT_WEEK",
    "LAST_MONTH",
    "THIS_MONTH",
    "NEXT_MONTH",
    "LAST_90_DAYS",
    "NEXT_90_DAYS",
    "THIS_QUARTER",
    "LAST_QUARTER",
    "NEXT_QUARTER",
    "THIS_YEAR",
    "LAST_YEAR",
    "NEXT_YEAR",
    "THIS_FISCAL_QUARTER",
    "LAST_FISCAL_QUARTER",
    "NEXT_FISCAL_QUARTER",
    "THIS_FISCAL_YEAR",
    "LAST_FISCAL_YEAR",
    "NEXT_FISCAL_YEAR",
    "LAST_N_DAYS:n",
    "NEXT_N_DAYS:n",
    "N_DAYS_AGO:n",
    "LAST_N_WEEKS:n",
    "NEXT_N_WEEKS:n",
    "N_WEEKS_AGO:n",
    "LAST_N_MONTHS:n",
    "NEXT_N_MONTHS:n",
    "N_MONTHS_AGO:n",
    "LAST_N_QUARTERS:n",
    "NEXT_N_QUARTERS:n",
    "N_QUARTERS_AGO:n",
    "LAST_N_YEARS:n",
    "NEXT_N_YEARS:n",
    "N_YEARS_AGO:n",
    "LAST_N_FISCAL_QUARTERS:n",
    "NEXT_N_FISCAL_QUARTERS:n",
    "N_FISCAL_QUARTERS_AGO:n",
    "LAST_N_FISCAL_YEARS:n",
    "NEXT_N_FISCAL_YEARS:n",
    "N_FISCAL_YEARS_AGO:n",
    "LAST_N_HOURS:n",
    "NEXT_N_HOURS:n",
    "N_HOURS_AGO:n",
];

impl RelativeDate {
    /// The range `[start, end)` it stands for on `now` (ms, UTC).
    pub fn range(&self, now: Timestamp) -> Option<(Timestamp, Timestamp)> {
        use chrono::{Datelike, Duration, NaiveDate};
        let now_dt = now.to_chrono()?;
        let today = now_dt.date_naive();
        let n = self.n;
        let day = |d: NaiveDate| Some(Timestamp::from_chrono(&d.and_hms_opt(0, 0, 0)?.and_utc()));
        let days = |a: NaiveDate, b: NaiveDate| Some((day(a)?, day(b)?));
        let month_start = |y: i32, m: i32| {
            let idx = y * 12 + (m - 1);
            NaiveDate::from_ymd_opt(idx.div_euclid(12), (idx.rem_euclid(12) + 1) as u32, 1)
        };
        let (y, m) = (today.year(), today.month() as i32);
        let q0 = (m - 1) / 3 * 3 + 1; // the current quarter's first month
        let week = today - Duration::days(today.weekday().num_days_from_sunday() as i64);
        let months =
            |from: i32, count: i32| days(month_start(y, from)?, month_start(y, from + count)?);
        let name = self.name.trim_end_matches(":n").replace("_FISCAL", "");
        match name.as_str() {
            "TODAY" => days(today, today + Duration::days(1)),
            "YESTERDAY" => days(today - Duration::days(1), today),
            "TOMORROW" => days(today + Duration::days(1), today + Duration::days(2)),
            "THIS_WEEK" => days(week, week + Duration::days(7)),
            "LAST_WEEK" => days(week - Duration::days(7), week),
            "NEXT_WEEK" => days(week + Duration::days(7), week + Duration::days(14)),
            "THIS_MONTH" => months(m, 1),
            "LAST_MONTH" => months(m - 1, 1),
            "NEXT_MONTH" => months(m + 1, 1),
            "LAST_90_DAYS" => days(today - Duration::days(90), today + Duration::days(1)),
            "NEXT_90_DAYS" => days(today + Duration::days(1), today + Duration::days(91)),
            "THIS_QUARTER" => months(q0, 3),
            "LAST_QUARTER" => months(q0 - 3, 3),
            "NEXT_QUARTER" => months(q0 + 3, 3),
            "THIS_YEAR" => months(1, 12),
            "LAST_YEAR" => months(-11, 12),
            "NEXT_YEAR" => months(13, 12),
            "LAST_N_DAYS" => days(today - Duration::days(n), today + Duration::days(1)),
            "NEXT_N_DAYS" => days(today + Duration::days(1), today + Duration::days(n + 1)),
            "N_DAYS_AGO" => days(today - Duration::days(n), today - Duration::days(n - 1)),
            "LAST_N_WEEKS" => days(week - Duration::days(7 * n), week),
            "NEXT_N_WEEKS" => days(week + Duration::days(7), week + Duration::days(7 * n + 7)),
            "N_WEEKS_AGO" => days(
                week - Duration::days(7 * n),
                week - Duration::days(7 * n - 7),
            ),
            "LAST_N_MONTHS" => months(m - n as i32, n as i32),
            "NEXT_N_MONTHS" => months(m + 1, n as i32),
            "N_MONTHS_AGO" => months(m - n as i32, 1),
            "LAST_N_QUARTERS" => months(q0 - 3 * n as i32, 3 * n as i32),
            "NEXT_N_QUARTERS" => months(q0 + 3, 3 * n as i32),
            "N_QUARTERS_AGO" => months(q0 - 3 * n as i32, 3),
            "LAST_N_YEARS" => months(1 - 12 * n as i32, 12 * n as i32),
            "NEXT_N_YEARS" => months(13, 12 * n as i32),
            "N_YEARS_AGO" => months(1 - 12 * n as i32, 12),
            "LAST_N_HOURS" => Some((Timestamp(now.millis() - n * 3_600_000), now)),
            "NEXT_N_HOURS" => Some((now, Timestamp(now.millis() + n * 3_600_000))),
            "N_HOURS_AGO" => {
                let h = now.millis().div_euclid(3_600_000) * 3_600_000 - n * 3_600_000;
                Some((Timestamp(h), Timestamp(h + 3_600_000)))
            }
            _ => None,
        }
    }
}

/// A date function over a date or datetime field (UTC; fiscal = calendar).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateFn {
    CalendarYear,
    CalendarQuarter,
    CalendarMonth,
    DayInMonth,
    DayInWeek,
    DayInYear,
    DayOnly,
    FiscalYear,
    FiscalQuarter,
    FiscalMonth,
    HourInDay,
    WeekInMonth,
    WeekInYear,
}

impl DateFn {
    pub fn from_name(s: &str) -> Option<DateFn> {
        use DateFn::*;
        Some(match s.to_ascii_uppercase().as_str() {
            "CALENDAR_YEAR" => CalendarYear,
            "CALENDAR_QUARTER" => CalendarQuarter,
            "CALENDAR_MONTH" => CalendarMonth,
            "DAY_IN_MONTH" => DayInMonth,
            "DAY_IN_WEEK" => DayInWeek,
            "DAY_IN_YEAR" => DayInYear,
            "DAY_ONLY" => DayOnly,
            "FISCAL_YEAR" => FiscalYear,
            "FISCAL_QUARTER" => FiscalQuarter,
            "FISCAL_MONTH" => FiscalMonth,
            "HOUR_IN_DAY" => HourInDay,
            "WEEK_IN_MONTH" => WeekInMonth,
            "WEEK_IN_YEAR" => WeekInYear,
            _ => return None,
        })
    }

    /// The function of a date or datetime value (Null for anything else).
    pub fn apply(self, v: &Value) -> Value {
        use chrono::{Datelike, Timelike};
        let (date, hour) = match v {
            Value::Date(d) => (*d, 0),
            Value::DateTime(t) => match t.to_chrono() {
                Some(dt) => (dt.date_naive(), dt.hour()),
                None => return Value::Null,
            },
            _ => return Value::Null,
        };
        let n = match self {
            DateFn::CalendarYear | DateFn::FiscalYear => date.year() as i64,
            DateFn::CalendarQuarter | DateFn::FiscalQuarter => ((date.month() - 1) / 3 + 1) as i64,
            DateFn::CalendarMonth | DateFn::FiscalMonth => date.month() as i64,
            DateFn::DayInMonth => date.day() as i64,
            DateFn::DayInWeek => (date.weekday().num_days_from_sunday() + 1) as i64,
            DateFn::DayInYear => date.ordinal() as i64,
            DateFn::DayOnly => return Value::Date(date),
            DateFn::HourInDay => hour as i64,
            DateFn::WeekInMonth => ((date.day() - 1) / 7 + 1) as i64,
            DateFn::WeekInYear => ((date.ordinal() - 1) / 7 + 1) as i64,
        };
        Value::Int(n)
    }
}

/// An aggregate function.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFn {
    Count,
    CountDistinct,
    Sum,
    Avg,
    Min,
    Max,
}

impl AggFn {
    pub fn from_name(s: &str) -> Option<AggFn> {
        Some(match s.to_ascii_uppercase().as_str() {
            "COUNT" => AggFn::Count,
            "COUNT_DISTINCT" => AggFn::CountDistinct,
            "SUM" => AggFn::Sum,
            "AVG" => AggFn::Avg,
            "MIN" => AggFn::Min,
            "MAX" => AggFn::Max,
            _ => return None,
        })
    }
}

/// A GROUP BY key: a field, or a date function of one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupItem {
    pub field: Vec<String>,
    pub func: Option<DateFn>,
}

/// `FOR VIEW`, `FOR REFERENCE`, `FOR UPDATE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ForClause {
    View,
    Reference,
    Update,
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
        /// A date function applied to the field first (`CALENDAR_YEAR(CloseDate) = 2024`).
        func: Option<DateFn>,
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
    /// `SUM(Amount) total`, `COUNT(Id)`: an aggregate of a field.
    Agg {
        func: AggFn,
        field: Vec<String>,
        alias: Option<String>,
    },
    /// `CALENDAR_YEAR(CloseDate)`: a date function of a grouped field.
    DateFn {
        func: DateFn,
        field: Vec<String>,
        alias: Option<String>,
    },
    /// `(SELECT Id FROM Contacts)`: the children of each record through a child
    /// relationship (the subquery's object is the relationship name).
    Subquery(Box<Query>),
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
    pub group_by: Vec<GroupItem>,
    pub order: Vec<OrderItem>,
    pub limit: Option<u64>,
    pub offset: Option<u64>,
    pub for_clause: Option<ForClause>,
}

impl Query {
    pub fn is_count(&self) -> bool {
        self.select == vec![SelectItem::Count]
    }

    /// Whether the query answers AggregateResult rows (aggregates or GROUP BY).
    pub fn is_aggregate(&self) -> bool {
        !self.group_by.is_empty()
            || self
                .select
                .iter()
                .any(|s| matches!(s, SelectItem::Agg { .. } | SelectItem::DateFn { .. }))
    }

    /// Whether a condition (subqueries included) holds a relative date literal.
    pub fn has_relative_dates(&self) -> bool {
        fn cond(c: &Cond) -> bool {
            match c {
                Cond::And(a, b) | Cond::Or(a, b) => cond(a) || cond(b),
                Cond::Not(a) => cond(a),
                Cond::Cmp { value, .. } => matches!(value, Literal::Relative(_)),
                _ => false,
            }
        }
        self.filter.as_ref().is_some_and(cond)
            || self
                .select
                .iter()
                .any(|s| matches!(s, SelectItem::Subquery(sq) if sq.has_relative_dates()))
    }

    /// The query with its relative date literals resolved on `now` (subqueries included).
    pub fn resolve_dates(&self, now: Timestamp) -> Query {
        fn cond(c: &Cond, now: Timestamp) -> Cond {
            match c {
                Cond::And(a, b) => Cond::And(Box::new(cond(a, now)), Box::new(cond(b, now))),
                Cond::Or(a, b) => Cond::Or(Box::new(cond(a, now)), Box::new(cond(b, now))),
                Cond::Not(a) => Cond::Not(Box::new(cond(a, now))),
                Cond::Cmp {
                    field,
                    func,
                    op,
                    value: Literal::Relative(r),
                } => Cond::Cmp {
                    field: field.clone(),
                    func: *func,
                    op: *op,
                    value: match r.range(now) {
                        Some((a, b)) => Literal::Range(a, b),
                        None => Literal::Null,
                    },
                },
                other => other.clone(),
            }
        }
        let mut q = self.clone();
        q.filter = q.filter.as_ref().map(|c| cond(c, now));
        for s in &mut q.select {
            if let SelectItem::Subquery(sq) = s {
                **sq = sq.resolve_dates(now);
            }
        }
        q
    }
}
