//! SQLite persistence for the memory store: completed buckets are written in batches by a
//! writer thread (WAL mode), so the recorder never waits on disk; on start the file is read
//! back so baselines survive a restart.

use std::path::Path;
use std::sync::Mutex;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use rusqlite::{Connection, params};

use super::bucket::{Bucket, UnixMs};
use super::histogram::Histogram;
use super::store::{Change, Persist, SeriesKey};
use crate::pace::Pacer;

/// Keyed by time first: a tick's buckets are appended at the end of the tree (a few pages
/// written per tick, however many series), expiry deletes from the front, and loading
/// reads in key order.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS buckets (
    kind INTEGER NOT NULL,          -- 0 route, 1 backend, 2 route x backend
    name TEXT NOT NULL,             -- the route or backend (for 2: the route)
    backend TEXT NOT NULL,          -- for 2: the backend; else ''
    start_ms INTEGER NOT NULL,
    interval_ms INTEGER NOT NULL,
    requests INTEGER NOT NULL,
    errors INTEGER NOT NULL,
    latency_total_us INTEGER NOT NULL,
    latency_max_us INTEGER NOT NULL,
    bytes_in INTEGER NOT NULL,
    bytes_out INTEGER NOT NULL,
    latency BLOB NOT NULL,          -- histogram: (u16 bin, u32 count) little-endian pairs
    backend_requests INTEGER NOT NULL DEFAULT 0, -- of requests, those that reached a backend
    backend_errors INTEGER NOT NULL DEFAULT 0,   -- and of those, the failed
    PRIMARY KEY (start_ms, kind, name, backend)
) WITHOUT ROWID;
";

/// Pages the write-ahead log may hold before a commit copies them into the database
/// (SQLite's default is 1,000). The copy runs in one piece on the writer thread, which
/// shares the proxy's core: with 1,000 routes on 1 s buckets the default made it a 3–5 ms
/// stretch every ten-odd seconds, during which the event loop waited; 100 pages keeps it
/// under ~1 ms for the same total work (docs/benchmarks.md).
const WAL_CHECKPOINT_PAGES: i64 = 100;

/// The columns, in the order of [`SCHEMA`].
const COLUMNS: &str = "kind, name, backend, start_ms, interval_ms, requests, errors, \
                       latency_total_us, latency_max_us, bytes_in, bytes_out, latency, \
                       backend_requests, backend_errors";

#[derive(Debug, thiserror::Error)]
#[error("analytics store {path}: {source}")]
pub struct SqliteError {
    path: String,
    source: rusqlite::Error,
}

enum Op {
    Write(Vec<Change>),
    /// Answered once everything sent before it is committed.
    Sync(Sender<()>),
}

/// Handle to the writer thread.
pub struct SqlitePersist {
    tx: Mutex<Option<Sender<Op>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
}

/// Opens (or creates) the database, drops the buckets that start before `since` (past
/// retention) and reads back the rest.
pub fn open(
    path: &Path,
    since: UnixMs,
) -> Result<(SqlitePersist, Vec<(SeriesKey, Bucket)>), SqliteError> {
    let err = |source| SqliteError {
        path: path.display().to_string(),
        source,
    };
    let conn = Connection::open(path).map_err(err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(err)?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(err)?;
    conn.pragma_update(None, "wal_autocheckpoint", WAL_CHECKPOINT_PAGES)
        .map_err(err)?;
    conn.execute_batch(SCHEMA).map_err(err)?;
    migrate(&conn).map_err(err)?;
    conn.execute("DELETE FROM buckets WHERE start_ms < ?1", [since])
        .map_err(err)?;
    let loaded = load(&conn, since).map_err(err)?;
    let (tx, rx) = channel();
    let writer = std::thread::Builder::new()
        .name("sqlite-writer".into())
        .spawn(move || {
            crate::pace::background();
            write_loop(conn, rx)
        })
        .map_err(|e| err(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
    Ok((
        SqlitePersist {
            tx: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
        },
        loaded,
    ))
}

/// Brings a file written by an earlier version up to the current schema. The first had no
/// `backend` column (and no route x backend series); the first two were keyed by series,
/// then time, so every tick wrote one page per series (with 2,000 series and 1 s buckets,
/// 8x the writer's time of keying by time first, where a tick's buckets are appended); the
/// first three did not count a route's requests that reached a backend apart.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let mut columns = conn.prepare("SELECT name, pk FROM pragma_table_info('buckets')")?;
    let columns: Vec<(String, i64)> = columns
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let has = |name: &str| columns.iter().any(|(c, _)| c == name);
    let time_first = columns.iter().any(|(c, pk)| c == "start_ms" && *pk == 1);
    if has("backend") && time_first && has("backend_requests") {
        return Ok(());
    }
    tracing::info!("upgrading the analytics store to the current schema");
    let mut steps = String::from("BEGIN;");
    if !(has("backend") && time_first) {
        let backend = if has("backend") { "backend" } else { "''" };
        steps += &format!(
            "ALTER TABLE buckets RENAME TO buckets_old;
             {SCHEMA}
             INSERT INTO buckets (kind, name, backend, start_ms, interval_ms, requests, errors,
                                  latency_total_us, latency_max_us, bytes_in, bytes_out, latency)
               SELECT kind, name, {backend}, start_ms, interval_ms, requests, errors,
                      latency_total_us, latency_max_us, bytes_in, bytes_out, latency
               FROM buckets_old;
             DROP TABLE buckets_old;"
        );
    } else {
        steps += "ALTER TABLE buckets ADD COLUMN backend_requests INTEGER NOT NULL DEFAULT 0;
                  ALTER TABLE buckets ADD COLUMN backend_errors INTEGER NOT NULL DEFAULT 0;";
    }
    // What reached a backend, from what the file knows: all of a backend's or a pair's
    // requests; of a route's, what its pairs (one per backend it reached) counted in the
    // same bucket.
    steps += "UPDATE buckets SET backend_requests = requests, backend_errors = errors
                WHERE kind <> 0;
              UPDATE buckets SET
                backend_requests = coalesce((SELECT sum(p.requests) FROM buckets p
                  WHERE p.start_ms = buckets.start_ms AND p.kind = 2 AND p.name = buckets.name
                    AND p.interval_ms = buckets.interval_ms), 0),
                backend_errors = coalesce((SELECT sum(p.errors) FROM buckets p
                  WHERE p.start_ms = buckets.start_ms AND p.kind = 2 AND p.name = buckets.name
                    AND p.interval_ms = buckets.interval_ms), 0)
                WHERE kind = 0;
              COMMIT;";
    conn.execute_batch(&steps)
}

fn load(conn: &Connection, since: UnixMs) -> rusqlite::Result<Vec<(SeriesKey, Bucket)>> {
    let mut stmt = conn.prepare(
        "SELECT kind, name, start_ms, interval_ms, requests, errors, latency_total_us,
                latency_max_us, bytes_in, bytes_out, latency, backend, backend_requests,
                backend_errors
         FROM buckets WHERE start_ms >= ?1 ORDER BY start_ms",
    )?;
    let rows = stmt.query_map([since], |row| {
        let kind: i64 = row.get(0)?;
        let name: String = row.get(1)?;
        let blob: Vec<u8> = row.get(10)?;
        let backend: String = row.get(11)?;
        let u = |i| row.get::<_, i64>(i).map(|v| v.max(0) as u64);
        Ok((
            kind,
            name,
            backend,
            blob,
            Bucket {
                start: row.get(2)?,
                interval_ms: row.get(3)?,
                requests: u(4)?,
                errors: u(5)?,
                backend_requests: u(12)?,
                backend_errors: u(13)?,
                latency_total_us: u(6)?,
                latency_max_us: u(7)?,
                bytes_in: u(8)?,
                bytes_out: u(9)?,
                latency: Histogram::default(),
            },
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (kind, name, backend, blob, mut bucket) = row?;
        let key = match kind {
            0 => SeriesKey::Route(name.into()),
            1 => SeriesKey::Backend(name.into()),
            2 => SeriesKey::Pair(name.into(), backend.into()),
            _ => continue,
        };
        let Some(hist) = Histogram::decode(&blob) else {
            tracing::warn!(series = ?key, start = bucket.start, "skipping a bucket with a damaged histogram");
            continue;
        };
        if bucket.interval_ms <= 0 {
            continue;
        }
        bucket.latency = hist;
        out.push((key, bucket));
    }
    Ok(out)
}

fn kind_name(key: &SeriesKey) -> (i64, &str, &str) {
    match key {
        SeriesKey::Route(n) => (0, n, ""),
        SeriesKey::Backend(n) => (1, n, ""),
        SeriesKey::Pair(r, b) => (2, r, b),
    }
}

fn write_loop(mut conn: Connection, rx: Receiver<Op>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        batch.extend(rx.try_iter().take(10_000));
        let mut replies = Vec::new();
        if let Err(e) = apply(&mut conn, batch, &mut replies) {
            tracing::error!(error = %e, "writing analytics buckets to SQLite failed");
        }
        for reply in replies {
            let _ = reply.send(());
        }
    }
}

fn apply(
    conn: &mut Connection,
    batch: Vec<Op>,
    replies: &mut Vec<Sender<()>>,
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare_cached(&format!(
            "INSERT OR REPLACE INTO buckets ({COLUMNS})
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14)"
        ))?;
        let mut save = |key: &SeriesKey, b: &Bucket| {
            let (kind, name, backend) = kind_name(key);
            let i = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
            insert.execute(params![
                kind,
                name,
                backend,
                b.start,
                b.interval_ms,
                i(b.requests),
                i(b.errors),
                i(b.latency_total_us),
                i(b.latency_max_us),
                i(b.bytes_in),
                i(b.bytes_out),
                b.latency.encode(),
                i(b.backend_requests),
                i(b.backend_errors),
            ])
        };
        let mut pacer = Pacer::default();
        for op in batch {
            let changes = match op {
                Op::Write(changes) => changes,
                Op::Sync(reply) => {
                    replies.push(reply);
                    continue;
                }
            };
            for change in changes {
                pacer.pause_if_due();
                match change {
                    Change::Save(key, b) => save(&key, &b)?,
                    Change::RollUp {
                        from,
                        before,
                        width,
                    } => tx.execute(
                        "DELETE FROM buckets
                         WHERE start_ms >= ?1 AND start_ms < ?2 AND interval_ms < ?3",
                        [from, before, width],
                    )?,
                    Change::Expire(before) => {
                        tx.execute("DELETE FROM buckets WHERE start_ms < ?1", [before])?
                    }
                };
            }
        }
    }
    tx.commit()
}

impl SqlitePersist {
    fn send(&self, op: Op) {
        if let Some(tx) = self.tx.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
            let _ = tx.send(op);
        }
    }

    /// Waits until everything sent so far is on disk.
    pub fn sync(&self) {
        let (reply, done) = channel();
        self.send(Op::Sync(reply));
        let _ = done.recv();
    }

    /// Writes what is queued and stops the writer thread.
    pub fn close(&self) {
        self.sync();
        self.tx.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(handle) = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = handle.join();
        }
    }
}

impl Persist for SqlitePersist {
    fn write(&self, changes: Vec<Change>) {
        self.send(Op::Write(changes));
    }

    fn sync(&self) {
        SqlitePersist::sync(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analytics::bucket::Sample;
    use crate::analytics::histogram::DenseHistogram;
    use crate::analytics::store::{MemoryStore, Record, StoreSettings, TrafficStore};
    use std::sync::Arc;

    fn settings() -> StoreSettings {
        StoreSettings {
            interval_ms: 1000,
            retention_ms: 3_600_000,
            rollup_after_ms: 600_000,
            rollup_interval_ms: 60_000,
        }
    }

    fn rec(route: &str, at: UnixMs, latency_us: u64) -> Record {
        Record {
            route: route.into(),
            backend: Some("http://b:1".into()),
            pair: true,
            at,
            sample: Sample {
                error: latency_us > 5000,
                latency_us,
                bytes_in: 3,
                bytes_out: 7,
            },
        }
    }

    #[test]
    fn completed_and_in_progress_buckets_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let before = {
            let (persist, loaded) = open(&path, 0).unwrap();
            assert!(loaded.is_empty());
            let persist = Arc::new(persist);
            let store = MemoryStore::new(settings(), Some(Box::new(persist.clone())));
            store.record(&[
                rec("/a", 10_100, 1000),
                rec("/a", 10_900, 9000),
                // Turned away before reaching a backend (say, by an open breaker).
                Record {
                    backend: None,
                    pair: false,
                    ..rec("/a", 10_950, 6000)
                },
                rec("/a", 11_200, 2000),
            ]);
            store.maintain(11_500); // closes the 10 s bucket
            store.flush(); // saves the 11 s bucket in progress
            persist.close();
            store.buckets(&SeriesKey::Route("/a".into()), 0, i64::MAX)
        };
        let first = &before[0];
        assert_eq!((first.requests, first.errors), (3, 2));
        assert_eq!((first.backend_requests, first.backend_errors), (2, 1));
        let (persist, loaded) = open(&path, 0).unwrap();
        let store = MemoryStore::new(settings(), Some(Box::new(persist)));
        assert_eq!(
            loaded.len(),
            6,
            "two buckets each for the route, the backend and the pair"
        );
        store.load(loaded, 11_600);
        let after = store.buckets(&SeriesKey::Route("/a".into()), 0, i64::MAX);
        assert_eq!(after, before);
        // The bucket in progress goes on filling.
        store.record(&[rec("/a", 11_700, 1000)]);
        assert_eq!(
            store.buckets(&SeriesKey::Route("/a".into()), 11_000, 12_000)[0].requests,
            2
        );
    }

    /// A maintenance pass closes a bucket by the precise clock while requests are filed
    /// under the coarse one, up to a tick behind: a request can arrive for an interval
    /// whose bucket was just closed and saved. It must not become a second bucket with
    /// the same start, which the file keeps once (the later overwriting the earlier).
    #[test]
    fn a_request_filed_after_its_bucket_was_closed_and_saved_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let route = SeriesKey::Route("/a".into());
        let before = {
            let (persist, _) = open(&path, 0).unwrap();
            let persist = Arc::new(persist);
            let store = MemoryStore::new(settings(), Some(Box::new(persist.clone())));
            store.record(&[rec("/a", 10_100, 1000), rec("/a", 10_500, 1000)]);
            store.maintain(11_010); // closes and saves the 10 s bucket
            store.record(&[rec("/a", 10_990, 3000)]); // filed late
            store.record(&[rec("/a", 11_200, 2000)]);
            store.maintain(12_000);
            persist.close();
            store.buckets(&route, 0, i64::MAX)
        };
        let shape: Vec<_> = before.iter().map(|b| (b.start, b.requests)).collect();
        assert_eq!(shape, [(10_000, 3), (11_000, 1)], "one bucket per interval");
        let (persist, loaded) = open(&path, 0).unwrap();
        let store = MemoryStore::new(settings(), Some(Box::new(persist)));
        store.load(loaded, 12_500);
        assert_eq!(store.buckets(&route, 0, i64::MAX), before);
    }

    #[test]
    fn the_write_ahead_log_is_copied_into_the_database_in_small_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let (persist, _) = open(&path, 0).unwrap();
        // ~3 MB of buckets (a latency histogram of 80 bins each), in 40 transactions.
        let mut dense = DenseHistogram::default();
        (0..4096).for_each(|us| dense.add(us));
        let latency = dense.to_sparse();
        for batch in 0..40 {
            let changes = (0..150)
                .map(|i| {
                    let bucket = Bucket {
                        start: batch * 1000,
                        interval_ms: 1000,
                        requests: 1,
                        latency: latency.clone(),
                        ..Bucket::default()
                    };
                    Change::Save(SeriesKey::Route(format!("/r/{i}").into()), Arc::new(bucket))
                })
                .collect();
            persist.write(changes);
            persist.sync();
        }
        let size = |p: &Path| std::fs::metadata(p).map_or(0, |m| m.len());
        let wal = size(&dir.path().join("t.db-wal"));
        let written = size(&path) + wal;
        assert!(written > 1 << 20, "enough written to test: {written} bytes");
        // The log is reused from its start after each checkpoint: it never grew much past
        // the checkpoint's size plus one transaction (with SQLite's default it would hold
        // everything written here).
        assert!(
            wal < 2 * WAL_CHECKPOINT_PAGES as u64 * 4096,
            "write-ahead log of {wal} bytes"
        );
        persist.close();
        assert_eq!(opened(&path).len(), 40 * 150);
    }

    #[test]
    fn expiry_and_rollups_reach_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let (persist, _) = open(&path, 0).unwrap();
            let persist = Arc::new(persist);
            let store = MemoryStore::new(settings(), Some(Box::new(persist.clone())));
            for t in 0..5 {
                store.record(&[rec("/old", t * 1000, 100)]);
            }
            store.record(&[rec("/new", 2_900_000, 100)]);
            // Another series: two seconds of one minute, one of another, and one second
            // after the roll-up boundary, which stays as it is.
            store.record(&[
                rec("/other", 2_881_000, 100),
                rec("/other", 2_882_000, 100),
                rec("/other", 2_950_000, 100),
                rec("/other", 3_000_000, 100),
            ]);
            store.maintain(3_600_500); // /old expired; /new rolled up into a 1-minute bucket
            // A late bucket of the same minute is merged into the rolled-up one.
            store.record(&[rec("/new", 2_910_000, 100)]);
            store.maintain(3_600_600);
            persist.close();
        }
        let (_, loaded) = open(&path, 0).unwrap();
        let mut routes: Vec<_> = loaded
            .iter()
            .filter(|(k, _)| matches!(k, SeriesKey::Route(_)))
            .map(|(k, b)| (k.name().to_string(), b.start, b.interval_ms, b.requests))
            .collect();
        routes.sort();
        let row =
            |name: &str, start, interval, requests| (name.to_owned(), start, interval, requests);
        assert_eq!(
            routes,
            [
                row("/new", 2_880_000, 60_000, 2),
                row("/other", 2_880_000, 60_000, 2),
                row("/other", 2_940_000, 60_000, 1),
                row("/other", 3_000_000, 1_000, 1),
            ]
        );
        // The backend's and pairs' fine buckets went the same way: nothing finer than a
        // minute is left before the boundary.
        assert!(
            loaded
                .iter()
                .all(|(_, b)| b.interval_ms == 60_000 || b.start >= 3_000_000),
            "{loaded:?}"
        );
    }

    #[test]
    fn opening_drops_what_is_past_retention_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let (persist, _) = open(&path, 0).unwrap();
            let persist = Arc::new(persist);
            let store = MemoryStore::new(settings(), Some(Box::new(persist.clone())));
            store.record(&[rec("/old", 1_000, 100), rec("/new", 9_000, 100)]);
            store.flush();
            persist.close();
        }
        let (persist, loaded) = open(&path, 5_000).unwrap();
        assert!(!loaded.is_empty());
        assert!(
            loaded
                .iter()
                .all(|(k, b)| k.name().as_ref() != "/old" && b.start >= 5_000)
        );
        persist.close();
        let conn = Connection::open(&path).unwrap();
        let left: i64 = conn
            .query_row(
                "SELECT count(*) FROM buckets WHERE name = '/old'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(left, 0, "rows past retention are deleted, not just skipped");
    }

    #[test]
    fn a_file_from_the_first_schema_is_upgraded() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_from(
            &dir,
            "CREATE TABLE buckets (kind INTEGER NOT NULL, name TEXT NOT NULL, start_ms INTEGER NOT NULL,
                   interval_ms INTEGER NOT NULL, requests INTEGER NOT NULL, errors INTEGER NOT NULL,
                   latency_total_us INTEGER NOT NULL, latency_max_us INTEGER NOT NULL,
                   bytes_in INTEGER NOT NULL, bytes_out INTEGER NOT NULL, latency BLOB NOT NULL,
                   PRIMARY KEY (kind, name, start_ms)) WITHOUT ROWID;
                 INSERT INTO buckets VALUES (0, '/old', 5000, 1000, 7, 1, 700, 100, 0, 0, x'');",
        );
        let (persist, loaded) = open(&path, 0).unwrap();
        assert_eq!(loaded.len(), 1);
        assert_eq!(loaded[0].0, SeriesKey::Route("/old".into()));
        assert_eq!(loaded[0].1.requests, 7);
        persist.close();
        // And it opens again without upgrading twice.
        assert_eq!(open(&path, 0).unwrap().1.len(), 1);
        assert_eq!(key_columns(&path), ["start_ms", "kind", "name", "backend"]);
    }

    /// The table as the second and third versions made it (a `backend` column, no counts
    /// of what reached a backend), keyed by `key`.
    fn table_with_backends(key: &str) -> String {
        format!(
            "CREATE TABLE buckets (kind INTEGER NOT NULL, name TEXT NOT NULL,
                 backend TEXT NOT NULL, start_ms INTEGER NOT NULL, interval_ms INTEGER NOT NULL,
                 requests INTEGER NOT NULL, errors INTEGER NOT NULL,
                 latency_total_us INTEGER NOT NULL, latency_max_us INTEGER NOT NULL,
                 bytes_in INTEGER NOT NULL, bytes_out INTEGER NOT NULL, latency BLOB NOT NULL,
                 PRIMARY KEY ({key})) WITHOUT ROWID;"
        )
    }

    /// What opening the file at `path` reads back (upgrading it as needed); closed again.
    fn opened(path: &Path) -> Vec<(SeriesKey, Bucket)> {
        let (persist, loaded) = open(path, 0).unwrap();
        persist.close();
        loaded
    }

    /// A database file made by `sql`: an earlier version's schema and rows.
    fn file_from(dir: &tempfile::TempDir, sql: &str) -> std::path::PathBuf {
        let path = dir.path().join("old.db");
        Connection::open(&path).unwrap().execute_batch(sql).unwrap();
        path
    }

    /// The primary key's columns, in key order.
    fn key_columns(path: &Path) -> Vec<String> {
        let conn = Connection::open(path).unwrap();
        let mut stmt = conn
            .prepare("SELECT name FROM pragma_table_info('buckets') WHERE pk > 0 ORDER BY pk")
            .unwrap();
        stmt.query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    #[test]
    fn a_file_keyed_by_series_first_is_rekeyed_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_from(
            &dir,
            &format!(
                "{}
                 CREATE INDEX buckets_by_start ON buckets (start_ms);
                 INSERT INTO buckets VALUES (2, '/a', 'http://b:1', 5000, 1000, 7, 1, 700, 100, 0, 0, x'');
                 INSERT INTO buckets VALUES (0, '/a', '', 6000, 1000, 3, 0, 300, 100, 0, 0, x'');",
                table_with_backends("kind, name, backend, start_ms")
            ),
        );
        let got: Vec<_> = opened(&path)
            .into_iter()
            .map(|(k, b)| (k, b.start, b.requests))
            .collect();
        assert_eq!(
            got,
            [
                (SeriesKey::Pair("/a".into(), "http://b:1".into()), 5000, 7),
                (SeriesKey::Route("/a".into()), 6000, 3),
            ]
        );
        assert_eq!(key_columns(&path), ["start_ms", "kind", "name", "backend"]);
        let conn = Connection::open(&path).unwrap();
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))
            .unwrap();
        assert_eq!(tables, 1, "the old table and its index are gone");
    }

    #[test]
    fn a_file_without_backend_counts_gets_them_from_its_pairs() {
        let dir = tempfile::tempdir().unwrap();
        let path = file_from(
            &dir,
            &format!(
                "{}
                 INSERT INTO buckets VALUES (0, '/a', '', 5000, 1000, 10, 4, 0, 0, 0, 0, x'');
                 INSERT INTO buckets VALUES (2, '/a', 'http://b:1', 5000, 1000, 5, 1, 0, 0, 0, 0, x'');
                 INSERT INTO buckets VALUES (2, '/a', 'http://b:2', 5000, 1000, 3, 2, 0, 0, 0, 0, x'');
                 INSERT INTO buckets VALUES (1, 'http://b:1', '', 5000, 1000, 9, 1, 0, 0, 0, 0, x'');
                 INSERT INTO buckets VALUES (0, '/a', '', 6000, 1000, 2, 2, 0, 0, 0, 0, x'');",
                table_with_backends("start_ms, kind, name, backend")
            ),
        );
        let got: Vec<_> = opened(&path)
            .into_iter()
            .map(|(k, b)| (k, b.start, b.backend_requests, b.backend_errors))
            .collect();
        let route = || SeriesKey::Route("/a".into());
        assert_eq!(
            got,
            [
                // 8 of the route's 10 reached its two backends, 3 of those failed there.
                (route(), 5000, 8, 3),
                (SeriesKey::Backend("http://b:1".into()), 5000, 9, 1),
                (
                    SeriesKey::Pair("/a".into(), "http://b:1".into()),
                    5000,
                    5,
                    1
                ),
                (
                    SeriesKey::Pair("/a".into(), "http://b:2".into()),
                    5000,
                    3,
                    2
                ),
                // No pair in that second: none known to have reached one.
                (route(), 6000, 0, 0),
            ]
        );
        assert_eq!(open(&path, 0).unwrap().1.len(), 5, "and it opens again");
    }

    #[test]
    fn a_file_that_is_not_sqlite_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("garbage.db");
        std::fs::write(
            &path,
            b"this is not a database, not even close, it is just text",
        )
        .unwrap();
        assert!(open(&path, 0).is_err());
    }
}
