//! Estimator specs, fitted models and the versioned model artifact.

use crate::data::Dataset;
use crate::gbt::{GbtModel, GbtParams};
use crate::metrics::Metrics;
use crate::rf::{RfModel, RfParams};
use kiln_engine::{KilnError, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Validated parameters of one candidate model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "classname", content = "params")]
pub enum ModelParams {
    GBTClassifier(GbtParams),
    RandomForestClassifier(RfParams),
}

pub const ESTIMATOR_CLASSNAMES: &[&str] = &["GBTClassifier", "RandomForestClassifier"];

impl ModelParams {
    /// Parses `params` for `classname` (unknown keys are errors).
    pub fn parse(
        classname: &str,
        params: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Self> {
        let value = serde_json::Value::Object(params.clone());
        let err = |e: serde_json::Error| KilnError::config(format!("{classname}: {e}"));
        let p = match classname {
            "GBTClassifier" => {
                ModelParams::GBTClassifier(serde_json::from_value(value).map_err(err)?)
            }
            "RandomForestClassifier" => {
                ModelParams::RandomForestClassifier(serde_json::from_value(value).map_err(err)?)
            }
            other => {
                return Err(KilnError::config_fix(
                    format!("unknown estimator classname '{other}'"),
                    format!("use one of: {}", ESTIMATOR_CLASSNAMES.join(", ")),
                ));
            }
        };
        match &p {
            ModelParams::GBTClassifier(g) => g.validate()?,
            ModelParams::RandomForestClassifier(r) => r.validate()?,
        }
        Ok(p)
    }

    pub fn classname(&self) -> &'static str {
        match self {
            ModelParams::GBTClassifier(_) => "GBTClassifier",
            ModelParams::RandomForestClassifier(_) => "RandomForestClassifier",
        }
    }

    pub fn fit(&self, data: &Dataset) -> Result<FittedModel> {
        Ok(match self {
            ModelParams::GBTClassifier(p) => FittedModel::GBTClassifier(p.fit(data)?),
            ModelParams::RandomForestClassifier(p) => {
                FittedModel::RandomForestClassifier(p.fit(data)?)
            }
        })
    }

    /// The parameters as a JSON object (for reports).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.get("params").cloned())
            .unwrap_or_default()
    }
}

/// A fitted model; a different type from its params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "classname", content = "model")]
pub enum FittedModel {
    GBTClassifier(GbtModel),
    RandomForestClassifier(RfModel),
}

impl FittedModel {
    pub fn predict_proba(&self, row: &dyn Fn(usize) -> f64) -> Vec<f64> {
        match self {
            FittedModel::GBTClassifier(m) => m.predict_proba(row),
            FittedModel::RandomForestClassifier(m) => m.predict_proba(row),
        }
    }

    pub fn num_classes(&self) -> usize {
        match self {
            FittedModel::GBTClassifier(m) => m.num_classes,
            FittedModel::RandomForestClassifier(m) => m.num_classes,
        }
    }

    pub fn feature_importances(&self) -> &[f64] {
        match self {
            FittedModel::GBTClassifier(m) => &m.feature_importances,
            FittedModel::RandomForestClassifier(m) => &m.feature_importances,
        }
    }

    /// Probabilities for every row of a dataset (rayon).
    pub fn predict_dataset(&self, data: &Dataset) -> Vec<Vec<f64>> {
        use rayon::prelude::*;
        (0..data.n_rows())
            .into_par_iter()
            .map(|r| self.predict_proba(&|f| data.columns[f][r]))
            .collect()
    }
}

/// Artifact format version; loading another version is an error.
pub const MODEL_FORMAT_VERSION: u32 = 1;

/// Where the fitted feature pipeline the model expects lives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PipelineRef {
    pub path: String,
    pub version: u64,
}

/// A deployed model with everything needed to use it later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelArtifact {
    pub format_version: u32,
    pub kiln_version: String,
    pub classname: String,
    pub params: serde_json::Value,
    pub label_col: String,
    pub feature_names: Vec<String>,
    pub feature_types: Vec<String>,
    pub feature_pipeline: Option<PipelineRef>,
    /// Rows, columns and an order-independent checksum of the training data.
    pub training_fingerprint: String,
    pub metrics: BTreeMap<String, f64>,
    pub model: FittedModel,
}

impl ModelArtifact {
    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| KilnError::config(format!("serializing model: {e}")))
    }

    pub fn from_json(bytes: &[u8], location: &str) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_slice(bytes)
            .map_err(|e| KilnError::data(location, format!("invalid model artifact: {e}")))?;
        let version = value
            .get("format_version")
            .and_then(|v| v.as_u64())
            .unwrap_or(0);
        if version != u64::from(MODEL_FORMAT_VERSION) {
            return Err(KilnError::Data {
                location: location.into(),
                message: format!(
                    "model artifact format version {version} is incompatible with this kiln (reads version {MODEL_FORMAT_VERSION})"
                ),
                fix: Some(
                    "retrain the model with this kiln version, or pin a compatible model version"
                        .into(),
                ),
            });
        }
        serde_json::from_value(value)
            .map_err(|e| KilnError::data(location, format!("invalid model artifact: {e}")))
    }

    /// Metrics as a map from a [`Metrics`] (scalar ones only).
    pub fn metric_map(m: &Metrics) -> BTreeMap<String, f64> {
        crate::metrics::METRIC_NAMES
            .iter()
            .filter_map(|n| {
                m.get(n)
                    .filter(|v| v.is_finite())
                    .map(|v| (n.to_string(), v))
            })
            .collect()
    }
}
