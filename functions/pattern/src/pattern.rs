//! Pattern text to a validated [`Pattern`], with event-ruler's checks and messages.

use std::net::IpAddr;

use serde_json::Value;

use crate::eval;
use crate::event::{self, Flat, PathNames};
use crate::json::{self, Json};
use crate::matcher::{Bound, Cidr, Literal, Matcher, Range, Wildcard, fold};
use crate::number::{self, Num};
use crate::{EventError, PatternError};

/// EventBridge's default quota for the size of an event pattern, in characters.
pub const DEFAULT_MAX_LEN: usize = 2048;

/// A wildcard value with more `*` than this is refused as too complex. AWS does not
/// publish its threshold; it accepts two (`arn:aws:events:us-east-1:*:event-bus/*`) and
/// refuses six (`*:*:*:*:*:event-bus/*`). busway draws the line at five.
const MAX_WILDCARD_STARS: usize = 5;

/// `$or` expands into one conjunction per combination of branches; past this many a
/// pattern is refused (busway's own limit: it keeps matching and memory bounded).
pub const MAX_COMBINATIONS: usize = 1024;

/// Field names that event-ruler refuses inside `$or` (`Constants.java`).
const RESERVED: [&str; 22] = [
    "exactly",
    "equals-ignore-case",
    "prefix",
    "suffix",
    "anything-but",
    "exists",
    "wildcard",
    "numeric",
    "cidr",
    "=",
    "<",
    "<=",
    ">",
    ">=",
    "regex",
    "not-wildcard",
    "not-regex",
    "date-after",
    "date-before",
    "date-equals",
    "ip-address-in-range",
    "$or",
];

/// Limits applied when parsing a pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PatternOptions {
    /// Longest pattern text accepted, in characters (EventBridge's quota: 2,048 by
    /// default, raised on request).
    pub max_len: usize,
}

impl Default for PatternOptions {
    fn default() -> PatternOptions {
        PatternOptions {
            max_len: DEFAULT_MAX_LEN,
        }
    }
}

/// One field condition of a conjunction: the event path and the values it accepts.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Field {
    pub(crate) path: String,
    pub(crate) matchers: Vec<Matcher>,
    /// The field also holds when the path has no value at all (`exists: false`).
    pub(crate) absent_ok: bool,
}

/// A validated event pattern.
///
/// It is held as a disjunction of conjunctions (`$or` expanded), each conjunction a
/// list of fields sorted by path.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub(crate) conjunctions: Vec<Vec<Field>>,
    paths: PathNames,
}

impl Pattern {
    /// Parses and validates pattern text with the default limits.
    ///
    /// # Errors
    /// The pattern EventBridge would reject, with its reason.
    pub fn parse(text: &str) -> Result<Pattern, PatternError> {
        Pattern::parse_with(text, &PatternOptions::default())
    }

    /// Parses and validates pattern text with the given limits.
    ///
    /// # Errors
    /// The pattern EventBridge would reject, with its reason.
    pub fn parse_with(text: &str, options: &PatternOptions) -> Result<Pattern, PatternError> {
        let length = text.chars().count();
        if length > options.max_len {
            return Err(PatternError::new(format!(
                "Event pattern is {length} characters long; the limit is {}",
                options.max_len
            )));
        }
        let json = json::parse(text, true).map_err(PatternError::new)?;
        let scope = root(&json).map_err(PatternError::new)?;
        let mut conjunctions = expand(&scope).map_err(PatternError::new)?;
        let mut paths = PathNames::default();
        for conjunction in &mut conjunctions {
            conjunction.sort_by(|a, b| a.path.cmp(&b.path));
            for field in conjunction.iter() {
                paths.add(&field.path);
            }
        }
        Ok(Pattern {
            conjunctions,
            paths,
        })
    }

    /// Whether the event matches. Anything that is not a JSON object matches nothing.
    #[must_use]
    pub fn matches(&self, event: &Value) -> bool {
        eval::matches(self, &Flat::from_value(event, &self.paths))
    }

    /// Matches event text, refusing what `TestEventPattern` refuses: text that is not
    /// a JSON object, or an object without `id`, `account`, `source`, `time`, `region`
    /// and `detail-type`. Numbers keep their exact text, so a pattern number that is
    /// too precise for a double still matches the same digits.
    ///
    /// # Errors
    /// [`EventError`] for an event AWS would refuse.
    pub fn matches_text(&self, event: &str) -> Result<bool, EventError> {
        let event = event::parse_event(event)?;
        Ok(eval::matches(self, &Flat::from_json(&event, &self.paths)))
    }
}

impl std::str::FromStr for Pattern {
    type Err = PatternError;

    fn from_str(text: &str) -> Result<Pattern, PatternError> {
        Pattern::parse(text)
    }
}

/// Fields and `$or` groups found at one level of the pattern (nested objects fold
/// into their parent's scope, with dot-joined paths).
#[derive(Debug, Default)]
struct Scope {
    fields: Vec<Field>,
    ors: Vec<(String, Vec<Scope>)>,
}

fn root(json: &Json) -> Result<Scope, String> {
    let Json::Object(entries) = json else {
        return Err("Filter is not an object".to_owned());
    };
    if entries.is_empty() {
        return Err("Empty objects are not allowed".to_owned());
    }
    let mut scope = Scope::default();
    collect(entries, "", &mut scope, false)?;
    Ok(scope)
}

/// Walks one object of the pattern in document order, so that the first problem in
/// the text is the one reported, as event-ruler's streaming parser does.
fn collect(
    entries: &[(String, Json)],
    prefix: &str,
    scope: &mut Scope,
    in_or: bool,
) -> Result<(), String> {
    for (key, value) in entries {
        if key == "$or" {
            let branches = or_branches(value, prefix)?;
            // A repeated `$or` at the same level replaces the earlier one, like any
            // repeated key.
            scope.ors.retain(|(at, _)| at != prefix);
            scope.ors.push((prefix.to_owned(), branches));
            continue;
        }
        if in_or && RESERVED.contains(&key.as_str()) {
            return Err(format!(
                "{key} is Ruler reserved fieldName which cannot be used inside $or."
            ));
        }
        let path = format!("{prefix}{key}");
        match value {
            Json::Array(items) => {
                let field = leaf(items, path)?;
                // The last occurrence of a path wins (event-ruler's `rule.put`).
                scope.fields.retain(|f| f.path != field.path);
                scope.fields.push(field);
            }
            Json::Object(inner) if inner.is_empty() => {
                return Err("Empty objects are not allowed".to_owned());
            }
            Json::Object(inner) => collect(inner, &format!("{path}."), scope, in_or)?,
            _ => return Err(format!("\"{key}\" must be an object or an array")),
        }
    }
    Ok(())
}

fn or_branches(value: &Json, prefix: &str) -> Result<Vec<Scope>, String> {
    let Json::Array(items) = value else {
        return Err("It must be an Array followed with $or.".to_owned());
    };
    let mut branches = Vec::with_capacity(items.len());
    for item in items {
        let Json::Object(entries) = item else {
            return Err("Only JSON object is allowed in array of $or relationship.".to_owned());
        };
        if entries.is_empty() {
            return Err("Empty objects are not allowed".to_owned());
        }
        let mut branch = Scope::default();
        collect(entries, prefix, &mut branch, true)?;
        branches.push(branch);
    }
    if branches.len() < 2 {
        return Err("There must have at least 2 Objects in $or relationship.".to_owned());
    }
    Ok(branches)
}

/// Expands `$or` into conjunctions (disjunctive normal form).
fn expand(scope: &Scope) -> Result<Vec<Vec<Field>>, String> {
    let mut result = vec![scope.fields.clone()];
    for (_, branches) in &scope.ors {
        let mut alternatives = Vec::new();
        for branch in branches {
            alternatives.extend(expand(branch)?);
        }
        let count = result.len().saturating_mul(alternatives.len());
        if count > MAX_COMBINATIONS {
            return Err(format!(
                "Too many $or combinations ({count}); the limit is {MAX_COMBINATIONS}"
            ));
        }
        let mut next = Vec::with_capacity(count);
        for base in &result {
            for alternative in &alternatives {
                let mut combined = base.clone();
                combined.extend(alternative.iter().cloned());
                next.push(combined);
            }
        }
        result = next;
    }
    Ok(result)
}

fn leaf(items: &[Json], path: String) -> Result<Field, String> {
    if items.is_empty() {
        return Err("Empty arrays are not allowed".to_owned());
    }
    let mut matchers = Vec::with_capacity(items.len());
    let mut absent_ok = false;
    for item in items {
        match item {
            Json::String(s) => matchers.push(Matcher::Exact(Literal::Str(s.clone()))),
            Json::Number(text) => matchers.push(Matcher::Exact(Literal::Num(Num::from_text(text)))),
            Json::Bool(b) => matchers.push(Matcher::Exact(Literal::Bool(*b))),
            Json::Null => matchers.push(Matcher::Exact(Literal::Null)),
            Json::Array(_) => {
                return Err("Match value must be String, number, true, false, or null".to_owned());
            }
            Json::Object(entries) => match operator(entries)? {
                Some(matcher) => matchers.push(matcher),
                None => absent_ok = true,
            },
        }
    }
    Ok(Field {
        path,
        matchers,
        absent_ok,
    })
}

/// The single key of an operator object, after its value has been checked.
fn single(entries: &[(String, Json)]) -> Result<(&str, &Json), String> {
    match entries.first() {
        Some((key, value)) => Ok((key, value)),
        None => Err("Match expression name not found".to_owned()),
    }
}

fn only_one_key(entries: &[(String, Json)]) -> Result<(), String> {
    if entries.len() > 1 {
        return Err("Only one key allowed in match expression".to_owned());
    }
    Ok(())
}

/// An operator object. `None` stands for `exists: false`, which is not a value test.
fn operator(entries: &[(String, Json)]) -> Result<Option<Matcher>, String> {
    let (name, value) = single(entries)?;
    let matcher = match name {
        "prefix" => affix(value, "prefix", Matcher::Prefix, Matcher::PrefixIgnoreCase)?,
        "suffix" => affix(value, "suffix", Matcher::Suffix, Matcher::SuffixIgnoreCase)?,
        "equals-ignore-case" => match value {
            Json::String(s) => Matcher::EqualsIgnoreCase(fold(s)),
            _ => return Err("equals-ignore-case match pattern must be a string".to_owned()),
        },
        "wildcard" => match value {
            Json::String(s) => Matcher::Wildcard(wildcard(s)?),
            _ => return Err("wildcard match pattern must be a string".to_owned()),
        },
        "exactly" => match value {
            Json::String(s) => Matcher::Exact(Literal::Str(s.clone())),
            _ => return Err("exact match pattern must be a string".to_owned()),
        },
        "anything-but" => anything_but(value)?,
        "numeric" => Matcher::Numeric(numeric(value)?),
        "exists" => match value {
            Json::Bool(true) => Matcher::Exists,
            Json::Bool(false) => {
                only_one_key(entries)?;
                return Ok(None);
            }
            _ => return Err("exists match pattern must be either true or false.".to_owned()),
        },
        // event-ruler reuses the prefix message for a cidr that is not a string.
        "cidr" => match value {
            Json::String(s) => Matcher::Cidr(cidr(s)?),
            _ => return Err("prefix match pattern must be a string".to_owned()),
        },
        other => return Err(format!("Unrecognized match type {other}")),
    };
    only_one_key(entries)?;
    Ok(Some(matcher))
}

/// `prefix` / `suffix`: a string, or `{"equals-ignore-case": string}`.
fn affix(
    value: &Json,
    name: &str,
    plain: fn(String) -> Matcher,
    ignore_case: fn(String) -> Matcher,
) -> Result<Matcher, String> {
    match value {
        Json::String(s) => Ok(plain(s.clone())),
        Json::Object(entries) => {
            let (inner, inner_value) = single(entries)?;
            if inner != "equals-ignore-case" {
                return Err(format!("Unsupported {name} pattern: {inner}"));
            }
            let Json::String(s) = inner_value else {
                return Err("equals-ignore-case match pattern must be a string".to_owned());
            };
            only_one_key(entries)?;
            Ok(ignore_case(fold(s)))
        }
        _ => Err(format!("{name} match pattern must be a string")),
    }
}

fn anything_but(value: &Json) -> Result<Matcher, String> {
    const SHAPE: &str = "Value of anything-but must be an array or single string/number value.";
    let inner = match value {
        Json::String(s) => vec![Matcher::Exact(Literal::Str(s.clone()))],
        Json::Number(text) => vec![Matcher::Exact(Literal::Num(Num::from_text(text)))],
        Json::Array(items) => anything_but_list(items)?,
        Json::Object(entries) => {
            let (name, inner_value) = single(entries)?;
            let inner = match name {
                "prefix" => anything_but_affixes(inner_value, Matcher::Prefix)?,
                "suffix" => anything_but_affixes(inner_value, Matcher::Suffix)?,
                "equals-ignore-case" => anything_but_ignore_case(inner_value)?,
                "wildcard" => anything_but_wildcards(inner_value)?,
                other => return Err(format!("Unsupported anything-but pattern: {other}")),
            };
            only_one_key(entries)?;
            inner
        }
        Json::Null | Json::Bool(_) => return Err(SHAPE.to_owned()),
    };
    Ok(Matcher::AnythingBut(inner))
}

fn anything_but_list(items: &[Json]) -> Result<Vec<Matcher>, String> {
    let mut inner = Vec::with_capacity(items.len());
    let mut numbers = None;
    for item in items {
        let (is_number, matcher) = match item {
            Json::String(s) => (false, Matcher::Exact(Literal::Str(s.clone()))),
            Json::Number(text) => (true, Matcher::Exact(Literal::Num(Num::from_text(text)))),
            _ => {
                return Err(
                    "Inside anything but list, start|null|boolean is not supported.".to_owned(),
                );
            }
        };
        if *numbers.get_or_insert(is_number) != is_number {
            return Err("Inside anything but list, either all values are number or string, mixed type is not supported".to_owned());
        }
        inner.push(matcher);
    }
    Ok(inner)
}

fn anything_but_affixes(value: &Json, make: fn(String) -> Matcher) -> Result<Vec<Matcher>, String> {
    const NOT_STRING: &str = "prefix/suffix match pattern must be a string";
    let one = |item: &Json| match item {
        Json::String(s) if s.is_empty() => Err("Null prefix/suffix not allowed".to_owned()),
        Json::String(s) => Ok(make(s.clone())),
        _ => Err(NOT_STRING.to_owned()),
    };
    match value {
        Json::String(_) => Ok(vec![one(value)?]),
        Json::Array(items) => items.iter().map(one).collect(),
        Json::Object(_) => {
            Err("Value of anything-but must be an array or single string/number value.".to_owned())
        }
        _ => Err(NOT_STRING.to_owned()),
    }
}

fn anything_but_ignore_case(value: &Json) -> Result<Vec<Matcher>, String> {
    const NOT_STRING: &str =
        "Inside anything-but/equals-ignore-case list, number|start|null|boolean is not supported.";
    let one = |item: &Json| match item {
        Json::String(s) => Ok(Matcher::EqualsIgnoreCase(fold(s))),
        _ => Err(NOT_STRING.to_owned()),
    };
    match value {
        Json::Array(items) => items.iter().map(one).collect(),
        _ => Ok(vec![one(value)?]),
    }
}

fn anything_but_wildcards(value: &Json) -> Result<Vec<Matcher>, String> {
    let one = |item: &Json| match item {
        Json::String(s) => Ok(Matcher::Wildcard(wildcard(s)?)),
        _ => Err("wildcard match pattern must be a string".to_owned()),
    };
    match value {
        Json::Array(items) => items.iter().map(one).collect(),
        _ => Ok(vec![one(value)?]),
    }
}

/// Splits a wildcard value at unescaped `*`. `\*` is a literal star and `\\` a
/// literal backslash; positions in messages count UTF-16 units, as Java does.
fn wildcard(text: &str) -> Result<Wildcard, String> {
    let mut parts = vec![String::new()];
    let mut chars = text.chars();
    let mut pos = 0usize;
    let mut previous_star = false;
    while let Some(c) = chars.next() {
        match c {
            '*' => {
                if previous_star {
                    return Err(format!("Consecutive wildcard characters at pos {pos}"));
                }
                parts.push(String::new());
                previous_star = true;
            }
            '\\' => {
                let escaped = chars.next();
                match escaped {
                    Some(e @ ('*' | '\\')) => {
                        if let Some(part) = parts.last_mut() {
                            part.push(e);
                        }
                        pos += 1;
                    }
                    _ => return Err(format!("Invalid escape character at pos {pos}")),
                }
                previous_star = false;
            }
            other => {
                if let Some(part) = parts.last_mut() {
                    part.push(other);
                }
                previous_star = false;
            }
        }
        pos += c.len_utf16();
    }
    if parts.len() - 1 > MAX_WILDCARD_STARS {
        return Err("Rule is too complex - try using fewer wildcard characters or fewer repeating character sequences after a wildcard character".to_owned());
    }
    Ok(Wildcard { parts })
}

fn numeric(value: &Json) -> Result<Range, String> {
    let Json::Array(items) = value else {
        return Err("Value of numeric must be an array.".to_owned());
    };
    let mut items = items.iter();
    let (first_op, first_value) = numeric_term(
        items.next(),
        &mut items,
        "Invalid member in numeric match: ",
    )?;
    let bound = |value: f64, op: &str| Bound {
        value,
        inclusive: op.ends_with('='),
    };
    let range = match first_op {
        "=" => Range {
            low: Some(Bound {
                value: first_value,
                inclusive: true,
            }),
            high: Some(Bound {
                value: first_value,
                inclusive: true,
            }),
        },
        "<" | "<=" => Range {
            low: None,
            high: Some(bound(first_value, first_op)),
        },
        _ => {
            let low = Some(bound(first_value, first_op));
            match items.next() {
                None => return Ok(Range { low, high: None }),
                Some(Json::String(op)) if op == "<" || op == "<=" => {
                    let upper = number_after(op, items.next())?;
                    if items.next().is_some() {
                        return Err("Too many terms in numeric range expression".to_owned());
                    }
                    return Ok(Range {
                        low,
                        high: Some(bound(upper, op)),
                    });
                }
                Some(Json::String(op)) => return Err(format!("Bad numeric range operator: {op}")),
                Some(other) => {
                    return Err(format!(
                        "Invalid member in numeric match: {}",
                        other.token_text()
                    ));
                }
            }
        }
    };
    if items.next().is_some() {
        return Err("Too many elements in numeric expression".to_owned());
    }
    Ok(range)
}

/// Reads an operator and its number.
fn numeric_term<'a>(
    op: Option<&'a Json>,
    items: &mut std::slice::Iter<'_, Json>,
    invalid: &str,
) -> Result<(&'a str, f64), String> {
    let op = match op {
        Some(Json::String(op)) => op.as_str(),
        Some(other) => return Err(format!("{invalid}{}", other.token_text())),
        None => return Err(format!("{invalid}]")),
    };
    if !matches!(op, "=" | "<" | "<=" | ">" | ">=") {
        return Err(format!("Unrecognized numeric range operator: {op}"));
    }
    Ok((op, number_after(op, items.next())?))
}

fn number_after(op: &str, item: Option<&Json>) -> Result<f64, String> {
    match item {
        Some(Json::Number(text)) => {
            number::comparable(text).ok_or_else(|| format!("Bad value in numeric range: {text}"))
        }
        _ => Err(format!("Value of {op} must be numeric")),
    }
}

/// `address/bits`, checked in event-ruler's order: the slash, the mask, the address.
fn cidr(text: &str) -> Result<Cidr, String> {
    let mut pieces = text.split('/');
    let (Some(address), Some(mask), None) = (pieces.next(), pieces.next(), pieces.next()) else {
        return Err("Malformed CIDR, one '/' required".to_owned());
    };
    let bits: u32 = mask
        .parse()
        .ok()
        .filter(|_| mask.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(|| "Malformed CIDR, mask bits must be an integer".to_owned())?;
    let ip: IpAddr = address
        .parse()
        .map_err(|_| format!("Nonstandard IP address: {address}"))?;
    let width = if ip.is_ipv4() { 32 } else { 128 };
    if bits > width {
        return Err(format!(
            "Malformed CIDR, mask bits must be between 0 and {width}"
        ));
    }
    Ok(Cidr::new(ip, u8::try_from(bits).unwrap_or(u8::MAX)))
}
