//! `passes: N` with `pass_key`, shared by the tasks that run window stages
//! (`FeaturePipeline`, `BatchPrediction`): the rows are split by ranges of
//! the key every window partitions by, so each pass sorts about 1/N of them.

use datafusion::dataframe::DataFrame;
use kiln_engine::io::windows_not_partitioned_by;
use kiln_engine::{KilnError, Result};

/// Checks `passes` and `pass_key` as written (`at` names the field).
pub(super) fn check_passes(passes: usize, pass_key: Option<&str>, at: &str) -> Result<()> {
    match (passes, pass_key) {
        (0, _) => Err(KilnError::config_fix(
            format!("{at}: passes is 0"),
            "give 1 (one pass, the default) or more",
        )),
        (2.., None) => Err(KilnError::config_fix(
            format!("{at}: passes needs pass_key"),
            "add pass_key: the integer column the window stages partition by (device_id)",
        )),
        _ => Ok(()),
    }
}

/// A pass split on `key` gives the same rows as one pass only if every
/// window stage partitions by `key`; `windows` are their partition columns
/// and `at` names the field.
pub(super) fn check_window_key<'a>(
    key: &str,
    mut windows: impl Iterator<Item = &'a str>,
    at: &str,
) -> Result<()> {
    match windows.find(|c| *c != key) {
        Some(other) => Err(KilnError::config_fix(
            format!("{at}: passes split on '{key}', but a window stage partitions by '{other}'"),
            format!("set pass_key: {other}, or use one pass"),
        )),
        None => Ok(()),
    }
}

/// Checks the plan of one pass: every window in it (a lag/lead stage, or
/// one a `SQLTransformer` wrote) must partition by `key`.
/// (The runner names the task in the error.)
pub(super) fn check_pass_plan(pass: &DataFrame, key: &str) -> Result<()> {
    match windows_not_partitioned_by(pass, key).first() {
        Some(window) => Err(KilnError::config_fix(
            format!("passes split on '{key}', but the window {window} is not partitioned by it"),
            format!("partition the window by {key}, or use one pass"),
        )),
        None => Ok(()),
    }
}
