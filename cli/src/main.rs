//! The `kiln` command line.

use clap::{Args, Parser, Subcommand};
use kiln_engine::cluster::{ExecutorOptions, SchedulerOptions, run_executor, run_scheduler};
use kiln_engine::io::{FileFormat, read_table};
use kiln_engine::schema::ReferenceSchema;
use kiln_engine::storage::parse_location;
use kiln_engine::{KilnError, KilnSession, Master, Result};
use kiln_pipelines::LoadedConfig;
use kiln_pipelines::events::LogFormat;
use kiln_pipelines::runner::{self, RunOptions};
use std::process::ExitCode;

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
        /// Add the rules' columns to this existing dataset (Parquet file,
        /// directory or glob) instead of generating rows from scratch.
        #[arg(long, conflicts_with = "rows")]
        enhance: Option<String>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Output directory: a local path or a URI (s3://, az://, abfss://).
        #[arg(long)]
        out: String,
        #[arg(long, value_enum, default_value = "parquet")]
        format: FormatArg,
    },
    /// Run a Ballista scheduler with kiln's functions.
    #[command(after_help = "Example:\n  kiln scheduler --bind-host 0.0.0.0 --bind-port 50050")]
    Scheduler {
        #[arg(long, default_value = "127.0.0.1")]
        bind_host: String,
        /// 0 picks a free port (printed on stdout).
        #[arg(long, default_value_t = 50050)]
        bind_port: u16,
        /// Host name executors and clients use to reach this scheduler.
        #[arg(long)]
        external_host: Option<String>,
    },
    /// Run a Ballista executor with kiln's functions.
    #[command(
        after_help = "Example:\n  kiln executor --scheduler-host 127.0.0.1 --scheduler-port 50050 --bind-port 50051 --grpc-port 50052 --vcores 2"
    )]
    Executor {
        #[arg(long, default_value = "127.0.0.1")]
        scheduler_host: String,
        #[arg(long, default_value_t = 50050)]
        scheduler_port: u16,
        #[arg(long, default_value = "127.0.0.1")]
        bind_host: String,
        /// Arrow Flight port (shuffle data).
        #[arg(long, default_value_t = 50051)]
        bind_port: u16,
        /// gRPC port (task control).
        #[arg(long, default_value_t = 50052)]
        grpc_port: u16,
        #[arg(long)]
        external_host: Option<String>,
        /// Concurrent tasks; 0 uses every core.
        #[arg(long, default_value_t = 0)]
        vcores: usize,
        /// Directory for shuffle files.
        #[arg(long)]
        work_dir: Option<String>,
    },
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
    /// key=value: kiln.storage.root=URI, or any DataFusion setting.
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

fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KILN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
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
    };
    let report = runner::run(&loaded, &options, &kiln_pipelines::extensions()).await?;
    eprintln!(
        "\n== run {} succeeded: {} task(s)",
        report.run_id,
        report.tasks.len()
    );
    for t in &report.tasks {
        let Some(outcome) = &t.outcome else { continue };
        let secs = (t.end_ms.saturating_sub(t.start_ms)) as f64 / 1000.0;
        eprintln!(
            "  {:<20} {:>7.1}s  {}",
            t.task,
            secs,
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

/// Every string in a YAML value (the paths a task writes are among them).
fn strings(v: &serde_yaml_ng::Value, out: &mut Vec<String>) {
    match v {
        serde_yaml_ng::Value::String(s) => out.push(s.trim_end_matches('/').to_string()),
        serde_yaml_ng::Value::Sequence(items) => items.iter().for_each(|i| strings(i, out)),
        serde_yaml_ng::Value::Mapping(m) => m.values().for_each(|i| strings(i, out)),
        _ => {}
    }
}

fn validate(config: &str) -> Result<()> {
    let loaded = LoadedConfig::from_file(config)?;
    let (graph, tasks) = runner::plan(&loaded)?;
    let root = kiln_engine::storage::Lake::new(&loaded.config.storage.root)?;
    let mut produced = Vec::new();
    for t in &loaded.config.processing_tasks {
        strings(
            &serde_yaml_ng::Value::Mapping(t.transformation_parameters.clone()),
            &mut produced,
        );
    }
    for &i in &graph.order {
        for input in tasks[i].inputs() {
            let trimmed = input.trim_end_matches('/');
            let made_here = produced.iter().any(|p| {
                !p.is_empty() && (trimmed.starts_with(p.as_str()) || p.starts_with(trimmed))
            });
            if input.starts_with("task:") || made_here || input.contains('*') {
                continue;
            }
            let url = root.resolve(&input)?;
            if kiln_engine::storage::local_path(&url).is_some_and(|p| !p.exists()) {
                eprintln!(
                    "warning: task '{}': input {url} does not exist and no task writes it",
                    loaded.config.processing_tasks[i].name
                );
            }
        }
    }
    println!("{}: OK ({} tasks)", config, graph.order.len());
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
    rows: Option<usize>,
    enhance: Option<&str>,
    seed: u64,
    out: &str,
    format: FileFormat,
) -> Result<()> {
    use kiln_engine::io::{OutputFormat, ParquetWriteOptions};
    use kiln_engine::synth::{Generator, Rules, write_enhanced, write_generated};
    let text = std::fs::read_to_string(rules)
        .map_err(|e| KilnError::config(format!("cannot read rules {rules}: {e}")))?;
    let rules_parsed = Rules::parse(&text, rules)?;
    let mut url = parse_location(out, None)?;
    if !url.path().ends_with('/') {
        let p = format!("{}/", url.path());
        url.set_path(&p);
    }
    let session = KilnSession::connect(
        &Master::Local { partitions: 1 },
        &kiln_pipelines::extensions(),
    )
    .await?;
    let format = match format {
        FileFormat::Parquet => OutputFormat::Parquet(ParquetWriteOptions::default()),
        FileFormat::Csv => OutputFormat::Csv,
    };
    let started = std::time::Instant::now();
    let summary = match (enhance, rows) {
        (Some(input), _) => {
            let input_format = if input.ends_with(".csv") {
                FileFormat::Csv
            } else {
                FileFormat::Parquet
            };
            let input = parse_location(input, None)?;
            write_enhanced(
                &session,
                rules_parsed,
                seed,
                &input,
                input_format,
                &url,
                &format,
            )
            .await?
        }
        (None, rows) => {
            let generator = std::sync::Arc::new(Generator::new(
                rules_parsed,
                seed,
                rows.unwrap_or_default(),
            )?);
            write_generated(&session, generator, &url, &format).await?
        }
    };
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{} rows -> {url} in {secs:.2}s ({:.2}M rows/s)",
        summary.rows,
        summary.rows as f64 / secs / 1e6
    );
    Ok(())
}

fn fmt_ms(ms: i64) -> String {
    let secs = ms / 1000;
    let (d, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = d + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn print_json(value: &impl serde::Serialize) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_default()
    );
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
                print_json(&tasks);
                return Ok(());
            }
            println!(
                "{:<22} {:<10} {:>8} {:<20} {:<20} {:>9} {:>10} {:>10}  error",
                "task", "state", "attempts", "start", "end", "seconds", "rows_in", "rows_out"
            );
            for t in tasks {
                println!(
                    "{:<22} {:<10} {:>8} {:<20} {:<20} {:>9.1} {:>10} {:>10}  {}",
                    t.task,
                    t.state,
                    t.attempts,
                    fmt_ms(t.start_ms),
                    fmt_ms(t.end_ms),
                    t.duration_s,
                    t.rows_in.map(|r| r.to_string()).unwrap_or_default(),
                    t.rows_out.map(|r| r.to_string()).unwrap_or_default(),
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
                print_json(&rows);
                return Ok(());
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
                    r.state,
                    fmt_ms(r.start_ms),
                    r.end_ms.map(fmt_ms).unwrap_or_default()
                );
            }
        }
    }
    Ok(())
}

async fn dispatch(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Submit(args) => submit(args).await,
        Command::Validate { config } => validate(&config),
        Command::Schema => {
            let names = kiln_pipelines::tasks::classnames();
            println!(
                "{}",
                serde_json::to_string_pretty(&kiln_pipelines::config::json_schema(&names))
                    .unwrap_or_default()
            );
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
            seed,
            out,
            format,
        } => generate(&rules, rows, enhance.as_deref(), seed, &out, format.into()).await,
        Command::Scheduler {
            bind_host,
            bind_port,
            external_host,
        } => {
            run_scheduler(
                SchedulerOptions {
                    bind_host,
                    bind_port,
                    external_host,
                },
                kiln_pipelines::extensions(),
            )
            .await
        }
        Command::Executor {
            scheduler_host,
            scheduler_port,
            bind_host,
            bind_port,
            grpc_port,
            external_host,
            vcores,
            work_dir,
        } => {
            run_executor(
                ExecutorOptions {
                    scheduler_host,
                    scheduler_port,
                    bind_host,
                    bind_port,
                    grpc_port,
                    external_host,
                    vcores,
                    work_dir,
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
        Command::Scheduler { .. } | Command::Executor { .. } => "info",
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
