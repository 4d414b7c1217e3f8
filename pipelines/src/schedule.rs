//! Schedules: cron expressions (5 fields, or 6 with seconds first; `@hourly`,
//! `@daily`, `@weekly`, `@monthly`, `@yearly`) evaluated in an IANA time
//! zone, and the `kiln schedule` loop that starts due runs as `kiln submit`
//! processes with a concurrency policy and optional catch-up.
//!
//! Local times skipped by a daylight-saving change never fire; a local time
//! that occurs twice fires twice.

pub use crate::config::ConcurrencyPolicy;
use chrono::{Datelike, TimeZone, Timelike, Utc};
use chrono_tz::Tz;
use kiln_engine::{KilnError, Result};

/// A parsed cron expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Cron {
    seconds: Vec<bool>,
    minutes: Vec<bool>,
    hours: Vec<bool>,
    days: Vec<bool>,
    months: Vec<bool>,
    weekdays: Vec<bool>,
    /// Both day fields restricted: either may match (Vixie cron).
    day_or: bool,
    has_seconds: bool,
    tz: Tz,
}

fn field(text: &str, min: u32, max: u32, what: &str, expr: &str) -> Result<(Vec<bool>, bool)> {
    let mut set = vec![false; (max + 1) as usize];
    let bad = || {
        KilnError::config_fix(
            format!("invalid cron {what} '{text}' in '{expr}'"),
            "use *, N, A-B, */S, A-B/S or lists of them",
        )
    };
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().map_err(|_| bad())?),
            None => (part, 1),
        };
        if step == 0 {
            return Err(bad());
        }
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (a.parse().map_err(|_| bad())?, b.parse().map_err(|_| bad())?)
        } else {
            let v: u32 = range.parse().map_err(|_| bad())?;
            (v, if part.contains('/') { max } else { v })
        };
        if lo < min || hi > max || lo > hi {
            return Err(bad());
        }
        for v in (lo..=hi).step_by(step as usize) {
            set[v as usize] = true;
        }
    }
    Ok((set, text == "*"))
}

impl Cron {
    /// Whether the expression has a seconds field (6 fields).
    pub fn has_seconds(&self) -> bool {
        self.has_seconds
    }

    pub fn parse(expr: &str, time_zone: &str) -> Result<Self> {
        let tz: Tz = time_zone.parse().map_err(|_| {
            KilnError::config_fix(
                format!("unknown time zone '{time_zone}'"),
                "use an IANA name such as Europe/Berlin, or UTC",
            )
        })?;
        let expanded = match expr.trim() {
            "@hourly" => "0 * * * *",
            "@daily" | "@midnight" => "0 0 * * *",
            "@weekly" => "0 0 * * 0",
            "@monthly" => "0 0 1 * *",
            "@yearly" | "@annually" => "0 0 1 1 *",
            other => other,
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        let (secs, rest) = match parts.len() {
            5 => ("0", &parts[..]),
            6 => (parts[0], &parts[1..]),
            _ => {
                return Err(KilnError::config_fix(
                    format!("cron expression '{expr}' needs 5 fields (or 6 with seconds)"),
                    "e.g. \"0 2 * * *\" for 02:00 every day",
                ));
            }
        };
        let (seconds, _) = field(secs, 0, 59, "second", expr)?;
        let (minutes, _) = field(rest[0], 0, 59, "minute", expr)?;
        let (hours, _) = field(rest[1], 0, 23, "hour", expr)?;
        let (days, days_any) = field(rest[2], 1, 31, "day of month", expr)?;
        let (months, _) = field(rest[3], 1, 12, "month", expr)?;
        // 0 and 7 are both Sunday, as in Vixie cron.
        let (mut weekdays, weekdays_any) = field(rest[4], 0, 7, "day of week", expr)?;
        if weekdays[7] {
            weekdays[0] = true;
        }
        weekdays.truncate(7);
        Ok(Cron {
            seconds,
            minutes,
            hours,
            days,
            months,
            weekdays,
            day_or: !days_any && !weekdays_any,
            has_seconds: parts.len() == 6,
            tz,
        })
    }

    fn matches(&self, unix_s: i64) -> bool {
        let Some(t) = Utc.timestamp_opt(unix_s, 0).single() else {
            return false;
        };
        let l = t.with_timezone(&self.tz);
        let day = self.days[l.day() as usize];
        let wd = self.weekdays[l.weekday().num_days_from_sunday() as usize];
        self.seconds[l.second() as usize]
            && self.minutes[l.minute() as usize]
            && self.hours[l.hour() as usize]
            && self.months[l.month() as usize]
            && if self.day_or { day || wd } else { day && wd }
    }

    /// The first matching instant strictly after `after_s` (Unix seconds).
    pub fn next_after(&self, after_s: i64) -> Option<i64> {
        let step = if self.has_seconds { 1 } else { 60 };
        let mut t = if self.has_seconds {
            after_s + 1
        } else {
            (after_s / 60 + 1) * 60
        };
        let limit = after_s + 5 * 366 * 86_400;
        while t <= limit {
            if self.matches(t) {
                return Some(t);
            }
            t += step;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|d| d.timestamp())
            .unwrap_or_default()
    }

    #[test]
    fn next_occurrences_in_a_time_zone() -> Result<()> {
        let daily = Cron::parse("0 2 * * *", "Europe/Berlin")?;
        // 02:00 Berlin in summer is 00:00 UTC.
        assert_eq!(
            daily.next_after(ts("2023-06-01T12:00:00Z")),
            Some(ts("2023-06-02T00:00:00Z"))
        );
        // 2023-03-26 02:00 does not exist in Berlin: the next is on the 27th.
        assert_eq!(
            daily.next_after(ts("2023-03-25T12:00:00Z")),
            Some(ts("2023-03-27T00:00:00Z"))
        );
        let every5s = Cron::parse("*/5 * * * * *", "UTC")?;
        assert_eq!(
            every5s.next_after(ts("2023-01-01T00:00:03Z")),
            Some(ts("2023-01-01T00:00:05Z"))
        );
        let hourly = Cron::parse("@hourly", "UTC")?;
        assert_eq!(
            hourly.next_after(ts("2023-01-01T10:00:00Z")),
            Some(ts("2023-01-01T11:00:00Z"))
        );
        let weekdays = Cron::parse("30 9 * * 1-5", "UTC")?;
        // 2023-06-03 is a Saturday.
        assert_eq!(
            weekdays.next_after(ts("2023-06-03T00:00:00Z")),
            Some(ts("2023-06-05T09:30:00Z"))
        );
        for bad in ["61 * * * *", "* * *", "*/0 * * * *", "a b c d e"] {
            assert_eq!(Cron::parse(bad, "UTC").expect_err(bad).exit_code(), 2);
        }
        assert!(Cron::parse("@daily", "Mars/Olympus").is_err());
        Ok(())
    }

    #[test]
    fn seven_is_sunday_in_the_day_of_week_field() -> Result<()> {
        // 2023-06-03 is a Saturday, 2023-06-04 a Sunday.
        let saturday = ts("2023-06-03T12:00:00Z");
        for expr in ["0 9 * * 7", "0 9 * * 0", "0 9 * * */7", "0 9 * * 6-7"] {
            let next = Cron::parse(expr, "UTC")?.next_after(saturday);
            assert_eq!(next, Some(ts("2023-06-04T09:00:00Z")), "{expr}");
        }
        // 1-7 is every day; 17 in another field is untouched.
        let daily = Cron::parse("0 17 * * 1-7", "UTC")?;
        assert_eq!(daily.next_after(saturday), Some(ts("2023-06-03T17:00:00Z")));
        assert!(Cron::parse("0 9 * * 8", "UTC").is_err());
        Ok(())
    }
}

/// One scheduled pipeline.
#[derive(Debug)]
pub struct Scheduled {
    pub config_path: std::path::PathBuf,
    pub name: String,
    /// The `schedule` as written, and its time zone.
    pub expression: String,
    pub time_zone: String,
    pub cron: Cron,
    pub policy: ConcurrencyPolicy,
    pub catchup: bool,
}

/// Every config with a `schedule` among the files and directories given.
pub fn load_scheduled(paths: &[String]) -> Result<Vec<Scheduled>> {
    let mut files = Vec::new();
    for p in paths {
        let path = std::path::PathBuf::from(p);
        if path.is_dir() {
            let mut found: Vec<_> = std::fs::read_dir(&path)
                .map_err(|e| KilnError::config(format!("cannot read {p}: {e}")))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "yaml" || x == "yml"))
                .collect();
            found.sort();
            files.extend(found);
        } else {
            files.push(path);
        }
    }
    let mut out = Vec::new();
    for f in files {
        let loaded = crate::LoadedConfig::from_file(&f.to_string_lossy())?;
        crate::runner::plan(&loaded)?;
        if let Some(expr) = &loaded.config.schedule {
            let tz = loaded
                .config
                .schedule_timezone
                .clone()
                .unwrap_or_else(|| "UTC".into());
            out.push(Scheduled {
                cron: Cron::parse(expr, &tz)
                    .map_err(|e| e.context(format!("{}: schedule", f.display())))?,
                expression: expr.clone(),
                time_zone: tz,
                config_path: f,
                name: loaded.config.name.clone(),
                policy: loaded.config.concurrency_policy,
                catchup: loaded.config.catchup,
            });
        }
    }
    if out.is_empty() {
        return Err(KilnError::config_fix(
            "none of the configs has a schedule",
            "add e.g. schedule: \"0 2 * * *\" to a pipeline config",
        ));
    }
    Ok(out)
}

fn now_s() -> i64 {
    Utc::now().timestamp()
}

/// Runs due pipelines as `kiln submit` child processes until `run_for`
/// elapses (forever when `None`). Returns how many runs were started.
pub fn run_schedule(
    scheduled: &[Scheduled],
    exe: &std::path::Path,
    master: &str,
    run_for: Option<std::time::Duration>,
) -> Result<usize> {
    let started_at = std::time::Instant::now();
    let history = crate::history::History::open_default().ok();
    let mut next: Vec<Option<i64>> = scheduled
        .iter()
        .map(|s| {
            let now = now_s();
            // Catch-up: one run now if a due time passed since the last run.
            let last = history
                .as_ref()
                .and_then(|h| h.runs(Some(&s.name)).ok())
                .and_then(|r| r.first().map(|r| r.start_ms / 1000));
            match (s.catchup, last) {
                (true, Some(last)) if s.cron.next_after(last).is_some_and(|t| t <= now) => {
                    Some(now)
                }
                _ => s.cron.next_after(now),
            }
        })
        .collect();
    let mut running: Vec<Vec<std::process::Child>> = scheduled.iter().map(|_| Vec::new()).collect();
    let mut count = 0;
    for (s, n) in scheduled.iter().zip(&next) {
        eprintln!(
            "[schedule] {} ({}): next run at {}",
            s.name,
            s.config_path.display(),
            n.map(fmt_time).unwrap_or_else(|| "never".into())
        );
    }
    loop {
        if run_for.is_some_and(|d| started_at.elapsed() >= d) {
            break;
        }
        let now = now_s();
        for (i, s) in scheduled.iter().enumerate() {
            running[i].retain_mut(|c| matches!(c.try_wait(), Ok(None)));
            let Some(due) = next[i] else { continue };
            if due > now {
                continue;
            }
            next[i] = s.cron.next_after(now);
            if !running[i].is_empty() {
                match s.policy {
                    ConcurrencyPolicy::Forbid => {
                        eprintln!(
                            "[schedule] {}: run due at {} skipped: the previous run is still going (concurrency_policy: forbid)",
                            s.name,
                            fmt_time(due)
                        );
                        continue;
                    }
                    ConcurrencyPolicy::Replace => {
                        for c in &mut running[i] {
                            stop(c);
                        }
                        running[i].clear();
                        eprintln!(
                            "[schedule] {}: stopped the previous run (concurrency_policy: replace)",
                            s.name
                        );
                    }
                    ConcurrencyPolicy::Allow => {}
                }
            }
            match std::process::Command::new(exe)
                .args(["submit", "--master", master])
                .arg(&s.config_path)
                .spawn()
            {
                Ok(child) => {
                    count += 1;
                    eprintln!(
                        "[schedule] {}: started run due at {} (pid {})",
                        s.name,
                        fmt_time(due),
                        child.id()
                    );
                    running[i].push(child);
                }
                Err(e) => eprintln!("[schedule] {}: cannot start kiln submit: {e}", s.name),
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    for children in &mut running {
        for c in children {
            stop(c);
        }
    }
    Ok(count)
}

/// Stops a `kiln submit` child (it may have exited already).
fn stop(child: &mut std::process::Child) {
    if let Err(e) = child.kill() {
        tracing::debug!("run {} already stopped: {e}", child.id());
    }
    if let Err(e) = child.wait() {
        eprintln!("[schedule] run {} could not be reaped: {e}", child.id());
    }
}

fn fmt_time(s: i64) -> String {
    Utc.timestamp_opt(s, 0)
        .single()
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}
