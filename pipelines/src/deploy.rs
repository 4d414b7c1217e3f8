//! Kubernetes objects for pipelines, generated from their configs so that a
//! schedule lives in one place: a ConfigMap holding the config files, and a
//! CronJob per scheduled pipeline (or a one-off Job) whose pod runs
//! `kiln submit` against the cluster's scheduler.
//!
//! kiln's schedule semantics map onto the CronJob's: `concurrency_policy`
//! forbid / allow / replace is `concurrencyPolicy`, `schedule_timezone` is
//! `timeZone`, and `catchup: false` is a short `startingDeadlineSeconds`
//! (a start missed by more than a minute is skipped; with `catchup: true`
//! Kubernetes starts the most recent missed run).

use crate::config::ConcurrencyPolicy;
use crate::schedule::Scheduled;
use kiln_engine::{KilnError, Result};
use serde_json::{Value, json};
use std::path::Path;

/// Where the pods run and what they reach.
#[derive(Debug, Clone)]
pub struct PodOptions {
    /// The kiln image, e.g. `myregistry.azurecr.io/kiln:0.1.0`.
    pub image: String,
    /// The `--master` of `kiln submit`.
    pub master: String,
    pub namespace: String,
    /// The service account (workload identity for the lake).
    pub service_account: String,
    /// A Secret whose keys become the pod's environment (lake credentials),
    /// for clusters without workload identity.
    pub lake_secret: Option<String>,
    /// The lake the runs use (`--conf kiln.storage.root=`), overriding the
    /// configs' `storage.root`.
    pub lake: Option<String>,
}

/// Mount point of the pipeline ConfigMap in the pods.
const CONFIG_DIR: &str = "/etc/kiln/pipelines";
/// Seconds a start may be late before it is skipped when `catchup` is off.
const NO_CATCHUP_DEADLINE_SECONDS: u64 = 60;

/// A Kubernetes object name from a pipeline name: lower case, `_` and other
/// characters to `-`, at most `max` characters (52 for CronJobs, whose Jobs
/// add a suffix).
fn object_name(pipeline: &str, max: usize) -> Result<String> {
    let mut name: String = pipeline
        .to_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    name.truncate(max);
    let name = name.trim_matches('-').to_string();
    if name.is_empty() {
        return Err(KilnError::config_fix(
            format!("pipeline name '{pipeline}' gives no valid Kubernetes name"),
            "use letters and digits in the pipeline's `name`",
        ));
    }
    Ok(name)
}

fn file_name(path: &Path) -> Result<String> {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| KilnError::config(format!("{} is not a file", path.display())))
}

/// The ConfigMap with every config file, keyed by file name.
fn config_map(configs: &[&Path], options: &PodOptions) -> Result<Value> {
    let mut data = serde_json::Map::new();
    for path in configs {
        let text = std::fs::read_to_string(path).map_err(|e| {
            KilnError::config_fix(
                format!("cannot read {}: {e}", path.display()),
                "check the path",
            )
        })?;
        let key = file_name(path)?;
        if data.insert(key.clone(), Value::String(text)).is_some() {
            return Err(KilnError::config_fix(
                format!("two configs are named {key}"),
                "give every pipeline config a distinct file name",
            ));
        }
    }
    Ok(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "kiln-pipelines",
            "namespace": options.namespace,
            "labels": labels("pipelines"),
        },
        "data": data,
    }))
}

fn labels(component: &str) -> Value {
    json!({
        "app.kubernetes.io/name": "kiln",
        "app.kubernetes.io/component": component,
    })
}

/// The Job spec that runs `kiln submit` on one config file.
fn job_spec(config_file: &str, pipeline: &str, options: &PodOptions) -> Value {
    let mut args = vec![
        "submit".to_string(),
        "--master".into(),
        options.master.clone(),
        "--log-format".into(),
        "json".into(),
    ];
    if let Some(lake) = &options.lake {
        args.extend(["--conf".into(), format!("kiln.storage.root={lake}")]);
    }
    args.push(format!("{CONFIG_DIR}/{config_file}"));
    let mut container = json!({
        "name": "submit",
        "image": options.image,
        "imagePullPolicy": "Always",
        // Relative paths in configs (rule files) resolve against the
        // image's copy of the repository's configs/.
        "workingDir": "/opt/kiln",
        "args": args,
        "env": [{ "name": "KILN_HOME", "value": "/var/lib/kiln" }],
        "resources": {
            "requests": { "cpu": "500m", "memory": "1Gi" },
            "limits": { "cpu": "2", "memory": "4Gi" },
        },
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "capabilities": { "drop": ["ALL"] },
        },
        "volumeMounts": [
            { "name": "pipelines", "mountPath": CONFIG_DIR, "readOnly": true },
            { "name": "home", "mountPath": "/var/lib/kiln" },
            // The root file system is read-only; DataFusion spills here.
            { "name": "tmp", "mountPath": "/tmp" },
        ],
    });
    if let Some(secret) = &options.lake_secret {
        container["envFrom"] = json!([{ "secretRef": { "name": secret } }]);
    }
    json!({
        // kiln retries its own tasks and resumes runs; a pod restart would
        // start the whole pipeline again.
        "backoffLimit": 0,
        "ttlSecondsAfterFinished": 86_400,
        "template": {
            "metadata": {
                "labels": {
                    "app.kubernetes.io/name": "kiln",
                    "app.kubernetes.io/component": "submit",
                    "kiln/pipeline": object_name(pipeline, 63).unwrap_or_default(),
                    "azure.workload.identity/use": "true",
                },
            },
            "spec": {
                "serviceAccountName": options.service_account,
                "automountServiceAccountToken": false,
                "restartPolicy": "Never",
                "securityContext": {
                    "runAsNonRoot": true,
                    "runAsUser": 10001,
                    "runAsGroup": 10001,
                    "seccompProfile": { "type": "RuntimeDefault" },
                },
                "containers": [container],
                "volumes": [
                    { "name": "pipelines", "configMap": { "name": "kiln-pipelines" } },
                    { "name": "home", "emptyDir": { "sizeLimit": "1Gi" } },
                    { "name": "tmp", "emptyDir": { "sizeLimit": "20Gi" } },
                ],
            },
        },
    })
}

/// A CronJob for one scheduled pipeline.
fn cron_job(s: &Scheduled, options: &PodOptions) -> Result<Value> {
    if s.cron.has_seconds() {
        return Err(KilnError::config_fix(
            format!(
                "{}: schedule '{}' has a seconds field, which Kubernetes CronJobs cannot express",
                s.config_path.display(),
                s.expression
            ),
            "use 5 fields (minute hour day month weekday) or @hourly/@daily/@weekly",
        ));
    }
    let mut spec = json!({
        "schedule": s.expression,
        "timeZone": s.time_zone,
        "concurrencyPolicy": match s.policy {
            ConcurrencyPolicy::Forbid => "Forbid",
            ConcurrencyPolicy::Allow => "Allow",
            ConcurrencyPolicy::Replace => "Replace",
        },
        "successfulJobsHistoryLimit": 3,
        "failedJobsHistoryLimit": 3,
        "jobTemplate": { "spec": job_spec(&file_name(&s.config_path)?, &s.name, options) },
    });
    if !s.catchup {
        spec["startingDeadlineSeconds"] = json!(NO_CATCHUP_DEADLINE_SECONDS);
    }
    Ok(json!({
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {
            "name": object_name(&s.name, 52)?,
            "namespace": options.namespace,
            "labels": labels("schedule"),
        },
        "spec": spec,
    }))
}

fn to_yaml(objects: &[Value]) -> Result<String> {
    let mut out = String::new();
    for o in objects {
        let text = serde_yaml_ng::to_string(o)
            .map_err(|e| KilnError::internal("writing Kubernetes YAML", e))?;
        out.push_str("---\n");
        out.push_str(&text);
    }
    Ok(out)
}

/// The ConfigMap and one CronJob per scheduled pipeline, as YAML documents.
pub fn cron_jobs(scheduled: &[Scheduled], options: &PodOptions) -> Result<String> {
    let paths: Vec<&Path> = scheduled.iter().map(|s| s.config_path.as_path()).collect();
    let mut objects = vec![config_map(&paths, options)?];
    for s in scheduled {
        objects.push(cron_job(s, options)?);
    }
    to_yaml(&objects)
}

/// The ConfigMap and a Job that submits `config` once, as YAML documents.
pub fn job(config: &Path, options: &PodOptions) -> Result<String> {
    let loaded = crate::LoadedConfig::from_file(&config.to_string_lossy())?;
    crate::runner::plan(&loaded)?;
    let pipeline = &loaded.config.name;
    let job = json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            // Jobs are immutable: submit again with `kubectl replace --force`.
            "name": format!("{}-submit", object_name(pipeline, 52)?),
            "namespace": options.namespace,
            "labels": labels("submit"),
        },
        "spec": job_spec(&file_name(config)?, pipeline, options),
    });
    to_yaml(&[config_map(&[config], options)?, job])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options() -> PodOptions {
        PodOptions {
            image: "registry.example/kiln:0.1.0".into(),
            master: "df://kiln-scheduler:50050".into(),
            namespace: "kiln".into(),
            service_account: "kiln".into(),
            lake_secret: None,
            lake: None,
        }
    }

    fn scheduled(dir: &Path, schedule: &str, extra: &str) -> Result<Vec<Scheduled>> {
        let path = dir.join("nightly.yaml");
        std::fs::write(
            &path,
            format!(
                "name: Nightly_Scores\nschedule: \"{schedule}\"\n{extra}storage:\n  root: file:///tmp/lake\nprocessing_tasks:\n  - name: hello\n    classname: ShellCommand\n    initialization_parameters:\n      command: [\"true\"]\n"
            ),
        )
        .map_err(|e| KilnError::io("test config", e))?;
        crate::schedule::load_scheduled(&[path.display().to_string()])
    }

    #[test]
    fn schedule_policy_zone_and_catchup_carry_over() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("kiln-deploy-{}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| KilnError::io("temp dir", e))?;
        let s = scheduled(
            &dir,
            "30 2 * * 1-5",
            "schedule_timezone: Europe/Berlin\nconcurrency_policy: replace\n",
        )?;
        let yaml = cron_jobs(&s, &options())?;
        let docs: Vec<Value> = yaml
            .split("---\n")
            .filter(|d| !d.trim().is_empty())
            .map(|d| serde_yaml_ng::from_str(d).map_err(|e| KilnError::internal("yaml", e)))
            .collect::<Result<_>>()?;
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["kind"], "ConfigMap");
        assert!(
            docs[0]["data"]["nightly.yaml"]
                .as_str()
                .is_some_and(|t| t.contains("30 2 * * 1-5"))
        );
        let cron = &docs[1];
        assert_eq!(cron["metadata"]["name"], "nightly-scores");
        assert_eq!(cron["spec"]["schedule"], "30 2 * * 1-5");
        assert_eq!(cron["spec"]["timeZone"], "Europe/Berlin");
        assert_eq!(cron["spec"]["concurrencyPolicy"], "Replace");
        assert_eq!(cron["spec"]["startingDeadlineSeconds"], 60);
        let pod = &cron["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(
            pod["containers"][0]["args"],
            json!([
                "submit",
                "--master",
                "df://kiln-scheduler:50050",
                "--log-format",
                "json",
                "/etc/kiln/pipelines/nightly.yaml"
            ])
        );
        // catchup: true leaves Kubernetes to start the latest missed run.
        let s = scheduled(&dir, "@daily", "catchup: true\n")?;
        let yaml = cron_jobs(&s, &options())?;
        assert!(!yaml.contains("startingDeadlineSeconds"), "{yaml}");
        // Seconds cannot be expressed.
        let s = scheduled(&dir, "*/10 * * * * *", "")?;
        let err = cron_jobs(&s, &options()).err().map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("seconds field")),
            "{err:?}"
        );
        std::fs::remove_dir_all(&dir).map_err(|e| KilnError::io("temp dir", e))?;
        Ok(())
    }
}
