//! Evaluating one pattern against a flattened event, field by field.
//!
//! This is the reference semantics: [`crate::RuleSet`] must agree with it on every
//! event, which the property tests check.

use crate::event::{Flat, Leaf, Membership};
use crate::pattern::{Field, Pattern};

pub(crate) fn matches(pattern: &Pattern, flat: &Flat<'_>) -> bool {
    pattern
        .conjunctions
        .iter()
        .any(|conjunction| conjunction_matches(conjunction, flat))
}

/// Every field must hold. A field holds when one of its matchers accepts a value at
/// its path, or, for `exists: false`, when the path has no value. The values chosen
/// for the fields must come from the same element of any array they share.
pub(crate) fn conjunction_matches(fields: &[Field], flat: &Flat<'_>) -> bool {
    let mut candidates: Vec<Vec<&Leaf<'_>>> = Vec::with_capacity(fields.len());
    for field in fields {
        match flat.leaves(field.slot) {
            None if field.absent_ok => {}
            None => return false,
            Some(leaves) => {
                let accepted: Vec<&Leaf<'_>> = leaves
                    .iter()
                    .filter(|leaf| field.matchers.iter().any(|m| m.matches(&leaf.value)))
                    .collect();
                if accepted.is_empty() {
                    return false;
                }
                candidates.push(accepted);
            }
        }
    }
    !flat.has_arrays || consistent(&candidates)
}

/// Work allowed to the array-consistency search before it gives up (and answers "no
/// match"). Real events and patterns need a handful of steps; the cap only stops an
/// adversarial event from making one match run for ever.
const SEARCH_BUDGET: usize = 100_000;

/// Whether one leaf can be chosen per field such that all chosen leaves agree on the
/// element of every array they share.
pub(crate) fn consistent(candidates: &[Vec<&Leaf<'_>>]) -> bool {
    let mut order: Vec<&Vec<&Leaf<'_>>> = candidates.iter().collect();
    // Fields with fewest choices first: conflicts surface early.
    order.sort_by_key(|c| c.len());
    let mut budget = SEARCH_BUDGET;
    search(&order, &mut Vec::new(), &mut budget)
}

fn search(order: &[&Vec<&Leaf<'_>>], chosen: &mut Membership, budget: &mut usize) -> bool {
    let Some((first, rest)) = order.split_first() else {
        return true;
    };
    for leaf in first.iter() {
        if *budget == 0 {
            return false;
        }
        *budget -= 1;
        if let Some(added) = merge(chosen, &leaf.arrays) {
            let mark = chosen.len();
            chosen.extend(added);
            if search(rest, chosen, budget) {
                return true;
            }
            chosen.truncate(mark);
        }
    }
    false
}

/// The array positions of `leaf` not yet in `chosen`, or `None` when the leaf sits in a
/// different element of an array that `chosen` already fixed.
fn merge(chosen: &Membership, leaf: &Membership) -> Option<Membership> {
    let mut added = Vec::new();
    for &(array, index) in leaf {
        match chosen.iter().find(|(a, _)| *a == array) {
            Some(&(_, fixed)) if fixed != index => return None,
            Some(_) => {}
            None => added.push((array, index)),
        }
    }
    Some(added)
}
