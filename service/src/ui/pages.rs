//! The pages, as maud templates (checked and compiled into the binary,
//! every value escaped).

use super::{PAGE_SIZE, RunsQuery, charts};
use kiln_pipelines::observer::RunState;
use kiln_pipelines::run_log::{RunRecord, TaskStatus};
use maud::{DOCTYPE, Markup, PreEscaped, html};

const STYLE: &str = r#"
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0; color: #222; }
header { background: #2d3142; color: #fff; padding: 8px 24px; display: flex; gap: 24px; align-items: baseline; }
header a { color: #fff; text-decoration: none; }
header .brand { font-weight: 700; font-size: 18px; }
main { padding: 16px 24px; max-width: 1280px; }
table { border-collapse: collapse; width: 100%; margin: 8px 0 16px; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #e5e5e5; vertical-align: top; }
th { background: #f5f5f5; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.state { padding: 1px 8px; border-radius: 9px; font-size: 12px; white-space: nowrap; }
.state-succeeded { background: #c7e9c0; } .state-failed { background: #fcbba1; }
.state-running { background: #c6dbef; } .state-pending { background: #eee; } .state-skipped { background: #ddd; }
pre { background: #f7f7f7; padding: 8px; overflow-x: auto; }
.error { color: #a50f15; white-space: pre-wrap; }
form.filters { display: flex; gap: 12px; align-items: end; }
.muted { color: #777; }
svg text { font: 12px system-ui, sans-serif; } svg .node-class, svg .tick { font-size: 10px; fill: #444; }
"#;

fn layout(title: &str, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · kiln" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    a.brand href="/" { "kiln" }
                    a href="/" { "Runs" }
                    a href="/models" { "Models" }
                    a href="/metrics" { "Metrics" }
                }
                main { (body) }
            }
        }
    }
    .into_string()
}

fn state_badge(state: &str) -> Markup {
    html! { span class=(format!("state state-{state}")) { (state) } }
}

/// Milliseconds since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

fn duration(seconds: Option<f64>) -> String {
    match seconds {
        None => "—".into(),
        Some(s) if s < 60.0 => format!("{s:.1} s"),
        Some(s) if s < 3600.0 => format!("{}:{:04.1}", (s / 60.0).floor(), s % 60.0),
        Some(s) => format!(
            "{:.0}:{:02.0}:{:02.0}",
            (s / 3600.0).floor(),
            (s % 3600.0 / 60.0).floor(),
            s % 60.0
        ),
    }
}

pub fn error_page(title: &str, message: &str) -> String {
    layout(
        title,
        html! {
            h1 { (title) }
            p.error { (message) }
            p { a href="/" { "All runs" } }
        },
    )
}

/// What the runs list shows.
pub struct RunsView<'a> {
    pub lake: &'a str,
    pub runs: &'a [&'a RunRecord],
    pub matching: usize,
    pub pipelines: &'a [&'a str],
    pub query: &'a RunsQuery,
    pub page: usize,
    pub pages: usize,
}

fn page_link(query: &RunsQuery, page: usize) -> String {
    let mut url = url::Url::parse("http://ui/").expect("a constant URL parses");
    url.query_pairs_mut()
        .append_pair("pipeline", &query.pipeline)
        .append_pair("state", &query.state)
        .append_pair("page", &page.to_string());
    format!("/?{}", url.query().unwrap_or_default())
}

pub fn runs_page(view: &RunsView<'_>) -> String {
    layout(
        "Runs",
        html! {
            h1 { "Runs" }
            p.muted { "Lake: " (view.lake) ". " (view.matching) " run(s) match, " (PAGE_SIZE) " per page." }
            form.filters method="get" action="/" {
                label { "Pipeline " br;
                    select name="pipeline" {
                        option value="" { "any" }
                        @for p in view.pipelines {
                            option value=(p) selected[*p == view.query.pipeline] { (p) }
                        }
                    }
                }
                label { "State " br;
                    select name="state" {
                        option value="" { "any" }
                        @for s in RunState::ALL {
                            option value=(s.as_str()) selected[s.as_str() == view.query.state] { (s.as_str()) }
                        }
                    }
                }
                button type="submit" { "Filter" }
            }
            table {
                thead { tr {
                    th { "Run" } th { "Pipeline" } th { "State" } th { "Started" }
                    th { "Duration" } th { "Tasks" } th { "Master" }
                } }
                tbody {
                    @for run in view.runs {
                        @let done = run.tasks.iter().filter(|t| matches!(t.status, TaskStatus::Succeeded | TaskStatus::Skipped)).count();
                        @let failed = run.tasks.iter().filter(|t| t.status == TaskStatus::Failed).count();
                        tr {
                            td { a href=(format!("/runs/{}", run.run_id)) { (run.run_id) } }
                            td { (run.pipeline) }
                            td { (state_badge(run.state.as_str())) }
                            td { (utc(run.start_ms)) }
                            td.num { (duration(run.seconds)) }
                            td { (done) "/" (run.tasks.len()) " done"
                                @if failed > 0 { ", " (failed) " failed" } }
                            td { (run.master) }
                        }
                    }
                }
            }
            @if view.runs.is_empty() { p { "No run matches." } }
            p {
                @if view.page > 1 { a href=(page_link(view.query, view.page - 1)) { "← newer" } " " }
                "page " (view.page) " of " (view.pages)
                @if view.page < view.pages { " " a href=(page_link(view.query, view.page + 1)) { "older →" } }
            }
        },
    )
}

pub fn run_page(run: &RunRecord) -> String {
    layout(
        &run.run_id,
        html! {
            h1 { "Run " (run.run_id) " " (state_badge(run.state.as_str())) }
            p {
                "Pipeline " b { (run.pipeline) } " on " code { (run.master) }
                ", started " (utc(run.start_ms))
                @if let Some(end) = run.end_ms { ", ended " (utc(end)) }
                " (" (duration(run.seconds)) ")"
                @if run.resumed { ". A resumed run: tasks whose checkpoints were reused are skipped." }
            }
            @if run.state == RunState::Running {
                p.muted #live { "No end is recorded: the run is still going, or its process died. "
                    "With JavaScript, this page reloads as the run's events arrive." }
                // The one script of the UI: live updates over Server-Sent Events.
                script { (PreEscaped(format!(
                    "new EventSource('/runs/{}/stream?after={}').onmessage = () => location.reload();",
                    run.run_id, run.event_lines
                ))) }
            }
            @if let Some(error) = &run.error { p.error { (error) } }
            @if run.unreadable_lines > 0 {
                p.error { (run.unreadable_lines) " line(s) of the event log could not be read." }
            }
            h2 { "Task graph" }
            (charts::task_graph(run))
            h2 { "Timeline" }
            (charts::timeline(run))
            h2 { "Tasks" }
            table {
                thead { tr {
                    th { "Task" } th { "Class" } th { "State" } th { "Attempts" }
                    th { "Duration" } th { "Rows in" } th { "Rows out" } th { "Depends on" }
                } }
                tbody {
                    @for task in &run.tasks {
                        tr id=(format!("task-{}", task.name)) {
                            td { (task.name) } td { (task.classname) }
                            td { (state_badge(task.status.as_str())) }
                            td.num { (task.attempts.len()) }
                            td.num { (duration(task.seconds)) }
                            td.num { (task.rows_in.map(|r| r.to_string()).unwrap_or_default()) }
                            td.num { (task.rows_out.map(|r| r.to_string()).unwrap_or_default()) }
                            td { (task.depends_on.join(", ")) }
                        }
                        @if !task.summary.is_empty() || task.error.is_some() || task.skipped.is_some() {
                            tr { td colspan="8" {
                                @for line in &task.summary { div { (line) } }
                                @if let Some(error) = &task.error { div.error { (error) } }
                                @if let Some((_, reason)) = &task.skipped { div.muted { "skipped: " (reason) } }
                            } }
                        }
                    }
                }
            }
            @if !run.config.is_empty() {
                h2 { "Configuration" }
                pre { (run.config) }
            }
            p { a href=(format!("/runs/{}/events.jsonl", run.run_id)) { "Event log (JSON Lines)" } }
        },
    )
}

/// The model repositories: each version's kind, estimator, test metrics
/// (Spark's names) and training-data fingerprint; the latest marked.
pub fn models_page(lake: &str, repositories: &[crate::models::ModelRepository]) -> String {
    let mut metric_names: Vec<&str> = repositories
        .iter()
        .flat_map(|r| r.versions.iter().flat_map(|v| v.metrics.keys()))
        .map(String::as_str)
        .collect();
    metric_names.sort_unstable();
    metric_names.dedup();
    layout(
        "Models",
        html! {
            h1 { "Models" }
            p.muted { "Lake: " (lake) ". " (repositories.len()) " repositor(ies)." }
            @if repositories.is_empty() { p { "No model repository in this lake yet." } }
            @for repo in repositories {
                h2 { code { (repo.uri) } }
                table {
                    thead { tr {
                        th { "Version" } th { "Kind" } th { "Estimator" }
                        @for m in &metric_names { th { (m) } }
                        th { "Training data" } th { "kiln" }
                    } }
                    tbody {
                        @for v in repo.versions.iter().rev() {
                            tr {
                                td { "v" (v.version)
                                    @for alias in &v.aliases {
                                        " " span.state.(if alias == "champion" { "state-succeeded" } else { "state-pending" }) {
                                            (if alias == "champion" { "champion (deployed)" } else { alias.as_str() })
                                        }
                                    } }
                                td { (v.kind) }
                                td { (v.classname.as_deref().unwrap_or("")) }
                                @for m in &metric_names {
                                    td.num { (v.metrics.get(*m).map(|x| format!("{x:.4}")).unwrap_or_default()) }
                                }
                                td { code { (v.training_fingerprint.as_deref().unwrap_or("")) } }
                                td { (v.kiln_version.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        },
    )
}
