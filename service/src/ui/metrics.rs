//! Prometheus metrics of the runs in the lake, in the OpenMetrics text
//! format (which Prometheus scrapes), computed from the event logs at each
//! scrape: a history server keeps no counters of its own.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `kiln_runs` | gauge | pipeline, state |
//! | `kiln_tasks` | gauge | pipeline, state |
//! | `kiln_run_duration_seconds` | histogram | pipeline |
//! | `kiln_task_duration_seconds` | histogram | pipeline, classname |
//! | `kiln_task_rows_total` | counter | pipeline, direction (in/out) |
//! | `kiln_task_retries_total` | counter | pipeline |
//! | `kiln_drifted_features` | gauge | pipeline, task |
//! | `kiln_service_jobs` | gauge | type, state (`kiln serve` only) |
//! | `kiln_service_queue_depth` | gauge | (`kiln serve` only) |
//! | `kiln_service_job_duration_seconds` | histogram | type, state (`kiln serve` only) |
//! | `kiln_http_requests_total` | counter | method, route, status |
//! | `kiln_http_request_duration_seconds` | histogram | method, route |
//!
//! The HTTP metrics are this process's own, counted as requests are
//! served ([`HttpMetrics`]); everything else is recomputed at each scrape.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use kiln_pipelines::run_log::RunRecord;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use std::sync::Arc;

pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The classic Prometheus text format.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// OpenMetrics text as the classic Prometheus format: counters are named
/// with their `_total` suffix in `# HELP`/`# TYPE`, and `# UNIT` and
/// `# EOF` (OpenMetrics only) are dropped. Samples are the same.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        match renamed {
            Some(line) => out.push_str(&line),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    pipeline: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PipelineLabels {
    pipeline: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskNameLabels {
    pipeline: String,
    task: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    pipeline: String,
    classname: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    r#type: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RowsLabels {
    pipeline: String,
    direction: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

/// Upper bounds of the request duration buckets, in seconds.
const REQUEST_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

fn request_buckets() -> Histogram {
    Histogram::new(REQUEST_BUCKETS)
}

/// Requests this process served, by route (the route's pattern, so that
/// ids do not make new series) and status. Cheap to clone: clones count
/// into the same series.
#[derive(Clone)]
pub struct HttpMetrics {
    requests: Family<HttpLabels, Counter>,
    seconds: Family<RouteLabels, Histogram, fn() -> Histogram>,
}

impl Default for HttpMetrics {
    fn default() -> Self {
        HttpMetrics {
            requests: Family::default(),
            seconds: Family::new_with_constructor(request_buckets),
        }
    }
}

impl HttpMetrics {
    fn register(&self, registry: &mut Registry) {
        registry.register(
            "kiln_http_requests",
            "HTTP requests served, by method, route and status",
            self.requests.clone(),
        );
        registry.register_with_unit(
            "kiln_http_request_duration",
            "Time to the response's head, by method and route",
            Unit::Seconds,
            self.seconds.clone(),
        );
    }

    fn observe(&self, method: &str, route: &str, status: u16, seconds: f64) {
        self.requests
            .get_or_create(&HttpLabels {
                method: method.into(),
                route: route.into(),
                status: status.to_string(),
            })
            .inc();
        self.seconds
            .get_or_create(&RouteLabels {
                method: method.into(),
                route: route.into(),
            })
            .observe(seconds);
    }
}

/// The middleware that counts a router's requests (add it with
/// `route_layer`, so the matched route is known).
pub async fn track(State(metrics): State<HttpMetrics>, request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().as_str().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let response = next.run(request).await;
    metrics.observe(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// What `kiln serve` adds to the metrics: its jobs.
#[derive(Debug, Clone, Default)]
pub struct ServiceStats {
    /// (type, state, count).
    pub jobs: Vec<(String, String, i64)>,
    /// Finished jobs: (type, state, seconds).
    pub durations: Vec<(String, String, f64)>,
}

/// Upper bounds of the duration buckets, in seconds: 0.1 s to about 7 h.
fn duration_buckets() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.1, 4.0, 9,
    ))
}

/// The metrics of `runs`, of the service's jobs (`kiln serve`) and of the
/// requests served, encoded.
pub fn encode(
    runs: &[Arc<RunRecord>],
    service: Option<&ServiceStats>,
    http: &HttpMetrics,
) -> Result<String, std::fmt::Error> {
    let runs_by_state = Family::<StateLabels, Gauge>::default();
    let tasks_by_state = Family::<StateLabels, Gauge>::default();
    let run_seconds = Family::<PipelineLabels, Histogram, fn() -> Histogram>::new_with_constructor(
        duration_buckets,
    );
    let task_seconds =
        Family::<TaskLabels, Histogram, fn() -> Histogram>::new_with_constructor(duration_buckets);
    let rows = Family::<RowsLabels, Counter>::default();
    let retries = Family::<PipelineLabels, Counter>::default();
    // Drifted features of each monitoring task's latest run: (start, count).
    let mut drift: std::collections::BTreeMap<(String, String), (i64, i64)> =
        std::collections::BTreeMap::new();
    for run in runs {
        let pipeline = || run.pipeline.clone();
        runs_by_state
            .get_or_create(&StateLabels {
                pipeline: pipeline(),
                state: run.state.as_str().into(),
            })
            .inc();
        if let Some(seconds) = run.seconds {
            run_seconds
                .get_or_create(&PipelineLabels {
                    pipeline: pipeline(),
                })
                .observe(seconds);
        }
        for task in &run.tasks {
            tasks_by_state
                .get_or_create(&StateLabels {
                    pipeline: pipeline(),
                    state: task.status.as_str().into(),
                })
                .inc();
            if let Some(seconds) = task.seconds {
                task_seconds
                    .get_or_create(&TaskLabels {
                        pipeline: pipeline(),
                        classname: task.classname.clone(),
                    })
                    .observe(seconds);
            }
            for (direction, count) in [("in", task.rows_in), ("out", task.rows_out)] {
                if let Some(count) = count {
                    rows.get_or_create(&RowsLabels {
                        pipeline: pipeline(),
                        direction: direction.into(),
                    })
                    .inc_by(count);
                }
            }
            if let Some(drifted) = task
                .metrics
                .get("drifted_features")
                .and_then(|v| v.as_i64())
            {
                let latest = drift
                    .entry((run.pipeline.clone(), task.name.clone()))
                    .or_insert((run.start_ms, drifted));
                if run.start_ms >= latest.0 {
                    *latest = (run.start_ms, drifted);
                }
            }
            let retried = task.attempts.len().saturating_sub(1) as u64;
            retries
                .get_or_create(&PipelineLabels {
                    pipeline: pipeline(),
                })
                .inc_by(retried);
        }
    }
    let mut registry = Registry::default();
    registry.register(
        "kiln_runs",
        "Runs recorded in the lake, by pipeline and state",
        runs_by_state,
    );
    registry.register(
        "kiln_tasks",
        "Tasks of the recorded runs, by pipeline and state",
        tasks_by_state,
    );
    registry.register_with_unit(
        "kiln_run_duration",
        "Duration of finished runs",
        Unit::Seconds,
        run_seconds,
    );
    registry.register_with_unit(
        "kiln_task_duration",
        "Duration of finished tasks, all attempts included",
        Unit::Seconds,
        task_seconds,
    );
    registry.register(
        "kiln_task_rows",
        "Rows read (in) and written (out) by finished tasks",
        rows,
    );
    registry.register(
        "kiln_task_retries",
        "Task attempts that failed and were retried",
        retries,
    );
    let drifted = Family::<TaskNameLabels, Gauge>::default();
    for ((pipeline, task), (_, count)) in drift {
        drifted
            .get_or_create(&TaskNameLabels { pipeline, task })
            .set(count);
    }
    registry.register(
        "kiln_drifted_features",
        "Features over their drift thresholds in the latest run of each monitoring prediction task",
        drifted,
    );
    if let Some(service) = service {
        let by_state = Family::<JobLabels, Gauge>::default();
        let queued: Gauge = Gauge::default();
        for (job_type, state, count) in &service.jobs {
            by_state
                .get_or_create(&JobLabels {
                    r#type: job_type.clone(),
                    state: state.clone(),
                })
                .set(*count);
            if state == "queued" {
                queued.inc_by(*count);
            }
        }
        registry.register(
            "kiln_service_jobs",
            "Jobs of the service by type and state",
            by_state,
        );
        registry.register(
            "kiln_service_queue_depth",
            "Jobs queued and not yet started",
            queued,
        );
        let job_seconds = Family::<JobLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_buckets,
        );
        for (job_type, state, seconds) in &service.durations {
            job_seconds
                .get_or_create(&JobLabels {
                    r#type: job_type.clone(),
                    state: state.clone(),
                })
                .observe(*seconds);
        }
        registry.register_with_unit(
            "kiln_service_job_duration",
            "Run time of finished jobs (last attempt), by type and state",
            Unit::Seconds,
            job_seconds,
        );
    }
    http.register(&mut registry);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_become_labelled_series() {
        let log = r#"{"ts_ms":0,"event":"run_started","run_id":"p-1","pipeline":"p","master":"local[2]","tasks":["a"],"classnames":["ShellCommand"],"resumed":false}
{"ts_ms":0,"event":"task_started","task":"a"}
{"ts_ms":100,"event":"task_retrying","task":"a","attempt":1,"error":"x","delay_seconds":0}
{"ts_ms":300,"event":"task_succeeded","task":"a","attempts":2,"seconds":0.3,"rows_in":5,"rows_out":4,"summary":[]}
{"ts_ms":301,"event":"run_finished","run_id":"p-1","pipeline":"p","state":"succeeded","seconds":0.31,"error":null}
"#;
        let run = RunRecord::from_log(log).expect("run");
        let monitored = |start: i64, drifted: u32| {
            RunRecord::from_log(&format!(
                r#"{{"ts_ms":{start},"event":"run_started","run_id":"q-{start}","pipeline":"q","master":"local[2]","tasks":["predict"],"classnames":["BatchPrediction"],"resumed":false}}
{{"ts_ms":{start},"event":"task_started","task":"predict"}}
{{"ts_ms":{start},"event":"task_succeeded","task":"predict","attempts":1,"seconds":1.0,"rows_in":null,"rows_out":9,"summary":[],"metrics":{{"drifted_features":{drifted},"rows":9}}}}
"#
            ))
            .expect("run")
        };
        let service = ServiceStats {
            jobs: vec![
                ("generate".to_string(), "queued".to_string(), 3),
                ("fuse".to_string(), "queued".to_string(), 1),
                ("fuse".to_string(), "succeeded".to_string(), 5),
            ],
            durations: vec![("fuse".to_string(), "succeeded".to_string(), 2.5)],
        };
        let http = HttpMetrics::default();
        http.observe("GET", "/runs/{run_id}", 200, 0.03);
        http.observe("GET", "/runs/{run_id}", 404, 0.001);
        let runs: Vec<Arc<RunRecord>> = [run.clone(), monitored(2000, 3), run, monitored(1000, 1)]
            .into_iter()
            .map(Arc::new)
            .collect();
        let text = encode(&runs, Some(&service), &http).expect("encodes");
        for line in [
            "# TYPE kiln_runs gauge",
            r#"kiln_runs{pipeline="p",state="succeeded"} 2"#,
            r#"kiln_tasks{pipeline="p",state="succeeded"} 2"#,
            "# UNIT kiln_task_duration_seconds seconds",
            r#"kiln_task_duration_seconds_count{pipeline="p",classname="ShellCommand"} 2"#,
            r#"kiln_task_duration_seconds_bucket{le="0.4",pipeline="p",classname="ShellCommand"} 2"#,
            r#"kiln_task_rows_total{pipeline="p",direction="in"} 10"#,
            r#"kiln_task_rows_total{pipeline="p",direction="out"} 8"#,
            r#"kiln_task_retries_total{pipeline="p"} 2"#,
            r#"kiln_service_jobs{type="fuse",state="succeeded"} 5"#,
            "kiln_service_queue_depth 4",
            // The latest run's count, whatever the order of the runs.
            r#"kiln_drifted_features{pipeline="q",task="predict"} 3"#,
            r#"kiln_service_job_duration_seconds_count{type="fuse",state="succeeded"} 1"#,
            r#"kiln_http_requests_total{method="GET",route="/runs/{run_id}",status="404"} 1"#,
            r#"kiln_http_request_duration_seconds_bucket{le="0.05",method="GET",route="/runs/{run_id}"} 2"#,
            "# EOF",
        ] {
            assert!(text.lines().any(|l| l == line), "'{line}' not in:\n{text}");
        }
        let classic = to_prometheus_text(&text);
        for line in [
            "# TYPE kiln_task_rows_total counter",
            "# TYPE kiln_task_duration_seconds histogram",
            r#"kiln_task_rows_total{pipeline="p",direction="in"} 10"#,
            "kiln_service_queue_depth 4",
        ] {
            assert!(
                classic.lines().any(|l| l == line),
                "'{line}' not in:\n{classic}"
            );
        }
        assert!(
            !classic.contains("# EOF") && !classic.contains("# UNIT"),
            "{classic}"
        );
        // Every family's samples follow its # TYPE line under the same name.
        for typed in classic.lines().filter_map(|l| l.strip_prefix("# TYPE ")) {
            let name = typed.split(' ').next().unwrap_or_default();
            assert!(
                classic
                    .lines()
                    .any(|l| l.starts_with(name) && !l.starts_with('#')),
                "{name}"
            );
        }
    }
}
