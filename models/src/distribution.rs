//! Where a training task's fits run: [`Distribution`] is what the config
//! asks for, [`Placement`] what was chosen and why (for the run report).

use serde::{Deserialize, Serialize};

/// `initialization_parameters.distribution` of `ModelTraining`.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Distribution {
    /// Chosen from the master and the work: fan-out tuning on a cluster
    /// when there is more than one fit, else in this process.
    #[default]
    Auto,
    /// Every fit in this process.
    Local,
    /// Each (fold × grid point) fit, and each final fit, is a Ballista task.
    Tuning,
}

/// The mode a task ran with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Local,
    Tuning,
}

/// The mode chosen and the reason, as the run report states them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Placement {
    pub mode: Mode,
    pub reason: String,
}

impl Distribution {
    /// Chooses the mode for `fits` tuning fits (0 when nothing is tuned) on
    /// a cluster (`on_cluster`) or a local master.
    pub fn place(self, on_cluster: bool, fits: usize) -> Placement {
        let placement = |mode, reason: &str| Placement {
            mode,
            reason: reason.to_string(),
        };
        match (self, on_cluster) {
            (Distribution::Local, _) => placement(Mode::Local, "distribution: local"),
            (Distribution::Tuning, true) => placement(
                Mode::Tuning,
                "distribution: tuning; fits run as Ballista tasks",
            ),
            (Distribution::Tuning, false) | (Distribution::Auto, false) => placement(
                Mode::Local,
                "the master is local: every fit runs in this process",
            ),
            (Distribution::Auto, true) if fits >= 2 => Placement {
                mode: Mode::Tuning,
                reason: format!("auto: {fits} tuning fits fan out over the cluster's executors"),
            },
            (Distribution::Auto, true) => placement(
                Mode::Local,
                "auto: nothing to tune, so the one final fit per estimator runs in this process",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_fans_out_tuning_on_a_cluster_only() {
        assert_eq!(Distribution::Auto.place(true, 30).mode, Mode::Tuning);
        assert_eq!(Distribution::Auto.place(true, 0).mode, Mode::Local);
        assert_eq!(Distribution::Auto.place(false, 30).mode, Mode::Local);
        assert_eq!(Distribution::Local.place(true, 30).mode, Mode::Local);
        assert_eq!(Distribution::Tuning.place(true, 0).mode, Mode::Tuning);
        assert!(
            Distribution::Tuning
                .place(false, 9)
                .reason
                .contains("local")
        );
    }
}
