//! Evaluation reports: a ROC plot as SVG and a comparison table.

use crate::metrics::Metrics;
use std::fmt::Write;

/// A ROC curve as a standalone SVG document.
pub fn roc_svg(title: &str, metrics: &Metrics) -> String {
    let (w, h, m) = (420.0, 420.0, 50.0);
    let x = |v: f64| m + v * (w - 2.0 * m);
    let y = |v: f64| h - m - v * (h - 2.0 * m);
    let mut path = String::new();
    for (i, (fpr, tpr)) in metrics.roc.iter().enumerate() {
        let _ = write!(
            path,
            "{}{:.2},{:.2} ",
            if i == 0 { "M" } else { "L" },
            x(*fpr),
            y(*tpr)
        );
    }
    let escaped = title.replace('&', "&amp;").replace('<', "&lt;");
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{cx}" y="24" text-anchor="middle" font-size="14">{escaped} — ROC (AUC {auc:.4})</text>
<rect x="{m}" y="{m}" width="{pw}" height="{pw}" fill="none" stroke="#444"/>
<line x1="{x0}" y1="{y0}" x2="{x1}" y2="{y1}" stroke="#bbb" stroke-dasharray="4 4"/>
<path d="{path}" fill="none" stroke="#d1495b" stroke-width="2"/>
<text x="{cx}" y="{by}" text-anchor="middle">false positive rate</text>
<text x="16" y="{cy}" text-anchor="middle" transform="rotate(-90 16 {cy})">true positive rate</text>
<text x="{m}" y="{ty}" text-anchor="middle">0</text><text x="{x1}" y="{ty}" text-anchor="middle">1</text>
</svg>
"##,
        cx = w / 2.0,
        cy = h / 2.0,
        pw = w - 2.0 * m,
        x0 = x(0.0),
        y0 = y(0.0),
        x1 = x(1.0),
        y1 = y(1.0),
        by = h - 12.0,
        ty = h - m + 16.0,
        auc = metrics.area_under_roc,
    )
}

/// A fixed-width comparison table of competing models.
pub fn comparison_table(rows: &[(String, f64, &Metrics)], metric: &str) -> String {
    let mut out = format!(
        "{:<24} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9}\n",
        "model",
        format!("cv {metric}"),
        "AUC",
        "accuracy",
        "F1",
        "prec_w",
        "recall_w"
    );
    for (name, cv, m) in rows {
        let _ = writeln!(
            out,
            "{:<24} {:>12.4} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>9.4}",
            name, cv, m.area_under_roc, m.accuracy, m.f1, m.weighted_precision, m.weighted_recall
        );
    }
    out
}
