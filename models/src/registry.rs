//! The model registry over a repository of [`ModelArtifact`] versions:
//! what `kiln models list|show|diff` print. Pointers (the deployed
//! `champion`, other aliases, rollback) are [`ArtifactRepo`]'s.

use crate::drift::PROFILE_FILE;
use crate::model::{LINEAGE_FILE, Lineage, MODEL_FORMAT_VERSION};
use kiln_engine::artifacts::{ArtifactRepo, CHAMPION, VersionRef};
use kiln_engine::{KilnError, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The model file of a version.
pub const MODEL_FILE: &str = "model.json";

/// One version as a listing shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VersionSummary {
    pub version: u64,
    /// Aliases naming it (`champion` = deployed).
    pub aliases: Vec<String>,
    pub classname: String,
    /// Test-set metrics by Spark's names.
    pub metrics: BTreeMap<String, f64>,
    pub params: serde_json::Value,
    /// RFC 3339: when it was trained (or, for older artifacts, written).
    pub created: Option<String>,
    pub training_fingerprint: String,
    pub feature_pipeline: Option<crate::model::PipelineRef>,
    pub lineage: Lineage,
    pub kiln_version: String,
    /// Whether it has a reference profile for drift monitoring.
    pub has_profile: bool,
}

/// The parts of a model artifact a listing shows (the trees are skipped).
#[derive(Deserialize)]
struct ArtifactHead {
    #[serde(default)]
    format_version: u32,
    classname: String,
    #[serde(default)]
    params: serde_json::Value,
    #[serde(default)]
    metrics: BTreeMap<String, f64>,
    #[serde(default)]
    training_fingerprint: String,
    #[serde(default)]
    feature_pipeline: Option<crate::model::PipelineRef>,
    #[serde(default)]
    kiln_version: String,
}

/// Every version of a repository, oldest first.
pub async fn list(repo: &ArtifactRepo) -> Result<Vec<VersionSummary>> {
    let versions = repo.versions().await?;
    if versions.is_empty() {
        return Err(KilnError::config_fix(
            format!("no model versions under {}", repo.base()),
            "check the repository path (path_model_repository of the training task)",
        ));
    }
    let aliases = repo.aliases().await?;
    let mut out = Vec::with_capacity(versions.len());
    for v in versions {
        out.push(summary(repo, v, &aliases).await?);
    }
    Ok(out)
}

/// One version, named by number or alias.
pub async fn show(repo: &ArtifactRepo, reference: &VersionRef) -> Result<VersionSummary> {
    let v = repo.resolve(reference).await?;
    summary(repo, v, &repo.aliases().await?).await
}

async fn summary(
    repo: &ArtifactRepo,
    version: u64,
    aliases: &BTreeMap<String, u64>,
) -> Result<VersionSummary> {
    let bytes = repo.read(version, MODEL_FILE).await?;
    let location = repo.url(version, MODEL_FILE);
    let head: ArtifactHead = serde_json::from_slice(&bytes)
        .map_err(|e| KilnError::data(&location, format!("not a model artifact: {e}")))?;
    if head.format_version != MODEL_FORMAT_VERSION {
        return Err(KilnError::data(
            &location,
            format!(
                "model artifact format version {} is not the one this kiln reads ({MODEL_FORMAT_VERSION})",
                head.format_version
            ),
        ));
    }
    let files = repo.files(version).await?;
    let lineage: Lineage = if files.iter().any(|f| f.ends_with(LINEAGE_FILE)) {
        let bytes = repo.read(version, LINEAGE_FILE).await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            KilnError::data(
                repo.url(version, LINEAGE_FILE),
                format!("invalid lineage: {e}"),
            )
        })?
    } else {
        Lineage::default()
    };
    let created = match &lineage.created {
        Some(c) => Some(c.clone()),
        None => repo.created(version).await?.map(|t| t.to_rfc3339()),
    };
    Ok(VersionSummary {
        version,
        aliases: aliases
            .iter()
            .filter(|(_, v)| **v == version)
            .map(|(a, _)| a.clone())
            .collect(),
        classname: head.classname,
        metrics: head.metrics,
        params: head.params,
        created,
        training_fingerprint: head.training_fingerprint,
        feature_pipeline: head.feature_pipeline,
        lineage,
        kiln_version: head.kiln_version,
        has_profile: files.iter().any(|f| f.ends_with(PROFILE_FILE)),
    })
}

/// One difference between two versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Difference {
    /// `metrics.areaUnderROC`, `params.maxDepth`, `classname`, …
    pub field: String,
    pub a: serde_json::Value,
    pub b: serde_json::Value,
}

/// What differs between two versions: estimator, params, metrics, data,
/// features and lineage (equal fields are left out).
pub fn diff(a: &VersionSummary, b: &VersionSummary) -> Vec<Difference> {
    let mut out = Vec::new();
    let mut push = |field: String, x: serde_json::Value, y: serde_json::Value| {
        if x != y {
            out.push(Difference { field, a: x, b: y });
        }
    };
    use serde_json::json;
    push("classname".into(), json!(a.classname), json!(b.classname));
    let keys = |m: &serde_json::Value| -> Vec<String> {
        m.as_object()
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    let mut params: Vec<String> = keys(&a.params);
    params.extend(keys(&b.params));
    params.sort();
    params.dedup();
    for k in params {
        push(
            format!("params.{k}"),
            a.params.get(&k).cloned().unwrap_or_default(),
            b.params.get(&k).cloned().unwrap_or_default(),
        );
    }
    let mut metrics: Vec<&String> = a.metrics.keys().chain(b.metrics.keys()).collect();
    metrics.sort();
    metrics.dedup();
    for k in metrics {
        push(
            format!("metrics.{k}"),
            json!(a.metrics.get(k)),
            json!(b.metrics.get(k)),
        );
    }
    push(
        "training_fingerprint".into(),
        json!(a.training_fingerprint),
        json!(b.training_fingerprint),
    );
    push(
        "feature_pipeline".into(),
        json!(a.feature_pipeline),
        json!(b.feature_pipeline),
    );
    push("lineage".into(), json!(a.lineage), json!(b.lineage));
    push("aliases".into(), json!(a.aliases), json!(b.aliases));
    out
}

/// Whether `summary` is the deployed version.
pub fn is_deployed(summary: &VersionSummary) -> bool {
    summary.aliases.iter().any(|a| a == CHAMPION)
}
