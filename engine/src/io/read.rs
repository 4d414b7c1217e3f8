//! Reading tables: a file, a directory (with hive partitions) or a glob.

use super::FileFormat;
use crate::error::{KilnError, Result};
use crate::session::KilnSession;
use crate::storage::{local_path, object_path};
use datafusion::dataframe::DataFrame;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions};
use futures::StreamExt;
use object_store::ObjectStoreExt;
use url::Url;

pub(crate) fn has_glob(s: &str) -> bool {
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
        Url::parse(head)
            .map_err(|e| KilnError::config(format!("invalid input path {text}: {e}")))?
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
        format!(".{}", format.extension())
    } else {
        String::new()
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
                    .file_extension(&ext)
                    .table_partition_cols(as_text),
            )
            .await
        }
        FileFormat::Csv => {
            ctx.read_csv(
                path.clone(),
                CsvReadOptions::new()
                    .has_header(true)
                    .file_extension(&ext)
                    .table_partition_cols(as_text),
            )
            .await
        }
    };
    let df = df.map_err(|e| KilnError::execution(format!("reading {path}"), e))?;
    crate::hive::restore_types(df, &partitions)
}
