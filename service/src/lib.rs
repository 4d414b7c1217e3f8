//! # kiln-service
//!
//! `kiln serve`: the job service of kiln's data-synthesis platform, in one
//! process on top of the engine the pipelines use.
//!
//! * [`api`]: the REST API under `/api/v1` (axum), its OpenAPI 3.1 document
//!   generated from the handlers (utoipa), problem responses ([`problem`]);
//! * [`auth`]: OIDC bearer tokens (discovery, cached JWKS, key rotation) and
//!   the roles viewer / user / admin;
//! * [`store`]: datasets, jobs, job events and the audit log, and the job
//!   queue with leases, over [`db`] (SQLite embedded, PostgreSQL shared);
//! * [`datasets`]: uploads streamed to the lake and committed atomically,
//!   samples and downloads;
//! * [`models`]: the model repositories pipelines publish in the lake;
//! * [`jobs`]: the job types and their parameters; [`worker`]: the workers
//!   that lease, run, heartbeat, retry, time out and cancel jobs;
//! * [`client`]: the HTTP client behind `kiln jobs` and `kiln datasets`;
//! * [`ui`]: the web pages over the runs in the lake and `/metrics`
//!   (`kiln ui`, the history server), and in `kiln serve` the platform's
//!   datasets and jobs pages with the browser sign-in.
//!
//! Nothing below this crate knows HTTP: jobs call the same functions as
//! `kiln generate` and `kiln submit`.

pub mod api;
pub mod auth;
pub mod client;
pub mod datasets;
pub mod db;
pub mod jobs;
pub mod models;
pub mod problem;
pub mod store;
mod synthesis_jobs;
pub mod ui;
pub mod worker;

use auth::{Auth, OidcSettings, OidcVerifier};
use kiln_engine::storage::Lake;
use kiln_engine::{KilnError, KilnSession, Master, Result};
use std::net::SocketAddr;
use std::sync::Arc;

/// Everything `kiln serve` is told.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub bind: SocketAddr,
    /// The URL browsers reach the server at (default: `http://BIND`).
    pub public_url: Option<url::Url>,
    /// The lake root (datasets, job outputs).
    pub lake: String,
    /// `sqlite:PATH` or `postgres://…`.
    pub db: String,
    pub master: Master,
    /// `None`: no authentication (loopback only).
    pub oidc: Option<OidcSettings>,
    pub workers: worker::WorkerSettings,
    pub limits: api::ApiLimits,
}

/// A bound, ready server: [`Server::run`] serves until shutdown.
pub struct Server {
    address: SocketAddr,
    listener: tokio::net::TcpListener,
    router: axum::Router,
    workers: Arc<worker::Workers>,
}

impl Server {
    /// Opens the database and the lake, discovers the OIDC issuer, binds
    /// the address. Nothing is served and no job runs yet.
    pub async fn bind(options: ServeOptions) -> Result<Self> {
        if options.oidc.is_none() && !options.bind.ip().is_loopback() {
            return Err(KilnError::config_fix(
                format!(
                    "refusing to listen on {} without authentication",
                    options.bind
                ),
                "bind to 127.0.0.1, or pass --auth oidc --oidc-issuer URL --oidc-audience AUD",
            ));
        }
        let db = db::open(&options.db)
            .await
            .map_err(|e| KilnError::config(format!("--db {}: {e}", options.db)))?;
        let store = store::Store::new(db);
        let lake = Lake::new(&options.lake)?;
        let session =
            Arc::new(KilnSession::connect(&options.master, &kiln_pipelines::extensions()).await?);
        let datasets = datasets::DatasetLake::new(Arc::clone(&session), lake);
        let auth = match options.oidc {
            None => Auth::None,
            Some(settings) => {
                let issuer = settings.issuer.clone();
                let verifier = OidcVerifier::discover(settings).await.map_err(|e| {
                    KilnError::config_fix(
                        format!("cannot use OIDC issuer {issuer}: {e}"),
                        "check --oidc-issuer and that the issuer is reachable",
                    )
                })?;
                Auth::Oidc(Arc::new(verifier))
            }
        };
        let context = Arc::new(jobs::JobContext {
            datasets: datasets.clone(),
            master: options.master.clone(),
            store: store.clone(),
        });
        let workers = Arc::new(worker::Workers::new(
            store.clone(),
            context,
            options.workers.clone(),
        ));
        let pages = ui::UiState::new(
            Arc::clone(&session),
            datasets.lake().clone(),
            Some(store.clone()),
        );
        let http = pages.http.clone();
        let listener = tokio::net::TcpListener::bind(options.bind)
            .await
            .map_err(|e| KilnError::config(format!("cannot listen on {}: {e}", options.bind)))?;
        let address = listener
            .local_addr()
            .map_err(|e| KilnError::io(options.bind, e))?;
        let public_url = match options.public_url {
            Some(url) => url,
            None => url::Url::parse(&format!("http://{address}/"))
                .map_err(|e| KilnError::config(format!("http://{address}/: {e}")))?,
        };
        let state = api::AppState {
            store,
            datasets,
            auth,
            limits: Arc::new(options.limits.clone()),
            wake: workers.waker(),
            logins: Arc::new(ui::login::Logins::new(&public_url)),
        };
        // The pages and /metrics of the lake's runs, and the platform's
        // pages (datasets, jobs), behind the API's authentication (the
        // viewer role); a browser without a sign-in is sent to sign in.
        let viewer = axum::middleware::from_fn_with_state(state.clone(), api::require_viewer);
        let track = axum::middleware::from_fn_with_state(http.clone(), ui::metrics::track);
        let refresh = axum::middleware::from_fn_with_state(state.clone(), ui::login::refresh);
        let pages = ui::router(pages)
            .merge(ui::platform::router(state.clone()).route_layer(track.clone()))
            .layer(viewer)
            .layer(refresh.clone());
        let login = axum::Router::new()
            .route("/login", axum::routing::get(ui::login::login))
            .route("/auth/callback", axum::routing::get(ui::login::callback))
            .route("/logout", axum::routing::get(ui::login::logout))
            .route_layer(track.clone())
            .with_state(state.clone());
        Ok(Server {
            address,
            listener,
            // The API renews a browser's expired sign-in too (the pages'
            // scripts read its job streams); bearer clients are untouched.
            router: api::router(state)
                .route_layer(track)
                .layer(refresh)
                .merge(pages)
                .merge(login),
            workers,
        })
    }

    /// The address it listens on (the real port when bound to port 0).
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Starts the workers and serves until `shutdown` completes.
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<()> {
        self.workers.start()?;
        let served = axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|e| KilnError::io(self.address, e));
        self.workers.stop();
        served
    }
}

/// Runs the service until the process is told to stop (Ctrl-C or SIGTERM).
/// Prints `listening on http://HOST:PORT` on stderr once it accepts
/// requests.
pub async fn serve(options: ServeOptions) -> Result<()> {
    let server = Server::bind(options).await?;
    eprintln!("listening on http://{}", server.address());
    server.run(shutdown_signal()).await
}

pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
