//! The model repositories in the lake: every directory with a `LATEST`
//! pointer and `vN/` versions (what `ModelTraining` and `FeaturePipeline`
//! publish), with each version's kind, metrics and lineage.

use crate::datasets::DatasetLake;
use crate::problem::{ApiError, ApiResult};
use futures::StreamExt;
use kiln_engine::artifacts::ArtifactRepo;
use kiln_engine::storage::object_path;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// One version of a model repository.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ModelVersion {
    pub version: u64,
    /// `classifier` (ModelTraining) or `feature-pipeline` (FeaturePipeline).
    pub kind: String,
    /// The estimator's classname, for classifiers.
    pub classname: Option<String>,
    /// Aliases naming this version (`champion` = deployed, `challenger`, …).
    pub aliases: Vec<String>,
    /// Test-set metrics by Spark's names (areaUnderROC, …).
    pub metrics: BTreeMap<String, f64>,
    /// Rows, columns and checksum of the training data.
    pub training_fingerprint: Option<String>,
    pub kiln_version: Option<String>,
    /// Where it came from: `created`, `run_id`, `pipeline`, `task` and
    /// `triggered_by` (the drift that started its training), when recorded.
    #[schema(value_type = Option<Object>)]
    pub lineage: Option<kiln_models::model::Lineage>,
}

/// A model repository.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[schema(example = json!({
    "uri": "file:///data/lake/models/indoor_outdoor/", "latest": 2,
    "versions": [{"version": 2, "kind": "classifier", "classname": "GBTClassifier", "aliases": ["champion"],
        "metrics": {"areaUnderROC": 0.985}, "training_fingerprint": "544511x58:9f1c2e", "kiln_version": "0.1.0"}]
}))]
pub struct ModelRepository {
    pub uri: String,
    /// The deployed version (`champion`).
    pub latest: Option<u64>,
    pub versions: Vec<ModelVersion>,
}

/// The parts of a model artifact a listing shows (the trees are skipped).
#[derive(Deserialize)]
struct ArtifactSummary {
    classname: String,
    #[serde(default)]
    metrics: BTreeMap<String, f64>,
    #[serde(default)]
    training_fingerprint: Option<String>,
    #[serde(default)]
    kiln_version: Option<String>,
}

/// Finds every repository under the lake root (job datasets excluded).
pub async fn repositories(lake: &DatasetLake) -> ApiResult<Vec<ModelRepository>> {
    let root = lake.lake().root().clone();
    let session = lake.session();
    let store = session
        .stores()
        .store_for(&root)
        .map_err(|e| ApiError::internal("opening the lake", e))?;
    let prefix = object_path(&root).map_err(|e| ApiError::internal("listing models", e))?;
    let mut listing = store.list(Some(&prefix));
    let mut bases = Vec::new();
    while let Some(meta) = listing.next().await {
        let meta = meta.map_err(|e| ApiError::internal("listing models", e))?;
        let key = meta.location.as_ref();
        if let Some(dir) = key.strip_suffix("/LATEST")
            && !key.contains("_kiln/service/datasets/")
        {
            let relative = dir
                .strip_prefix(prefix.as_ref())
                .unwrap_or(dir)
                .trim_start_matches('/');
            bases.push(format!("{relative}/"));
        }
    }
    bases.sort();
    let mut out = Vec::new();
    for base in bases {
        let url = lake
            .lake()
            .resolve(&base)
            .map_err(|e| ApiError::internal("resolving a model repository", e))?;
        let repo = ArtifactRepo::open(session, &url)
            .map_err(|e| ApiError::internal("opening a model repository", e))?;
        let latest = repo
            .deployed()
            .await
            .map_err(|e| ApiError::internal("reading the deployed version", e))?;
        let aliases = repo
            .aliases()
            .await
            .map_err(|e| ApiError::internal("reading model aliases", e))?;
        let mut versions = Vec::new();
        for version in repo
            .versions()
            .await
            .map_err(|e| ApiError::internal("listing model versions", e))?
        {
            let mut v = describe(&repo, version).await;
            v.aliases = aliases
                .iter()
                .filter(|(_, a)| **a == version)
                .map(|(name, _)| name.clone())
                .collect();
            versions.push(v);
        }
        out.push(ModelRepository {
            uri: url.to_string(),
            latest,
            versions,
        });
    }
    Ok(out)
}

async fn describe(repo: &ArtifactRepo, version: u64) -> ModelVersion {
    let mut v = ModelVersion {
        version,
        kind: "unknown".into(),
        classname: None,
        aliases: Vec::new(),
        metrics: BTreeMap::new(),
        training_fingerprint: None,
        kiln_version: None,
        lineage: None,
    };
    if let Ok(bytes) = repo.read(version, kiln_models::model::LINEAGE_FILE).await {
        v.lineage = serde_json::from_slice(&bytes)
            .map_err(|e| tracing::warn!("{}: unreadable lineage: {e}", repo.url(version, "")))
            .ok();
    }
    if let Ok(bytes) = repo.read(version, "model.json").await {
        match serde_json::from_slice::<ArtifactSummary>(&bytes) {
            Ok(s) => {
                v.kind = "classifier".into();
                v.classname = Some(s.classname);
                v.metrics = s.metrics;
                v.training_fingerprint = s.training_fingerprint;
                v.kiln_version = s.kiln_version;
            }
            Err(e) => tracing::warn!("{}: unreadable model: {e}", repo.url(version, "model.json")),
        }
    } else if repo.read(version, "pipeline_model.json").await.is_ok() {
        v.kind = "feature-pipeline".into();
    }
    v
}
