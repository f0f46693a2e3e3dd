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

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    /// A string literal: its value, and its form as a LIKE pattern (where `\%` and `\_` stay
    /// escaped and a literal backslash is `\\`).
    Str(String, String),
    Num(String),
    Sym(&'static str),
}

fn lex(q: &str) -> Result<Vec<(Tok, usize)>, SoqlError> {
    let chars: Vec<char> = q.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let err = |at: usize, m: String| SoqlError { message: m, at };
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let start = i;
        if c == '\'' {
            let mut s = String::new();
            let mut pat = String::new();
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(err(start, "unterminated string literal".into())),
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        let e = chars
                            .get(i + 1)
                            .ok_or_else(|| err(i, "unterminated escape".into()))?;
                        let ch = match e {
                            'n' => '\n',
                            'r' => '\r',
                            't' => '\t',
                            'b' => '\u{8}',
                            'f' => '\u{c}',
                            '\'' | '"' | '\\' | '%' | '_' => *e,
                            other => {
                                return Err(err(i, format!("invalid escape sequence \\{other}")))
                            }
                        };
                        s.push(ch);
                        if matches!(ch, '%' | '_' | '\\') {
                            pat.push('\\');
                        }
                        pat.push(ch);
                        i += 2;
                    }
                    Some(ch) => {
                        s.push(*ch);
                        pat.push(*ch);
                        i += 1;
                    }
                }
            }
            out.push((Tok::Str(s, pat), start));
            continue;
        }
        if c.is_ascii_digit() || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit()))
        {
            // Numbers, and date / datetime literals (2024-01-31, 2024-01-31T10:00:00.000+0000).
            let mut s = String::new();
            s.push(c);
            i += 1;
            while let Some(&ch) = chars.get(i) {
                if ch.is_ascii_alphanumeric() || matches!(ch, '.' | '-' | ':' | '+') {
                    s.push(ch);
                    i += 1;
                } else {
                    break;
                }
            }
            out.push((Tok::Num(s), start));
            continue;
        }
        if c.is_alphabetic() || c == '_' {
            let mut s = String::new();
            while let Some(&ch) = chars.get(i) {
                if ch.is_alphanumeric() || ch == '_' || ch == '.' {
                    s.push(ch);
                    i += 1;
                } else {
                    break;
                }
            }
            out.push((Tok::Ident(s), start));
            continue;
        }
        let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
        let sym = match two.as_str() {
            "!=" => Some("!="),
            "<>" => Some("<>"),
            "<=" => Some("<="),
            ">=" => Some(">="),
            _ => None,
        };
        if let Some(s) = sym {
            out.push((Tok::Sym(s), start));
            i += 2;
            continue;
        }
        let one = match c {
            '=' => "=",
            '<' => "<",
            '>' => ">",
            '(' => "(",
            ')' => ")",
            ',' => ",",
            _ => return Err(err(i, format!("unexpected character '{c}'"))),
        };
        out.push((Tok::Sym(one), start));
        i += 1;
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(Tok, usize)>,
    pos: usize,
    len: usize,
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.0)
    }
    fn at(&self) -> usize {
        self.toks.get(self.pos).map_or(self.len, |t| t.1)
    }
    fn fail<T>(&self, m: impl Into<String>) -> Result<T, SoqlError> {
        Err(SoqlError {
            message: m.into(),
            at: self.at(),
        })
    }
    fn unexpected<T>(&self) -> Result<T, SoqlError> {
        match self.peek() {
            None => self.fail("unexpected end of query"),
            Some(Tok::Ident(s)) | Some(Tok::Str(s, _)) | Some(Tok::Num(s)) => {
                self.fail(format!("unexpected token: '{s}'"))
            }
            Some(Tok::Sym(s)) => self.fail(format!("unexpected token: '{s}'")),
        }
    }
    fn keyword(&self, k: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(s)) if s.eq_ignore_ascii_case(k))
    }
    fn eat_keyword(&mut self, k: &str) -> bool {
        if self.keyword(k) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect_keyword(&mut self, k: &str) -> Result<(), SoqlError> {
        if self.eat_keyword(k) {
            Ok(())
        } else {
            self.unexpected()
        }
    }
    fn eat_sym(&mut self, s: &str) -> bool {
        if matches!(self.peek(), Some(Tok::Sym(x)) if *x == s) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn field(&mut self) -> Result<Vec<String>, SoqlError> {
        match self.peek().cloned() {
            Some(Tok::Ident(s)) if !is_reserved(&s) => {
                self.pos += 1;
                if s.split('.').any(str::is_empty) {
                    return self.fail(format!("invalid field path '{s}'"));
                }
                Ok(s.split('.').map(str::to_string).collect())
            }
            _ => self.unexpected(),
        }
    }
    fn number(&mut self) -> Result<u64, SoqlError> {
        match self.peek().cloned() {
            Some(Tok::Num(n)) => {
                self.pos += 1;
                n.parse()
                    .or_else(|_| self.fail(format!("invalid number '{n}'")))
            }
            _ => self.unexpected(),
        }
    }
    fn literal(&mut self) -> Result<Literal, SoqlError> {
        let tok = self.peek().cloned();
        let lit = match tok {
            Some(Tok::Str(s, _)) => Literal::Str(s),
            Some(Tok::Ident(s)) if s.eq_ignore_ascii_case("null") => Literal::Null,
            Some(Tok::Ident(s)) if s.eq_ignore_ascii_case("true") => Literal::Bool(true),
            Some(Tok::Ident(s)) if s.eq_ignore_ascii_case("false") => Literal::Bool(false),
            Some(Tok::Num(n)) => {
                if let Ok(d) = Decimal::from_str(&n) {
                    Literal::Number(d)
                } else if let Ok(d) = chrono::NaiveDate::parse_from_str(&n, "%Y-%m-%d") {
                    Literal::Date(d)
                } else if let Ok(t) = Timestamp::parse(&n) {
                    Literal::DateTime(t)
                } else {
                    return self.fail(format!("invalid literal '{n}'"));
                }
            }
            _ => return self.unexpected(),
        };
        self.pos += 1;
        Ok(lit)
    }
    fn cond(&mut self) -> Result<Cond, SoqlError> {
        let mut left = self.and_cond()?;
        while self.eat_keyword("OR") {
            let right = self.and_cond()?;
            left = Cond::Or(Box::new(left), Box::new(right));
        }
        Ok(left)
    }
    fn and_cond(&mut self) -> Result<Cond, SoqlError> {
        let mut left = self.unary()?;
        while self.eat_keyword("AND") {
            let right = self.unary()?;
            left = Cond::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }
    fn unary(&mut self) -> Result<Cond, SoqlError> {
        if self.eat_keyword("NOT") {
            return Ok(Cond::Not(Box::new(self.unary()?)));
        }
        if self.eat_sym("(") {
            let c = self.cond()?;
            if !self.eat_sym(")") {
                return self.unexpected();
            }
            return Ok(c);
        }
        let field = self.field()?;
        let negated = self.eat_keyword("NOT");
        if self.eat_keyword("LIKE") {
            return match self.peek().cloned() {
                Some(Tok::Str(_, pattern)) => {
                    self.pos += 1;
                    Ok(Cond::Like {
                        field,
                        pattern,
                        negated,
                    })
                }
                _ => self.fail("LIKE needs a string pattern"),
            };
        }
        if self.eat_keyword("IN") {
            if !self.eat_sym("(") {
                return self.unexpected();
            }
            let mut values = vec![self.literal()?];
            while self.eat_sym(",") {
                values.push(self.literal()?);
            }
            if !self.eat_sym(")") {
                return self.unexpected();
            }
            return Ok(Cond::In {
                field,
                values,
                negated,
            });
        }
        if negated {
            return self.unexpected();
        }
        let op = match self.peek() {
            Some(Tok::Sym("=")) => CmpOp::Eq,
            Some(Tok::Sym("!=")) | Some(Tok::Sym("<>")) => CmpOp::Ne,
            Some(Tok::Sym("<")) => CmpOp::Lt,
            Some(Tok::Sym(">")) => CmpOp::Gt,
            Some(Tok::Sym("<=")) => CmpOp::Le,
            Some(Tok::Sym(">=")) => CmpOp::Ge,
            _ => return self.unexpected(),
        };
        self.pos += 1;
        let value = self.literal()?;
        Ok(Cond::Cmp { field, op, value })
    }
}

fn is_reserved(s: &str) -> bool {
    [
        "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "LIKE", "IN", "ORDER", "BY", "LIMIT",
        "OFFSET", "NULL", "TRUE", "FALSE",
    ]
    .iter()
    .any(|k| s.eq_ignore_ascii_case(k))
}

/// Parses a query.
pub fn parse(q: &str) -> Result<Query, SoqlError> {
    let toks = lex(q)?;
    let mut p = Parser {
        toks,
        pos: 0,
        len: q.chars().count(),
    };
    p.expect_keyword("SELECT")?;
    let mut select = Vec::new();
    loop {
        if p.keyword("COUNT") {
            p.pos += 1;
            if !(p.eat_sym("(") && p.eat_sym(")")) {
                return p.fail("only COUNT() is supported");
            }
            select.push(SelectItem::Count);
        } else {
            select.push(SelectItem::Field(p.field()?));
        }
        if !p.eat_sym(",") {
            break;
        }
    }
    if select.contains(&SelectItem::Count) && select.len() > 1 {
        return p.fail("COUNT() cannot be combined with fields");
    }
    p.expect_keyword("FROM")?;
    let object = match p.field()? {
        path if path.len() == 1 => path.into_iter().next().expect("one"),
        _ => return p.fail("invalid object name"),
    };
    let filter = if p.eat_keyword("WHERE") {
        Some(p.cond()?)
    } else {
        None
    };
    let mut order = Vec::new();
    if p.eat_keyword("ORDER") {
        p.expect_keyword("BY")?;
        loop {
            let field = p.field()?;
            let descending = if p.eat_keyword("DESC") {
                true
            } else {
                p.eat_keyword("ASC");
                false
            };
            let mut nulls_first = !descending;
            if p.eat_keyword("NULLS") {
                nulls_first = if p.eat_keyword("FIRST") {
                    true
                } else {
                    p.expect_keyword("LAST")?;
                    false
                };
            }
            order.push(OrderItem {
                field,
                descending,
                nulls_first,
            });
            if !p.eat_sym(",") {
                break;
            }
        }
    }
    let limit = if p.eat_keyword("LIMIT") {
        Some(p.number()?)
    } else {
        None
    };
    let offset = if p.eat_keyword("OFFSET") {
        Some(p.number()?)
    } else {
        None
    };
    if p.peek().is_some() {
        return p.unexpected();
    }
    Ok(Query {
        select,
        object,
        filter,
        order,
        limit,
        offset,
    })
}

fn fold(v: &Value) -> Value {
    match v {
        Value::Text(s) => Value::Text(s.to_lowercase()),
        other => other.clone(),
    }
}

/// Orders two values of a field (case-insensitive text); `None` when they cannot be compared.
pub fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (fold(a), fold(b)) {
        (Value::Text(x), Value::Text(y)) => Some(x.cmp(&y)),
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(&y)),
        (Value::Int(x), Value::Decimal(y)) => Some(Decimal::from(x).cmp(&y)),
        (Value::Decimal(x), Value::Int(y)) => Some(x.cmp(&Decimal::from(y))),
        (Value::Decimal(x), Value::Decimal(y)) => Some(x.cmp(&y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(&y)),
        (Value::Date(x), Value::Date(y)) => Some(x.cmp(&y)),
        (Value::DateTime(x), Value::DateTime(y)) => Some(x.cmp(&y)),
        (Value::Date(x), Value::DateTime(y)) => {
            let t = Timestamp::from_chrono(&x.and_hms_opt(0, 0, 0)?.and_utc());
            Some(t.cmp(&y))
        }
        (Value::DateTime(x), Value::Date(y)) => {
            let t = Timestamp::from_chrono(&y.and_hms_opt(0, 0, 0)?.and_utc());
            Some(x.cmp(&t))
        }
        _ => None,
    }
}

/// SOQL LIKE: `%` any run, `_` one character, `\%` `\_` literal; case-insensitive.
pub fn like(value: &str, pattern: &str) -> bool {
    let v: Vec<char> = value.to_lowercase().chars().collect();
    let mut p: Vec<(char, bool)> = Vec::new(); // (char, is_wildcard)
    let mut chars = pattern
        .to_lowercase()
        .chars()
        .collect::<Vec<_>>()
        .into_iter()
        .peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    p.push((n, false));
                }
            }
            '%' | '_' => p.push((c, true)),
            other => p.push((other, false)),
        }
    }
    fn m(v: &[char], p: &[(char, bool)]) -> bool {
        match p.first() {
            None => v.is_empty(),
            Some(('%', true)) => (0..=v.len()).any(|i| m(&v[i..], &p[1..])),
            Some(('_', true)) => !v.is_empty() && m(&v[1..], &p[1..]),
            Some((c, _)) => v.first() == Some(c) && m(&v[1..], &p[1..]),
        }
    }
    m(&v, &p)
}

/// Evaluates a condition; `get` resolves a field path to its value (Null when absent).
pub fn eval(c: &Cond, get: &dyn Fn(&[String]) -> Value) -> bool {
    match c {
        Cond::And(a, b) => eval(a, get) && eval(b, get),
        Cond::Or(a, b) => eval(a, get) || eval(b, get),
        Cond::Not(a) => !eval(a, get),
        Cond::Cmp { field, op, value } => {
            let v = get(field);
            let lit = value.to_value();
            match (op, v.is_null(), lit.is_null()) {
                (CmpOp::Eq, true, true) => true,
                (CmpOp::Ne, true, true) => false,
                (CmpOp::Eq, _, _) if v.is_null() || lit.is_null() => false,
                (CmpOp::Ne, _, _) if v.is_null() || lit.is_null() => true,
                (_, true, _) | (_, _, true) => false,
                _ => match compare(&v, &lit) {
                    None => matches!(op, CmpOp::Ne),
                    Some(o) => match op {
                        CmpOp::Eq => o == Ordering::Equal,
                        CmpOp::Ne => o != Ordering::Equal,
                        CmpOp::Lt => o == Ordering::Less,
                        CmpOp::Gt => o == Ordering::Greater,
                        CmpOp::Le => o != Ordering::Greater,
                        CmpOp::Ge => o != Ordering::Less,
                    },
                },
            }
        }
        Cond::Like {
            field,
            pattern,
            negated,
        } => {
            let hit = match get(field) {
                Value::Null => false,
                Value::Text(s) => like(&s, pattern),
                other => like(&other.to_string(), pattern),
            };
            hit != *negated
        }
        Cond::In {
            field,
            values,
            negated,
        } => {
            let v = get(field);
            let hit = values.iter().any(|l| {
                let lv = l.to_value();
                if v.is_null() || lv.is_null() {
                    v.is_null() && lv.is_null()
                } else {
                    compare(&v, &lv) == Some(Ordering::Equal)
                }
            });
            hit != *negated
        }
    }
}

/// Orders rows by the query's ORDER BY (stable; ties keep their input order).
pub fn sort<T>(rows: &mut [T], order: &[OrderItem], get: &dyn Fn(&T, &[String]) -> Value) {
    rows.sort_by(|a, b| {
        for o in order {
            let (va, vb) = (get(a, &o.field), get(b, &o.field));
            let ord = match (va.is_null(), vb.is_null()) {
                (true, true) => Ordering::Equal,
                (true, false) => {
                    if o.nulls_first {
                        Ordering::Less
                    } else {
                        Ordering::Greater
                    }
                }
                (false, true) => {
                    if o.nulls_first {
                        Ordering::Greater
                    } else {
                        Ordering::Less
                    }
                }
                (false, false) => {
                    let c = compare(&va, &vb).unwrap_or(Ordering::Equal);
                    if o.descending {
                        c.reverse()
                    } else {
                        c
                    }
                }
            };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        Ordering::Equal
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn parses_the_supported_subset() {
        let q = parse(
            "select Id, Name, Account.Name FROM Contact WHERE (LastName = 'O\\'Brien' OR Email LIKE '%@demo.net') \
             AND NOT Amount__c < 10.5 AND Stage IN ('A', 'B') AND CreatedDate >= 2024-01-31T10:00:00.000+0000 \
             AND Birthdate != null ORDER BY Name DESC NULLS LAST, Id LIMIT 10 OFFSET 5",
        )
        .unwrap();
        assert_eq!(q.object, "Contact");
        assert_eq!(
            q.select[2],
            SelectItem::Field(vec!["Account".into(), "Name".into()])
        );
        assert_eq!(q.limit, Some(10));
        assert_eq!(q.offset, Some(5));
        assert_eq!(q.order.len(), 2);
        assert!(q.order[0].descending && !q.order[0].nulls_first);
        assert!(!q.order[1].descending && q.order[1].nulls_first);
        assert!(parse("SELECT COUNT() FROM Account").unwrap().is_count());
    }

    #[test]
    fn malformed_queries_say_where() {
        for (q, want) in [
            ("SELECT FROM Account", "unexpected token: 'FROM'"),
            ("SELECT Id FROM", "unexpected end of query"),
            (
                "SELECT Id FROM Account WHERE Name = 'x",
                "unterminated string",
            ),
            ("SELECT Id FROM Account LIMIT x", "unexpected token: 'x'"),
            ("SELECT Id, COUNT() FROM Account", "COUNT()"),
            (
                "SELECT Id FROM Account WHERE Name ~ 1",
                "unexpected character",
            ),
        ] {
            let e = parse(q).unwrap_err();
            assert!(e.message.contains(want), "{q}: {e:?}");
        }
    }

    #[test]
    fn evaluates_like_salesforce() {
        let rec: BTreeMap<&str, Value> = [
            ("Name", Value::text("Acme Corp")),
            ("Amount", Value::decimal_str("12.50").unwrap()),
            ("Close", Value::date_str("2024-02-01").unwrap()),
        ]
        .into_iter()
        .collect();
        let get = |p: &[String]| rec.get(p[0].as_str()).cloned().unwrap_or(Value::Null);
        let t = |w: &str| {
            eval(
                &parse(&format!("SELECT Id FROM X WHERE {w}"))
                    .unwrap()
                    .filter
                    .unwrap(),
                &get,
            )
        };
        assert!(t("Name = 'acme corp'"), "case-insensitive equality");
        assert!(t("Name LIKE 'ac%'") && !t("Name NOT LIKE 'ac%'") && t("Name LIKE '_cme%'"));
        assert!(t("Amount = 12.5") && t("Amount > 12") && !t("Amount < 12"));
        assert!(t("Missing = null") && !t("Missing != null") && t("Name != null"));
        assert!(t("Amount IN (1, 12.5)") && t("Name NOT IN ('x')"));
        assert!(t("Close > 2024-01-31 AND Close < 2024-02-02T00:00:00Z"));
        assert!(t("NOT (Name = 'x' OR Amount < 1)"));
        assert!(!t("Missing > 3"), "null compares false");
        assert!(like("50%", "50\\%") && !like("500", "50\\%"));
    }

    #[test]
    fn orders_with_nulls_first_or_last() {
        let mut rows = vec![
            Value::text("b"),
            Value::Null,
            Value::text("A"),
            Value::text("c"),
        ];
        let q = parse("SELECT Id FROM X ORDER BY Name").unwrap();
        sort(&mut rows, &q.order, &|v, _| v.clone());
        assert_eq!(
            rows,
            vec![
                Value::Null,
                Value::text("A"),
                Value::text("b"),
                Value::text("c")
            ]
        );
        let q = parse("SELECT Id FROM X ORDER BY Name DESC").unwrap();
        sort(&mut rows, &q.order, &|v, _| v.clone());
        assert_eq!(
            rows[3],
            Value::Null,
            "descending puts nulls last by default"
        );
        let q = parse("SELECT Id FROM X ORDER BY Name DESC NULLS FIRST").unwrap();
        sort(&mut rows, &q.order, &|v, _| v.clone());
        assert_eq!(rows[0], Value::Null);
    }
}
