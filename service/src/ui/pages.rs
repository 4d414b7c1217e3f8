//! The pages, as maud templates (checked and compiled into the binary,
//! every value escaped).

use super::{PAGE_SIZE, RunsQuery, charts};
use kiln_pipelines::observer::RunState;
use kiln_pipelines::progress::{ProgressFile, TaskSnapshot};
use kiln_pipelines::run_log::{AttemptOutcome, RunRecord, TaskRecord, TaskStatus};
use kiln_pipelines::schedule::{FiringOutcome, ScheduleRecord};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use std::collections::HashMap;
use std::sync::Arc;

/// Each task's outputs (URI, and its `/lake/` link when in the lake).
pub type OutputLinks = HashMap<String, Vec<(String, Option<String>)>>;

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
tr.winner td, tr.best td { background: #f0f7ec; font-weight: 600; }
tr.drifted td { background: #fdecea; }
td.diagonal { background: #eef5fb; }
.charts { display: flex; flex-wrap: wrap; gap: 24px; align-items: flex-start; }
img.drift { max-width: 100%; border: 1px solid #eee; }
.progress { color: #08519c; }
form.job .field, form.upload .field { margin: 10px 0; }
form.job .field label { display: block; }
form.job textarea { font: 13px ui-monospace, monospace; width: 100%; max-width: 900px; }
div.scroll { overflow-x: auto; }
table.compact { width: auto; min-width: 320px; }
td code { white-space: normal; overflow-wrap: anywhere; }
svg text { font: 12px system-ui, sans-serif; } svg .node-class, svg .tick { font-size: 10px; fill: #444; }
"#;

pub(crate) fn layout(title: &str, body: Markup) -> String {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · kiln" }
                // No icon to fetch: nothing leaves for a missing favicon.
                link rel="icon" href="data:,";
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    a.brand href="/" { "kiln" }
                    a href="/" { "Runs" }
                    a href="/models" { "Models" }
                    a href="/schedules" { "Schedules" }
                    a href="/jobs" { "Jobs" }
                    a href="/datasets" { "Datasets" }
                    a href="/lake/" { "Lake" }
                    a href="/metrics" { "Metrics" }
                }
                main { (body) }
            }
        }
    }
    .into_string()
}

pub(crate) fn state_badge(state: &str) -> Markup {
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
        .append_pair("since", &query.since)
        .append_pair("until", &query.until)
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
                label { "Started from " br;
                    input type="date" name="since" value=(view.query.since);
                }
                label { "to " br;
                    input type="date" name="until" value=(view.query.until);
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

/// A task's progress as one line: `stage · N rows`.
pub fn progress_text(p: &TaskSnapshot) -> String {
    if p.rows > 0 {
        format!("{} · {} rows", p.stage, p.rows)
    } else {
        p.stage.clone()
    }
}

/// The live script of a running run's or task's page: progress events
/// update the progress cells in place; any new event line reloads the page.
fn live_script(run: &RunRecord) -> Markup {
    html! {
        script { (PreEscaped(format!(
            "const s = new EventSource('/runs/{}/stream?after={}');\n\
             s.onmessage = () => location.reload();\n\
             s.addEventListener('progress', e => {{\n\
               for (const [task, p] of Object.entries(JSON.parse(e.data).tasks)) {{\n\
                 const cell = document.getElementById('progress-' + task);\n\
                 if (cell) cell.textContent = p.stage + (p.rows > 0 ? ' · ' + p.rows + ' rows' : '');\n\
               }}\n\
             }});",
            run.run_id, run.event_lines
        ))) }
    }
}

fn task_href(run: &RunRecord, task: &TaskRecord) -> String {
    format!("/runs/{}/tasks/{}", run.run_id, task.name)
}

fn output_list(outputs: &[(String, Option<String>)]) -> Markup {
    html! {
        @for (uri, link) in outputs {
            div { "→ " @match link {
                Some(href) => a href=(href) { (uri) },
                None => code { (uri) },
            } }
        }
    }
}

pub fn run_page(run: &RunRecord, progress: Option<&ProgressFile>, outputs: &OutputLinks) -> String {
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
                    "With JavaScript, this page follows the run: progress in place, and a reload as its events arrive." }
                // The one script of the UI: live updates over Server-Sent Events.
                (live_script(run))
            }
            @if let Some(error) = &run.error { p.error { (error) } }
            @if run.unreadable_lines > 0 {
                p.error { (run.unreadable_lines) " line(s) of the event log could not be read." }
            }
            h2 { "Task graph" }
            (charts::task_graph(run))
            h2 { "Timeline" }
            (charts::timeline(run, match run.state {
                RunState::Running => chrono::Utc::now().timestamp_millis(),
                _ => run.last_ms(),
            }))
            h2 { "Tasks" }
            table {
                thead { tr {
                    th { "Task" } th { "Class" } th { "State" } th { "Attempts" }
                    th { "Duration" } th { "Rows in" } th { "Rows out" } th { "Depends on" }
                    th { "Progress" }
                } }
                tbody {
                    @for task in &run.tasks {
                        tr id=(format!("task-{}", task.name)) {
                            td { a href=(task_href(run, task)) { (task.name) } } td { (task.classname) }
                            td { (state_badge(task.status.as_str())) }
                            td.num { (task.attempts.len()) }
                            td.num { (duration(task.seconds)) }
                            td.num { (task.rows_in.map(|r| r.to_string()).unwrap_or_default()) }
                            td.num { (task.rows_out.map(|r| r.to_string()).unwrap_or_default()) }
                            td { (task.depends_on.join(", ")) }
                            td.progress id=(format!("progress-{}", task.name)) {
                                @if task.status == TaskStatus::Running {
                                    (progress.and_then(|p| p.tasks.get(&task.name)).map(progress_text).unwrap_or_default())
                                }
                            }
                        }
                        @let task_outputs = outputs.get(&task.name).map(Vec::as_slice).unwrap_or_default();
                        @if !task.summary.is_empty() || task.error.is_some() || task.skipped.is_some() || !task_outputs.is_empty() {
                            tr { td colspan="9" {
                                @for line in &task.summary { div { (line) } }
                                (output_list(task_outputs))
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

/// The metric drawn across a repository's versions.
const TREND_METRIC: &str = "areaUnderROC";

/// Where a version came from: the training task's page, and the drift
/// that started it.
fn lineage(l: &kiln_models::model::Lineage) -> Markup {
    html! {
        @if let (Some(run), Some(task)) = (&l.run_id, &l.task) {
            a href=(format!("/runs/{run}/tasks/{task}")) { (run) " / " (task) }
        }
        @if let Some(by) = &l.triggered_by {
            @let (run, task) = by.split_once('/').unwrap_or((by.as_str(), ""));
            br; "retrained after drift in " a href=(format!("/runs/{run}/tasks/{task}")) { (by) }
        }
        @if let Some(created) = &l.created { br; span.muted { (created) } }
    }
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
                @let trend: Vec<(u64, f64)> = repo.versions.iter()
                    .filter_map(|v| Some((v.version, *v.metrics.get(TREND_METRIC)?)))
                    .collect();
                @if trend.len() > 1 { (charts::trend(TREND_METRIC, &trend)) }
                table {
                    thead { tr {
                        th { "Version" } th { "Kind" } th { "Estimator" }
                        @for m in &metric_names { th { (m) } }
                        th { "Training data" } th { "Lineage" } th { "kiln" }
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
                                td { @if let Some(l) = &v.lineage { (lineage(l)) } }
                                td { (v.kiln_version.as_deref().unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        },
    )
}

/// What a task's page shows.
pub struct TaskView<'a> {
    pub run: &'a RunRecord,
    pub task: &'a TaskRecord,
    /// The task's lines of the event log, in order.
    pub events: &'a [serde_json::Value],
    pub progress: Option<&'a TaskSnapshot>,
    pub outputs: &'a [(String, Option<String>)],
    /// Its reports, drawn.
    pub sections: &'a [Markup],
}

pub fn task_page(view: &TaskView<'_>) -> String {
    let (run, task) = (view.run, view.task);
    let metrics: Vec<(String, String)> = match &task.metrics {
        serde_json::Value::Object(map) => map
            .iter()
            .map(|(k, v)| {
                let shown = match v.as_f64() {
                    Some(x) if v.is_f64() => format!("{x:.6}"),
                    _ => v.to_string(),
                };
                (k.clone(), shown)
            })
            .collect(),
        _ => Vec::new(),
    };
    layout(
        &format!("{} · {}", task.name, run.run_id),
        html! {
            h1 { "Task " (task.name) " " (state_badge(task.status.as_str())) }
            p {
                (task.classname) " in run " a href=(format!("/runs/{}#task-{}", run.run_id, task.name)) { (run.run_id) }
                " of " b { (run.pipeline) } "."
                @if !task.depends_on.is_empty() { " Depends on " (task.depends_on.join(", ")) "." }
                " Duration " (duration(task.seconds)) "."
                @if let Some(rows) = task.rows_in { " Rows in: " (rows) "." }
                @if let Some(rows) = task.rows_out { " Rows out: " (rows) "." }
            }
            @if task.status == TaskStatus::Running {
                p.progress id=(format!("progress-{}", task.name)) {
                    (view.progress.map(progress_text).unwrap_or_else(|| "running".into()))
                }
                @if run.state == RunState::Running { (live_script(run)) }
            }
            @if let Some(error) = &task.error { p.error { (error) } }
            @if let Some((_, reason)) = &task.skipped { p.muted { "Skipped: " (reason) } }
            @for section in view.sections { (section) }
            @if !metrics.is_empty() {
                h2 { "Metrics" }
                table.compact { tbody { @for (k, v) in &metrics { tr { th { (k) } td.num { (v) } } } } }
            }
            @if !view.outputs.is_empty() {
                h2 { "Outputs" }
                (output_list(view.outputs))
            }
            @if !task.summary.is_empty() {
                h2 { "Summary" }
                pre { @for line in &task.summary { (line) "\n" } }
            }
            h2 { "Attempts" }
            table {
                thead { tr { th { "#" } th { "Started" } th { "Ended" } th { "Outcome" } } }
                tbody {
                    @for (i, a) in task.attempts.iter().enumerate() {
                        tr {
                            td.num { (i + 1) }
                            td { (utc(a.start_ms)) }
                            td { (a.end_ms.map(utc).unwrap_or_default()) }
                            td { @match &a.outcome {
                                AttemptOutcome::Running => "running",
                                AttemptOutcome::Succeeded => "succeeded",
                                AttemptOutcome::Retried { error } => { span.error { "retried: " (error) } },
                                AttemptOutcome::Failed { error } => { span.error { "failed: " (error) } },
                            } }
                        }
                    }
                }
            }
            h2 { "Events" }
            table {
                thead { tr { th { "Time" } th { "Event" } th { "Details" } } }
                tbody {
                    @for e in view.events {
                        tr {
                            td { (e.get("ts_ms").and_then(|t| t.as_i64()).map(utc).unwrap_or_default()) }
                            td { (e.get("event").and_then(|t| t.as_str()).unwrap_or_default()) }
                            td { code { (event_details(e)) } }
                        }
                    }
                }
            }
        },
    )
}

/// An event line without the keys the other columns show.
fn event_details(event: &serde_json::Value) -> String {
    match event {
        serde_json::Value::Object(map) => {
            let rest: serde_json::Map<String, serde_json::Value> = map
                .iter()
                .filter(|(k, _)| !matches!(k.as_str(), "ts_ms" | "event" | "task" | "summary"))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            serde_json::Value::Object(rest).to_string()
        }
        other => other.to_string(),
    }
}

/// One entry of a lake directory.
pub struct LakeEntry {
    /// Ends with `/` for a directory.
    pub name: String,
    pub size: Option<u64>,
    pub modified_ms: Option<i64>,
}

/// A directory of the lake: `entries` with their `links`.
pub fn lake_page(url: &str, relative: &str, entries: &[LakeEntry], links: &[String]) -> String {
    let parent = relative
        .trim_end_matches('/')
        .rsplit_once('/')
        .map_or(String::from("/lake/"), |(p, _)| format!("/lake/{p}/"));
    layout(
        url,
        html! {
            h1 { "Lake" }
            p.muted { code { (url) } }
            @if !relative.is_empty() { p { a href=(parent) { "↑ up" } } }
            table {
                thead { tr { th { "Name" } th { "Size" } th { "Modified" } } }
                tbody {
                    @for (entry, link) in entries.iter().zip(links) {
                        tr {
                            td { a href=(link) { (entry.name) } }
                            td.num { (entry.size.map(|s| bytesize::ByteSize(s).to_string()).unwrap_or_default()) }
                            td { (entry.modified_ms.map(utc).unwrap_or_default()) }
                        }
                    }
                }
            }
        },
    )
}

/// A scheduler that has not refreshed its record for this long is shown
/// as not heard from (it refreshes every 30 s while it runs).
const SCHEDULER_SILENT_MS: i64 = 120_000;

/// Recent firings shown per schedule.
const FIRINGS_SHOWN: usize = 10;

/// The schedules recorded in the lake: cron, next fire times, the
/// scheduler's state, recent firings (started and skipped) and recent runs.
pub fn schedules_page(
    lake: &str,
    records: &[ScheduleRecord],
    runs: &[Arc<RunRecord>],
    now_ms: i64,
) -> String {
    layout(
        "Schedules",
        html! {
            h1 { "Schedules" }
            p.muted { "Lake: " (lake) ". " (records.len()) " schedule(s), as recorded by " code { "kiln schedule" } "." }
            @if records.is_empty() {
                p { "No schedule recorded in this lake: start one with " code { "kiln schedule CONFIG…" } "." }
            }
            @for record in records {
                @let silent = now_ms - record.updated_ms > SCHEDULER_SILENT_MS;
                h2 { (record.pipeline) " "
                    @if record.stopped { span.state.state-pending { "stopped" } }
                    @else if silent { span.state.state-failed { "not heard from" } }
                    @else { span.state.state-running { "active" } }
                }
                p {
                    code { (record.schedule) } " in " (record.time_zone)
                    ", concurrency policy " (serde_json::json!(record.concurrency_policy).as_str().unwrap_or_default())
                    @if record.catchup { ", with catch-up" }
                    ". Config " code { (record.config) } ", master " code { (record.master) } "."
                    br;
                    "Scheduler " (record.scheduler) ", last heard from " (utc(record.updated_ms)) "."
                }
                @if !record.stopped && !record.next_fires_ms.is_empty() {
                    p { "Next: " (record.next_fires_ms.iter().map(|t| utc(*t)).collect::<Vec<_>>().join(", ")) }
                }
                h3 { "Recent firings" }
                @if record.firings.is_empty() { p.muted { "None yet." } }
                @else {
                    table.firings {
                        thead { tr { th { "Due" } th { "Outcome" } th { "Run" } } }
                        tbody {
                            @for f in record.firings.iter().rev().take(FIRINGS_SHOWN) {
                                tr {
                                    td { (utc(f.due_ms)) }
                                    @match &f.outcome {
                                        FiringOutcome::Started { run_id } => {
                                            td { (state_badge("succeeded")) " started" }
                                            td { a href=(format!("/runs/{run_id}")) { (run_id) } }
                                        }
                                        FiringOutcome::Skipped { reason } => {
                                            td { (state_badge("skipped")) " skipped" }
                                            td.muted { (reason) }
                                        }
                                        FiringOutcome::Failed { error } => {
                                            td { (state_badge("failed")) " not started" }
                                            td.error { (error) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                h3 { "Recent runs" }
                @let recent: Vec<&Arc<RunRecord>> = runs.iter().filter(|r| r.pipeline == record.pipeline).take(5).collect();
                @if recent.is_empty() { p.muted { "No run of " (record.pipeline) " in this lake." } }
                @else {
                    table {
                        thead { tr { th { "Run" } th { "State" } th { "Started" } th { "Duration" } } }
                        tbody {
                            @for r in recent {
                                tr {
                                    td { a href=(format!("/runs/{}", r.run_id)) { (r.run_id) } }
                                    td { (state_badge(r.state.as_str())) }
                                    td { (utc(r.start_ms)) }
                                    td.num { (duration(r.seconds)) }
                                }
                            }
                        }
                    }
                }
            }
        },
    )
}
