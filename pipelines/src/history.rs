//! Run history in an embedded SQLite database (`$KILN_HOME/history.sqlite`,
//! default `~/.kiln`): runs and their tasks with state, attempts, times,
//! rows, metrics and errors, for `kiln runs`.

use kiln_engine::{KilnError, Result};
use rusqlite::{Connection, params};
use serde::Serialize;
use std::path::PathBuf;

pub struct History {
    conn: Connection,
}

#[derive(Debug, Clone, Serialize)]
pub struct RunRow {
    pub run_id: String,
    pub pipeline: String,
    pub state: String,
    pub master: String,
    pub start_ms: i64,
    pub end_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TaskRow {
    pub task: String,
    pub state: String,
    pub attempts: i64,
    pub start_ms: i64,
    pub end_ms: i64,
    pub duration_s: f64,
    pub rows_in: Option<i64>,
    pub rows_out: Option<i64>,
    pub metrics: Option<String>,
    pub error: Option<String>,
}

/// Where the history database lives.
pub fn default_path() -> PathBuf {
    let home = std::env::var_os("KILN_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".kiln")))
        .unwrap_or_else(|| PathBuf::from(".kiln"));
    home.join("history.sqlite")
}

fn db_err(e: rusqlite::Error) -> KilnError {
    KilnError::io(default_path().display(), e)
}

impl History {
    pub fn open_default() -> Result<Self> {
        let path = default_path();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| KilnError::io(dir.display(), e))?;
        }
        let conn = Connection::open(&path).map_err(db_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(db_err)?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS runs (run_id TEXT PRIMARY KEY, pipeline TEXT NOT NULL, state TEXT NOT NULL, master TEXT NOT NULL, start_ms INTEGER NOT NULL, end_ms INTEGER);
             CREATE TABLE IF NOT EXISTS tasks (run_id TEXT NOT NULL, task TEXT NOT NULL, state TEXT NOT NULL, attempts INTEGER NOT NULL, start_ms INTEGER NOT NULL, end_ms INTEGER NOT NULL, rows_out INTEGER, metrics TEXT, error TEXT, PRIMARY KEY (run_id, task));",
        )
        .map_err(db_err)?;
        // Databases from before rows_in was recorded get the column.
        let has_rows_in = conn.prepare("SELECT rows_in FROM tasks LIMIT 0").is_ok();
        if !has_rows_in {
            conn.execute_batch("ALTER TABLE tasks ADD COLUMN rows_in INTEGER")
                .map_err(db_err)?;
        }
        Ok(History { conn })
    }

    pub fn run_started(
        &self,
        run_id: &str,
        pipeline: &str,
        master: &str,
        start_ms: i64,
    ) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO runs (run_id, pipeline, state, master, start_ms) VALUES (?1, ?2, 'running', ?3, ?4)
                 ON CONFLICT(run_id) DO UPDATE SET state = 'running', master = ?3, end_ms = NULL",
                params![run_id, pipeline, master, start_ms],
            )
            .map_err(db_err)?;
        Ok(())
    }

    pub fn run_finished(&self, run_id: &str, state: &str, end_ms: i64) -> Result<()> {
        self.conn
            .execute(
                "UPDATE runs SET state = ?2, end_ms = ?3 WHERE run_id = ?1",
                params![run_id, state, end_ms],
            )
            .map_err(db_err)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn task_finished(
        &self,
        run_id: &str,
        task: &str,
        state: &str,
        attempts: u32,
        start_ms: i64,
        end_ms: i64,
        rows_in: Option<u64>,
        rows_out: Option<u64>,
        metrics: Option<String>,
        error: Option<String>,
    ) -> Result<()> {
        self.conn
            .execute(
                "INSERT OR REPLACE INTO tasks (run_id, task, state, attempts, start_ms, end_ms, rows_in, rows_out, metrics, error) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![run_id, task, state, attempts, start_ms, end_ms, rows_in.map(|r| r as i64), rows_out.map(|r| r as i64), metrics, error],
            )
            .map_err(db_err)?;
        Ok(())
    }

    pub fn runs(&self, pipeline: Option<&str>) -> Result<Vec<RunRow>> {
        let mut stmt = self
            .conn
            .prepare("SELECT run_id, pipeline, state, master, start_ms, end_ms FROM runs WHERE (?1 IS NULL OR pipeline = ?1) ORDER BY start_ms DESC")
            .map_err(db_err)?;
        let rows = stmt
            .query_map(params![pipeline], |r| {
                Ok(RunRow {
                    run_id: r.get(0)?,
                    pipeline: r.get(1)?,
                    state: r.get(2)?,
                    master: r.get(3)?,
                    start_ms: r.get(4)?,
                    end_ms: r.get(5)?,
                })
            })
            .map_err(db_err)?;
        rows.collect::<std::result::Result<_, _>>().map_err(db_err)
    }

    pub fn tasks(&self, run_id: &str) -> Result<Vec<TaskRow>> {
        let mut stmt = self
            .conn
            .prepare("SELECT task, state, attempts, start_ms, end_ms, rows_out, metrics, error, rows_in FROM tasks WHERE run_id = ?1 ORDER BY start_ms, task")
            .map_err(db_err)?;
        let rows = stmt
            .query_map(params![run_id], |r| {
                let (s, e): (i64, i64) = (r.get(3)?, r.get(4)?);
                Ok(TaskRow {
                    task: r.get(0)?,
                    state: r.get(1)?,
                    attempts: r.get(2)?,
                    start_ms: s,
                    end_ms: e,
                    duration_s: (e - s) as f64 / 1000.0,
                    rows_in: r.get(8)?,
                    rows_out: r.get(5)?,
                    metrics: r.get(6)?,
                    error: r.get(7)?,
                })
            })
            .map_err(db_err)?;
        rows.collect::<std::result::Result<_, _>>().map_err(db_err)
    }
}
