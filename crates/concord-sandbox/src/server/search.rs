//! SOSL: `GET /search?q=FIND {…} [IN ALL|NAME|EMAIL|PHONE FIELDS]
//! [RETURNING Object[(fields [WHERE …] [ORDER BY …] [LIMIT n])], …] [LIMIT n]`. Each RETURNING
//! part runs as the SOQL query it spells; a record matches when every word of one of the
//! search's OR alternatives occurs in one of its searched fields (case-insensitive, `*` any
//! run of characters, `?` one, "quoted phrases" kept whole).

use super::state::*;
use crate::org::{QueryResult, SfError};
use crate::schema::{FieldType, ObjectDef};
use crate::soql;
use axum::extract::{Path, Query as Q, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value as J};

#[derive(serde::Deserialize)]
pub(crate) struct SearchParam {
    q: Option<String>,
}

fn malformed(m: impl Into<String>) -> SfError {
    SfError::new(400, "MALFORMED_SEARCH", m)
}

/// Which fields a search looks in.
#[derive(Clone, Copy, PartialEq)]
enum Scope {
    All,
    Name,
    Email,
    Phone,
}

/// A parsed SOSL search.
struct Search {
    /// OR alternatives, each a list of words (LIKE patterns, lowercase) all of which must occur.
    terms: Vec<Vec<String>>,
    scope: Scope,
    /// (object, the SOQL query of its RETURNING part).
    returning: Vec<(String, Option<String>)>,
    limit: Option<usize>,
}

/// The search term between `{…}` (or quotes), then the rest of the statement.
fn split_term(q: &str) -> Result<(String, &str), SfError> {
    let rest = q.trim_start();
    let rest = rest
        .get(..4)
        .filter(|k| k.eq_ignore_ascii_case("FIND"))
        .map(|_| rest[4..].trim_start())
        .ok_or_else(|| malformed("a search starts with FIND {term}"))?;
    let (open, close) = match rest.chars().next() {
        Some('{') => ('{', '}'),
        Some('\'') => ('\'', '\''),
        _ => {
            return Err(malformed(
                "the search term is enclosed in braces: FIND {term}",
            ))
        }
    };
    let mut term = String::new();
    let mut chars = rest[open.len_utf8()..].char_indices();
    while let Some((i, c)) = chars.next() {
        if c == '\\' {
            if let Some((_, n)) = chars.next() {
                term.push(n);
            }
        } else if c == close {
            return Ok((term, &rest[open.len_utf8() + i + close.len_utf8()..]));
        } else {
            term.push(c);
        }
    }
    Err(malformed("unterminated search term"))
}

/// Words and "phrases" of the term as LIKE patterns, grouped by OR.
fn terms(term: &str) -> Result<Vec<Vec<String>>, SfError> {
    let mut alternatives = vec![Vec::new()];
    let mut chars = term.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        let mut word = String::new();
        if c == '"' {
            chars.next();
            for c in chars.by_ref() {
                if c == '"' {
                    break;
                }
                word.push(c);
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                word.push(c);
                chars.next();
            }
            if word == "OR" {
                alternatives.push(Vec::new());
                continue;
            }
            if word == "AND" {
                continue;
            }
        }
        let plain: String = word.chars().filter(|c| !matches!(c, '*' | '?')).collect();
        if plain.chars().count() < 2 {
            return Err(malformed(format!(
                "search term must be longer than one character: {word}"
            )));
        }
        let pattern: String = word
            .to_lowercase()
            .chars()
            .map(|c| match c {
                '*' => "%".to_string(),
                '?' => "_".to_string(),
                '%' => "\\%".to_string(),
                '_' => "\\_".to_string(),
                '\\' => "\\\\".to_string(),
                other => other.to_string(),
            })
            .collect();
        alternatives
            .last_mut()
            .expect("one")
            .push(format!("%{pattern}%"));
    }
    alternatives.retain(|a| !a.is_empty());
    if alternatives.is_empty() {
        return Err(malformed("empty search term"));
    }
    Ok(alternatives)
}

fn parse(q: &str) -> Result<Search, SfError> {
    let (term, mut rest) = split_term(q)?;
    let terms = terms(&term)?;
    let mut scope = Scope::All;
    let word = |s: &str| -> Option<(String, usize)> {
        let t = s.trim_start();
        let skipped = s.len() - t.len();
        let end = t
            .find(|c: char| !(c.is_alphanumeric() || c == '_'))
            .unwrap_or(t.len());
        (end > 0).then(|| (t[..end].to_ascii_uppercase(), skipped + end))
    };
    if let Some(("IN", n)) = word(rest).as_ref().map(|(w, n)| (w.as_str(), *n)) {
        rest = &rest[n..];
        let (which, n) =
            word(rest).ok_or_else(|| malformed("IN needs ALL, NAME, EMAIL or PHONE"))?;
        scope = match which.as_str() {
            "ALL" => Scope::All,
            "NAME" => Scope::Name,
            "EMAIL" => Scope::Email,
            "PHONE" => Scope::Phone,
            other => return Err(malformed(format!("unsupported search group {other}"))),
        };
        rest = &rest[n..];
        match word(rest) {
            Some((f, n)) if f == "FIELDS" => rest = &rest[n..],
            _ => return Err(malformed("expected FIELDS")),
        }
    }
    let mut returning = Vec::new();
    if let Some(("RETURNING", n)) = word(rest).as_ref().map(|(w, n)| (w.as_str(), *n)) {
        rest = &rest[n..];
        loop {
            let t = rest.trim_start();
            let end = t
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(t.len());
            if end == 0 {
                return Err(malformed("RETURNING needs an object"));
            }
            let object = t[..end].to_string();
            rest = &t[end..];
            let mut spec = None;
            if rest.trim_start().starts_with('(') {
                let t = rest.trim_start();
                let mut depth = 0;
                let mut close = None;
                let mut in_str = false;
                for (i, c) in t.char_indices() {
                    match c {
                        '\'' => in_str = !in_str,
                        '(' if !in_str => depth += 1,
                        ')' if !in_str => {
                            depth -= 1;
                            if depth == 0 {
                                close = Some(i);
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                let close =
                    close.ok_or_else(|| malformed("unbalanced parentheses in RETURNING"))?;
                let inner = &t[1..close];
                // `Obj(fields WHERE …)` is `SELECT fields FROM Obj WHERE …`.
                let cut = ["WHERE", "ORDER", "LIMIT"]
                    .iter()
                    .filter_map(|k| find_keyword(inner, k))
                    .min()
                    .unwrap_or(inner.len());
                spec = Some(format!(
                    "SELECT {} FROM {object} {}",
                    &inner[..cut],
                    &inner[cut..]
                ));
                rest = &t[close + 1..];
            }
            returning.push((object, spec));
            if rest.trim_start().starts_with(',') {
                rest = &rest.trim_start()[1..];
                continue;
            }
            break;
        }
    }
    let mut limit = None;
    if let Some(("LIMIT", n)) = word(rest).as_ref().map(|(w, n)| (w.as_str(), *n)) {
        rest = &rest[n..];
        let t = rest.trim_start();
        let end = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        limit = Some(
            t[..end]
                .parse()
                .map_err(|_| malformed("LIMIT needs a number"))?,
        );
        rest = &t[end..];
    }
    if !rest.trim().is_empty() {
        return Err(malformed(format!("unexpected: {}", rest.trim())));
    }
    Ok(Search {
        terms,
        scope,
        returning,
        limit,
    })
}

/// Where keyword `k` starts in `s` as a whole word outside string literals.
fn find_keyword(s: &str, k: &str) -> Option<usize> {
    let upper = s.to_ascii_uppercase();
    let mut in_str = false;
    for (i, c) in s.char_indices() {
        if c == '\'' {
            in_str = !in_str;
        }
        if in_str || !upper[i..].starts_with(k) {
            continue;
        }
        let before = s[..i].chars().last();
        let after = s[i + k.len()..].chars().next();
        let edge = |c: Option<char>| c.is_none_or(|c| !(c.is_alphanumeric() || c == '_'));
        if edge(before) && edge(after) {
            return Some(i);
        }
    }
    None
}

/// The fields a scope searches on `o`.
fn searched(o: &ObjectDef, scope: Scope) -> Vec<String> {
    o.fields
        .iter()
        .filter(|f| match scope {
            Scope::All => f.ty.is_text() && !matches!(f.ty, FieldType::Id | FieldType::Reference),
            Scope::Name => {
                matches!(
                    f.name.as_str(),
                    "Name" | "FirstName" | "LastName" | "Company" | "Subject" | "CaseNumber"
                ) || (f.is_custom() && f.name.to_lowercase().contains("name"))
            }
            Scope::Email => f.ty == FieldType::Email,
            Scope::Phone => f.ty == FieldType::Phone,
        })
        .map(|f| f.name.clone())
        .collect()
}

pub(crate) async fn search(
    State(sb): State<St>,
    Path(v): Path<String>,
    Q(p): Q<SearchParam>,
) -> Response {
    let v = match version_ok(&v) {
        Ok(v) => v.to_string(),
        Err(e) => return err(e),
    };
    sb.count("search");
    let Some(q) = p.q else {
        return err(malformed(
            "a search string has to be specified: q=FIND {term}",
        ));
    };
    let s = match parse(&q) {
        Ok(s) => s,
        Err(e) => return err(e),
    };
    let org = sb.org.lock().expect("lock");
    let returning: Vec<(String, Option<String>)> = if s.returning.is_empty() {
        org.objects()
            .iter()
            .filter(|o| o.name != "User")
            .map(|o| (o.name.clone(), None))
            .collect()
    } else {
        s.returning.clone()
    };
    let mut out = Vec::new();
    for (object, spec) in returning {
        let o = match org.object(&object) {
            Ok(o) => o.clone(),
            Err(_) => {
                return err(SfError::new(
                    400,
                    "INVALID_TYPE",
                    format!("sObject type '{object}' is not supported."),
                ))
            }
        };
        let soql_text = spec.unwrap_or_else(|| format!("SELECT Id FROM {}", o.name));
        let mut parsed = match soql::parse(&soql_text) {
            Ok(p) => p,
            Err(e) => return err(malformed(e.message)),
        };
        if !parsed
            .select
            .iter()
            .any(|x| matches!(x, soql::SelectItem::Field(f) if f.len() == 1 && f[0].eq_ignore_ascii_case("Id")))
        {
            parsed.select.push(soql::SelectItem::Field(vec!["Id".into()]));
        }
        let limit = parsed.limit.take();
        let offset = parsed.offset.take();
        let rows = match org.query(&parsed, false, &v) {
            Ok(QueryResult::Rows(r)) => r,
            Ok(QueryResult::Count(_)) => Vec::new(),
            Err(e) => return err(e),
        };
        let fields = searched(&o, s.scope);
        let hits = rows.into_iter().filter(|row| {
            let Some(rec) = row["Id"].as_str().and_then(|id| org.get(&o.name, id).ok()) else {
                return false;
            };
            let texts: Vec<String> = fields
                .iter()
                .filter_map(|f| rec.fields.get(f).and_then(J::as_str))
                .map(|t| {
                    if s.scope == Scope::Phone {
                        t.chars().filter(char::is_ascii_digit).collect()
                    } else {
                        t.to_string()
                    }
                })
                .collect();
            s.terms
                .iter()
                .any(|words| words.iter().all(|w| texts.iter().any(|t| soql::like(t, w))))
        });
        out.extend(
            hits.skip(offset.unwrap_or(0) as usize)
                .take(limit.map_or(usize::MAX, |l| l as usize)),
        );
    }
    if let Some(l) = s.limit {
        out.truncate(l);
    }
    Json(json!({"searchRecords": out})).into_response()
}
