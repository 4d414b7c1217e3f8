//! Classification metrics with Spark's definitions: accuracy, weighted
//! precision / recall / F1, exact AUC-ROC (ties averaged), AUC-PR, log loss,
//! the confusion matrix and ROC curve points.

use serde::{Deserialize, Serialize};

/// Evaluation metrics of one model on one data set. Serialized with
/// Spark's evaluator names (`areaUnderROC`, `weightedPrecision`, ...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Metrics {
    pub rows: usize,
    pub accuracy: f64,
    pub weighted_precision: f64,
    pub weighted_recall: f64,
    pub f1: f64,
    /// Binary only (positive class 1); NaN for multiclass.
    #[serde(rename = "areaUnderROC")]
    pub area_under_roc: f64,
    #[serde(rename = "areaUnderPR")]
    pub area_under_pr: f64,
    pub log_loss: f64,
    /// `confusion[actual][predicted]`.
    #[serde(rename = "confusionMatrix")]
    pub confusion: Vec<Vec<u64>>,
    /// (false positive rate, true positive rate), at most ~200 points.
    pub roc: Vec<(f64, f64)>,
}

impl Metrics {
    /// Metrics of probability rows `proba` (one Vec per row) against labels.
    pub fn compute(labels: &[u32], proba: &[Vec<f64>]) -> Metrics {
        let k = proba.first().map(|p| p.len()).unwrap_or(2).max(2);
        let n = labels.len();
        let mut confusion = vec![vec![0u64; k]; k];
        let mut log_loss = 0.0;
        for (y, p) in labels.iter().zip(proba) {
            let pred = argmax(p);
            confusion[*y as usize][pred] += 1;
            log_loss -= p
                .get(*y as usize)
                .copied()
                .unwrap_or(0.0)
                .clamp(1e-15, 1.0)
                .ln();
        }
        let correct: u64 = (0..k).map(|c| confusion[c][c]).sum();
        let (mut wp, mut wr, mut wf) = (0.0, 0.0, 0.0);
        for (c, row) in confusion.iter().enumerate() {
            let actual: u64 = row.iter().sum();
            let predicted: u64 = (0..k).map(|a| confusion[a][c]).sum();
            let tp = row[c] as f64;
            let precision = if predicted > 0 {
                tp / predicted as f64
            } else {
                0.0
            };
            let recall = if actual > 0 { tp / actual as f64 } else { 0.0 };
            let f1 = if precision + recall > 0.0 {
                2.0 * precision * recall / (precision + recall)
            } else {
                0.0
            };
            let w = actual as f64 / n.max(1) as f64;
            wp += w * precision;
            wr += w * recall;
            wf += w * f1;
        }
        let (auc, aupr, roc) = if k == 2 {
            let scores: Vec<f64> = proba.iter().map(|p| p[1]).collect();
            binary_curves(labels, &scores)
        } else {
            (f64::NAN, f64::NAN, Vec::new())
        };
        Metrics {
            rows: n,
            accuracy: correct as f64 / n.max(1) as f64,
            weighted_precision: wp,
            weighted_recall: wr,
            f1: wf,
            area_under_roc: auc,
            area_under_pr: aupr,
            log_loss: log_loss / n.max(1) as f64,
            confusion,
            roc,
        }
    }

    /// The value of one metric.
    pub fn get(&self, metric: Metric) -> f64 {
        match metric {
            Metric::AreaUnderRoc => self.area_under_roc,
            Metric::AreaUnderPr => self.area_under_pr,
            Metric::Accuracy => self.accuracy,
            Metric::F1 => self.f1,
            Metric::WeightedPrecision => self.weighted_precision,
            Metric::WeightedRecall => self.weighted_recall,
            Metric::LogLoss => self.log_loss,
        }
    }

    /// The finite scalar metrics by Spark's name.
    pub fn scalars(&self) -> std::collections::BTreeMap<String, f64> {
        Metric::ALL
            .iter()
            .map(|m| (m.name().to_string(), self.get(*m)))
            .filter(|(_, v)| v.is_finite())
            .collect()
    }
}

/// A scalar evaluation metric, by the name Spark's evaluators give it
/// (`BinaryClassificationEvaluator`, `MulticlassClassificationEvaluator`).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Default,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
pub enum Metric {
    #[default]
    #[serde(rename = "areaUnderROC")]
    AreaUnderRoc,
    #[serde(rename = "areaUnderPR")]
    AreaUnderPr,
    #[serde(rename = "accuracy")]
    Accuracy,
    #[serde(rename = "f1")]
    F1,
    #[serde(rename = "weightedPrecision")]
    WeightedPrecision,
    #[serde(rename = "weightedRecall")]
    WeightedRecall,
    #[serde(rename = "logLoss")]
    LogLoss,
}

impl Metric {
    pub const ALL: &[Metric] = &[
        Metric::AreaUnderRoc,
        Metric::AreaUnderPr,
        Metric::Accuracy,
        Metric::F1,
        Metric::WeightedPrecision,
        Metric::WeightedRecall,
        Metric::LogLoss,
    ];

    /// Spark's name.
    pub fn name(self) -> &'static str {
        match self {
            Metric::AreaUnderRoc => "areaUnderROC",
            Metric::AreaUnderPr => "areaUnderPR",
            Metric::Accuracy => "accuracy",
            Metric::F1 => "f1",
            Metric::WeightedPrecision => "weightedPrecision",
            Metric::WeightedRecall => "weightedRecall",
            Metric::LogLoss => "logLoss",
        }
    }

    /// Whether a larger value is better (all but logLoss, as in Spark's
    /// `isLargerBetter`).
    pub fn larger_is_better(self) -> bool {
        self != Metric::LogLoss
    }

    /// Whether score `a` beats score `b`. A number beats NaN, NaN beats
    /// nothing, equal scores keep the earlier candidate: the one rule for
    /// every model selection in kiln.
    pub fn better(self, a: f64, b: f64) -> bool {
        match (a.is_nan(), b.is_nan()) {
            (true, _) => false,
            (false, true) => true,
            (false, false) if self.larger_is_better() => a > b,
            (false, false) => a < b,
        }
    }

    /// The index of the best score (the first among equals); `None` when
    /// there are no scores.
    pub fn best(self, scores: &[f64]) -> Option<usize> {
        let mut best: Option<usize> = None;
        for (i, s) in scores.iter().enumerate() {
            if best.is_none_or(|b| self.better(*s, scores[b])) {
                best = Some(i);
            }
        }
        best
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

fn argmax(p: &[f64]) -> usize {
    let mut best = 0;
    for (i, v) in p.iter().enumerate() {
        if *v > p[best] {
            best = i;
        }
    }
    best
}

/// Exact AUC-ROC (trapezoids over distinct thresholds, so ties count half),
/// AUC-PR (trapezoids, Spark's BinaryClassificationMetrics) and ROC points.
pub fn binary_curves(labels: &[u32], scores: &[f64]) -> (f64, f64, Vec<(f64, f64)>) {
    let mut idx: Vec<usize> = (0..labels.len()).collect();
    idx.sort_by(|a, b| scores[*b].total_cmp(&scores[*a]));
    let pos = labels.iter().filter(|l| **l == 1).count() as f64;
    let neg = labels.len() as f64 - pos;
    if pos == 0.0 || neg == 0.0 {
        return (f64::NAN, f64::NAN, Vec::new());
    }
    let (mut tp, mut fp) = (0.0, 0.0);
    let mut roc = vec![(0.0, 0.0)];
    let mut pr = vec![(0.0, 1.0)];
    let mut i = 0;
    while i < idx.len() {
        let s = scores[idx[i]];
        while i < idx.len() && scores[idx[i]] == s {
            if labels[idx[i]] == 1 {
                tp += 1.0
            } else {
                fp += 1.0
            }
            i += 1;
        }
        roc.push((fp / neg, tp / pos));
        pr.push((tp / pos, tp / (tp + fp)));
    }
    let area = |pts: &[(f64, f64)]| {
        pts.windows(2)
            .map(|w| (w[1].0 - w[0].0) * (w[1].1 + w[0].1) / 2.0)
            .sum::<f64>()
    };
    let auc = area(&roc);
    // Spark starts the PR curve at (0, precision of the first threshold).
    if pr.len() > 1 {
        pr[0].1 = pr[1].1;
    }
    let aupr = area(&pr);
    let step = (roc.len() / 200).max(1);
    let mut points: Vec<(f64, f64)> = roc.iter().step_by(step).copied().collect();
    if points.last() != roc.last() {
        points.extend(roc.last().copied());
    }
    (auc, aupr, points)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_ties_as_half_and_matches_hand_computation() {
        // 2 positives, 2 negatives; one tie between a positive and a negative.
        let labels = [1, 0, 1, 0];
        let scores = [0.9, 0.5, 0.5, 0.1];
        let (auc, _, roc) = binary_curves(&labels, &scores);
        // Pairs: (0.9 > 0.5, 0.9 > 0.1, 0.5 = 0.5 → ½, 0.5 > 0.1) = 3.5 / 4.
        assert!((auc - 0.875).abs() < 1e-12, "{auc}");
        assert_eq!(roc.last(), Some(&(1.0, 1.0)));
    }

    #[test]
    fn weighted_metrics_and_confusion() {
        let labels = [0, 0, 1, 1, 1];
        let proba: Vec<Vec<f64>> = [0.2, 0.6, 0.7, 0.8, 0.4]
            .iter()
            .map(|p| vec![1.0 - p, *p])
            .collect();
        let m = Metrics::compute(&labels, &proba);
        assert_eq!(m.confusion, vec![vec![1, 1], vec![1, 2]]);
        assert!((m.accuracy - 0.6).abs() < 1e-12);
        // class 0: p = 1/2, r = 1/2; class 1: p = 2/3, r = 2/3; weights 2/5, 3/5.
        assert!((m.weighted_precision - (0.4 * 0.5 + 0.6 * 2.0 / 3.0)).abs() < 1e-12);
        assert!((m.weighted_recall - 0.6).abs() < 1e-12);
        assert_eq!(m.get(Metric::Accuracy), m.accuracy);
        // Serialized with Spark's evaluator names.
        let json = serde_json::to_value(&m).expect("json");
        for name in [
            "areaUnderROC",
            "areaUnderPR",
            "weightedPrecision",
            "weightedRecall",
            "f1",
            "accuracy",
            "logLoss",
            "confusionMatrix",
        ] {
            assert!(json.get(name).is_some(), "{name} missing in {json}");
        }
    }

    #[test]
    fn selection_prefers_numbers_to_nan_whatever_the_order() {
        let auc = Metric::AreaUnderRoc;
        assert_eq!(auc.best(&[f64::NAN, 0.8, 0.9]), Some(2));
        assert_eq!(auc.best(&[0.9, f64::NAN, 0.95]), Some(2));
        assert_eq!(auc.best(&[0.9, f64::NAN]), Some(0));
        assert_eq!(auc.best(&[0.7, 0.7]), Some(0), "ties keep the first");
        assert_eq!(Metric::LogLoss.best(&[0.3, f64::NAN, 0.2]), Some(2));
        assert_eq!(auc.best(&[f64::NAN, f64::NAN]), Some(0));
        assert_eq!(auc.best(&[]), None);
        let parsed: Metric = serde_json::from_str("\"areaUnderROC\"").expect("name");
        assert_eq!(parsed, auc);
        assert!(serde_json::from_str::<Metric>("\"auc\"").is_err());
    }
}
