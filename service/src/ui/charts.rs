//! Charts drawn as SVG on the server: a run's task graph and Gantt
//! timeline of task attempts; curves (ROC, precision-recall) and bars
//! (feature importances) for a training task's page.

use kiln_pipelines::run_log::{AttemptOutcome, RunRecord, TaskStatus};
use maud::{Markup, html};
use std::collections::HashMap;

/// The fill of a task or an attempt in both charts (and the legend).
pub fn status_color(status: TaskStatus) -> &'static str {
    match status {
        TaskStatus::Pending => "#d9d9d9",
        TaskStatus::Running => "#6baed6",
        TaskStatus::Succeeded => "#74c476",
        TaskStatus::Failed => "#fb6a4a",
        TaskStatus::Skipped => "#bdbdbd",
    }
}

fn outcome_color(outcome: &AttemptOutcome) -> &'static str {
    match outcome {
        AttemptOutcome::Running => status_color(TaskStatus::Running),
        AttemptOutcome::Succeeded => status_color(TaskStatus::Succeeded),
        AttemptOutcome::Retried { .. } => "#fdae6b",
        AttemptOutcome::Failed { .. } => status_color(TaskStatus::Failed),
    }
}

const NODE_W: i64 = 170;
const NODE_H: i64 = 40;
const GAP_X: i64 = 60;
const GAP_Y: i64 = 16;

/// Each task's position in `run.tasks`, by name.
fn task_index(run: &RunRecord) -> HashMap<&str, usize> {
    run.tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.name.as_str(), i))
        .collect()
}

/// Each task's layer: 0 without dependencies, else one more than its
/// deepest dependency (unknown names are ignored; the config was checked).
fn layers(run: &RunRecord) -> Vec<usize> {
    let index = task_index(run);
    let mut layer = vec![0; run.tasks.len()];
    // Relax until stable: at most one pass per task on an acyclic graph.
    for _ in 0..run.tasks.len() {
        let mut changed = false;
        for (i, task) in run.tasks.iter().enumerate() {
            let deepest = task
                .depends_on
                .iter()
                .filter_map(|d| index.get(d.as_str()))
                .map(|&j| layer[j] + 1)
                .max()
                .unwrap_or(0);
            if deepest > layer[i] {
                layer[i] = deepest;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    layer
}

/// The task graph: layers left to right, edges from each dependency, each
/// node filled with its task's state and linked to its row in the table.
pub fn task_graph(run: &RunRecord) -> Markup {
    let layer = layers(run);
    let mut row_in_layer = vec![0i64; run.tasks.len()];
    let mut filled: HashMap<usize, i64> = HashMap::new();
    for (i, &l) in layer.iter().enumerate() {
        let next = filled.entry(l).or_insert(0);
        row_in_layer[i] = *next;
        *next += 1;
    }
    let position = |i: usize| {
        (
            10 + layer[i] as i64 * (NODE_W + GAP_X),
            10 + row_in_layer[i] * (NODE_H + GAP_Y),
        )
    };
    let columns = layer.iter().max().map_or(1, |m| m + 1) as i64;
    let rows = filled.values().copied().max().unwrap_or(1);
    let (width, height) = (
        20 + columns * NODE_W + (columns - 1) * GAP_X,
        20 + rows * NODE_H + (rows - 1) * GAP_Y,
    );
    let index = task_index(run);
    html! {
        svg xmlns="http://www.w3.org/2000/svg" class="dag" width=(width) height=(height)
            viewBox=(format!("0 0 {width} {height}")) role="img" aria-label="task graph" {
            defs {
                marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7"
                    markerHeight="7" orient="auto-start-reverse" {
                    path d="M 0 0 L 10 5 L 0 10 z" fill="#555" {}
                }
            }
            @for (i, task) in run.tasks.iter().enumerate() {
                @for dep in &task.depends_on {
                    @if let Some(&j) = index.get(dep.as_str()) {
                        @let ((x1, y1), (x2, y2)) = (position(j), position(i));
                        line x1=(x1 + NODE_W) y1=(y1 + NODE_H / 2) x2=(x2) y2=(y2 + NODE_H / 2)
                            stroke="#555" marker-end="url(#arrow)" {}
                    }
                }
            }
            @for (i, task) in run.tasks.iter().enumerate() {
                @let (x, y) = position(i);
                a href=(format!("#task-{}", task.name)) {
                    rect.node x=(x) y=(y) width=(NODE_W) height=(NODE_H) rx="5"
                        fill=(status_color(task.status)) stroke="#333" {
                        title { (task.name) ": " (task.status.as_str()) }
                    }
                    text x=(x + 8) y=(y + 17) class="node-name" { (truncate(&task.name, 22)) }
                    text x=(x + 8) y=(y + 32) class="node-class" {
                        (truncate(&task.classname, 20)) " · " (task.status.as_str())
                    }
                }
            }
        }
    }
}

fn truncate(text: &str, chars: usize) -> String {
    if text.chars().count() <= chars {
        text.to_string()
    } else {
        let cut: String = text.chars().take(chars - 1).collect();
        format!("{cut}…")
    }
}

const LABEL_W: f64 = 180.0;
const PLOT_W: f64 = 720.0;
const ROW_H: f64 = 26.0;

/// The Gantt timeline: a row per task, a bar per attempt (retried attempts
/// in orange, the back-off between them as a gap), skips from a resume as
/// a marker at the time they were decided. `end_ms` is where the time axis
/// ends: the run's last event, or now for a run still going (its running
/// attempts' bars reach there).
pub fn timeline(run: &RunRecord, end_ms: i64) -> Markup {
    let start = run.start_ms;
    let end_ms = end_ms.max(run.last_ms());
    let span = (end_ms - start).max(1) as f64;
    let x = |ms: i64| LABEL_W + (ms - start) as f64 / span * PLOT_W;
    let height = 30.0 + run.tasks.len() as f64 * ROW_H;
    let width = LABEL_W + PLOT_W + 20.0;
    let ticks: Vec<f64> = (0..=4).map(|k| k as f64 / 4.0).collect();
    html! {
        svg xmlns="http://www.w3.org/2000/svg" class="timeline" width=(width) height=(height)
            viewBox=(format!("0 0 {width} {height}")) role="img" aria-label="task timeline" {
            @for t in &ticks {
                @let tx = LABEL_W + t * PLOT_W;
                line x1=(tx) y1="0" x2=(tx) y2=(height - 18.0) stroke="#e0e0e0" {}
                text x=(tx) y=(height - 4.0) text-anchor="middle" class="tick" {
                    (format!("{:.1} s", t * span / 1000.0))
                }
            }
            @for (row, task) in run.tasks.iter().enumerate() {
                @let y = 4.0 + row as f64 * ROW_H;
                text x="4" y=(y + 15.0) class="lane" { (truncate(&task.name, 24)) }
                @for (n, attempt) in task.attempts.iter().enumerate() {
                    @let end = attempt.end_ms.unwrap_or(end_ms);
                    @let (x0, x1) = (x(attempt.start_ms), x(end));
                    rect.attempt x=(x0) y=(y) width=((x1 - x0).max(2.0)) height=(ROW_H - 8.0)
                        fill=(outcome_color(&attempt.outcome)) stroke="#333" stroke-width="0.5" {
                        title {
                            (task.name) " attempt " (n + 1) ": "
                            (format!("{:.2} s", (end - attempt.start_ms) as f64 / 1000.0))
                            @match &attempt.outcome {
                                AttemptOutcome::Running => " (running)",
                                AttemptOutcome::Succeeded => " (succeeded)",
                                AttemptOutcome::Retried { error } => { " (retried: " (error) ")" },
                                AttemptOutcome::Failed { error } => { " (failed: " (error) ")" },
                            }
                        }
                    }
                }
                @if let Some((at, reason)) = &task.skipped {
                    @let sx = x(*at);
                    path d=(format!("M {sx} {y} l 6 9 l -6 9 l -6 -9 z"))
                        fill=(status_color(TaskStatus::Skipped)) stroke="#333" {
                        title { (task.name) " skipped: " (reason) }
                    }
                    text x=(sx + 10.0) y=(y + 14.0) class="tick" { "skipped" }
                }
            }
        }
    }
}

/// Colors of the series of a chart, in order (then again).
const SERIES: [&str; 6] = [
    "#d1495b", "#00798c", "#edae49", "#66a182", "#2e4057", "#8d96a3",
];

const CURVE_SIDE: f64 = 300.0;
const CURVE_MARGIN: f64 = 44.0;

/// Curves on the unit square (ROC, precision-recall): a line per series,
/// a legend, the chance diagonal when asked.
pub fn curves(
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    diagonal: bool,
) -> Markup {
    let (m, side) = (CURVE_MARGIN, CURVE_SIDE);
    let x = |v: f64| m + v.clamp(0.0, 1.0) * side;
    let y = |v: f64| m + (1.0 - v.clamp(0.0, 1.0)) * side;
    let width = side + 2.0 * m + 170.0;
    let height = side + 2.0 * m;
    let path = |points: &[(f64, f64)]| {
        points
            .iter()
            .enumerate()
            .map(|(i, &(px, py))| {
                format!(
                    "{}{:.1},{:.1}",
                    if i == 0 { "M" } else { " L" },
                    x(px),
                    y(py)
                )
            })
            .collect::<String>()
    };
    html! {
        svg xmlns="http://www.w3.org/2000/svg" class="curves" width=(width) height=(height)
            viewBox=(format!("0 0 {width} {height}")) role="img" aria-label=(title) {
            text x=(m + side / 2.0) y="20" text-anchor="middle" { (title) }
            rect x=(m) y=(m) width=(side) height=(side) fill="none" stroke="#444" {}
            @for t in [0.0, 0.5, 1.0] {
                text x=(x(t)) y=(m + side + 14.0) text-anchor="middle" class="tick" { (t) }
                text x=(m - 6.0) y=(y(t) + 4.0) text-anchor="end" class="tick" { (t) }
            }
            @if diagonal {
                line x1=(x(0.0)) y1=(y(0.0)) x2=(x(1.0)) y2=(y(1.0)) stroke="#bbb" stroke-dasharray="4 4" {}
            }
            @for (i, (name, points)) in series.iter().enumerate() {
                @let color = SERIES[i % SERIES.len()];
                path.curve d=(path(points)) fill="none" stroke=(color) stroke-width="2" {
                    title { (name) }
                }
                rect x=(m + side + 16.0) y=(m + 4.0 + i as f64 * 18.0) width="12" height="12" fill=(color) {}
                text x=(m + side + 34.0) y=(m + 14.0 + i as f64 * 18.0) { (truncate(name, 20)) }
            }
            text x=(m + side / 2.0) y=(height - 6.0) text-anchor="middle" { (x_label) }
            text x="12" y=(m + side / 2.0) text-anchor="middle"
                transform=(format!("rotate(-90 12 {})", m + side / 2.0)) { (y_label) }
        }
    }
}

/// Horizontal bars of `values` (in the order given), scaled to the largest.
pub fn bars(values: &[(String, f64)]) -> Markup {
    const LABEL: f64 = 170.0;
    const BAR: f64 = 240.0;
    const ROW: f64 = 18.0;
    let largest = values.iter().map(|(_, v)| *v).fold(0.0_f64, f64::max);
    let height = values.len() as f64 * ROW + 4.0;
    let width = LABEL + BAR + 60.0;
    html! {
        svg xmlns="http://www.w3.org/2000/svg" class="bars" width=(width) height=(height)
            viewBox=(format!("0 0 {width} {height}")) role="img" aria-label="bar chart" {
            @for (i, (name, value)) in values.iter().enumerate() {
                @let y = 2.0 + i as f64 * ROW;
                @let w = if largest > 0.0 { value.max(0.0) / largest * BAR } else { 0.0 };
                text x=(LABEL - 6.0) y=(y + 12.0) text-anchor="end" class="tick" { (truncate(name, 26)) }
                rect.bar x=(LABEL) y=(y + 2.0) width=(w) height=(ROW - 5.0) fill=(SERIES[1]) {
                    title { (name) ": " (format!("{value:.4}")) }
                }
                text x=(LABEL + w + 4.0) y=(y + 12.0) class="tick" { (format!("{value:.3}")) }
            }
        }
    }
}

/// A metric across a repository's versions: one point per version, the
/// y axis fitted to the values.
pub fn trend(metric: &str, points: &[(u64, f64)]) -> Markup {
    const W: f64 = 420.0;
    const H: f64 = 180.0;
    const M: f64 = 40.0;
    let finite: Vec<(u64, f64)> = points
        .iter()
        .copied()
        .filter(|(_, v)| v.is_finite())
        .collect();
    let (lo, hi) = finite
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (_, v)| {
            (lo.min(*v), hi.max(*v))
        });
    let pad = ((hi - lo) * 0.1).max(1e-3);
    let (lo, hi) = (lo - pad, hi + pad);
    let n = finite.len().max(2) as f64 - 1.0;
    let x = |i: usize| M + i as f64 / n * (W - 2.0 * M);
    let y = |v: f64| H - M + (lo - v) / (hi - lo) * (H - 2.0 * M);
    let path: String = finite
        .iter()
        .enumerate()
        .map(|(i, (_, v))| {
            format!(
                "{}{:.1},{:.1}",
                if i == 0 { "M" } else { " L" },
                x(i),
                y(*v)
            )
        })
        .collect();
    html! {
        svg xmlns="http://www.w3.org/2000/svg" class="trend" width=(W) height=(H)
            viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(format!("{metric} by version")) {
            text x=(W / 2.0) y="16" text-anchor="middle" { (metric) " by version" }
            rect x=(M) y=(M) width=(W - 2.0 * M) height=(H - 2.0 * M) fill="none" stroke="#ccc" {}
            text x=(M - 4.0) y=(M + 4.0) text-anchor="end" class="tick" { (format!("{hi:.3}")) }
            text x=(M - 4.0) y=(H - M + 4.0) text-anchor="end" class="tick" { (format!("{lo:.3}")) }
            path d=(path) fill="none" stroke=(SERIES[0]) stroke-width="2" {}
            @for (i, (version, v)) in finite.iter().enumerate() {
                circle.point cx=(x(i)) cy=(y(*v)) r="3.5" fill=(SERIES[0]) {
                    title { "v" (version) ": " (format!("{v:.4}")) }
                }
                text x=(x(i)) y=(H - M + 14.0) text-anchor="middle" class="tick" { "v" (version) }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(log: &str) -> RunRecord {
        RunRecord::from_log(log).expect("run")
    }

    #[test]
    fn layers_follow_dependencies() {
        let r = run(
            r#"{"ts_ms":0,"event":"run_started","run_id":"r","pipeline":"p","master":"m","tasks":["c","a","b","d"],"depends_on":[["b"],[],["a"],["a"]],"resumed":false}"#,
        );
        assert_eq!(layers(&r), [2, 0, 1, 1]);
        let svg = task_graph(&r).into_string();
        // One edge per dependency, one node per task.
        assert_eq!(svg.matches("<line").count(), 3, "{svg}");
        assert_eq!(svg.matches("<rect").count(), 4, "{svg}");
    }

    #[test]
    fn attempts_are_bars_and_skips_are_markers() {
        let r = run(concat!(
            r#"{"ts_ms":0,"event":"run_started","run_id":"r","pipeline":"p","master":"m","tasks":["a","b"],"resumed":true}"#,
            "\n",
            r#"{"ts_ms":0,"event":"task_skipped","task":"a","reason":"checkpoint <reused>"}"#,
            "\n",
            r#"{"ts_ms":0,"event":"task_started","task":"b"}"#,
            "\n",
            r#"{"ts_ms":400,"event":"task_retrying","task":"b","attempt":1,"error":"timed out","delay_seconds":0.1}"#,
            "\n",
            r#"{"ts_ms":1000,"event":"task_succeeded","task":"b","attempts":2,"seconds":1.0,"rows_in":null,"rows_out":null,"summary":[]}"#,
        ));
        let svg = timeline(&r, r.last_ms()).into_string();
        assert_eq!(svg.matches("<rect").count(), 2, "{svg}");
        assert!(svg.contains("retried: timed out"), "{svg}");
        assert!(svg.contains("skipped: checkpoint &lt;reused&gt;"), "{svg}");
        // The second attempt starts after the back-off: at 500 of 1000 ms.
        assert!(
            svg.contains(&format!("x=\"{}\"", LABEL_W + 0.5 * PLOT_W)),
            "{svg}"
        );
    }
}
