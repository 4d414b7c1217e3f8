//! The `kiln` command line.

use clap::{Args, Parser, Subcommand};
use kiln_engine::cluster::{
    DEFAULT_HEARTBEAT_SECONDS, ExecutorOptions, Recovery, SchedulerOptions, TaskScheduling,
    run_executor, run_scheduler,
};
use kiln_engine::io::{FileFormat, ParquetWriteOptions, read_table};
use kiln_engine::schema::ReferenceSchema;
use kiln_engine::storage::parse_location;
use kiln_engine::{KilnError, KilnSession, Master, Result};
use kiln_pipelines::LoadedConfig;
use kiln_pipelines::runner::{self, RunOptions};
use kiln_pipelines::terminal::LogFormat;
use kiln_synth::{Rules, Source};
use std::process::ExitCode;

mod models;
mod serve;
mod synth;

/// mimalloc, as DataFusion's own CLI uses: the engine allocates and frees
/// many short-lived buffers across threads, where it beats the system
/// allocator (measured on the generator's Parquet write).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "kiln", version, about = "Batch ML pipelines on DataFusion and Ballista", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a pipeline, spark-submit style.
    #[command(
        after_help = "Examples:\n  kiln submit configs/indoor_outdoor.yaml\n  kiln submit --master df://127.0.0.1:50050 --conf kiln.storage.root=s3://lake/prod configs/indoor_outdoor.yaml\n\nExit codes: 0 success, 1 the pipeline failed while running, 2 usage or configuration error."
    )]
    Submit(SubmitArgs),
    /// Check a config (syntax, classnames, parameters, dependencies) without running it.
    #[command(after_help = "Example:\n  kiln validate configs/indoor_outdoor.yaml")]
    Validate {
        /// The pipeline config (YAML).
        config: String,
    },
    /// Print the JSON Schema of the pipeline config format.
    #[command(after_help = "Example:\n  kiln schema > kiln-pipeline.schema.json")]
    Schema,
    /// Print a reference-schema file (JSON) for existing data.
    #[command(
        name = "infer-schema",
        after_help = "Example:\n  kiln infer-schema lake/raw/training/ > lake/schema/training.json"
    )]
    InferSchema {
        /// A file, directory or glob; a local path or a URI.
        data_path: String,
        #[arg(long, value_enum, default_value = "parquet")]
        format: FormatArg,
    },
    /// Start scheduled pipelines when they are due (a long-running process).
    #[command(
        after_help = "Examples:\n  kiln schedule configs/\n  kiln schedule --master df://10.0.0.5:50050 configs/nightly.yaml\n\nA config is scheduled by its `schedule` (cron, @hourly/@daily/@weekly, or 6 fields with seconds),\n`schedule_timezone`, `concurrency_policy` (forbid | allow | replace) and `catchup`."
    )]
    Schedule {
        /// Config files or directories of them.
        #[arg(required = true)]
        configs: Vec<String>,
        /// Master passed to every `kiln submit`.
        #[arg(long, default_value = "local[*]")]
        master: String,
        /// Stop after this many seconds (default: run until killed).
        #[arg(long = "for", value_name = "SECONDS")]
        run_for: Option<f64>,
    },
    /// List past runs from the run history, or show one run's tasks.
    #[command(
        after_help = "Examples:\n  kiln runs\n  kiln runs --pipeline indoor_outdoor --format json\n  kiln runs show indoor_outdoor-1700000000000-ab12"
    )]
    Runs {
        #[command(subcommand)]
        show: Option<RunsCommand>,
        /// Only runs of this pipeline.
        #[arg(long)]
        pipeline: Option<String>,
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormatArg,
    },
    /// Generate synthetic data from a rule file.
    #[command(
        after_help = "Examples:\n  kiln generate configs/generators/indoor_outdoor.yaml --rows 1000000 --seed 42 --out lake/raw/training/\n  kiln generate extra_columns.yaml --enhance lake/raw/training/ --out lake/raw/training_enhanced/"
    )]
    Generate {
        /// The rule file (YAML).
        rules: String,
        /// Rows to generate from scratch.
        #[arg(long, required_unless_present = "enhance")]
        rows: Option<usize>,
        /// Add the rules' columns to this existing dataset (a file,
        /// directory or glob) instead of generating rows from scratch.
        #[arg(long, conflicts_with = "rows")]
        enhance: Option<String>,
        /// The format of the --enhance input.
        #[arg(long, value_enum, default_value = "parquet", requires = "enhance")]
        input_format: FormatArg,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output directory: a local path or a URI (s3://, az://, abfss://).
        #[arg(long)]
        out: String,
        #[arg(long, value_enum, default_value = "parquet")]
        format: FormatArg,
    },
    /// Judge a synthetic table against the real one: quality (SDMetrics'
    /// scores), validity, privacy; a report with plots.
    #[command(
        after_help = "Examples:\n  kiln evaluate lake/raw/training/ lake/synthetic/training/ --out lake/reports/training/\n  kiln evaluate real.parquet synthetic.parquet --holdout holdout.parquet --type cell_id=categorical --type sample_id=id --out report/\n\nWrites report.json (scores in [0, 1], null where undefined), index.html and SVG plots."
    )]
    Evaluate(Box<synth::EvaluateArgs>),
    /// The model registry: list, show and diff versions, promote a version
    /// to an alias (champion = deployed), roll back.
    #[command(
        after_help = "Examples:\n  kiln models list lake/models/indoor_outdoor/\n  kiln models list lake/models/indoor_outdoor/ --format json\n  kiln models diff lake/models/indoor_outdoor/ champion challenger\n  kiln models promote lake/models/indoor_outdoor/ 4\n  kiln models promote lake/models/indoor_outdoor/ 5 --alias staging\n  kiln models rollback lake/models/indoor_outdoor/"
    )]
    Models {
        #[command(subcommand)]
        command: models::ModelsCommand,
    },
    /// Fit a generative model to a table, and sample new rows from it.
    Reproduce {
        #[command(subcommand)]
        command: synth::ReproduceCommand,
    },
    /// Run a Ballista scheduler with kiln's functions.
    #[command(
        after_help = "Example:\n  kiln scheduler --bind-host 0.0.0.0 --bind-port 50050\n\nHTTP /healthz, /readyz (ready once an executor is registered) and Ballista's REST API\n(/api/executors, /api/jobs; `distribution: auto` reads the executors' vcores there) are\nserved on the same port.\nEvery flag can also be set through the environment variable shown."
    )]
    Scheduler(SchedulerArgs),
    /// Run a Ballista executor with kiln's functions.
    #[command(
        after_help = "Example:\n  kiln executor --scheduler-host 127.0.0.1 --scheduler-port 50050 --bind-port 50051 --grpc-port 50052 --vcores 2 --health-port 50053\n\nEvery flag can also be set through the environment variable shown."
    )]
    Executor(ExecutorArgs),
    /// Print Kubernetes objects that run pipelines on the cluster.
    #[command(
        after_help = "Examples:\n  kiln deploy cronjobs --image myregistry.azurecr.io/kiln:0.1.0 configs/ | kubectl apply -f -\n  kiln deploy job --image myregistry.azurecr.io/kiln:0.1.0 configs/indoor_outdoor.yaml | kubectl create -f -\n\nJobs are immutable: delete job indoor-outdoor-submit before submitting it again."
    )]
    Deploy {
        #[command(subcommand)]
        what: DeployCommand,
    },
    /// Run the job service: REST API, persistent job queue, workers.
    #[command(
        after_help = "Examples:\n  kiln serve\n  kiln serve --bind 0.0.0.0:8080 --db postgres://kiln@db:5432/kiln --lake s3://lake/platform/ \\\n    --auth oidc --oidc-issuer https://keycloak.example.org/realms/synth --oidc-audience kiln\n\nPrints `listening on http://HOST:PORT` on stderr once it accepts requests.\nThe API is described at /api/v1/openapi.json."
    )]
    Serve(Box<serve::ServeArgs>),
    /// Submit, list, follow and cancel jobs of a `kiln serve` server.
    #[command(
        after_help = "Examples:\n  kiln jobs submit generate --rules configs/generators/indoor_outdoor.yaml --rows 100000 --seed 1 --wait\n  kiln jobs submit pipeline --config configs/indoor_outdoor.yaml\n  kiln jobs logs --follow JOB_ID\n\nThe token comes from KILN_TOKEN, the server from --server or KILN_SERVER."
    )]
    Jobs {
        #[command(flatten)]
        server: serve::ServerArgs,
        #[command(subcommand)]
        command: serve::JobsCommand,
    },
    /// Upload, list, download and delete datasets of a `kiln serve` server.
    #[command(
        after_help = "Examples:\n  kiln datasets upload lake/raw/training.csv --name training\n  kiln datasets download DATASET_ID --out training.parquet"
    )]
    Datasets {
        #[command(flatten)]
        server: serve::ServerArgs,
        #[command(subcommand)]
        command: serve::DatasetsCommand,
    },
    /// Print the OpenAPI document of `kiln serve`.
    #[command(after_help = "Example:\n  kiln openapi > service/openapi.json")]
    Openapi,
    /// Serve the web UI over a lake's runs, read-only, like Spark's history
    /// server: runs, each run's task graph, timeline and tasks, and
    /// Prometheus metrics at /metrics. Needs nothing but the lake.
    #[command(
        after_help = "Examples:\n  kiln ui --lake ./lake\n  kiln ui --lake s3://lake/prod --bind 0.0.0.0:18080\n\nPrints 'listening on http://HOST:PORT' on stderr once it serves."
    )]
    Ui {
        /// The lake root whose `_kiln/runs/` the pages read.
        #[arg(long, env = "KILN_LAKE")]
        lake: String,
        /// Address to listen on (the pages have no authentication: bind
        /// to loopback, or put an authenticating proxy in front).
        #[arg(long, env = "KILN_UI_BIND", default_value = "127.0.0.1:18080")]
        bind: std::net::SocketAddr,
    },
    /// Exit 0 when a health endpoint answers 200 (a container HEALTHCHECK).
    #[command(after_help = "Example:\n  kiln healthcheck --url http://127.0.0.1:50053/readyz")]
    Healthcheck {
        /// http://HOST:PORT/PATH of a scheduler's or executor's probe.
        #[arg(
            long,
            env = "KILN_HEALTH_URL",
            default_value = "http://127.0.0.1:50050/healthz"
        )]
        url: String,
    },
}

#[derive(Subcommand)]
enum DeployCommand {
    /// The pipelines ConfigMap and a CronJob for every config with a `schedule`.
    Cronjobs {
        /// Config files or directories of them.
        #[arg(required = true)]
        configs: Vec<String>,
        #[command(flatten)]
        pod: PodArgs,
    },
    /// The pipelines ConfigMap and a Job that submits one config once.
    Job {
        config: String,
        #[command(flatten)]
        pod: PodArgs,
    },
}

#[derive(Args)]
struct PodArgs {
    /// The kiln image the pods run.
    #[arg(long)]
    image: String,
    /// The --master of `kiln submit` inside the cluster.
    #[arg(long, default_value = "df://kiln-scheduler:50050")]
    master: String,
    #[arg(long, default_value = "kiln")]
    namespace: String,
    /// Service account of the pods (bound to the lake by workload identity).
    #[arg(long, default_value = "kiln")]
    service_account: String,
    /// A Secret with the lake's credentials, for clusters without workload identity.
    #[arg(long)]
    lake_secret: Option<String>,
    /// The lake URI the runs use (kiln.storage.root), e.g. abfss://lake@ACCOUNT.dfs.core.windows.net/.
    #[arg(long)]
    lake: Option<String>,
}

impl From<PodArgs> for kiln_pipelines::deploy::PodOptions {
    fn from(a: PodArgs) -> Self {
        kiln_pipelines::deploy::PodOptions {
            image: a.image,
            master: a.master,
            namespace: a.namespace,
            service_account: a.service_account,
            lake_secret: a.lake_secret,
            lake: a.lake,
        }
    }
}

#[derive(Args)]
struct SchedulerArgs {
    #[arg(long, env = "KILN_BIND_HOST", default_value = "127.0.0.1")]
    bind_host: String,
    /// 0 picks a free port (printed on stdout).
    #[arg(long, env = "KILN_BIND_PORT", default_value_t = 50050)]
    bind_port: u16,
    /// Host name executors and clients use to reach this scheduler.
    #[arg(long, env = "KILN_EXTERNAL_HOST")]
    external_host: Option<String>,
    #[command(flatten)]
    recovery: RecoveryArgs,
    /// pull: executors ask for tasks (default; survives lost executors);
    /// push: the scheduler assigns them. Executors must use the same.
    #[arg(long, env = "KILN_TASK_SCHEDULING", value_enum, default_value = "pull")]
    task_scheduling: TaskSchedulingArg,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum TaskSchedulingArg {
    Pull,
    Push,
}

impl From<TaskSchedulingArg> for TaskScheduling {
    fn from(t: TaskSchedulingArg) -> Self {
        match t {
            TaskSchedulingArg::Pull => TaskScheduling::Pull,
            TaskSchedulingArg::Push => TaskScheduling::Push,
        }
    }
}

/// How lost executors are detected and their work re-run (kiln's defaults;
/// Ballista's own are 4, 4, 180 s, 15 s, 180 s).
#[derive(Args)]
struct RecoveryArgs {
    /// Attempts of one task before its job fails.
    #[arg(long, env = "KILN_TASK_MAX_FAILURES", default_value_t = Recovery::default().task_max_failures)]
    task_max_failures: usize,
    /// Re-runs of one stage after lost shuffle outputs before its job fails.
    /// A stage that joins N tables may need N re-runs for one lost executor.
    #[arg(long, env = "KILN_STAGE_MAX_FAILURES", default_value_t = Recovery::default().stage_max_failures)]
    stage_max_failures: usize,
    /// Seconds without a heartbeat before an executor is declared dead and
    /// its tasks re-run elsewhere (also bounds how long a hung executor stalls a job).
    #[arg(long, env = "KILN_EXECUTOR_TIMEOUT_SECONDS", default_value_t = Recovery::default().executor_timeout_seconds)]
    executor_timeout_seconds: u64,
    /// How often to look for dead executors, in seconds.
    #[arg(long, env = "KILN_EXPIRE_DEAD_EXECUTOR_INTERVAL_SECONDS", default_value_t = Recovery::default().expire_dead_executor_interval_seconds)]
    expire_dead_executor_interval_seconds: u64,
    /// Seconds running jobs wait for an executor to (re)register after the
    /// last one is lost, before they fail.
    #[arg(long, env = "KILN_NO_EXECUTORS_GRACE_PERIOD_SECONDS", default_value_t = Recovery::default().no_executors_grace_period_seconds)]
    no_executors_grace_period_seconds: u64,
    /// Resubmit jobs that got no task scheduled after this many ms (0: never).
    #[arg(long, env = "KILN_JOB_RESUBMIT_INTERVAL_MS", default_value_t = Recovery::default().job_resubmit_interval_ms)]
    job_resubmit_interval_ms: u64,
}

impl From<RecoveryArgs> for Recovery {
    fn from(a: RecoveryArgs) -> Self {
        Recovery {
            task_max_failures: a.task_max_failures,
            stage_max_failures: a.stage_max_failures,
            executor_timeout_seconds: a.executor_timeout_seconds,
            expire_dead_executor_interval_seconds: a.expire_dead_executor_interval_seconds,
            no_executors_grace_period_seconds: a.no_executors_grace_period_seconds,
            job_resubmit_interval_ms: a.job_resubmit_interval_ms,
        }
    }
}

#[derive(Args)]
struct ExecutorArgs {
    #[arg(long, env = "KILN_SCHEDULER_HOST", default_value = "127.0.0.1")]
    scheduler_host: String,
    #[arg(long, env = "KILN_SCHEDULER_PORT", default_value_t = 50050)]
    scheduler_port: u16,
    #[arg(long, env = "KILN_BIND_HOST", default_value = "127.0.0.1")]
    bind_host: String,
    /// Arrow Flight port (shuffle data).
    #[arg(long, env = "KILN_BIND_PORT", default_value_t = 50051)]
    bind_port: u16,
    /// gRPC port (task control).
    #[arg(long, env = "KILN_GRPC_PORT", default_value_t = 50052)]
    grpc_port: u16,
    /// Host name the scheduler and other executors use to reach this one.
    #[arg(long, env = "KILN_EXTERNAL_HOST")]
    external_host: Option<String>,
    /// Concurrent tasks, and the threads kiln's training tasks use in this
    /// process; 0 uses every core.
    #[arg(long, env = "KILN_VCORES", default_value_t = 0)]
    vcores: usize,
    /// Directory for shuffle files.
    #[arg(long, env = "KILN_WORK_DIR")]
    work_dir: Option<String>,
    /// Seconds between heartbeats; keep it well below the scheduler's
    /// --executor-timeout-seconds.
    #[arg(long, env = "KILN_HEARTBEAT_INTERVAL_SECONDS", default_value_t = DEFAULT_HEARTBEAT_SECONDS)]
    heartbeat_interval_seconds: u64,
    /// Serve HTTP /healthz (process alive) and /readyz (last heartbeat
    /// reached the scheduler) on this port, for Kubernetes probes.
    #[arg(long, env = "KILN_HEALTH_PORT")]
    health_port: Option<u16>,
    /// Must match the scheduler's --task-scheduling.
    #[arg(long, env = "KILN_TASK_SCHEDULING", value_enum, default_value = "pull")]
    task_scheduling: TaskSchedulingArg,
    /// Seconds to wait at start for the scheduler to accept connections
    /// (0: try once).
    #[arg(long, env = "KILN_SCHEDULER_WAIT_SECONDS", default_value_t = 60)]
    scheduler_wait_seconds: u64,
}

#[derive(Subcommand)]
enum RunsCommand {
    /// The tasks of one run: state, attempts, times, rows, metrics, error.
    Show {
        run_id: String,
        #[arg(long, value_enum, default_value = "table")]
        format: OutputFormatArg,
    },
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OutputFormatArg {
    Table,
    Json,
}

#[derive(Args)]
struct SubmitArgs {
    /// local, local[N], local[*] or df://HOST:PORT (a Ballista scheduler).
    #[arg(long, default_value = "local[*]")]
    master: String,
    /// Overrides the pipeline name.
    #[arg(long)]
    name: Option<String>,
    /// key=value: kiln.storage.root=URI, kiln.cluster.executor_wait_seconds=N
    /// (how long a run waits for a cluster's first executor, default 120),
    /// or any DataFusion setting.
    #[arg(long = "conf", value_name = "KEY=VALUE")]
    conf: Vec<String>,
    /// Run only this task, against existing upstream outputs.
    #[arg(long)]
    only: Option<String>,
    /// Rerun this task and everything downstream of it.
    #[arg(long)]
    from: Option<String>,
    /// Continue a failed or killed run, skipping tasks whose outputs are complete and still valid.
    #[arg(long, value_name = "RUN_ID")]
    resume: Option<String>,
    /// Abandon the whole run after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    time_limit: Option<f64>,
    /// The id of the new run (default: pipeline name, time and a random suffix).
    #[arg(long, value_name = "RUN_ID")]
    run_id: Option<String>,
    /// RUN_ID/TASK of the run that started this one; recorded in the run's
    /// log and its models' lineage (set by drift-triggered retraining).
    #[arg(long, value_name = "RUN_ID/TASK")]
    triggered_by: Option<String>,
    /// text: log lines, with a live progress display when stderr is a
    /// terminal; json: one JSON event per line on stderr.
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormatArg,
    /// The pipeline config (YAML).
    config: String,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormatArg {
    Text,
    Json,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum FormatArg {
    Parquet,
    Csv,
}

impl From<FormatArg> for FileFormat {
    fn from(f: FormatArg) -> Self {
        match f {
            FormatArg::Parquet => FileFormat::Parquet,
            FormatArg::Csv => FileFormat::Csv,
        }
    }
}

/// Logs to stderr. A failed write (a full disk under a log file) loses the
/// line: tracing-subscriber's default reports it with `eprintln!`, which
/// panics on the same full disk and, in the scheduler, kills the event
/// loop that every job depends on.
fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .log_internal_errors(false)
        .try_init();
}

async fn submit(args: SubmitArgs) -> Result<()> {
    let master: Master = args.master.parse()?;
    let conf = args
        .conf
        .iter()
        .map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
                .ok_or_else(|| {
                    KilnError::config_fix(
                        format!("invalid --conf '{kv}'"),
                        "write --conf key=value",
                    )
                })
        })
        .collect::<Result<Vec<_>>>()?;
    let loaded = LoadedConfig::from_file(&args.config)?;
    let options = RunOptions {
        master,
        name: args.name,
        conf,
        only: args.only,
        from: args.from,
        resume: args.resume,
        time_limit: args.time_limit,
        log_format: match args.log_format {
            LogFormatArg::Text => LogFormat::Text,
            LogFormatArg::Json => LogFormat::Json,
        },
        live_progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        run_id: args.run_id,
        triggered_by: args.triggered_by,
    };
    let report = runner::run(&loaded, &options, &kiln_pipelines::extensions()).await?;
    eprintln!(
        "\n== run {} succeeded: {} task(s)",
        report.run_id,
        report.tasks.len()
    );
    for t in &report.tasks {
        let Some(outcome) = &t.outcome else { continue };
        eprintln!(
            "  {:<20} {:>7.1}s  {}",
            t.task,
            t.seconds,
            outcome.outputs.join(", ")
        );
        // Tasks that report metrics (training) repeat their table here.
        if !outcome.metrics.is_null() {
            for line in &outcome.summary {
                eprintln!("      {line}");
            }
        }
    }
    Ok(())
}

fn validate(config: &str) -> Result<()> {
    let loaded = LoadedConfig::from_file(config)?;
    let validation = kiln_pipelines::validate::validate(&loaded)?;
    for warning in &validation.warnings {
        eprintln!("warning: {warning}");
    }
    println!("{config}: OK ({} tasks)", validation.tasks);
    Ok(())
}

async fn infer_schema(data_path: &str, format: FileFormat) -> Result<()> {
    let url = parse_location(data_path, None)?;
    let session = KilnSession::connect(
        &Master::Local { partitions: 1 },
        &kiln_pipelines::extensions(),
    )
    .await?;
    let df = read_table(&session, &url, format).await?;
    println!(
        "{}",
        ReferenceSchema::from_arrow(df.schema().as_arrow()).to_json()
    );
    Ok(())
}

async fn generate(
    rules: &str,
    source: Source,
    seed: u64,
    out: &str,
    format: FileFormat,
) -> Result<()> {
    let text = std::fs::read_to_string(rules).map_err(|e| {
        KilnError::config_fix(format!("cannot read rules {rules}: {e}"), "check the path")
    })?;
    let rules = Rules::parse(&text, rules)?;
    let url = synth::dir_url(out)?;
    let session = KilnSession::connect(
        &Master::Local { partitions: 1 },
        &kiln_pipelines::extensions(),
    )
    .await?;
    let started = std::time::Instant::now();
    let options = ParquetWriteOptions::default();
    let summary =
        kiln_synth::generate(&session, rules, seed, &source, &url, format, &options).await?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{} rows -> {url} in {secs:.2}s ({:.2}M rows/s)",
        summary.rows,
        summary.rows as f64 / secs / 1e6
    );
    Ok(())
}

/// A UTC timestamp of the run history, to the second.
fn fmt_ms(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| format!("{ms} ms"))
}
fn print_json(value: &impl serde::Serialize) -> Result<()> {
    let text =
        serde_json::to_string_pretty(value).map_err(|e| KilnError::internal("printing JSON", e))?;
    println!("{text}");
    Ok(())
}

fn runs(show: Option<RunsCommand>, pipeline: Option<&str>, format: OutputFormatArg) -> Result<()> {
    let history = kiln_pipelines::history::History::open_default()?;
    match show {
        Some(RunsCommand::Show { run_id, format }) => {
            let tasks = history.tasks(&run_id)?;
            if tasks.is_empty() && !history.runs(None)?.iter().any(|r| r.run_id == run_id) {
                return Err(KilnError::config_fix(
                    format!("no run '{run_id}' in the run history"),
                    "list runs with `kiln runs`",
                ));
            }
            if format == OutputFormatArg::Json {
                return print_json(&tasks);
            }
            println!(
                "{:<22} {:<10} {:>8} {:<20} {:<20} {:>9} {:>10} {:>10}  error",
                "task", "state", "attempts", "start", "end", "seconds", "rows_in", "rows_out"
            );
            for t in tasks {
                let rows = |f: fn(&kiln_pipelines::task::TaskOutcome) -> Option<u64>| {
                    t.outcome
                        .as_ref()
                        .and_then(f)
                        .map(|r| r.to_string())
                        .unwrap_or_default()
                };
                println!(
                    "{:<22} {:<10} {:>8} {:<20} {:<20} {:>9.1} {:>10} {:>10}  {}",
                    t.task,
                    t.state.as_str(),
                    t.attempts,
                    fmt_ms(t.start_ms),
                    fmt_ms(t.end_ms),
                    t.seconds,
                    rows(|o| o.rows_in),
                    rows(|o| o.rows_out),
                    t.error
                        .unwrap_or_default()
                        .lines()
                        .next()
                        .unwrap_or_default()
                );
            }
        }
        None => {
            let rows = history.runs(pipeline)?;
            if format == OutputFormatArg::Json {
                return print_json(&rows);
            }
            println!(
                "{:<44} {:<24} {:<10} {:<20} {:<20}",
                "run_id", "pipeline", "state", "start", "end"
            );
            for r in rows {
                println!(
                    "{:<44} {:<24} {:<10} {:<20} {:<20}",
                    r.run_id,
                    r.pipeline,
                    r.state.as_str(),
                    fmt_ms(r.start_ms),
                    r.end_ms.map(fmt_ms).unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

/// GET `url` (plain HTTP on the pod's own network); Ok on status 200.
fn healthcheck(url: &str) -> Result<()> {
    use std::io::{Read, Write};
    let bad = |why: String| KilnError::Cluster {
        message: format!("health check {url}: {why}"),
        fix: None,
    };
    let rest = url.strip_prefix("http://").ok_or_else(|| {
        KilnError::config_fix(
            format!("--url {url} is not an http:// URL"),
            "use http://HOST:PORT/PATH",
        )
    })?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let path = if path.is_empty() { "/" } else { path };
    let addr = std::net::ToSocketAddrs::to_socket_addrs(authority)
        .map_err(|e| bad(e.to_string()))?
        .next()
        .ok_or_else(|| bad("no address".into()))?;
    let timeout = std::time::Duration::from_secs(5);
    let mut stream =
        std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| bad(e.to_string()))?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| bad(e.to_string()))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n")
        .map_err(|e| bad(e.to_string()))?;
    let mut response = String::new();
    stream
        .read_to_string(&mut response)
        .map_err(|e| bad(e.to_string()))?;
    let status = response.lines().next().unwrap_or_default();
    if status.split_whitespace().nth(1) == Some("200") {
        Ok(())
    } else {
        Err(bad(format!("answered '{status}'")))
    }
}

async fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Healthcheck { url } => healthcheck(&url),
        Command::Serve(args) => serve::serve(*args).await,
        Command::Ui { lake, bind } => kiln_service::ui::history_server(&lake, bind).await,
        Command::Jobs { server, command } => serve::jobs(server, command).await,
        Command::Datasets { server, command } => serve::datasets(server, command).await,
        Command::Evaluate(args) => synth::evaluate(*args).await,
        Command::Reproduce { command } => synth::reproduce(command).await,
        Command::Models { command } => models::models(command).await,
        Command::Openapi => {
            print!("{}", kiln_service::api::openapi_document());
            Ok(())
        }
        Command::Deploy { what } => {
            let yaml = match what {
                DeployCommand::Cronjobs { configs, pod } => {
                    let scheduled = kiln_pipelines::schedule::load_scheduled(&configs)?;
                    kiln_pipelines::deploy::cron_jobs(&scheduled, &pod.into())?
                }
                DeployCommand::Job { config, pod } => {
                    kiln_pipelines::deploy::job(std::path::Path::new(&config), &pod.into())?
                }
            };
            print!("{yaml}");
            Ok(())
        }
        Command::Submit(args) => submit(args).await,
        Command::Validate { config } => validate(&config),
        Command::Schema => {
            print!("{}", kiln_pipelines::schema::json_schema_text());
            Ok(())
        }
        Command::InferSchema { data_path, format } => infer_schema(&data_path, format.into()).await,
        Command::Runs {
            show,
            pipeline,
            format,
        } => runs(show, pipeline.as_deref(), format),
        Command::Schedule {
            configs,
            master,
            run_for,
        } => {
            master.parse::<Master>()?;
            let scheduled = kiln_pipelines::schedule::load_scheduled(&configs)?;
            let exe = std::env::current_exe()
                .map_err(|e| KilnError::config(format!("cannot locate the kiln binary: {e}")))?;
            tokio::task::spawn_blocking(move || {
                kiln_pipelines::schedule::run_schedule(
                    &scheduled,
                    &exe,
                    &master,
                    run_for.map(std::time::Duration::from_secs_f64),
                )
            })
            .await
            .map_err(|e| KilnError::config(format!("scheduler stopped: {e}")))??;
            Ok(())
        }
        Command::Generate {
            rules,
            rows,
            enhance,
            input_format,
            seed,
            out,
            format,
        } => {
            let source = match (enhance, rows) {
                (Some(input), _) => Source::Enhance {
                    input: parse_location(&input, None)?,
                    format: input_format.into(),
                },
                (None, rows) => Source::Rows(rows.unwrap_or_default()),
            };
            generate(&rules, source, seed, &out, format.into()).await
        }
        Command::Scheduler(args) => {
            run_scheduler(
                SchedulerOptions {
                    bind_host: args.bind_host,
                    bind_port: args.bind_port,
                    external_host: args.external_host,
                    recovery: args.recovery.into(),
                    scheduling: args.task_scheduling.into(),
                },
                kiln_pipelines::extensions(),
            )
            .await
        }
        Command::Executor(args) => {
            if args.vcores > 0 {
                // Tree growing (rayon) keeps to the executor's share of cores.
                rayon::ThreadPoolBuilder::new()
                    .num_threads(args.vcores)
                    .build_global()
                    .map_err(|e| KilnError::internal("sizing the training thread pool", e))?;
            }
            run_executor(
                ExecutorOptions {
                    scheduler_host: args.scheduler_host,
                    scheduler_port: args.scheduler_port,
                    bind_host: args.bind_host,
                    bind_port: args.bind_port,
                    grpc_port: args.grpc_port,
                    external_host: args.external_host,
                    vcores: args.vcores,
                    work_dir: args.work_dir,
                    heartbeat_interval_seconds: args.heartbeat_interval_seconds,
                    health_port: args.health_port,
                    scheduling: args.task_scheduling.into(),
                    scheduler_wait: std::time::Duration::from_secs(args.scheduler_wait_seconds),
                },
                kiln_pipelines::extensions(),
            )
            .await
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_log = match cli.command {
        Command::Scheduler(_) | Command::Executor(_) | Command::Serve(_) => "info",
        _ => "warn",
    };
    init_logging(default_log);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code() as u8)
        }
    }
}
