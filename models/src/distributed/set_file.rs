//! A binned training set (or a range of its rows) as one Arrow IPC file:
//! a `label` column (UInt32) and one UInt8 column per (binning, feature),
//! with names, boundaries and the checksum in the schema metadata. Codes
//! and boundaries round-trip exactly, so a set read back on an executor
//! trains the same model as the set it was written from.

use crate::data::{Binned, Codes, FeatureBins, TrainingSet, scatter};
use arrow::array::{Array, ArrayRef, AsArray, UInt8Array, UInt16Array, UInt32Array};
use arrow::buffer::Buffer;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt8Type, UInt16Type, UInt32Type};
use arrow::ipc::convert::fb_to_schema;
use arrow::ipc::reader::{FileDecoder, read_footer_length};
use arrow::ipc::root_as_footer;
use arrow::ipc::writer::FileWriter;
use arrow::record_batch::RecordBatch;
use kiln_engine::{KilnError, Result};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::Arc;

const FORMAT: u32 = 1;
const METADATA_KEY: &str = "kiln.training_set";

#[derive(Serialize, Deserialize)]
struct Header {
    format: u32,
    feature_names: Vec<String>,
    /// Hex, so no JSON number loses bits.
    checksum: String,
    /// Rows of the whole set, and the first row of this file.
    set_rows: usize,
    first_row: usize,
    /// (maxBins, per-feature boundaries), ascending.
    binnings: Vec<(usize, Vec<FeatureBins>)>,
}

/// The part of a set a file holds.
#[derive(Debug, Clone)]
pub struct SetPart {
    pub set: TrainingSet,
    /// Rows of the whole set, and this part's first row in it.
    pub set_rows: usize,
    pub first_row: usize,
}

/// Rows `rows` of `set` as an Arrow IPC file.
pub fn encode(set: &TrainingSet, rows: Range<usize>) -> Result<Vec<u8>> {
    let header = Header {
        format: FORMAT,
        feature_names: set.feature_names.clone(),
        checksum: format!("{:016x}", set.checksum),
        set_rows: set.n_rows(),
        first_row: rows.start,
        binnings: set
            .binnings
            .iter()
            .map(|b| (b.max_bins, b.bins.clone()))
            .collect(),
    };
    let metadata = serde_json::to_string(&header)
        .map_err(|e| KilnError::internal("writing a training set header", e))?;
    let mut fields = vec![Field::new("label", DataType::UInt32, false)];
    let mut columns: Vec<ArrayRef> = vec![Arc::new(UInt32Array::from(
        set.labels[rows.clone()].to_vec(),
    ))];
    for b in &set.binnings {
        for f in 0..b.n_features() {
            let name = format!("b{}_{f}", b.max_bins);
            let (field, column): (Field, ArrayRef) = match b.column(f, rows.clone()) {
                Codes::Narrow(c) => (
                    Field::new(name, DataType::UInt8, false),
                    Arc::new(UInt8Array::from(c)),
                ),
                Codes::Wide(c) => (
                    Field::new(name, DataType::UInt16, false),
                    Arc::new(UInt16Array::from(c)),
                ),
            };
            fields.push(field);
            columns.push(column);
        }
    }
    let schema = Arc::new(Schema::new_with_metadata(
        fields,
        HashMap::from([(METADATA_KEY.to_string(), metadata)]),
    ));
    let failed = |e: arrow::error::ArrowError| KilnError::internal("writing a training set", e);
    let batch = RecordBatch::try_new(Arc::clone(&schema), columns).map_err(failed)?;
    let mut writer = FileWriter::try_new(Vec::new(), &schema).map_err(failed)?;
    writer.write(&batch).map_err(failed)?;
    writer.into_inner().map_err(failed)
}

/// Reads a file written by [`encode`]; `location` names it in errors. The
/// columns are read in place from `bytes` (no copy) and written once into
/// row-major codes: the peak is the file plus the decoded part.
pub fn decode(bytes: Vec<u8>, location: &str) -> Result<SetPart> {
    let bad = |m: String| {
        KilnError::data(
            location,
            format!("{m}; delete the file so the driver writes it again"),
        )
    };
    let (schema, batches) = read_in_place(Buffer::from_vec(bytes))
        .map_err(|e| bad(format!("not a training set file: {e}")))?;
    let header: Header = schema
        .metadata()
        .get(METADATA_KEY)
        .ok_or_else(|| bad("no training set header".into()))
        .and_then(|h| serde_json::from_str(h).map_err(|e| bad(format!("header: {e}"))))?;
    if header.format != FORMAT {
        return Err(bad(format!(
            "format {} (this kiln reads {FORMAT})",
            header.format
        )));
    }
    let checksum =
        u64::from_str_radix(&header.checksum, 16).map_err(|e| bad(format!("checksum: {e}")))?;
    let nf = header.feature_names.len();
    let n_rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
    let mut labels = Vec::with_capacity(n_rows);
    let mut codes: Vec<Codes> = header
        .binnings
        .iter()
        .map(|(max_bins, _)| Codes::zeros(n_rows * nf, *max_bins))
        .collect();
    let mut first = 0;
    for batch in &batches {
        if batch.num_columns() != 1 + nf * header.binnings.len() {
            return Err(bad(format!("{} columns", batch.num_columns())));
        }
        let label = batch
            .column(0)
            .as_primitive_opt::<UInt32Type>()
            .ok_or_else(|| bad("label is not UInt32".into()))?;
        labels.extend_from_slice(label.values());
        for (i, binning) in codes.iter_mut().enumerate() {
            for f in 0..nf {
                let at = 1 + i * nf + f;
                let column = batch.column(at);
                if column.null_count() > 0 {
                    return Err(bad(format!("column {at} has nulls")));
                }
                let not = |width: &str| bad(format!("column {at} is not {width}"));
                match binning {
                    Codes::Narrow(rows) => scatter(
                        column
                            .as_primitive_opt::<UInt8Type>()
                            .ok_or_else(|| not("UInt8"))?
                            .values(),
                        rows,
                        first,
                        f,
                        nf,
                    ),
                    Codes::Wide(rows) => scatter(
                        column
                            .as_primitive_opt::<UInt16Type>()
                            .ok_or_else(|| not("UInt16"))?
                            .values(),
                        rows,
                        first,
                        f,
                        nf,
                    ),
                }
            }
        }
        first += batch.num_rows();
    }
    drop(batches);
    let binnings = header
        .binnings
        .into_iter()
        .zip(codes)
        .map(|((max_bins, bins), codes)| Binned {
            max_bins,
            n_rows,
            codes,
            bins,
        })
        .collect();
    Ok(SetPart {
        set: TrainingSet {
            labels,
            feature_names: header.feature_names,
            binnings,
            checksum,
        },
        set_rows: header.set_rows,
        first_row: header.first_row,
    })
}

/// The schema and record batches of an Arrow IPC file, whose arrays point
/// into `file` instead of copies.
fn read_in_place(file: Buffer) -> std::result::Result<(SchemaRef, Vec<RecordBatch>), String> {
    let trailer = file
        .len()
        .checked_sub(10)
        .ok_or("shorter than an Arrow IPC footer")?;
    let trailer_bytes: [u8; 10] = file[trailer..].try_into().map_err(|_| "no footer")?;
    let footer_len = read_footer_length(trailer_bytes).map_err(|e| e.to_string())?;
    let footer_start = trailer
        .checked_sub(footer_len)
        .ok_or("footer longer than the file")?;
    let footer = root_as_footer(&file[footer_start..trailer]).map_err(|e| e.to_string())?;
    let schema = Arc::new(fb_to_schema(footer.schema().ok_or("no schema")?));
    let decoder = FileDecoder::new(Arc::clone(&schema), footer.version());
    let mut batches = Vec::new();
    for block in footer.recordBatches().iter().flatten() {
        let (offset, len) = (
            usize::try_from(block.offset()).map_err(|e| e.to_string())?,
            usize::try_from(block.metaDataLength()).map_err(|e| e.to_string())?
                + usize::try_from(block.bodyLength()).map_err(|e| e.to_string())?,
        );
        if offset.checked_add(len).is_none_or(|end| end > file.len()) {
            return Err("a record batch beyond the end of the file".into());
        }
        let data = file.slice_with_length(offset, len);
        if let Some(batch) = decoder
            .read_record_batch(block, &data)
            .map_err(|e| e.to_string())?
        {
            batches.push(batch);
        }
    }
    Ok((schema, batches))
}

/// The file name of a set (or of its rows `range`) in the lake's cache:
/// its fingerprint and binnings, so a changed set never reads a stale file.
pub fn file_name(set: &TrainingSet, range: Option<Range<usize>>) -> String {
    let bins: Vec<String> = set
        .binnings
        .iter()
        .map(|b| b.max_bins.to_string())
        .collect();
    let base = format!(
        "{:016x}-{}x{}-bins{}",
        set.checksum,
        set.n_rows(),
        set.n_features(),
        bins.join("_")
    );
    match range {
        None => format!("{base}.arrow"),
        Some(r) => format!("{base}-rows{}-{}.arrow", r.start, r.end),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Dataset;

    #[test]
    fn a_set_round_trips_exactly() -> Result<()> {
        let n = 500;
        let data = Dataset {
            columns: vec![
                (0..n).map(|i| (i as f64 * 0.37).sin()).collect(),
                (0..n)
                    .map(|i| {
                        if i % 7 == 0 {
                            f64::NAN
                        } else {
                            (i % 13) as f64
                        }
                    })
                    .collect(),
            ],
            labels: (0..n).map(|i| (i % 3 == 0) as u32).collect(),
            feature_names: vec!["a".into(), "b".into()],
        };
        // 300 bins: two-byte codes (feature a has 500 distinct values).
        let set = TrainingSet::from_dataset(&data, &[16, 64, 300])?;
        assert!(matches!(set.binned(300)?.codes, Codes::Wide(_)));
        assert!(set.binned(300)?.bins[0].n_bins() > 256);
        let part = decode(encode(&set, 0..n)?, "test")?;
        assert_eq!(part.set.labels, set.labels);
        assert_eq!(part.set.checksum, set.checksum);
        assert_eq!(part.set.feature_names, set.feature_names);
        for (a, b) in part.set.binnings.iter().zip(&set.binnings) {
            assert_eq!(
                (a.max_bins, &a.codes, &a.bins),
                (b.max_bins, &b.codes, &b.bins)
            );
        }
        let tail = decode(encode(&set, 100..n)?, "test")?;
        assert_eq!((tail.first_row, tail.set_rows), (100, n));
        assert_eq!(tail.set.labels[..], set.labels[100..]);
        let err = decode(b"junk".to_vec(), "lake/x.arrow").expect_err("junk");
        assert!(err.to_string().contains("lake/x.arrow"), "{err}");
        Ok(())
    }
}
