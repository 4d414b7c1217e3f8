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
use kiln_engine::storage::{Lake, LakeObjectStoreRegistry};
use kiln_engine::{KilnError, Result};
use serde::{Deserialize, Serialize};

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
    /// The pipeline's lake, where the schedule is recorded.
    pub lake: Lake,
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
                lake: Lake::new(&loaded.config.storage.root)?,
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

/// Where `kiln schedule` records each pipeline's schedule, relative to the
/// pipeline's lake root: `_kiln/schedules/PIPELINE.json`.
pub const SCHEDULES_DIR: &str = "_kiln/schedules/";

/// Firings a record keeps (the oldest go first).
const KEPT_FIRINGS: usize = 100;
/// Fire times ahead a record lists.
const NEXT_FIRES: usize = 5;
/// How often a running scheduler refreshes its records.
const HEARTBEAT_SECONDS: i64 = 30;

/// A schedule as `kiln schedule` records it in the lake, for the web UI:
/// its cron, the next fire times, the runs it started and the ones it
/// skipped.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleRecord {
    pub pipeline: String,
    pub config: String,
    pub schedule: String,
    pub time_zone: String,
    pub concurrency_policy: ConcurrencyPolicy,
    pub catchup: bool,
    pub master: String,
    /// The scheduler process: `HOST pid PID`.
    pub scheduler: String,
    /// The scheduler's last word, in milliseconds since the epoch; old
    /// when it stopped.
    pub updated_ms: i64,
    pub stopped: bool,
    pub next_fires_ms: Vec<i64>,
    /// Oldest first.
    pub firings: Vec<Firing>,
}

/// One due time of a schedule and what became of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Firing {
    pub due_ms: i64,
    pub at_ms: i64,
    #[serde(flatten)]
    pub outcome: FiringOutcome,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum FiringOutcome {
    Started {
        run_id: String,
    },
    Skipped {
        reason: String,
    },
    /// `kiln submit` could not be started.
    Failed {
        error: String,
    },
}

impl ScheduleRecord {
    /// The record of `s`'s `name.json` in `lake`.
    pub fn url(lake: &Lake, pipeline: &str) -> Result<url::Url> {
        lake.resolve(&format!("{SCHEDULES_DIR}{pipeline}.json"))
    }

    fn new(s: &Scheduled, master: &str) -> Self {
        let host = sysinfo::System::host_name().unwrap_or_else(|| "localhost".into());
        ScheduleRecord {
            pipeline: s.name.clone(),
            config: s.config_path.display().to_string(),
            schedule: s.expression.clone(),
            time_zone: s.time_zone.clone(),
            concurrency_policy: s.policy,
            catchup: s.catchup,
            master: master.to_string(),
            scheduler: format!("{host} pid {}", std::process::id()),
            updated_ms: 0,
            stopped: false,
            next_fires_ms: Vec::new(),
            firings: Vec::new(),
        }
    }

    fn fired(&mut self, due_s: i64, outcome: FiringOutcome) {
        self.firings.push(Firing {
            due_ms: due_s * 1000,
            at_ms: Utc::now().timestamp_millis(),
            outcome,
        });
        let excess = self.firings.len().saturating_sub(KEPT_FIRINGS);
        self.firings.drain(..excess);
    }
}

/// Every schedule recorded in `lake`, by pipeline name. A record that
/// does not parse (cut short, or from a newer kiln) is left out with a
/// warning.
pub async fn list_records(
    stores: &LakeObjectStoreRegistry,
    lake: &Lake,
) -> Result<Vec<ScheduleRecord>> {
    use futures::StreamExt;
    let dir = lake.resolve(SCHEDULES_DIR)?;
    let store = stores.store_for(&dir)?;
    let prefix = kiln_engine::storage::object_path(&dir)?;
    let mut listing = store.list(Some(&prefix));
    let mut records = Vec::new();
    while let Some(meta) = listing.next().await {
        let meta = meta.map_err(|e| KilnError::io(&dir, e))?;
        let Some(name) = meta.location.filename().filter(|n| n.ends_with(".json")) else {
            continue;
        };
        let url = dir
            .join(name)
            .map_err(|e| KilnError::config(format!("{dir}{name}: {e}")))?;
        let Some(bytes) = stores.read_object(&url).await? else {
            continue;
        };
        match serde_json::from_slice::<ScheduleRecord>(&bytes) {
            Ok(record) => records.push(record),
            Err(e) => tracing::warn!("schedule record {url} not read: {e}"),
        }
    }
    records.sort_by(|a, b| a.pipeline.cmp(&b.pipeline));
    Ok(records)
}

/// Writes the schedule records into the pipelines' lakes from the
/// scheduler's blocking loop. A record that cannot be written is a
/// warning: the schedule goes on.
struct Recorder {
    runtime: tokio::runtime::Handle,
    stores: LakeObjectStoreRegistry,
}

impl Recorder {
    fn read(&self, url: &url::Url) -> Option<ScheduleRecord> {
        let bytes = self
            .runtime
            .block_on(self.stores.read_object(url))
            .ok()
            .flatten()?;
        serde_json::from_slice(&bytes).ok()
    }

    fn write(&self, s: &Scheduled, record: &mut ScheduleRecord, next_s: Option<i64>) {
        record.updated_ms = Utc::now().timestamp_millis();
        record.next_fires_ms = std::iter::successors(next_s, |&t| s.cron.next_after(t))
            .take(NEXT_FIRES)
            .map(|t| t * 1000)
            .collect();
        let written = ScheduleRecord::url(&s.lake, &s.name).and_then(|url| {
            let body = serde_json::to_vec_pretty(record)
                .map_err(|e| KilnError::internal("serializing a schedule record", e))?;
            self.runtime.block_on(self.stores.write_object(&url, body))
        });
        if let Err(e) = written {
            eprintln!("[schedule] {}: schedule record not written: {e}", s.name);
        }
    }
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
    let recorder = tokio::runtime::Handle::try_current()
        .ok()
        .map(|runtime| Recorder {
            runtime,
            stores: LakeObjectStoreRegistry::new(),
        });
    let mut records: Vec<ScheduleRecord> = scheduled
        .iter()
        .map(|s| {
            let mut record = ScheduleRecord::new(s, master);
            // Keep the firings of earlier schedulers of the pipeline.
            if let Some(old) = recorder
                .as_ref()
                .and_then(|r| r.read(&ScheduleRecord::url(&s.lake, &s.name).ok()?))
            {
                record.firings = old.firings;
            }
            record
        })
        .collect();
    let mut heartbeat = 0;
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
        if let Some(recorder) = &recorder
            && now >= heartbeat
        {
            for ((s, record), n) in scheduled.iter().zip(&mut records).zip(&next) {
                recorder.write(s, record, *n);
            }
            heartbeat = now + HEARTBEAT_SECONDS;
        }
        for (i, s) in scheduled.iter().enumerate() {
            running[i].retain_mut(|c| matches!(c.try_wait(), Ok(None)));
            let Some(due) = next[i] else { continue };
            if due > now {
                continue;
            }
            next[i] = s.cron.next_after(now);
            let outcome = fire(s, exe, master, due, &mut running[i]);
            if let FiringOutcome::Started { .. } = outcome {
                count += 1;
            }
            records[i].fired(due, outcome);
            if let Some(recorder) = &recorder {
                recorder.write(s, &mut records[i], next[i]);
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    for children in &mut running {
        for c in children {
            stop(c);
        }
    }
    if let Some(recorder) = &recorder {
        for (s, record) in scheduled.iter().zip(&mut records) {
            record.stopped = true;
            recorder.write(s, record, None);
        }
    }
    Ok(count)
}

/// Starts the run of `s` due at `due` as a `kiln submit` child, unless the
/// concurrency policy says otherwise.
fn fire(
    s: &Scheduled,
    exe: &std::path::Path,
    master: &str,
    due: i64,
    running: &mut Vec<std::process::Child>,
) -> FiringOutcome {
    if !running.is_empty() {
        match s.policy {
            ConcurrencyPolicy::Forbid => {
                let reason = "the previous run is still going (concurrency_policy: forbid)";
                eprintln!(
                    "[schedule] {}: run due at {} skipped: {reason}",
                    s.name,
                    fmt_time(due)
                );
                return FiringOutcome::Skipped {
                    reason: reason.into(),
                };
            }
            ConcurrencyPolicy::Replace => {
                for c in running.iter_mut() {
                    stop(c);
                }
                running.clear();
                eprintln!(
                    "[schedule] {}: stopped the previous run (concurrency_policy: replace)",
                    s.name
                );
            }
            ConcurrencyPolicy::Allow => {}
        }
    }
    let run_id = crate::runner::new_run_id(&s.name);
    match std::process::Command::new(exe)
        .args(["submit", "--master", master, "--run-id", &run_id])
        .arg(&s.config_path)
        .spawn()
    {
        Ok(child) => {
            eprintln!(
                "[schedule] {}: started run {run_id} due at {} (pid {})",
                s.name,
                fmt_time(due),
                child.id()
            );
            running.push(child);
            FiringOutcome::Started { run_id }
        }
        Err(e) => {
            eprintln!("[schedule] {}: cannot start kiln submit: {e}", s.name);
            FiringOutcome::Failed {
                error: format!("cannot start kiln submit: {e}"),
            }
        }
    }
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
