//! Helpers shared by the crate's tests.

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{Field, Schema};
use datafusion::dataframe::DataFrame;
use datafusion::prelude::SessionContext;
use std::sync::Arc;

/// A file of `testdata/synth/`.
pub(crate) fn testdata(name: &str) -> String {
    format!("{}/../testdata/synth/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// A one-batch table of nullable columns.
pub(crate) fn frame_of(columns: Vec<(&str, ArrayRef)>) -> DataFrame {
    let schema = Schema::new(
        columns
            .iter()
            .map(|(n, a)| Field::new(*n, a.data_type().clone(), true))
            .collect::<Vec<_>>(),
    );
    let batch = RecordBatch::try_new(
        Arc::new(schema),
        columns.into_iter().map(|(_, a)| a).collect(),
    )
    .expect("batch");
    SessionContext::new().read_batch(batch).expect("frame")
}
