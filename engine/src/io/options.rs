//! Parquet output settings: compression, row groups, per-column layouts and
//! hive partition columns.

use crate::error::{KilnError, Result};
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Parquet output settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, default)]
pub struct ParquetWriteOptions {
    /// The page compression codec.
    pub compression: Compression,
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

/// A Parquet compression codec.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Fast, moderate ratio; Spark's default.
    #[default]
    Snappy,
    /// Better ratio at some CPU cost (default level).
    Zstd,
    /// LZ4 (the raw codec, as Spark and Arrow write it).
    Lz4,
    Gzip,
    /// No compression.
    #[serde(alias = "uncompressed")]
    None,
}

impl From<Compression> for parquet::basic::Compression {
    fn from(c: Compression) -> Self {
        use parquet::basic::{Compression as P, ZstdLevel};
        match c {
            Compression::Snappy => P::SNAPPY,
            Compression::Zstd => P::ZSTD(ZstdLevel::default()),
            Compression::Lz4 => P::LZ4_RAW,
            Compression::Gzip => P::GZIP(Default::default()),
            Compression::None => P::UNCOMPRESSED,
        }
    }
}

/// How one Parquet column is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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
            compression: Compression::default(),
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
    pub(crate) fn properties(&self, schema: &arrow::datatypes::Schema) -> Result<WriterProperties> {
        if self.row_group_size == 0 {
            return Err(KilnError::config("row_group_size must be at least 1"));
        }
        let mut builder = WriterProperties::builder()
            .set_compression(self.compression.into())
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
