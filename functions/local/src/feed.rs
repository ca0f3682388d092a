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
use std::time::Duration;

use busway_pattern::{Pattern, RuleSet};
use tokio::sync::Notify;
use tracing::warn;

use crate::eventlog::{LogReader, Logged};

/// Events read at once, and the most an inbox holds.
pub const PAGE: usize = 512;

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
            let head = lock(&self.state).head;
            let (reader, detail_type) = (self.reader.clone(), self.detail_type.clone());
            let page =
                tokio::task::spawn_blocking(move || reader.after(head, Some(&detail_type), PAGE))
                    .await
                    .map_err(anyhow::Error::from)
                    .and_then(|page| page);
            match page {
                Ok(page) if page.is_empty() => self.wake.notified().await,
                Ok(page) => self.hand_out(page),
                Err(e) => {
                    warn!(detail_type = %self.detail_type, error = %format!("{e:#}"), "reading the log failed; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
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
        for (id, member) in &state.members {
            let mut inbox = lock(&member.inbox);
            let to = inbox.to;
            let mut new = matches.remove(id).unwrap_or_default();
            new.retain(|e| e.seq > to);
            if new.is_empty() {
                if last > to {
                    inbox.to = last;
                    if inbox.idle && inbox.events.is_empty() {
                        inbox.from = last;
                        (member.cursor)(last);
                    }
                }
                continue;
            }
            if inbox.events.len() + new.len() > PAGE {
                *inbox = Inbox::default();
                detached.push(*id);
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
