//! `passes: N` with `pass_key`, shared by the tasks that run window stages
//! (`FeaturePipeline`, `BatchPrediction`): the rows are split by ranges of
//! the key every window partitions by, so each pass sorts about 1/N of them.

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
/// window stage partitions by `key`; `windows` are their partition columns.
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
