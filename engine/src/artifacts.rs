//! Versioned artifacts in the lake: `<base>/v<N>/<files>` plus pointers.
//!
//! - `LATEST` names the **deployed** version (alias `champion`): what a
//!   reader uses by default. It is written after the version's files, so a
//!   reader never sees a half-written version.
//! - `aliases/<name>` names any other version (`challenger`, `staging`, …).
//! - `pointer-log/` records every change of a pointer as its own object
//!   (publish, promote, rollback), so a rollback knows what was deployed
//!   before and the history survives concurrent writers.
//!
//! Every pointer is one object written by one put: readers see the old
//! pointer or the new one, never a half-written one (object stores make a
//! put atomic; the local store writes a temporary file and renames it).

use crate::error::{KilnError, Result};
use crate::session::KilnSession;
use crate::storage::object_path;
use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use url::Url;

/// The alias of the deployed version (the `LATEST` pointer).
pub const CHAMPION: &str = "champion";
const LATEST: &str = "LATEST";
const ALIASES: &str = "aliases";
const POINTER_LOG: &str = "pointer-log";

/// A version named by number, by alias or as the deployed one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum VersionRef {
    Version(u64),
    Alias(String),
}

impl VersionRef {
    /// The deployed version.
    pub fn deployed() -> Self {
        VersionRef::Alias(CHAMPION.into())
    }
}

impl std::str::FromStr for VersionRef {
    type Err = KilnError;

    /// `3`, `v3`, or an alias name.
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if let Ok(v) = s.strip_prefix('v').unwrap_or(s).parse::<u64>() {
            return Ok(VersionRef::Version(v));
        }
        check_alias(s)?;
        Ok(VersionRef::Alias(s.into()))
    }
}

impl std::fmt::Display for VersionRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VersionRef::Version(v) => write!(f, "v{v}"),
            VersionRef::Alias(a) => f.write_str(a),
        }
    }
}

/// Alias names: lower-case letters, digits, `-` and `_`, not a version.
pub fn check_alias(name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        && !name.chars().all(|c| c.is_ascii_digit())
        && name != "latest";
    if valid {
        Ok(())
    } else {
        Err(KilnError::config_fix(
            format!("invalid alias '{name}'"),
            "use lower-case letters, digits, '-' and '_' (e.g. champion, challenger, staging); 'latest' and numbers are reserved",
        ))
    }
}

/// What moved a pointer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PointerAction {
    /// A new version was published and deployed.
    Publish,
    /// An existing version was given the pointer.
    Promote,
    /// The deployed pointer went back.
    Rollback,
}

/// One change of a pointer, as recorded in `pointer-log/`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PointerChange {
    /// `champion` for the deployed pointer, else the alias.
    pub pointer: String,
    pub version: u64,
    pub previous: Option<u64>,
    pub action: PointerAction,
    /// RFC 3339.
    pub at: String,
    #[serde(default)]
    pub reason: String,
}

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

    /// Writes `files` as a new version and deploys it (`LATEST`).
    pub async fn publish(&self, files: &[(&str, Vec<u8>)]) -> Result<u64> {
        let version = self.publish_undeployed(files).await?;
        let previous = self.deployed().await?;
        self.write_pointer(LATEST, version).await?;
        self.log(PointerChange {
            pointer: CHAMPION.into(),
            version,
            previous,
            action: PointerAction::Publish,
            at: now(),
            reason: String::new(),
        })
        .await?;
        Ok(version)
    }

    /// Writes `files` as a new version without moving any pointer.
    pub async fn publish_undeployed(&self, files: &[(&str, Vec<u8>)]) -> Result<u64> {
        let version = self.versions().await?.last().copied().unwrap_or(0) + 1;
        let dir = self.base_path.clone().join(format!("v{version}"));
        for (name, bytes) in files {
            let path = dir.clone().join(*name);
            self.store
                .put(&path, bytes.clone().into())
                .await
                .map_err(|e| KilnError::io(&path, e))?;
        }
        Ok(version)
    }

    /// The deployed version (`LATEST`); an error when none is.
    pub async fn latest(&self) -> Result<u64> {
        self.deployed().await?.ok_or_else(|| {
            KilnError::config_fix(
                format!("no artifact has been published under {}", self.base),
                "run the task that produces it first, or check the path",
            )
        })
    }

    /// The deployed version, if any.
    pub async fn deployed(&self) -> Result<Option<u64>> {
        self.read_pointer(self.base_path.clone().join(LATEST)).await
    }

    /// Every alias with its version; `champion` is the deployed version.
    pub async fn aliases(&self) -> Result<BTreeMap<String, u64>> {
        let mut out = BTreeMap::new();
        if let Some(v) = self.deployed().await? {
            out.insert(CHAMPION.to_string(), v);
        }
        let dir = self.base_path.clone().join(ALIASES);
        let mut listing = self.store.list(Some(&dir));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| KilnError::io(&dir, e))?;
            let Some(name) = meta.location.filename().map(str::to_string) else {
                continue;
            };
            if check_alias(&name).is_err() || name == CHAMPION {
                continue;
            }
            if let Some(v) = self.read_pointer(meta.location).await? {
                out.insert(name, v);
            }
        }
        Ok(out)
    }

    /// The version a reference names; a clear error when it names nothing.
    pub async fn resolve(&self, reference: &VersionRef) -> Result<u64> {
        match reference {
            VersionRef::Version(v) => {
                self.check_exists(*v).await?;
                Ok(*v)
            }
            VersionRef::Alias(a) if a == CHAMPION => self.latest().await,
            VersionRef::Alias(a) => {
                let path = self.base_path.clone().join(ALIASES).join(a.as_str());
                match self.read_pointer(path).await? {
                    Some(v) => Ok(v),
                    None => {
                        let known: Vec<String> = self.aliases().await?.into_keys().collect();
                        Err(KilnError::config_fix(
                            format!("{} has no alias '{a}'", self.base),
                            if known.is_empty() {
                                "no alias is set yet: name a version, or promote one first"
                                    .to_string()
                            } else {
                                format!("known aliases: {}", known.join(", "))
                            },
                        ))
                    }
                }
            }
        }
    }

    /// Fails with the versions that exist when `version` is not one.
    pub async fn check_exists(&self, version: u64) -> Result<()> {
        let versions = self.versions().await?;
        if versions.contains(&version) {
            return Ok(());
        }
        let list: Vec<String> = versions.iter().map(|v| format!("v{v}")).collect();
        Err(KilnError::config_fix(
            format!("version {version} does not exist in {}", self.base),
            if list.is_empty() {
                "nothing has been published there yet".to_string()
            } else {
                format!("existing versions: {}", list.join(", "))
            },
        ))
    }

    /// Points `alias` at an existing version; `champion` deploys it.
    /// Returns the version the alias named before.
    pub async fn promote(&self, version: u64, alias: &str, reason: &str) -> Result<Option<u64>> {
        check_alias(alias)?;
        self.check_exists(version).await?;
        let (file, previous) = if alias == CHAMPION {
            (self.base_path.clone().join(LATEST), self.deployed().await?)
        } else {
            let path = self.base_path.clone().join(ALIASES).join(alias);
            (path.clone(), self.read_pointer(path).await?)
        };
        self.put_pointer(&file, version).await?;
        self.log(PointerChange {
            pointer: alias.into(),
            version,
            previous,
            action: PointerAction::Promote,
            at: now(),
            reason: reason.into(),
        })
        .await?;
        Ok(previous)
    }

    /// Removes an alias (not `champion`); false when it was not set.
    pub async fn remove_alias(&self, alias: &str) -> Result<bool> {
        check_alias(alias)?;
        if alias == CHAMPION {
            return Err(KilnError::config_fix(
                "the champion alias cannot be removed",
                "promote or roll back another version instead",
            ));
        }
        let path = self.base_path.clone().join(ALIASES).join(alias);
        match self.store.delete(&path).await {
            Ok(()) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(KilnError::io(&path, e)),
        }
    }

    /// Deploys `to`, or else the version deployed before the current one
    /// (following the pointer log as a stack: publishes and promotions push,
    /// rollbacks pop). Returns `(from, to)`.
    pub async fn rollback(&self, to: Option<u64>, reason: &str) -> Result<(u64, u64)> {
        let from = self.latest().await?;
        let target = match to {
            Some(v) => {
                self.check_exists(v).await?;
                v
            }
            None => {
                let stack = self.deployment_stack().await?;
                stack
                    .iter()
                    .rev()
                    .find(|v| **v != from)
                    .copied()
                    .ok_or_else(|| {
                        KilnError::config_fix(
                            format!(
                                "{}: v{from} is deployed and nothing was deployed before it",
                                self.base
                            ),
                            "name the version to deploy with --to VERSION",
                        )
                    })?
            }
        };
        self.write_pointer(LATEST, target).await?;
        self.log(PointerChange {
            pointer: CHAMPION.into(),
            version: target,
            previous: Some(from),
            action: PointerAction::Rollback,
            at: now(),
            reason: reason.into(),
        })
        .await?;
        Ok((from, target))
    }

    /// The deployed versions as a stack, oldest first: what a rollback pops.
    /// A repository without a log (older kiln) counts every version up to
    /// the deployed one as deployed in turn.
    async fn deployment_stack(&self) -> Result<Vec<u64>> {
        let log = self.history().await?;
        let mut stack: Vec<u64> = Vec::new();
        let mut logged = false;
        for change in log.iter().filter(|c| c.pointer == CHAMPION) {
            logged = true;
            match change.action {
                PointerAction::Publish | PointerAction::Promote => stack.push(change.version),
                PointerAction::Rollback => {
                    while stack.last().is_some_and(|v| *v != change.version) {
                        stack.pop();
                    }
                    if stack.is_empty() {
                        stack.push(change.version);
                    }
                }
            }
        }
        if !logged && let Some(deployed) = self.deployed().await? {
            stack = self
                .versions()
                .await?
                .into_iter()
                .filter(|v| *v <= deployed)
                .collect();
        }
        let existing = self.versions().await?;
        stack.retain(|v| existing.contains(v));
        Ok(stack)
    }

    /// Every recorded pointer change, oldest first.
    pub async fn history(&self) -> Result<Vec<PointerChange>> {
        let dir = self.base_path.clone().join(POINTER_LOG);
        let mut entries = Vec::new();
        let mut listing = self.store.list(Some(&dir));
        while let Some(meta) = listing.next().await {
            entries.push(meta.map_err(|e| KilnError::io(&dir, e))?.location);
        }
        // Names start with a zero-padded timestamp: name order is time order.
        entries.sort();
        let mut out = Vec::with_capacity(entries.len());
        for path in entries {
            let bytes = self
                .store
                .get(&path)
                .await
                .map_err(|e| KilnError::io(&path, e))?
                .bytes()
                .await
                .map_err(|e| KilnError::io(&path, e))?;
            let change: PointerChange = serde_json::from_slice(&bytes)
                .map_err(|e| KilnError::data(&path, format!("invalid pointer log entry: {e}")))?;
            out.push(change);
        }
        Ok(out)
    }

    /// When a version was written (its first file's modification time).
    pub async fn created(&self, version: u64) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
        let dir = self.base_path.clone().join(format!("v{version}"));
        let mut listing = self.store.list(Some(&dir));
        let mut first: Option<chrono::DateTime<chrono::Utc>> = None;
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| KilnError::io(&dir, e))?;
            first = Some(first.map_or(meta.last_modified, |f| f.min(meta.last_modified)));
        }
        Ok(first)
    }

    async fn log(&self, change: PointerChange) -> Result<()> {
        let nanos = chrono::Utc::now()
            .timestamp_nanos_opt()
            .unwrap_or_default()
            .max(0);
        let unique = uuid_like();
        let path = self
            .base_path
            .clone()
            .join(POINTER_LOG)
            .join(format!("{nanos:020}-{}-{unique}.json", change.pointer));
        let body = serde_json::to_vec(&change)
            .map_err(|e| KilnError::internal("serializing a pointer change", e))?;
        self.store
            .put(&path, body.into())
            .await
            .map(|_| ())
            .map_err(|e| KilnError::io(&path, e))
    }

    async fn write_pointer(&self, name: &str, version: u64) -> Result<()> {
        self.put_pointer(&self.base_path.clone().join(name), version)
            .await
    }

    async fn put_pointer(&self, path: &object_store::path::Path, version: u64) -> Result<()> {
        self.store
            .put(path, format!("v{version}\n").into_bytes().into())
            .await
            .map(|_| ())
            .map_err(|e| KilnError::io(path, e))
    }

    async fn read_pointer(&self, path: object_store::path::Path) -> Result<Option<u64>> {
        let bytes = match self.store.get(&path).await {
            Ok(r) => r.bytes().await.map_err(|e| KilnError::io(&path, e))?,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(KilnError::io(&path, e)),
        };
        let text = String::from_utf8_lossy(&bytes);
        text.trim()
            .strip_prefix('v')
            .and_then(|v| v.parse().ok())
            .map(Some)
            .ok_or_else(|| KilnError::data(&path, format!("invalid pointer '{}'", text.trim())))
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

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// A short random suffix that keeps concurrent log entries apart.
fn uuid_like() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::process::id() as u128);
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::KilnExtensions;
    use crate::{KilnSession, Master};

    /// A fresh directory under the temp dir, removed when dropped.
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            let dir = std::env::temp_dir().join(format!("kiln-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&dir);
            Scratch(dir)
        }

        fn path(&self) -> &std::path::Path {
            &self.0
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    async fn repo(dir: &std::path::Path) -> Result<ArtifactRepo> {
        let session =
            KilnSession::connect(&Master::Local { partitions: 1 }, &KilnExtensions::default())
                .await?;
        let base = Url::from_directory_path(dir.join("repo"))
            .map_err(|_| KilnError::config("bad test path"))?;
        ArtifactRepo::open(&session, &base)
    }

    #[tokio::test]
    async fn promote_alias_and_rollback_follow_the_deployment_stack() -> Result<()> {
        let dir = Scratch::new("registry");
        let repo = repo(dir.path()).await?;
        for _ in 0..3 {
            repo.publish(&[("model.json", b"{}".to_vec())]).await?;
        }
        let v4 = repo
            .publish_undeployed(&[("model.json", b"{}".to_vec())])
            .await?;
        assert_eq!((v4, repo.latest().await?), (4, 3));
        repo.promote(4, "challenger", "not better").await?;
        assert_eq!(
            repo.resolve(&"challenger".parse()?).await?,
            4,
            "an alias names its version"
        );
        assert_eq!(repo.resolve(&VersionRef::deployed()).await?, 3);
        // Promoting to champion deploys; rollback returns to what was deployed before.
        assert_eq!(repo.promote(4, CHAMPION, "better").await?, Some(3));
        assert_eq!(repo.latest().await?, 4);
        assert_eq!(repo.rollback(None, "").await?, (4, 3));
        assert_eq!(repo.rollback(None, "").await?, (3, 2));
        assert_eq!(repo.rollback(None, "").await?, (2, 1));
        let err = repo
            .rollback(None, "")
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("nothing was deployed before"), "{err}");
        let err = repo
            .rollback(Some(9), "")
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("version 9 does not exist") && err.contains("v1, v2, v3, v4"),
            "{err}"
        );
        assert_eq!(repo.rollback(Some(3), "").await?, (1, 3));
        let aliases = repo.aliases().await?;
        assert_eq!(aliases.get(CHAMPION), Some(&3));
        assert_eq!(aliases.get("challenger"), Some(&4));
        let err = repo
            .resolve(&"staging".parse()?)
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("no alias 'staging'") && err.contains("challenger"),
            "{err}"
        );
        assert!("Bad Name".parse::<VersionRef>().is_err());
        let actions: Vec<PointerAction> = repo.history().await?.iter().map(|c| c.action).collect();
        use PointerAction::{Promote, Publish, Rollback};
        assert_eq!(
            actions,
            [
                Publish, Publish, Publish, Promote, Promote, Rollback, Rollback, Rollback, Rollback
            ]
        );
        assert!(repo.created(4).await?.is_some());
        Ok(())
    }

    #[tokio::test]
    async fn readers_never_see_a_half_written_pointer() -> Result<()> {
        let dir = Scratch::new("pointer");
        let repo = repo(dir.path()).await?;
        // A torn write would show as a parse error or an unknown version.
        for _ in 0..2 {
            repo.publish(&[("model.json", b"{}".to_vec())]).await?;
        }
        let reader = {
            let repo = repo.clone();
            tokio::spawn(async move {
                let mut seen = std::collections::BTreeSet::new();
                for _ in 0..400 {
                    seen.insert(repo.latest().await?);
                }
                Ok::<_, KilnError>(seen)
            })
        };
        for i in 0..100 {
            repo.promote(1 + i % 2, CHAMPION, "flip").await?;
        }
        let seen = reader
            .await
            .map_err(|e| KilnError::internal("reader", e))??;
        assert!(seen.iter().all(|v| [1, 2].contains(v)), "{seen:?}");
        Ok(())
    }
}
