//! Datasets in the lake: uploads streamed to a staging object and
//! committed by one rename once they are known to be readable, schema and
//! row count from DataFusion, samples, downloads.
//!
//! Layout under the lake root:
//! `_kiln/service/staging/<id>.<ext>` (an upload in progress) and
//! `_kiln/service/datasets/<id>/` (a committed dataset: the uploaded
//! `data.<ext>`, or the Parquet files a job wrote).

use crate::problem::{ApiError, ApiResult};
use crate::store::{Column, DatasetRecord};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use datafusion::parquet::arrow::ArrowWriter;
use futures::{Stream, StreamExt};
use kiln_engine::io::{FileFormat, read_table};
use kiln_engine::storage::{Lake, object_path};
use kiln_engine::{KilnError, KilnSession};
use object_store::{ObjectStore, ObjectStoreExt};
use rand::SeedableRng;
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use url::Url;

/// The service's part of the lake.
#[derive(Clone)]
pub struct DatasetLake {
    session: Arc<KilnSession>,
    lake: Lake,
}

/// A file format a client may upload, from its name or media type.
pub fn upload_format(file_name: Option<&str>, content_type: Option<&str>) -> ApiResult<FileFormat> {
    let name = file_name.unwrap_or_default().to_ascii_lowercase();
    let media = content_type.unwrap_or_default().to_ascii_lowercase();
    if name.ends_with(".csv") || media.starts_with("text/csv") {
        Ok(FileFormat::Csv)
    } else if name.ends_with(".parquet") || media == "application/vnd.apache.parquet" {
        Ok(FileFormat::Parquet)
    } else {
        Err(ApiError::unsupported_media(format!(
            "cannot tell the format of the upload (file name '{name}', type '{media}')"
        ))
        .field("file")
        .fix("upload a .csv or .parquet file, or send Content-Type text/csv or application/vnd.apache.parquet"))
    }
}

/// Checks a dataset name: printable, at most 200 characters, no path.
pub fn check_name(name: &str) -> ApiResult<()> {
    let bad = |why: &str| {
        Err(
            ApiError::invalid("name", format!("invalid dataset name: {why}"))
                .fix("use letters, digits, spaces, '-', '_' and '.', at most 200 characters"),
        )
    };
    if name.trim().is_empty() {
        return bad("it is empty");
    }
    if name.chars().count() > 200 {
        return bad("it is longer than 200 characters");
    }
    if name.contains(['/', '\\']) || name.contains("..") {
        return bad("it looks like a path");
    }
    if name.chars().any(char::is_control) {
        return bad("it contains control characters");
    }
    Ok(())
}

impl DatasetLake {
    pub fn new(session: Arc<KilnSession>, lake: Lake) -> Self {
        DatasetLake { session, lake }
    }

    pub fn session(&self) -> &Arc<KilnSession> {
        &self.session
    }

    pub fn lake(&self) -> &Lake {
        &self.lake
    }

    fn url(&self, path: &str) -> ApiResult<Url> {
        self.lake
            .resolve(path)
            .map_err(|e| ApiError::internal("resolving a lake path", e))
    }

    /// The directory of a committed dataset.
    pub fn dataset_dir(&self, id: &str) -> ApiResult<Url> {
        self.url(&format!("_kiln/service/datasets/{id}/"))
    }

    fn store(&self, url: &Url) -> ApiResult<Arc<dyn ObjectStore>> {
        self.session
            .stores()
            .store_for(url)
            .map_err(|e| ApiError::internal("opening the lake", e))
    }

    /// Readiness: the lake answers a listing.
    pub async fn ping(&self) -> Result<(), KilnError> {
        let root = self.lake.root().clone();
        let store = self.session.stores().store_for(&root)?;
        let path = object_path(&root)?;
        store
            .list_with_delimiter(Some(&path))
            .await
            .map(|_| ())
            .map_err(|e| KilnError::io(&root, e))
    }

    /// Streams an upload to its staging object, at most `max_bytes`.
    /// Returns the staging URL and the size. Nothing is left behind on
    /// failure.
    pub async fn stage<S, E>(
        &self,
        id: &str,
        format: FileFormat,
        mut body: S,
        max_bytes: u64,
    ) -> ApiResult<(Url, u64)>
    where
        S: Stream<Item = Result<Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let url = self.url(&format!(
            "_kiln/service/staging/{id}.{}",
            format.extension()
        ))?;
        let store = self.store(&url)?;
        let path = object_path(&url).map_err(|e| ApiError::internal("staging", e))?;
        let mut writer = object_store::buffered::BufWriter::new(Arc::clone(&store), path.clone());
        let mut size = 0u64;
        let failure = loop {
            match body.next().await {
                None => break None,
                Some(Err(e)) => {
                    break Some(
                        ApiError::bad_request(format!("the upload was interrupted: {e}"))
                            .field("file"),
                    );
                }
                Some(Ok(chunk)) => {
                    size += chunk.len() as u64;
                    if size > max_bytes {
                        break Some(
                            ApiError::too_large(format!(
                                "the upload is larger than the limit of {max_bytes} bytes"
                            ))
                            .field("file")
                            .fix("split the dataset, or ask the operator to raise --max-upload-bytes"),
                        );
                    }
                    if let Err(e) = writer.write_all(&chunk).await {
                        break Some(ApiError::internal("staging an upload", e));
                    }
                }
            }
        };
        if let Some(e) = failure {
            let _aborted = writer.abort().await;
            self.remove_object(&store, &path).await;
            return Err(e);
        }
        if let Err(e) = writer.shutdown().await {
            self.remove_object(&store, &path).await;
            return Err(ApiError::internal("staging an upload", e));
        }
        Ok((url, size))
    }

    async fn remove_object(&self, store: &Arc<dyn ObjectStore>, path: &object_store::path::Path) {
        if let Err(e) = store.delete(path).await
            && !matches!(e, object_store::Error::NotFound { .. })
        {
            tracing::warn!("cannot remove {path}: {e}");
        }
    }

    /// Removes a staged upload (it failed validation).
    pub async fn discard(&self, staged: &Url) {
        if let (Ok(store), Ok(path)) = (self.store(staged), object_path(staged)) {
            self.remove_object(&store, &path).await;
        }
    }

    /// Reads the table at `url`: its columns and row count. A ragged CSV
    /// or a corrupt Parquet file is a 422 naming the problem.
    pub async fn inspect(&self, url: &Url, format: FileFormat) -> ApiResult<(Vec<Column>, i64)> {
        if format == FileFormat::Parquet {
            self.check_parquet_footer(url).await?;
        }
        // A reader that panics on a malformed file is a bad file, not a
        // dead request.
        let this = self.clone();
        let target = url.clone();
        tokio::spawn(async move { this.read_shape(&target, format).await })
            .await
            .unwrap_or_else(|e| {
                tracing::warn!("reading an upload panicked: {e}");
                Err(
                    ApiError::invalid("file", "the file is corrupt: its reader failed")
                        .fix("check that the file is a complete CSV or Parquet file"),
                )
            })
    }

    /// The Parquet footer: magic bytes at both ends and a metadata length
    /// that fits the file. parquet 59's metadata decoder underflows
    /// (panics in debug builds) on a length larger than the file.
    async fn check_parquet_footer(&self, url: &Url) -> ApiResult<()> {
        let store = self.store(url)?;
        let path = object_path(url).map_err(|e| ApiError::internal("reading", e))?;
        let size = store
            .head(&path)
            .await
            .map_err(|e| ApiError::internal("reading an upload", e))?
            .size;
        let corrupt =
            |why: &str| {
                Err(ApiError::invalid("file", format!("the Parquet file is corrupt: {why}"))
                .fix("upload a complete Parquet file (written by Arrow, Spark, pandas, DuckDB, …)"))
            };
        if size < 12 {
            return corrupt("it is shorter than a Parquet header and footer");
        }
        let head = store
            .get_range(&path, 0..4)
            .await
            .map_err(|e| ApiError::internal("reading an upload", e))?;
        let tail = store
            .get_range(&path, size - 8..size)
            .await
            .map_err(|e| ApiError::internal("reading an upload", e))?;
        if head.as_ref() != b"PAR1" || &tail[4..] != b"PAR1" {
            return corrupt("the PAR1 magic bytes are missing");
        }
        let metadata = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
        if metadata + 12 > size {
            return corrupt("its footer claims more metadata than the file holds");
        }
        Ok(())
    }

    async fn read_shape(&self, url: &Url, format: FileFormat) -> ApiResult<(Vec<Column>, i64)> {
        let df = read_table(&self.session, url, format)
            .await
            .map_err(|e| ApiError::from_kiln("file", e))?;
        let columns = Column::of_schema(df.schema().as_arrow());
        let rows = df.count().await.map_err(|e| {
            ApiError::from_kiln("file", KilnError::execution("reading the upload", e))
        })?;
        Ok((columns, rows as i64))
    }

    /// Makes a staged upload the dataset's file: one rename.
    pub async fn commit(&self, staged: &Url, id: &str, format: FileFormat) -> ApiResult<Url> {
        let target = self.url(&format!(
            "_kiln/service/datasets/{id}/data.{}",
            format.extension()
        ))?;
        let store = self.store(&target)?;
        let from = object_path(staged).map_err(|e| ApiError::internal("committing", e))?;
        let to = object_path(&target).map_err(|e| ApiError::internal("committing", e))?;
        store
            .rename(&from, &to)
            .await
            .map_err(|e| ApiError::internal("committing an upload", e))?;
        Ok(target)
    }

    /// Deletes a dataset's files.
    pub async fn delete(&self, dataset: &DatasetRecord) -> ApiResult<()> {
        let dir = self.dataset_dir(&dataset.id)?;
        let store = self.store(&dir)?;
        let prefix = object_path(&dir).map_err(|e| ApiError::internal("deleting", e))?;
        let mut listing = store.list(Some(&prefix));
        while let Some(meta) = listing.next().await {
            let meta = meta.map_err(|e| ApiError::internal("listing a dataset", e))?;
            self.remove_object(&store, &meta.location).await;
        }
        if let Some(local) = kiln_engine::storage::local_path(&dir) {
            let _gone = std::fs::remove_dir_all(local);
        }
        Ok(())
    }

    async fn frame(&self, dataset: &DatasetRecord) -> ApiResult<datafusion::dataframe::DataFrame> {
        let url = Url::parse(&dataset.uri).map_err(|e| ApiError::internal("reading", e))?;
        read_table(&self.session, &url, dataset.format)
            .await
            .map_err(|e| ApiError::internal("reading a dataset", e))
    }

    /// The batches of a dataset in a fixed order (partition by partition).
    async fn ordered_batches(
        &self,
        dataset: &DatasetRecord,
    ) -> ApiResult<impl Stream<Item = Result<RecordBatch, ApiError>> + Send + use<>> {
        let partitions = self
            .frame(dataset)
            .await?
            .execute_stream_partitioned()
            .await
            .map_err(|e| ApiError::internal("reading a dataset", e))?;
        Ok(futures::stream::iter(partitions)
            .flatten()
            .map(|b| b.map_err(|e| ApiError::internal("reading a dataset", e))))
    }

    /// `n` rows as JSON objects: the first ones, or a seeded uniform
    /// sample without replacement (same seed, same rows).
    pub async fn sample(
        &self,
        dataset: &DatasetRecord,
        n: usize,
        seed: Option<u64>,
    ) -> ApiResult<Vec<serde_json::Value>> {
        let total = usize::try_from(dataset.rows).unwrap_or(0);
        let mut wanted: Vec<usize> = match seed {
            None => (0..n.min(total)).collect(),
            Some(seed) => {
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
                rand::seq::index::sample(&mut rng, total, n.min(total)).into_vec()
            }
        };
        wanted.sort_unstable();
        let mut picked = Vec::new();
        let mut offset = 0usize;
        let mut next = 0usize;
        let mut batches = Box::pin(self.ordered_batches(dataset).await?);
        while next < wanted.len() {
            let Some(batch) = batches.next().await else {
                break;
            };
            let batch = batch?;
            let end = offset + batch.num_rows();
            let mut take = Vec::new();
            while next < wanted.len() && wanted[next] < end {
                take.push((wanted[next] - offset) as u32);
                next += 1;
            }
            if !take.is_empty() {
                let indices = arrow::array::UInt32Array::from(take);
                let columns = batch
                    .columns()
                    .iter()
                    .map(|c| arrow::compute::take(c, &indices, None))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| ApiError::internal("sampling", e))?;
                picked.push(
                    RecordBatch::try_new(batch.schema(), columns)
                        .map_err(|e| ApiError::internal("sampling", e))?,
                );
            }
            offset = end;
        }
        let mut writer = arrow::json::ArrayWriter::new(Vec::new());
        for b in &picked {
            writer
                .write(b)
                .map_err(|e| ApiError::internal("writing JSON", e))?;
        }
        writer
            .finish()
            .map_err(|e| ApiError::internal("writing JSON", e))?;
        let bytes = writer.into_inner();
        if bytes.is_empty() {
            return Ok(Vec::new());
        }
        serde_json::from_slice(&bytes).map_err(|e| ApiError::internal("writing JSON", e))
    }

    /// The dataset as one file: an uploaded file as it was, a job's
    /// Parquet files merged into one Parquet stream.
    pub async fn content(
        &self,
        dataset: &DatasetRecord,
    ) -> ApiResult<futures::stream::BoxStream<'static, Result<Bytes, std::io::Error>>> {
        let url = Url::parse(&dataset.uri).map_err(|e| ApiError::internal("reading", e))?;
        if !dataset.uri.ends_with('/') {
            let store = self.store(&url)?;
            let path = object_path(&url).map_err(|e| ApiError::internal("reading", e))?;
            let got = store
                .get(&path)
                .await
                .map_err(|e| ApiError::internal("reading a dataset", e))?;
            return Ok(got
                .into_stream()
                .map(|r| r.map_err(std::io::Error::other))
                .boxed());
        }
        let batches = self.ordered_batches(dataset).await?;
        let schema = self.frame(dataset).await?.schema().as_arrow().clone();
        Ok(parquet_stream(Arc::new(schema), batches).boxed())
    }
}

/// Encodes batches as one Parquet file, yielding bytes as row groups are
/// finished (the writer never seeks, so its buffer can be drained).
fn parquet_stream(
    schema: arrow::datatypes::SchemaRef,
    batches: impl Stream<Item = Result<RecordBatch, ApiError>> + Send + 'static,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        let fail = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
        let mut writer = match ArrowWriter::try_new(Vec::new(), schema, None) {
            Ok(w) => w,
            Err(e) => {
                let _closed = tx.send(Err(fail(&e))).await;
                return;
            }
        };
        let mut batches = Box::pin(batches);
        while let Some(batch) = batches.next().await {
            let written = batch
                .map_err(|e| fail(&e.detail))
                .and_then(|b| writer.write(&b).map_err(|e| fail(&e)));
            if let Err(e) = written {
                let _closed = tx.send(Err(e)).await;
                return;
            }
            let chunk = std::mem::take(writer.inner_mut());
            if !chunk.is_empty() && tx.send(Ok(Bytes::from(chunk))).await.is_err() {
                return; // The client went away.
            }
        }
        match writer.into_inner() {
            Ok(rest) => {
                let _closed = tx.send(Ok(Bytes::from(rest))).await;
            }
            Err(e) => {
                let _closed = tx.send(Err(fail(&e))).await;
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) })
}
