//! The one error type of kiln. Each variant says whose fault the failure is,
//! which decides the exit code and whether a retry can help.

use std::fmt;

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
    #[error("I/O error at {location}: {message}")]
    Io { location: String, message: String },

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

    /// A task exceeded its time limit. Retryable.
    #[error("timed out after {seconds:.1}s: {what}")]
    Timeout { what: String, seconds: f64 },
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

    pub fn io(location: impl fmt::Display, message: impl fmt::Display) -> Self {
        KilnError::Io {
            location: location.to_string(),
            message: message.to_string(),
        }
    }

    /// Wraps a DataFusion error, reclassifying the ones that are really
    /// about data, storage or the cluster.
    pub fn execution(context: impl Into<String>, err: datafusion::error::DataFusionError) -> Self {
        use datafusion::error::DataFusionError as D;
        let context = context.into();
        match err.find_root() {
            D::ObjectStore(e) => KilnError::io(&context, e),
            D::IoError(e) => KilnError::io(&context, e),
            D::ParquetError(e) => KilnError::data(&context, format!("invalid Parquet: {e}")),
            D::ArrowError(e, _) if is_data_arrow_error(e) => {
                KilnError::data(&context, e.to_string())
            }
            D::SchemaError(e, _) => KilnError::data(&context, e.to_string()),
            _ => {
                let text = err.to_string();
                if text.contains("transport error") || text.contains("Connection refused") {
                    KilnError::Cluster {
                        message: format!("{context}: {text}"),
                        fix: Some("check that the scheduler and executors are running".into()),
                    }
                } else {
                    KilnError::Execution {
                        context,
                        source: Box::new(err),
                    }
                }
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
                context: if context.is_empty() {
                    what.to_string()
                } else {
                    format!("{what}: {context}")
                },
                source,
            },
            other => other,
        }
    }
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
