//! What serde cannot check in a configuration: names, references between sections, each
//! pattern's rules, field mappings, filters and policies. Every error names the key's path.

use super::*;

impl Config {
    /// Checks what serde cannot: references between sections and each pattern's rules.
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        let name_ok = |n: &str| {
            !n.is_empty()
                && n.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        };
        for n in self.systems.keys() {
            if !name_ok(n) {
                return Err(self.invalid(
                    format!("systems.{n}"),
                    "system names use letters, digits, `_` and `-`",
                ));
            }
        }
        for (jn, j) in &self.jobs {
            let at = format!("jobs.{jn}");
            if !name_ok(jn) {
                return Err(self.invalid(&at, "job names use letters, digits, `_` and `-`"));
            }
            let n = j.systems.len();
            let want = match j.pattern {
                Pattern::Correlate => n == 2,
                Pattern::Aggregate => n >= 3,
                _ => n >= 2,
            };
            if !want {
                let rule = match j.pattern {
                    Pattern::Correlate => "exactly 2 systems",
                    Pattern::Aggregate => "at least 2 sources and a target (3 systems or more)",
                    _ => "at least 2 systems",
                };
                return Err(self.invalid(
                    format!("{at}.systems"),
                    format!("a {:?} job needs {rule}", j.pattern).to_lowercase(),
                ));
            }
            for (i, s) in j.systems.iter().enumerate() {
                let Some(sys) = self.systems.get(s) else {
                    return Err(self.invalid(
                        format!("{at}.systems[{i}]"),
                        format!("no system named `{s}` under [systems]"),
                    ));
                };
                if j.systems[..i].contains(s) {
                    return Err(self.invalid(
                        format!("{at}.systems[{i}]"),
                        format!("`{s}` is listed twice"),
                    ));
                }
                let Some(side) = j.sides.get(s) else {
                    return Err(self.invalid(
                        format!("{at}.sides"),
                        format!("no [jobs.{jn}.sides.{s}] for system `{s}`"),
                    ));
                };
                self.check_side(jn, s, sys, side, j)?;
                if matches!(sys, SystemConfig::Nats(_)) {
                    let dest_only = match j.pattern {
                        Pattern::Broadcast | Pattern::Migrate => i > 0,
                        Pattern::Aggregate => i == n - 1,
                        _ => false,
                    };
                    if !dest_only {
                        return Err(self.invalid(format!("{at}.systems[{i}]"), "a NATS system can only be a destination (migrate, broadcast, or aggregate's target)"));
                    }
                }
            }
            for s in j.sides.keys() {
                if !j.systems.contains(s) {
                    return Err(self.invalid(
                        format!("{at}.sides.{s}"),
                        format!("`{s}` is not in this job's systems"),
                    ));
                }
            }
            if matches!(j.pattern, Pattern::Correlate | Pattern::Aggregate) && j.matching.is_none()
            {
                return Err(self.invalid(
                    &at,
                    format!(
                        "a {:?} job needs [jobs.{jn}.match] (its match keys)",
                        j.pattern
                    )
                    .to_lowercase(),
                ));
            }
            if let Some(m) = &j.matching {
                if m.fields.is_empty() {
                    return Err(self.invalid(format!("{at}.match.fields"), "at least one field"));
                }
            }
            let mut policies = vec![(format!("{at}.conflict.default"), &j.conflict.default)];
            for (f, p) in &j.conflict.fields {
                policies.push((format!("{at}.conflict.fields.{f}"), p));
            }
            for (where_, p) in policies {
                self.policy_of(p, j)
                    .map_err(|m| self.invalid(where_, m.to_string()))?;
            }
            if j.max_delete_share
                .is_some_and(|x| !(x.is_finite() && (0.0..=1.0).contains(&x)))
            {
                return Err(self.invalid(
                    format!("{at}.max_delete_share"),
                    "must be a share between 0 and 1 (0.1 is 10 %)",
                ));
            }
            if j.batch_size == 0 {
                return Err(self.invalid(format!("{at}.batch_size"), "must be at least 1"));
            }
            if j.chunk_size == 0 {
                return Err(self.invalid(format!("{at}.chunk_size"), "must be at least 1"));
            }
        }
        Ok(())
    }

    fn check_side(
        &self,
        job: &str,
        sys_name: &str,
        sys: &SystemConfig,
        side: &SideConfig,
        j: &JobConfig,
    ) -> Result<(), ConfigError> {
        let at = format!("jobs.{job}.sides.{sys_name}");
        let parsed_as = matches!(
            (sys, &side.options),
            (SystemConfig::Salesforce(_), SideOptions::Salesforce(_))
                | (
                    SystemConfig::Postgres(_) | SystemConfig::Mysql(_) | SystemConfig::Sqlite(_),
                    SideOptions::Sql(_)
                )
                | (
                    SystemConfig::Csv(_) | SystemConfig::Jsonl(_),
                    SideOptions::Files(_)
                )
                | (SystemConfig::Nats(_), SideOptions::Nats(_))
        );
        if !parsed_as {
            return Err(self.invalid(
                &at,
                format!("not read as a side of a {} system", sys.kind()),
            ));
        }
        if side.fields.is_empty() {
            return Err(self.invalid(format!("{at}.fields"), "map at least one field"));
        }
        for (name, spec) in &side.fields {
            let fat = format!("{at}.fields.{name}");
            if let FieldSpec::Spec(t) = spec {
                let sources = [
                    t.field.is_some() && t.reference.is_none(),
                    t.concat.is_some(),
                    t.constant.is_some(),
                    t.reference.is_some(),
                ];
                if sources.iter().filter(|b| **b).count() != 1 {
                    return Err(self.invalid(&fat, "give exactly one of `field`, `concat`, `constant`, or `reference` (with `field`)"));
                }
                if t.reference.is_some() && t.field.is_none() {
                    return Err(self.invalid(
                        &fat,
                        "a `reference` needs the native `field` that holds the parent's key",
                    ));
                }
                if let Some(r) = &t.reference {
                    match self.jobs.get(r) {
                        None => {
                            return Err(self.invalid(
                                format!("{fat}.reference"),
                                format!("no job named `{r}`"),
                            ))
                        }
                        Some(pj) if !pj.sides.contains_key(sys_name) => {
                            return Err(self.invalid(
                                format!("{fat}.reference"),
                                format!("job `{r}` has no side for system `{sys_name}`"),
                            ))
                        }
                        _ => {}
                    }
                }
                for (i, tr) in t.transforms.iter().enumerate() {
                    if !matches!(tr.as_str(), "trim" | "upper" | "lower") {
                        return Err(self.invalid(format!("{fat}.transforms[{i}]"), format!("unknown transform `{tr}` (trim, upper, lower; value maps go in `map`, dates in `date_format`)")));
                    }
                }
            }
        }
        if let Some(m) = &j.matching {
            for (i, f) in m.fields.iter().enumerate() {
                if !side.fields.contains_key(&f.field) {
                    return Err(self.invalid(
                        format!("jobs.{job}.match.fields[{i}]"),
                        format!("`{}` is not mapped for system `{sys_name}`", f.field),
                    ));
                }
            }
        }
        for (i, f) in side.filter.iter().enumerate() {
            let n = [
                f.equals.is_some(),
                f.in_.is_some(),
                f.not_in.is_some(),
                f.is_null.is_some(),
            ]
            .iter()
            .filter(|b| **b)
            .count();
            if n != 1 {
                return Err(self.invalid(
                    format!("{at}.filter[{i}]"),
                    "give exactly one of `equals`, `in`, `not_in`, `is_null`",
                ));
            }
        }
        Ok(())
    }
}
