//! The atomic commit: a finished staging directory replaces the target, so
//! readers see the previous output or the new one, never a part of it.
//!
//! Cleanup of staging files is best effort: a failure there is logged as a
//! warning (the next write of the same target removes the leftovers), never
//! dropped silently. A failure that could leave a mixed output is an error.

use crate::error::{KilnError, Result};
use crate::storage::local_path;
use futures::StreamExt;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use url::Url;

/// Removes staging left by a writer of the same target that was killed.
pub(crate) async fn remove_stale_staging(
    store: &Arc<dyn ObjectStore>,
    target: &Url,
    target_dir: &StorePath,
) {
    let text = target_dir.as_ref();
    let (parent, name) = text.rsplit_once('/').unwrap_or(("", text));
    let prefix = format!(".{name}.kiln-");
    if let Some(dir) = local_path(target).and_then(|p| p.parent().map(Path::to_path_buf)) {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return; // No parent directory yet: nothing is stale.
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                remove_local_dir(&e.path());
            }
        }
        return;
    }
    match store
        .list_with_delimiter(Some(&StorePath::from(parent)))
        .await
    {
        Ok(listing) => {
            for p in listing.common_prefixes {
                if p.filename().is_some_and(|f| f.starts_with(&prefix)) {
                    remove_prefix(store, &p).await;
                }
            }
        }
        Err(e) => tracing::warn!("cannot list {parent} for stale staging: {e}"),
    }
}

/// A hidden sibling of `target` for a write in progress (`kind` = tmp) or
/// the previous output during a local commit (`kind` = old).
pub(crate) fn staging_path(target: &StorePath, kind: &str) -> StorePath {
    let text = target.as_ref();
    let (parent, name) = text.rsplit_once('/').unwrap_or(("", text));
    let id = format!(
        "{:x}{:x}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    );
    let staged = format!(".{name}.kiln-{kind}-{id}");
    if parent.is_empty() {
        StorePath::from(staged)
    } else {
        StorePath::from(format!("{parent}/{staged}"))
    }
}

/// The local file system path of a store path, when the target is local.
pub(crate) fn local_path_of(target: &Url, path: &StorePath) -> Option<PathBuf> {
    (target.scheme() == "file").then(|| PathBuf::from(format!("/{}", path.as_ref())))
}

/// Replaces the target with the staged output.
pub(crate) async fn commit(
    store: &Arc<dyn ObjectStore>,
    target: &Url,
    staging: &StorePath,
    target_dir: &StorePath,
) -> Result<()> {
    match (local_path_of(target, staging), local_path(target)) {
        (Some(staged), Some(final_dir)) => {
            let final_dir = PathBuf::from(final_dir.to_string_lossy().trim_end_matches('/'));
            let old = local_path_of(target, &staging_path(target_dir, "old"));
            commit_local(&staged, &final_dir, old.as_deref())
        }
        _ => commit_object_store(store, staging, target_dir).await,
    }
}

/// Local file system: two renames; the old output is only removed once the
/// new one is in place, and is put back if the second rename fails.
fn commit_local(staged: &Path, final_dir: &Path, old: Option<&Path>) -> Result<()> {
    std::fs::write(staged.join("_SUCCESS"), b"").map_err(|e| KilnError::io(staged.display(), e))?;
    if let Some(parent) = final_dir.parent() {
        std::fs::create_dir_all(parent).map_err(|e| KilnError::io(parent.display(), e))?;
    }
    let old = old.filter(|_| final_dir.exists());
    if let Some(old) = old {
        std::fs::rename(final_dir, old).map_err(|e| KilnError::io(final_dir.display(), e))?;
    }
    if let Err(e) = std::fs::rename(staged, final_dir) {
        let restored = match old {
            Some(old) => std::fs::rename(old, final_dir)
                .map(|()| String::new())
                .unwrap_or_else(|r| {
                    format!(
                        "; the previous output could not be put back and is at {}: {r}",
                        old.display()
                    )
                }),
            None => String::new(),
        };
        return Err(KilnError::io(
            final_dir.display(),
            format!("cannot move the new output in place: {e}{restored}"),
        ));
    }
    if let Some(old) = old {
        remove_local_dir(old);
    }
    Ok(())
}

/// Object stores have no directory rename: the new files are copied in
/// under their final names, then `_SUCCESS` is written, then stale files of
/// the previous output are deleted (a failed delete is an error: the output
/// would mix two writes).
async fn commit_object_store(
    store: &Arc<dyn ObjectStore>,
    staging: &StorePath,
    target_dir: &StorePath,
) -> Result<()> {
    let staged = list(store, staging).await?;
    let existing = list(store, target_dir).await?;
    let mut written = HashSet::new();
    for path in &staged {
        // The path below the staging prefix (partition directories too).
        let dest = path
            .prefix_match(staging)
            .map(|parts| parts.fold(target_dir.clone(), |dest, part| dest.join(part)))
            .unwrap_or_else(|| target_dir.clone().join(path.filename().unwrap_or_default()));
        store
            .copy(path, &dest)
            .await
            .map_err(|e| KilnError::io(&dest, e))?;
        written.insert(dest);
    }
    let marker = target_dir.clone().join("_SUCCESS");
    store
        .put(&marker, object_store::PutPayload::default())
        .await
        .map_err(|e| KilnError::io(&marker, e))?;
    for old in existing {
        if !written.contains(&old) && old != marker {
            store.delete(&old).await.map_err(|e| {
                KilnError::io(&old, format!("removing a file of the previous output: {e}"))
            })?;
        }
    }
    remove_prefix(store, staging).await;
    Ok(())
}

async fn list(store: &Arc<dyn ObjectStore>, prefix: &StorePath) -> Result<Vec<StorePath>> {
    let mut paths = Vec::new();
    let mut listing = store.list(Some(prefix));
    while let Some(meta) = listing.next().await {
        paths.push(meta.map_err(|e| KilnError::io(prefix, e))?.location);
    }
    Ok(paths)
}

/// Best-effort removal of staging files under `prefix` (warns on failure).
pub(crate) async fn remove_prefix(store: &Arc<dyn ObjectStore>, prefix: &StorePath) {
    let paths = match list(store, prefix).await {
        Ok(paths) => paths,
        Err(e) => {
            tracing::warn!("staging files under {prefix} not removed: {e}");
            return;
        }
    };
    for p in paths {
        if let Err(e) = store.delete(&p).await {
            tracing::warn!("staging file {p} not removed: {e}");
        }
    }
}

/// Best-effort removal of a local staging directory (warns on failure).
pub(crate) fn remove_local_dir(dir: &Path) {
    if let Err(e) = std::fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        tracing::warn!("staging directory {} not removed: {e}", dir.display());
    }
}
