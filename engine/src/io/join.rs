//! Joining tables on equal key columns, with Spark's join names.

use crate::error::{KilnError, Result};
use datafusion::dataframe::DataFrame;
use datafusion::prelude::JoinType;
use serde::{Deserialize, Serialize};

/// How one table joins onto the ones before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JoinSpec {
    pub on: Vec<String>,
    #[serde(default)]
    pub how: JoinHow,
}

/// Join types, with Spark's names.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum JoinHow {
    #[default]
    Inner,
    Left,
    Right,
    Full,
    Outer,
}

impl From<JoinHow> for JoinType {
    fn from(h: JoinHow) -> Self {
        match h {
            JoinHow::Inner => JoinType::Inner,
            JoinHow::Left => JoinType::Left,
            JoinHow::Right => JoinType::Right,
            JoinHow::Full | JoinHow::Outer => JoinType::Full,
        }
    }
}

/// Joins `right` onto `left` by equal key columns; the key columns appear
/// once in the result (taken from the left side, coalesced for full joins).
pub fn join_on(
    left: DataFrame,
    right: DataFrame,
    spec: &JoinSpec,
    right_name: &str,
) -> Result<DataFrame> {
    use datafusion::prelude::{coalesce, col, ident};
    for key in &spec.on {
        for (side, df) in [("left", &left), ("right", &right)] {
            if df.schema().field_with_unqualified_name(key).is_err() {
                return Err(KilnError::config(format!(
                    "join of '{right_name}': key column '{key}' not found on the {side} side"
                )));
            }
        }
    }
    let left_cols: Vec<String> = left
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let right_cols: Vec<String> = right
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    // Non-key columns present on both sides would be ambiguous.
    for c in &right_cols {
        if !spec.on.contains(c) && left_cols.contains(c) {
            return Err(KilnError::config_fix(
                format!("join of '{right_name}': column '{c}' exists on both sides"),
                "drop or rename it in one of the tables",
            ));
        }
    }
    let right_aliased = right
        .select(
            right_cols
                .iter()
                .map(|c| {
                    let e = ident(c);
                    if spec.on.contains(c) {
                        e.alias(format!("__kiln_r_{c}"))
                    } else {
                        e
                    }
                })
                .collect::<Vec<_>>(),
        )
        .map_err(KilnError::from)?;
    let left_keys: Vec<String> = spec.on.clone();
    let right_keys: Vec<String> = spec.on.iter().map(|k| format!("__kiln_r_{k}")).collect();
    let joined = left
        .join(
            right_aliased,
            spec.how.into(),
            &left_keys.iter().map(String::as_str).collect::<Vec<_>>(),
            &right_keys.iter().map(String::as_str).collect::<Vec<_>>(),
            None,
        )
        .map_err(|e| KilnError::execution(format!("joining '{right_name}'"), e))?;
    let mut out = Vec::new();
    for c in &left_cols {
        if spec.on.contains(c)
            && matches!(spec.how, JoinHow::Full | JoinHow::Outer | JoinHow::Right)
        {
            out.push(coalesce(vec![ident(c), col(format!("__kiln_r_{c}"))]).alias(c));
        } else {
            out.push(ident(c));
        }
    }
    for c in &right_cols {
        if !spec.on.contains(c) {
            out.push(ident(c));
        }
    }
    joined.select(out).map_err(KilnError::from)
}
