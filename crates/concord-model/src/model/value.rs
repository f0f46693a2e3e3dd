//! Field values and their normalisation.
//!
//! Every value held in a [`crate::model::Record`] is normalised (see [`Value::normalize`]), so
//! the same business value read from two systems compares and hashes the same: `12.50`, `12.5`
//! and `"12.500"` are one decimal; an integral decimal is an integer; text is Unicode NFC;
//! datetimes are UTC milliseconds whatever zone they were written in.

use chrono::{DateTime, FixedOffset, NaiveDate, NaiveDateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use std::fmt;
use std::str::FromStr;
use unicode_normalization::{is_nfc_quick, IsNormalized, UnicodeNormalization};

/// A point in time: milliseconds since 1970-01-01T00:00:00Z. Sub-millisecond precision is
/// truncated towards the past on the way in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

impl Timestamp {
    pub fn from_millis(ms: i64) -> Self {
        Timestamp(ms)
    }
    pub fn millis(self) -> i64 {
        self.0
    }
    pub fn now() -> Self {
        Timestamp(Utc::now().timestamp_millis())
    }
    /// Converts a zoned datetime to UTC milliseconds.
    pub fn from_chrono<Tz: TimeZone>(dt: &DateTime<Tz>) -> Self {
        Timestamp(dt.timestamp_millis())
    }
    /// A datetime written without a zone, read as being in `offset`.
    pub fn from_naive(naive: NaiveDateTime, offset: FixedOffset) -> Result<Self, ValueError> {
        match offset.from_local_datetime(&naive).single() {
            Some(dt) => Ok(Self::from_chrono(&dt)),
            None => Err(ValueError::new("datetime", naive.to_string())),
        }
    }
    /// Parses RFC 3339 (`2024-05-01T10:00:00.123+02:00`, `…Z`) and Salesforce's form with an
    /// offset without colon (`2024-05-01T10:00:00.000+0000`).
    pub fn parse(s: &str) -> Result<Self, ValueError> {
        let t = s.trim();
        if let Ok(dt) = DateTime::parse_from_rfc3339(t) {
            return Ok(Self::from_chrono(&dt));
        }
        if let Ok(dt) = DateTime::parse_from_str(t, "%Y-%m-%dT%H:%M:%S%.f%z") {
            return Ok(Self::from_chrono(&dt));
        }
        Err(ValueError::new("datetime", s))
    }
    pub fn to_chrono(self) -> Option<DateTime<Utc>> {
        DateTime::from_timestamp_millis(self.0)
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with milliseconds: `2024-05-01T08:00:00.123Z`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_chrono() {
            Some(dt) => write!(f, "{}", dt.format("%Y-%m-%dT%H:%M:%S%.3fZ")),
            None => write!(f, "@{}ms", self.0),
        }
    }
}

/// A value that could not be read as the type asked for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid {expected}: {input:?}")]
pub struct ValueError {
    pub expected: &'static str,
    pub input: String,
}

impl ValueError {
    pub fn new(expected: &'static str, input: impl Into<String>) -> Self {
        let mut input = input.into();
        if input.len() > 200 {
            let mut cut = 200;
            while !input.is_char_boundary(cut) {
                cut -= 1;
            }
            input.truncate(cut);
            input.push('…');
        }
        ValueError { expected, input }
    }
}

/// One field value. There is deliberately no float: money and quantities are exact decimals.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    /// Exact decimal, up to 28 significant digits (rust_decimal). Normalised: no trailing zeros,
    /// and an integral value becomes [`Value::Int`] when it fits.
    Decimal(Decimal),
    /// Unicode NFC text.
    Text(String),
    Date(NaiveDate),
    DateTime(Timestamp),
    /// Nested data; encoded as canonical JSON (sorted keys, no white space).
    Json(serde_json::Value),
    /// Binary data (bytea, blob).
    Bytes(Vec<u8>),
}

impl Value {
    /// The normal form every stored value has. Idempotent.
    pub fn normalize(self) -> Value {
        match self {
            Value::Decimal(d) => {
                let d = d.normalize();
                if d.scale() == 0 {
                    if let Ok(i) = i64::try_from(d) {
                        return Value::Int(i);
                    }
                }
                Value::Decimal(d)
            }
            Value::Text(s) => {
                if s.is_ascii() || is_nfc_quick(s.chars()) == IsNormalized::Yes {
                    Value::Text(s)
                } else {
                    Value::Text(s.nfc().collect())
                }
            }
            Value::Json(serde_json::Value::Null) => Value::Null,
            v => v,
        }
    }

    /// True when the value is already in normal form.
    pub fn is_normalized(&self) -> bool {
        match self {
            Value::Decimal(d) => match self.clone().normalize() {
                Value::Decimal(n) => n.scale() == d.scale() && n.mantissa() == d.mantissa(),
                _ => false,
            },
            Value::Text(s) => s.is_ascii() || unicode_normalization::is_nfc(s),
            Value::Json(serde_json::Value::Null) => false,
            _ => true,
        }
    }

    /// Parses an exact decimal from text (`"12.50"`, `"-3"`, `"1e3"`).
    pub fn decimal_str(s: &str) -> Result<Value, ValueError> {
        let t = s.trim();
        let d = Decimal::from_str(t)
            .or_else(|_| Decimal::from_scientific(t))
            .map_err(|_| ValueError::new("decimal", s))?;
        Ok(Value::Decimal(d).normalize())
    }

    /// A single-precision float (SQL `real`) as the decimal it prints as in f32 precision:
    /// 19.45f32 → 19.45, not 19.450000762939453.
    pub fn from_f32(f: f32) -> Result<Value, ValueError> {
        if !f.is_finite() {
            return Err(ValueError::new("finite number", f.to_string()));
        }
        Value::decimal_str(&f.to_string())
    }

    /// A binary float as the decimal it prints as (shortest round-trip form): 12.5 → 12.5,
    /// 0.1 → 0.1. NaN and infinities are errors.
    pub fn from_f64(f: f64) -> Result<Value, ValueError> {
        if !f.is_finite() {
            return Err(ValueError::new("finite number", f.to_string()));
        }
        Value::decimal_str(&f.to_string())
    }

    /// Parses an ISO date `YYYY-MM-DD`.
    pub fn date_str(s: &str) -> Result<Value, ValueError> {
        NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d")
            .map(Value::Date)
            .map_err(|_| ValueError::new("date (YYYY-MM-DD)", s))
    }

    /// Parses a zoned datetime, see [`Timestamp::parse`].
    pub fn datetime_str(s: &str) -> Result<Value, ValueError> {
        Timestamp::parse(s).map(Value::DateTime)
    }

    pub fn text(s: impl Into<String>) -> Value {
        Value::Text(s.into()).normalize()
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The type's name, for messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "integer",
            Value::Decimal(_) => "decimal",
            Value::Text(_) => "text",
            Value::Date(_) => "date",
            Value::DateTime(_) => "datetime",
            Value::Json(_) => "json",
            Value::Bytes(_) => "bytes",
        }
    }
}

impl Value {
    /// The value as plain text, as keys and match keys use it (`42`, `ALFKI`, `2024-01-31`;
    /// JSON in its canonical form; bytes in hex).
    pub fn plain_text(&self) -> String {
        match self {
            Value::Text(s) => s.clone(),
            Value::Date(d) => d.format("%Y-%m-%d").to_string(),
            Value::Bytes(b) => b.iter().map(|x| format!("{x:02x}")).collect(),
            Value::Json(j) => {
                let mut s = String::new();
                super::canonical::canonical_json(j, &mut s);
                s
            }
            other => other.to_string(),
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => f.write_str("null"),
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Decimal(d) => write!(f, "{d}"),
            Value::Text(s) => write!(f, "{s:?}"),
            Value::Date(d) => write!(f, "{}", d.format("%Y-%m-%d")),
            Value::DateTime(t) => write!(f, "{t}"),
            Value::Json(j) => write!(f, "{j}"),
            Value::Bytes(b) => write!(f, "<{} bytes>", b.len()),
        }
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::text(s)
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::text(s)
    }
}
impl From<Decimal> for Value {
    fn from(d: Decimal) -> Self {
        Value::Decimal(d).normalize()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_normalise() {
        assert_eq!(
            Value::decimal_str("12.50").unwrap(),
            Value::decimal_str("12.5").unwrap()
        );
        assert_eq!(
            Value::from_f64(12.5).unwrap(),
            Value::decimal_str("12.500").unwrap()
        );
        assert_eq!(Value::decimal_str("5.000").unwrap(), Value::Int(5));
        assert_eq!(Value::decimal_str("-0.00").unwrap(), Value::Int(0));
        assert_eq!(
            Value::from_f64(0.1).unwrap(),
            Value::decimal_str("0.1").unwrap()
        );
        assert!(Value::decimal_str("abc")
            .unwrap_err()
            .to_string()
            .contains("decimal"));
        assert!(Value::from_f64(f64::NAN).is_err());
        assert!(Value::decimal_str("12.5").unwrap().is_normalized());
        assert!(!Value::Decimal(Decimal::new(1250, 2)).is_normalized());
        assert!(!Value::Decimal(Decimal::new(5, 0)).is_normalized());
    }

    #[test]
    fn datetimes_are_utc_millis() {
        let a = Timestamp::parse("2024-05-01T10:00:00.123+02:00").unwrap();
        let b = Timestamp::parse("2024-05-01T08:00:00.123Z").unwrap();
        let c = Timestamp::parse("2024-05-01T08:00:00.123+0000").unwrap();
        let d = Timestamp::parse("2024-05-01T08:00:00.123999Z").unwrap();
        assert_eq!(a, b);
        assert_eq!(b, c);
        assert_eq!(b, d);
        assert_eq!(b.to_string(), "2024-05-01T08:00:00.123Z");
        assert!(Timestamp::parse("yesterday").is_err());
        let naive =
            NaiveDateTime::parse_from_str("2024-05-01 10:00:00", "%Y-%m-%d %H:%M:%S").unwrap();
        let cet = FixedOffset::east_opt(2 * 3600).unwrap();
        assert_eq!(
            Timestamp::from_naive(naive, cet).unwrap().millis(),
            b.millis() - 123
        );
    }

    #[test]
    fn floats_become_the_decimal_they_print_as() {
        assert_eq!(
            Value::from_f32(19.45).unwrap(),
            Value::decimal_str("19.45").unwrap()
        );
        assert_eq!(Value::from_f32(18.0).unwrap(), Value::Int(18));
        assert_eq!(
            Value::from_f64(0.1 + 0.2).unwrap(),
            Value::decimal_str("0.30000000000000004").unwrap()
        );
    }

    #[test]
    fn text_is_nfc() {
        let composed = Value::text("caf\u{e9}");
        let decomposed = Value::text("cafe\u{301}");
        assert_eq!(composed, decomposed);
    }
}
