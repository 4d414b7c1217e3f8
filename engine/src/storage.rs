//! Object stores for the data lake: local files, S3 (and MinIO), Azure
//! Blob / ADLS Gen2. Stores are created on first use from the URL and the
//! standard environment variables, on the client, scheduler and executors alike.

use crate::error::{KilnError, Result};
use datafusion::execution::object_store::ObjectStoreRegistry;
use object_store::local::LocalFileSystem;
use object_store::{ObjectStore, ObjectStoreExt};
use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use url::Url;

/// An [`ObjectStoreRegistry`] that builds stores lazily from the URL scheme.
///
/// * `file://` — the local file system.
/// * `s3://bucket/` — `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
///   `AWS_ENDPOINT` (for MinIO; `AWS_ALLOW_HTTP=true` for plain HTTP).
/// * `az://container/`, `abfss://container@account.dfs.core.windows.net/` —
///   `AZURE_STORAGE_ACCOUNT_NAME`, `AZURE_STORAGE_ACCOUNT_KEY` and friends.
#[derive(Debug, Default)]
pub struct LakeObjectStoreRegistry {
    stores: Mutex<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl LakeObjectStoreRegistry {
    pub fn new() -> Self {
        Self::default()
    }

    fn key(url: &Url) -> String {
        format!(
            "{}://{}",
            url.scheme(),
            &url[url::Position::BeforeHost..url::Position::AfterPort]
        )
    }

    fn build(url: &Url) -> Result<Arc<dyn ObjectStore>> {
        let err = |e: object_store::Error| {
            KilnError::config_fix(
                format!("cannot open object store for {url}: {e}"),
                "check the URL and the store's environment variables (AWS_*, AZURE_STORAGE_*)",
            )
        };
        match url.scheme() {
            "file" => Ok(Arc::new(LocalFileSystem::new())),
            "s3" | "s3a" => {
                let bucket = url.host_str().unwrap_or_default();
                let store = object_store::aws::AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .build()
                    .map_err(err)?;
                Ok(Arc::new(store))
            }
            "az" | "azure" | "abfs" | "abfss" | "adl" => {
                let store = object_store::azure::MicrosoftAzureBuilder::from_env()
                    .with_url(url.as_str())
                    .build()
                    .map_err(err)?;
                Ok(Arc::new(store))
            }
            other => Err(KilnError::config_fix(
                format!("unsupported storage scheme '{other}' in {url}"),
                "use file://, s3://, az:// or abfss://",
            )),
        }
    }

    /// The store for `url`, created on first use.
    pub fn store_for(&self, url: &Url) -> Result<Arc<dyn ObjectStore>> {
        let key = Self::key(url);
        let mut stores = self
            .stores
            .lock()
            .map_err(|_| KilnError::io(url, "object store registry poisoned"))?;
        if let Some(store) = stores.get(&key) {
            return Ok(Arc::clone(store));
        }
        let store = Self::build(url)?;
        stores.insert(key, Arc::clone(&store));
        Ok(store)
    }
}

impl ObjectStoreRegistry for LakeObjectStoreRegistry {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.stores.lock().ok()?.insert(Self::key(url), store)
    }

    fn get_store(&self, url: &Url) -> datafusion::error::Result<Arc<dyn ObjectStore>> {
        self.store_for(url)
            .map_err(|e| datafusion::error::DataFusionError::Configuration(e.to_string()))
    }
}

/// The lake root of a pipeline, against which relative paths resolve.
#[derive(Debug, Clone)]
pub struct Lake {
    root: Url,
}

impl Lake {
    /// Parses a root such as `file://./lake`, `/data/lake`, `s3://bucket/prefix`.
    pub fn new(root: &str) -> Result<Self> {
        let mut root = parse_location(root, None)?;
        if !root.path().ends_with('/') {
            let path = format!("{}/", root.path());
            root.set_path(&path);
        }
        Ok(Lake { root })
    }

    pub fn root(&self) -> &Url {
        &self.root
    }

    /// Resolves `path` against the root unless it is a full URI.
    pub fn resolve(&self, path: &str) -> Result<Url> {
        parse_location(path, Some(&self.root))
    }
}

/// Parses a location: a URI, an absolute path, or a path relative to `base`
/// (or to the working directory when there is no base).
pub fn parse_location(location: &str, base: Option<&Url>) -> Result<Url> {
    let location = location.trim();
    if location.is_empty() {
        return Err(KilnError::config("empty path"));
    }
    if let Some(rest) = location.strip_prefix("file://") {
        return local_url(rest, location);
    }
    if location.contains("://") {
        return Url::parse(location)
            .map_err(|e| KilnError::config(format!("invalid URI '{location}': {e}")));
    }
    match base {
        Some(base) => base
            .join(location)
            .map_err(|e| KilnError::config(format!("invalid path '{location}': {e}"))),
        None => local_url(location, location),
    }
}

fn local_url(path: &str, original: &str) -> Result<Url> {
    let dir_like = path.ends_with('/') || path.is_empty();
    let p = Path::new(path);
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| KilnError::io("current directory", e))?
            .join(p)
    };
    let abs = normalize(&abs);
    let mut text = abs.to_string_lossy().to_string();
    if dir_like && !text.ends_with('/') {
        text.push('/');
    }
    Url::from_file_path(&text)
        .map(|mut u| {
            if dir_like && !u.path().ends_with('/') {
                let p = format!("{}/", u.path());
                u.set_path(&p);
            }
            u
        })
        .map_err(|_| KilnError::config(format!("invalid local path '{original}'")))
}

/// Removes `.` and `..` components without touching the file system.
fn normalize(path: &Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// The object-store path of a URL (percent-decoded, no leading slash).
pub fn object_path(url: &Url) -> Result<object_store::path::Path> {
    if url.scheme() == "file" {
        let fs = url
            .to_file_path()
            .map_err(|_| KilnError::config(format!("invalid file URL {url}")))?;
        return object_store::path::Path::from_absolute_path(&fs)
            .map_err(|e| KilnError::config(format!("invalid path {url}: {e}")));
    }
    object_store::path::Path::from_url_path(url.path())
        .map_err(|e| KilnError::config(format!("invalid path {url}: {e}")))
}

impl LakeObjectStoreRegistry {
    /// Reads a whole object; `None` when it does not exist.
    pub async fn read_object(&self, url: &Url) -> Result<Option<Vec<u8>>> {
        let store = self.store_for(url)?;
        let path = object_path(url)?;
        match store.get(&path).await {
            Ok(r) => Ok(Some(
                r.bytes().await.map_err(|e| KilnError::io(url, e))?.into(),
            )),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(KilnError::io(url, e)),
        }
    }

    /// Writes a whole object in one put: readers see no object or all of it.
    pub async fn write_object(&self, url: &Url, bytes: Vec<u8>) -> Result<()> {
        let store = self.store_for(url)?;
        let path = object_path(url)?;
        store
            .put(&path, bytes.into())
            .await
            .map(|_| ())
            .map_err(|e| KilnError::io(url, e))
    }

    /// Deletes an object; one that does not exist is not an error.
    pub async fn delete_object(&self, url: &Url) -> Result<()> {
        let store = self.store_for(url)?;
        let path = object_path(url)?;
        match store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(KilnError::io(url, e)),
        }
    }

    /// Whether an object exists.
    pub async fn object_exists(&self, url: &Url) -> Result<bool> {
        let store = self.store_for(url)?;
        let path = object_path(url)?;
        match store.head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(KilnError::io(url, e)),
        }
    }
}

/// The local file-system path of a `file://` URL, if it is one.
pub fn local_path(url: &Url) -> Option<std::path::PathBuf> {
    (url.scheme() == "file")
        .then(|| url.to_file_path().ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_relative_paths_against_the_root() -> Result<()> {
        let lake = Lake::new("s3://bucket/prefix")?;
        assert_eq!(
            lake.resolve("raw/t/")?.as_str(),
            "s3://bucket/prefix/raw/t/"
        );
        assert_eq!(lake.resolve("az://c/x")?.as_str(), "az://c/x");
        let local = Lake::new("file:///tmp/lake/./a/..")?;
        assert_eq!(
            local.resolve("x.parquet")?.as_str(),
            "file:///tmp/lake/x.parquet"
        );
        Ok(())
    }

    #[test]
    fn relative_file_roots_use_the_working_directory() -> Result<()> {
        let lake = Lake::new("file://./lake")?;
        let cwd = std::env::current_dir().map_err(|e| KilnError::io("cwd", e))?;
        assert_eq!(lake.root().to_file_path().ok(), Some(cwd.join("lake")));
        Ok(())
    }
}
