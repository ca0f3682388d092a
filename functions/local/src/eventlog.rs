//! The local bus: an append-only, ordered event log in its own SQLite file. One writer thread
//! commits whatever arrived while the previous commit ran (group commit), so durability costs one
//! fsync per batch rather than per event.

use std::path::Path;
use std::sync::mpsc;

use anyhow::Context;
use async_trait::async_trait;
use busway_core::envelope::BusEvent;
use busway_core::ports::{Bus, EntryFailure};
use rusqlite::{Connection, params};
use tokio::sync::oneshot;

const MAX_BATCH: usize = 4096;

type Reply = oneshot::Sender<anyhow::Result<Vec<Result<(), EntryFailure>>>>;

/// An event as stored: serialized by the caller, so the single writer only writes.
struct Row {
    id: String,
    event_id: String,
    source: String,
    detail_type: String,
    time: String,
    detail: String,
}

impl Row {
    fn new(event: BusEvent) -> anyhow::Result<Self> {
        Ok(Self {
            time: event
                .time
                .format(&time::format_description::well_known::Rfc3339)?,
            detail: event.detail.to_string(),
            id: event.id,
            event_id: event.event_id,
            source: event.source,
            detail_type: event.detail_type,
        })
    }
}

pub struct EventLog {
    tx: mpsc::Sender<(Vec<Row>, Reply)>,
}

impl EventLog {
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        let conn = Connection::open(path).with_context(|| format!("opening {}", path.display()))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS events (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                id TEXT NOT NULL,
                event_id TEXT NOT NULL,
                source TEXT NOT NULL,
                detail_type TEXT NOT NULL,
                time TEXT NOT NULL,
                detail TEXT NOT NULL,
                UNIQUE (detail_type, event_id))",
        )?;
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("busway-eventlog".into())
            .spawn(move || writer(conn, rx))
            .context("starting the event log writer")?;
        Ok(Self { tx })
    }
}

fn writer(mut conn: Connection, rx: mpsc::Receiver<(Vec<Row>, Reply)>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        let mut count = batch[0].0.len();
        while count < MAX_BATCH {
            match rx.try_recv() {
                Ok(next) => {
                    count += next.0.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        match append(&mut conn, &batch) {
            Ok(()) => {
                for (events, reply) in batch {
                    let _ = reply.send(Ok(vec![Ok(()); events.len()]));
                }
            }
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "event log commit failed");
                for (_, reply) in batch {
                    let _ = reply.send(Err(anyhow::anyhow!("event log commit failed: {e:#}")));
                }
            }
        }
    }
}

fn append(conn: &mut Connection, batch: &[(Vec<Row>, Reply)]) -> anyhow::Result<()> {
    let tx = conn.transaction()?;
    {
        // A repeated event_id of one event version is the producer retrying: it is stored once.
        let mut insert = tx.prepare_cached(
            "INSERT INTO events (id, event_id, source, detail_type, time, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (detail_type, event_id) DO NOTHING",
        )?;
        for row in batch.iter().flat_map(|(rows, _)| rows) {
            insert.execute(params![
                row.id,
                row.event_id,
                row.source,
                row.detail_type,
                row.time,
                row.detail
            ])?;
        }
    }
    tx.commit()?;
    Ok(())
}

#[async_trait]
impl Bus for EventLog {
    async fn put_events(
        &self,
        events: Vec<BusEvent>,
    ) -> anyhow::Result<Vec<Result<(), EntryFailure>>> {
        let rows = events
            .into_iter()
            .map(Row::new)
            .collect::<anyhow::Result<Vec<_>>>()?;
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((rows, reply))
            .map_err(|_| anyhow::anyhow!("the event log writer has stopped"))?;
        answer
            .await
            .context("the event log writer dropped the request")?
    }
}
