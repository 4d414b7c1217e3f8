//! The rule language of the generator and its validation.

use kiln_engine::error::{KilnError, Result};
use serde::Deserialize;

/// A generator rule file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rules {
    #[serde(default)]
    pub name: Option<String>,
    /// Rows come in entities (devices, customers...) with their own sequences.
    #[serde(default)]
    pub entity: Option<EntityRule>,
    /// Per-entity hidden states following sticky Markov chains.
    #[serde(default)]
    pub latent: Vec<LatentRule>,
    pub columns: Vec<ColumnRule>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityRule {
    /// The entity id column (int64, 1-based).
    pub column: String,
    /// Mean rows per entity.
    pub mean_rows: f64,
    /// Log-normal spread of entity sizes (0 = all equal).
    #[serde(default = "half")]
    pub sigma: f64,
}

fn half() -> f64 {
    0.5
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LatentRule {
    pub name: String,
    pub states: Vec<String>,
    /// Initial (and re-entry) weights; sum to 1.
    pub weights: Vec<f64>,
    /// Mean run length (rows) per state; the chain stays with p = 1 - 1/len.
    pub mean_run: Vec<f64>,
    /// Whether the state appears in the output.
    #[serde(default)]
    pub keep: bool,
}

/// Column types of the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnType {
    Int64,
    Int32,
    Float64,
    Float32,
    String,
    Bool,
    Timestamp,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnRule {
    pub name: String,
    #[serde(rename = "type", default)]
    pub data_type: Option<ColumnType>,
    /// The default generator.
    #[serde(default)]
    #[serde(rename = "gen")]
    pub generator: Option<Gen>,
    /// Conditional generators: the first whose condition holds is used.
    #[serde(default)]
    pub when: Vec<WhenRule>,
    /// A SQL expression over other columns instead of a generator.
    #[serde(default)]
    pub sql: Option<String>,
    /// Fraction of rows set to null.
    #[serde(default)]
    pub null_fraction: f64,
    /// Draw once per entity and repeat it on all its rows.
    #[serde(default)]
    pub per_entity: bool,
    /// Generated and usable in rules, but not written.
    #[serde(default)]
    pub hidden: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WhenRule {
    #[serde(rename = "if")]
    pub condition: Condition,
    #[serde(rename = "gen")]
    pub generator: Gen,
}

/// A value in a condition.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum Literal {
    Bool(bool),
    Number(f64),
    Text(String),
}

/// Conditions over earlier columns.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Condition {
    Eq(String, Literal),
    Ne(String, Literal),
    Lt(String, f64),
    Gt(String, f64),
    In(String, Vec<Literal>),
    And(Vec<Condition>),
    Or(Vec<Condition>),
    Not(Box<Condition>),
}

impl Condition {
    pub fn columns(&self) -> Vec<&str> {
        match self {
            Condition::Eq(c, _)
            | Condition::Ne(c, _)
            | Condition::Lt(c, _)
            | Condition::Gt(c, _)
            | Condition::In(c, _) => {
                vec![c.as_str()]
            }
            Condition::And(v) | Condition::Or(v) => v.iter().flat_map(Condition::columns).collect(),
            Condition::Not(c) => c.columns(),
        }
    }
}

/// Value generators.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Gen {
    Uniform {
        min: f64,
        max: f64,
        #[serde(default)]
        round: Option<i32>,
    },
    Normal {
        mean: f64,
        std: f64,
        #[serde(default)]
        min: Option<f64>,
        #[serde(default)]
        max: Option<f64>,
        #[serde(default)]
        round: Option<i32>,
    },
    Lognormal {
        mu: f64,
        sigma: f64,
        #[serde(default)]
        min: Option<f64>,
        #[serde(default)]
        max: Option<f64>,
        #[serde(default)]
        round: Option<i32>,
    },
    Exponential {
        rate: f64,
        #[serde(default)]
        min: Option<f64>,
        #[serde(default)]
        max: Option<f64>,
        #[serde(default)]
        round: Option<i32>,
    },
    IntRange {
        min: i64,
        max: i64,
    },
    Categorical {
        values: Vec<String>,
        weights: Vec<f64>,
    },
    Bool {
        p: f64,
    },
    Constant {
        value: Literal,
    },
    /// Uniform instants in [start, end) (RFC 3339).
    TimestampRange {
        start: String,
        end: String,
    },
    /// Per-entity increasing timestamps: a uniform start in [start, end),
    /// then gaps uniform in [min_gap_s, max_gap_s].
    TimestampSequence {
        start: String,
        end: String,
        min_gap_s: f64,
        max_gap_s: f64,
    },
    /// Per-entity random walk: `start` then normal steps.
    Walk {
        start: f64,
        step_std: f64,
    },
    /// Text from a template: `{digits:N}`, `{upper:N}`, `{lower:N}`, `{hex:N}`, `{row}`.
    Template {
        pattern: String,
    },
    /// Unique sequential ids from `start`.
    UniqueId {
        #[serde(default)]
        start: i64,
    },
}

fn weights_ok(weights: &[f64]) -> bool {
    weights.iter().all(|w| *w >= 0.0 && w.is_finite())
        && (weights.iter().sum::<f64>() - 1.0).abs() < 1e-6
}

pub(crate) fn parse_ts_ms(text: &str, rule: &str) -> Result<i64> {
    use chrono_like::parse_rfc3339_ms;
    parse_rfc3339_ms(text).ok_or_else(|| {
        KilnError::config_fix(
            format!("rule for column '{rule}': invalid timestamp '{text}'"),
            "write RFC 3339, e.g. 2023-06-01T00:00:00Z",
        )
    })
}

/// RFC 3339 parsing without a date-time dependency (UTC `Z` or ±HH:MM).
pub(crate) mod chrono_like {
    pub fn parse_rfc3339_ms(s: &str) -> Option<i64> {
        let s = s.trim();
        let (date, rest) = s.split_once(['T', ' '])?;
        let mut d = date.split('-');
        let (y, m, day): (i64, i64, i64) = (
            d.next()?.parse().ok()?,
            d.next()?.parse().ok()?,
            d.next()?.parse().ok()?,
        );
        let (time, offset_s) = if let Some(t) = rest.strip_suffix('Z') {
            (t, 0)
        } else if let Some(i) = rest.rfind(['+', '-']) {
            let (t, off) = rest.split_at(i);
            let sign = if off.starts_with('-') { -1 } else { 1 };
            let (oh, om) = off[1..].split_once(':')?;
            (
                t,
                sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60),
            )
        } else {
            (rest, 0)
        };
        let mut t = time.split(':');
        let h: i64 = t.next()?.parse().ok()?;
        let mi: i64 = t.next()?.parse().ok()?;
        let sec: f64 = t.next().unwrap_or("0").parse().ok()?;
        if !(1..=12).contains(&m) || !(1..=31).contains(&day) || h > 23 || mi > 59 {
            return None;
        }
        // Days from civil (Howard Hinnant's algorithm).
        let y2 = if m <= 2 { y - 1 } else { y };
        let era = y2.div_euclid(400);
        let yoe = y2 - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + day - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146097 + doe - 719468;
        Some((days * 86400 + h * 3600 + mi * 60 - offset_s) * 1000 + (sec * 1000.0).round() as i64)
    }
}

impl Rules {
    /// Parses and validates rules that generate from scratch.
    pub fn from_yaml(text: &str, file: &str) -> Result<Self> {
        let rules = Self::parse(text, file)?;
        rules.validate()?;
        Ok(rules)
    }

    /// Parses without validating (enhance-mode rules are validated against
    /// their input's columns by `Generator::enhance`).
    pub fn parse(text: &str, file: &str) -> Result<Self> {
        kiln_engine::nesting::check_depth(text, file, kiln_engine::nesting::MAX_DEPTH)?;
        // Enums are written as single-key maps (`normal: {mean: 0, std: 1}`).
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let rules: Rules = serde_yaml_ng::with::singleton_map_recursive::deserialize(de).map_err(
            |e: serde_yaml_ng::Error| {
                let loc = e
                    .location()
                    .map(|l| format!("{file}:{}:{}", l.line(), l.column()))
                    .unwrap_or_else(|| file.to_string());
                KilnError::config(format!(
                    "{loc}: {}",
                    e.to_string().split(" at line ").next().unwrap_or_default()
                ))
            },
        )?;
        Ok(rules)
    }

    /// Checks every rule; errors name the rule (column) at fault.
    pub fn validate(&self) -> Result<()> {
        self.validate_with_input(&[])
    }

    /// Like [`Rules::validate`], for rules that add columns to an input
    /// with the columns `input` (enhance mode).
    pub fn validate_with_input(&self, input: &[&str]) -> Result<()> {
        if let Some(c) = self
            .columns
            .iter()
            .find(|c| input.contains(&c.name.as_str()))
        {
            return Err(KilnError::config_fix(
                format!(
                    "rule for column '{}': the input already has this column",
                    c.name
                ),
                "rename the rule's column, or drop it from the input",
            ));
        }
        let mut known: Vec<&str> = input.to_vec();
        if let Some(e) = &self.entity {
            if e.mean_rows < 1.0 || e.sigma < 0.0 {
                return Err(KilnError::config(
                    "entity: mean_rows must be >= 1 and sigma >= 0",
                ));
            }
            if !known.contains(&e.column.as_str()) {
                known.push(&e.column);
            }
        }
        for l in &self.latent {
            let n = l.states.len();
            if n < 2 || l.weights.len() != n || l.mean_run.len() != n {
                return Err(KilnError::config(format!(
                    "latent '{}': states, weights and mean_run need the same length (at least 2)",
                    l.name
                )));
            }
            if !weights_ok(&l.weights) {
                return Err(KilnError::config_fix(
                    format!(
                        "latent '{}': weights {:?} do not sum to 1",
                        l.name, l.weights
                    ),
                    "make the weights non-negative with a sum of 1",
                ));
            }
            if l.mean_run.iter().any(|r| *r < 1.0) {
                return Err(KilnError::config(format!(
                    "latent '{}': every mean_run must be >= 1",
                    l.name
                )));
            }
            known.push(&l.name);
        }
        let all: Vec<&str> = known
            .iter()
            .copied()
            .chain(self.columns.iter().map(|c| c.name.as_str()))
            .collect();
        let mut seen = std::collections::HashSet::new();
        for name in &all {
            if !seen.insert(*name) {
                return Err(KilnError::config(format!(
                    "column '{name}' is defined twice"
                )));
            }
        }
        let derived: Vec<&str> = self
            .columns
            .iter()
            .filter(|c| c.sql.is_some())
            .map(|c| c.name.as_str())
            .collect();
        for c in &self.columns {
            let rule = &c.name;
            if !(0.0..=1.0).contains(&c.null_fraction) {
                return Err(KilnError::config(format!(
                    "rule for column '{rule}': null_fraction must be in [0, 1]"
                )));
            }
            match (&c.sql, &c.generator) {
                (Some(_), Some(_)) => {
                    return Err(KilnError::config(format!(
                        "rule for column '{rule}': give either gen or sql, not both"
                    )));
                }
                (None, None) if c.when.is_empty() => {
                    return Err(KilnError::config(format!(
                        "rule for column '{rule}': needs gen, when or sql"
                    )));
                }
                (None, None) => {
                    return Err(KilnError::config(format!(
                        "rule for column '{rule}': when needs a default gen (the else branch)"
                    )));
                }
                _ => {}
            }
            if c.sql.is_some() && c.data_type.is_none() {
                return Err(KilnError::config(format!(
                    "rule for column '{rule}': a sql column needs a type"
                )));
            }
            for w in &c.when {
                for col in w.condition.columns() {
                    if derived.contains(&col) {
                        return Err(KilnError::config(format!(
                            "rule for column '{rule}': condition uses '{col}', a sql column; conditions can use generated columns only"
                        )));
                    }
                    if !known.contains(&col) {
                        let hint = kiln_engine::suggest::closest(col, &all);
                        return Err(KilnError::Config {
                            message: format!("rule for column '{rule}': condition refers to unknown column '{col}'"),
                            fix: Some(match hint {
                                Some(h) if all.iter().position(|n| *n == h) > all.iter().position(|n| *n == rule.as_str()) => {
                                    format!("'{h}' is defined after '{rule}'; move it before")
                                }
                                Some(h) => format!("did you mean '{h}'?"),
                                None => "conditions may use the entity, latent states and columns defined above".into(),
                            }),
                        });
                    }
                }
            }
            for g in c
                .generator
                .iter()
                .chain(c.when.iter().map(|w| &w.generator))
            {
                check_gen(g, rule)?;
            }
            if c.sql.is_none() {
                known.push(rule);
            }
        }
        Ok(())
    }
}

fn check_gen(g: &Gen, rule: &str) -> Result<()> {
    let bad = |msg: String| {
        Err(KilnError::config(format!(
            "rule for column '{rule}': {msg}"
        )))
    };
    let range = |min: Option<f64>, max: Option<f64>| match (min, max) {
        (Some(a), Some(b)) if a > b => Err(KilnError::config(format!(
            "rule for column '{rule}': min {a} > max {b}"
        ))),
        _ => Ok(()),
    };
    match g {
        Gen::Uniform { min, max, .. } => range(Some(*min), Some(*max)),
        Gen::Normal { std, min, max, .. } => {
            if *std < 0.0 {
                return bad(format!("std {std} < 0"));
            }
            range(*min, *max)
        }
        Gen::Lognormal {
            sigma, min, max, ..
        } => {
            if *sigma < 0.0 {
                return bad(format!("sigma {sigma} < 0"));
            }
            range(*min, *max)
        }
        Gen::Exponential { rate, min, max, .. } => {
            if *rate <= 0.0 {
                return bad(format!("rate {rate} must be > 0"));
            }
            range(*min, *max)
        }
        Gen::IntRange { min, max } => {
            if min > max {
                return bad(format!("min {min} > max {max}"));
            }
            Ok(())
        }
        Gen::Categorical { values, weights } => {
            if values.is_empty() || values.len() != weights.len() {
                return bad("categorical needs as many weights as values".into());
            }
            if !weights_ok(weights) {
                return Err(KilnError::config_fix(
                    format!(
                        "rule for column '{rule}': categorical weights sum to {}, not 1",
                        weights.iter().sum::<f64>()
                    ),
                    "make the weights non-negative with a sum of 1",
                ));
            }
            Ok(())
        }
        Gen::Bool { p } => {
            if !(0.0..=1.0).contains(p) {
                return bad(format!("p {p} is not in [0, 1]"));
            }
            Ok(())
        }
        Gen::TimestampRange { start, end } | Gen::TimestampSequence { start, end, .. } => {
            let (a, b) = (parse_ts_ms(start, rule)?, parse_ts_ms(end, rule)?);
            if a > b {
                return bad(format!("start {start} is after end {end} (min > max)"));
            }
            if let Gen::TimestampSequence {
                min_gap_s,
                max_gap_s,
                ..
            } = g
                && (min_gap_s > max_gap_s || *min_gap_s < 0.0)
            {
                return bad(format!(
                    "min_gap_s {min_gap_s} > max_gap_s {max_gap_s} (min > max)"
                ));
            }
            Ok(())
        }
        Gen::Walk { step_std, .. } => {
            if *step_std < 0.0 {
                return bad("step_std < 0".into());
            }
            Ok(())
        }
        Gen::Constant { .. } | Gen::Template { .. } | Gen::UniqueId { .. } => Ok(()),
    }
}
