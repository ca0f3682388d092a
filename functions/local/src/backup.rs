//! `busway backup`: a consistent copy of a data dir, taken while `busway up` serves it, which
//! `busway up --data-dir` of the copy serves as it was. Each SQLite file is copied in one read
//! transaction (`VACUUM INTO`), which never blocks the broker's writers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use rusqlite::{Connection, OpenFlags};

use crate::migrations::{EVENT_LOG, STORE, copy_into};

/// Copies `data_dir` into `to`, which must be new or empty; returns the files it wrote.
///
/// `busway.db` is copied before `events.db`: the log's copy then holds every event the store's
/// delivery positions and retries name (events logged between the two copies are delivered
/// again, at least once). The bucket folders come last, so every object a copied event or
/// deployment names is there (objects are written before what names them is committed).
pub fn run(data_dir: &Path, to: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let (db, log) = (data_dir.join("busway.db"), data_dir.join("events.db"));
    anyhow::ensure!(db.exists(), "no busway data in {}", data_dir.display());
    STORE.check(&db)?;
    EVENT_LOG.check(&log)?;
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    let mut entries = std::fs::read_dir(to).with_context(|| format!("reading {}", to.display()))?;
    anyhow::ensure!(
        entries.next().is_none(),
        "{} is not empty: a backup goes into a new folder",
        to.display()
    );
    let mut written = Vec::new();
    for file in [&db, &log] {
        if file.exists() {
            let copy = to.join(file.file_name().unwrap_or_default());
            vacuum_into(file, &copy)?;
            written.push(copy);
        }
    }
    let buckets = data_dir.join("buckets");
    if buckets.exists() {
        copy_dir(&buckets, &to.join("buckets"))?;
        written.push(to.join("buckets"));
    }
    std::fs::File::open(to)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("flushing {}", to.display()))?;
    Ok(written)
}

/// A consistent copy of the SQLite file at `from`, flushed to disk.
fn vacuum_into(from: &Path, to: &Path) -> anyhow::Result<()> {
    let conn = Connection::open_with_flags(from, OpenFlags::SQLITE_OPEN_READ_WRITE)
        .with_context(|| format!("opening {}", from.display()))?;
    conn.busy_timeout(Duration::from_secs(30))?;
    copy_into(&conn, from, to)
}

/// Copies the folder `from` into `to`, file by file; a file that went meanwhile (a writer's
/// temporary file) is skipped.
fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    let mut pending = vec![(from.to_path_buf(), to.to_path_buf())];
    while let Some((source, target)) = pending.pop() {
        std::fs::create_dir_all(&target)
            .with_context(|| format!("creating {}", target.display()))?;
        for entry in
            std::fs::read_dir(&source).with_context(|| format!("reading {}", source.display()))?
        {
            let entry = entry?;
            let (path, copy) = (entry.path(), target.join(entry.file_name()));
            if entry.file_type()?.is_dir() {
                pending.push((path, copy));
                continue;
            }
            match std::fs::copy(&path, &copy) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => {
                    return Err(anyhow::Error::new(e).context(format!(
                        "copying {} to {}",
                        path.display(),
                        copy.display()
                    )));
                }
            }
        }
    }
    Ok(())
}
