//! Readers and writers for the lake: CSV and Parquet from files, directories
//! and globs; joins of several tables; Parquet output with an atomic commit.

use crate::error::{KilnError, Result};
use crate::session::KilnSession;
use crate::storage::{local_path, object_path};
use datafusion::dataframe::DataFrame;
use datafusion::prelude::{CsvReadOptions, JoinType, ParquetReadOptions};
use futures::StreamExt;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use url::Url;

/// Input file format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    #[default]
    Parquet,
    Csv,
}

impl FileFormat {
    fn extension(self) -> &'static str {
        match self {
            FileFormat::Parquet => ".parquet",
            FileFormat::Csv => ".csv",
        }
    }
}

fn has_glob(s: &str) -> bool {
    s.contains(['*', '?', '['])
}

/// Fails with a clear error when nothing exists at `url`.
pub async fn ensure_exists(session: &KilnSession, url: &Url) -> Result<()> {
    let store = session.stores().store_for(url)?;
    let text = url.as_str();
    let prefix_url = if has_glob(text) {
        let cut = text.find(['*', '?', '[']).unwrap_or(text.len());
        let head = &text[..cut];
        let head = &head[..head.rfind('/').map(|i| i + 1).unwrap_or(head.len())];
        Url::parse(head).map_err(|e| KilnError::config(e.to_string()))?
    } else {
        url.clone()
    };
    let path = object_path(&prefix_url)?;
    if store.head(&path).await.is_ok() {
        return Ok(());
    }
    let mut listing = store.list(Some(&path));
    match listing.next().await {
        Some(Ok(_)) => Ok(()),
        Some(Err(e)) => Err(KilnError::io(url, e)),
        None => Err(KilnError::config_fix(
            format!("input path not found: {url}"),
            "check the path (relative paths resolve against storage.root)",
        )),
    }
}

/// Reads a table from a file, a directory or a glob.
pub async fn read_table(session: &KilnSession, url: &Url, format: FileFormat) -> Result<DataFrame> {
    ensure_exists(session, url).await?;
    let ctx = session.context();
    let path = url.as_str();
    // A single file keeps its own name; a directory or glob lists its files.
    let is_dir = path.ends_with('/') || local_path(url).is_some_and(|p| p.is_dir());
    let path = if is_dir && !path.ends_with('/') {
        format!("{path}/")
    } else {
        path.to_string()
    };
    let ext = if is_dir || has_glob(&path) {
        format.extension()
    } else {
        ""
    };
    // A directory of hive partitions gets its partition columns back.
    let partitions = if is_dir && !has_glob(&path) {
        let store = session.stores().store_for(url)?;
        crate::hive::discover(&store, &object_path(url)?).await?
    } else {
        Vec::new()
    };
    let as_text: Vec<(String, arrow::datatypes::DataType)> = partitions
        .iter()
        .map(|(name, _)| (name.clone(), arrow::datatypes::DataType::Utf8))
        .collect();
    let df = match format {
        FileFormat::Parquet => {
            ctx.read_parquet(
                path.clone(),
                ParquetReadOptions::default()
                    .file_extension(ext)
                    .table_partition_cols(as_text),
            )
            .await
        }
        FileFormat::Csv => {
            ctx.read_csv(
                path.clone(),
                CsvReadOptions::new()
                    .has_header(true)
                    .file_extension(ext)
                    .table_partition_cols(as_text),
            )
            .await
        }
    };
    let df = df.map_err(|e| KilnError::execution(format!("reading {path}"), e))?;
    crate::hive::restore_types(df, &partitions)
}

/// How one table joins onto the ones before it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinSpec {
    pub on: Vec<String>,
    #[serde(default)]
    pub how: JoinHow,
}

/// Join types, with Spark's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JoinHow {
    #[default]
    Inner,
    Left,
    Right,
    Full,
    Outer,
}

impl From<JoinHow> for JoinType {
    fn from(h: JoinHow) -> Self {
        match h {
            JoinHow::Inner => JoinType::Inner,
            JoinHow::Left => JoinType::Left,
            JoinHow::Right => JoinType::Right,
            JoinHow::Full | JoinHow::Outer => JoinType::Full,
        }
    }
}

/// Joins `right` onto `left` by equal key columns; the key columns appear
/// once in the result (taken from the left side, coalesced for full joins).
pub fn join_on(
    left: DataFrame,
    right: DataFrame,
    spec: &JoinSpec,
    right_name: &str,
) -> Result<DataFrame> {
    use datafusion::prelude::{coalesce, col, ident};
    for key in &spec.on {
        for (side, df) in [("left", &left), ("right", &right)] {
            if df.schema().field_with_unqualified_name(key).is_err() {
                return Err(KilnError::config(format!(
                    "join of '{right_name}': key column '{key}' not found on the {side} side"
                )));
            }
        }
    }
    let left_cols: Vec<String> = left
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    let right_cols: Vec<String> = right
        .schema()
        .fields()
        .iter()
        .map(|f| f.name().clone())
        .collect();
    // Non-key columns present on both sides would be ambiguous.
    for c in &right_cols {
        if !spec.on.contains(c) && left_cols.contains(c) {
            return Err(KilnError::config_fix(
                format!("join of '{right_name}': column '{c}' exists on both sides"),
                "drop or rename it in one of the tables",
            ));
        }
    }
    let right_aliased = right
        .select(
            right_cols
                .iter()
                .map(|c| {
                    let e = ident(c);
                    if spec.on.contains(c) {
                        e.alias(format!("__kiln_r_{c}"))
                    } else {
                        e
                    }
                })
                .collect::<Vec<_>>(),
        )
        .map_err(KilnError::from)?;
    let left_keys: Vec<String> = spec.on.clone();
    let right_keys: Vec<String> = spec.on.iter().map(|k| format!("__kiln_r_{k}")).collect();
    let joined = left
        .join(
            right_aliased,
            spec.how.into(),
            &left_keys.iter().map(String::as_str).collect::<Vec<_>>(),
            &right_keys.iter().map(String::as_str).collect::<Vec<_>>(),
            None,
        )
        .map_err(|e| KilnError::execution(format!("joining '{right_name}'"), e))?;
    let mut out = Vec::new();
    for c in &left_cols {
        if spec.on.contains(c)
            && matches!(spec.how, JoinHow::Full | JoinHow::Outer | JoinHow::Right)
        {
            out.push(coalesce(vec![ident(c), col(format!("__kiln_r_{c}"))]).alias(c));
        } else {
            out.push(ident(c));
        }
    }
    for c in &right_cols {
        if !spec.on.contains(c) {
            out.push(ident(c));
        }
    }
    joined.select(out).map_err(KilnError::from)
}

/// Parquet output settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ParquetWriteOptions {
    /// `snappy` (default), `zstd`, `lz4`, `gzip` or `none`.
    pub compression: String,
    /// Maximum rows per row group.
    pub row_group_size: usize,
    /// Per-column layout, overriding the default (a dictionary that falls
    /// back to plain encoding, and min/max statistics per page).
    pub columns: BTreeMap<String, ColumnLayout>,
    /// Hive-style partition columns, outermost first: rows go to
    /// `column=value/` directories and the columns leave the files, as with
    /// Spark's `partitionBy` (see [`crate::hive`]).
    pub partition_by: Vec<String>,
}

/// How one Parquet column is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ColumnLayout {
    /// The value encoding; unset keeps the writer's default (dictionary).
    pub encoding: Option<ColumnEncoding>,
    /// Whether min/max statistics are written (default true). They cost
    /// time and prune nothing on low-cardinality columns such as categories.
    pub statistics: bool,
}

impl Default for ColumnLayout {
    fn default() -> Self {
        ColumnLayout {
            encoding: None,
            statistics: true,
        }
    }
}

/// A Parquet value encoding a column can be given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ColumnEncoding {
    /// Dictionary with plain fallback: few distinct values.
    Dictionary,
    /// Plain values: many distinct values (measurements, walks).
    Plain,
    /// `DELTA_BINARY_PACKED`: integers and timestamps, best when sorted or
    /// of a bounded range (ids, sequences, wide integer ranges).
    Delta,
}

impl Default for ParquetWriteOptions {
    fn default() -> Self {
        ParquetWriteOptions {
            compression: "snappy".into(),
            row_group_size: 1 << 17,
            columns: BTreeMap::new(),
            partition_by: Vec::new(),
        }
    }
}

/// Rows handed to a column encoder at a time (the crate's default is 1,024;
/// larger batches cut per-batch overhead, pages grow by at most one batch).
const WRITE_BATCH_ROWS: usize = 8192;

impl ParquetWriteOptions {
    /// The writer properties for files of `schema`; a layout naming an
    /// unknown column, or delta encoding on a non-integer column, is a
    /// configuration error.
    fn properties(&self, schema: &arrow::datatypes::Schema) -> Result<WriterProperties> {
        let compression = match self.compression.to_ascii_lowercase().as_str() {
            "snappy" => Compression::SNAPPY,
            "zstd" => Compression::ZSTD(ZstdLevel::default()),
            "lz4" => Compression::LZ4_RAW,
            "gzip" => Compression::GZIP(Default::default()),
            "none" | "uncompressed" => Compression::UNCOMPRESSED,
            other => {
                return Err(KilnError::config_fix(
                    format!("unknown Parquet compression '{other}'"),
                    "use snappy, zstd, lz4, gzip or none",
                ));
            }
        };
        if self.row_group_size == 0 {
            return Err(KilnError::config("row_group_size must be at least 1"));
        }
        let mut builder = WriterProperties::builder()
            .set_compression(compression)
            .set_max_row_group_row_count(Some(self.row_group_size))
            .set_write_batch_size(WRITE_BATCH_ROWS);
        for (name, layout) in &self.columns {
            let field = schema.field_with_name(name).map_err(|_| {
                let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                let hint = crate::suggest::closest(name, &names)
                    .map(|c| format!("did you mean '{c}'?"))
                    .unwrap_or_else(|| format!("the output's columns are: {}", names.join(", ")));
                KilnError::config_fix(
                    format!(
                        "Parquet layout for column '{name}': no such column in the output files \
                         (partition_by columns are directory names)"
                    ),
                    hint,
                )
            })?;
            let path = || parquet::schema::types::ColumnPath::from(name.as_str());
            match layout.encoding {
                None => {}
                Some(ColumnEncoding::Dictionary) => {
                    builder = builder.set_column_dictionary_enabled(path(), true);
                }
                Some(ColumnEncoding::Plain) => {
                    builder = builder.set_column_dictionary_enabled(path(), false);
                }
                Some(ColumnEncoding::Delta) => {
                    let dt = field.data_type();
                    if !(dt.is_integer() || matches!(dt, arrow::datatypes::DataType::Timestamp(..)))
                    {
                        return Err(KilnError::config_fix(
                            format!(
                                "Parquet layout for column '{name}': delta encoding needs an \
                                 integer or timestamp column, but it is {dt}"
                            ),
                            "use encoding: plain or dictionary for this column",
                        ));
                    }
                    builder = builder
                        .set_column_dictionary_enabled(path(), false)
                        .set_column_encoding(path(), parquet::basic::Encoding::DELTA_BINARY_PACKED);
                }
            }
            if !layout.statistics {
                builder = builder.set_column_statistics_enabled(
                    path(),
                    parquet::file::properties::EnabledStatistics::None,
                );
            }
        }
        Ok(builder.build())
    }
}

/// What a write produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WriteSummary {
    pub rows: u64,
    pub files: usize,
}

/// Output file format with its settings.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputFormat {
    Parquet(ParquetWriteOptions),
    Csv,
}

/// A stream of batches to write.
pub type BatchStream =
    futures::stream::BoxStream<'static, Result<arrow::record_batch::RecordBatch>>;

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
    let schema = Arc::new(df.schema().as_arrow().clone());
    let streams: Vec<BatchStream> = df
        .execute_stream_partitioned()
        .await
        .map_err(|e| KilnError::execution(format!("planning the write of {target}"), e))?
        .into_iter()
        .map(|s| {
            s.map(|b| b.map_err(|e| KilnError::execution("computing the output", e)))
                .boxed()
        })
        .collect();
    write_streams(
        session,
        schema,
        streams,
        target,
        &OutputFormat::Parquet(options.clone()),
    )
    .await
}

/// Writes streams of batches (one file per non-empty stream) with the same
/// atomic commit as [`write_parquet`].
pub async fn write_streams(
    session: &KilnSession,
    schema: arrow::datatypes::SchemaRef,
    streams: Vec<BatchStream>,
    target: &Url,
    format: &OutputFormat,
) -> Result<WriteSummary> {
    let partitioner = Arc::new(match format {
        OutputFormat::Parquet(o) => {
            let partitioner = crate::hive::Partitioner::new(&schema, &o.partition_by)?;
            o.properties(partitioner.file_schema())?;
            partitioner
        }
        OutputFormat::Csv => crate::hive::Partitioner::new(&schema, &[])?,
    });
    let store = session.stores().store_for(target)?;
    let target_dir = object_path(target)?;
    remove_stale_staging(&store, target, &target_dir).await;
    let staging = staging_path(&target_dir, "tmp");
    let result = write_partitions(streams, partitioner, &store, &staging, format).await;
    match result {
        Ok(summary) => {
            commit(&store, target, &staging, &target_dir).await?;
            Ok(summary)
        }
        Err(e) => {
            remove_prefix(&store, &staging).await;
            if let Some(p) = local_path_of(target, &staging) {
                let _ = std::fs::remove_dir_all(p);
            }
            Err(e.context(format!("writing {target}")))
        }
    }
}

/// Removes staging left by a writer of the same target that was killed.
async fn remove_stale_staging(
    store: &Arc<dyn ObjectStore>,
    target: &Url,
    target_dir: &object_store::path::Path,
) {
    let text = target_dir.as_ref();
    let (parent, name) = text.rsplit_once('/').unwrap_or(("", text));
    let prefix = format!(".{name}.kiln-");
    if let Some(dir) = local_path(target).and_then(|p| p.parent().map(std::path::Path::to_path_buf))
    {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        return;
    }
    let parent = object_store::path::Path::from(parent);
    if let Ok(listing) = store.list_with_delimiter(Some(&parent)).await {
        for p in listing.common_prefixes {
            if p.filename().is_some_and(|f| f.starts_with(&prefix)) {
                remove_prefix(store, &p).await;
            }
        }
    }
}

fn staging_path(target: &object_store::path::Path, kind: &str) -> object_store::path::Path {
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
        object_store::path::Path::from(staged)
    } else {
        object_store::path::Path::from(format!("{parent}/{staged}"))
    }
}

fn local_path_of(target: &Url, path: &object_store::path::Path) -> Option<std::path::PathBuf> {
    (target.scheme() == "file").then(|| std::path::PathBuf::from(format!("/{}", path.as_ref())))
}

/// One output file being written.
enum PartWriter {
    Parquet(Box<AsyncArrowWriter<object_store::buffered::BufWriter>>),
    // Boxed too: a buffered writer is large, and the enum moves around.
    Csv(Box<object_store::buffered::BufWriter>, bool),
}

impl PartWriter {
    fn open(
        store: &Arc<dyn ObjectStore>,
        dir: &object_store::path::Path,
        i: usize,
        schema: &arrow::datatypes::SchemaRef,
        format: &OutputFormat,
    ) -> Result<(Self, object_store::path::Path)> {
        let ext = if matches!(format, OutputFormat::Csv) {
            "csv"
        } else {
            "parquet"
        };
        let path = dir.clone().join(format!("part-{i:05}.{ext}"));
        let sink = object_store::buffered::BufWriter::new(Arc::clone(store), path.clone());
        let writer = match format {
            OutputFormat::Parquet(o) => PartWriter::Parquet(Box::new(
                AsyncArrowWriter::try_new(sink, Arc::clone(schema), Some(o.properties(schema)?))
                    .map_err(|e| KilnError::io(&path, e))?,
            )),
            OutputFormat::Csv => PartWriter::Csv(Box::new(sink), true),
        };
        Ok((writer, path))
    }

    async fn write(
        &mut self,
        batch: &arrow::record_batch::RecordBatch,
        path: &object_store::path::Path,
    ) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        match self {
            PartWriter::Parquet(w) => w.write(batch).await.map_err(|e| KilnError::io(path, e)),
            PartWriter::Csv(sink, header) => {
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

    async fn close(self, path: &object_store::path::Path) -> Result<()> {
        use tokio::io::AsyncWriteExt;
        match self {
            PartWriter::Parquet(w) => w
                .close()
                .await
                .map(|_| ())
                .map_err(|e| KilnError::io(path, e)),
            PartWriter::Csv(mut sink, _) => {
                sink.shutdown().await.map_err(|e| KilnError::io(path, e))
            }
        }
    }
}

async fn write_partitions(
    streams: Vec<BatchStream>,
    partitioner: Arc<crate::hive::Partitioner>,
    store: &Arc<dyn ObjectStore>,
    staging: &object_store::path::Path,
    format: &OutputFormat,
) -> Result<WriteSummary> {
    let schema = Arc::clone(partitioner.file_schema());
    let mut tasks = Vec::new();
    for (i, mut stream) in streams.into_iter().enumerate() {
        let store = Arc::clone(store);
        let staging = staging.clone();
        let schema = Arc::clone(&schema);
        let partitioner = Arc::clone(&partitioner);
        let format = format.clone();
        tasks.push(tokio::spawn(async move {
            // One file per partition directory this stream has rows for.
            let mut writers: BTreeMap<Vec<String>, (PartWriter, object_store::path::Path, u64)> =
                BTreeMap::new();
            while let Some(batch) = stream.next().await {
                let batch = batch?;
                if batch.num_rows() == 0 {
                    continue;
                }
                for (dirs, part) in partitioner.split(&batch)? {
                    let (w, path, rows) = match writers.entry(dirs) {
                        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::btree_map::Entry::Vacant(e) => {
                            let dir = partition_dir(&staging, e.key());
                            let (w, path) = PartWriter::open(&store, &dir, i, &schema, &format)?;
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
            Ok::<_, KilnError>(written)
        }));
    }
    let mut summary = WriteSummary::default();
    let mut first_error = None;
    let ext = if matches!(format, OutputFormat::Csv) {
        "csv"
    } else {
        "parquet"
    };
    // Files per directory so far, for dense numbering.
    let mut files_in: BTreeMap<Vec<String>, usize> = BTreeMap::new();
    for (i, t) in tasks.into_iter().enumerate() {
        match t
            .await
            .map_err(|e| KilnError::io(staging, format!("writer task failed: {e}")))
        {
            Ok(Ok(written)) => {
                for (dirs, rows) in written {
                    // Number the files of each directory densely, so the
                    // names do not depend on which streams got rows.
                    let count = files_in.entry(dirs.clone()).or_insert(0);
                    let dense = *count;
                    if dense != i {
                        let dir = partition_dir(staging, &dirs);
                        let from = dir.clone().join(format!("part-{i:05}.{ext}"));
                        let to = dir.join(format!("part-{dense:05}.{ext}"));
                        if let Err(e) = store.rename(&from, &to).await {
                            first_error.get_or_insert(KilnError::io(&to, e));
                        }
                    }
                    *count += 1;
                    summary.rows += rows;
                    summary.files += 1;
                }
            }
            Ok(Err(e)) | Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    if summary.files == 0 {
        // An empty result still carries its schema.
        let (w, path) = PartWriter::open(store, staging, 0, &schema, format)?;
        w.close(&path).await?;
        summary.files = 1;
    }
    Ok(summary)
}

/// `base/column=value/...` for a partition's directory segments.
fn partition_dir(base: &object_store::path::Path, dirs: &[String]) -> object_store::path::Path {
    dirs.iter()
        .fold(base.clone(), |path, segment| path.join(segment.as_str()))
}

/// Replaces the target with the staged output.
async fn commit(
    store: &Arc<dyn ObjectStore>,
    target: &Url,
    staging: &object_store::path::Path,
    target_dir: &object_store::path::Path,
) -> Result<()> {
    if let (Some(staged), Some(final_dir)) = (local_path_of(target, staging), local_path(target)) {
        // Local file system: two renames; the old output is only removed
        // once the new one is in place.
        let final_dir = std::path::PathBuf::from(final_dir.to_string_lossy().trim_end_matches('/'));
        std::fs::write(staged.join("_SUCCESS"), b"")
            .map_err(|e| KilnError::io(staged.display(), e))?;
        if let Some(parent) = final_dir.parent() {
            std::fs::create_dir_all(parent).map_err(|e| KilnError::io(parent.display(), e))?;
        }
        let old = local_path_of(target, &staging_path(target_dir, "old"));
        let had_old = final_dir.exists();
        if let (true, Some(old)) = (had_old, &old) {
            std::fs::rename(&final_dir, old).map_err(|e| KilnError::io(final_dir.display(), e))?;
        }
        if let Err(e) = std::fs::rename(&staged, &final_dir) {
            if let (true, Some(old)) = (had_old, &old) {
                let _ = std::fs::rename(old, &final_dir);
            }
            return Err(KilnError::io(final_dir.display(), e));
        }
        if let (true, Some(old)) = (had_old, old) {
            let _ = std::fs::remove_dir_all(old);
        }
        return Ok(());
    }
    // Object stores have no directory rename: the new files are copied in
    // under their final names, then `_SUCCESS` is written, then stale files
    // of the previous output are deleted.
    let mut staged = Vec::new();
    let mut listing = store.list(Some(staging));
    while let Some(meta) = listing.next().await {
        staged.push(meta.map_err(|e| KilnError::io(staging, e))?.location);
    }
    let mut existing = Vec::new();
    let mut listing = store.list(Some(target_dir));
    while let Some(meta) = listing.next().await {
        existing.push(meta.map_err(|e| KilnError::io(target_dir, e))?.location);
    }
    let mut written = Vec::new();
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
        written.push(dest);
    }
    let marker = target_dir.clone().join("_SUCCESS");
    store
        .put(&marker, object_store::PutPayload::default())
        .await
        .map_err(|e| KilnError::io(&marker, e))?;
    for old in existing {
        if !written.contains(&old) && old != marker {
            let _ = store.delete(&old).await;
        }
    }
    remove_prefix(store, staging).await;
    Ok(())
}

async fn remove_prefix(store: &Arc<dyn ObjectStore>, prefix: &object_store::path::Path) {
    let mut listing = store.list(Some(prefix));
    let mut paths = Vec::new();
    while let Some(Ok(meta)) = listing.next().await {
        paths.push(meta.location);
    }
    for p in paths {
        let _ = store.delete(&p).await;
    }
}

/// Counts rows and a content checksum that does not depend on row order:
/// the wrapping sum of a hash of every row's values.
pub async fn row_checksum(df: DataFrame) -> Result<(u64, u64)> {
    use arrow::util::display::{ArrayFormatter, FormatOptions};
    use std::hash::{Hash, Hasher};
    let mut stream = df
        .execute_stream()
        .await
        .map_err(|e| KilnError::execution("checksumming", e))?;
    let (mut rows, mut sum) = (0u64, 0u64);
    let opts = FormatOptions::default().with_null("∅");
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| KilnError::execution("checksumming", e))?;
        let formatters: Vec<ArrayFormatter<'_>> = batch
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts))
            .collect::<std::result::Result<_, _>>()
            .map_err(|e| KilnError::data("checksum", e.to_string()))?;
        for r in 0..batch.num_rows() {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            for f in &formatters {
                f.value(r).to_string().hash(&mut h);
            }
            sum = sum.wrapping_add(h.finish());
            rows += 1;
        }
    }
    Ok((rows, sum))
}
