//! The one error type of kiln. Each variant says whose fault the failure is,
//! which decides the exit code and whether a retry can help.

use std::fmt;

/// Any error kept as the source of a [`KilnError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A kiln failure, classified by who has to act on it.
#[derive(Debug, thiserror::Error)]
pub enum KilnError {
    /// The user's configuration or command line is wrong. Not retryable.
    #[error("configuration error: {message}{}", fix_suffix(.fix))]
    Config {
        message: String,
        fix: Option<String>,
    },

    /// The input data is wrong (schema, values, corrupt files). Not retryable.
    #[error("data error in {location}: {message}{}", fix_suffix(.fix))]
    Data {
        location: String,
        message: String,
        fix: Option<String>,
    },

    /// Storage or network trouble (object store, file system). Retryable.
    #[error("I/O error at {location}: {source}")]
    Io {
        location: String,
        #[source]
        source: BoxError,
    },

    /// The cluster is unreachable or an executor failed. Retryable.
    #[error("cluster error: {message}{}", fix_suffix(.fix))]
    Cluster {
        message: String,
        fix: Option<String>,
    },

    /// A query failed inside the engine.
    #[error("execution error{}: {source}", context_suffix(.context))]
    Execution {
        context: String,
        #[source]
        source: Box<datafusion::error::DataFusionError>,
    },

    /// The work needed more memory (or disk) than it was given. Not
    /// retryable as is: the fix names the setting to raise.
    #[error("resources exhausted while {context}: {message}{}", fix_suffix(.fix))]
    Resources {
        context: String,
        message: String,
        fix: Option<String>,
    },

    /// A task exceeded its time limit. Retryable.
    #[error("timed out after {seconds:.1}s: {what}")]
    Timeout { what: String, seconds: f64 },

    /// A bug in kiln: a panicked task, a poisoned lock, a value that failed
    /// to serialize. Not the user's fault (exit 1), not retryable.
    #[error(
        "internal error while {context}: {source}\n  this is a bug in kiln; please report it with the command and config that triggered it"
    )]
    Internal {
        context: String,
        #[source]
        source: BoxError,
    },
}

fn fix_suffix(fix: &Option<String>) -> String {
    fix.as_ref()
        .map(|f| format!("\n  fix: {f}"))
        .unwrap_or_default()
}

fn context_suffix(context: &str) -> String {
    if context.is_empty() {
        String::new()
    } else {
        format!(" while {context}")
    }
}

/// Process exit code for a failure that is the user's configuration.
pub const EXIT_CONFIG: i32 = 2;
/// Process exit code for a pipeline that failed while running.
pub const EXIT_RUNTIME: i32 = 1;

impl KilnError {
    pub fn config(message: impl Into<String>) -> Self {
        KilnError::Config {
            message: message.into(),
            fix: None,
        }
    }

    pub fn config_fix(message: impl Into<String>, fix: impl Into<String>) -> Self {
        KilnError::Config {
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    pub fn data(location: impl fmt::Display, message: impl Into<String>) -> Self {
        KilnError::Data {
            location: location.to_string(),
            message: message.into(),
            fix: None,
        }
    }

    pub fn data_fix(
        location: impl fmt::Display,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        KilnError::Data {
            location: location.to_string(),
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    /// Storage trouble at `location`, keeping `source` (an error, or a
    /// message) as the cause.
    pub fn io(location: impl fmt::Display, source: impl Into<BoxError>) -> Self {
        KilnError::Io {
            location: location.to_string(),
            source: source.into(),
        }
    }

    /// A bug in kiln found while doing `context`.
    pub fn internal(context: impl Into<String>, source: impl Into<BoxError>) -> Self {
        KilnError::Internal {
            context: context.into(),
            source: source.into(),
        }
    }

    /// A poisoned lock: another thread panicked while holding it.
    pub fn poisoned(what: &str) -> Self {
        KilnError::internal(
            format!("locking {what}"),
            "the lock is poisoned: another thread panicked while holding it",
        )
    }

    /// Wraps a DataFusion error, reclassifying the ones that are really
    /// about data, storage or the cluster.
    pub fn execution(context: impl Into<String>, err: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as D;
        let context = context.into();
        enum Kind {
            Io,
            Data(String),
            Cluster(String),
            Resources(String),
            Untyped,
        }
        let kind = match err.find_root() {
            D::ResourcesExhausted(message) => Kind::Resources(message.clone()),
            D::ObjectStore(_) | D::IoError(_) => Kind::Io,
            D::ParquetError(e) => Kind::Data(format!("invalid Parquet: {e}")),
            D::ArrowError(e, _) if is_data_arrow_error(e) => Kind::Data(e.to_string()),
            D::SchemaError(e, _) => Kind::Data(e.to_string()),
            D::External(inner) => match inner.downcast_ref::<ballista_core::error::BallistaError>()
            {
                Some(b) if is_cluster_error(b) => Kind::Cluster(b.to_string()),
                _ => Kind::Untyped,
            },
            _ => Kind::Untyped,
        };
        match kind {
            Kind::Io => KilnError::io(&context, err),
            Kind::Data(message) => KilnError::data(&context, message),
            Kind::Cluster(message) => KilnError::Cluster {
                message: format!("{context}: {message}"),
                fix: Some(CLUSTER_FIX.into()),
            },
            Kind::Resources(message) => KilnError::Resources {
                context: if context.is_empty() {
                    "running the query".into()
                } else {
                    context
                },
                message,
                fix: Some(MEMORY_FIX.into()),
            },
            Kind::Untyped => KilnError::from_untyped(context, err),
        }
    }

    /// Ballista's client turns most transport failures into
    /// `DataFusionError::Execution(format!("{e:?}"))` (distributed_query.rs),
    /// so their type is lost; only for those does the text decide.
    fn from_untyped(context: String, err: datafusion::error::DataFusionError) -> Self {
        let text = err.to_string();
        // An executor's shuffle write on a full disk reaches the client as
        // text only.
        if text.contains("No space left on device") {
            return KilnError::Resources {
                context: if context.is_empty() {
                    "running the query".into()
                } else {
                    context
                },
                message: format!("a disk is full: {text}"),
                fix: Some(DISK_FIX.into()),
            };
        }
        let transport = [
            "transport error",
            "tcp connect error",
            "Connection refused",
            "GrpcConnectionError",
            "TonicError",
            // A scheduler or executor that died mid-stream (HTTP/2 body).
            "h2 protocol error",
            "broken pipe",
            "connection reset",
            // tonic's text for Code::Unavailable.
            "The service is currently unavailable",
            // The scheduler gave up on a job whose executors all died.
            "executors were lost",
        ];
        let lower = text.to_lowercase();
        if transport.iter().any(|t| lower.contains(&t.to_lowercase())) {
            KilnError::Cluster {
                message: format!("{context}: {text}"),
                fix: Some(CLUSTER_FIX.into()),
            }
        } else {
            KilnError::Execution {
                context,
                source: Box::new(err),
            }
        }
    }

    /// The process exit code: 2 for the user's configuration, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            KilnError::Config { .. } => EXIT_CONFIG,
            _ => EXIT_RUNTIME,
        }
    }

    /// Whether trying again could succeed: storage, cluster and timeouts.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            KilnError::Io { .. } | KilnError::Cluster { .. } | KilnError::Timeout { .. }
        )
    }

    /// Prefixes the location or context with `what`.
    pub fn context(self, what: impl fmt::Display) -> Self {
        let prefixed = |context: String| {
            if context.is_empty() {
                what.to_string()
            } else {
                format!("{what}: {context}")
            }
        };
        match self {
            KilnError::Config { message, fix } => KilnError::Config {
                message: format!("{what}: {message}"),
                fix,
            },
            KilnError::Data {
                location,
                message,
                fix,
            } => KilnError::Data {
                location: format!("{what}: {location}"),
                message,
                fix,
            },
            KilnError::Execution { context, source } => KilnError::Execution {
                context: prefixed(context),
                source,
            },
            KilnError::Resources {
                context,
                message,
                fix,
            } => KilnError::Resources {
                context: prefixed(context),
                message,
                fix,
            },
            other => other,
        }
    }
}

const MEMORY_FIX: &str = "raise the query memory limit (`--conf datafusion.runtime.memory_limit=4G`; sorts and joins spill to `--conf datafusion.runtime.temp_directory=DIR` within it), or give the task fewer rows or partitions";

const DISK_FIX: &str = "free disk space where executors write shuffle files (`kiln executor --work-dir`), under the lake, or in the temp directory, then run again";

const CLUSTER_FIX: &str = "check that the scheduler and executors are running";

/// Ballista failures of the cluster itself (not of the query): lost
/// connections, gRPC failures, shuffle fetches from a lost executor.
fn is_cluster_error(e: &ballista_core::error::BallistaError) -> bool {
    use ballista_core::error::BallistaError as B;
    matches!(
        e,
        B::TonicError(_) | B::GrpcError(_) | B::GrpcConnectionError(_) | B::FetchFailed(..)
    )
}

fn is_data_arrow_error(e: &arrow::error::ArrowError) -> bool {
    use arrow::error::ArrowError as A;
    matches!(
        e,
        A::CastError(_) | A::ParseError(_) | A::CsvError(_) | A::InvalidArgumentError(_)
    )
}

impl From<datafusion::error::DataFusionError> for KilnError {
    fn from(err: datafusion::error::DataFusionError) -> Self {
        KilnError::execution(String::new(), err)
    }
}

pub type Result<T, E = KilnError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::error::DataFusionError;
    use std::error::Error as _;

    #[test]
    fn internal_errors_say_they_are_bugs_and_exit_1() {
        let e = KilnError::internal("serializing a report", "bad float");
        assert_eq!(e.exit_code(), EXIT_RUNTIME);
        assert!(!e.is_retryable());
        let text = e.to_string();
        assert!(
            text.contains("bug in kiln") && text.contains("serializing a report"),
            "{text}"
        );
        assert_eq!(KilnError::poisoned("the cache").exit_code(), 1);
    }

    #[test]
    fn io_errors_keep_their_source() {
        let cause = std::io::Error::new(std::io::ErrorKind::PermissionDenied, "denied");
        let e = KilnError::io("/lake/x", cause);
        let source = e.source().expect("source kept");
        assert!(source.downcast_ref::<std::io::Error>().is_some());
        assert!(e.is_retryable());
    }

    #[test]
    fn ballista_transport_errors_are_cluster_errors_by_type() {
        let b = ballista_core::error::BallistaError::GrpcConnectionError("no route".into());
        let e = KilnError::execution("running", DataFusionError::External(Box::new(b)));
        assert!(matches!(e, KilnError::Cluster { .. }), "{e:?}");
        assert!(e.is_retryable());
        let b = ballista_core::error::BallistaError::General("plan failed".into());
        let e = KilnError::execution("running", DataFusionError::External(Box::new(b)));
        assert!(matches!(e, KilnError::Execution { .. }), "{e:?}");
    }

    #[test]
    fn a_full_disk_on_an_executor_names_where_to_free_space() {
        // The text Ballista's client hands back for a shuffle write that hit
        // ENOSPC on an executor (the type is lost on the way).
        let text = "Job 038H9A985T000 failed: Job failed due to stage 1 failed: Task failed due to runtime execution error: DataFusionError(Shared(External(ArrowError(IoError(\"No space left on device (os error 28)\"))))";
        let e = KilnError::execution(
            "reading training data",
            DataFusionError::Execution(text.into()),
        );
        assert!(matches!(e, KilnError::Resources { .. }), "{e:?}");
        assert!(!e.is_retryable());
        let shown = e.to_string();
        assert!(
            shown.contains("a disk is full") && shown.contains("kiln executor --work-dir"),
            "{shown}"
        );
    }

    #[test]
    fn exhausted_memory_names_the_setting_to_raise() {
        let e = KilnError::execution(
            "computing the output",
            DataFusionError::ResourcesExhausted(
                "Not enough memory to continue external sort".into(),
            ),
        );
        assert!(matches!(e, KilnError::Resources { .. }), "{e:?}");
        assert!(!e.is_retryable());
        assert_eq!(e.exit_code(), 1);
        let text = e.context("task 'features'").to_string();
        assert!(
            text.contains("task 'features': computing the output"),
            "{text}"
        );
        assert!(
            text.contains("external sort") && text.contains("datafusion.runtime.memory_limit"),
            "{text}"
        );
    }

    /// Texts Ballista produced when a scheduler or executor was killed
    /// mid-job (issue 16's loopback tests).
    #[test]
    fn lost_scheduler_and_executor_texts_are_cluster_errors() {
        for text in [
            "code: 'Unknown error', message: \"h2 protocol error: error reading a body from connection\", source: hyper::Error(Body, Error { kind: Io(Custom { kind: BrokenPipe, error: \"stream closed because of a broken pipe\" }) })",
            "Stage 8 has failed 4 times, most recent failure reason: \"Error connecting to Ballista scheduler or executor at http://127.0.0.1:51061: tonic::transport::Error(Transport, ConnectError(ConnectError(\\\"tcp connect error\\\"",
            "Job 038H5 failed: all executors were lost and no executor re-registered within 180s",
        ] {
            let e = KilnError::execution("running", DataFusionError::Execution(text.into()));
            assert!(matches!(e, KilnError::Cluster { .. }), "{text}: {e:?}");
            assert!(e.is_retryable());
        }
        let e = KilnError::execution(
            "running",
            DataFusionError::Execution("Divide by zero error".into()),
        );
        assert!(!e.is_retryable());
    }
}
