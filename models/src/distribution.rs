//! Where a training task's fits run: [`Distribution`] is what the config
//! asks for, [`Placement`] what was chosen and why (for the run report).

use serde::{Deserialize, Serialize};

/// Rows × features of a training set from which a data-parallel GBT fit
/// on a cluster beats one in the driver's process (the break-even measured
/// by `benches/distributed.sh`; below it the per-level round trips cost
/// more than the executors save).
pub const DATA_PARALLEL_BREAK_EVEN_CELLS: u64 = 100_000_000;

/// `initialization_parameters.distribution` of `ModelTraining`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Distribution {
    /// Chosen from the master and the work: on a cluster, fan-out tuning
    /// when there are fits to tune, data-parallel for a large untuned
    /// binary GBT, else this process.
    #[default]
    Auto,
    /// Every fit in this process.
    Local,
    /// Each (fold × grid point) fit, and each final fit, is a Ballista task.
    Tuning,
    /// Each fit's rows are partitioned over the executors (binary GBT, no
    /// grid); with a local master, over threads of this process.
    DataParallel,
}

/// The mode a task ran with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Local,
    Tuning,
    DataParallel,
}

/// The mode chosen and the reason, as the run report states them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placement {
    pub mode: Mode,
    pub reason: String,
}

/// What a training task has to do, as far as placement cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Work {
    /// Tuning fits (0 when no estimator has a grid).
    pub fits: usize,
    /// Every estimator is a GBT and the label binary.
    pub binary_gbt_only: bool,
    /// Training rows × features.
    pub cells: u64,
}

impl Distribution {
    /// Chooses the mode for `work` on a cluster (`on_cluster`) or a local master.
    pub fn place(self, on_cluster: bool, work: Work) -> Placement {
        let placement = |mode, reason: String| Placement { mode, reason };
        match (self, on_cluster) {
            (Distribution::Local, _) => placement(Mode::Local, "distribution: local".into()),
            (Distribution::DataParallel, true) => placement(
                Mode::DataParallel,
                "distribution: data_parallel; partitions on the executors".into(),
            ),
            (Distribution::DataParallel, false) => placement(
                Mode::DataParallel,
                "distribution: data_parallel with a local master: partitions on this process's threads"
                    .into(),
            ),
            (Distribution::Tuning, true) => placement(
                Mode::Tuning,
                "distribution: tuning; fits run as Ballista tasks".into(),
            ),
            (Distribution::Tuning | Distribution::Auto, false) => placement(
                Mode::Local,
                "the master is local: every fit runs in this process".into(),
            ),
            (Distribution::Auto, true) if work.fits >= 2 => placement(
                Mode::Tuning,
                format!("auto: {} tuning fits fan out over the cluster's executors", work.fits),
            ),
            (Distribution::Auto, true)
                if work.binary_gbt_only && work.cells >= DATA_PARALLEL_BREAK_EVEN_CELLS =>
            {
                placement(
                    Mode::DataParallel,
                    format!(
                        "auto: nothing to tune and {} rows × features (≥ the break-even {DATA_PARALLEL_BREAK_EVEN_CELLS}): data-parallel on the executors",
                        work.cells
                    ),
                )
            }
            (Distribution::Auto, true) => placement(
                Mode::Local,
                format!(
                    "auto: nothing to tune and {} rows × features (< the data-parallel break-even {DATA_PARALLEL_BREAK_EVEN_CELLS}, or not a binary GBT): one fit per estimator in this process",
                    work.cells
                ),
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn work(fits: usize, cells: u64) -> Work {
        Work {
            fits,
            binary_gbt_only: true,
            cells,
        }
    }

    #[test]
    fn auto_picks_by_master_tuning_and_size() {
        let big = DATA_PARALLEL_BREAK_EVEN_CELLS;
        assert_eq!(
            Distribution::Auto.place(true, work(30, 0)).mode,
            Mode::Tuning
        );
        assert_eq!(
            Distribution::Auto.place(true, work(0, big - 1)).mode,
            Mode::Local
        );
        assert_eq!(
            Distribution::Auto.place(true, work(0, big)).mode,
            Mode::DataParallel
        );
        let forest = Work {
            binary_gbt_only: false,
            ..work(0, big * 10)
        };
        assert_eq!(Distribution::Auto.place(true, forest).mode, Mode::Local);
        assert_eq!(
            Distribution::Auto.place(false, work(30, big)).mode,
            Mode::Local
        );
        assert_eq!(
            Distribution::Local.place(true, work(30, big)).mode,
            Mode::Local
        );
        assert_eq!(
            Distribution::Tuning.place(true, work(0, 0)).mode,
            Mode::Tuning
        );
        assert_eq!(
            Distribution::DataParallel.place(false, work(0, 0)).mode,
            Mode::DataParallel
        );
        assert!(
            Distribution::Tuning
                .place(false, work(9, 0))
                .reason
                .contains("local")
        );
    }
}
