//! Versioned artifacts in the lake: `<base>/v<N>/<files>` plus a `LATEST`
//! pointer written last, so a reader never sees a half-written version.

use crate::error::{KilnError, Result};
use crate::session::KilnSession;
use crate::storage::object_path;
use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use std::sync::Arc;
use url::Url;

/// A repository of versioned artifacts under one lake prefix.
#[derive(Debug, Clone)]
pub struct ArtifactRepo {
    store: Arc<dyn ObjectStore>,
    base: Url,
    base_path: object_store::path::Path,
}

impl ArtifactRepo {
    pub fn open(session: &KilnSession, base: &Url) -> Result<Self> {
        Ok(ArtifactRepo {
            store: session.stores().store_for(base)?,
            base: base.clone(),
            base_path: object_path(base)?,
        })
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    /// Existing version numbers, ascending.
    pub async fn versions(&self) -> Result<Vec<u64>> {
        let listing = self.store.list_with_delimiter(Some(&self.base_path)).await;
        let listing = match listing {
            Ok(l) => l,
            Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(KilnError::io(&self.base, e)),
        };
        let mut v: Vec<u64> = listing
            .common_prefixes
            .iter()
            .filter_map(|p| {
                p.filename()
                    .and_then(|n| n.strip_prefix('v'))
                    .and_then(|n| n.parse().ok())
            })
            .collect();
        v.sort_unstable();
        Ok(v)
    }

    /// Writes `files` as a new version and points `LATEST` at it.
    pub async fn publish(&self, files: &[(&str, Vec<u8>)]) -> Result<u64> {
        let version = self.versions().await?.last().copied().unwrap_or(0) + 1;
        let dir = self.base_path.clone().join(format!("v{version}"));
        for (name, bytes) in files {
            let path = dir.clone().join(*name);
            self.store
                .put(&path, bytes.clone().into())
                .await
                .map_err(|e| KilnError::io(&path, e))?;
        }
        let latest = self.base_path.clone().join("LATEST");
        self.store
            .put(&latest, format!("v{version}\n").into_bytes().into())
            .await
            .map_err(|e| KilnError::io(&latest, e))?;
        Ok(version)
    }

    /// The version `LATEST` points at.
    pub async fn latest(&self) -> Result<u64> {
        let latest = self.base_path.clone().join("LATEST");
        let bytes = match self.store.get(&latest).await {
            Ok(r) => r.bytes().await.map_err(|e| KilnError::io(&latest, e))?,
            Err(object_store::Error::NotFound { .. }) => {
                return Err(KilnError::config_fix(
                    format!("no artifact has been published under {}", self.base),
                    "run the task that produces it first, or check the path",
                ));
            }
            Err(e) => return Err(KilnError::io(&latest, e)),
        };
        let text = String::from_utf8_lossy(&bytes);
        text.trim()
            .strip_prefix('v')
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                KilnError::data(
                    format!("{}LATEST", self.base),
                    format!("invalid pointer '{}'", text.trim()),
                )
            })
    }

    /// Reads one file of a version.
    pub async fn read(&self, version: u64, name: &str) -> Result<Vec<u8>> {
        let path = self
            .base_path
            .clone()
            .join(format!("v{version}"))
            .clone()
            .join(name);
        match self.store.get(&path).await {
            Ok(r) => Ok(r
                .bytes()
                .await
                .map_err(|e| KilnError::io(&path, e))?
                .to_vec()),
            Err(object_store::Error::NotFound { .. }) => Err(KilnError::config(format!(
                "artifact {}v{version}/{name} does not exist",
                self.base
            ))),
            Err(e) => Err(KilnError::io(&path, e)),
        }
    }

    /// URL of a version's file.
    pub fn url(&self, version: u64, name: &str) -> String {
        format!("{}v{version}/{name}", self.base)
    }

    /// Lists every file of a version.
    pub async fn files(&self, version: u64) -> Result<Vec<String>> {
        let dir = self.base_path.clone().join(format!("v{version}"));
        let mut out = Vec::new();
        let mut listing = self.store.list(Some(&dir));
        while let Some(m) = listing.next().await {
            out.push(m.map_err(|e| KilnError::io(&dir, e))?.location.to_string());
        }
        Ok(out)
    }
}
