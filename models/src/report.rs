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

/// One statistic of a drift entry.
type Statistic = fn(&crate::drift::DriftEntry) -> Option<f64>;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Drift of every feature as horizontal bars (PSI and KS side by side,
/// drifted features in red), with the thresholds as dashed lines.
pub fn drift_svg(
    result: &crate::drift::DriftResult,
    thresholds: &crate::drift::Thresholds,
) -> String {
    let entries: Vec<&crate::drift::DriftEntry> =
        result.features.iter().chain(&result.prediction).collect();
    let (label_w, bar_w, row_h, top) = (190.0, 260.0, 18.0, 48.0);
    let w = label_w + 2.0 * (bar_w + 30.0) + 20.0;
    let h = top + row_h * entries.len() as f64 + 30.0;
    // Each panel scales to its largest value or threshold (at least 0.25).
    let scale = |get: &dyn Fn(&crate::drift::DriftEntry) -> Option<f64>, t: Option<f64>| {
        entries
            .iter()
            .filter_map(|&e| get(e))
            .chain(t)
            .fold(0.25_f64, f64::max)
    };
    let panels: [(&str, f64, Option<f64>, Statistic); 2] = [
        ("PSI", label_w, thresholds.psi, |e| e.psi),
        ("KS", label_w + bar_w + 30.0, thresholds.ks, |e| e.ks),
    ];
    let mut body = String::new();
    for (name, x0, t, get) in panels {
        let max = scale(&get, t);
        let _ = write!(
            body,
            r##"<text x="{}" y="{}" text-anchor="middle" font-weight="bold">{name} (0 – {max:.2})</text>"##,
            x0 + bar_w / 2.0,
            top - 10.0
        );
        for (i, &e) in entries.iter().enumerate() {
            let y = top + row_h * i as f64;
            let v = get(e).unwrap_or(0.0);
            let color = if e.drifted { "#d1495b" } else { "#4f7cac" };
            let _ = write!(
                body,
                r##"<rect x="{x0}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{}: {name} {v:.4}</title></rect>"##,
                y + 2.0,
                (v / max * bar_w).max(0.5),
                row_h - 4.0,
                escape(&e.feature)
            );
        }
        if let Some(t) = t {
            let tx = x0 + t / max * bar_w;
            let _ = write!(
                body,
                r##"<line x1="{tx:.1}" y1="{}" x2="{tx:.1}" y2="{}" stroke="#222" stroke-dasharray="4 3"/>"##,
                top - 4.0,
                top + row_h * entries.len() as f64
            );
        }
    }
    for (i, e) in entries.iter().enumerate() {
        let _ = write!(
            body,
            r##"<text x="{}" y="{:.1}" text-anchor="end"{}>{}</text>"##,
            label_w - 8.0,
            top + row_h * i as f64 + row_h - 5.0,
            if e.drifted {
                r##" fill="#d1495b" font-weight="bold""##
            } else {
                ""
            },
            escape(&e.feature)
        );
    }
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="12" y="20" font-size="14">Drift of {rows} rows against the training reference: {n} drifted</text>
{body}
</svg>
"##,
        rows = result.rows,
        n = result.drifted.len(),
    )
}

/// Reference and batch shares of one feature's PSI bins, side by side.
pub fn shares_svg(entry: &crate::drift::DriftEntry) -> String {
    let bins = &entry.bins;
    let n = bins.reference.len().max(1);
    let (w, h, m) = (520.0, 300.0, 44.0);
    let slot = (w - 2.0 * m) / n as f64;
    let max = bins
        .reference
        .iter()
        .chain(&bins.batch)
        .fold(0.05_f64, |a, b| a.max(*b));
    let y = |v: f64| h - m - v / max * (h - 2.0 * m);
    let mut body = String::new();
    for i in 0..bins.reference.len() {
        let x = m + slot * i as f64;
        for (k, (share, color)) in [
            (bins.reference[i], "#9aa5b1"),
            (bins.batch.get(i).copied().unwrap_or(0.0), "#d1495b"),
        ]
        .into_iter()
        .enumerate()
        {
            let _ = write!(
                body,
                r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{color}"><title>{share:.4}</title></rect>"##,
                x + 2.0 + k as f64 * (slot - 4.0) / 2.0,
                y(share),
                (slot - 4.0) / 2.0,
                h - m - y(share)
            );
        }
        let edge = match (bins.upper_edges.get(i), bins.upper_edges.last()) {
            (Some(e), _) => format!("≤{}", short(*e)),
            (None, Some(last)) => format!(">{}", short(*last)),
            (None, None) => "all".into(),
        };
        let _ = write!(
            body,
            r##"<text x="{:.1}" y="{}" text-anchor="middle" font-size="10">{edge}</text>"##,
            x + slot / 2.0,
            h - m + 14.0
        );
    }
    let stat = |v: Option<f64>| v.map_or("–".into(), |v| format!("{v:.3}"));
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="12" y="20" font-size="14">{name}: PSI {psi}, KS {ks}, JS {js}</text>
<rect x="{lx}" y="30" width="10" height="10" fill="#9aa5b1"/><text x="{lt}" y="39">training reference</text>
<rect x="{bx}" y="30" width="10" height="10" fill="#d1495b"/><text x="{bt}" y="39">this batch</text>
<line x1="{m}" y1="{base}" x2="{r}" y2="{base}" stroke="#444"/>
{body}
</svg>
"##,
        name = escape(&entry.feature),
        psi = stat(entry.psi),
        ks = stat(entry.ks),
        js = stat(entry.js),
        lx = m,
        lt = m + 14.0,
        bx = m + 150.0,
        bt = m + 164.0,
        base = h - m,
        r = w - m,
    )
}

fn short(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}
