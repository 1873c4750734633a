//! The embedded store: one SQLite file (`<data>/switchyard.db`) in WAL mode.
//!
//! Writes go to one writer thread, which runs every write waiting at that
//! moment in a single transaction and commits once (group commit): a caller
//! is answered only after its write is durable (`synchronous = FULL`), and
//! many callers share one fsync. Each write runs in its own savepoint, so one
//! failing write does not undo the others of its group. Reads use a separate
//! connection (WAL lets them run beside the writer).
//!
//! Tables: `event_queue` (events waiting for an offline events channel),
//! `jobs` and `attempts` (send, recv (the inbox) and schedule jobs),
//! `kv` (per-channel key-value), `recordings`, `versions` (of channel
//! documents and scripts), `audit` (the audit log) and `secrets` (sealed values).

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Mutex};
use std::time::Duration;

use rusqlite::Connection;
use tokio::sync::oneshot;

/// Most writes committed in one transaction.
const GROUP_MAX: usize = 512;

/// A store failure; details are in the message (and the log).
#[derive(Debug, Clone, thiserror::Error)]
#[error("store: {0}")]
pub struct StoreError(pub String);

/// The message of a write refused for lack of space (see [`StoreError::is_full`]).
const FULL: &str = "no space left on the store's disk";

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
            return Self(FULL.into());
        }
        Self(e.to_string())
    }
}

impl From<std::io::Error> for StoreError {
    fn from(e: std::io::Error) -> Self {
        if e.kind() == std::io::ErrorKind::StorageFull {
            return Self(FULL.into());
        }
        Self(e.to_string())
    }
}

/// The start of the message of an error caused by an unreachable NATS
/// (cluster mode, see `backend`).
pub const CLUSTER_UNAVAILABLE: &str = "cluster_unavailable";

impl StoreError {
    /// `true` when the write failed for lack of space (answered `507`).
    pub fn is_full(&self) -> bool {
        self.0 == FULL
    }

    /// `true` when NATS was unreachable (cluster mode; answered `503`).
    pub fn is_cluster_unavailable(&self) -> bool {
        self.0.starts_with(CLUSTER_UNAVAILABLE)
    }
}

/// Bytes kept in `<data>/switchyard.reserve` and given up when the disk fills,
/// so that the store can still checkpoint, and start, on a full disk.
pub const RESERVE_BYTES: u64 = 2 * 1024 * 1024;

/// Runs inside the group's transaction; returns what to do once the commit is known.
type Op = Box<dyn FnOnce(&Connection) -> Completion + Send>;
type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// The store handle.
pub struct Store {
    ops: Mutex<mpsc::Sender<Op>>,
    reader: Mutex<Connection>,
    path: PathBuf,
    /// Set while writes fail for lack of space; cleared by the next write that lands.
    full: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Set when a write beside the store (a file of the files API) failed for
    /// lack of space; cleared by [`Store::recover`] once a file of the same
    /// kind can be written again (a store write may land in free pages of the
    /// database while the disk has no room for a file).
    disk_full: std::sync::atomic::AtomicBool,
    _lock: FolderLock,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS event_queue (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    event   TEXT NOT NULL,
    created INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS event_queue_by_channel ON event_queue (channel, seq);
CREATE TABLE IF NOT EXISTS jobs (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    id              TEXT NOT NULL UNIQUE,
    channel         TEXT NOT NULL,
    kind            TEXT NOT NULL,
    state           TEXT NOT NULL,
    attempt         INTEGER NOT NULL DEFAULT 0,
    max_attempts    INTEGER NOT NULL,
    created         INTEGER NOT NULL,
    updated         INTEGER NOT NULL,
    next_attempt_at INTEGER,
    last_error      TEXT,
    result          TEXT,
    input           TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_due ON jobs (state, next_attempt_at);
CREATE INDEX IF NOT EXISTS jobs_by_channel ON jobs (channel, kind, state, seq);
CREATE TABLE IF NOT EXISTS attempts (
    job         TEXT NOT NULL,
    n           INTEGER NOT NULL,
    started     INTEGER NOT NULL,
    duration_ms INTEGER NOT NULL,
    outcome     TEXT NOT NULL,
    error       TEXT,
    PRIMARY KEY (job, n)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS kv (
    channel TEXT NOT NULL,
    key     TEXT NOT NULL,
    value   TEXT NOT NULL,
    PRIMARY KEY (channel, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta (
    k TEXT PRIMARY KEY,
    v TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS recordings (
    seq     INTEGER PRIMARY KEY AUTOINCREMENT,
    channel TEXT NOT NULL,
    id      TEXT NOT NULL,
    doc     TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS recordings_by_channel ON recordings (channel, seq);
CREATE TABLE IF NOT EXISTS kv_counts (
    channel TEXT PRIMARY KEY,
    n       INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO kv_counts (channel, n)
    SELECT channel, count(*) FROM kv WHERE NOT EXISTS (SELECT 1 FROM kv_counts) GROUP BY channel;
CREATE TABLE IF NOT EXISTS versions (
    kind    TEXT NOT NULL,
    code    TEXT NOT NULL,
    number  INTEGER NOT NULL,
    at      TEXT NOT NULL,
    action  TEXT NOT NULL,
    by      TEXT NOT NULL,
    sha256  TEXT NOT NULL,
    content TEXT,
    PRIMARY KEY (kind, code, number)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (
    seq   INTEGER PRIMARY KEY AUTOINCREMENT,
    ms    INTEGER NOT NULL,
    entry TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_time ON audit (ms);
CREATE TABLE IF NOT EXISTS secrets (
    name   TEXT PRIMARY KEY,
    record TEXT NOT NULL
) WITHOUT ROWID;
";

/// Columns added after the first release of the schema: (table, column, declaration).
const COLUMNS_ADDED: &[(&str, &str, &str)] = &[
    ("jobs", "test", "INTEGER NOT NULL DEFAULT 0"),
    ("jobs", "tags", "TEXT"),
    ("kv", "expires", "INTEGER"),
    // The node that made an attempt (cluster mode: attempts of other nodes
    // before the job was given to this one); NULL: this node.
    ("attempts", "node", "TEXT"),
    // What the attempt did: its outbound calls and log lines (JSON, bounded).
    ("attempts", "trail", "TEXT"),
];

/// What needs the added columns.
const AFTER_COLUMNS: &str = "
CREATE INDEX IF NOT EXISTS kv_expiry ON kv (expires) WHERE expires IS NOT NULL;
CREATE TABLE IF NOT EXISTS job_tags (
    tag TEXT NOT NULL,
    job TEXT NOT NULL,
    PRIMARY KEY (tag, job)
) WITHOUT ROWID;
";

/// Adds `column` to `table` unless it is there.
fn add_column(c: &Connection, table: &str, column: &str, decl: &str) -> rusqlite::Result<()> {
    let has: i64 = c.query_row(
        "SELECT count(*) FROM pragma_table_info(?1) WHERE name = ?2",
        [table, column],
        |r| r.get(0),
    )?;
    if has == 0 {
        c.execute_batch(&format!("ALTER TABLE {table} ADD COLUMN {column} {decl}"))?;
    }
    Ok(())
}

fn connect(path: &Path) -> rusqlite::Result<Connection> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

/// What to do about a store that cannot be used, after the reason.
const RESTORE: &str =
    "restore it from a backup (switchyard backup), or move it away to start with an empty store";

/// SQLite's quick check of a store: `Ok` or what is wrong.
pub fn check(conn: &Connection) -> Result<(), String> {
    let mut found = Vec::new();
    let mut stmt = conn
        .prepare("PRAGMA quick_check(5)")
        .map_err(|e| e.to_string())?;
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(|e| e.to_string())?;
    for row in rows {
        found.push(row.map_err(|e| e.to_string())?);
    }
    if found == ["ok"] {
        Ok(())
    } else {
        Err(found.join("; "))
    }
}

/// Holds an exclusive lock on `<data>/switchyard.lock` while the store is open,
/// so a second server on the same folder is refused with a clear message.
struct FolderLock(#[allow(dead_code)] std::fs::File);

impl FolderLock {
    fn take(dir: &Path, db: &Path) -> Result<Self, StoreError> {
        use std::os::fd::AsRawFd;
        let path = dir.join("switchyard.lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| StoreError(format!("{}: {e}", path.display())))?;
        // SAFETY: flock on a descriptor this function owns.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
        if !locked {
            return Err(StoreError(format!(
                "{} is in use by another switchyard process (it holds {}); stop it first",
                db.display(),
                path.display()
            )));
        }
        Ok(Self(file))
    }
}

impl Store {
    /// Opens (creating) `<dir>/switchyard.db` and starts the writer thread.
    ///
    /// The store is checked first: a damaged file (or an empty one, which is a
    /// truncated store) is refused with a message naming it and what to do,
    /// never served and never replaced; a missing one is created, and the log
    /// says so.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError(format!("{}: {e}", dir.display())))?;
        let path = dir.join("switchyard.db");
        let named = |e: rusqlite::Error| StoreError(format!("{}: {e}", path.display()));
        let lock = FolderLock::take(dir, &path)?;
        // Give the reserve up first: opening may need room (the -shm and -wal
        // files) on a full disk. It is made again once there is room.
        let reserve = dir.join("switchyard.reserve");
        let _ = std::fs::remove_file(&reserve);
        match std::fs::metadata(&path) {
            Ok(meta) if meta.len() == 0 => {
                return Err(StoreError(format!(
                    "{} is empty (0 bytes): it is not a store, or a truncated one; {RESTORE}",
                    path.display()
                )))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!(path = %path.display(), "no store yet: creating an empty one");
            }
            Err(e) => return Err(StoreError(format!("{}: {e}", path.display()))),
        }
        let writer = connect(&path).map_err(named)?;
        check(&writer).map_err(|what| {
            StoreError(format!("{} is damaged ({what}); {RESTORE}", path.display()))
        })?;
        writer.execute_batch(SCHEMA).map_err(named)?;
        // Columns added after the first release of the schema.
        for (table, column, decl) in COLUMNS_ADDED {
            add_column(&writer, table, column, decl).map_err(named)?;
        }
        writer.execute_batch(AFTER_COLUMNS).map_err(named)?;
        let reader = connect(&path).map_err(named)?;
        let (tx, rx) = mpsc::channel::<Op>();
        let full = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer_full = full.clone();
        let writer_reserve = reserve.clone();
        std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || write_loop(writer, rx, &writer_full, &writer_reserve))
            .map_err(|e| StoreError(format!("cannot start the writer: {e}")))?;
        let store = Self {
            ops: Mutex::new(tx),
            reader: Mutex::new(reader),
            path,
            full,
            disk_full: Default::default(),
            _lock: lock,
        };
        store.keep_reserve();
        Ok(store)
    }

    /// `true` while writes fail for lack of space: the store's, or a file's
    /// beside it ([`Store::note_disk_full`]).
    pub fn is_full(&self) -> bool {
        use std::sync::atomic::Ordering::Relaxed;
        self.full.load(Relaxed) || self.disk_full.load(Relaxed)
    }

    /// A write on the store's disk outside the store (a file) failed for
    /// lack of space: the store counts as full until [`Store::recover`] finds
    /// room for a file again.
    pub fn note_disk_full(&self) {
        if !self
            .disk_full
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::error!(store = %self.path.display(), "the data disk is full: file writes answer 507 until space is freed");
        }
    }

    /// Whether a small file can be written, synced and removed beside the store.
    fn file_fits(&self) -> bool {
        let Some(dir) = self.path.parent() else {
            return true;
        };
        let probe = dir.join(".space_probe");
        let written = std::fs::File::create(&probe).and_then(|mut f| {
            use std::io::Write;
            f.write_all(&[0u8; 64 * 1024])?;
            f.sync_all()
        });
        let _ = std::fs::remove_file(&probe);
        written.is_ok()
    }

    /// While full: tries a small real write, which clears the state once space
    /// was freed. Otherwise: makes the reserve again if it was given up and
    /// there is ample room. Called periodically.
    pub async fn recover(&self) {
        use std::sync::atomic::Ordering::Relaxed;
        if self.disk_full.load(Relaxed) && self.file_fits() {
            self.disk_full.store(false, Relaxed);
            tracing::info!(store = %self.path.display(), "the data disk has room for files again");
        }
        if self.full.load(Relaxed) {
            let now = chrono::Utc::now().to_rfc3339();
            let probe = self
                .write(move |c| {
                    c.execute(
                        "INSERT OR REPLACE INTO meta (k, v) VALUES ('space_probe', ?1)",
                        [now],
                    )
                })
                .await;
            if probe.is_ok() {
                tracing::info!(store = %self.path.display(), "the store has room again");
                let _ = self.checkpoint().await;
            }
        } else {
            self.keep_reserve();
        }
    }

    /// Makes `switchyard.reserve` when it is missing and the disk has room for it four times over.
    fn keep_reserve(&self) {
        let Some(dir) = self.path.parent() else {
            return;
        };
        let reserve = dir.join("switchyard.reserve");
        if reserve.exists() || free_bytes(dir).is_some_and(|free| free < 4 * RESERVE_BYTES) {
            return;
        }
        let made = std::fs::File::create(&reserve).and_then(|f| {
            use std::io::Write;
            let mut f = std::io::BufWriter::new(f);
            f.write_all(&vec![0u8; RESERVE_BYTES as usize])?;
            f.into_inner()?.sync_all()
        });
        if let Err(e) = made {
            let _ = std::fs::remove_file(&reserve);
            tracing::warn!(file = %reserve.display(), "cannot make the store's space reserve: {e}");
        }
    }

    /// Moves everything in the write-ahead log into the database file and
    /// empties the log, so that `switchyard.db` alone is a complete copy.
    /// Waits for the writes submitted before it.
    pub async fn checkpoint(&self) -> Result<(), StoreError> {
        // An empty write: when it is answered, every earlier write is committed.
        self.write(|_| Ok(())).await?;
        self.read(|c| c.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)"))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn submit<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<oneshot::Receiver<Result<T, StoreError>>, StoreError> {
        let (tx, rx) = oneshot::channel();
        let full = self.full.clone();
        let op: Op = Box::new(move |conn| {
            let result = in_savepoint(conn, f);
            if matches!(&result, Err(e) if e.is_full()) {
                full.store(true, std::sync::atomic::Ordering::Relaxed);
            }
            Box::new(move |commit: Result<(), StoreError>| {
                let _ = tx.send(commit.and(result));
            })
        });
        self.ops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(op)
            .map_err(|_| StoreError("the writer has stopped".into()))?;
        Ok(rx)
    }

    /// Runs `f` in a write transaction; returns once it is committed to disk.
    pub async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.submit(f)?
            .await
            .map_err(|_| StoreError("the writer has stopped".into()))?
    }

    /// [`write`](Self::write) for blocking threads (scripts).
    pub fn write_blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, StoreError> {
        let done = self.submit(f)?;
        // Waiting for the commit does not hold a script's computing slot.
        crate::script::priority::while_waiting(|| done.blocking_recv())
            .map_err(|_| StoreError("the writer has stopped".into()))?
    }

    /// Reads with the read connection (blocking; keep it short).
    pub fn read<T>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, StoreError> {
        let conn = self.reader.lock().unwrap_or_else(|p| p.into_inner());
        Ok(f(&conn)?)
    }
}

fn in_savepoint<T>(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> rusqlite::Result<T>,
) -> Result<T, StoreError> {
    conn.execute_batch("SAVEPOINT op")?;
    match f(conn) {
        Ok(v) => {
            conn.execute_batch("RELEASE op")?;
            Ok(v)
        }
        Err(e) => {
            conn.execute_batch("ROLLBACK TO op; RELEASE op")?;
            Err(e.into())
        }
    }
}

/// Free bytes on the file system of `dir` (for the caller, not root).
fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs fills the struct for a NUL-terminated path; zeroed is a valid start.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `st` is writable for the call.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some(st.f_bavail as u64 * st.f_frsize as u64)
}

fn write_loop(
    conn: Connection,
    ops: mpsc::Receiver<Op>,
    full: &std::sync::atomic::AtomicBool,
    reserve: &Path,
) {
    use std::sync::atomic::Ordering;
    while let Ok(first) = ops.recv() {
        let mut group = vec![first];
        while group.len() < GROUP_MAX {
            match ops.try_recv() {
                Ok(op) => group.push(op),
                Err(_) => break,
            }
        }
        let changes_before = conn.total_changes();
        let begun = conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(StoreError::from);
        let mut completions = Vec::with_capacity(group.len());
        let commit = match begun {
            Ok(()) => {
                for op in group {
                    completions.push(op(&conn));
                }
                conn.execute_batch("COMMIT").map_err(StoreError::from)
            }
            Err(e) => {
                // Not run: dropping them answers their callers with an error.
                drop(group);
                Err(e)
            }
        };
        if let Err(e) = &commit {
            tracing::error!("{e}");
            let _ = conn.execute_batch("ROLLBACK");
        }
        if matches!(&commit, Err(e) if e.is_full()) {
            full.store(true, Ordering::Relaxed);
        }
        if commit.is_ok() && conn.total_changes() > changes_before {
            // A write landed: there is room again.
            full.store(false, Ordering::Relaxed);
        }
        if full.load(Ordering::Relaxed) && reserve.exists() {
            // Room for a checkpoint, and for a restart: the reserve goes now.
            let _ = std::fs::remove_file(reserve);
            let _ = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)");
            tracing::error!("the store's disk is full: writes answer 507 until space is freed");
        }
        for done in completions {
            done(commit.clone());
        }
    }
}

/// `switchyard backup`: a consistent copy of the store in `dir` to `file`, made
/// with SQLite's online backup in one read transaction (a server may be
/// writing meanwhile), then checked.
pub fn backup(dir: &Path, file: &Path) -> Result<(), StoreError> {
    let source = dir.join("switchyard.db");
    if !source.is_file() {
        return Err(StoreError(format!("{}: no store there", source.display())));
    }
    // SQLite takes a 0-byte file for an empty database: a copy of it would
    // look like a good backup of nothing.
    if std::fs::metadata(&source).is_ok_and(|m| m.len() == 0) {
        return Err(StoreError(format!(
            "{} is empty (0 bytes): it is not a store, or a truncated one; nothing was copied",
            source.display()
        )));
    }
    let named = |p: &Path, e: rusqlite::Error| StoreError(format!("{}: {e}", p.display()));
    let from = Connection::open_with_flags(&source, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| named(&source, e))?;
    from.busy_timeout(Duration::from_secs(10))
        .map_err(|e| named(&source, e))?;
    let partial = file.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    let mut to = Connection::open(&partial).map_err(|e| named(file, e))?;
    {
        let copy = rusqlite::backup::Backup::new(&from, &mut to).map_err(|e| named(file, e))?;
        // All pages in one step: one read transaction, so the copy is one moment.
        copy.step(-1).map_err(|e| named(&source, e))?;
    }
    check(&to).map_err(|what| StoreError(format!("the copy is damaged: {what}")))?;
    drop(to);
    std::fs::rename(&partial, file).map_err(|e| StoreError(format!("{}: {e}", file.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_commit_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .write(|c| {
                c.execute(
                    "INSERT INTO kv (channel, key, value) VALUES ('ch', 'a', '1')",
                    [],
                )
            })
            .await
            .unwrap();
        // A failing write does not undo the others of its group.
        let bad = store.write(|c| c.execute("INSERT INTO nope VALUES (1)", []));
        let good = store.write(|c| {
            c.execute(
                "INSERT INTO kv (channel, key, value) VALUES ('ch', 'b', '2')",
                [],
            )
        });
        let (bad, good) = tokio::join!(bad, good);
        assert!(bad.is_err());
        assert!(good.is_ok());
        drop(store);
        let store = Store::open(dir.path()).unwrap();
        let n: i64 = store
            .read(|c| c.query_row("SELECT count(*) FROM kv", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(n, 2);
    }

    #[tokio::test]
    async fn concurrent_writes_are_grouped() {
        let dir = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(Store::open(dir.path()).unwrap());
        let writes = (0..200).map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .write(move |c| {
                        c.execute(
                            "INSERT INTO kv (channel, key, value) VALUES ('ch', ?1, 'v')",
                            [format!("k{i}")],
                        )
                    })
                    .await
            })
        });
        for w in futures_util::future::join_all(writes).await {
            w.unwrap().unwrap();
        }
        let n: i64 = store
            .read(|c| c.query_row("SELECT count(*) FROM kv", [], |r| r.get(0)))
            .unwrap();
        assert_eq!(n, 200);
    }
}
