//! The reports tasks leave in the lake, read back for a task's page: a
//! training task's `report.json` (competing models, test metrics, CV grid,
//! importances, champion/challenger) and a monitored batch's drift report.
//!
//! Read leniently: a metric that is not a number (NaN is written as `null`)
//! or a key from a newer kiln leaves a blank, not a broken page.

use super::charts;
use kiln_models::metrics::Metric;
use maud::{Markup, html};
use serde::Deserialize;
use std::collections::BTreeMap;

/// `report.json` of a `ModelTraining` version.
#[derive(Debug, Clone, Deserialize)]
pub struct TrainingReport {
    pub metric: String,
    pub winner: String,
    pub train_rows: u64,
    pub test_rows: u64,
    pub models: Vec<ModelReport>,
    #[serde(default)]
    pub champion_challenger: Option<Decision>,
    #[serde(default)]
    pub distribution: Option<Distribution>,
}

/// One competing estimator.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelReport {
    pub classname: String,
    #[serde(default)]
    pub params: serde_json::Value,
    #[serde(default)]
    pub cv_metric: Option<f64>,
    #[serde(default)]
    pub fit_seconds: Option<f64>,
    #[serde(default)]
    pub grid: Option<Vec<GridPoint>>,
    pub test_metrics: TestMetrics,
    #[serde(default)]
    pub feature_importances: BTreeMap<String, f64>,
}

/// A grid point's cross-validated metric.
#[derive(Debug, Clone, Deserialize)]
pub struct GridPoint {
    pub params: serde_json::Value,
    pub metric: Option<f64>,
}

/// Test metrics, with Spark's evaluator names.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestMetrics {
    pub rows: u64,
    pub accuracy: Option<f64>,
    pub weighted_precision: Option<f64>,
    pub weighted_recall: Option<f64>,
    pub f1: Option<f64>,
    #[serde(rename = "areaUnderROC")]
    pub area_under_roc: Option<f64>,
    #[serde(rename = "areaUnderPR")]
    pub area_under_pr: Option<f64>,
    pub log_loss: Option<f64>,
    #[serde(default)]
    pub confusion_matrix: Vec<Vec<u64>>,
    #[serde(default)]
    pub roc: Vec<(f64, f64)>,
}

/// The champion/challenger decision of a training run.
#[derive(Debug, Clone, Deserialize)]
pub struct Decision {
    pub promoted: bool,
    pub reason: String,
}

/// How the fits were placed (local, fan-out tuning, data-parallel).
#[derive(Debug, Clone, Deserialize)]
pub struct Distribution {
    pub mode: String,
    pub reason: String,
}

/// The precision-recall curve of a binary model, from its ROC points and
/// the class totals of its confusion matrix: at each threshold,
/// `tp = tpr·P`, `fp = fpr·N`, precision `tp / (tp + fp)`, recall `tpr`.
/// Empty for a multiclass model or an empty test set.
pub fn pr_curve(roc: &[(f64, f64)], confusion: &[Vec<u64>]) -> Vec<(f64, f64)> {
    let [negatives, positives] = match confusion {
        [n, p] => [n.iter().sum::<u64>() as f64, p.iter().sum::<u64>() as f64],
        _ => return Vec::new(),
    };
    if positives == 0.0 {
        return Vec::new();
    }
    roc.iter()
        .filter_map(|&(fpr, tpr)| {
            let (tp, fp) = (tpr * positives, fpr * negatives);
            (tp + fp > 0.0).then(|| (tpr, tp / (tp + fp)))
        })
        .collect()
}

fn number(value: Option<f64>, digits: usize) -> String {
    value
        .filter(|v| v.is_finite())
        .map(|v| format!("{v:.digits$}"))
        .unwrap_or_else(|| "—".into())
}

/// `{"maxDepth": 5, "maxIter": 20}` as `maxDepth=5 maxIter=20`.
fn params_text(params: &serde_json::Value) -> String {
    match params {
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" "),
        other => other.to_string(),
    }
}

/// Importances shown per model.
const TOP_FEATURES: usize = 20;

/// The training section of a task page.
pub fn training(report: &TrainingReport, files: Option<&str>) -> Markup {
    let curves: Vec<(String, Vec<(f64, f64)>)> = report
        .models
        .iter()
        .map(|m| (m.classname.clone(), m.test_metrics.roc.clone()))
        .collect();
    let pr: Vec<(String, Vec<(f64, f64)>)> = report
        .models
        .iter()
        .map(|m| {
            let t = &m.test_metrics;
            (m.classname.clone(), pr_curve(&t.roc, &t.confusion_matrix))
        })
        .collect();
    html! {
        h2 { "Model selection" }
        p {
            "Selected by " b { (report.metric) } " on " (report.test_rows) " test rows; trained on "
            (report.train_rows) " rows. Winner: " b.winner { (report.winner) } "."
            @if let Some(d) = &report.distribution { " Distribution: " (d.mode) " (" (d.reason) ")." }
            @if let Some(files) = files { " " a href=(files) { "All files of this version" } }
        }
        @if let Some(d) = &report.champion_challenger {
            p { "Champion/challenger: "
                span.state.(if d.promoted { "state-succeeded" } else { "state-pending" }) {
                    (if d.promoted { "promoted to champion" } else { "kept as challenger" })
                }
                " " (d.reason) }
        }
        table.comparison {
            thead { tr {
                th { "Estimator" } th { "CV " (report.metric) } th { "areaUnderROC" } th { "areaUnderPR" }
                th { "accuracy" } th { "f1" } th { "logLoss" } th { "Fit" } th { "Best params" }
            } }
            tbody {
                @for m in &report.models {
                    @let t = &m.test_metrics;
                    tr.winner[m.classname == report.winner] {
                        td { (m.classname) @if m.classname == report.winner { " ★" } }
                        td.num { (number(m.cv_metric, 4)) }
                        td.num { (number(t.area_under_roc, 4)) }
                        td.num { (number(t.area_under_pr, 4)) }
                        td.num { (number(t.accuracy, 4)) }
                        td.num { (number(t.f1, 4)) }
                        td.num { (number(t.log_loss, 4)) }
                        td.num { (number(m.fit_seconds, 1)) " s" }
                        td { code { (params_text(&m.params)) } }
                    }
                }
            }
        }
        div.charts {
            (charts::curves("ROC", "false positive rate", "true positive rate", &curves, true))
            @if pr.iter().any(|(_, p)| !p.is_empty()) {
                (charts::curves("Precision-recall", "recall", "precision", &pr, false))
            }
        }
        @for m in &report.models {
            h3 { (m.classname) }
            div.charts {
                (confusion(&m.test_metrics.confusion_matrix))
                @if !m.feature_importances.is_empty() {
                    @let top = top_features(&m.feature_importances);
                    div { h4 { "Feature importances (top " (top.len()) ")" } (charts::bars(&top)) }
                }
            }
            @if let Some(grid) = m.grid.as_ref().filter(|g| !g.is_empty()) {
                @let best = best_score(grid, &report.metric);
                h4 { "Cross-validation: " (grid.len()) " grid point(s), mean " (report.metric) " over the folds" }
                table.grid {
                    thead { tr { th { "Params" } th { (report.metric) } } }
                    tbody {
                        @for g in grid {
                            tr.best[g.metric.is_some() && g.metric == best] {
                                td { code { (params_text(&g.params)) } }
                                td.num { (number(g.metric, 5)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The largest importances, largest first (ties by name).
fn top_features(importances: &BTreeMap<String, f64>) -> Vec<(String, f64)> {
    let mut top: Vec<(String, f64)> = importances.iter().map(|(k, v)| (k.clone(), *v)).collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(TOP_FEATURES);
    top
}

/// The best cross-validated score of a grid: the largest, or the smallest
/// for a metric where smaller is better (`logLoss`).
fn best_score(grid: &[GridPoint], metric: &str) -> Option<f64> {
    let larger_is_better = serde_json::from_value::<Metric>(serde_json::json!(metric))
        .map_or(true, |m| m.larger_is_better());
    let scores = grid
        .iter()
        .filter_map(|g| g.metric)
        .filter(|v| v.is_finite());
    if larger_is_better {
        scores.max_by(f64::total_cmp)
    } else {
        scores.min_by(f64::total_cmp)
    }
}

/// A confusion matrix, actual classes down, predicted across.
fn confusion(matrix: &[Vec<u64>]) -> Markup {
    html! {
        div {
            h4 { "Confusion matrix" }
            table.confusion {
                thead { tr { th { "actual \\ predicted" } @for j in 0..matrix.len() { th { (j) } } } }
                tbody {
                    @for (i, row) in matrix.iter().enumerate() {
                        tr { th { (i) } @for (j, n) in row.iter().enumerate() {
                            td.num.diagonal[i == j] { (n) }
                        } }
                    }
                }
            }
        }
    }
}

/// A monitored batch's drift report, as the task's page shows it.
pub fn drift(report: &serde_json::Value, plot: Option<&str>) -> Markup {
    let features = report
        .get("features")
        .and_then(|f| f.as_object())
        .cloned()
        .unwrap_or_default();
    let drifted: Vec<&str> = report
        .get("drifted")
        .and_then(|d| d.as_array())
        .map(|d| d.iter().filter_map(|v| v.as_str()).collect())
        .unwrap_or_default();
    let stat = |entry: &serde_json::Value, key: &str, digits| {
        number(entry.get(key).and_then(|v| v.as_f64()), digits)
    };
    html! {
        h2 { "Drift" }
        p {
            (report.get("rows").and_then(|r| r.as_u64()).unwrap_or(0)) " rows compared with the model's reference profile; "
            @if drifted.is_empty() { "no feature drifted." }
            @else { b { (drifted.len()) " drifted: " (drifted.join(", ")) } }
            @if let Some(note) = report.get("note").and_then(|n| n.as_str()) { " " (note) }
        }
        @if let Some(plot) = plot { img.drift src=(plot) alt="PSI per feature"; }
        table.drift {
            thead { tr { th { "Feature" } th { "PSI" } th { "KS" } th { "JS" } th { "Missing (batch)" } th { "Drifted" } } }
            tbody {
                @for (name, entry) in &features {
                    @let is_drifted = entry.get("drifted").and_then(|d| d.as_bool()).unwrap_or(false);
                    tr.drifted[is_drifted] {
                        td { (name) }
                        td.num { (stat(entry, "psi", 4)) }
                        td.num { (stat(entry, "ks", 4)) }
                        td.num { (stat(entry, "js", 4)) }
                        td.num { (stat(entry, "missing_batch", 4)) }
                        td { @if is_drifted { "yes" } }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pr_points_follow_from_roc_points_and_class_totals() {
        // 40 negatives, 60 positives.
        let confusion = vec![vec![30, 10], vec![15, 45]];
        let roc = [(0.0, 0.0), (0.25, 0.75), (1.0, 1.0)];
        let pr = pr_curve(&roc, &confusion);
        // (0, 0) has no predicted positive; at (0.25, 0.75): tp 45, fp 10.
        assert_eq!(pr.len(), 2);
        assert_eq!(pr[0], (0.75, 45.0 / 55.0));
        assert_eq!(pr[1], (1.0, 0.6));
        assert!(pr_curve(&roc, &vec![vec![1, 0, 0]; 3]).is_empty());
    }

    #[test]
    fn the_best_grid_point_depends_on_the_metric() {
        let grid: Vec<GridPoint> = [0.3, 0.2, f64::NAN]
            .iter()
            .map(|&m| GridPoint {
                params: serde_json::Value::Null,
                metric: Some(m),
            })
            .collect();
        assert_eq!(best_score(&grid, "areaUnderROC"), Some(0.3));
        assert_eq!(best_score(&grid, "logLoss"), Some(0.2));
    }

    #[test]
    fn a_report_with_nan_metrics_still_reads() -> Result<(), serde_json::Error> {
        let report: TrainingReport = serde_json::from_str(
            r#"{"metric":"f1","winner":"RandomForestClassifier","train_rows":10,"test_rows":5,
                "models":[{"classname":"RandomForestClassifier","params":{"numTrees":3},"cv_metric":null,
                "test_metrics":{"rows":5,"accuracy":0.8,"weightedPrecision":0.8,"weightedRecall":0.8,"f1":0.8,
                "areaUnderROC":null,"areaUnderPR":null,"logLoss":0.5,"confusionMatrix":[[1,0,0],[0,2,1],[0,0,1]],"roc":[]},
                "newer_key":1}]}"#,
        )?;
        let page = training(&report, None).into_string();
        assert!(page.contains("RandomForestClassifier ★"), "{page}");
        assert!(!page.contains("Precision-recall"), "{page}");
        Ok(())
    }
}
