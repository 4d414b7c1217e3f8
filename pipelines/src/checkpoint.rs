//! Task checkpoints for resuming a run: after a task succeeds its outcome
//! and fingerprint go to `<lake>/_kiln/runs/<run_id>/tasks/<task>.json`. The
//! fingerprint covers the task's config, its upstream fingerprints and the
//! version (names, sizes, modification times) of the lake data it reads, so
//! `--resume` skips a task only while its result is still what a rerun
//! would produce.

use crate::config::TaskConfig;
use crate::observer::{RunEvent, RunObserver};
use crate::task::{TaskOutcome, TaskState};
use datafusion::object_store::{ObjectStore, ObjectStoreExt};
use futures::StreamExt;
use futures::future::BoxFuture;
use kiln_engine::hash::StableHasher;
use kiln_engine::storage::{Lake, object_path};
use kiln_engine::{KilnError, KilnSession, Result};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Checkpoint {
    pub fingerprint: String,
    pub outcome: TaskOutcome,
}

pub struct Checkpoints {
    session: KilnSession,
    lake: Lake,
    store: Arc<dyn ObjectStore>,
    dir: object_store_path::Path,
}

mod object_store_path {
    pub use datafusion::object_store::path::Path;
}

impl Checkpoints {
    pub fn open(session: &KilnSession, lake: &Lake, run_id: &str) -> Result<Self> {
        let url = lake.resolve(&format!("_kiln/runs/{run_id}/tasks/"))?;
        Ok(Checkpoints {
            session: session.clone(),
            lake: lake.clone(),
            store: session.stores().store_for(&url)?,
            dir: object_path(&url)?,
        })
    }

    /// Whether any checkpoint exists for this run.
    pub async fn exists(&self) -> bool {
        self.store.list(Some(&self.dir)).next().await.is_some()
    }

    /// The fingerprint of a task about to run.
    pub async fn fingerprint(
        &self,
        task: &TaskConfig,
        inputs: &[String],
        upstream: &[String],
    ) -> Result<String> {
        let mut h = StableHasher::new();
        h.str(&serde_json::to_string(task).map_err(|e| {
            KilnError::internal(format!("serializing the config of task '{}'", task.name), e)
        })?);
        h.u64(upstream.len() as u64);
        for u in upstream {
            h.str(u);
        }
        for input in inputs.iter().filter(|i| !i.starts_with("task:")) {
            let url = self.lake.resolve(input)?;
            let store = self.session.stores().store_for(&url)?;
            let prefix = object_path(&url)?;
            let mut files = Vec::new();
            let mut listing = store.list(Some(&prefix));
            while let Some(meta) = listing.next().await {
                let meta = meta.map_err(|e| KilnError::io(&url, e))?;
                files.push((
                    meta.location.to_string(),
                    meta.size,
                    meta.last_modified.timestamp_millis(),
                ));
            }
            files.sort();
            h.str(input).u64(files.len() as u64);
            for (name, size, modified) in &files {
                h.str(name).u64(*size).i64(*modified);
            }
        }
        Ok(format!("{:016x}", h.finish()))
    }

    fn path(&self, task: &str) -> object_store_path::Path {
        self.dir.clone().join(format!("{task}.json"))
    }

    /// A checkpoint whose fingerprint matches and whose outputs still exist.
    pub async fn valid(&self, task: &str, fingerprint: &str) -> Option<Checkpoint> {
        let bytes = self
            .store
            .get(&self.path(task))
            .await
            .ok()?
            .bytes()
            .await
            .ok()?;
        let cp: Checkpoint = match serde_json::from_slice(&bytes) {
            Ok(cp) => cp,
            Err(e) => {
                tracing::warn!("checkpoint of task {task} is unreadable and ignored: {e}");
                return None;
            }
        };
        if cp.fingerprint != fingerprint {
            return None;
        }
        for out in &cp.outcome.outputs {
            let url = url::Url::parse(out).ok()?;
            let store = self.session.stores().store_for(&url).ok()?;
            let p = object_path(&url).ok()?;
            if store.head(&p).await.is_err() && store.list(Some(&p)).next().await.is_none() {
                return None;
            }
        }
        Some(cp)
    }

    pub async fn save(&self, task: &str, checkpoint: &Checkpoint) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(checkpoint)
            .map_err(|e| KilnError::internal("serializing a checkpoint", e))?;
        let path = self.path(task);
        self.store
            .put(&path, bytes.into())
            .await
            .map_err(|e| KilnError::io(&path, e))?;
        Ok(())
    }
}

/// Saves a checkpoint when a task succeeds (a failed save is a warning: the
/// run goes on, a resume will redo the task).
impl RunObserver for Checkpoints {
    fn observe<'a>(&'a self, event: &'a RunEvent, _ts_ms: i64) -> BoxFuture<'a, ()> {
        Box::pin(async move {
            let RunEvent::TaskFinished(r) = event else {
                return;
            };
            let (TaskState::Succeeded, Some(outcome), Some(fingerprint)) =
                (r.state, &r.outcome, &r.fingerprint)
            else {
                return;
            };
            let checkpoint = Checkpoint {
                fingerprint: fingerprint.clone(),
                outcome: outcome.clone(),
            };
            if let Err(e) = self.save(&r.task, &checkpoint).await {
                eprintln!("warning: checkpoint of task {} not saved: {e}", r.task);
            }
        })
    }
}
