//! `kiln_predict(model_json, features)`: probability and label of a feature
//! vector (`List<Float64>`) as a struct `{probability, label}`.
//!
//! The model travels in the plan as a string literal, so executors need no
//! access to the model repository; each process parses a given model once
//! and keeps it in a cache keyed by the literal's hash.

use crate::model::ModelArtifact;
use arrow::array::{Array, ArrayRef, AsArray, Float64Builder, StructArray};
use arrow::datatypes::{DataType, Field, Fields};
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
};
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

/// Parsed models by their JSON text (the full text is the key, so two
/// models can never share an entry).
static MODELS: LazyLock<Mutex<HashMap<String, Arc<ModelArtifact>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// How many distinct models this process has parsed (for tests).
pub fn cached_models() -> usize {
    MODELS.lock().map(|m| m.len()).unwrap_or(0)
}

fn model(json: &str) -> Result<Arc<ModelArtifact>> {
    let mut cache = MODELS
        .lock()
        .map_err(|_| DataFusionError::Execution("model cache poisoned".into()))?;
    if let Some(m) = cache.get(json) {
        return Ok(Arc::clone(m));
    }
    let m = Arc::new(
        ModelArtifact::from_json(json.as_bytes(), "kiln_predict model")
            .map_err(|e| DataFusionError::Execution(e.to_string()))?,
    );
    cache.insert(json.to_string(), Arc::clone(&m));
    Ok(m)
}

pub fn output_fields() -> Fields {
    Fields::from(vec![
        Field::new("probability", DataType::Float64, true),
        Field::new("label", DataType::Float64, true),
    ])
}

#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Predict {
    signature: Signature,
}

impl Default for Predict {
    fn default() -> Self {
        Predict {
            signature: Signature::any(2, Volatility::Immutable),
        }
    }
}

pub fn predict_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(Predict::default())
}

impl ScalarUDFImpl for Predict {
    fn name(&self) -> &str {
        "kiln_predict"
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(DataType::Struct(output_fields()))
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let json = match &args.args[0] {
            ColumnarValue::Scalar(
                ScalarValue::Utf8(Some(s))
                | ScalarValue::LargeUtf8(Some(s))
                | ScalarValue::Utf8View(Some(s)),
            ) => s.clone(),
            _ => {
                return Err(DataFusionError::Plan(
                    "kiln_predict: the model must be a string literal".into(),
                ));
            }
        };
        let model = model(&json)?;
        let expected = model.feature_names.len();
        let features = args.args[1].to_array(args.number_rows)?;
        let list = features.as_list_opt::<i32>().ok_or_else(|| {
            DataFusionError::Plan(format!(
                "kiln_predict: features must be List<Float64>, got {}",
                features.data_type()
            ))
        })?;
        let mut prob = Float64Builder::with_capacity(list.len());
        let mut label = Float64Builder::with_capacity(list.len());
        let binary = model.model.num_classes() == 2;
        for i in 0..list.len() {
            if list.is_null(i) {
                prob.append_null();
                label.append_null();
                continue;
            }
            let v = list.value(i);
            let v = v
                .as_primitive_opt::<arrow::datatypes::Float64Type>()
                .ok_or_else(|| {
                    DataFusionError::Plan("kiln_predict: features must be List<Float64>".into())
                })?;
            if v.len() != expected {
                return Err(DataFusionError::Execution(format!(
                    "kiln_predict: the model was trained on {expected} features ({}...), but the feature vector has {}; apply the feature pipeline the model was trained with",
                    model
                        .feature_names
                        .iter()
                        .take(3)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", "),
                    v.len()
                )));
            }
            let p = model
                .model
                .predict_proba(&|f| if v.is_null(f) { f64::NAN } else { v.value(f) });
            let best = p
                .iter()
                .enumerate()
                .fold(0, |b, (i, x)| if *x > p[b] { i } else { b });
            prob.append_value(if binary { p[1] } else { p[best] });
            label.append_value(best as f64);
        }
        let arrays: Vec<ArrayRef> = vec![
            Arc::new(prob.finish()) as ArrayRef,
            Arc::new(label.finish()) as ArrayRef,
        ];
        let nulls = list.nulls().cloned();
        Ok(ColumnarValue::Array(Arc::new(StructArray::new(
            output_fields(),
            arrays,
            nulls,
        ))))
    }
}

#[cfg(test)]
mod tests {
    use crate::data::Dataset;
    use crate::gbt::GbtParams;
    use crate::model::{MODEL_FORMAT_VERSION, ModelArtifact, ModelParams};
    use datafusion::prelude::SessionContext;

    #[tokio::test]
    async fn predicts_and_refuses_a_different_feature_set() -> datafusion::error::Result<()> {
        let d = Dataset {
            columns: vec![(0..200).map(|i| f64::from(i % 10)).collect()],
            labels: (0..200).map(|i| u32::from(i % 10 >= 5)).collect(),
            feature_names: vec!["x".into()],
        };
        let model = ModelParams::GBTClassifier(GbtParams::default())
            .fit_dataset(&d)
            .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?;
        let artifact = ModelArtifact {
            format_version: MODEL_FORMAT_VERSION,
            kiln_version: "test".into(),
            classname: "GBTClassifier".into(),
            params: serde_json::json!({}),
            label_col: "y".into(),
            feature_names: vec!["x".into()],
            feature_types: vec!["double".into()],
            feature_pipeline: None,
            training_fingerprint: String::new(),
            metrics: Default::default(),
            model,
        };
        let json = String::from_utf8(
            artifact
                .to_json()
                .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?,
        )
        .unwrap_or_default()
        .replace('\'', "''");
        let ctx = SessionContext::new();
        ctx.register_udf(super::predict_udf());
        let ok = ctx
            .sql(&format!("SELECT kiln_predict('{json}', [CAST(x AS DOUBLE)])['label'] AS label FROM (VALUES (1), (8)) t(x)"))
            .await?
            .collect()
            .await?;
        let labels = arrow::compute::cast(ok[0].column(0), &arrow::datatypes::DataType::Float64)?;
        let labels: Vec<f64> =
            arrow::array::AsArray::as_primitive::<arrow::datatypes::Float64Type>(&labels)
                .values()
                .to_vec();
        assert_eq!(labels, vec![0.0, 1.0]);
        let err = ctx
            .sql(&format!(
                "SELECT kiln_predict('{json}', [1.0, 2.0]) FROM (VALUES (1)) t(x)"
            ))
            .await?
            .collect()
            .await
            .expect_err("two features for a one-feature model")
            .to_string();
        assert!(
            err.contains("trained on 1 features (x...), but the feature vector has 2"),
            "{err}"
        );
        Ok(())
    }
}
