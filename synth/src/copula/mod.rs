//! Reproduction with a Gaussian copula: per-column marginals (empirical
//! quantiles, exact frequencies of categories and of numeric columns with
//! few values, null rates) joined by the correlation matrix of the normal
//! scores. Fitted in two streaming passes ([`fit()`]); sampled in parallel,
//! deterministic for a seed whatever the thread count, optionally under
//! conditions on values and ranges that are met by construction, not by
//! rejection ([`sample`]).

pub mod chow_liu;
pub mod fit;
pub mod linalg;
pub mod marginal;
pub mod normal;
pub mod parametric;
pub mod sample;

#[cfg(test)]
mod tests;

pub use chow_liu::{ChowLiuTree, fit_tree};
pub use fit::{FitProgress, fit};
pub use sample::{Conditions, write_sample};

use crate::frame::SdType;
use kiln_engine::artifacts::ArtifactRepo;
use kiln_engine::{KilnError, KilnSession, Result};
use marginal::Marginal;
pub use parametric::DistributionKind;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use url::Url;

/// Version of the model file; readers refuse newer ones.
pub const FORMAT_VERSION: u32 = 1;

/// Fit settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct CopulaParams {
    /// Seed of the draws inside probability masses (the normal scores of
    /// categories, repeated values and missing values).
    pub seed: u64,
    /// Rows in the uniform sample the quantiles come from.
    pub sample_rows: usize,
    /// Quantiles kept per continuous column.
    pub quantiles: usize,
    /// A numeric column with at most this many distinct values keeps them
    /// exactly, with their frequencies.
    pub discrete_values: usize,
    /// More distinct values than this in a text column is an error (a key
    /// should be declared `id`).
    pub max_categories: usize,
    /// Column types that differ from the inferred ones.
    pub types: BTreeMap<String, SdType>,
    /// Columns not modelled (they are absent from samples).
    pub ignore: Vec<String>,
    /// How continuous columns are modelled: `empirical` quantiles (the
    /// default), a parametric fit (`norm`, `truncnorm`, `uniform`,
    /// `lognorm`), or `auto`, the fit closest to the data by the KS
    /// statistic. SDV's parameter of the same name.
    pub default_distribution: DistributionKind,
    /// The same per column, overriding the default.
    pub numerical_distributions: BTreeMap<String, DistributionKind>,
}

impl Default for CopulaParams {
    fn default() -> Self {
        CopulaParams {
            seed: 0,
            sample_rows: 100_000,
            quantiles: 1001,
            discrete_values: 32,
            max_categories: 10_000,
            types: BTreeMap::new(),
            ignore: Vec::new(),
            default_distribution: DistributionKind::Empirical,
            numerical_distributions: BTreeMap::new(),
        }
    }
}

impl CopulaParams {
    pub fn check(&self) -> Result<()> {
        let positive = [
            ("sample_rows", self.sample_rows),
            ("quantiles", self.quantiles),
            ("max_categories", self.max_categories),
        ];
        for (name, v) in positive {
            if v < 2 {
                return Err(KilnError::config_fix(
                    format!("copula parameter {name} is {v}"),
                    format!("set {name} to at least 2"),
                ));
            }
        }
        Ok(())
    }
}

/// One modelled column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CopulaColumn {
    pub name: String,
    /// The source column's Arrow type (`DataType`'s display form), which
    /// samples keep.
    pub data_type: String,
    pub sdtype: SdType,
    /// Samples are rounded.
    pub integer: bool,
    /// `Null` for keys (sampled as unique sequence numbers).
    pub marginal: Marginal,
}

/// Where the model came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceInfo {
    pub uri: String,
    pub rows: u64,
    /// Order-independent hash of the table's content.
    pub fingerprint: String,
}

/// A fitted Gaussian copula (`model.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GaussianCopula {
    pub format_version: u32,
    /// `gaussian_copula`.
    pub kind: String,
    pub kiln_version: String,
    pub columns: Vec<CopulaColumn>,
    /// The columns (indices) that are dimensions of the copula: not keys,
    /// not constant.
    pub dimensions: Vec<usize>,
    /// Correlation of the dimensions' normal scores, row-major.
    pub correlation: Vec<f64>,
    /// Shrinkage towards the identity that made the correlation positive
    /// definite (0 for most data; > 0 when columns are collinear).
    pub shrinkage: f64,
    pub source: SourceInfo,
    pub params: CopulaParams,
}

impl GaussianCopula {
    pub fn to_json(&self) -> Result<Vec<u8>> {
        serde_json::to_vec_pretty(self).map_err(|e| KilnError::internal("serializing the model", e))
    }

    pub fn from_json(bytes: &[u8], location: &str) -> Result<GaussianCopula> {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
            KilnError::data(location, format!("not a kiln reproduction model: {e}"))
        })?;
        match value.get("kind").and_then(|k| k.as_str()) {
            Some("gaussian_copula") => {}
            other => {
                return Err(KilnError::data(
                    location,
                    format!("model kind {other:?} is not gaussian_copula or chow_liu"),
                ));
            }
        }
        let model: GaussianCopula = serde_json::from_value(value).map_err(|e| {
            KilnError::data(location, format!("not a valid Gaussian copula model: {e}"))
        })?;
        if model.format_version > FORMAT_VERSION {
            return Err(KilnError::data_fix(
                location,
                format!(
                    "model format {} is newer than this kiln reads ({FORMAT_VERSION})",
                    model.format_version
                ),
                "upgrade kiln",
            ));
        }
        let d = model.dimensions.len();
        if model.correlation.len() != d * d
            || model.dimensions.iter().any(|&c| c >= model.columns.len())
        {
            return Err(KilnError::data(
                location,
                "the correlation matrix does not match the columns",
            ));
        }
        Ok(model)
    }
}

/// A fitted reproduction model of either kind.
#[derive(Debug, Clone, PartialEq)]
pub enum Reproduction {
    GaussianCopula(GaussianCopula),
    ChowLiu(ChowLiuTree),
}

impl Reproduction {
    pub fn columns(&self) -> &[CopulaColumn] {
        match self {
            Reproduction::GaussianCopula(m) => &m.columns,
            Reproduction::ChowLiu(m) => &m.columns,
        }
    }

    /// The modelled columns that vary (indices into [`Self::columns`]).
    pub fn dimensions(&self) -> &[usize] {
        match self {
            Reproduction::GaussianCopula(m) => &m.dimensions,
            Reproduction::ChowLiu(m) => &m.dimensions,
        }
    }

    pub fn source(&self) -> &SourceInfo {
        match self {
            Reproduction::GaussianCopula(m) => &m.source,
            Reproduction::ChowLiu(m) => &m.source,
        }
    }

    /// `gaussian_copula` or `chow_liu`.
    pub fn kind(&self) -> &str {
        match self {
            Reproduction::GaussianCopula(m) => &m.kind,
            Reproduction::ChowLiu(m) => &m.kind,
        }
    }

    pub fn to_json(&self) -> Result<Vec<u8>> {
        match self {
            Reproduction::GaussianCopula(m) => m.to_json(),
            Reproduction::ChowLiu(m) => serde_json::to_vec_pretty(m)
                .map_err(|e| KilnError::internal("serializing the model", e)),
        }
    }

    /// Reads a model file of either kind, refusing others with the reason.
    pub fn from_json(bytes: &[u8], location: &str) -> Result<Reproduction> {
        let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
            KilnError::data(location, format!("not a kiln reproduction model: {e}"))
        })?;
        match value.get("kind").and_then(|k| k.as_str()) {
            Some("chow_liu") => {
                let tree: ChowLiuTree = serde_json::from_value(value).map_err(|e| {
                    KilnError::data(location, format!("not a valid Chow-Liu model: {e}"))
                })?;
                let d = tree.dimensions.len();
                if tree.format_version > FORMAT_VERSION
                    || tree.edges.len() != d
                    || tree.tables.len() != d
                    || tree.parent.len() != d
                    || tree.order.len() != d
                {
                    return Err(KilnError::data(
                        location,
                        "the tree does not match its columns",
                    ));
                }
                Ok(Reproduction::ChowLiu(tree))
            }
            _ => GaussianCopula::from_json(bytes, location).map(Reproduction::GaussianCopula),
        }
    }
}

/// The file of a model in its repository version.
pub const MODEL_FILE: &str = "model.json";

/// Publishes `model` as the next version of the repository at `base`.
pub async fn publish_model(session: &KilnSession, base: &Url, model: &Reproduction) -> Result<u64> {
    let repo = ArtifactRepo::open(session, base)?;
    repo.publish(&[(MODEL_FILE, model.to_json()?)]).await
}

/// Reads a version (default: the latest) of the repository at `base`.
pub async fn load_model(
    session: &KilnSession,
    base: &Url,
    version: Option<u64>,
) -> Result<(Reproduction, u64)> {
    let repo = ArtifactRepo::open(session, base)?;
    let version = match version {
        Some(v) => v,
        None => repo.latest().await?,
    };
    let bytes = repo.read(version, MODEL_FILE).await?;
    let model = Reproduction::from_json(&bytes, &repo.url(version, MODEL_FILE))?;
    Ok((model, version))
}
