//! The lexer and the recursive-descent parser of the SOQL subset.

use super::*;

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
            ':' => ":",
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
            Some(Tok::Ident(s)) => {
                let upper = s.to_ascii_uppercase();
                let Some(name) = RELATIVE_DATES
                    .iter()
                    .find(|d| d.trim_end_matches(":n") == upper)
                else {
                    return self.unexpected();
                };
                self.pos += 1;
                let mut n = 1;
                if name.ends_with(":n") {
                    if !self.eat_sym(":") {
                        return self.fail(format!("{upper} needs a number: {upper}:n"));
                    }
                    n = self.number()? as i64;
                }
                return Ok(Literal::Relative(RelativeDate { name, n }));
            }
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
        let (field, func) = self.field_or_date_fn()?;
        if func.is_some() {
            // Only comparisons take a date function.
            if matches!(self.peek(), Some(Tok::Ident(_))) {
                return self.unexpected();
            }
        }
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
        Ok(Cond::Cmp {
            field,
            func,
            op,
            value,
        })
    }

    /// A field, or a date function of one (`CALENDAR_YEAR(CloseDate)`).
    fn field_or_date_fn(&mut self) -> Result<(Vec<String>, Option<DateFn>), SoqlError> {
        if let (Some(Tok::Ident(name)), Some((Tok::Sym("("), _))) =
            (self.peek().cloned(), self.toks.get(self.pos + 1))
        {
            let Some(func) = DateFn::from_name(&name) else {
                return self.fail(format!("unknown function {name}"));
            };
            self.pos += 2;
            let field = self.field()?;
            if !self.eat_sym(")") {
                return self.unexpected();
            }
            return Ok((field, Some(func)));
        }
        Ok((self.field()?, None))
    }

    /// An alias after an aggregate or date function (an identifier that is no keyword).
    fn alias(&mut self) -> Option<String> {
        match self.peek().cloned() {
            Some(Tok::Ident(a)) if !is_reserved(&a) && !a.contains('.') => {
                self.pos += 1;
                Some(a)
            }
            _ => None,
        }
    }

    /// One SELECT item.
    fn select_item(&mut self, inner: bool) -> Result<SelectItem, SoqlError> {
        if self.eat_sym("(") {
            if inner {
                return self.fail("a subquery cannot hold a subquery");
            }
            let q = self.query(true)?;
            if !self.eat_sym(")") {
                return self.unexpected();
            }
            return Ok(SelectItem::Subquery(Box::new(q)));
        }
        let name = match self.peek().cloned() {
            Some(Tok::Ident(n)) => n,
            _ => return self.unexpected(),
        };
        if !matches!(self.toks.get(self.pos + 1), Some((Tok::Sym("("), _))) {
            return Ok(SelectItem::Field(self.field()?));
        }
        if name.eq_ignore_ascii_case("COUNT")
            && matches!(self.toks.get(self.pos + 2), Some((Tok::Sym(")"), _)))
        {
            self.pos += 3;
            return Ok(SelectItem::Count);
        }
        if let Some(func) = AggFn::from_name(&name) {
            self.pos += 2;
            let field = self.field()?;
            if !self.eat_sym(")") {
                return self.unexpected();
            }
            let alias = self.alias();
            return Ok(SelectItem::Agg { func, field, alias });
        }
        if let Some(func) = DateFn::from_name(&name) {
            self.pos += 2;
            let field = self.field()?;
            if !self.eat_sym(")") {
                return self.unexpected();
            }
            let alias = self.alias();
            return Ok(SelectItem::DateFn { func, field, alias });
        }
        self.fail(format!("unknown function {name}"))
    }

    /// A query (`inner`: a subquery, which ends at its closing parenthesis).
    fn query(&mut self, inner: bool) -> Result<Query, SoqlError> {
        self.expect_keyword("SELECT")?;
        let mut select = Vec::new();
        loop {
            select.push(self.select_item(inner)?);
            if !self.eat_sym(",") {
                break;
            }
        }
        if select.contains(&SelectItem::Count) && select.len() > 1 {
            return self.fail("COUNT() cannot be combined with fields");
        }
        self.expect_keyword("FROM")?;
        let object = match self.field()? {
            path if path.len() == 1 => path.into_iter().next().expect("one"),
            _ => return self.fail("invalid object name"),
        };
        let filter = if self.eat_keyword("WHERE") {
            Some(self.cond()?)
        } else {
            None
        };
        let mut group_by = Vec::new();
        if !inner && self.eat_keyword("GROUP") {
            self.expect_keyword("BY")?;
            loop {
                let (field, func) = self.field_or_date_fn()?;
                group_by.push(GroupItem { field, func });
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        if self.keyword("HAVING") {
            return self.fail("HAVING is not supported by the sandbox");
        }
        let mut order = Vec::new();
        if self.eat_keyword("ORDER") {
            self.expect_keyword("BY")?;
            loop {
                let field = self.field()?;
                let descending = if self.eat_keyword("DESC") {
                    true
                } else {
                    self.eat_keyword("ASC");
                    false
                };
                let mut nulls_first = !descending;
                if self.eat_keyword("NULLS") {
                    nulls_first = if self.eat_keyword("FIRST") {
                        true
                    } else {
                        self.expect_keyword("LAST")?;
                        false
                    };
                }
                order.push(OrderItem {
                    field,
                    descending,
                    nulls_first,
                });
                if !self.eat_sym(",") {
                    break;
                }
            }
        }
        let limit = if self.eat_keyword("LIMIT") {
            Some(self.number()?)
        } else {
            None
        };
        let offset = if self.eat_keyword("OFFSET") {
            Some(self.number()?)
        } else {
            None
        };
        let for_clause = if !inner && self.eat_keyword("FOR") {
            Some(if self.eat_keyword("VIEW") {
                ForClause::View
            } else if self.eat_keyword("REFERENCE") {
                ForClause::Reference
            } else {
                self.expect_keyword("UPDATE")?;
                ForClause::Update
            })
        } else {
            None
        };
        let aggregate = select
            .iter()
            .any(|s| matches!(s, SelectItem::Agg { .. } | SelectItem::DateFn { .. }));
        if aggregate || !group_by.is_empty() {
            // Every plain field of an aggregate query must be grouped.
            for s in &select {
                match s {
                    SelectItem::Field(f)
                        if !group_by.iter().any(|g| g.func.is_none() && &g.field == f) =>
                    {
                        return self.fail(format!(
                            "Field must be grouped or aggregated: {}",
                            f.join(".")
                        ));
                    }
                    SelectItem::Subquery(_) | SelectItem::Count => {
                        return self.fail("an aggregate query takes no subquery or COUNT()");
                    }
                    _ => {}
                }
            }
        }
        Ok(Query {
            select,
            object,
            filter,
            group_by,
            order,
            limit,
            offset,
            for_clause,
        })
    }
}

fn is_reserved(s: &str) -> bool {
    [
        "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "LIKE", "IN", "ORDER", "BY", "LIMIT",
        "OFFSET", "NULL", "TRUE", "FALSE", "GROUP", "HAVING", "FOR", "ASC", "DESC", "NULLS",
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
    let q = p.query(false)?;
    if p.peek().is_some() {
        return p.unexpected();
    }
    Ok(q)
}
