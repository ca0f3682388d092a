//! Events flattened into leaf values, as event-ruler sees them.
//!
//! Each leaf has a dot-joined path (`detail.state.status`, whether the event nests the
//! objects or writes `"state.status"` as one key) and records which element of each
//! enclosing array it came from, so that a rule cannot combine fields taken from two
//! different elements of one array (event-ruler's `rulesForJSONEvent` "array
//! consistency"). Only paths that some pattern names are kept: the rest of the event is
//! never walked.

use std::borrow::Cow;
use std::collections::HashMap;

use serde_json::Value;

use crate::hash::FastMap;
use crate::json::{Json, Reader, Token};
use crate::number::{self, Num};

/// One leaf value of an event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar<'a> {
    Str(Cow<'a, str>),
    Num(Num),
    Bool(bool),
    Null,
}

impl Scalar<'_> {
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Scalar::Str(s) => Some(s.as_ref()),
            _ => None,
        }
    }

    /// The comparable value of a number; strings never count as numbers.
    pub(crate) fn number(&self) -> Option<f64> {
        match self {
            Scalar::Num(n) => n.value,
            _ => None,
        }
    }
}

/// Which element of which array a leaf sits in, outermost first. Array ids are
/// numbered in the order the flattener meets arrays, so ids are unique per event.
pub(crate) type Membership = Vec<(u32, u32)>;

#[derive(Debug, Clone)]
pub(crate) struct Leaf<'a> {
    pub(crate) value: Scalar<'a>,
    pub(crate) arrays: Membership,
}

/// What the patterns want at one path: its values (kept in `slot` of a [`Flat`]),
/// what lies below it, or both. The counts say how many fields name the path or a
/// path below it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Want {
    leaf: usize,
    prefix: usize,
    slot: u32,
}

impl Want {
    fn leaf(self) -> bool {
        self.leaf > 0
    }

    fn prefix(self) -> bool {
        self.prefix > 0
    }
}

/// A flattened event: the leaves of each wanted path, by the path's slot.
#[derive(Debug, Default)]
pub(crate) struct Flat<'a> {
    slots: Vec<Vec<Leaf<'a>>>,
    /// True when some kept leaf sits inside an array, so array consistency matters.
    pub(crate) has_arrays: bool,
}

impl<'a> Flat<'a> {
    /// The values at the path of `slot`, or `None` when the path has none.
    pub(crate) fn leaves(&self, slot: u32) -> Option<&[Leaf<'a>]> {
        self.slots
            .get(slot as usize)
            .filter(|leaves| !leaves.is_empty())
            .map(Vec::as_slice)
    }

    pub(crate) fn from_value(event: &'a Value, paths: &PathSet) -> Flat<'a> {
        let mut walker = Walker::new(paths);
        if let Value::Object(map) = event {
            for (key, value) in map {
                if let Some(want) = walker.enter(key) {
                    walker.value(value, want);
                }
                walker.leave();
            }
        }
        walker.flat
    }

    pub(crate) fn from_json(event: &'a Json, paths: &PathSet) -> Flat<'a> {
        let mut walker = Walker::new(paths);
        if let Json::Object(entries) = event {
            for (key, value) in last_wins(entries) {
                if let Some(want) = walker.enter(key) {
                    walker.json(value, want);
                }
                walker.leave();
            }
        }
        walker.flat
    }
}

/// Flattens event text without building it: values at paths no pattern names are
/// only checked for syntax. Returns `Ok(None)` when a kept key repeats in one object,
/// a rare case that needs the last-wins rule and is left to [`parse_event`] and
/// [`Flat::from_json`].
pub(crate) fn stream_event<'a>(
    text: &'a str,
    paths: &PathSet,
) -> Result<Option<Flat<'a>>, crate::EventError> {
    let mut walker = Walker::new(paths);
    let mut reader = Reader::new(text);
    let mut duplicate = false;
    let mut found = [false; REQUIRED_FIELDS.len()];
    let Token::Object = reader.token().map_err(crate::EventError::new)? else {
        return Err(crate::EventError::new("the event is not a JSON object"));
    };
    let mut first = true;
    let mut kept: Vec<Cow<'a, str>> = Vec::new();
    while let Some(key) = reader
        .next_key(&mut first)
        .map_err(crate::EventError::new)?
    {
        if let Some(at) = REQUIRED_FIELDS.iter().position(|f| *f == key) {
            found[at] = true;
        }
        walker
            .stream_field(&mut reader, key, &mut kept, &mut duplicate)
            .map_err(crate::EventError::new)?;
    }
    reader.finish().map_err(crate::EventError::new)?;
    if let Some(at) = found.iter().position(|f| !f) {
        return Err(crate::EventError::new(format!(
            "the event has no \"{}\" field",
            REQUIRED_FIELDS[at]
        )));
    }
    Ok((!duplicate).then_some(walker.flat))
}

/// Entries of a parsed object with duplicate keys removed, the last one winning, as
/// both AWS and a `serde_json::Value` do.
fn last_wins(entries: &[(String, Json)]) -> impl Iterator<Item = (&str, &Json)> {
    let mut last: HashMap<&str, usize> = HashMap::with_capacity(entries.len());
    for (i, (key, _)) in entries.iter().enumerate() {
        last.insert(key.as_str(), i);
    }
    entries
        .iter()
        .enumerate()
        .filter(move |(i, (key, _))| last.get(key.as_str()) == Some(i))
        .map(|(_, (key, value))| (key.as_str(), value))
}

struct Walker<'a, 'p> {
    flat: Flat<'a>,
    paths: &'p PathSet,
    path: String,
    /// Length of `path` before each `enter`, to restore it on `leave`.
    saved: Vec<usize>,
    arrays: Membership,
    next_array: u32,
}

impl<'a, 'p> Walker<'a, 'p> {
    fn new(paths: &'p PathSet) -> Walker<'a, 'p> {
        Walker {
            flat: Flat {
                slots: (0..paths.slots).map(|_| Vec::new()).collect(),
                has_arrays: false,
            },
            paths,
            path: String::new(),
            saved: Vec::new(),
            arrays: Vec::new(),
            next_array: 0,
        }
    }

    /// Appends `key` to the path; says what the patterns want there, if anything.
    /// Every `enter` is paired with a `leave`.
    fn enter(&mut self, key: &str) -> Option<Want> {
        let restore = self.path.len();
        // Nesting, not an empty path, decides the dot: the key `""` is a real name.
        if !self.saved.is_empty() {
            self.path.push('.');
        }
        self.saved.push(restore);
        self.path.push_str(key);
        self.paths.want(&self.path)
    }

    fn leave(&mut self) {
        if let Some(length) = self.saved.pop() {
            self.path.truncate(length);
        }
    }

    fn leaf(&mut self, value: Scalar<'a>, want: Want) {
        if !want.leaf() {
            return;
        }
        if !self.arrays.is_empty() {
            self.flat.has_arrays = true;
        }
        let leaf = Leaf {
            value,
            arrays: self.arrays.clone(),
        };
        if let Some(leaves) = self.flat.slots.get_mut(want.slot as usize) {
            leaves.push(leaf);
        }
    }

    /// Runs `visit` on each item with its array position recorded.
    fn array<T>(&mut self, items: &'a [T], want: Want, visit: fn(&mut Self, &'a T, Want)) {
        let id = self.next_array;
        self.next_array = self.next_array.saturating_add(1);
        for (index, item) in items.iter().enumerate() {
            self.arrays
                .push((id, u32::try_from(index).unwrap_or(u32::MAX)));
            visit(self, item, want);
            self.arrays.pop();
        }
    }

    fn value(&mut self, value: &'a Value, want: Want) {
        match value {
            Value::Null => self.leaf(Scalar::Null, want),
            Value::Bool(b) => self.leaf(Scalar::Bool(*b), want),
            Value::Number(n) if want.leaf() => self.leaf(Scalar::Num(value_number(n)), want),
            Value::Number(_) => {}
            Value::String(s) => self.leaf(Scalar::Str(Cow::Borrowed(s)), want),
            Value::Array(items) => self.array(items, want, Self::value),
            Value::Object(map) if want.prefix() => {
                for (key, inner) in map {
                    if let Some(want) = self.enter(key) {
                        self.value(inner, want);
                    }
                    self.leave();
                }
            }
            Value::Object(_) => {}
        }
    }

    fn json(&mut self, value: &'a Json, want: Want) {
        match value {
            Json::Null => self.leaf(Scalar::Null, want),
            Json::Bool(b) => self.leaf(Scalar::Bool(*b), want),
            Json::Number(text) if want.leaf() => self.leaf(Scalar::Num(Num::from_text(text)), want),
            Json::Number(_) => {}
            Json::String(s) => self.leaf(Scalar::Str(Cow::Borrowed(s)), want),
            Json::Array(items) => self.array(items, want, Self::json),
            Json::Object(entries) if want.prefix() => {
                for (key, inner) in last_wins(entries) {
                    if let Some(want) = self.enter(key) {
                        self.json(inner, want);
                    }
                    self.leave();
                }
            }
            Json::Object(_) => {}
        }
    }

    /// Reads the value of `key` from the stream, keeping what the patterns want.
    fn stream_field(
        &mut self,
        reader: &mut Reader<'a>,
        key: Cow<'a, str>,
        kept: &mut Vec<Cow<'a, str>>,
        duplicate: &mut bool,
    ) -> Result<(), String> {
        let result = match self.enter(&key) {
            Some(want) => {
                if kept.contains(&key) {
                    *duplicate = true;
                }
                kept.push(key);
                self.stream_value(reader, want, duplicate)
            }
            None => reader.skip_value(),
        };
        self.leave();
        result
    }

    fn stream_value(
        &mut self,
        reader: &mut Reader<'a>,
        want: Want,
        duplicate: &mut bool,
    ) -> Result<(), String> {
        match reader.token()? {
            Token::Object => {
                let mut first = true;
                let mut kept = Vec::new();
                while let Some(key) = reader.next_key(&mut first)? {
                    if want.prefix() {
                        self.stream_field(reader, key, &mut kept, duplicate)?;
                    } else {
                        reader.skip_value()?;
                    }
                }
            }
            Token::Array => {
                let id = self.next_array;
                self.next_array = self.next_array.saturating_add(1);
                let mut first = true;
                let mut index = 0u32;
                while reader.next_item(&mut first)? {
                    self.arrays.push((id, index));
                    let result = self.stream_value(reader, want, duplicate);
                    self.arrays.pop();
                    result?;
                    index = index.saturating_add(1);
                }
            }
            Token::Str(s) => self.leaf(Scalar::Str(s), want),
            Token::Num(text) if want.leaf() => self.leaf(Scalar::Num(Num::from_text(text)), want),
            Token::Num(_) => {}
            Token::Bool(b) => self.leaf(Scalar::Bool(b), want),
            Token::Null => self.leaf(Scalar::Null, want),
        }
        Ok(())
    }
}

/// A `serde_json` number as [`Num`]. The text only matters for numbers that are not
/// comparable (a pattern number with a comparable value matches by value, and one
/// without can only equal a text that is not comparable either), so it is left empty
/// for the common case: every float `serde_json` parsed is the nearest double and
/// comparable by construction, and so is every integer up to 2^53.
fn value_number(n: &serde_json::Number) -> Num {
    const EXACT: u64 = 1 << 53;
    let comparable = match (n.as_u64(), n.as_i64(), n.as_f64()) {
        (Some(u), _, _) if u <= EXACT => Some(u as f64),
        (_, Some(i), _) if i.unsigned_abs() <= EXACT => Some(i as f64),
        (None, None, Some(f)) if f.is_finite() => Some(if f == 0.0 { 0.0 } else { f }),
        _ => None,
    };
    match comparable {
        Some(value) => Num {
            text: String::new(),
            value: Some(value),
        },
        None => {
            let text = n.to_string();
            let value = number::comparable(&text);
            Num { text, value }
        }
    }
}

/// The paths that a set of patterns names, with the dot-prefixes to descend through,
/// counted so that a rule set can drop a path when the last rule naming it goes.
/// Each named path has a slot number, stable while it is named, so that matching
/// finds a path's values by index rather than by hashing its name again.
#[derive(Debug, Clone, Default)]
pub(crate) struct PathSet {
    wanted: FastMap<String, Want>,
    free_slots: Vec<u32>,
    slots: u32,
}

impl PathSet {
    /// Counts one more field at `path`; returns the path's slot.
    pub(crate) fn add(&mut self, path: &str) -> u32 {
        for prefix in dot_prefixes(path) {
            self.wanted.entry(prefix.to_owned()).or_default().prefix += 1;
        }
        let want = self.wanted.entry(path.to_owned()).or_default();
        if want.leaf == 0 {
            want.slot = match self.free_slots.pop() {
                Some(slot) => slot,
                None => {
                    self.slots += 1;
                    self.slots - 1
                }
            };
        }
        want.leaf += 1;
        want.slot
    }

    pub(crate) fn remove(&mut self, path: &str) {
        for prefix in dot_prefixes(path) {
            if let Some(want) = self.wanted.get_mut(prefix) {
                want.prefix -= 1;
            }
            self.forget_if_unused(prefix);
        }
        if let Some(want) = self.wanted.get_mut(path) {
            want.leaf -= 1;
            if want.leaf == 0 {
                self.free_slots.push(want.slot);
            }
        }
        self.forget_if_unused(path);
    }

    fn forget_if_unused(&mut self, path: &str) {
        if self
            .wanted
            .get(path)
            .is_some_and(|want| want.leaf == 0 && want.prefix == 0)
        {
            self.wanted.remove(path);
        }
    }

    fn want(&self, path: &str) -> Option<Want> {
        self.wanted.get(path).copied()
    }
}

/// `a`, `a.b` for the path `a.b.c`.
fn dot_prefixes(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('.').map(move |(at, _)| &path[..at])
}

/// Envelope fields `TestEventPattern` insists on (LocalStack's note on
/// `test_invalid_event_payload`; `resources` is not among them, as AWS accepts events
/// without it).
const REQUIRED_FIELDS: [&str; 6] = ["id", "account", "source", "time", "region", "detail-type"];

/// Parses event text the way `TestEventPattern` accepts it.
pub(crate) fn parse_event(text: &str) -> Result<Json, crate::EventError> {
    let event = crate::json::parse(text, false).map_err(crate::EventError::new)?;
    let Json::Object(entries) = &event else {
        return Err(crate::EventError::new("the event is not a JSON object"));
    };
    for field in REQUIRED_FIELDS {
        if !entries.iter().any(|(key, _)| key == field) {
            return Err(crate::EventError::new(format!(
                "the event has no \"{field}\" field"
            )));
        }
    }
    Ok(event)
}
