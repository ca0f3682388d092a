//! The value index of one automaton edge: given an event value, which next states do
//! the matchers on this edge lead to, without testing the matchers one by one.
//!
//! - exact strings, numbers (by comparable value and by text), booleans and null: hash
//!   maps;
//! - prefix and suffix (plain and case-folded): a hash map per distinct length, so a
//!   value costs one lookup per length in use, not one test per rule;
//! - equals-ignore-case: a hash map of folded text;
//! - wildcard: keyed by the literal text before the first `*` like a prefix, then
//!   confirmed; wildcards that start with `*` are tested one by one;
//! - numeric: a stabbing structure over the ranges' end points ([`RangeTree`]), built
//!   lazily after the edge changes;
//! - cidr: a hash map per (family, mask length) of masked networks;
//! - anything-but: tested one by one. Every one that does not exclude the value
//!   matches, so the work is proportional to the answer anyway.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::OnceLock;

use crate::event::Scalar;
use crate::hash::FastMap;
use crate::matcher::{Cidr, Literal, Matcher, Range, Wildcard, address_bits, fold, mask};

type Targets = Vec<u32>;

/// Below this many ranges a linear scan beats building and walking a tree.
const LINEAR_RANGES: usize = 16;

#[derive(Debug, Clone, Default)]
pub(crate) struct ValueIndex {
    strings: FastMap<String, Targets>,
    exists: Targets,
    /// Every other kind of condition. Most edges hold only exact strings (busway's
    /// subscriptions do), so the rest lives behind a pointer: an edge stays a few
    /// cache lines, which keeps ten thousand rules' states in cache.
    others: Option<Box<Others>>,
}

impl ValueIndex {
    pub(crate) fn add(&mut self, matcher: &Matcher, target: u32) {
        match matcher {
            Matcher::Exact(Literal::Str(s)) => push(&mut self.strings, s, target),
            Matcher::Exists => self.exists.push(target),
            other => self
                .others
                .get_or_insert_with(Box::default)
                .add(other, target),
        }
    }

    pub(crate) fn remove(&mut self, matcher: &Matcher, target: u32) {
        match matcher {
            Matcher::Exact(Literal::Str(s)) => pull(&mut self.strings, s.as_str(), target),
            Matcher::Exists => remove_one(&mut self.exists, target),
            other => {
                if let Some(others) = &mut self.others {
                    others.remove(other, target);
                }
            }
        }
    }

    /// Appends the targets of every matcher that accepts `value` (possibly repeated).
    pub(crate) fn lookup(&self, value: &Scalar<'_>, out: &mut Vec<u32>) {
        out.extend_from_slice(&self.exists);
        if let Scalar::Str(s) = value {
            extend(out, self.strings.get(s.as_ref()));
        }
        if let Some(others) = &self.others {
            others.lookup(value, out);
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Others {
    number_values: FastMap<u64, Targets>,
    number_texts: FastMap<String, Targets>,
    trues: Targets,
    falses: Targets,
    nulls: Targets,
    prefixes: Affixes,
    suffixes: Affixes,
    folded_prefixes: Affixes,
    folded_suffixes: Affixes,
    folded: FastMap<String, Targets>,
    wildcards_by_prefix: FastMap<String, Vec<(Wildcard, u32)>>,
    wildcard_prefix_lengths: BTreeMap<usize, usize>,
    wildcards_leading_star: Vec<(Wildcard, u32)>,
    ranges: Vec<(Range, u32)>,
    range_tree: OnceLock<RangeTree>,
    cidrs: FastMap<Cidr, Targets>,
    cidr_masks: BTreeMap<(bool, u8), usize>,
    anything_but: Vec<(Vec<Matcher>, u32)>,
}

impl Others {
    fn add(&mut self, matcher: &Matcher, target: u32) {
        match matcher {
            Matcher::Exact(literal) => match literal {
                // Held by `ValueIndex` itself, which never passes them here.
                Literal::Str(_) => {}
                Literal::Num(n) => {
                    if let Some(v) = n.value {
                        self.number_values
                            .entry(v.to_bits())
                            .or_default()
                            .push(target);
                    }
                    push(&mut self.number_texts, &n.text, target);
                }
                Literal::Bool(true) => self.trues.push(target),
                Literal::Bool(false) => self.falses.push(target),
                Literal::Null => self.nulls.push(target),
            },
            Matcher::Prefix(p) => self.prefixes.add(p, target),
            Matcher::Suffix(s) => self.suffixes.add(s, target),
            Matcher::PrefixIgnoreCase(p) => self.folded_prefixes.add(p, target),
            Matcher::SuffixIgnoreCase(s) => self.folded_suffixes.add(s, target),
            Matcher::EqualsIgnoreCase(s) => push(&mut self.folded, s, target),
            Matcher::Wildcard(w) => match w.parts.first() {
                Some(first) if w.parts.len() > 1 && first.is_empty() => {
                    self.wildcards_leading_star.push((w.clone(), target));
                }
                Some(first) => {
                    *self.wildcard_prefix_lengths.entry(first.len()).or_insert(0) += 1;
                    self.wildcards_by_prefix
                        .entry(first.clone())
                        .or_default()
                        .push((w.clone(), target));
                }
                None => self.wildcards_leading_star.push((w.clone(), target)),
            },
            Matcher::Numeric(range) => {
                self.ranges.push((*range, target));
                self.range_tree = OnceLock::new();
            }
            // Held by `ValueIndex` itself, which never passes it here.
            Matcher::Exists => {}
            Matcher::Cidr(cidr) => {
                *self.cidr_masks.entry((cidr.v6, cidr.bits)).or_insert(0) += 1;
                self.cidrs.entry(*cidr).or_default().push(target);
            }
            Matcher::AnythingBut(inner) => self.anything_but.push((inner.clone(), target)),
        }
    }

    fn remove(&mut self, matcher: &Matcher, target: u32) {
        match matcher {
            Matcher::Exact(literal) => match literal {
                // Held by `ValueIndex` itself, which never passes them here.
                Literal::Str(_) => {}
                Literal::Num(n) => {
                    if let Some(v) = n.value {
                        pull(&mut self.number_values, &v.to_bits(), target);
                    }
                    pull(&mut self.number_texts, n.text.as_str(), target);
                }
                Literal::Bool(true) => remove_one(&mut self.trues, target),
                Literal::Bool(false) => remove_one(&mut self.falses, target),
                Literal::Null => remove_one(&mut self.nulls, target),
            },
            Matcher::Prefix(p) => self.prefixes.remove(p, target),
            Matcher::Suffix(s) => self.suffixes.remove(s, target),
            Matcher::PrefixIgnoreCase(p) => self.folded_prefixes.remove(p, target),
            Matcher::SuffixIgnoreCase(s) => self.folded_suffixes.remove(s, target),
            Matcher::EqualsIgnoreCase(s) => pull(&mut self.folded, s.as_str(), target),
            Matcher::Wildcard(w) => {
                let entry = (w.clone(), target);
                match w.parts.first() {
                    Some(first) if !(w.parts.len() > 1 && first.is_empty()) => {
                        if let Some(list) = self.wildcards_by_prefix.get_mut(first.as_str()) {
                            remove_one(list, entry);
                            if list.is_empty() {
                                self.wildcards_by_prefix.remove(first.as_str());
                            }
                            decrement(&mut self.wildcard_prefix_lengths, first.len());
                        }
                    }
                    _ => remove_one(&mut self.wildcards_leading_star, entry),
                }
            }
            Matcher::Numeric(range) => {
                remove_one(&mut self.ranges, (*range, target));
                self.range_tree = OnceLock::new();
            }
            // Held by `ValueIndex` itself, which never passes it here.
            Matcher::Exists => {}
            Matcher::Cidr(cidr) => {
                pull(&mut self.cidrs, cidr, target);
                decrement(&mut self.cidr_masks, (cidr.v6, cidr.bits));
            }
            Matcher::AnythingBut(inner) => {
                remove_one(&mut self.anything_but, (inner.clone(), target));
            }
        }
    }

    fn lookup(&self, value: &Scalar<'_>, out: &mut Vec<u32>) {
        match value {
            Scalar::Str(s) => self.lookup_str(s, out),
            Scalar::Num(n) => {
                if let Some(v) = n.value {
                    extend(out, self.number_values.get(&v.to_bits()));
                    self.lookup_ranges(v, out);
                }
                extend(out, self.number_texts.get(n.text.as_str()));
            }
            Scalar::Bool(true) => out.extend_from_slice(&self.trues),
            Scalar::Bool(false) => out.extend_from_slice(&self.falses),
            Scalar::Null => out.extend_from_slice(&self.nulls),
        }
        for (inner, target) in &self.anything_but {
            if !inner.iter().any(|m| m.matches(value)) {
                out.push(*target);
            }
        }
    }

    fn lookup_str(&self, s: &str, out: &mut Vec<u32>) {
        self.prefixes.lookup_prefixes(s, out);
        self.suffixes.lookup_suffixes(s, out);
        if !(self.folded.is_empty()
            && self.folded_prefixes.is_empty()
            && self.folded_suffixes.is_empty())
        {
            let folded = fold(s);
            extend(out, self.folded.get(folded.as_str()));
            self.folded_prefixes.lookup_prefixes(&folded, out);
            self.folded_suffixes.lookup_suffixes(&folded, out);
        }
        for &length in self.wildcard_prefix_lengths.keys() {
            let Some(head) = s.get(..length) else {
                continue;
            };
            for (wildcard, target) in self.wildcards_by_prefix.get(head).into_iter().flatten() {
                if wildcard.matches(s) {
                    out.push(*target);
                }
            }
        }
        for (wildcard, target) in &self.wildcards_leading_star {
            if wildcard.matches(s) {
                out.push(*target);
            }
        }
        if !self.cidrs.is_empty()
            && let Ok(ip) = s.parse::<IpAddr>()
        {
            let (v6, raw) = address_bits(ip);
            for &(family, bits) in self.cidr_masks.keys() {
                if family == v6 {
                    let key = Cidr {
                        v6,
                        bits,
                        network: mask(raw, v6, bits),
                    };
                    extend(out, self.cidrs.get(&key));
                }
            }
        }
    }

    fn lookup_ranges(&self, v: f64, out: &mut Vec<u32>) {
        if self.ranges.len() <= LINEAR_RANGES {
            out.extend(
                self.ranges
                    .iter()
                    .filter(|(range, _)| range.contains(v))
                    .map(|(_, target)| *target),
            );
        } else {
            self.range_tree
                .get_or_init(|| RangeTree::build(&self.ranges))
                .stab(v, out);
        }
    }
}

fn push(map: &mut FastMap<String, Targets>, key: &str, target: u32) {
    match map.get_mut(key) {
        Some(targets) => targets.push(target),
        None => {
            map.insert(key.to_owned(), vec![target]);
        }
    }
}

fn pull<K, Q>(map: &mut FastMap<K, Targets>, key: &Q, target: u32)
where
    K: std::borrow::Borrow<Q> + Eq + std::hash::Hash,
    Q: Eq + std::hash::Hash + ?Sized,
{
    if let Some(targets) = map.get_mut(key) {
        remove_one(targets, target);
        if targets.is_empty() {
            map.remove(key);
        }
    }
}

fn remove_one<T: PartialEq>(list: &mut Vec<T>, item: T) {
    if let Some(at) = list.iter().position(|x| *x == item) {
        list.swap_remove(at);
    }
}

fn decrement<K: Ord>(counts: &mut BTreeMap<K, usize>, key: K) {
    if let Some(count) = counts.get_mut(&key) {
        *count -= 1;
        if *count == 0 {
            counts.remove(&key);
        }
    }
}

fn extend(out: &mut Vec<u32>, targets: Option<&Targets>) {
    if let Some(targets) = targets {
        out.extend_from_slice(targets);
    }
}

/// Prefixes or suffixes, grouped so that a value is probed once per length in use.
#[derive(Debug, Clone, Default)]
struct Affixes {
    by_text: FastMap<String, Targets>,
    lengths: BTreeMap<usize, usize>,
}

impl Affixes {
    fn is_empty(&self) -> bool {
        self.by_text.is_empty()
    }

    fn add(&mut self, text: &str, target: u32) {
        *self.lengths.entry(text.len()).or_insert(0) += 1;
        push(&mut self.by_text, text, target);
    }

    fn remove(&mut self, text: &str, target: u32) {
        if self.by_text.contains_key(text) {
            pull(&mut self.by_text, text, target);
            decrement(&mut self.lengths, text.len());
        }
    }

    fn lookup_prefixes(&self, s: &str, out: &mut Vec<u32>) {
        for &length in self.lengths.keys() {
            match s.get(..length) {
                Some(head) => extend(out, self.by_text.get(head)),
                None if length > s.len() => break,
                None => {}
            }
        }
    }

    fn lookup_suffixes(&self, s: &str, out: &mut Vec<u32>) {
        for &length in self.lengths.keys() {
            if length > s.len() {
                break;
            }
            if let Some(tail) = s.get(s.len() - length..) {
                extend(out, self.by_text.get(tail));
            }
        }
    }
}

/// Stabbing queries over ranges. The number line is cut into "slots": the open gaps
/// between the sorted distinct end points of all ranges, and the points themselves,
/// so open and closed bounds are exact. When ranges overlap little, each slot simply
/// lists its ranges (one binary search and one contiguous read per query); otherwise
/// a segment tree keeps memory at O(n log n).
#[derive(Debug, Clone)]
struct RangeTree {
    points: Vec<f64>,
    layout: Layout,
}

#[derive(Debug, Clone)]
enum Layout {
    /// The ranges of slot `i` are `targets[offsets[i]..offsets[i + 1]]`.
    PerSlot {
        offsets: Vec<usize>,
        targets: Vec<u32>,
    },
    Tree {
        nodes: Vec<Targets>,
    },
}

impl RangeTree {
    fn build(ranges: &[(Range, u32)]) -> RangeTree {
        let mut points: Vec<f64> = ranges
            .iter()
            .flat_map(|(range, _)| [range.low, range.high])
            .flatten()
            .map(|bound| bound.value)
            .collect();
        points.sort_by(f64::total_cmp);
        points.dedup();
        let slots = 2 * points.len() + 1;
        let point_slot = |value: f64| 2 * points.partition_point(|p| *p < value) + 1;
        let spans: Vec<(usize, usize, u32)> = ranges
            .iter()
            .filter_map(|(range, target)| {
                let first = match range.low {
                    None => 0,
                    Some(b) => point_slot(b.value) + usize::from(!b.inclusive),
                };
                let last = match range.high {
                    None => slots - 1,
                    Some(b) => point_slot(b.value).checked_sub(usize::from(!b.inclusive))?,
                };
                (first <= last).then_some((first, last, *target))
            })
            .collect();
        let listed: usize = spans.iter().map(|(first, last, _)| last - first + 1).sum();
        let layout = if listed <= 4 * (spans.len() + slots) {
            let mut counts = vec![0usize; slots + 1];
            for &(first, last, _) in &spans {
                for slot in first..=last {
                    counts[slot + 1] += 1;
                }
            }
            for i in 1..counts.len() {
                counts[i] += counts[i - 1];
            }
            let mut fill = counts.clone();
            let mut targets = vec![0u32; listed];
            for &(first, last, target) in &spans {
                for slot in first..=last {
                    targets[fill[slot]] = target;
                    fill[slot] += 1;
                }
            }
            Layout::PerSlot {
                offsets: counts,
                targets,
            }
        } else {
            let mut nodes = vec![Vec::new(); 4 * slots];
            for &(first, last, target) in &spans {
                insert(&mut nodes, 1, 0, slots - 1, first, last, target);
            }
            Layout::Tree { nodes }
        };
        RangeTree { points, layout }
    }

    /// The slot any value falls in: a point's own slot, or the gap before it.
    fn slot_of(&self, value: f64) -> usize {
        let below = self.points.partition_point(|p| *p < value);
        if self.points.get(below) == Some(&value) {
            2 * below + 1
        } else {
            2 * below
        }
    }

    fn stab(&self, value: f64, out: &mut Vec<u32>) {
        let slot = self.slot_of(value);
        match &self.layout {
            Layout::PerSlot { offsets, targets } => {
                out.extend_from_slice(&targets[offsets[slot]..offsets[slot + 1]]);
            }
            Layout::Tree { nodes } => {
                let (mut node, mut lo, mut hi) = (1, 0, 2 * self.points.len());
                loop {
                    out.extend_from_slice(&nodes[node]);
                    if lo == hi {
                        return;
                    }
                    let mid = lo + (hi - lo) / 2;
                    if slot <= mid {
                        node *= 2;
                        hi = mid;
                    } else {
                        node = 2 * node + 1;
                        lo = mid + 1;
                    }
                }
            }
        }
    }
}

/// Adds `target` to the segment-tree nodes covering slots `first..=last`.
fn insert(
    nodes: &mut [Targets],
    node: usize,
    lo: usize,
    hi: usize,
    first: usize,
    last: usize,
    target: u32,
) {
    if first <= lo && hi <= last {
        nodes[node].push(target);
        return;
    }
    let mid = lo + (hi - lo) / 2;
    if first <= mid {
        insert(nodes, 2 * node, lo, mid, first, last, target);
    }
    if last > mid {
        insert(nodes, 2 * node + 1, mid + 1, hi, first, last, target);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::Bound;

    fn range(low: Option<(f64, bool)>, high: Option<(f64, bool)>) -> Range {
        let bound = |(value, inclusive)| Bound { value, inclusive };
        Range {
            low: low.map(bound),
            high: high.map(bound),
        }
    }

    #[test]
    fn the_range_tree_answers_like_testing_every_range() {
        let mut sparse = Vec::new();
        for i in 0..40u32 {
            let a = f64::from(i) / 2.0 - 10.0;
            let r = match i % 5 {
                0 => range(Some((a, true)), Some((a + 1.0, false))),
                1 => range(Some((a, false)), Some((a + 0.5, true))),
                2 => range(Some((a, true)), Some((a, true))),
                3 => range(Some((a - 0.3, false)), Some((a + 0.3, false))),
                _ if i < 10 => range(None, Some((a, true))),
                _ => range(Some((a + 10.0, false)), None),
            };
            sparse.push((r, i));
        }
        // Nested ranges overlap a lot and get the segment tree; the ranges above get
        // per-slot lists. Both layouts must answer exactly.
        let mut dense = sparse.clone();
        dense.extend((0..200u32).map(|i| {
            let half = f64::from(i) / 10.0;
            (
                range(Some((-half, true)), Some((half, i % 2 == 0))),
                100 + i,
            )
        }));
        let sparse_tree = RangeTree::build(&sparse);
        assert!(matches!(sparse_tree.layout, Layout::PerSlot { .. }));
        let dense_tree = RangeTree::build(&dense);
        assert!(matches!(dense_tree.layout, Layout::Tree { .. }));
        for (tree, ranges) in [(sparse_tree, sparse), (dense_tree, dense)] {
            for tenth in -250..250 {
                let v = f64::from(tenth) / 10.0;
                let mut got = Vec::new();
                tree.stab(v, &mut got);
                got.sort_unstable();
                let mut want: Vec<u32> = ranges
                    .iter()
                    .filter(|(r, _)| r.contains(v))
                    .map(|(_, t)| *t)
                    .collect();
                want.sort_unstable();
                assert_eq!(got, want, "value {v}");
            }
        }
    }
}
