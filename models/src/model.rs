//! Estimator specs, fitted models and the versioned model artifact.

use crate::data::{Binned, Dataset, TrainingSet};
use crate::gbt::GbtParams;
use crate::rf::RfParams;
use kiln_engine::{KilnError, Result};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// An estimator's validated hyperparameters (linfa style: the fitted
/// model is another type).
pub trait Estimator:
    Clone + PartialEq + std::fmt::Debug + Serialize + DeserializeOwned + schemars::JsonSchema
{
    type Model: Classifier;

    /// Checks ranges and combinations serde cannot.
    fn validate(&self) -> Result<()>;

    /// The binning the estimator trains on (`maxBins`).
    fn max_bins(&self) -> usize;

    /// Fits on `rows` (ascending indices) of the binned set.
    fn fit(&self, data: &TrainingSet, rows: &[u32]) -> Result<Self::Model>;

    /// The ensemble size when a fit's first `m` members are exactly the fit
    /// with size `m` (so a grid over sizes fits once); `None` otherwise.
    fn ensemble_size(&self) -> Option<usize>;

    /// The same params with another ensemble size.
    fn with_ensemble_size(&self, size: usize) -> Self;

    /// Relative cost of a fit, for scheduling the largest first.
    fn fit_cost(&self) -> f64;

    /// Bytes of working memory a fit needs beyond the training set.
    fn working_bytes(&self, set_rows: usize, classes: usize) -> u64;
}

/// A fitted probabilistic classifier.
pub trait Classifier: Clone + PartialEq + std::fmt::Debug + Serialize + DeserializeOwned {
    /// Class probabilities of one row (`row(f)` is feature `f`).
    fn predict_proba(&self, row: &dyn Fn(usize) -> f64) -> Vec<f64>;
    fn num_classes(&self) -> usize;
    fn feature_importances(&self) -> &[f64];
    /// The first `size` members of the ensemble.
    fn truncated(&self, size: usize) -> Self;
}

/// Declares the estimators once: each `Classname(Params)` line becomes a
/// variant of [`ModelParams`] and of [`FittedModel`] (the params'
/// [`Estimator::Model`]). A new estimator is one module implementing
/// [`Estimator`] and [`Classifier`], and one line here.
macro_rules! estimators {
    ($($class:ident($params:ty)),* $(,)?) => {
        /// Validated parameters of one candidate model.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "classname", content = "params")]
        pub enum ModelParams {
            $($class($params)),*
        }

        /// A fitted model; a different type from its params.
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        #[serde(tag = "classname", content = "model")]
        pub enum FittedModel {
            $($class(<$params as Estimator>::Model)),*
        }

        /// Every estimator classname.
        pub const ESTIMATOR_CLASSNAMES: &[&str] = &[$(stringify!($class)),*];

        impl ModelParams {
            /// Parses and validates `params` for `classname` (unknown keys
            /// are errors).
            pub fn parse(
                classname: &str,
                params: &serde_json::Map<String, serde_json::Value>,
            ) -> Result<Self> {
                let value = serde_json::Value::Object(params.clone());
                let err = |e: serde_json::Error| KilnError::config(format!("{classname}: {e}"));
                match classname {
                    $(stringify!($class) => {
                        let p: $params = serde_json::from_value(value).map_err(err)?;
                        p.validate()?;
                        Ok(ModelParams::$class(p))
                    })*
                    other => Err(KilnError::config_fix(
                        format!("unknown estimator classname '{other}'"),
                        match kiln_engine::suggest::closest(other, ESTIMATOR_CLASSNAMES) {
                            Some(s) => format!("did you mean {s}?"),
                            None => format!("use one of: {}", ESTIMATOR_CLASSNAMES.join(", ")),
                        },
                    )),
                }
            }

            pub fn classname(&self) -> &'static str {
                match self {
                    $(ModelParams::$class(_) => stringify!($class)),*
                }
            }

            /// Fits on `rows` (ascending indices) of the binned set.
            pub fn fit(&self, data: &TrainingSet, rows: &[u32]) -> Result<FittedModel> {
                Ok(match self {
                    $(ModelParams::$class(p) => FittedModel::$class(p.fit(data, rows)?)),*
                })
            }

            pub fn max_bins(&self) -> usize {
                match self {
                    $(ModelParams::$class(p) => p.max_bins()),*
                }
            }

            pub fn ensemble_size(&self) -> Option<usize> {
                match self {
                    $(ModelParams::$class(p) => p.ensemble_size()),*
                }
            }

            pub fn with_ensemble_size(&self, size: usize) -> Self {
                match self {
                    $(ModelParams::$class(p) => ModelParams::$class(p.with_ensemble_size(size))),*
                }
            }

            pub fn fit_cost(&self) -> f64 {
                match self {
                    $(ModelParams::$class(p) => p.fit_cost()),*
                }
            }

            pub fn working_bytes(&self, set_rows: usize, classes: usize) -> u64 {
                match self {
                    $(ModelParams::$class(p) => p.working_bytes(set_rows, classes)),*
                }
            }

            /// The JSON Schema of every estimator's params, by classname.
            pub fn schemas(
                generator: &mut schemars::SchemaGenerator,
            ) -> Vec<(&'static str, schemars::Schema)> {
                vec![$((stringify!($class), generator.subschema_for::<$params>())),*]
            }
        }

        impl FittedModel {
            pub fn predict_proba(&self, row: &dyn Fn(usize) -> f64) -> Vec<f64> {
                match self {
                    $(FittedModel::$class(m) => m.predict_proba(row)),*
                }
            }

            pub fn num_classes(&self) -> usize {
                match self {
                    $(FittedModel::$class(m) => m.num_classes()),*
                }
            }

            pub fn feature_importances(&self) -> &[f64] {
                match self {
                    $(FittedModel::$class(m) => m.feature_importances()),*
                }
            }

            pub fn truncated(&self, size: usize) -> Self {
                match self {
                    $(FittedModel::$class(m) => FittedModel::$class(m.truncated(size))),*
                }
            }
        }
    };
}

estimators! {
    GBTClassifier(GbtParams),
    RandomForestClassifier(RfParams),
}

impl ModelParams {
    /// The parameters as a JSON object (for reports).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self)
            .ok()
            .and_then(|v| v.get("params").cloned())
            .unwrap_or_default()
    }
}

impl ModelParams {
    /// Bins an in-memory dataset and fits on all of its rows.
    pub fn fit_dataset(&self, data: &Dataset) -> Result<FittedModel> {
        let set = TrainingSet::from_dataset(data, &[self.max_bins()])?;
        self.fit(&set, &set.all_rows())
    }
}

impl FittedModel {
    /// Probabilities for every row of a dataset (rayon).
    pub fn predict_dataset(&self, data: &Dataset) -> Vec<Vec<f64>> {
        use rayon::prelude::*;
        (0..data.n_rows())
            .into_par_iter()
            .map(|r| self.predict_proba(&|f| data.columns[f][r]))
            .collect()
    }

    /// Probabilities for `rows` of a binned set whose boundaries the model
    /// was trained on: the same as on the raw values (rayon).
    pub fn predict_binned(&self, binned: &Binned, rows: &[u32]) -> Vec<Vec<f64>> {
        use rayon::prelude::*;
        rows.par_iter()
            .map(|&r| self.predict_proba(&|f| binned.value(f, r as usize)))
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

/// The file of a version that says where its model came from. It is kept
/// out of `model.json`, so the same data and params give the same
/// `model.json`, byte for byte, whatever run trained it.
pub const LINEAGE_FILE: &str = "lineage.json";

/// Where a model came from (`lineage.json`; absent in older versions).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Lineage {
    /// When it was trained (RFC 3339).
    pub created: Option<String>,
    pub run_id: Option<String>,
    pub pipeline: Option<String>,
    pub task: Option<String>,
    /// `RUN_ID/TASK` of the prediction run whose drift started this training.
    pub triggered_by: Option<String>,
}

impl ModelArtifact {
    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| KilnError::internal("serializing a model", e))
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Codes;

    fn data(labels: Vec<u32>, x: Vec<f64>) -> Dataset {
        Dataset {
            columns: vec![x],
            labels,
            feature_names: vec!["x".into()],
        }
    }

    /// 100 distinct values, so 128 bins resolve every threshold.
    fn separable(n: usize) -> Dataset {
        let x: Vec<f64> = (0..n).map(|i| (i % 100) as f64).collect();
        let y = (0..n).map(|i| u32::from(i % 100 >= 50)).collect();
        data(y, x)
    }

    fn fine() -> [ModelParams; 2] {
        [
            ModelParams::GBTClassifier(GbtParams {
                max_bins: 128,
                ..GbtParams::default()
            }),
            ModelParams::RandomForestClassifier(RfParams {
                max_bins: 128,
                feature_subset_strategy: "all".into(),
                ..RfParams::default()
            }),
        ]
    }

    #[test]
    fn bad_training_sets_are_rejected_with_clear_errors() {
        let gbt = ModelParams::GBTClassifier(GbtParams::default());
        let rf = ModelParams::RandomForestClassifier(RfParams::default());
        for p in [&gbt, &rf] {
            let empty = p
                .fit_dataset(&data(vec![], vec![]))
                .expect_err("empty")
                .to_string();
            assert!(empty.contains("the training set is empty"), "{empty}");
            let single = p
                .fit_dataset(&data(vec![1; 10], (0..10).map(f64::from).collect()))
                .expect_err("one class")
                .to_string();
            assert!(single.contains("single class"), "{single}");
            let mut inf = separable(100);
            inf.columns[0][3] = f64::INFINITY;
            let msg = p.fit_dataset(&inf).expect_err("inf").to_string();
            assert!(
                msg.contains("feature 'x' is infinite (inf) in row 3"),
                "{msg}"
            );
        }
        let binary = separable(100).validate(true);
        assert!(binary.is_ok());
        let three = data(vec![0, 1, 2, 0], vec![0.0, 1.0, 2.0, 3.0])
            .validate(true)
            .expect_err("binary only")
            .to_string();
        assert!(
            three.contains("binary training needs labels in {0, 1}"),
            "{three}"
        );
    }

    #[test]
    fn artifacts_round_trip_and_reject_other_format_versions() -> Result<()> {
        let d = separable(200);
        let model = ModelParams::GBTClassifier(GbtParams {
            max_iter: 3,
            ..GbtParams::default()
        })
        .fit_dataset(&d)?;
        let artifact = ModelArtifact {
            format_version: MODEL_FORMAT_VERSION,
            kiln_version: "test".into(),
            classname: "GBTClassifier".into(),
            params: serde_json::json!({}),
            label_col: "y".into(),
            feature_names: d.feature_names.clone(),
            feature_types: vec!["double".into()],
            feature_pipeline: None,
            training_fingerprint: String::new(),
            metrics: BTreeMap::new(),
            model,
        };
        let bytes = artifact.to_json()?;
        assert_eq!(ModelArtifact::from_json(&bytes, "m.json")?, artifact);
        let old =
            String::from_utf8_lossy(&bytes).replace("\"format_version\":1", "\"format_version\":0");
        let err = ModelArtifact::from_json(old.as_bytes(), "m.json")
            .expect_err("old format")
            .to_string();
        assert!(err.contains("format version 0 is incompatible"), "{err}");
        Ok(())
    }

    #[test]
    fn same_seed_gives_identical_models_and_trees_learn() -> Result<()> {
        let d = separable(1000);
        for p in fine() {
            let (a, b) = (p.fit_dataset(&d)?, p.fit_dataset(&d)?);
            assert_eq!(
                serde_json::to_string(&a).ok(),
                serde_json::to_string(&b).ok()
            );
            let m = crate::metrics::Metrics::compute(&d.labels, &a.predict_dataset(&d));
            assert!(
                m.accuracy > 0.99 && m.area_under_roc > 0.99,
                "{}: {m:?}",
                p.classname()
            );
        }
        Ok(())
    }

    /// Past 256 bins the codes are `u16`. With fewer distinct values than
    /// either `maxBins`, both binnings put one value in each bin, so the
    /// byte and the two-byte paths grow the same trees; on a feature of
    /// 10,000 distinct values only the wide binning can place the
    /// threshold between two neighbours.
    #[test]
    fn wide_codes_grow_the_trees_narrow_codes_do_and_split_finer() -> Result<()> {
        let d = separable(1000);
        let set = |bins| TrainingSet::from_dataset(&d, &[bins]);
        assert!(matches!(set(128)?.binned(128)?.codes, Codes::Narrow(_)));
        assert!(matches!(set(1000)?.binned(1000)?.codes, Codes::Wide(_)));
        let pairs = [
            (
                ModelParams::GBTClassifier(GbtParams {
                    max_bins: 128,
                    ..GbtParams::default()
                }),
                ModelParams::GBTClassifier(GbtParams {
                    max_bins: 1000,
                    ..GbtParams::default()
                }),
            ),
            (
                ModelParams::RandomForestClassifier(RfParams {
                    max_bins: 128,
                    ..RfParams::default()
                }),
                ModelParams::RandomForestClassifier(RfParams {
                    max_bins: 1000,
                    ..RfParams::default()
                }),
            ),
        ];
        for (narrow, wide) in pairs {
            assert_eq!(
                serde_json::to_string(&narrow.fit_dataset(&d)?).ok(),
                serde_json::to_string(&wide.fit_dataset(&d)?).ok(),
                "{}",
                narrow.classname()
            );
        }

        let n = 10_000;
        let x: Vec<f64> = (0..n).map(|i| ((i * 7_919) % n) as f64).collect();
        let y = x.iter().map(|&v| u32::from(v >= 5_011.0)).collect();
        let fine = data(y, x);
        let accuracy = |max_bins| -> Result<f64> {
            let model = ModelParams::GBTClassifier(GbtParams {
                max_iter: 1,
                max_depth: 1,
                max_bins,
                ..GbtParams::default()
            })
            .fit_dataset(&fine)?;
            let m = crate::metrics::Metrics::compute(&fine.labels, &model.predict_dataset(&fine));
            Ok(m.accuracy)
        };
        assert!(accuracy(256)? < 1.0);
        assert_eq!(accuracy(16_384)?, 1.0);
        let err = ModelParams::GBTClassifier(GbtParams {
            max_bins: 70_000,
            ..GbtParams::default()
        })
        .fit_dataset(&fine)
        .expect_err("too many bins")
        .to_string();
        assert!(err.contains("2..=65536"), "{err}");
        Ok(())
    }

    #[test]
    fn missing_values_learn_a_default_direction() -> Result<()> {
        // Label 1 exactly when x is missing: only the default direction can tell.
        let n = 400;
        let x: Vec<f64> = (0..n)
            .map(|i| if i % 2 == 0 { f64::NAN } else { (i % 7) as f64 })
            .collect();
        let y: Vec<u32> = (0..n).map(|i| u32::from(i % 2 == 0)).collect();
        let d = data(y, x);
        let model = ModelParams::GBTClassifier(GbtParams::default()).fit_dataset(&d)?;
        let m = crate::metrics::Metrics::compute(&d.labels, &model.predict_dataset(&d));
        assert_eq!(m.accuracy, 1.0, "{m:?}");
        Ok(())
    }

    #[test]
    fn multiclass_softmax_and_forest_probabilities() -> Result<()> {
        let n = 900;
        let x: Vec<f64> = (0..n).map(|i| (i % 90) as f64).collect();
        let y: Vec<u32> = (0..n).map(|i| (i % 90 / 30) as u32).collect();
        let d = data(y, x);
        for p in fine() {
            let model = p.fit_dataset(&d)?;
            assert_eq!(model.num_classes(), 3);
            let proba = model.predict_dataset(&d);
            assert!(
                proba
                    .iter()
                    .all(|p| (p.iter().sum::<f64>() - 1.0).abs() < 1e-9)
            );
            let m = crate::metrics::Metrics::compute(&d.labels, &proba);
            assert!(m.accuracy > 0.98, "{}: {}", p.classname(), m.accuracy);
        }
        Ok(())
    }
}
