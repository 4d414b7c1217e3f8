//! `kiln serve` and its clients, `kiln jobs` and `kiln datasets`:
//! arguments and printing only; the work is in kiln-service.

use clap::{Args, Subcommand, ValueEnum};
use kiln_engine::{KilnError, Master, Result};
use kiln_service::auth::OidcSettings;
use kiln_service::client::Client;
use serde_json::{Value, json};
use std::time::Duration;

#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on. Without authentication only a loopback
    /// address is accepted.
    #[arg(long, env = "KILN_BIND", default_value = "127.0.0.1:8080")]
    bind: std::net::SocketAddr,
    /// Lake root for datasets and job outputs (default: $KILN_HOME/lake).
    #[arg(long, env = "KILN_LAKE")]
    lake: Option<String>,
    /// Database: sqlite:PATH (default: $KILN_HOME/service.sqlite) or
    /// postgres://USER:PASSWORD@HOST:PORT/DB for several replicas.
    #[arg(long, env = "KILN_DB")]
    db: Option<String>,
    /// Jobs this process runs at once.
    #[arg(long, env = "KILN_WORKERS", default_value_t = 2)]
    workers: usize,
    /// Where jobs run: local[N] in-process, or df://HOST:PORT.
    #[arg(long, env = "KILN_MASTER", default_value = "local[*]")]
    master: String,
    #[arg(long, value_enum, env = "KILN_AUTH", default_value = "none")]
    auth: AuthArg,
    /// The OIDC issuer URL (for Keycloak: https://HOST/realms/REALM).
    #[arg(long, env = "KILN_OIDC_ISSUER", required_if_eq("auth", "oidc"))]
    oidc_issuer: Option<String>,
    /// The audience tokens must carry (`aud`).
    #[arg(long, env = "KILN_OIDC_AUDIENCE", required_if_eq("auth", "oidc"))]
    oidc_audience: Option<String>,
    /// Dotted path of the roles claim.
    #[arg(
        long,
        env = "KILN_OIDC_ROLES_CLAIM",
        default_value = "realm_access.roles"
    )]
    oidc_roles_claim: String,
    /// Least seconds between JWKS re-fetches caused by unknown key ids.
    #[arg(long, default_value_t = 10.0)]
    oidc_jwks_refresh_seconds: f64,
    /// The client the web UI signs in as (authorization code flow with
    /// PKCE; default: the audience). Register PUBLIC_URL/auth/callback as
    /// its redirect URI.
    #[arg(long, env = "KILN_OIDC_CLIENT_ID")]
    oidc_client_id: Option<String>,
    /// The client's secret, for a confidential client.
    #[arg(long, env = "KILN_OIDC_CLIENT_SECRET", hide_env_values = true)]
    oidc_client_secret: Option<String>,
    /// The URL browsers reach this server at, behind a proxy or ingress
    /// (default: http://BIND).
    #[arg(long, env = "KILN_PUBLIC_URL")]
    public_url: Option<String>,
    /// Largest upload, in bytes.
    #[arg(long, env = "KILN_MAX_UPLOAD_BYTES", default_value_t = 1 << 30)]
    max_upload_bytes: u64,
    /// Default time limit of a job, in seconds.
    #[arg(long, default_value_t = 7200)]
    job_time_limit: u64,
    /// Attempts per job (a lost worker or a retryable error uses one).
    #[arg(long, default_value_t = 3)]
    max_attempts: i64,
    /// Jobs one user may have running at once.
    #[arg(long, default_value_t = 4)]
    per_user_running: i64,
    /// Seconds a lease lasts without a heartbeat: how soon a job of a dead
    /// server runs again.
    #[arg(long, default_value_t = 30.0)]
    lease_seconds: f64,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum AuthArg {
    None,
    Oidc,
}

pub async fn serve(args: ServeArgs) -> Result<()> {
    // Trees and generators run on rayon's pool: at the jobs' low priority.
    rayon::ThreadPoolBuilder::new()
        .start_handler(|_| kiln_service::worker::lower_thread_priority())
        .build_global()
        .map_err(|e| KilnError::internal("starting the job thread pool", e))?;
    let home = kiln_pipelines::history::kiln_home();
    let lake = args
        .lake
        .unwrap_or_else(|| format!("{}/", home.join("lake").to_string_lossy()));
    let db = args
        .db
        .unwrap_or_else(|| format!("sqlite:{}", home.join("service.sqlite").to_string_lossy()));
    let master: Master = args.master.parse()?;
    let oidc = match args.auth {
        AuthArg::None => None,
        AuthArg::Oidc => {
            let (Some(issuer), Some(audience)) = (&args.oidc_issuer, &args.oidc_audience) else {
                return Err(KilnError::config_fix(
                    "--auth oidc needs the issuer and the audience",
                    "pass --oidc-issuer URL --oidc-audience AUD",
                ));
            };
            let mut settings = OidcSettings::new(issuer, audience);
            settings.roles_claim = args.oidc_roles_claim.clone();
            settings.jwks_refresh_interval =
                Duration::from_secs_f64(args.oidc_jwks_refresh_seconds.max(0.0));
            if let Some(client) = &args.oidc_client_id {
                settings.client_id = client.clone();
            }
            settings.client_secret = args.oidc_client_secret.clone();
            Some(settings)
        }
    };
    let lease = Duration::from_secs_f64(args.lease_seconds.max(1.0));
    let workers = kiln_service::worker::WorkerSettings {
        workers: args.workers,
        lease,
        heartbeat: (lease / 10).clamp(Duration::from_millis(200), Duration::from_secs(2)),
        per_user_running: args.per_user_running,
        ..Default::default()
    };
    let limits = kiln_service::api::ApiLimits {
        max_upload_bytes: args.max_upload_bytes,
        default_time_limit: Duration::from_secs(args.job_time_limit.max(1)),
        max_attempts: args.max_attempts.max(1),
        ..Default::default()
    };
    let public_url = args
        .public_url
        .as_deref()
        .map(|u| {
            url::Url::parse(u).map_err(|e| {
                KilnError::config_fix(
                    format!("--public-url {u}: {e}"),
                    "pass the URL browsers use, e.g. https://kiln.example.com/",
                )
            })
        })
        .transpose()?;
    kiln_service::serve(kiln_service::ServeOptions {
        bind: args.bind,
        public_url,
        lake,
        db,
        master,
        oidc,
        workers,
        limits,
    })
    .await
}

/// Where the client commands connect.
#[derive(Args)]
pub struct ServerArgs {
    /// The server, http://HOST:PORT.
    #[arg(
        long,
        env = "KILN_SERVER",
        default_value = "http://127.0.0.1:8080",
        global = true
    )]
    server: String,
}

impl ServerArgs {
    fn client(&self) -> Result<Client> {
        Client::new(&self.server, std::env::var("KILN_TOKEN").ok())
    }
}

#[derive(Subcommand)]
pub enum JobsCommand {
    /// Submit a job; prints its id.
    Submit {
        /// generate | pipeline
        job_type: String,
        /// generate: the rule file (YAML).
        #[arg(long)]
        rules: Option<std::path::PathBuf>,
        /// generate: rows to generate.
        #[arg(long)]
        rows: Option<u64>,
        /// generate: the seed.
        #[arg(long)]
        seed: Option<u64>,
        /// generate: the output dataset's name.
        #[arg(long)]
        name: Option<String>,
        /// pipeline: the config (YAML).
        #[arg(long)]
        config: Option<std::path::PathBuf>,
        /// pipeline: a --conf key=value setting (repeatable).
        #[arg(long)]
        conf: Vec<String>,
        /// Any parameters as a JSON object (merged over the flags).
        #[arg(long)]
        params: Option<String>,
        /// Stop the job after this many seconds.
        #[arg(long)]
        time_limit: Option<u64>,
        /// Wait until the job ends; exit 1 unless it succeeded.
        #[arg(long)]
        wait: bool,
    },
    /// List your jobs.
    List {
        /// Everyone's jobs (admins).
        #[arg(long)]
        all: bool,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Show a job's state and progress.
    Status { id: String },
    /// Cancel a job.
    Cancel { id: String },
    /// Print a job's events.
    Logs {
        id: String,
        /// Keep printing until the job ends.
        #[arg(long, short)]
        follow: bool,
    },
}

#[derive(Subcommand)]
pub enum DatasetsCommand {
    /// Upload a CSV or Parquet file.
    Upload {
        file: std::path::PathBuf,
        #[arg(long)]
        name: Option<String>,
    },
    /// List datasets you can see.
    List {
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
    },
    /// Download a dataset into a file.
    Download {
        id: String,
        #[arg(long, short)]
        out: std::path::PathBuf,
    },
    /// Delete a dataset.
    Rm { id: String },
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    Table,
    Json,
}

fn print_json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

fn read_text(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        KilnError::config_fix(
            format!("cannot read {}: {e}", path.display()),
            "check the path",
        )
    })
}

fn is_final(state: &str) -> bool {
    !matches!(state, "queued" | "running")
}

pub async fn jobs(server: ServerArgs, command: JobsCommand) -> Result<()> {
    let client = server.client()?;
    match command {
        JobsCommand::Submit {
            job_type,
            rules,
            rows,
            seed,
            name,
            config,
            conf,
            params,
            time_limit,
            wait,
        } => {
            let mut p = serde_json::Map::new();
            if let Some(r) = rules {
                p.insert("rules".into(), read_text(&r)?.into());
            }
            if let Some(r) = rows {
                p.insert("rows".into(), r.into());
            }
            if let Some(s) = seed {
                p.insert("seed".into(), s.into());
            }
            if let Some(n) = name {
                p.insert("name".into(), n.into());
            }
            if let Some(c) = config {
                p.insert("config".into(), read_text(&c)?.into());
            }
            if !conf.is_empty() {
                let mut m = serde_json::Map::new();
                for kv in &conf {
                    let (k, v) = kv.split_once('=').ok_or_else(|| {
                        KilnError::config_fix(
                            format!("invalid --conf '{kv}'"),
                            "write --conf key=value",
                        )
                    })?;
                    m.insert(k.trim().into(), v.trim().into());
                }
                p.insert("conf".into(), Value::Object(m));
            }
            if let Some(extra) = params {
                let extra: Value = serde_json::from_str(&extra).map_err(|e| {
                    KilnError::config_fix(
                        format!("--params is not JSON: {e}"),
                        "pass a JSON object",
                    )
                })?;
                let Value::Object(extra) = extra else {
                    return Err(KilnError::config("--params must be a JSON object"));
                };
                p.extend(extra);
            }
            let mut body = json!({"type": job_type, "params": Value::Object(p)});
            if let Some(t) = time_limit {
                body["time_limit_seconds"] = t.into();
            }
            let submitted = client.post("/api/v1/jobs", &body).await?;
            let id = submitted["id"].as_str().unwrap_or_default().to_string();
            println!("{id}");
            if wait {
                loop {
                    let job = client.get(&format!("/api/v1/jobs/{id}")).await?;
                    let state = job["state"].as_str().unwrap_or_default();
                    if is_final(state) {
                        print_json(&job);
                        if state != "succeeded" {
                            return Err(KilnError::Execution {
                                context: format!("job {id}"),
                                source: Box::new(datafusion::error::DataFusionError::Execution(
                                    format!(
                                        "ended {state}: {}",
                                        job["error"].as_str().unwrap_or("")
                                    ),
                                )),
                            });
                        }
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            Ok(())
        }
        JobsCommand::List { all, format } => {
            let jobs = client
                .get(&format!("/api/v1/jobs?all={all}&limit=1000"))
                .await?;
            if format == Format::Json {
                print_json(&jobs);
                return Ok(());
            }
            println!(
                "{:<34} {:<10} {:<10} {:<12} error",
                "id", "type", "state", "owner"
            );
            for j in jobs["jobs"].as_array().into_iter().flatten() {
                println!(
                    "{:<34} {:<10} {:<10} {:<12} {}",
                    j["id"].as_str().unwrap_or_default(),
                    j["type"].as_str().unwrap_or_default(),
                    j["state"].as_str().unwrap_or_default(),
                    j["owner"].as_str().unwrap_or_default(),
                    j["error"]
                        .as_str()
                        .unwrap_or_default()
                        .lines()
                        .next()
                        .unwrap_or_default()
                );
            }
            Ok(())
        }
        JobsCommand::Status { id } => {
            print_json(&client.get(&format!("/api/v1/jobs/{id}")).await?);
            Ok(())
        }
        JobsCommand::Cancel { id } => {
            print_json(
                &client
                    .post(&format!("/api/v1/jobs/{id}/cancel"), &json!({}))
                    .await?,
            );
            Ok(())
        }
        JobsCommand::Logs { id, follow } => {
            let mut after = 0i64;
            loop {
                let events = client
                    .get(&format!("/api/v1/jobs/{id}/events?after={after}"))
                    .await?;
                for e in events["events"].as_array().into_iter().flatten() {
                    after = e["seq"].as_i64().unwrap_or(after);
                    println!(
                        "{} {:<10} {}",
                        e["at_ms"],
                        e["kind"].as_str().unwrap_or_default(),
                        e["data"]
                    );
                }
                if !follow {
                    return Ok(());
                }
                let job = client.get(&format!("/api/v1/jobs/{id}")).await?;
                if is_final(job["state"].as_str().unwrap_or_default()) {
                    let rest = client
                        .get(&format!("/api/v1/jobs/{id}/events?after={after}"))
                        .await?;
                    for e in rest["events"].as_array().into_iter().flatten() {
                        println!(
                            "{} {:<10} {}",
                            e["at_ms"],
                            e["kind"].as_str().unwrap_or_default(),
                            e["data"]
                        );
                    }
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

pub async fn datasets(server: ServerArgs, command: DatasetsCommand) -> Result<()> {
    let client = server.client()?;
    match command {
        DatasetsCommand::Upload { file, name } => {
            print_json(&client.upload(&file, name.as_deref()).await?);
        }
        DatasetsCommand::List { format } => {
            let list = client.get("/api/v1/datasets?limit=1000").await?;
            if format == Format::Json {
                print_json(&list);
                return Ok(());
            }
            println!(
                "{:<36} {:<24} {:<8} {:>12} {:<12} shared",
                "id", "name", "format", "rows", "owner"
            );
            for d in list["datasets"].as_array().into_iter().flatten() {
                println!(
                    "{:<36} {:<24} {:<8} {:>12} {:<12} {}",
                    d["id"].as_str().unwrap_or_default(),
                    d["name"].as_str().unwrap_or_default(),
                    d["format"].as_str().unwrap_or_default(),
                    d["rows"],
                    d["owner"].as_str().unwrap_or_default(),
                    d["shared"]
                );
            }
        }
        DatasetsCommand::Download { id, out } => {
            let bytes = client.download(&id, &out).await?;
            eprintln!("{bytes} bytes -> {}", out.display());
        }
        DatasetsCommand::Rm { id } => {
            client.delete(&format!("/api/v1/datasets/{id}")).await?;
            eprintln!("deleted {id}");
        }
    }
    Ok(())
}
