//! Many patterns compiled into one automaton.
//!
//! Each conjunction of a pattern (a "sub-rule") is a sequence of field conditions
//! sorted by path. Sub-rules are stored in a trie: from a state, an edge names a path,
//! and its [`ValueIndex`] maps the values found at that path to next states. Sub-rules
//! that share their first conditions share states, as in event-ruler and quamina.
//! Matching walks the trie from the root, following only edges whose index accepts a
//! value of the event, so its cost follows the number of conditions that hold, not
//! the number of rules: ten thousand busway subscriptions that differ in detail-type
//! and target cost three hash lookups per event.
//!
//! Array consistency is checked after the walk: the walk may combine values from
//! different elements of one array, so when the event has arrays at the paths in use,
//! each sub-rule reached is confirmed with the reference evaluation.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use serde_json::Value;

use crate::EventError;
use crate::eval;
use crate::event::{self, Flat, PathSet};
use crate::hash::FastMap;
use crate::index::ValueIndex;
use crate::pattern::{Field, Pattern};

const ROOT: u32 = 0;

#[derive(Debug, Clone, Default)]
struct Node {
    edges: Vec<Edge>,
    /// Sub-rules whose last condition leads here, with their keys, so that a match
    /// does not have to visit the sub-rule itself.
    terminals: Vec<(u32, u32)>,
    /// Sub-rules whose conditions pass through (or end at) this state.
    refs: u32,
}

#[derive(Debug, Clone)]
struct Edge {
    path: String,
    slot: u32,
    index: ValueIndex,
    /// States taken when the path has no value (`exists: false`).
    absent: Vec<u32>,
    /// The state each distinct condition leads to, keyed by the condition's signature.
    children: FastMap<String, u32>,
}

#[derive(Debug, Clone)]
struct SubRule {
    fields: Vec<Field>,
    /// The state reached after each field.
    trail: Vec<u32>,
}

/// A set of patterns, each stored under a key, matched together.
///
/// A key may hold several patterns: [`RuleSet::insert`] adds one more, and the key
/// matches when any of its patterns does. [`RuleSet::remove`] drops all of them.
///
/// Mutation takes `&mut self` and matching `&self`, and the type is `Send + Sync`, so
/// any number of threads can match one snapshot at once. To change rules while others
/// match, use [`SharedRuleSet`] (copy-on-write behind an `Arc`), or wrap a `RuleSet` in
/// your own `RwLock`.
#[derive(Debug, Clone)]
pub struct RuleSet<K> {
    nodes: Vec<Node>,
    free_nodes: Vec<u32>,
    rules: Vec<Option<SubRule>>,
    free_rules: Vec<u32>,
    keys: Vec<Option<K>>,
    free_keys: Vec<u32>,
    by_key: HashMap<K, (u32, Vec<u32>)>,
    paths: PathSet,
}

impl<K: Clone + Eq + Hash> Default for RuleSet<K> {
    fn default() -> RuleSet<K> {
        RuleSet::new()
    }
}

impl<K: Clone + Eq + Hash> RuleSet<K> {
    #[must_use]
    pub fn new() -> RuleSet<K> {
        RuleSet {
            nodes: vec![Node::default()],
            free_nodes: Vec::new(),
            rules: Vec::new(),
            free_rules: Vec::new(),
            keys: Vec::new(),
            free_keys: Vec::new(),
            by_key: HashMap::new(),
            paths: PathSet::default(),
        }
    }

    /// Number of keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }

    #[must_use]
    pub fn contains_key(&self, key: &K) -> bool {
        self.by_key.contains_key(key)
    }

    /// Adds `pattern` under `key`, next to any patterns the key already holds.
    pub fn insert(&mut self, key: K, pattern: &Pattern) {
        let key_id = match self.by_key.get(&key) {
            Some((id, _)) => *id,
            None => {
                let id = allocate(&mut self.keys, &mut self.free_keys, Some(key.clone()));
                self.by_key.insert(key.clone(), (id, Vec::new()));
                id
            }
        };
        for conjunction in &pattern.conjunctions {
            let rule_id = self.add_rule(key_id, conjunction);
            if let Some((_, rules)) = self.by_key.get_mut(&key) {
                rules.push(rule_id);
            }
        }
    }

    /// Removes every pattern held by `key`; returns whether the key was present.
    pub fn remove(&mut self, key: &K) -> bool {
        let Some((key_id, rules)) = self.by_key.remove(key) else {
            return false;
        };
        for rule_id in rules {
            self.remove_rule(rule_id);
        }
        self.keys[key_id as usize] = None;
        self.free_keys.push(key_id);
        true
    }

    /// The keys whose patterns match the event, each once, in no particular order.
    /// Anything that is not a JSON object matches nothing.
    #[must_use]
    pub fn matching(&self, event: &Value) -> Vec<K> {
        if !event.is_object() {
            return Vec::new();
        }
        self.collect(&Flat::from_value(event, &self.paths))
    }

    /// [`RuleSet::matching`] for event text, refusing the events `TestEventPattern`
    /// refuses (see [`Pattern::matches_text`]).
    ///
    /// # Errors
    /// [`EventError`] for an event AWS would refuse.
    pub fn matching_text(&self, event: &str) -> Result<Vec<K>, EventError> {
        if let Some(flat) = event::stream_event(event, &self.paths)? {
            return Ok(self.collect(&flat));
        }
        let event = event::parse_event(event)?;
        Ok(self.collect(&Flat::from_json(&event, &self.paths)))
    }

    fn collect(&self, flat: &Flat<'_>) -> Vec<K> {
        let mut key_ids: Vec<u32> = self
            .walk(flat)
            .into_iter()
            .filter(|(rule_id, _)| {
                !flat.has_arrays
                    || self.rules[*rule_id as usize]
                        .as_ref()
                        .is_some_and(|rule| eval::conjunction_matches(&rule.fields, flat))
            })
            .map(|(_, key)| key)
            .collect();
        key_ids.sort_unstable();
        key_ids.dedup();
        key_ids
            .into_iter()
            .filter_map(|id| self.keys[id as usize].clone())
            .collect()
    }

    /// Sub-rules whose conditions all hold, ignoring array consistency. Each state has
    /// one parent and is pushed at most once by it, so no state is visited twice.
    fn walk(&self, flat: &Flat<'_>) -> Vec<(u32, u32)> {
        let mut reached = Vec::with_capacity(8);
        let mut stack = Vec::with_capacity(16);
        stack.push(ROOT);
        let mut next = Vec::with_capacity(16);
        while let Some(state) = stack.pop() {
            let node = &self.nodes[state as usize];
            reached.extend_from_slice(&node.terminals);
            for edge in &node.edges {
                match flat.leaves(edge.slot) {
                    None => stack.extend_from_slice(&edge.absent),
                    Some(leaves) => {
                        next.clear();
                        for leaf in leaves {
                            edge.index.lookup(&leaf.value, &mut next);
                        }
                        if next.len() > 1 {
                            next.sort_unstable();
                            next.dedup();
                        }
                        stack.extend_from_slice(&next);
                    }
                }
            }
        }
        reached
    }

    fn add_rule(&mut self, key: u32, fields: &[Field]) -> u32 {
        let mut state = ROOT;
        let mut trail = Vec::with_capacity(fields.len());
        let mut fields = fields.to_vec();
        for field in &mut fields {
            field.slot = self.paths.add(&field.path);
            let signature = signature(field);
            let existing = self.nodes[state as usize]
                .edges
                .iter()
                .find(|edge| edge.path == field.path)
                .and_then(|edge| edge.children.get(&signature).copied());
            let child = match existing {
                Some(child) => child,
                None => {
                    let child = allocate(&mut self.nodes, &mut self.free_nodes, Node::default());
                    let edges = &mut self.nodes[state as usize].edges;
                    let at = match edges.iter().position(|edge| edge.path == field.path) {
                        Some(at) => at,
                        None => {
                            edges.push(Edge {
                                path: field.path.clone(),
                                slot: field.slot,
                                index: ValueIndex::default(),
                                absent: Vec::new(),
                                children: FastMap::default(),
                            });
                            edges.len() - 1
                        }
                    };
                    let edge = &mut edges[at];
                    for matcher in &field.matchers {
                        edge.index.add(matcher, child);
                    }
                    if field.absent_ok {
                        edge.absent.push(child);
                    }
                    edge.children.insert(signature, child);
                    child
                }
            };
            self.nodes[child as usize].refs += 1;
            trail.push(child);
            state = child;
        }
        let rule = SubRule { fields, trail };
        let rule_id = allocate(&mut self.rules, &mut self.free_rules, Some(rule));
        self.nodes[state as usize].terminals.push((rule_id, key));
        rule_id
    }

    fn remove_rule(&mut self, rule_id: u32) {
        let Some(rule) = self.rules[rule_id as usize].take() else {
            return;
        };
        self.free_rules.push(rule_id);
        let last = rule.trail.last().copied().unwrap_or(ROOT);
        let terminals = &mut self.nodes[last as usize].terminals;
        if let Some(at) = terminals.iter().position(|(r, _)| *r == rule_id) {
            terminals.swap_remove(at);
        }
        for (i, field) in rule.fields.iter().enumerate().rev() {
            self.paths.remove(&field.path);
            let child = rule.trail[i];
            let parent = if i == 0 { ROOT } else { rule.trail[i - 1] };
            let node = &mut self.nodes[child as usize];
            node.refs -= 1;
            if node.refs > 0 {
                continue;
            }
            *node = Node::default();
            self.free_nodes.push(child);
            let edges = &mut self.nodes[parent as usize].edges;
            if let Some(at) = edges.iter().position(|edge| edge.path == field.path) {
                let edge = &mut edges[at];
                for matcher in &field.matchers {
                    edge.index.remove(matcher, child);
                }
                edge.absent.retain(|s| *s != child);
                edge.children.remove(&signature(field));
                if edge.children.is_empty() {
                    edges.swap_remove(at);
                }
            }
        }
    }
}

/// Two fields lead to the same state when their conditions are identical.
fn signature(field: &Field) -> String {
    format!("{:?}|{}", field.matchers, field.absent_ok)
}

fn allocate<T>(slots: &mut Vec<T>, free: &mut Vec<u32>, value: T) -> u32 {
    match free.pop() {
        Some(id) => {
            slots[id as usize] = value;
            id
        }
        None => {
            slots.push(value);
            u32::try_from(slots.len() - 1).unwrap_or(u32::MAX)
        }
    }
}

/// A [`RuleSet`] that threads can match while others change it.
///
/// Readers take a snapshot (an `Arc` clone under a read lock held for a moment) and
/// match without any lock. Writers are serialised; each change is made on a copy of
/// the rule set, which is then swapped in, so a reader never sees a half-made change
/// and never waits for one. A change costs a copy of the rule set (milliseconds at
/// ten thousand rules); group changes with [`SharedRuleSet::update`].
#[derive(Debug)]
pub struct SharedRuleSet<K> {
    current: RwLock<Arc<RuleSet<K>>>,
    writer: Mutex<()>,
}

impl<K: Clone + Eq + Hash> Default for SharedRuleSet<K> {
    fn default() -> SharedRuleSet<K> {
        SharedRuleSet::new()
    }
}

impl<K: Clone + Eq + Hash> SharedRuleSet<K> {
    #[must_use]
    pub fn new() -> SharedRuleSet<K> {
        SharedRuleSet {
            current: RwLock::new(Arc::new(RuleSet::new())),
            writer: Mutex::new(()),
        }
    }

    /// The rule set as it is now; later changes do not affect it.
    #[must_use]
    pub fn snapshot(&self) -> Arc<RuleSet<K>> {
        Arc::clone(&self.current.read().unwrap_or_else(PoisonError::into_inner))
    }

    /// Applies `change` to a copy of the rule set and publishes the result.
    pub fn update<R>(&self, change: impl FnOnce(&mut RuleSet<K>) -> R) -> R {
        let _writer = self.writer.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next = (*self.snapshot()).clone();
        let result = change(&mut next);
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(next);
        result
    }

    /// Matches against the current snapshot.
    #[must_use]
    pub fn matching(&self, event: &Value) -> Vec<K> {
        self.snapshot().matching(event)
    }
}
