//! Events flattened into leaf values, as event-ruler sees them.
//!
//! Each leaf has a dot-joined path (`detail.state.status`, whether the event nests the
//! objects or writes `"state.status"` as one key) and records which element of each
//! enclosing array it came from, so that a rule cannot combine fields taken from two
//! different elements of one array (event-ruler's `rulesForJSONEvent` "array
//! consistency"). Only paths that some pattern names are kept: the rest of a `Value`
//! is never visited, and the rest of event text is only checked for syntax.

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

/// What the patterns want at one place of the event: its values (kept in `slot` of a
/// [`Flat`]), what lies below it, or both; `node` is the place in the [`PathSet`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Want {
    node: u32,
    slot: u32,
    leaf: bool,
    below: bool,
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
        walker.value(event, paths.root());
        walker.flat
    }

    pub(crate) fn from_json(event: &'a Json, paths: &PathSet) -> Flat<'a> {
        let mut walker = Walker::new(paths);
        walker.json(event, paths.root());
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
            .stream_field(&mut reader, paths.root(), key, &mut kept, &mut duplicate)
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
            arrays: Vec::new(),
            next_array: 0,
        }
    }

    fn leaf(&mut self, value: Scalar<'a>, want: Want) {
        if !want.leaf {
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
            Value::Number(n) if want.leaf => self.leaf(Scalar::Num(value_number(n)), want),
            Value::Number(_) => {}
            Value::String(s) => self.leaf(Scalar::Str(Cow::Borrowed(s)), want),
            Value::Array(items) => self.array(items, want, Self::value),
            Value::Object(map) if want.below => {
                for (key, inner) in map {
                    if let Some(below) = self.paths.child(want, key) {
                        self.value(inner, below);
                    }
                }
            }
            Value::Object(_) => {}
        }
    }

    fn json(&mut self, value: &'a Json, want: Want) {
        match value {
            Json::Null => self.leaf(Scalar::Null, want),
            Json::Bool(b) => self.leaf(Scalar::Bool(*b), want),
            Json::Number(text) if want.leaf => self.leaf(Scalar::Num(Num::from_text(text)), want),
            Json::Number(_) => {}
            Json::String(s) => self.leaf(Scalar::Str(Cow::Borrowed(s)), want),
            Json::Array(items) => self.array(items, want, Self::json),
            Json::Object(entries) if want.below => {
                for (key, inner) in last_wins(entries) {
                    if let Some(below) = self.paths.child(want, key) {
                        self.json(inner, below);
                    }
                }
            }
            Json::Object(_) => {}
        }
    }

    /// Reads the value of `key` (in the object at `parent`) from the stream, keeping
    /// what the patterns want.
    fn stream_field(
        &mut self,
        reader: &mut Reader<'a>,
        parent: Want,
        key: Cow<'a, str>,
        kept: &mut Vec<Cow<'a, str>>,
        duplicate: &mut bool,
    ) -> Result<(), String> {
        match self.paths.child(parent, &key) {
            Some(want) => {
                if kept.contains(&key) {
                    *duplicate = true;
                }
                kept.push(key);
                self.stream_value(reader, want, duplicate)
            }
            None => reader.skip_value(),
        }
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
                    if want.below {
                        self.stream_field(reader, want, key, &mut kept, duplicate)?;
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
            Token::Num(text) if want.leaf => self.leaf(Scalar::Num(Num::from_text(text)), want),
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

/// The paths that a set of patterns names, as a tree of key segments (`detail` →
/// `state` → `status`), so that flattening an event looks up each key among its
/// parent's children instead of building and hashing whole paths. Counts say how many
/// fields name a node or a path below it, so a rule set can drop what the last rule
/// naming it leaves. Each named path has a slot number, stable while it is named.
#[derive(Debug, Clone)]
pub(crate) struct PathSet {
    nodes: Vec<PathNode>,
    free_nodes: Vec<u32>,
    free_slots: Vec<u32>,
    slots: u32,
}

#[derive(Debug, Clone, Default)]
struct PathNode {
    children: FastMap<String, u32>,
    /// Fields naming exactly this path.
    leaf: usize,
    /// Fields naming a path below this one.
    below: usize,
    slot: u32,
}

const ROOT: u32 = 0;

impl Default for PathSet {
    fn default() -> PathSet {
        PathSet {
            nodes: vec![PathNode {
                below: 1,
                ..PathNode::default()
            }],
            free_nodes: Vec::new(),
            free_slots: Vec::new(),
            slots: 0,
        }
    }
}

impl PathSet {
    /// Counts one more field at `path`; returns the path's slot.
    pub(crate) fn add(&mut self, path: &str) -> u32 {
        let mut node = ROOT;
        for segment in path.split('.') {
            let existing = self.nodes[node as usize].children.get(segment).copied();
            let child = match existing {
                Some(child) => child,
                None => {
                    let child = match self.free_nodes.pop() {
                        Some(id) => id,
                        None => {
                            self.nodes.push(PathNode::default());
                            u32::try_from(self.nodes.len() - 1).unwrap_or(u32::MAX)
                        }
                    };
                    self.nodes[child as usize] = PathNode::default();
                    self.nodes[node as usize]
                        .children
                        .insert(segment.to_owned(), child);
                    child
                }
            };
            if node != ROOT {
                self.nodes[node as usize].below += 1;
            }
            node = child;
        }
        let leaf = &mut self.nodes[node as usize];
        if leaf.leaf == 0 {
            leaf.slot = match self.free_slots.pop() {
                Some(slot) => slot,
                None => {
                    self.slots += 1;
                    self.slots - 1
                }
            };
        }
        leaf.leaf += 1;
        leaf.slot
    }

    /// Counts one field fewer at `path`, which must have been added.
    pub(crate) fn remove(&mut self, path: &str) {
        let mut trail = vec![ROOT];
        for segment in path.split('.') {
            let parent = trail.last().copied().unwrap_or(ROOT);
            match self.nodes[parent as usize].children.get(segment) {
                Some(&child) => trail.push(child),
                None => return,
            }
        }
        let segments: Vec<&str> = path.split('.').collect();
        for (depth, &node) in trail.iter().enumerate().rev() {
            if node == ROOT {
                break;
            }
            let entry = &mut self.nodes[node as usize];
            if depth == trail.len() - 1 {
                entry.leaf -= 1;
                if entry.leaf == 0 {
                    self.free_slots.push(entry.slot);
                }
            } else {
                entry.below -= 1;
            }
            if entry.leaf == 0 && entry.below == 0 {
                let parent = trail[depth - 1];
                self.nodes[parent as usize]
                    .children
                    .remove(segments[depth - 1]);
                self.free_nodes.push(node);
            }
        }
    }

    fn root(&self) -> Want {
        Want {
            node: ROOT,
            slot: 0,
            leaf: false,
            below: true,
        }
    }

    /// The place below `parent` named by an event key. A key with dots in it names
    /// several levels at once (`"state.status"`), as AWS joins paths with dots.
    fn child(&self, parent: Want, key: &str) -> Option<Want> {
        let mut node = parent.node;
        if key.contains('.') {
            for segment in key.split('.') {
                node = *self.nodes[node as usize].children.get(segment)?;
            }
        } else {
            node = *self.nodes[node as usize].children.get(key)?;
        }
        let entry = &self.nodes[node as usize];
        Some(Want {
            node,
            slot: entry.slot,
            leaf: entry.leaf > 0,
            below: entry.below > 0,
        })
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
