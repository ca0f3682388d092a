//! Versions of the embedded SQLite files (`busway.db`, `events.db`). A file's `user_version`
//! counts the migration steps applied to it, the convention of the `rusqlite_migration` crate (not
//! used: its releases build against rusqlite 0.40, and two rusqlite versions cannot link one
//! SQLite), so a later switch to it keeps every data dir as it is. Files of the first release
//! carry no version and read 0.
//!
//! Opening a file brings it to this release's version in one transaction, after keeping a copy of
//! it under `backups/` beside it. A file whose version is higher was written by a newer busway: it
//! is refused before anything writes to it.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rusqlite::{Connection, TransactionBehavior};

/// The ordered steps of one file's schema. Steps are only ever appended: a data dir at version
/// n runs the steps after the nth.
pub struct Migrations {
    steps: &'static [&'static str],
}

/// `busway.db`. Step 1 is the first release's schema, whose files already have these tables;
/// step 2 makes every deployment record a job's (attempt, execution); step 3 adds the retry
/// schedule and the queued messages' send times; step 4 adds API keys and
/// the subscriptions' signing secrets; step 5 the paused subscriptions; step 6 the answers kept
/// for the portal's `Idempotency-Key`s; step 7 the audit trail; step 8 the teams' target accounts.
pub const STORE: Migrations = Migrations::new(&[
    include_str!("migrations/store-001.sql"),
    include_str!("migrations/store-002-provisioning-jobs.sql"),
    include_str!("migrations/store-003-delivery.sql"),
    include_str!("migrations/store-004-identity.sql"),
    include_str!("migrations/store-005-paused-subscriptions.sql"),
    include_str!("migrations/store-006-idempotency.sql"),
    include_str!("migrations/store-007-audit.sql"),
    include_str!("migrations/store-008-team-targets.sql"),
]);

/// `events.db`. Step 1 is the first release's schema, whose files already have these tables.
pub const EVENT_LOG: Migrations = Migrations::new(&[include_str!("migrations/events-001.sql")]);

/// A file written by a newer busway than this one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewerFile {
    pub path: PathBuf,
    pub found: u32,
    pub supported: u32,
}

impl fmt::Display for NewerFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} is at version {}, written by a newer busway; busway {} reads versions up to {}. \
             Nothing was changed: run the busway that wrote it, or a later one",
            self.path.display(),
            self.found,
            env!("CARGO_PKG_VERSION"),
            self.supported
        )
    }
}

impl std::error::Error for NewerFile {}

/// Where `user_version` lives in an SQLite file's header (sqlite.org/fileformat.html).
const HEADER_MAGIC: &[u8; 16] = b"SQLite format 3\0";
const USER_VERSION_AT: usize = 60;
const HEADER_LEN: usize = USER_VERSION_AT + 4;

impl Migrations {
    pub const fn new(steps: &'static [&'static str]) -> Self {
        Self { steps }
    }

    /// The version this release writes.
    pub fn latest(&self) -> u32 {
        u32::try_from(self.steps.len()).unwrap_or(u32::MAX)
    }

    /// Refuses a file of a newer busway by reading its header, so nothing (no lock, no WAL, no
    /// journal mode) touches it. A missing or empty file passes: opening creates it.
    ///
    /// Call it before this process opens any connection to `path`: closing the descriptor it
    /// reads through drops every POSIX lock the process holds on the file, SQLite's included
    /// (sqlite.org/howtocorrupt.html §2.2), and another process closing its connection would
    /// then take itself for the last one and checkpoint and delete the WAL of a running broker.
    pub fn check(&self, path: &Path) -> anyhow::Result<()> {
        let mut header = Vec::with_capacity(HEADER_LEN);
        match std::fs::File::open(path) {
            // Only the header: an event log may be gigabytes.
            Ok(file) => file.take(HEADER_LEN as u64).read_to_end(&mut header),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => Err(e),
        }
        .with_context(|| format!("reading {}", path.display()))?;
        if header.len() < HEADER_LEN || !header.starts_with(HEADER_MAGIC) {
            return Ok(());
        }
        let mut version = [0; 4];
        version.copy_from_slice(&header[USER_VERSION_AT..HEADER_LEN]);
        self.refuse_newer(path, i64::from(i32::from_be_bytes(version)))
    }

    /// Refuses a file of another release, older ones too, without changing it: for a command
    /// that runs beside a `busway up` that may be the older release, and leaves upgrades to it.
    /// The version is read through SQLite, since a running busway's last change may still be in
    /// the WAL.
    pub fn refuse_older(&self, path: &Path) -> anyhow::Result<()> {
        self.check(path)?;
        let found = Connection::open(path)
            .map_err(anyhow::Error::from)
            .and_then(|conn| version(&conn))
            .with_context(|| format!("reading the version of {}", path.display()))?;
        anyhow::ensure!(
            found >= i64::from(self.latest()),
            "{} was written by an older busway (version {found}; this one writes {}): run this \
             release's `busway up` on the data dir once to upgrade it, or the older release's \
             `busway keys`",
            path.display(),
            self.latest()
        );
        Ok(())
    }

    fn refuse_newer(&self, path: &Path, found: i64) -> anyhow::Result<()> {
        let found = u32::try_from(found)
            .with_context(|| format!("{} has a negative version {found}", path.display()))?;
        if found > self.latest() {
            return Err(NewerFile {
                path: path.to_path_buf(),
                found,
                supported: self.latest(),
            }
            .into());
        }
        Ok(())
    }

    /// Brings the file open on `conn` at `path` to `latest`: a copy of a file that holds data
    /// goes to `backups/{name}-v{version}.db` beside it first, then the missing steps and the new
    /// version commit together, or nothing does.
    pub fn apply(&self, conn: &mut Connection, path: &Path) -> anyhow::Result<()> {
        // The first reads of the file: a damaged one fails here, named.
        let reading = || format!("reading {}", path.display());
        let found = version(conn).with_context(reading)?;
        self.refuse_newer(path, found)?;
        if found == i64::from(self.latest()) {
            return Ok(());
        }
        let tables: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .with_context(reading)?;
        if tables > 0 {
            backup(conn, path, found)?;
        }
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        // Another busway may have migrated the file since it was read.
        let found = version(&tx)?;
        self.refuse_newer(path, found)?;
        let first = usize::try_from(found).unwrap_or(usize::MAX);
        for (n, step) in self.steps.iter().enumerate().skip(first) {
            tx.execute_batch(step)
                .with_context(|| format!("migrating {} to version {}", path.display(), n + 1))?;
        }
        tx.pragma_update(None, "user_version", self.latest())?;
        tx.commit()
            .with_context(|| format!("committing the migration of {}", path.display()))?;
        tracing::info!(file = %path.display(), from = found, to = self.latest(), "migrated");
        Ok(())
    }
}

fn version(conn: &Connection) -> anyhow::Result<i64> {
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

/// The copy kept before a migration: a copy of the same version from an earlier, failed attempt
/// is replaced, the newest data of that version being the one to keep.
fn backup(conn: &Connection, path: &Path, version: i64) -> anyhow::Result<()> {
    let dir = path
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("backups");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let stem = path
        .file_stem()
        .map_or_else(|| "busway".into(), |s| s.to_string_lossy());
    let target = dir.join(format!("{stem}-v{version}.db"));
    remove_stale(&target)?;
    copy_into(conn, path, &target)?;
    tracing::info!(file = %path.display(), backup = %target.display(), "kept a copy before migrating");
    Ok(())
}

/// A consistent copy (`VACUUM INTO`, one read transaction) of the file open on `conn` at
/// `path`, written aside, flushed and renamed to `target`, so a half copy never passes for one.
pub fn copy_into(conn: &Connection, path: &Path, target: &Path) -> anyhow::Result<()> {
    let partial = target.with_extension("db.partial");
    remove_stale(&partial)?;
    let into = partial
        .to_str()
        .with_context(|| format!("{} is not UTF-8", partial.display()))?;
    conn.execute("VACUUM INTO ?1", [into])
        .with_context(|| format!("copying {} to {}", path.display(), partial.display()))?;
    std::fs::File::open(&partial)
        .and_then(|file| file.sync_all())
        .with_context(|| format!("flushing {}", partial.display()))?;
    std::fs::rename(&partial, target).with_context(|| format!("renaming {}", partial.display()))
}

/// Removes what an earlier, failed attempt left at `path`, if anything.
fn remove_stale(path: &Path) -> anyhow::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(anyhow::Error::new(e).context(format!("removing {}", path.display())))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_STEPS: Migrations = Migrations::new(&[
        "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL);",
        "ALTER TABLE notes ADD COLUMN author TEXT NOT NULL DEFAULT 'legacy';",
    ]);

    fn first_release_file(dir: &Path) -> PathBuf {
        let path = dir.join("busway.db");
        let conn = Connection::open(&path).expect("opens");
        conn.execute_batch(
            "CREATE TABLE notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL);
             INSERT INTO notes (text) VALUES ('kept');",
        )
        .expect("the first release's table");
        path
    }

    #[test]
    fn a_damaged_file_is_named_in_the_error() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = first_release_file(dir.path());
        let mut bytes = std::fs::read(&path).expect("the file");
        bytes.truncate(bytes.len() / 2);
        bytes[HEADER_LEN..].fill(0xff);
        std::fs::write(&path, bytes).expect("damaged");
        let mut conn = Connection::open(&path).expect("opens");
        let error = TWO_STEPS.apply(&mut conn, &path).expect_err("damaged");
        assert!(
            format!("{error:#}").contains(&path.display().to_string()),
            "{error:#}"
        );
    }

    #[test]
    fn an_unversioned_file_is_copied_then_migrated() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = first_release_file(dir.path());
        let mut conn = Connection::open(&path).expect("opens");
        TWO_STEPS.apply(&mut conn, &path).expect("migrates");
        assert_eq!(version(&conn).expect("a version"), 2);
        let author: String = conn
            .query_row("SELECT author FROM notes WHERE text = 'kept'", [], |r| {
                r.get(0)
            })
            .expect("the row is kept with the new column's default");
        assert_eq!(author, "legacy");

        let copy = Connection::open(dir.path().join("backups/busway-v0.db")).expect("a backup");
        assert_eq!(version(&copy).expect("a version"), 0);
        let text: String = copy
            .query_row("SELECT text FROM notes", [], |r| r.get(0))
            .expect("the backup holds the old rows");
        assert_eq!(text, "kept");
        assert!(
            copy.prepare("SELECT author FROM notes").is_err(),
            "the backup is the old schema"
        );

        // Opening again finds nothing to do and keeps no second copy.
        TWO_STEPS.apply(&mut conn, &path).expect("nothing to do");
        let backups = std::fs::read_dir(dir.path().join("backups"))
            .expect("the folder")
            .count();
        assert_eq!(backups, 1);
    }

    #[test]
    fn a_new_file_gets_every_step_and_no_backup() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = dir.path().join("new.db");
        let mut conn = Connection::open(&path).expect("opens");
        TWO_STEPS.apply(&mut conn, &path).expect("migrates");
        assert_eq!(version(&conn).expect("a version"), 2);
        assert!(!dir.path().join("backups").exists());
    }

    #[test]
    fn a_failing_step_leaves_the_file_at_its_version() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = first_release_file(dir.path());
        let broken = Migrations::new(&[
            "CREATE TABLE IF NOT EXISTS notes (id INTEGER PRIMARY KEY, text TEXT NOT NULL);",
            "CREATE TABLE more (id INTEGER); ALTER TABLE missing ADD COLUMN x TEXT;",
        ]);
        let mut conn = Connection::open(&path).expect("opens");
        let error = broken.apply(&mut conn, &path).expect_err("the step fails");
        assert!(format!("{error:#}").contains("to version 2"), "{error:#}");
        assert_eq!(version(&conn).expect("a version"), 0);
        assert!(
            conn.prepare("SELECT id FROM more").is_err(),
            "the first half rolled back"
        );
    }

    #[test]
    fn a_file_of_a_newer_busway_is_refused_untouched() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let path = first_release_file(dir.path());
        Connection::open(&path)
            .and_then(|c| c.pragma_update(None, "user_version", 3))
            .expect("stamped");
        let before = std::fs::read(&path).expect("the file");

        let error = TWO_STEPS.check(&path).expect_err("refused");
        let newer = error.downcast_ref::<NewerFile>().expect("a NewerFile");
        assert_eq!((newer.found, newer.supported), (3, 2));
        let message = error.to_string();
        assert!(
            message.contains("version 3") && message.contains("up to 2"),
            "{message}"
        );

        let mut conn = Connection::open(&path).expect("opens");
        let error = TWO_STEPS.apply(&mut conn, &path).expect_err("refused");
        assert!(error.downcast_ref::<NewerFile>().is_some(), "{error:#}");
        drop(conn);
        assert_eq!(std::fs::read(&path).expect("the file"), before);
        assert!(!dir.path().join("backups").exists());
    }

    #[test]
    fn the_steps_of_the_first_release_create_its_schema_on_its_files_without_a_change() {
        let dir = tempfile::tempdir().expect("a temp dir");
        for (migrations, file) in [(&STORE, "busway.db"), (&EVENT_LOG, "events.db")] {
            let path = dir.path().join(file);
            let mut conn = Connection::open(&path).expect("opens");
            conn.execute_batch(migrations.steps[0])
                .expect("the first release's schema");
            migrations.apply(&mut conn, &path).expect("migrates");
            assert_eq!(
                version(&conn).expect("a version"),
                i64::from(migrations.latest())
            );
        }
    }
}
