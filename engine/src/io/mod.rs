//! Readers and writers for the lake: CSV and Parquet from files, directories
//! and globs ([`read`]); joins of several tables ([`join`]); Parquet settings
//! ([`options`]); streamed writes ([`write`]) that become visible only through
//! an atomic commit ([`commit`]); an order-independent content checksum
//! ([`checksum`]).

pub mod checksum;
pub mod commit;
pub mod join;
pub mod options;
pub mod passes;
pub mod read;
pub mod write;

pub use checksum::row_checksum;
pub use join::{JoinHow, JoinSpec, join_on};
pub use options::{ColumnEncoding, ColumnLayout, Compression, ParquetWriteOptions};
pub use passes::{in_pass, key_range_filters, windows_not_partitioned_by};
pub use read::{ensure_exists, read_table};
pub use write::{
    BatchStream, batch_streams, receiver_stream, remove_table, write_files, write_parquet,
    write_parquet_passes, write_stream_passes, write_streams, write_table,
};

use serde::{Deserialize, Serialize};

/// A table file format, for reading and for writing.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    #[default]
    Parquet,
    Csv,
}

impl FileFormat {
    /// The file name extension, without the dot.
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Parquet => "parquet",
            FileFormat::Csv => "csv",
        }
    }
}

/// What a write produced.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WriteSummary {
    pub rows: u64,
    pub files: usize,
}
