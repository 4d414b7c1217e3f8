//! The training sets an executor process has read from the lake, kept for
//! the tasks that follow (one set at a time: reading a new set's file
//! drops the files of any other set).

use super::set_file::{SetPart, decode};
use kiln_engine::storage::LakeObjectStoreRegistry;
use kiln_engine::{KilnError, Result};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, LazyLock, Mutex};
use url::Url;

static STORES: LazyLock<LakeObjectStoreRegistry> = LazyLock::new(LakeObjectStoreRegistry::new);
static LOADED: LazyLock<Mutex<HashMap<String, Arc<SetPart>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// How many set files this process holds (for tests).
pub fn loaded_files() -> usize {
    LOADED.lock().map(|m| m.len()).unwrap_or(0)
}

/// The set file at `url`, read once per process; `checksum` must match.
pub fn load(url: &str, checksum: u64) -> Result<Arc<SetPart>> {
    let mut loaded = LOADED
        .lock()
        .map_err(|_| KilnError::internal("the training set cache", "poisoned"))?;
    if let Some(part) = loaded.get(url) {
        return Ok(Arc::clone(part));
    }
    let parsed = Url::parse(url).map_err(|e| KilnError::internal("a training set URL", e))?;
    let bytes = block_on(STORES.read_object(&parsed))??.ok_or_else(|| {
        KilnError::data(
            url,
            "the cached training set is gone (deleted while the job ran?); run the task again",
        )
    })?;
    let part = Arc::new(decode(bytes, url)?);
    if part.set.checksum != checksum {
        return Err(KilnError::data(
            url,
            format!(
                "checksum {:016x}, expected {checksum:016x}; delete the file and run the task again",
                part.set.checksum
            ),
        ));
    }
    loaded.retain(|_, p| p.set.checksum == checksum);
    loaded.insert(url.to_string(), Arc::clone(&part));
    Ok(part)
}

/// Runs `f` to completion from synchronous code inside or outside a tokio
/// runtime (a UDF runs on one of the executor's runtime threads).
pub fn block_on<F: Future>(f: F) -> Result<F::Output> {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            Ok(tokio::task::block_in_place(|| handle.block_on(f)))
        }
        Ok(_) => Err(KilnError::internal(
            "reading a training set",
            "called on a single-threaded runtime",
        )),
        Err(_) => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|rt| rt.block_on(f))
            .map_err(|e| KilnError::internal("starting a runtime", e)),
    }
}

/// Runs CPU-heavy synchronous work without stalling the runtime thread it
/// is called on (heartbeats and task polling share the executor's runtime).
pub fn off_runtime<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}
