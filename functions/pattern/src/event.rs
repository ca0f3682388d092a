//! Events flattened into leaf values, as event-ruler sees them.
//!
//! Each leaf has a dot-joined path (`detail.state.status`, whether the event nests the
//! objects or writes `"state.status"` as one key) and records which element of each
//! enclosing array it came from, so that a rule cannot combine fields taken from two
//! different elements of one array (event-ruler's `rulesForJSONEvent` "array
//! consistency"). Only paths that some pattern names are kept: the rest of the event is
//! never walked.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use crate::json::Json;
use crate::number::{self, Num};

/// One leaf value of an event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar<'a> {
    Str(&'a str),
    Num(Num),
    Bool(bool),
    Null,
}

impl Scalar<'_> {
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Scalar::Str(s) => Some(s),
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

/// The paths a flattener keeps: full paths, and their dot-prefixes to descend into.
pub(crate) trait PathFilter {
    fn wants_leaf(&self, path: &str) -> bool;
    fn wants_prefix(&self, path: &str) -> bool;
}

/// A flattened event: the leaves of each wanted path.
#[derive(Debug, Default)]
pub(crate) struct Flat<'a> {
    paths: HashMap<String, Vec<Leaf<'a>>>,
    /// True when some kept leaf sits inside an array, so array consistency matters.
    pub(crate) has_arrays: bool,
}

impl<'a> Flat<'a> {
    pub(crate) fn leaves(&self, path: &str) -> Option<&[Leaf<'a>]> {
        self.paths.get(path).map(Vec::as_slice)
    }

    pub(crate) fn from_value(event: &'a Value, filter: &dyn PathFilter) -> Flat<'a> {
        let mut walker = Walker {
            flat: Flat::default(),
            filter,
            path: String::new(),
            arrays: Vec::new(),
            next_array: 0,
        };
        if let Value::Object(map) = event {
            for (key, value) in map {
                walker.field(key, |w| w.value(value));
            }
        }
        walker.flat
    }

    pub(crate) fn from_json(event: &'a Json, filter: &dyn PathFilter) -> Flat<'a> {
        let mut walker = Walker {
            flat: Flat::default(),
            filter,
            path: String::new(),
            arrays: Vec::new(),
            next_array: 0,
        };
        if let Json::Object(entries) = event {
            for (key, value) in last_wins(entries) {
                walker.field(key, |w| w.json(value));
            }
        }
        walker.flat
    }
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

struct Walker<'a, 'f> {
    flat: Flat<'a>,
    filter: &'f dyn PathFilter,
    path: String,
    arrays: Membership,
    next_array: u32,
}

impl<'a> Walker<'a, '_> {
    /// Runs `visit` with `key` appended to the current path, when the filter wants
    /// anything at or below that path.
    fn field(&mut self, key: &str, visit: impl FnOnce(&mut Self)) {
        let saved = self.path.len();
        if saved > 0 {
            self.path.push('.');
        }
        self.path.push_str(key);
        if self.filter.wants_leaf(&self.path) || self.filter.wants_prefix(&self.path) {
            visit(self);
        }
        self.path.truncate(saved);
    }

    fn leaf(&mut self, value: Scalar<'a>) {
        if !self.filter.wants_leaf(&self.path) {
            return;
        }
        if !self.arrays.is_empty() {
            self.flat.has_arrays = true;
        }
        let leaf = Leaf {
            value,
            arrays: self.arrays.clone(),
        };
        match self.flat.paths.get_mut(self.path.as_str()) {
            Some(leaves) => leaves.push(leaf),
            None => {
                self.flat.paths.insert(self.path.clone(), vec![leaf]);
            }
        }
    }

    fn array<T>(&mut self, items: &'a [T], mut visit: impl FnMut(&mut Self, &'a T)) {
        let id = self.next_array;
        self.next_array = self.next_array.saturating_add(1);
        for (index, item) in items.iter().enumerate() {
            self.arrays
                .push((id, u32::try_from(index).unwrap_or(u32::MAX)));
            visit(self, item);
            self.arrays.pop();
        }
    }

    fn value(&mut self, value: &'a Value) {
        match value {
            Value::Null => self.leaf(Scalar::Null),
            Value::Bool(b) => self.leaf(Scalar::Bool(*b)),
            Value::Number(n) => {
                if self.filter.wants_leaf(&self.path) {
                    self.leaf(Scalar::Num(value_number(n)));
                }
            }
            Value::String(s) => self.leaf(Scalar::Str(s)),
            Value::Array(items) => self.array(items, Self::value),
            Value::Object(map) => {
                if self.filter.wants_prefix(&self.path) {
                    for (key, inner) in map {
                        self.field(key, |w| w.value(inner));
                    }
                }
            }
        }
    }

    fn json(&mut self, value: &'a Json) {
        match value {
            Json::Null => self.leaf(Scalar::Null),
            Json::Bool(b) => self.leaf(Scalar::Bool(*b)),
            Json::Number(text) => {
                if self.filter.wants_leaf(&self.path) {
                    self.leaf(Scalar::Num(Num::from_text(text)));
                }
            }
            Json::String(s) => self.leaf(Scalar::Str(s)),
            Json::Array(items) => self.array(items, Self::json),
            Json::Object(entries) => {
                if self.filter.wants_prefix(&self.path) {
                    for (key, inner) in last_wins(entries) {
                        self.field(key, |w| w.json(inner));
                    }
                }
            }
        }
    }
}

/// A `serde_json` number as text plus comparable value. A float that `serde_json`
/// parsed is already the nearest double, so it is comparable by construction.
fn value_number(n: &serde_json::Number) -> Num {
    let text = n.to_string();
    let value = match n.as_f64() {
        Some(f) if n.is_f64() && f.is_finite() => Some(if f == 0.0 { 0.0 } else { f }),
        _ => number::comparable(&text),
    };
    Num { text, value }
}

/// The paths a set of patterns names, with reference counts so that a rule set can
/// drop paths when the last rule naming them goes.
#[derive(Debug, Clone, Default)]
pub(crate) struct PathSet {
    leaves: HashMap<String, usize>,
    prefixes: HashMap<String, usize>,
}

impl PathSet {
    pub(crate) fn add(&mut self, path: &str) {
        *self.leaves.entry(path.to_owned()).or_insert(0) += 1;
        for prefix in dot_prefixes(path) {
            *self.prefixes.entry(prefix.to_owned()).or_insert(0) += 1;
        }
    }

    pub(crate) fn remove(&mut self, path: &str) {
        decrement(&mut self.leaves, path);
        for prefix in dot_prefixes(path) {
            decrement(&mut self.prefixes, prefix);
        }
    }
}

fn decrement(map: &mut HashMap<String, usize>, key: &str) {
    if let Some(count) = map.get_mut(key) {
        *count -= 1;
        if *count == 0 {
            map.remove(key);
        }
    }
}

/// `a`, `a.b` for the path `a.b.c`.
fn dot_prefixes(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('.').map(move |(at, _)| &path[..at])
}

impl PathFilter for PathSet {
    fn wants_leaf(&self, path: &str) -> bool {
        self.leaves.contains_key(path)
    }

    fn wants_prefix(&self, path: &str) -> bool {
        self.prefixes.contains_key(path)
    }
}

/// The plain set form used by a single pattern.
#[derive(Debug, Clone, Default)]
pub(crate) struct PathNames {
    pub(crate) leaves: HashSet<String>,
    pub(crate) prefixes: HashSet<String>,
}

impl PathNames {
    pub(crate) fn add(&mut self, path: &str) {
        self.leaves.insert(path.to_owned());
        for prefix in dot_prefixes(path) {
            self.prefixes.insert(prefix.to_owned());
        }
    }
}

impl PathFilter for PathNames {
    fn wants_leaf(&self, path: &str) -> bool {
        self.leaves.contains(path)
    }

    fn wants_prefix(&self, path: &str) -> bool {
        self.prefixes.contains(path)
    }
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
