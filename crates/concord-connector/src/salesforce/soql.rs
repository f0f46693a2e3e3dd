//! SOQL literals: every literal the connector puts in a query is escaped here (the sandbox's
//! parser reads them back; tests/properties.rs checks the round trip).

/// Escapes text for a SOQL string literal (quotes included). Every literal the connector puts
/// in a query goes through this.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\'' => out.push_str("\\'"),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            other => out.push(other),
        }
    }
    out.push('\'');
    out
}

/// A LIKE pattern literal (quotes included) that matches `s` literally, with `%` and `_` in it
/// escaped; append `%` inside the quotes yourself for a prefix search via [`quote_like_prefix`].
pub fn quote_like(s: &str) -> String {
    let mut body = quote(s);
    body.pop();
    body.remove(0);
    format!("'{}'", body.replace('%', "\\%").replace('_', "\\_"))
}

/// A LIKE pattern literal matching every text that starts with `s`.
pub fn quote_like_prefix(s: &str) -> String {
    let mut q = quote_like(s);
    q.insert(q.len() - 1, '%');
    q
}
