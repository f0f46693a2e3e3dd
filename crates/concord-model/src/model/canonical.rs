//! The canonical encoding of a record's fields and its content hash.
//!
//! Layout (version 1), all integers LEB128, signed ones zigzag first; specified with examples in
//! `docs/design.md`:
//!
//! ```text
//! record := 0x01 count field*            fields in strictly increasing byte order of name
//! field  := len name-utf8 value
//! value  := 0x01 | 0x02                   false | true
//!         | 0x03 zigzag(i64)              integer
//!         | 0x04 zigzag(i128) scale-u8    decimal mantissa and scale, normalised
//!         | 0x05 len utf8                 text, NFC
//!         | 0x06 zigzag(days since 1970-01-01)
//!         | 0x07 zigzag(ms since 1970-01-01T00:00:00Z)
//!         | 0x08 len canonical-json       sorted keys, no white space
//!         | 0x09 len bytes                binary
//! ```
//!
//! Nulls are never encoded (a null field is an absent field). The decoder accepts exactly the
//! bytes the encoder produces: anything else, including a non-normalised value or fields out of
//! order, is an error, so one record has one encoding and one hash.

use super::record::Fields;
use super::value::{Timestamp, Value};
use super::varint::{self, VarintError};
use chrono::{Datelike, NaiveDate};
use rust_decimal::Decimal;
use std::fmt;

/// The canonical format's version byte.
pub const FORMAT_V1: u8 = 0x01;

const T_FALSE: u8 = 0x01;
const T_TRUE: u8 = 0x02;
const T_INT: u8 = 0x03;
const T_DECIMAL: u8 = 0x04;
const T_TEXT: u8 = 0x05;
const T_DATE: u8 = 0x06;
const T_DATETIME: u8 = 0x07;
const T_JSON: u8 = 0x08;
const T_BYTES: u8 = 0x09;

/// blake3 of a record's canonical encoding.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContentHash(pub [u8; 32]);

impl ContentHash {
    pub fn of_bytes(canonical: &[u8]) -> Self {
        ContentHash(*blake3::hash(canonical).as_bytes())
    }
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentHash({}…)", &self.to_hex()[..16])
    }
}

impl fmt::Display for ContentHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

/// Why bytes are not a canonical record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid canonical record at byte {offset}: {reason}")]
pub struct DecodeError {
    pub offset: usize,
    pub reason: String,
}

fn err(offset: usize, reason: impl Into<String>) -> DecodeError {
    DecodeError {
        offset,
        reason: reason.into(),
    }
}

/// Appends the canonical encoding of `fields` to `out`.
pub fn encode_into(fields: &Fields, out: &mut Vec<u8>) {
    out.push(FORMAT_V1);
    varint::put_u64(out, fields.len() as u64);
    for (name, value) in fields.iter() {
        varint::put_u64(out, name.len() as u64);
        out.extend_from_slice(name.as_bytes());
        encode_value(value, out);
    }
}

/// Hashes `fields`, using `buf` as scratch space (cleared first), so a loop can reuse one buffer.
pub fn hash_with(fields: &Fields, buf: &mut Vec<u8>) -> ContentHash {
    buf.clear();
    encode_into(fields, buf);
    ContentHash::of_bytes(buf)
}

const EPOCH_DAYS_FROM_CE: i32 = 719_163; // NaiveDate 1970-01-01 .num_days_from_ce()

fn encode_value(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Null => debug_assert!(false, "nulls are never stored in Fields"),
        Value::Bool(false) => out.push(T_FALSE),
        Value::Bool(true) => out.push(T_TRUE),
        Value::Int(i) => {
            out.push(T_INT);
            varint::put_u64(out, varint::zigzag64(*i));
        }
        Value::Decimal(d) => {
            out.push(T_DECIMAL);
            varint::put_u128(out, varint::zigzag128(d.mantissa()));
            out.push(d.scale() as u8);
        }
        Value::Text(s) => {
            out.push(T_TEXT);
            varint::put_u64(out, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
        Value::Date(d) => {
            out.push(T_DATE);
            let days = (d.num_days_from_ce() - EPOCH_DAYS_FROM_CE) as i64;
            varint::put_u64(out, varint::zigzag64(days));
        }
        Value::DateTime(t) => {
            out.push(T_DATETIME);
            varint::put_u64(out, varint::zigzag64(t.millis()));
        }
        Value::Bytes(b) => {
            out.push(T_BYTES);
            varint::put_u64(out, b.len() as u64);
            out.extend_from_slice(b);
        }
        Value::Json(j) => {
            out.push(T_JSON);
            let mut s = String::new();
            canonical_json(j, &mut s);
            varint::put_u64(out, s.len() as u64);
            out.extend_from_slice(s.as_bytes());
        }
    }
}

/// Writes `j` as JSON with object keys in byte order and no white space.
pub fn canonical_json(j: &serde_json::Value, out: &mut String) {
    use serde_json::Value as J;
    match j {
        J::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).expect("string serialises"));
                out.push(':');
                canonical_json(&map[k], out);
            }
            out.push('}');
        }
        J::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&serde_json::to_string(other).expect("scalar serialises")),
    }
}

/// The canonical encoding of a single value (tag and payload, no record frame); used where a
/// value is stored on its own (conflict entries). Null encodes as the empty string.
pub fn value_bytes(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    if !value.is_null() {
        encode_value(&value.clone().normalize(), &mut out);
    }
    out
}

/// Decodes [`value_bytes`].
pub fn value_from_bytes(bytes: &[u8]) -> Result<Value, DecodeError> {
    if bytes.is_empty() {
        return Ok(Value::Null);
    }
    let mut r = Reader { b: bytes, pos: 0 };
    let v = decode_value(&mut r)?;
    if r.pos != bytes.len() {
        return Err(err(r.pos, "trailing bytes after the value"));
    }
    if !v.is_normalized() {
        return Err(err(0, "value not in normal form"));
    }
    Ok(v)
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Result<u8, DecodeError> {
        let v = *self
            .b
            .get(self.pos)
            .ok_or_else(|| err(self.pos, "unexpected end"))?;
        self.pos += 1;
        Ok(v)
    }
    fn varint(&mut self, bits: u32) -> Result<u128, DecodeError> {
        let at = self.pos;
        varint::get_u128(self.b, &mut self.pos, bits).map_err(|e| match e {
            VarintError::Truncated => err(at, "unexpected end inside an integer"),
            VarintError::Overlong => err(at, "integer too large or not minimally encoded"),
        })
    }
    fn len(&mut self) -> Result<usize, DecodeError> {
        let at = self.pos;
        let n = self.varint(64)? as u64;
        if n > (self.b.len() - self.pos) as u64 {
            return Err(err(at, format!("length {n} runs past the end")));
        }
        Ok(n as usize)
    }
    fn str(&mut self) -> Result<&'a str, DecodeError> {
        let n = self.len()?;
        let at = self.pos;
        let s = std::str::from_utf8(&self.b[at..at + n]).map_err(|_| err(at, "invalid UTF-8"))?;
        self.pos += n;
        Ok(s)
    }
}

/// Shares field-name allocations between decoded records: records of one object have the same
/// field names, so a scan decodes each name once and later records reuse it (cheaper decoding,
/// and merges compare names by pointer).
#[derive(Debug, Default)]
pub struct NameCache {
    names: Vec<std::sync::Arc<str>>,
}

impl NameCache {
    pub fn new() -> Self {
        Self::default()
    }

    fn get(&mut self, position: usize, name: &str) -> std::sync::Arc<str> {
        if let Some(n) = self.names.get(position) {
            if &**n == name {
                return n.clone();
            }
        }
        if let Some(n) = self.names.iter().find(|n| &***n == name) {
            return n.clone();
        }
        let n: std::sync::Arc<str> = name.into();
        if self.names.len() < 4096 {
            self.names.push(n.clone());
        }
        n
    }
}

/// Decodes canonical bytes. Accepts only what [`encode_into`] produces.
pub fn decode(bytes: &[u8]) -> Result<Fields, DecodeError> {
    decode_with(bytes, &mut NameCache::new())
}

/// [`decode`], sharing field names through `names`.
pub fn decode_with(bytes: &[u8], names: &mut NameCache) -> Result<Fields, DecodeError> {
    let mut r = Reader { b: bytes, pos: 0 };
    let version = r.byte()?;
    if version != FORMAT_V1 {
        return Err(err(
            0,
            format!("unknown canonical format version {version}"),
        ));
    }
    let count = r.varint(64)? as u64;
    if count > bytes.len() as u64 {
        return Err(err(1, format!("field count {count} larger than the input")));
    }
    let mut fields: Vec<(std::sync::Arc<str>, Value)> = Vec::with_capacity(count as usize);
    let mut prev: Option<&str> = None;
    for i in 0..count as usize {
        let at = r.pos;
        let name = r.str()?;
        if let Some(p) = prev {
            if p.as_bytes() >= name.as_bytes() {
                return Err(err(at, format!("field {name:?} out of order or repeated")));
            }
        }
        prev = Some(name);
        let vat = r.pos;
        let value = decode_value(&mut r)?;
        if !value.is_normalized() {
            return Err(err(
                vat,
                format!("value of field {name:?} is not in normal form"),
            ));
        }
        fields.push((names.get(i, name), value));
    }
    if r.pos != bytes.len() {
        return Err(err(r.pos, "trailing bytes after the last field"));
    }
    Ok(Fields::from_sorted_unique(fields))
}

fn decode_value(r: &mut Reader<'_>) -> Result<Value, DecodeError> {
    let at = r.pos;
    let tag = r.byte()?;
    Ok(match tag {
        T_FALSE => Value::Bool(false),
        T_TRUE => Value::Bool(true),
        T_INT => Value::Int(varint::unzigzag64(r.varint(64)? as u64)),
        T_DECIMAL => {
            let mantissa = varint::unzigzag128(r.varint(128)?);
            let sat = r.pos;
            let scale = r.byte()? as u32;
            Decimal::try_from_i128_with_scale(mantissa, scale)
                .map(Value::Decimal)
                .map_err(|_| err(sat, "decimal out of range"))?
        }
        T_TEXT => Value::Text(r.str()?.to_string()),
        T_DATE => {
            let days = varint::unzigzag64(r.varint(64)? as u64);
            let d = i32::try_from(days)
                .ok()
                .and_then(|d| d.checked_add(EPOCH_DAYS_FROM_CE))
                .and_then(NaiveDate::from_num_days_from_ce_opt)
                .ok_or_else(|| err(at, "date out of range"))?;
            Value::Date(d)
        }
        T_DATETIME => {
            let ms = varint::unzigzag64(r.varint(64)? as u64);
            let t = Timestamp(ms);
            if t.to_chrono().is_none() {
                return Err(err(at, "datetime out of range"));
            }
            Value::DateTime(t)
        }
        T_JSON => {
            let s = r.str()?;
            let j: serde_json::Value =
                serde_json::from_str(s).map_err(|e| err(at, format!("invalid JSON: {e}")))?;
            let mut again = String::with_capacity(s.len());
            canonical_json(&j, &mut again);
            if again != s {
                return Err(err(at, "JSON not in canonical form"));
            }
            Value::Json(j)
        }
        T_BYTES => {
            let n = r.len()?;
            let b = r.b[r.pos..r.pos + n].to_vec();
            r.pos += n;
            Value::Bytes(b)
        }
        other => return Err(err(at, format!("unknown value tag 0x{other:02x}"))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Fields {
        Fields::new()
            .with("Name", "Acme")
            .with("Amount", Value::decimal_str("12.50").unwrap())
            .with("Count", 3i64)
            .with("Active", true)
            .with("Since", Value::date_str("2024-02-29").unwrap())
            .with(
                "Seen",
                Value::datetime_str("2024-05-01T08:00:00.123Z").unwrap(),
            )
            .with(
                "Meta",
                Value::Json(serde_json::json!({"b": [1, 2], "a": {"z": null}})),
            )
    }

    #[test]
    fn round_trips() {
        let f = sample();
        let b = f.canonical_bytes();
        assert_eq!(decode(&b).unwrap(), f);
    }

    #[test]
    fn golden_bytes_are_stable() {
        // A change to this test is a change of the on-disk format and of every stored hash.
        let f = Fields::new().with("a", 1i64).with("b", "x");
        assert_eq!(
            f.canonical_bytes(),
            vec![1, 2, 1, b'a', 3, 2, 1, b'b', 5, 1, b'x']
        );
        assert_eq!(
            f.content_hash().to_hex(),
            blake3::hash(&[1, 2, 1, b'a', 3, 2, 1, b'b', 5, 1, b'x'])
                .to_hex()
                .to_string()
        );
    }

    #[test]
    fn rejects_non_canonical_input() {
        let good = Fields::new()
            .with("a", 1i64)
            .with("b", "x")
            .canonical_bytes();
        // Fields swapped.
        let swapped = vec![1, 2, 1, b'b', 5, 1, b'x', 1, b'a', 3, 2];
        assert!(decode(&swapped)
            .unwrap_err()
            .reason
            .contains("out of order"));
        // Truncated.
        for cut in 0..good.len() {
            assert!(decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        // Trailing.
        let mut t = good.clone();
        t.push(0);
        assert!(decode(&t).is_err());
        // Unnormalised decimal 12.50 (mantissa 1250, scale 2).
        let mut d = vec![1, 1, 1, b'd', T_DECIMAL];
        varint::put_u128(&mut d, varint::zigzag128(1250));
        d.push(2);
        assert!(decode(&d).unwrap_err().reason.contains("normal form"));
        // Unknown version and tag.
        assert!(decode(&[2, 0]).is_err());
        assert!(decode(&[1, 1, 1, b'a', 0x7f])
            .unwrap_err()
            .reason
            .contains("tag"));
        // Non-canonical JSON.
        let mut j = vec![1, 1, 1, b'j', T_JSON, 9];
        j.extend_from_slice(b"{\"a\": 1 }");
        assert!(decode(&j).is_err());
    }

    #[test]
    fn equal_business_values_hash_equal() {
        let a = Fields::new()
            .with("amount", Value::decimal_str("12.50").unwrap())
            .with(
                "at",
                Value::datetime_str("2024-05-01T10:00:00+02:00").unwrap(),
            );
        let b = Fields::new()
            .with(
                "at",
                Value::datetime_str("2024-05-01T08:00:00.000+0000").unwrap(),
            )
            .with("amount", Value::from_f64(12.5).unwrap());
        assert_eq!(a.content_hash(), b.content_hash());
    }
}
