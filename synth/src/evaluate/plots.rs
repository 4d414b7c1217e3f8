//! The report's pictures, as self-contained SVG (no script, no fonts to
//! fetch): real against synthetic histograms per column, the correlation
//! matrices of both tables and their difference, and `index.html` that
//! shows the scores beside them.

use super::quality::pearson;
use super::{FrameRef, Loaded, Report};
use crate::frame::{Dictionary, NULL_CODE, Values};
use std::collections::HashMap;
use std::fmt::Write;

const REAL: &str = "#1f4e79";
const SYNTHETIC: &str = "#e07b00";
const BINS: usize = 24;
const TOP_CATEGORIES: usize = 16;

/// `(file name, bytes)` of every plot and of `index.html`.
pub fn plots(report: &Report, loaded: &Loaded) -> Vec<(String, Vec<u8>)> {
    let real = loaded.view(&loaded.real);
    let synthetic = loaded.view(&loaded.synthetic);
    let mut files = Vec::new();
    let mut figures = Vec::new();
    for c in 0..loaded.names.len() {
        let svg = match (&real.columns[c], &synthetic.columns[c]) {
            (Values::Numbers(r), Values::Numbers(s)) => numeric_histogram(&loaded.names[c], r, s),
            (Values::Codes(r), Values::Codes(s)) => {
                category_bars(&loaded.names[c], r, s, &loaded.dictionaries[c])
            }
            _ => continue,
        };
        let name = format!("columns/{}.svg", file_safe(&loaded.names[c]));
        figures.push((loaded.names[c].clone(), name.clone()));
        files.push((name, svg.into_bytes()));
    }
    let numeric: Vec<usize> = (0..loaded.names.len())
        .filter(|&c| matches!(real.columns[c], Values::Numbers(_)))
        .collect();
    if numeric.len() >= 2 {
        let r = correlations(real, &numeric);
        let s = correlations(synthetic, &numeric);
        let names: Vec<&str> = numeric.iter().map(|&c| loaded.names[c].as_str()).collect();
        let diff: Vec<Option<f64>> = r
            .iter()
            .zip(&s)
            .map(|(a, b)| Some((a.unwrap_or(0.0) - b.unwrap_or(0.0)).abs()))
            .collect();
        files.push((
            "correlation_real.svg".into(),
            heat_map("Correlation (real)", &names, &r, false).into_bytes(),
        ));
        files.push((
            "correlation_synthetic.svg".into(),
            heat_map("Correlation (synthetic)", &names, &s, false).into_bytes(),
        ));
        files.push((
            "correlation_difference.svg".into(),
            heat_map("|real − synthetic| correlation", &names, &diff, true).into_bytes(),
        ));
    }
    files.push((
        "index.html".into(),
        index_html(report, &figures, numeric.len() >= 2).into_bytes(),
    ));
    files
}

fn file_safe(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn null_share(n: usize, total: usize) -> String {
    format!("{:.1}%", 100.0 * n as f64 / total.max(1) as f64)
}

/// Side-by-side bars of two distributions over the same labels.
fn bars(title: &str, labels: &[String], real: &[f64], synthetic: &[f64], subtitle: &str) -> String {
    let (w, h, left, bottom, top) = (640.0, 320.0, 48.0, 70.0, 44.0);
    let plot_w = w - left - 16.0;
    let plot_h = h - bottom - top;
    let max = real
        .iter()
        .chain(synthetic)
        .copied()
        .fold(0.0f64, f64::max)
        .max(1e-12);
    let slot = plot_w / labels.len().max(1) as f64;
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">
<text x="{left}" y="18" font-size="14">{}</text><text x="{left}" y="34" fill="#555">{}</text>
<rect x="{}" y="8" width="10" height="10" fill="{REAL}"/><text x="{}" y="17">real</text>
<rect x="{}" y="8" width="10" height="10" fill="{SYNTHETIC}"/><text x="{}" y="17">synthetic</text>
"##,
        escape(title),
        escape(subtitle),
        w - 150.0,
        w - 136.0,
        w - 90.0,
        w - 76.0
    );
    for (i, label) in labels.iter().enumerate() {
        let x = left + i as f64 * slot;
        for (k, (v, color)) in [(real[i], REAL), (synthetic[i], SYNTHETIC)]
            .into_iter()
            .enumerate()
        {
            let bh = plot_h * v / max;
            let _ = writeln!(
                svg,
                r#"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{bh:.1}" fill="{color}"><title>{}: {v:.4}</title></rect>"#,
                x + slot * (0.1 + 0.4 * k as f64),
                top + plot_h - bh,
                slot * 0.4,
                escape(label)
            );
        }
        if labels.len() <= 24 {
            let _ = writeln!(
                svg,
                r#"<text transform="translate({:.1},{:.1}) rotate(45)">{}</text>"#,
                x + slot * 0.3,
                top + plot_h + 12.0,
                escape(&label.chars().take(14).collect::<String>())
            );
        }
    }
    let _ = writeln!(
        svg,
        r##"<line x1="{left}" y1="{0}" x2="{1}" y2="{0}" stroke="#333"/>
<text x="4" y="{top}" fill="#555">{max:.3}</text>
</svg>"##,
        top + plot_h,
        left + plot_w
    );
    svg
}

fn numeric_histogram(name: &str, real: &[f64], synthetic: &[f64]) -> String {
    let present = |v: &[f64]| {
        v.iter()
            .copied()
            .filter(|x| x.is_finite())
            .collect::<Vec<_>>()
    };
    let (r, s) = (present(real), present(synthetic));
    let (lo, hi) = r
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| {
            (l.min(x), h.max(x))
        });
    let subtitle = format!(
        "missing: real {}, synthetic {}; range of the real values",
        null_share(real.len() - r.len(), real.len()),
        null_share(synthetic.len() - s.len(), synthetic.len())
    );
    if lo > hi {
        return bars(name, &[], &[], &[], &subtitle);
    }
    let width = if hi > lo {
        (hi - lo) / BINS as f64
    } else {
        1.0
    };
    let density = |v: &[f64]| {
        let mut counts = [0.0; BINS];
        for &x in v {
            if x >= lo && x <= hi {
                let b = (((x - lo) / width) as usize).min(BINS - 1);
                counts[b] += 1.0;
            }
        }
        let n = v.len().max(1) as f64;
        counts.iter().map(|c| c / n).collect::<Vec<_>>()
    };
    let labels: Vec<String> = (0..BINS)
        .map(|b| format!("{:.4}", lo + width * b as f64))
        .collect();
    bars(name, &labels, &density(&r), &density(&s), &subtitle)
}

fn category_bars(name: &str, real: &[u32], synthetic: &[u32], dict: &Dictionary) -> String {
    let count = |v: &[u32]| {
        let mut m: HashMap<u32, f64> = HashMap::new();
        for &c in v {
            *m.entry(c).or_insert(0.0) += 1.0;
        }
        m
    };
    let (r, s) = (count(real), count(synthetic));
    let mut order: Vec<u32> = r.keys().copied().collect();
    order.sort_by(|a, b| r[b].total_cmp(&r[a]).then(a.cmp(b)));
    let other = order.len() > TOP_CATEGORIES;
    order.truncate(TOP_CATEGORIES);
    let label = |c: u32| {
        if c == NULL_CODE {
            "(missing)".to_string()
        } else {
            dict.values.get(c as usize).cloned().unwrap_or_default()
        }
    };
    let share = |m: &HashMap<u32, f64>, n: usize, c: u32| {
        m.get(&c).copied().unwrap_or(0.0) / n.max(1) as f64
    };
    let mut labels: Vec<String> = order.iter().map(|&c| label(c)).collect();
    let mut rv: Vec<f64> = order.iter().map(|&c| share(&r, real.len(), c)).collect();
    let mut sv: Vec<f64> = order
        .iter()
        .map(|&c| share(&s, synthetic.len(), c))
        .collect();
    if other || s.keys().any(|c| !order.contains(c)) {
        labels.push("(other)".into());
        rv.push(1.0 - rv.iter().sum::<f64>());
        sv.push(1.0 - sv.iter().sum::<f64>());
    }
    let subtitle = format!("{} distinct real values; shares of rows", r.len());
    bars(name, &labels, &rv, &sv, &subtitle)
}

fn correlations(frame: FrameRef<'_>, columns: &[usize]) -> Vec<Option<f64>> {
    use rayon::prelude::*;
    let n = columns.len();
    (0..n * n)
        .into_par_iter()
        .map(|k| {
            let (i, j) = (k / n, k % n);
            if i == j {
                return Some(1.0);
            }
            match (&frame.columns[columns[i]], &frame.columns[columns[j]]) {
                (Values::Numbers(a), Values::Numbers(b)) => pearson(a, b),
                _ => None,
            }
        })
        .collect()
}

fn heat_map(title: &str, names: &[&str], values: &[Option<f64>], magnitude: bool) -> String {
    let n = names.len();
    let cell = (480.0 / n as f64).clamp(6.0, 28.0);
    let left = 130.0;
    let top = 40.0;
    let size = left + cell * n as f64 + 20.0;
    let mut svg = format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{size}" height="{}" font-family="sans-serif" font-size="10">
<text x="8" y="18" font-size="14">{}</text>
"##,
        size + 20.0,
        escape(title)
    );
    for (i, name) in names.iter().enumerate() {
        let _ = writeln!(
            svg,
            r#"<text x="{}" y="{:.1}" text-anchor="end">{}</text>"#,
            left - 4.0,
            top + cell * (i as f64 + 0.7),
            escape(&name.chars().take(20).collect::<String>())
        );
        for j in 0..n {
            let v = values[i * n + j];
            let color = match v {
                None => "#ddd".to_string(),
                Some(v) if magnitude => {
                    let t = v.clamp(0.0, 1.0);
                    rgb(1.0, 1.0 - t, 1.0 - t)
                }
                Some(v) if v >= 0.0 => rgb(1.0 - v, 1.0 - v, 1.0),
                Some(v) => rgb(1.0, 1.0 + v, 1.0 + v),
            };
            let _ = writeln!(
                svg,
                r#"<rect x="{:.1}" y="{:.1}" width="{cell:.1}" height="{cell:.1}" fill="{color}"><title>{} × {}: {}</title></rect>"#,
                left + cell * j as f64,
                top + cell * i as f64,
                escape(name),
                escape(names[j]),
                v.map(|v| format!("{v:.3}"))
                    .unwrap_or_else(|| "undefined".into())
            );
        }
    }
    svg.push_str("</svg>\n");
    svg
}

fn rgb(r: f64, g: f64, b: f64) -> String {
    let c = |x: f64| (x.clamp(0.0, 1.0) * 255.0).round() as u8;
    format!("#{:02x}{:02x}{:02x}", c(r), c(g), c(b))
}

fn index_html(report: &Report, figures: &[(String, String)], heat_maps: bool) -> String {
    let pct = |v: Option<f64>| {
        v.map(|v| format!("{:.1}%", v * 100.0))
            .unwrap_or_else(|| "n/a".into())
    };
    let q = &report.quality;
    let mut html = format!(
        r#"<!doctype html><html><head><meta charset="utf-8"><title>kiln evaluation</title>
<style>body{{font-family:sans-serif;margin:24px;max-width:1400px}}td,th{{padding:2px 10px;text-align:left}}img{{margin:4px;border:1px solid #ddd}}</style></head><body>
<h1>Synthetic data evaluation</h1>
<p>{} real rows, {} synthetic rows.</p>
<table><tr><th>quality (overall)</th><td>{}</td></tr><tr><th>column shapes</th><td>{}</td></tr><tr><th>column pair trends</th><td>{}</td></tr>
<tr><th>validity</th><td>{}</td></tr><tr><th>exact copies of real rows</th><td>{:.2}%</td></tr><tr><th>{}</th><td>{}</td></tr></table>
"#,
        report.rows.real,
        report.rows.synthetic,
        pct(q.overall),
        pct(q.column_shapes),
        pct(q.column_pair_trends),
        pct(report.validity.score),
        report.privacy.exact_copies * 100.0,
        report.privacy.dcr.metric,
        pct(report.privacy.dcr.score),
    );
    if heat_maps {
        html.push_str("<h2>Correlations</h2>\n");
        for f in [
            "correlation_real.svg",
            "correlation_synthetic.svg",
            "correlation_difference.svg",
        ] {
            let _ = writeln!(html, r#"<img src="{f}" alt="{f}">"#);
        }
    }
    html.push_str("<h2>Columns</h2>\n");
    for (column, file) in figures {
        let score = q.columns.get(column).copied().flatten();
        let _ = writeln!(
            html,
            r#"<figure style="display:inline-block"><img src="{}" alt="{}"><figcaption>{} — shape score {}</figcaption></figure>"#,
            escape(file),
            escape(column),
            escape(column),
            pct(score)
        );
    }
    html.push_str("</body></html>\n");
    html
}
