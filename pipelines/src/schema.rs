//! `kiln schema`: the JSON Schema of pipeline configs, generated from the
//! real parameter types (schemars), so an editor completes and checks every
//! task's, stage's and estimator's parameters. The generated schema is
//! checked in as `configs/kiln-pipeline.schema.json`; a test fails when it
//! is stale.
//!
//! Naming: kiln's own keys are snake_case (`path_df_extract`,
//! `cross_validation.num_folds`); parameters that mirror Spark ML's keep
//! Spark's camelCase names (`inputCols`, `maxDepth`), as in Spark.

use crate::config::PipelineConfig;
use crate::tasks::TaskClass;
use schemars::generate::SchemaSettings;

/// The schema, as JSON.
pub fn json_schema() -> serde_json::Value {
    let mut generator = SchemaSettings::draft2020_12()
        .for_deserialize()
        .into_generator();
    let branches: Vec<serde_json::Value> = TaskClass::ALL
        .iter()
        .map(|class| {
            let (init, output) = class.parameter_schemas(&mut generator);
            serde_json::json!({
                "if": {
                    "properties": {"classname": {"const": class.name()}},
                    "required": ["classname"],
                },
                "then": {
                    "properties": {
                        "initialization_parameters": init,
                        "transformation_parameters": output,
                    },
                },
            })
        })
        .collect();
    let mut root = generator
        .into_root_schema_for::<PipelineConfig>()
        .to_value();
    if let Some(task) = root.pointer_mut("/$defs/TaskConfig") {
        task["properties"]["classname"]["enum"] = serde_json::json!(crate::tasks::classnames());
        task["allOf"] = serde_json::Value::Array(branches);
    }
    root
}

/// The schema as `kiln schema` prints it.
pub fn json_schema_text() -> String {
    // A serde_json::Value always serializes.
    let mut text = serde_json::to_string_pretty(&json_schema()).unwrap_or_default();
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The checked-in schema is what this build generates. Regenerate with
    /// `cargo run -p kiln-cli -- schema > configs/kiln-pipeline.schema.json`.
    #[test]
    fn checked_in_schema_is_current() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../configs/kiln-pipeline.schema.json"
        );
        let checked_in = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            checked_in == json_schema_text(),
            "{path} is stale: run `cargo run -p kiln-cli -- schema > configs/kiln-pipeline.schema.json`"
        );
    }

    #[test]
    fn every_task_class_has_typed_parameters() {
        let schema = json_schema();
        let branches = schema
            .pointer("/$defs/TaskConfig/allOf")
            .and_then(|b| b.as_array())
            .map(Vec::len);
        assert_eq!(branches, Some(TaskClass::ALL.len()));
        for def in [
            "StageSpec",
            "EstimatorSpec",
            "ParquetWriteOptions",
            "CrossValidation",
            "Metric",
        ] {
            assert!(
                schema.pointer(&format!("/$defs/{def}")).is_some(),
                "{def} missing"
            );
        }
    }
}
