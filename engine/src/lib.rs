//! # kiln-engine
//!
//! The data layer of kiln, with no knowledge of machine learning:
//!
//! * [`master::Master`] parses spark-submit style `--master` URLs;
//! * [`session::KilnSession`] wraps a DataFusion `SessionContext`, local or
//!   connected to a Ballista cluster, with [`session::KilnExtensions`] (the
//!   functions every kiln process installs);
//! * [`storage`] resolves lake paths and creates object stores (local, S3 /
//!   MinIO, Azure) on demand;
//! * [`io`] reads CSV / Parquet, joins tables and writes Parquet atomically;
//! * [`hive`] splits output into `column=value/` directories and reads them back;
//! * [`schema`] validates data against a reference schema;
//! * [`table_pass`] runs a mergeable pass over a table as an aggregate,
//!   on DataFusion's threads or a cluster's executors;
//! * [`config_udf`] is the shape of kiln's scalar UDFs that take a
//!   configuration besides their columns;
//! * [`cluster`] runs Ballista schedulers and executors in-process;
//! * [`error::KilnError`] classifies every failure by whose fault it is;
//! * [`hash`] is the stable hash behind fingerprints, checksums and the
//!   canonical training order;
//! * [`suggest`] finds the name a typo meant;
//! * [`nesting`] refuses absurdly nested YAML/JSON before a parser sees it.

pub mod artifacts;
pub mod cluster;
pub mod config_udf;
pub mod error;
pub mod hash;
pub mod hive;
pub mod io;
pub mod master;
pub mod nesting;
pub mod schema;
pub mod session;
pub mod storage;
pub mod suggest;
pub mod table_pass;

pub use error::{KilnError, Result};
pub use master::Master;
pub use session::{KilnExtensions, KilnSession};
