//! The YAML pipeline format: strict parsing with file:line:column errors,
//! `${ENV_VAR}` interpolation, and refusal of literal credentials.

use kiln_engine::{KilnError, Result};
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// A pipeline: named tasks over one lake.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PipelineConfig {
    /// Pipeline name, used in run history and output paths.
    pub name: String,
    pub storage: StorageConfig,
    /// The tasks; `depends_on` orders them.
    pub processing_tasks: Vec<TaskConfig>,
    /// Cron expression for `kiln schedule` ("0 2 * * *", "@daily", or 6 fields with seconds).
    #[serde(default)]
    pub schedule: Option<String>,
    /// IANA time zone of the schedule (default UTC).
    #[serde(default)]
    pub schedule_timezone: Option<String>,
    /// forbid (default) | allow | replace, when a run is due while the last one runs.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// Start one run at scheduler start-up if a due time passed since the last run.
    #[serde(default)]
    pub catchup: bool,
    /// Hooks called when a run ends.
    #[serde(default)]
    pub notify: NotifyConfig,
}

/// What to do when a run is due while the previous one still runs.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum ConcurrencyPolicy {
    /// Skip the new run.
    #[default]
    Forbid,
    /// Start it anyway.
    Allow,
    /// Stop the running one and start the new run.
    Replace,
}

/// Notification hooks by outcome.
#[derive(Debug, Clone, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NotifyConfig {
    #[serde(default)]
    pub on_success: Vec<Hook>,
    #[serde(default)]
    pub on_failure: Vec<Hook>,
}

/// A notification: a JSON POST of the run's outcome to a URL, or a shell
/// command with the outcome on stdin and in `KILN_RUN_ID`, `KILN_PIPELINE`,
/// `KILN_RUN_STATE` and `KILN_RUN_ERROR`.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(untagged, deny_unknown_fields)]
pub enum Hook {
    Webhook { webhook: String },
    Command { command: String },
}

/// Where the lake lives.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StorageConfig {
    /// `file://./lake`, `/abs/path`, `s3://bucket/prefix`, `az://container/prefix`,
    /// `abfss://container@account.dfs.core.windows.net/prefix`.
    pub root: String,
}

/// One task: a `classname` and its parameters.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TaskConfig {
    pub name: String,
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// One of the task classes listed by `kiln schema`.
    pub classname: String,
    #[serde(default)]
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub initialization_parameters: serde_yaml_ng::Mapping,
    #[serde(default)]
    #[schemars(with = "serde_json::Map<String, serde_json::Value>")]
    pub transformation_parameters: serde_yaml_ng::Mapping,
    /// How many times a failed attempt is retried (storage, cluster and
    /// timeout failures only; configuration and data errors are not retried).
    #[serde(default)]
    pub retries: u32,
    /// Seconds before the first retry.
    #[serde(default = "default_retry_delay")]
    pub retry_delay: f64,
    /// Double the delay after every retry (up to `max_retry_delay`).
    #[serde(default = "yes")]
    pub retry_exponential_backoff: bool,
    #[serde(default = "default_max_retry_delay")]
    pub max_retry_delay: f64,
    /// Seconds after which an attempt is abandoned.
    #[serde(default)]
    pub execution_timeout: Option<f64>,
}

fn default_retry_delay() -> f64 {
    1.0
}

fn yes() -> bool {
    true
}

fn default_max_retry_delay() -> f64 {
    300.0
}

/// A parsed config, with its source kept for error locations.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: PipelineConfig,
    pub file: String,
    /// The text parsed: `source` with `${VAR}` interpolated.
    pub text: String,
    /// The file as written, before interpolation: what a run records in
    /// the lake, so values taken from the environment are not copied there.
    pub source: String,
}

impl LoadedConfig {
    /// Reads and parses a config file.
    pub fn from_file(path: &str) -> Result<Self> {
        let raw = std::fs::read_to_string(path).map_err(|e| {
            KilnError::config_fix(
                format!("cannot read config {path}: {e}"),
                "check the file path",
            )
        })?;
        Self::from_text(&raw, path)
    }

    pub fn from_text(raw: &str, file: &str) -> Result<Self> {
        kiln_engine::nesting::check_depth(raw, file, kiln_engine::nesting::MAX_DEPTH)?;
        reject_literal_credentials(raw, file)?;
        let text = interpolate_env(raw, file)?;
        let config: PipelineConfig =
            serde_yaml_ng::from_str(&text).map_err(|e| yaml_error(&e, file))?;
        Ok(LoadedConfig {
            config,
            file: file.to_string(),
            text,
            source: raw.to_string(),
        })
    }

    /// The `line:column` where `key:` first appears inside task `task`.
    pub fn locate(&self, task: &str, key: &str) -> String {
        let lines: Vec<&str> = self.text.lines().collect();
        let start = lines
            .iter()
            .position(|l| {
                let t = l.trim_start().trim_start_matches("- ").trim_start();
                t.strip_prefix("name:")
                    .map(|v| v.trim().trim_matches(['"', '\'']))
                    == Some(task)
            })
            .unwrap_or(0);
        for (i, line) in lines.iter().enumerate().skip(start) {
            if i > start
                && line.trim_start().starts_with("- name:")
                && indent(line) <= indent(lines[start])
            {
                break;
            }
            if let Some(col) = find_key(line, key) {
                return format!("{}:{}:{}", self.file, i + 1, col + 1);
            }
        }
        format!("{}:{}:1", self.file, start + 1)
    }

    /// `file:line:column: task 'NAME'` for an error about `key` in `task`.
    pub fn at(&self, task: &TaskConfig, key: &str) -> String {
        format!("{}: task '{}'", self.locate(&task.name, key), task.name)
    }

    /// Both parameter blocks of a task, typed.
    pub fn task_params<I: DeserializeOwned, O: DeserializeOwned>(
        &self,
        task: &TaskConfig,
    ) -> Result<(I, O)> {
        Ok((
            self.params(
                task,
                "initialization_parameters",
                &task.initialization_parameters,
            )?,
            self.params(
                task,
                "transformation_parameters",
                &task.transformation_parameters,
            )?,
        ))
    }

    /// Deserializes a parameter block into `T`, with locations and suggestions.
    pub fn params<T: DeserializeOwned>(
        &self,
        task: &TaskConfig,
        block: &str,
        value: &serde_yaml_ng::Mapping,
    ) -> Result<T> {
        serde_yaml_ng::from_value(serde_yaml_ng::Value::Mapping(value.clone())).map_err(|e| {
            let message = e.to_string();
            let (key, fix) = unknown_field_hint(&message);
            let location = match &key {
                Some(k) => self.locate(&task.name, k),
                None => self.locate(&task.name, block),
            };
            KilnError::Config {
                message: format!(
                    "{location}: task '{}' ({}): {block}: {}",
                    task.name,
                    task.classname,
                    strip_location(&message)
                ),
                fix,
            }
        })
    }
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

fn find_key(line: &str, key: &str) -> Option<usize> {
    let trimmed = line.trim_start().trim_start_matches("- ").trim_start();
    let offset = line.len() - trimmed.len();
    let t = trimmed.trim_start_matches('{').trim_start();
    if t.starts_with(key) && t[key.len()..].trim_start().starts_with(':') {
        return Some(offset + (trimmed.len() - t.len()));
    }
    // Flow mappings: `{ a: 1, key: 2 }`.
    let pat = format!("{key}:");
    line.find(&format!(" {pat}"))
        .map(|i| i + 1)
        .or_else(|| line.find(&format!("{{{pat}")).map(|i| i + 1))
}

fn strip_location(message: &str) -> &str {
    message.split(" at line ").next().unwrap_or(message)
}

/// For "unknown field `x`, expected one of `a`, `b`" returns `x` and a
/// suggestion of the closest expected name; for "unknown variant `x`, ..."
/// (a value that is not one of a fixed set) only the suggestion.
fn unknown_field_hint(message: &str) -> (Option<String>, Option<String>) {
    let quoted_after = |marker: &str| {
        message
            .split(marker)
            .nth(1)
            .and_then(|r| r.split('`').next())
            .map(str::to_string)
    };
    let expected: Vec<&str> = message
        .split("expected ")
        .nth(1)
        .map(|r| r.split('`').skip(1).step_by(2).collect())
        .unwrap_or_default();
    let closest = |word: &str| suggest(word, &expected).map(|s| format!("did you mean `{s}`?"));
    if let Some(field) = quoted_after("unknown field `") {
        let fix = closest(&field);
        return (Some(field), fix);
    }
    if let Some(variant) = quoted_after("unknown variant `") {
        let fix = closest(&variant).or_else(|| {
            (!expected.is_empty()).then(|| format!("use one of: {}", expected.join(", ")))
        });
        return (None, fix);
    }
    let missing = quoted_after("missing field `");
    (None, missing.map(|m| format!("add `{m}`")))
}

pub use kiln_engine::suggest::closest as suggest;

fn yaml_error(e: &serde_yaml_ng::Error, file: &str) -> KilnError {
    let message = e.to_string();
    let (_, fix) = unknown_field_hint(&message);
    let location = e
        .location()
        .map(|l| format!("{file}:{}:{}", l.line(), l.column()))
        .unwrap_or_else(|| file.to_string());
    KilnError::Config {
        message: format!("{location}: {}", strip_location(&message)),
        fix,
    }
}

const CREDENTIAL_KEYS: &[&str] = &[
    "password",
    "secret",
    "secret_access_key",
    "access_key",
    "account_key",
    "access_key_id",
    "sas_token",
    "token",
    "client_secret",
    "connection_string",
];

/// Refuses credentials written literally in the config.
fn reject_literal_credentials(text: &str, file: &str) -> Result<()> {
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start().trim_start_matches("- ");
        let Some((key, value)) = trimmed.split_once(':') else {
            continue;
        };
        let key_l = key.trim().to_ascii_lowercase();
        let value = value.trim();
        if value.is_empty() || value.starts_with('#') || value.starts_with("${") {
            continue;
        }
        if CREDENTIAL_KEYS
            .iter()
            .any(|k| key_l == *k || key_l.ends_with(&format!("_{k}")))
        {
            let col = line.len() - trimmed.len() + 1;
            return Err(KilnError::config_fix(
                format!(
                    "{file}:{}:{col}: '{}' holds a literal credential; configs are shared and versioned, secrets must not be in them",
                    i + 1,
                    key.trim()
                ),
                format!(
                    "write `{}: ${{MY_ENV_VAR}}`, or rely on the store's standard variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AZURE_STORAGE_ACCOUNT_KEY, ...)",
                    key.trim()
                ),
            ));
        }
    }
    Ok(())
}

/// Replaces `${NAME}` and `${NAME:-default}` with environment values.
fn interpolate_env(text: &str, file: &str) -> Result<String> {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.lines().enumerate() {
        let mut rest = line;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                return Err(KilnError::config(format!(
                    "{file}:{}:{}: unclosed '${{'",
                    i + 1,
                    line.len() - rest.len() + start + 1
                )));
            };
            let expr = &after[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            match (std::env::var(name), default) {
                (Ok(v), _) => out.push_str(&v),
                (Err(_), Some(d)) => out.push_str(d),
                (Err(_), None) => {
                    return Err(KilnError::config_fix(
                        format!(
                            "{file}:{}:{}: environment variable {name} is not set",
                            i + 1,
                            line.len() - rest.len() + start + 1
                        ),
                        format!("export {name}=... or write ${{{name}:-default}}"),
                    ));
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out.push('\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "name: p\nstorage:\n  root: file:///tmp/lake\nprocessing_tasks:\n  - name: extract\n    classname: ExtractorTraining\n    initialization_parameters:\n      path_raw_tables: raw/\n";

    #[test]
    fn parses_a_pipeline() -> Result<()> {
        let loaded = LoadedConfig::from_text(GOOD, "p.yaml")?;
        assert_eq!(
            loaded.config.processing_tasks[0].classname,
            "ExtractorTraining"
        );
        assert_eq!(loaded.locate("extract", "path_raw_tables"), "p.yaml:8:7");
        Ok(())
    }

    #[test]
    fn unknown_top_level_key_names_line_and_suggests() {
        let text = GOOD.replace("processing_tasks", "procesing_tasks");
        let err = LoadedConfig::from_text(&text, "p.yaml").expect_err("typo");
        let msg = err.to_string();
        assert!(msg.contains("p.yaml:4:1"), "{msg}");
        assert!(msg.contains("did you mean `processing_tasks`"), "{msg}");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn literal_credentials_are_refused_and_env_vars_interpolate() {
        let text =
            format!("{GOOD}    transformation_parameters:\n      aws_secret_access_key: abc123\n");
        let msg = LoadedConfig::from_text(&text, "p.yaml")
            .expect_err("secret")
            .to_string();
        assert!(
            msg.contains("p.yaml:10:7") && msg.contains("literal credential"),
            "{msg}"
        );
        let text = GOOD.replace(
            "file:///tmp/lake",
            "${KILN_TEST_UNSET_VAR:-file:///tmp/other}",
        );
        let loaded = LoadedConfig::from_text(&text, "p.yaml").expect("default applies");
        assert_eq!(loaded.config.storage.root, "file:///tmp/other");
        let text = GOOD.replace("file:///tmp/lake", "${KILN_TEST_UNSET_VAR}");
        let msg = LoadedConfig::from_text(&text, "p.yaml")
            .expect_err("unset")
            .to_string();
        assert!(msg.contains("KILN_TEST_UNSET_VAR is not set"), "{msg}");
    }
}
