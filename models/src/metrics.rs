//! Classification metrics with Spark's definitions: accuracy, weighted
//! precision / recall / F1, exact AUC-ROC (ties averaged), AUC-PR, log loss,
//! the confusion matrix and ROC curve points.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    pub rows: usize,
    pub accuracy: f64,
    pub weighted_precision: f64,
    pub weighted_recall: f64,
    pub f1: f64,
    /// Binary only (positive class 1); NaN for multiclass.
    pub area_under_roc: f64,
    pub area_under_pr: f64,
    pub log_loss: f64,
    /// `confusion[actual][predicted]`.
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

    /// A metric by Spark's name (higher is better except logLoss).
    pub fn get(&self, name: &str) -> Option<f64> {
        Some(match name {
            "areaUnderROC" => self.area_under_roc,
            "areaUnderPR" => self.area_under_pr,
            "accuracy" => self.accuracy,
            "f1" => self.f1,
            "weightedPrecision" => self.weighted_precision,
            "weightedRecall" => self.weighted_recall,
            "logLoss" => self.log_loss,
            _ => return None,
        })
    }
}

pub const METRIC_NAMES: &[&str] = &[
    "areaUnderROC",
    "areaUnderPR",
    "accuracy",
    "f1",
    "weightedPrecision",
    "weightedRecall",
    "logLoss",
];

/// Whether a larger value of the metric is better.
pub fn larger_is_better(name: &str) -> bool {
    name != "logLoss"
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
        assert_eq!(m.get("accuracy"), Some(m.accuracy));
    }
}
