//! Usefulness: does a model trained on the synthetic table predict the real
//! one? kiln's own GBT (`maxIter` 20, `maxDepth` 5, as `ModelTraining`'s
//! default) is trained on the synthetic rows and, for reference, on 70 % of
//! the real rows (chosen by a seeded hash of the row), and both are scored
//! on the other 30 % of the real rows: train-on-synthetic-test-on-real
//! against train-on-real-test-on-real, by Spark's `areaUnderROC`.
//!
//! The target is a column with two values (a label); the features are every
//! other column that is not a key: numbers as they are, text and booleans
//! as the codes of the dictionary both tables share.

use super::Loaded;
use crate::frame::{NULL_CODE, SdType, Values};
use crate::mix;
use kiln_engine::{KilnError, Result};
use kiln_models::data::{Dataset, TrainingSet};
use kiln_models::gbt::GbtParams;
use kiln_models::metrics::binary_curves;
use serde::Serialize;

/// Share of the real rows the reference model trains on.
const REAL_TRAIN_SHARE: f64 = 0.7;

#[derive(Debug, Clone, Serialize)]
pub struct Usefulness {
    pub target: String,
    /// The target value that is the positive class.
    pub positive: String,
    pub metric: &'static str,
    /// AUC of the model trained on 70 % of the real rows.
    pub train_on_real: Option<f64>,
    /// AUC of the model trained on the synthetic rows.
    pub train_on_synthetic: Option<f64>,
    /// train_on_synthetic / train_on_real.
    pub ratio: Option<f64>,
    pub real_train_rows: usize,
    pub real_test_rows: usize,
    pub synthetic_train_rows: usize,
    pub model: &'static str,
}

/// The usefulness section for `target`.
pub fn usefulness(loaded: &Loaded, target: &str, seed: u64) -> Result<Usefulness> {
    let Some(t) = loaded.names.iter().position(|n| n == target) else {
        return Err(KilnError::config_fix(
            format!("the target '{target}' is not a column of the evaluated tables"),
            format!("use one of: {}", loaded.names.join(", ")),
        ));
    };
    // The two classes, in dictionary (or numeric) order.
    let (real_labels, synthetic_labels, positive) = labels(loaded, t)?;
    let features: Vec<usize> = (0..loaded.names.len())
        .filter(|&c| c != t && loaded.types[c] != SdType::Id)
        .collect();
    let feature_names: Vec<String> = features.iter().map(|&c| loaded.names[c].clone()).collect();
    let value = |frame: &crate::frame::Frame, c: usize, r: usize| match &frame.columns[c] {
        Values::Numbers(v) => v[r],
        Values::Codes(v) if v[r] == NULL_CODE => f64::NAN,
        Values::Codes(v) => f64::from(v[r]),
    };
    let dataset = |frame: &crate::frame::Frame, rows: &[usize], labels: &[Option<u32>]| Dataset {
        columns: features
            .iter()
            .map(|&c| rows.iter().map(|&r| value(frame, c, r)).collect())
            .collect(),
        labels: rows.iter().map(|&r| labels[r].unwrap_or(0)).collect(),
        feature_names: feature_names.clone(),
    };
    let labelled = |labels: &[Option<u32>]| -> Vec<usize> {
        (0..labels.len()).filter(|&r| labels[r].is_some()).collect()
    };
    let (mut real_train, mut real_test) = (Vec::new(), Vec::new());
    for r in labelled(&real_labels) {
        let u = (mix(seed, r as u64, 0x7E57) >> 11) as f64 / (1u64 << 53) as f64;
        if u < REAL_TRAIN_SHARE {
            real_train.push(r);
        } else {
            real_test.push(r);
        }
    }
    let synthetic_rows = labelled(&synthetic_labels);
    let test = dataset(&loaded.real, &real_test, &real_labels);
    let params = GbtParams {
        seed,
        ..GbtParams::default()
    };
    let score = |train: Dataset| -> Result<Option<f64>> {
        let classes: std::collections::HashSet<u32> = train.labels.iter().copied().collect();
        if classes.len() < 2 || test.labels.iter().all(|&l| l == test.labels[0]) {
            return Ok(None);
        }
        let set = TrainingSet::from_dataset(&train, &[params.max_bins])?;
        let model = params.fit(&set, &set.all_rows())?;
        let scores: Vec<f64> = (0..test.n_rows())
            .map(|r| {
                let p = model.predict_proba(&|f| test.columns[f][r]);
                p.get(1).copied().unwrap_or(0.0)
            })
            .collect();
        let (auc, _, _) = binary_curves(&test.labels, &scores);
        Ok(auc.is_finite().then_some(auc))
    };
    let train_on_real = score(dataset(&loaded.real, &real_train, &real_labels))?;
    let train_on_synthetic = score(dataset(
        &loaded.synthetic,
        &synthetic_rows,
        &synthetic_labels,
    ))?;
    Ok(Usefulness {
        target: target.to_string(),
        positive,
        metric: "areaUnderROC",
        ratio: match (train_on_real, train_on_synthetic) {
            (Some(r), Some(s)) if r > 0.0 => Some(s / r),
            _ => None,
        },
        train_on_real,
        train_on_synthetic,
        real_train_rows: real_train.len(),
        real_test_rows: real_test.len(),
        synthetic_train_rows: synthetic_rows.len(),
        model: "GBTClassifier (maxIter 20, maxDepth 5)",
    })
}

/// 0/1 labels of both tables (`None` = missing target); the target must
/// have exactly two values in the real table.
type Labels = (Vec<Option<u32>>, Vec<Option<u32>>, String);

fn labels(loaded: &Loaded, t: usize) -> Result<Labels> {
    let name = &loaded.names[t];
    let not_binary = |n: usize| {
        KilnError::config_fix(
            format!(
                "the target '{name}' has {n} distinct values in the real table; usefulness needs two (a binary label)"
            ),
            "choose a binary label column as the target",
        )
    };
    match (&loaded.real.columns[t], &loaded.synthetic.columns[t]) {
        (Values::Numbers(r), Values::Numbers(s)) => {
            let mut values: Vec<f64> = r.iter().copied().filter(|v| !v.is_nan()).collect();
            values.sort_unstable_by(f64::total_cmp);
            values.dedup();
            if values.len() != 2 {
                return Err(not_binary(values.len()));
            }
            let code = |v: f64| {
                if v == values[1] {
                    Some(1)
                } else if v == values[0] {
                    Some(0)
                } else {
                    None
                }
            };
            Ok((
                r.iter().map(|&v| code(v)).collect(),
                s.iter().map(|&v| code(v)).collect(),
                values[1].to_string(),
            ))
        }
        (Values::Codes(r), Values::Codes(s)) => {
            let dict = &loaded.dictionaries[t];
            let mut values: Vec<u32> = r.iter().copied().filter(|&c| c != NULL_CODE).collect();
            values.sort_unstable_by(|a, b| dict.values[*a as usize].cmp(&dict.values[*b as usize]));
            values.dedup();
            if values.len() != 2 {
                return Err(not_binary(values.len()));
            }
            let code = |c: u32| {
                if c == values[1] {
                    Some(1)
                } else if c == values[0] {
                    Some(0)
                } else {
                    None
                }
            };
            Ok((
                r.iter().map(|&c| code(c)).collect(),
                s.iter().map(|&c| code(c)).collect(),
                dict.values[values[1] as usize].clone(),
            ))
        }
        _ => Err(not_binary(0)),
    }
}
