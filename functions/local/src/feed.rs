//! One reader of the log per event type, shared by the subscriptions of that type: it reads each
//! committed page once, matches every event against all their patterns at once (one
//! `busway_pattern::RuleSet`) and puts each subscription's matches in its inbox, so a commit
//! costs one read and one match per event however many subscriptions there are.
//!
//! A subscription whose worker is at the log's end is a member: its inbox holds the matches of
//! a contiguous range of positions after its own. A worker behind (started from a saved cursor,
//! resumed, replaying) or detached reads the log by itself until it reaches the end, then joins.
//! An inbox holds at most a page: a member that does not take its matches in time is detached
//! (its inbox emptied) and reads the log by itself from where it was, so a slow consumer never
//! makes the shared reader hold more than a page per subscription.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use busway_pattern::{Pattern, RuleSet};
use tokio::sync::Notify;
use tracing::warn;

use crate::eventlog::{LogReader, Logged, PAGE_BYTES, bytes, is_full};

/// Events read at once, and the most an inbox holds (and no more than [`PAGE_BYTES`] of them).
pub const PAGE: usize = 512;

/// How often the members a page does not concern are moved on: each page touches only the
/// members it has matches for, so a thousand subscriptions cost no more per event than one.
const SWEEP: Duration = Duration::from_millis(20);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The shared reader of one event type.
pub struct Fanout {
    detail_type: String,
    reader: Arc<LogReader>,
    /// New events of this type are in the log.
    wake: Notify,
    state: Mutex<State>,
}

struct State {
    /// The last position read: the reader reads after it.
    head: i64,
    rules: RuleSet<u64>,
    members: HashMap<u64, Arc<Member>>,
    /// When the members without matches were last moved on to `head`, and whether `head` has
    /// moved since.
    swept: Instant,
    unswept: bool,
}

/// A worker's side of the feed.
pub struct Member {
    inbox: Mutex<Inbox>,
    /// The worker's wake-up: matches arrived, or it was detached.
    wake: Arc<Notify>,
    /// Where the worker's settled position goes when the reader moves an idle member on.
    cursor: Arc<dyn Fn(i64) + Send + Sync>,
}

#[derive(Default)]
struct Inbox {
    attached: bool,
    /// The matches of the positions in `(from, to]`, in order.
    from: i64,
    to: i64,
    events: Vec<Logged>,
    /// The worker has nothing read and unsettled and took everything up to `from`: the reader
    /// may move it past events that do not match without waking it.
    idle: bool,
}

/// What a worker reads next.
pub enum Next {
    /// The positions up to `.0` are read; these are the matching ones.
    Page(i64, Vec<Logged>),
    /// Nothing new: wait for the worker's wake-up.
    Nothing,
    /// Read the log by itself, up to this position (the start of the inbox) or to its end.
    Read(Option<i64>),
}

impl Fanout {
    pub fn new(detail_type: String, reader: Arc<LogReader>, head: i64) -> Arc<Self> {
        Arc::new(Self {
            detail_type,
            reader,
            wake: Notify::new(),
            state: Mutex::new(State {
                head,
                rules: RuleSet::new(),
                members: HashMap::new(),
                swept: Instant::now(),
                unswept: false,
            }),
        })
    }

    /// New events of this type were committed.
    pub fn notify(&self) {
        self.wake.notify_one();
    }

    /// Reads each new page once and hands the members their matches, for as long as it runs.
    pub async fn run(self: Arc<Self>) {
        loop {
            match self.step().await {
                Ok(true) => {}
                // At the log's end: members are moved on once the events stop.
                Ok(false) if lock(&self.state).unswept => {
                    tokio::select! {
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep(SWEEP) => self.sweep(),
                    }
                }
                Ok(false) => self.wake.notified().await,
                Err(e) => {
                    warn!(detail_type = %self.detail_type, error = %format!("{e:#}"), "reading the log failed; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Reads the page after the reader's position and hands it out; false when it was the last:
    /// a page short of full reached the log's end, and a commit after the read wakes the reader
    /// again (`notify`), so it does not read once more to find nothing.
    async fn step(&self) -> anyhow::Result<bool> {
        let head = lock(&self.state).head;
        let (reader, detail_type) = (self.reader.clone(), self.detail_type.clone());
        let page =
            tokio::task::spawn_blocking(move || reader.after(head, Some(&detail_type), PAGE))
                .await??;
        let full = is_full(&page, PAGE);
        self.hand_out(page);
        Ok(full)
    }

    /// Matches the page once against every member's pattern and fills their inboxes.
    fn hand_out(&self, page: Vec<Logged>) {
        let Some(last) = page.last().map(|e| e.seq) else {
            return;
        };
        let mut state = lock(&self.state);
        let mut matches: HashMap<u64, Vec<Logged>> = HashMap::new();
        if !state.members.is_empty() {
            for event in page {
                let keys = state.rules.matching_text(&event.json).unwrap_or_default();
                if let Some((last_key, others)) = keys.split_last() {
                    for key in others {
                        matches.entry(*key).or_default().push(event.clone());
                    }
                    matches.entry(*last_key).or_default().push(event);
                }
            }
        }
        state.head = last;
        let mut detached = Vec::new();
        for (id, mut new) in matches {
            let Some(member) = state.members.get(&id) else {
                continue;
            };
            let mut inbox = lock(&member.inbox);
            let to = inbox.to;
            new.retain(|e| e.seq > to);
            if new.is_empty() {
                continue;
            }
            if inbox.events.len() + new.len() > PAGE
                || bytes(&inbox.events) + bytes(&new) > PAGE_BYTES
            {
                *inbox = Inbox::default();
                detached.push(id);
            } else {
                inbox.events.extend(new);
                inbox.to = last;
            }
            member.wake.notify_one();
        }
        for id in detached {
            state.rules.remove(&id);
            state.members.remove(&id);
        }
        state.unswept = true;
        if state.swept.elapsed() >= SWEEP {
            Self::move_on(&mut state);
        }
    }

    /// Moves every member on to the reader's position.
    fn sweep(&self) {
        Self::move_on(&mut lock(&self.state));
    }

    /// A member's inbox covers the positions up to the reader's (no page since its last
    /// match had any for it), and an idle member's cursor moves there without waking it.
    fn move_on(state: &mut State) {
        let head = state.head;
        for member in state.members.values() {
            let mut inbox = lock(&member.inbox);
            if head > inbox.to {
                inbox.to = head;
                if inbox.idle && inbox.events.is_empty() {
                    inbox.from = head;
                    (member.cursor)(head);
                }
            }
        }
        state.swept = Instant::now();
        state.unswept = false;
    }
}

/// A worker's feed: its membership of its event type's reader.
pub struct Feed {
    fanout: Arc<Fanout>,
    id: u64,
    pattern: Pattern,
    member: Arc<Member>,
}

impl Feed {
    pub fn new(
        fanout: Arc<Fanout>,
        id: u64,
        pattern: Pattern,
        wake: Arc<Notify>,
        cursor: Arc<dyn Fn(i64) + Send + Sync>,
    ) -> Self {
        Self {
            fanout,
            id,
            pattern,
            member: Arc::new(Member {
                inbox: Mutex::new(Inbox::default()),
                wake,
                cursor,
            }),
        }
    }

    /// Joins the shared reader once the worker has read the log to its end, up to `read_to`:
    /// its inbox starts at the reader's position, or at the worker's if that is further (a
    /// worker behind the reader reads up to the reader's position by itself first).
    pub fn join(&self, read_to: i64) {
        let mut state = lock(&self.fanout.state);
        let head = state.head.max(read_to);
        let mut inbox = lock(&self.member.inbox);
        if !state.members.contains_key(&self.id) {
            state.rules.insert(self.id, &self.pattern);
            state.members.insert(self.id, self.member.clone());
        }
        *inbox = Inbox {
            attached: true,
            from: head,
            to: head,
            ..Inbox::default()
        };
    }

    /// What the worker, which has read up to `read_to`, reads next.
    pub fn next(&self, read_to: i64) -> Next {
        let mut inbox = lock(&self.member.inbox);
        if !inbox.attached {
            return Next::Read(None);
        }
        let start = if std::mem::take(&mut inbox.idle) {
            read_to.max(inbox.from)
        } else {
            read_to
        };
        if inbox.from > start {
            return Next::Read(Some(inbox.from));
        }
        if inbox.to > start || !inbox.events.is_empty() {
            let mut events = std::mem::take(&mut inbox.events);
            events.retain(|e| e.seq > start);
            inbox.from = inbox.to;
            return Next::Page(inbox.to.max(start), events);
        }
        if start > read_to {
            return Next::Page(start, Vec::new());
        }
        Next::Nothing
    }

    /// The worker has read up to `read_to` and settled all of it: it may be moved on past
    /// events that do not match without a wake-up. Returns where it is now.
    pub fn rest(&self, read_to: i64) -> i64 {
        let mut inbox = lock(&self.member.inbox);
        if !inbox.attached || !inbox.events.is_empty() || inbox.from > read_to {
            return read_to;
        }
        let at = read_to.max(inbox.to);
        inbox.from = at;
        inbox.to = at;
        inbox.idle = true;
        at
    }

    /// Leaves the shared reader (the worker stops).
    pub fn leave(&self) {
        let mut state = lock(&self.fanout.state);
        if state.members.remove(&self.id).is_some() {
            state.rules.remove(&self.id);
        }
        *lock(&self.member.inbox) = Inbox::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use busway_core::claim_check::ClaimChecks;
    use busway_core::envelope::BusEvent;
    use busway_core::ports::Bus;

    use crate::eventlog::EventLog;

    const TYPE: &str = "scanned_parcel.1";

    /// A log in a temp dir (kept while the test runs) and the shared reader of [`TYPE`] from
    /// its start.
    async fn reader_of_a_new_log() -> (tempfile::TempDir, EventLog, Arc<LogReader>, Arc<Fanout>) {
        let dir = tempfile::tempdir().expect("a temp dir");
        let (live, mut committed) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move { while committed.recv().await.is_some() {} });
        let (starter, _notifications) = crate::provisioning::LocalStarter::new();
        let objects: Arc<dyn busway_core::ports::ObjectStore> = Arc::new(
            crate::objects::FolderObjectStore::new(dir.path().join("buckets"), Arc::new(starter))
                .expect("the folders"),
        );
        let claim_checks = ClaimChecks {
            objects,
            bucket_name: "local-event-schemas-backup-bucket".into(),
            max_entry_bytes: busway_core::claim_check::DEFAULT_MAX_ENTRY_BYTES,
        };
        let (log, reader) =
            EventLog::open(&dir.path().join("events.db"), claim_checks, live).expect("opens");
        let reader = Arc::new(reader);
        let fanout = Fanout::new(TYPE.into(), reader.clone(), 0);
        (dir, log, reader, fanout)
    }

    async fn publish(log: &EventLog, units: impl Iterator<Item = usize>) {
        let events = units
            .enumerate()
            .map(|(n, unit)| BusEvent {
                id: uuid::Uuid::new_v4().to_string(),
                event_id: uuid::Uuid::new_v4().to_string(),
                source: "busway.demo".into(),
                detail_type: TYPE.into(),
                time: busway_core::now(),
                detail: serde_json::json!({"unit": format!("u{unit}"), "n": n}),
            })
            .collect();
        let stored = log.put_events(events).await.expect("stored");
        assert!(stored.iter().all(Result::is_ok));
    }

    fn member(fanout: &Arc<Fanout>, id: u64, unit: usize) -> (Feed, Arc<Mutex<i64>>) {
        let pattern = Pattern::parse(&format!(r#"{{"detail": {{"unit": ["u{unit}"]}}}}"#))
            .expect("a pattern");
        let moved = Arc::new(Mutex::new(0));
        let cursor = moved.clone();
        let feed = Feed::new(
            fanout.clone(),
            id,
            pattern,
            Arc::new(Notify::new()),
            Arc::new(move |at| *lock(&cursor) = at),
        );
        (feed, moved)
    }

    /// Reads to the log's end and moves the members on, as `run` does once events stop.
    async fn read_all(fanout: &Fanout) {
        while fanout.step().await.expect("the log reads") {}
        fanout.sweep();
    }

    fn units(events: &[Logged]) -> Vec<String> {
        events
            .iter()
            .map(|e| {
                let v: serde_json::Value = serde_json::from_str(&e.json).expect("JSON");
                v["detail"]["unit"].as_str().expect("a unit").to_string()
            })
            .collect()
    }

    #[tokio::test]
    async fn each_member_is_handed_only_its_matches_from_one_read_of_each_page() {
        let (_dir, log, reader, fanout) = reader_of_a_new_log().await;
        let members: Vec<_> = (0..50)
            .map(|unit| member(&fanout, unit as u64, unit))
            .collect();
        for (feed, _) in &members {
            feed.join(0);
        }
        // Member 49 has nothing unsettled: the reader may move it on without handing it events.
        assert_eq!(members[49].0.rest(0), 0);
        publish(&log, (0..1000).map(|n| n % 49)).await;
        read_all(&fanout).await;
        let last = reader.last_seq().expect("the log reads");
        for (unit, (feed, _)) in members.iter().enumerate().take(49) {
            let Next::Page(to, events) = feed.next(0) else {
                panic!("member {unit} has its page");
            };
            assert_eq!(to, last, "member {unit} has read the whole log");
            let expected = (0..1000).filter(|n| n % 49 == unit).count();
            assert_eq!(units(&events), vec![format!("u{unit}"); expected]);
            assert!(events.windows(2).all(|w| w[0].seq < w[1].seq), "in order");
            assert!(matches!(feed.next(to), Next::Nothing));
        }
        assert_eq!(
            *lock(&members[49].1),
            last,
            "the idle member's cursor moved on"
        );
        assert!(
            matches!(members[49].0.next(0), Next::Page(to, ref e) if to == last && e.is_empty())
        );
    }

    #[tokio::test]
    async fn a_member_too_slow_for_a_page_reads_by_itself_and_one_behind_catches_up_first() {
        let (_dir, log, reader, fanout) = reader_of_a_new_log().await;
        let (slow, _) = member(&fanout, 1, 0);
        slow.join(0);
        publish(&log, std::iter::repeat_n(0, PAGE + 10)).await;
        read_all(&fanout).await;
        // Its inbox would have passed a page: it left the reader, nothing is held for it.
        assert!(matches!(slow.next(0), Next::Read(None)));
        assert!(lock(&fanout.state).members.is_empty());
        // A member joining behind the reader reads up to the reader's position by itself.
        let head = reader.last_seq().expect("the log reads");
        let (behind, _) = member(&fanout, 2, 0);
        behind.join(3);
        assert!(matches!(behind.next(3), Next::Read(Some(at)) if at == head));
        publish(&log, [0, 1].into_iter()).await;
        read_all(&fanout).await;
        let Next::Page(to, events) = behind.next(head) else {
            panic!("the events after the reader's position are in the inbox");
        };
        assert_eq!(to, head + 2);
        assert_eq!(units(&events), ["u0"]);
    }

    #[tokio::test]
    async fn a_page_touches_only_its_members_and_the_others_are_moved_on_once_events_stop() {
        let (_dir, log, reader, fanout) = reader_of_a_new_log().await;
        let (busy, _) = member(&fanout, 0, 0);
        let (idle, moved) = member(&fanout, 1, 1);
        busy.join(0);
        idle.join(0);
        assert_eq!(idle.rest(0), 0);
        publish(&log, [0, 0].into_iter()).await;
        let last = reader.last_seq().expect("the log reads");
        // Read without the running loop and before a sweep is due: the idle member is not
        // touched, only the busy one gets its matches.
        lock(&fanout.state).swept = Instant::now() + Duration::from_secs(3600);
        while fanout.step().await.expect("the log reads") {}
        assert_eq!(lock(&idle.member.inbox).to, 0);
        assert_eq!(*lock(&moved), 0);
        assert!(matches!(busy.next(0), Next::Page(to, ref e) if to == last && e.len() == 2));
        // The running reader moves it on once the events stop.
        lock(&fanout.state).swept = Instant::now();
        let running = tokio::spawn(fanout.clone().run());
        let started = Instant::now();
        while *lock(&moved) != last {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "the idle member's cursor stays at {}",
                *lock(&moved)
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(matches!(idle.next(0), Next::Page(to, ref e) if to == last && e.is_empty()));
        running.abort();
    }
}
