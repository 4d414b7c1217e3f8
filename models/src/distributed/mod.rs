//! Training on a Ballista cluster.
//!
//! * [`set_file`]: a binned training set (or a range of its rows) as one
//!   Arrow IPC file in the lake, exact to the bit;
//! * [`loaded`]: the sets an executor process has read, kept for the tasks
//!   that follow;
//! * [`task_udf`]: the one UDF shape of kiln's executor work (a JSON task
//!   in, bytes out); [`fit_udf`]: `kiln_fit`, one tuning or final fit per
//!   row, run where Ballista places it;
//! * [`cluster::ClusterFits`]: the driver's side, a [`crate::jobs::FitRunner`]
//!   whose jobs are Ballista tasks;
//! * [`data_parallel`]: boosting over partitions of the rows with integer
//!   histograms (bit-identical whatever the partitioning), in this process
//!   or through [`histogram_udf`] (`kiln_histograms`) on executors
//!   ([`cluster::ClusterPartitions`]);
//! * [`forest`]: random forests over the same partitions, every tree one
//!   level per round trip, node for node the forest a local fit grows.

pub mod cluster;
pub mod data_parallel;
pub mod fit_udf;
pub mod forest;
pub mod histogram_udf;
pub mod loaded;
pub mod set_file;
pub mod task_udf;

pub use cluster::{ClusterFits, ClusterPartitions};
pub use data_parallel::DataParallelFits;
