//! Streamed writes of Parquet or CSV parts into a staging directory, split
//! into hive partitions, then committed atomically ([`super::commit`]).

use super::commit::{
    commit, local_path_of, remove_local_dir, remove_prefix, remove_stale_staging, staging_path,
};
use super::{FileFormat, ParquetWriteOptions, WriteSummary};
use crate::error::{KilnError, Result};
use crate::session::KilnSession;
use crate::storage::object_path;
use arrow::record_batch::RecordBatch;
use datafusion::dataframe::DataFrame;
use futures::StreamExt;
use object_store::buffered::BufWriter;
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::AsyncArrowWriter;
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use std::sync::Arc;
use url::Url;

/// Writes `df` as a directory of Parquet files at `target` with an atomic
/// commit: files go to a hidden staging directory beside the target, and only
/// a complete output replaces the previous one. A failed write leaves the
/// previous output untouched and removes its staging files.
pub async fn write_parquet(
    session: &KilnSession,
    df: DataFrame,
    target: &Url,
    options: &ParquetWriteOptions,
) -> Result<WriteSummary> {
    write_table(session, df, target, FileFormat::Parquet, options).await
}

/// Writes `df` as a directory of `format` files at `target` (one file per
/// DataFusion partition and hive directory), with the atomic commit of
/// [`write_parquet`]. `options` sets the Parquet layout; `partition_by`
/// applies to both formats.
pub async fn write_table(
    session: &KilnSession,
    df: DataFrame,
    target: &Url,
    format: FileFormat,
    options: &ParquetWriteOptions,
) -> Result<WriteSummary> {
    let schema = Arc::new(df.schema().as_arrow().clone());
    let streams = batch_streams(df, target).await?;
    write_streams(session, schema, streams, target, format, options).await
}

/// One stream of batches per partition of `df`, to be written to `target`
/// by [`write_streams`] (after a caller looked at or changed them).
pub async fn batch_streams(df: DataFrame, target: &Url) -> Result<Vec<BatchStream>> {
    Ok(df
        .execute_stream_partitioned()
        .await
        .map_err(|e| KilnError::execution(format!("planning the write of {target}"), e))?
        .into_iter()
        .map(|s| {
            s.map(|b| b.map_err(|e| KilnError::execution("computing the output", e)))
                .boxed()
        })
        .collect())
}

/// A stream of batches to write.
pub type BatchStream =
    futures::stream::BoxStream<'static, Result<arrow::record_batch::RecordBatch>>;

/// The batches a producer sends on `rx`, as a stream for [`write_streams`].
pub fn receiver_stream(rx: tokio::sync::mpsc::Receiver<Result<RecordBatch>>) -> BatchStream {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (b, rx)) }).boxed()
}

/// Writes streams of batches (one file per non-empty stream and hive
/// directory) with the same atomic commit as [`write_parquet`].
pub async fn write_streams(
    session: &KilnSession,
    schema: arrow::datatypes::SchemaRef,
    streams: Vec<BatchStream>,
    target: &Url,
    format: FileFormat,
    options: &ParquetWriteOptions,
) -> Result<WriteSummary> {
    let mut streams = Some(streams);
    write_stream_passes(session, schema, 1, target, format, options, |_| {
        let streams = streams.take().unwrap_or_default();
        async move { Ok(streams) }
    })
    .await
}

/// Writes `passes` one after another into one Parquet directory at
/// `target`, with one atomic commit: readers see the whole result or the
/// previous one. Each pass runs its partitions concurrently, and the next
/// pass starts when it is written, so a query split into passes over
/// disjoint rows (key ranges of a join) holds one pass's state at a time.
/// Every pass must have the schema of the first.
pub async fn write_parquet_passes(
    session: &KilnSession,
    passes: Vec<DataFrame>,
    target: &Url,
    options: &ParquetWriteOptions,
) -> Result<WriteSummary> {
    let Some(first) = passes.first() else {
        return Err(KilnError::internal(
            format!("writing {target}"),
            "no passes to write",
        ));
    };
    let schema = Arc::new(first.schema().as_arrow().clone());
    for (i, pass) in passes.iter().enumerate() {
        if pass.schema().as_arrow().fields() != schema.fields() {
            return Err(KilnError::internal(
                format!("writing {target}"),
                format!("pass {} has another schema than pass 1", i + 1),
            ));
        }
    }
    let n = passes.len();
    let mut passes = passes.into_iter();
    write_stream_passes(
        session,
        schema,
        n,
        target,
        FileFormat::Parquet,
        options,
        |_| {
            let next = passes.next();
            async move {
                match next {
                    Some(df) => batch_streams(df, target).await,
                    None => Ok(Vec::new()),
                }
            }
        },
    )
    .await
}

/// Removes a table this process wrote for itself (scratch rows between two
/// steps of a task). Best effort, like the removal of staging files: a
/// failure is a warning, and the rows are only disk space.
pub async fn remove_table(session: &KilnSession, target: &Url) {
    let removed = async {
        let store = session.stores().store_for(target)?;
        let dir = object_path(target)?;
        remove_prefix(&store, &dir).await;
        if let Some(p) = local_path_of(target, &dir) {
            remove_local_dir(&p);
        }
        Ok::<_, KilnError>(())
    };
    if let Err(e) = removed.await {
        tracing::warn!("scratch table {target} not removed: {e}");
    }
}

/// Writes `n` passes of streams into one output at `target`, with one
/// atomic commit: the streams of pass `p` are made by `pass(p)` only when
/// pass `p - 1` is written (the writer behind [`write_streams`] and
/// [`write_parquet_passes`], for callers that look at the batches).
pub async fn write_stream_passes<F, Fut>(
    session: &KilnSession,
    schema: arrow::datatypes::SchemaRef,
    n: usize,
    target: &Url,
    format: FileFormat,
    options: &ParquetWriteOptions,
    mut pass: F,
) -> Result<WriteSummary>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<BatchStream>>>,
{
    let partitioner = crate::hive::Partitioner::new(&schema, &options.partition_by)?;
    if format == FileFormat::Parquet {
        // Layout errors (unknown columns, delta on strings) before any file.
        options.properties(partitioner.file_schema())?;
    }
    let partitioner = Arc::new(partitioner);
    let store = session.stores().store_for(target)?;
    let target_dir = object_path(target)?;
    remove_stale_staging(&store, target, &target_dir).await;
    let staging = staging_path(&target_dir, "tmp");
    let sink = PartSink {
        store: Arc::clone(&store),
        format,
        options: Arc::new(options.clone()),
    };
    let mut parts = Parts::default();
    let mut written = Ok(());
    for p in 0..n {
        written = match pass(p).await {
            Ok(streams) => {
                write_partitions(
                    streams,
                    Arc::clone(&partitioner),
                    &sink,
                    &staging,
                    &mut parts,
                )
                .await
            }
            Err(e) => Err(e),
        };
        if written.is_err() {
            break;
        }
    }
    if written.is_ok() && parts.summary.files == 0 {
        // An empty result still carries its schema.
        written = async {
            let (w, path) = PartWriter::open(&sink, &staging, 0, partitioner.file_schema())?;
            w.close(&path).await?;
            parts.summary.files = 1;
            Ok(())
        }
        .await;
    }
    match written {
        Ok(()) => {
            commit(&store, target, &staging, &target_dir).await?;
            Ok(parts.summary)
        }
        Err(e) => {
            remove_prefix(&store, &staging).await;
            if let Some(p) = local_path_of(target, &staging) {
                remove_local_dir(&p);
            }
            Err(e.context(format!("writing {target}")))
        }
    }
}

/// The part files written so far, across passes.
#[derive(Default)]
struct Parts {
    /// Streams started so far: the next stream's file index.
    streams: usize,
    /// Files per hive directory so far, for dense numbering.
    files_in: BTreeMap<Vec<String>, usize>,
    summary: WriteSummary,
}

/// Where and how part files are written.
#[derive(Clone)]
struct PartSink {
    store: Arc<dyn ObjectStore>,
    format: FileFormat,
    options: Arc<ParquetWriteOptions>,
}

impl PartSink {
    fn part_name(&self, i: usize) -> String {
        format!("part-{i:05}.{}", self.format.extension())
    }
}

/// One output file being written.
enum PartWriter {
    Parquet(Box<AsyncArrowWriter<BufWriter>>),
    // Boxed too: a buffered writer is large, and the enum moves around.
    Csv { sink: Box<BufWriter>, header: bool },
}

impl PartWriter {
    fn open(
        sink: &PartSink,
        dir: &StorePath,
        i: usize,
        schema: &arrow::datatypes::SchemaRef,
    ) -> Result<(Self, StorePath)> {
        let path = dir.clone().join(sink.part_name(i));
        let out = BufWriter::new(Arc::clone(&sink.store), path.clone());
        let writer = match sink.format {
            FileFormat::Parquet => PartWriter::Parquet(Box::new(
                AsyncArrowWriter::try_new(
                    out,
                    Arc::clone(schema),
                    Some(sink.options.properties(schema)?),
                )
                .map_err(|e| KilnError::io(&path, e))?,
            )),
            FileFormat::Csv => PartWriter::Csv {
                sink: Box::new(out),
                header: true,
            },
        };
        Ok((writer, path))
    }

    async fn write(&mut self, batch: &RecordBatch, path: &StorePath) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        match self {
            PartWriter::Parquet(w) => w.write(batch).await.map_err(|e| KilnError::io(path, e)),
            PartWriter::Csv { sink, header } => {
                let mut buf = Vec::new();
                {
                    let mut w = arrow::csv::WriterBuilder::new()
                        .with_header(*header)
                        .build(&mut buf);
                    w.write(batch).map_err(|e| KilnError::io(path, e))?;
                }
                *header = false;
                sink.write_all(&buf)
                    .await
                    .map_err(|e| KilnError::io(path, e))
            }
        }
    }

    async fn close(self, path: &StorePath) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        match self {
            PartWriter::Parquet(w) => w
                .close()
                .await
                .map(|_| ())
                .map_err(|e| KilnError::io(path, e)),
            PartWriter::Csv { mut sink, .. } => {
                sink.shutdown().await.map_err(|e| KilnError::io(path, e))
            }
        }
    }
}

/// Rows each stream wrote per hive directory.
type Written = Vec<(Vec<String>, u64)>;

/// Writes one stream: one file per hive directory it has rows for.
async fn write_stream(
    i: usize,
    mut stream: BatchStream,
    partitioner: Arc<crate::hive::Partitioner>,
    sink: PartSink,
    staging: StorePath,
) -> Result<Written> {
    let schema = Arc::clone(partitioner.file_schema());
    let mut writers: BTreeMap<Vec<String>, (PartWriter, StorePath, u64)> = BTreeMap::new();
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        if batch.num_rows() == 0 {
            continue;
        }
        for (dirs, part) in partitioner.split(&batch)? {
            let (w, path, rows) = match writers.entry(dirs) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    let dir = partition_dir(&staging, e.key());
                    let (w, path) = PartWriter::open(&sink, &dir, i, &schema)?;
                    e.insert((w, path, 0))
                }
            };
            *rows += part.num_rows() as u64;
            w.write(&part, path).await?;
        }
    }
    let mut written = Vec::new();
    for (dirs, (w, path, rows)) in writers {
        w.close(&path).await?;
        written.push((dirs, rows));
    }
    Ok(written)
}

/// Writes one pass's streams concurrently, numbering their files after
/// those of earlier passes.
async fn write_partitions(
    streams: Vec<BatchStream>,
    partitioner: Arc<crate::hive::Partitioner>,
    sink: &PartSink,
    staging: &StorePath,
    parts: &mut Parts,
) -> Result<()> {
    let first = parts.streams;
    parts.streams += streams.len();
    let tasks: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, stream)| {
            tokio::spawn(write_stream(
                first + i,
                stream,
                Arc::clone(&partitioner),
                sink.clone(),
                staging.clone(),
            ))
        })
        .collect();
    let mut first_error = None;
    for (i, t) in tasks.into_iter().enumerate() {
        let i = first + i;
        let written = match t.await {
            Ok(Ok(written)) => written,
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
                continue;
            }
            Err(e) => {
                first_error.get_or_insert(KilnError::internal("writing a part file", e));
                continue;
            }
        };
        for (dirs, rows) in written {
            // Number the files of each directory densely, so the names do
            // not depend on which streams got rows.
            let count = parts.files_in.entry(dirs.clone()).or_insert(0);
            let dense = *count;
            if dense != i {
                let dir = partition_dir(staging, &dirs);
                let from = dir.clone().join(sink.part_name(i));
                let to = dir.join(sink.part_name(dense));
                if let Err(e) = sink.store.rename(&from, &to).await {
                    first_error.get_or_insert(KilnError::io(&to, e));
                }
            }
            *count += 1;
            parts.summary.rows += rows;
            parts.summary.files += 1;
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// `base/column=value/...` for a partition's directory segments.
fn partition_dir(base: &StorePath, dirs: &[String]) -> StorePath {
    dirs.iter()
        .fold(base.clone(), |path, segment| path.join(segment.as_str()))
}

/// Writes a directory of small named files (a report, its plots) at
/// `target` with the same atomic commit as [`write_parquet`]: readers see
/// the previous directory or the whole new one.
pub async fn write_files(
    session: &KilnSession,
    target: &Url,
    files: &[(String, Vec<u8>)],
) -> Result<()> {
    let store = session.stores().store_for(target)?;
    let target_dir = object_path(target)?;
    remove_stale_staging(&store, target, &target_dir).await;
    let staging = staging_path(&target_dir, "tmp");
    let mut written = Ok(());
    for (name, bytes) in files {
        let path = StorePath::from(format!("{}/{name}", staging.as_ref()));
        if let Err(e) = store.put(&path, bytes.clone().into()).await {
            written = Err(KilnError::io(format!("{target}{name}"), e));
            break;
        }
    }
    match written {
        Ok(()) => commit(&store, target, &staging, &target_dir).await,
        Err(e) => {
            remove_prefix(&store, &staging).await;
            if let Some(p) = local_path_of(target, &staging) {
                remove_local_dir(&p);
            }
            Err(e)
        }
    }
}
