//! `--master` URLs, spark-submit style.

use crate::error::{KilnError, Result};
use std::fmt;
use std::str::FromStr;

/// Where a pipeline runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Master {
    /// In-process DataFusion with this many target partitions.
    Local { partitions: usize },
    /// A remote Ballista scheduler.
    Ballista { host: String, port: u16 },
}

impl Master {
    pub fn local_all_cores() -> Self {
        Master::Local {
            partitions: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1),
        }
    }

    pub fn is_local(&self) -> bool {
        matches!(self, Master::Local { .. })
    }
}

impl Default for Master {
    fn default() -> Self {
        Master::local_all_cores()
    }
}

impl FromStr for Master {
    type Err = KilnError;

    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            KilnError::config_fix(
                format!("invalid --master '{s}'"),
                "use local, local[N], local[*] or df://HOST:PORT",
            )
        };
        match s {
            "local" => return Ok(Master::Local { partitions: 1 }),
            "local[*]" => return Ok(Master::local_all_cores()),
            _ => {}
        }
        if let Some(n) = s.strip_prefix("local[").and_then(|r| r.strip_suffix(']')) {
            let partitions: usize = n.parse().map_err(|_| bad())?;
            if partitions == 0 {
                return Err(bad());
            }
            return Ok(Master::Local { partitions });
        }
        if let Some(rest) = s.strip_prefix("df://") {
            let (host, port) = rest.rsplit_once(':').ok_or_else(bad)?;
            let port: u16 = port.trim_end_matches('/').parse().map_err(|_| bad())?;
            if host.is_empty() {
                return Err(bad());
            }
            return Ok(Master::Ballista {
                host: host.to_string(),
                port,
            });
        }
        Err(bad())
    }
}

impl fmt::Display for Master {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Master::Local { partitions } => write!(f, "local[{partitions}]"),
            Master::Ballista { host, port } => write!(f, "df://{host}:{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_spark_style_masters() -> Result<()> {
        assert_eq!("local".parse::<Master>()?, Master::Local { partitions: 1 });
        assert_eq!(
            "local[3]".parse::<Master>()?,
            Master::Local { partitions: 3 }
        );
        assert!("local[*]".parse::<Master>()?.is_local());
        assert_eq!(
            "df://10.0.0.1:50050".parse::<Master>()?,
            Master::Ballista {
                host: "10.0.0.1".into(),
                port: 50050
            }
        );
        for bad in [
            "local[0]",
            "local[x]",
            "spark://a:1",
            "df://:1",
            "df://host",
        ] {
            let err = bad.parse::<Master>().expect_err(bad);
            assert_eq!(err.exit_code(), 2, "{bad}");
        }
        Ok(())
    }
}
