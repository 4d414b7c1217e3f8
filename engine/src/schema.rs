//! Reference schemas: a JSON file listing the expected columns, their Arrow
//! types and nullability, checked against the data before anything runs.

use crate::error::{KilnError, Result};
use arrow::datatypes::{DataType, Field, Schema};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// One expected column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ColumnSpec {
    pub name: String,
    /// Arrow type in its display form, e.g. `Int64`, `Utf8`, `Timestamp(ms, "UTC")`.
    #[serde(rename = "type")]
    pub data_type: String,
    #[serde(default = "default_true")]
    pub nullable: bool,
}

fn default_true() -> bool {
    true
}

/// The reference-schema file format (`kiln infer-schema` writes it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceSchema {
    pub columns: Vec<ColumnSpec>,
    /// Whether columns beyond the listed ones are accepted.
    #[serde(default)]
    pub allow_extra_columns: bool,
}

/// One difference between the data and the reference schema.
#[derive(Debug, Clone, PartialEq)]
pub enum SchemaMismatch {
    MissingColumn {
        name: String,
        expected: String,
    },
    WrongType {
        name: String,
        expected: String,
        actual: String,
    },
    Nullable {
        name: String,
    },
    ExtraColumn {
        name: String,
        actual: String,
    },
}

impl fmt::Display for SchemaMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SchemaMismatch::MissingColumn { name, expected } => {
                write!(f, "missing column '{name}' (expected {expected})")
            }
            SchemaMismatch::WrongType {
                name,
                expected,
                actual,
            } => {
                write!(f, "column '{name}' has type {actual}, expected {expected}")
            }
            SchemaMismatch::Nullable { name } => write!(
                f,
                "column '{name}' is nullable, but the reference schema says it is not"
            ),
            SchemaMismatch::ExtraColumn { name, actual } => write!(
                f,
                "unexpected column '{name}' ({actual}); add it to the reference schema or set allow_extra_columns: true"
            ),
        }
    }
}

impl ReferenceSchema {
    /// The reference schema describing `schema` exactly.
    pub fn from_arrow(schema: &Schema) -> Self {
        ReferenceSchema {
            columns: schema
                .fields()
                .iter()
                .map(|f| ColumnSpec {
                    name: f.name().clone(),
                    data_type: f.data_type().to_string(),
                    nullable: f.is_nullable(),
                })
                .collect(),
            allow_extra_columns: false,
        }
    }

    pub fn from_json(text: &str, location: &str) -> Result<Self> {
        let schema: ReferenceSchema = serde_json::from_str(text).map_err(|e| {
            KilnError::config(format!(
                "{location}:{}:{}: invalid reference schema: {e}",
                e.line(),
                e.column()
            ))
        })?;
        for c in &schema.columns {
            DataType::from_str(&c.data_type).map_err(|e| {
                KilnError::config_fix(
                    format!("{location}: column '{}': unknown Arrow type '{}': {e}", c.name, c.data_type),
                    "write types as `kiln infer-schema` prints them, e.g. Int64, Utf8, Float32, Timestamp(ms, \"UTC\")",
                )
            })?;
        }
        Ok(schema)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Every mismatch between `actual` and this reference, in column order.
    pub fn mismatches(&self, actual: &Schema) -> Vec<SchemaMismatch> {
        let mut out = Vec::new();
        for spec in &self.columns {
            let expected = DataType::from_str(&spec.data_type).ok();
            match actual.field_with_name(&spec.name) {
                Err(_) => out.push(SchemaMismatch::MissingColumn {
                    name: spec.name.clone(),
                    expected: spec.data_type.clone(),
                }),
                Ok(field) => {
                    if expected.as_ref() != Some(field.data_type()) {
                        out.push(SchemaMismatch::WrongType {
                            name: spec.name.clone(),
                            expected: spec.data_type.clone(),
                            actual: field.data_type().to_string(),
                        });
                    }
                    if !spec.nullable && field.is_nullable() {
                        out.push(SchemaMismatch::Nullable {
                            name: spec.name.clone(),
                        });
                    }
                }
            }
        }
        if !self.allow_extra_columns {
            for field in actual.fields() {
                if !self.columns.iter().any(|c| &c.name == field.name()) {
                    out.push(SchemaMismatch::ExtraColumn {
                        name: field.name().clone(),
                        actual: field.data_type().to_string(),
                    });
                }
            }
        }
        out
    }

    /// Checks `actual`, reporting every mismatch at once.
    pub fn validate(&self, actual: &Schema, location: &str) -> Result<()> {
        let mismatches = self.mismatches(actual);
        if mismatches.is_empty() {
            return Ok(());
        }
        let list: Vec<String> = mismatches.iter().map(|m| format!("  - {m}")).collect();
        Err(KilnError::Data {
            location: location.to_string(),
            message: format!(
                "{} schema mismatch(es) against the reference schema:\n{}",
                mismatches.len(),
                list.join("\n")
            ),
            fix: Some("fix the data, or regenerate the reference with `kiln infer-schema`".into()),
        })
    }
}

/// Builds an Arrow schema from a reference schema.
pub fn to_arrow(reference: &ReferenceSchema) -> Result<Schema> {
    let fields: Result<Vec<Field>> = reference
        .columns
        .iter()
        .map(|c| {
            DataType::from_str(&c.data_type)
                .map(|t| Field::new(&c.name, t, c.nullable))
                .map_err(|e| KilnError::config(format!("column '{}': {e}", c.name)))
        })
        .collect();
    Ok(Schema::new(fields?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::TimeUnit;

    fn sample() -> Schema {
        Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                true,
            ),
            Field::new("rsrp", DataType::Float32, true),
        ])
    }

    #[test]
    fn inferred_schema_round_trips_and_validates() -> Result<()> {
        let reference = ReferenceSchema::from_arrow(&sample());
        let parsed = ReferenceSchema::from_json(&reference.to_json(), "t.json")?;
        assert_eq!(parsed, reference);
        parsed.validate(&sample(), "data")?;
        assert_eq!(to_arrow(&parsed)?, sample());
        Ok(())
    }

    #[test]
    fn reports_every_mismatch_at_once() {
        let reference = ReferenceSchema::from_arrow(&sample());
        let actual = Schema::new(vec![
            Field::new("id", DataType::Utf8, true),
            Field::new("rsrp", DataType::Float32, true),
            Field::new("extra", DataType::Boolean, true),
        ]);
        let found = reference.mismatches(&actual);
        assert_eq!(found.len(), 4, "{found:?}");
        let err = reference
            .validate(&actual, "raw/x.parquet")
            .expect_err("mismatch");
        let text = err.to_string();
        for needle in [
            "'id' has type Utf8, expected Int64",
            "missing column 'ts'",
            "unexpected column 'extra'",
            "raw/x.parquet",
        ] {
            assert!(text.contains(needle), "{needle} not in {text}");
        }
    }
}
