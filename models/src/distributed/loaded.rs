//! The training sets (or partitions of one) an executor process has read
//! from the lake, kept for the tasks that follow: one set at a time
//! (reading a new set's file drops the files of any other set), within
//! `KILN_TRAINING_CACHE_MEMORY` bytes when set (`2GiB`; the least recently
//! used files go first and are read again when a task needs them).

use super::set_file::{SetPart, decode};
use kiln_engine::storage::LakeObjectStoreRegistry;
use kiln_engine::{KilnError, Result};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, LazyLock, Mutex};
use url::Url;

static STORES: LazyLock<LakeObjectStoreRegistry> = LazyLock::new(LakeObjectStoreRegistry::new);
static LOADED: LazyLock<Mutex<Cache>> = LazyLock::new(|| Mutex::new(Cache::default()));

/// The environment variable that caps the bytes of cached set files.
pub const CACHE_MEMORY_ENV: &str = "KILN_TRAINING_CACHE_MEMORY";

#[derive(Default)]
struct Cache {
    files: HashMap<String, Cached>,
    tick: u64,
    /// Files read from the lake so far (for tests and reports).
    reads: u64,
}

struct Cached {
    part: Arc<SetPart>,
    bytes: u64,
    used: u64,
}

fn budget() -> Result<u64> {
    match std::env::var(CACHE_MEMORY_ENV) {
        Err(_) => Ok(u64::MAX),
        Ok(text) => text
            .trim()
            .parse::<bytesize::ByteSize>()
            .map(|b| b.as_u64())
            .map_err(|e| {
                KilnError::config_fix(
                    format!("{CACHE_MEMORY_ENV}={text}: {e}"),
                    "give a size such as 2GiB or 512MiB",
                )
            }),
    }
}

/// How many set files this process has read from the lake (for tests).
pub fn files_read() -> u64 {
    LOADED.lock().map(|m| m.reads).unwrap_or(0)
}

/// The set file at `url`, read once per process; `checksum` must match.
pub fn load(url: &str, checksum: u64) -> Result<Arc<SetPart>> {
    let budget = budget()?;
    let mut cache = LOADED
        .lock()
        .map_err(|_| KilnError::internal("the training set cache", "poisoned"))?;
    cache.tick += 1;
    let tick = cache.tick;
    if let Some(hit) = cache.files.get_mut(url) {
        hit.used = tick;
        return Ok(Arc::clone(&hit.part));
    }
    let parsed = Url::parse(url).map_err(|e| KilnError::internal("a training set URL", e))?;
    let bytes = block_on(STORES.read_object(&parsed))??.ok_or_else(|| {
        KilnError::data(
            url,
            "the cached training set is gone (deleted while the job ran?); run the task again",
        )
    })?;
    // Room for the file and its decoded copy before decoding.
    cache.files.retain(|_, c| c.part.set.checksum == checksum);
    let incoming = bytes.len() as u64;
    while !cache.files.is_empty()
        && cache.files.values().map(|c| c.bytes).sum::<u64>() + 2 * incoming > budget
    {
        let Some(oldest) = cache
            .files
            .iter()
            .min_by_key(|(_, c)| c.used)
            .map(|(k, _)| k.clone())
        else {
            break;
        };
        cache.files.remove(&oldest);
    }
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
    cache.reads += 1;
    let max_bins: Vec<usize> = part.set.binnings.iter().map(|b| b.max_bins).collect();
    let size = crate::data::set_bytes(part.set.n_rows(), part.set.n_features(), &max_bins);
    cache.files.insert(
        url.to_string(),
        Cached {
            part: Arc::clone(&part),
            bytes: size,
            used: tick,
        },
    );
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
