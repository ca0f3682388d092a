//! Pattern text to a validated [`Pattern`], with event-ruler's checks and messages.

use std::net::IpAddr;

use serde_json::Value;

use crate::eval;
use crate::event::{self, Flat, PathSet};
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
    /// The path's slot in the [`PathSet`] of whatever holds the field.
    pub(crate) slot: u32,
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
    paths: PathSet,
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
        let mut paths = PathSet::default();
        for conjunction in &mut conjunctions {
            conjunction.sort_by(|a, b| a.path.cmp(&b.path));
            for field in conjunction.iter_mut() {
                field.slot = paths.add(&field.path);
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
        event.is_object() && eval::matches(self, &Flat::from_value(event, &self.paths))
    }

    /// Matches event text, refusing what `TestEventPattern` refuses: text that is not
    /// a JSON object, or an object without `id`, `account`, `source`, `time`, `region`
    /// and `detail-type`. Numbers keep their exact text, so a pattern number that is
    /// too precise for a double still matches the same digits.
    ///
    /// # Errors
    /// [`EventError`] for an event AWS would refuse.
    pub fn matches_text(&self, event: &str) -> Result<bool, EventError> {
        if let Some(flat) = event::stream_event(event, &self.paths)? {
            return Ok(eval::matches(self, &flat));
        }
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
        slot: 0,
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn reason(pattern: &str) -> String {
        match Pattern::parse(pattern) {
            Ok(_) => panic!("{pattern} should be invalid"),
            Err(error) => error.reason().to_owned(),
        }
    }

    fn matches(pattern: &str, event: &Value) -> bool {
        Pattern::parse(pattern)
            .unwrap_or_else(|error| panic!("{pattern}: {error}"))
            .matches(event)
    }

    #[test]
    fn the_display_text_is_aws_message_and_reason_is_the_tail() {
        let error = Pattern::parse(r#"{"a":[]}"#).unwrap_err();
        assert_eq!(
            error.to_string(),
            "Event pattern is not valid. Reason: Empty arrays are not allowed"
        );
        assert_eq!(error.reason(), "Empty arrays are not allowed");
    }

    #[test]
    fn structural_mistakes_are_rejected_with_ruler_messages() {
        assert_eq!(reason(r#"{"a":[]}"#), "Empty arrays are not allowed");
        assert_eq!(
            reason(r#"{"a":42}"#),
            r#""a" must be an object or an array"#
        );
        assert_eq!(
            reason(r#"{"a":{"b":"x"}}"#),
            r#""b" must be an object or an array"#
        );
        assert_eq!(reason("{}"), "Empty objects are not allowed");
        assert_eq!(reason(r#"{"a":{}}"#), "Empty objects are not allowed");
        assert_eq!(reason(r#"{"a":[{}]}"#), "Match expression name not found");
        assert_eq!(reason("[1]"), "Filter is not an object");
        assert_eq!(
            reason(r#"{"a":[[1]]}"#),
            "Match value must be String, number, true, false, or null"
        );
        assert_eq!(
            reason(r#"{"a":[{"prefix":"x","suffix":"y"}]}"#),
            "Only one key allowed in match expression"
        );
        assert_eq!(
            reason(r#"{"a":[{"EXISTS":true}]}"#),
            "Unrecognized match type EXISTS"
        );
    }

    #[test]
    fn text_that_is_not_json_gets_jacksons_message() {
        assert_eq!(
            reason("this is valid json but not a dict"),
            "Unrecognized token 'this': was expecting (JSON String, Number, Array, Object or token 'null', 'true' or 'false')"
        );
        assert_eq!(
            reason("{'bad': 'quotation'}"),
            "Unexpected character (''' (code 39)): was expecting double-quote to start field name"
        );
    }

    #[test]
    fn string_operators_require_strings() {
        assert_eq!(
            reason(r#"{"a":[{"prefix":1}]}"#),
            "prefix match pattern must be a string"
        );
        assert_eq!(
            reason(r#"{"a":[{"suffix":["x"]}]}"#),
            "suffix match pattern must be a string"
        );
        assert_eq!(
            reason(r#"{"a":[{"equals-ignore-case":["x"]}]}"#),
            "equals-ignore-case match pattern must be a string"
        );
        assert_eq!(
            reason(r#"{"a":[{"prefix":{"equals-ignore-case":1}}]}"#),
            "equals-ignore-case match pattern must be a string"
        );
        assert_eq!(
            reason(r#"{"a":[{"prefix":{"wildcard":"x"}}]}"#),
            "Unsupported prefix pattern: wildcard"
        );
        assert_eq!(
            reason(r#"{"a":[{"wildcard":1}]}"#),
            "wildcard match pattern must be a string"
        );
        assert_eq!(
            reason(r#"{"a":[{"exactly":1}]}"#),
            "exact match pattern must be a string"
        );
        assert_eq!(
            reason(r#"{"a":[{"exists":"yes"}]}"#),
            "exists match pattern must be either true or false."
        );
    }

    #[test]
    fn wildcards_refuse_double_stars_bad_escapes_and_too_many_stars() {
        assert_eq!(
            reason(r#"{"a":[{"wildcard":"arn:aws:events:us-east-1:**:event-bus/*"}]}"#),
            "Consecutive wildcard characters at pos 26"
        );
        assert_eq!(
            reason(r#"{"a":[{"wildcard":"a\\b"}]}"#),
            "Invalid escape character at pos 1"
        );
        assert!(
            reason(r#"{"a":[{"wildcard":"*:*:*:*:*:event-bus/*"}]}"#)
                .starts_with("Rule is too complex")
        );
        assert!(Pattern::parse(r#"{"a":[{"wildcard":"*a*b*c*d*"}]}"#).is_ok());
    }

    #[test]
    fn anything_but_shapes_are_checked() {
        let shape = "Value of anything-but must be an array or single string/number value.";
        assert_eq!(reason(r#"{"a":[{"anything-but":null}]}"#), shape);
        assert_eq!(reason(r#"{"a":[{"anything-but":true}]}"#), shape);
        assert_eq!(
            reason(r#"{"a":[{"anything-but":{"prefix":{"equals-ignore-case":"x"}}}]}"#),
            shape
        );
        assert_eq!(
            reason(r#"{"a":[{"anything-but":["a",null]}]}"#),
            "Inside anything but list, start|null|boolean is not supported."
        );
        assert_eq!(
            reason(r#"{"a":[{"anything-but":["a",1]}]}"#),
            "Inside anything but list, either all values are number or string, mixed type is not supported"
        );
        assert_eq!(
            reason(r#"{"a":[{"anything-but":{"prefix":""}}]}"#),
            "Null prefix/suffix not allowed"
        );
        assert_eq!(
            reason(r#"{"a":[{"anything-but":{"suffix":[1]}}]}"#),
            "prefix/suffix match pattern must be a string"
        );
        assert_eq!(
            reason(r#"{"a":[{"anything-but":{"equals-ignore-case":1}}]}"#),
            "Inside anything-but/equals-ignore-case list, number|start|null|boolean is not supported."
        );
        assert_eq!(
            reason(r#"{"a":[{"anything-but":{"wildcard":[1]}}]}"#),
            "wildcard match pattern must be a string"
        );
        assert_eq!(
            reason(r#"{"a":[{"anything-but":{"numeric":[">",1]}}]}"#),
            "Unsupported anything-but pattern: numeric"
        );
    }

    #[test]
    fn numeric_expressions_are_checked() {
        assert_eq!(
            reason(r#"{"a":[{"numeric":10}]}"#),
            "Value of numeric must be an array."
        );
        assert_eq!(
            reason(r#"{"a":[{"numeric":[">",0,">",0]}]}"#),
            "Bad numeric range operator: >"
        );
        assert_eq!(
            reason(r#"{"a":[{"numeric":[">",0,"<"]}]}"#),
            "Value of < must be numeric"
        );
        assert_eq!(
            reason(r#"{"a":[{"numeric":["=","5"]}]}"#),
            "Value of = must be numeric"
        );
        assert_eq!(
            reason(r#"{"a":[{"numeric":["~",5]}]}"#),
            "Unrecognized numeric range operator: ~"
        );
        assert_eq!(
            reason(r#"{"a":[{"numeric":[5]}]}"#),
            "Invalid member in numeric match: 5"
        );
        assert_eq!(
            reason(r#"{"a":[{"numeric":[]}]}"#),
            "Invalid member in numeric match: ]"
        );
        assert_eq!(
            reason(r#"{"a":[{"numeric":["=",5,6]}]}"#),
            "Too many elements in numeric expression"
        );
        assert_eq!(
            reason(r#"{"a":[{"numeric":[">",0,"<",5,1]}]}"#),
            "Too many terms in numeric range expression"
        );
        assert_eq!(
            reason(r#"{"a":[{"numeric":["=",1e999]}]}"#),
            "Bad value in numeric range: 1e999"
        );
    }

    #[test]
    fn cidr_expressions_are_checked_in_rulers_order() {
        assert_eq!(
            reason(r#"{"a":[{"cidr":"bad"}]}"#),
            "Malformed CIDR, one '/' required"
        );
        assert_eq!(
            reason(r#"{"a":[{"cidr":"bad-/64x"}]}"#),
            "Malformed CIDR, mask bits must be an integer"
        );
        assert_eq!(
            reason(r#"{"a":[{"cidr":"xx.11.xx/8"}]}"#),
            "Nonstandard IP address: xx.11.xx"
        );
        assert_eq!(
            reason(r#"{"a":[{"cidr":["10.0.0.0/8"]}]}"#),
            "prefix match pattern must be a string"
        );
        assert_eq!(
            reason(r#"{"a":[{"cidr":"10.0.0.0/33"}]}"#),
            "Malformed CIDR, mask bits must be between 0 and 32"
        );
    }

    #[test]
    fn or_needs_an_array_of_at_least_two_objects_without_reserved_names() {
        assert_eq!(
            reason(r#"{"$or":{"a":[1]}}"#),
            "It must be an Array followed with $or."
        );
        assert_eq!(
            reason(r#"{"$or":[{"a":[1]},2]}"#),
            "Only JSON object is allowed in array of $or relationship."
        );
        assert_eq!(
            reason(r#"{"$or":[{"a":[1]}]}"#),
            "There must have at least 2 Objects in $or relationship."
        );
        assert_eq!(
            reason(r#"{"$or":[{"prefix":[1]},{"b":[2]}]}"#),
            "prefix is Ruler reserved fieldName which cannot be used inside $or."
        );
    }

    #[test]
    fn the_size_limit_counts_characters_and_is_configurable() {
        let long = format!(r#"{{"a":["{}"]}}"#, "é".repeat(2038));
        assert!(Pattern::parse(&long).is_ok());
        let longer = format!(r#"{{"a":["{}"]}}"#, "é".repeat(2039));
        assert_eq!(
            reason(&longer),
            "Event pattern is 2049 characters long; the limit is 2048"
        );
        assert!(Pattern::parse_with(&longer, &PatternOptions { max_len: 4096 }).is_ok());
    }

    #[test]
    fn or_combinations_beyond_the_limit_are_rejected() {
        let or = r#"{"$or":[{"x":[1]},{"y":[2]},{"z":[3]},{"w":[4]}]}"#;
        let fields: Vec<String> = (0..6).map(|i| format!(r#""f{i}":{or}"#)).collect();
        let text = format!("{{{}}}", fields.join(","));
        assert!(
            Pattern::parse_with(&text, &PatternOptions { max_len: 100_000 })
                .unwrap_err()
                .reason()
                .starts_with("Too many $or combinations")
        );
    }

    #[test]
    fn exact_values_match_by_type() {
        let event = json!({"s": "300", "n": 300.0, "b": true, "z": null, "e": ""});
        assert!(matches(r#"{"s":["300"]}"#, &event));
        assert!(!matches(r#"{"s":[300]}"#, &event));
        assert!(matches(r#"{"n":[300]}"#, &event));
        assert!(matches(r#"{"n":[3e2]}"#, &event));
        assert!(!matches(r#"{"n":["300"]}"#, &event));
        assert!(matches(r#"{"b":[true]}"#, &event));
        assert!(!matches(r#"{"b":["true"]}"#, &event));
        assert!(matches(r#"{"z":[null]}"#, &event));
        assert!(!matches(r#"{"e":[null]}"#, &event));
        assert!(matches(r#"{"e":[""]}"#, &event));
    }

    #[test]
    fn numbers_too_precise_for_a_double_match_by_text_only() {
        let pattern = Pattern::parse(r#"{"n":[9007199254740993]}"#).unwrap();
        let event = |n: &str| {
            format!(
                r#"{{"id":"1","account":"1","source":"s","time":"t","region":"r","detail-type":"d","n":{n}}}"#
            )
        };
        assert_eq!(pattern.matches_text(&event("9007199254740993")), Ok(true));
        assert_eq!(pattern.matches_text(&event("9007199254740992")), Ok(false));
        assert!(pattern.matches(&json!({"n": 9_007_199_254_740_993u64})));
        assert!(!pattern.matches(&json!({"n": 9_007_199_254_740_992u64})));
        let exact = Pattern::parse(r#"{"n":[9007199254740992, -5]}"#).unwrap();
        assert!(exact.matches(&json!({"n": 9_007_199_254_740_992u64})));
        assert!(exact.matches(&json!({"n": -5})));
        assert!(exact.matches(&json!({"n": -5.0})));
    }

    #[test]
    fn prefix_suffix_and_ignore_case_match_strings_only() {
        let event = json!({"a": "EventBridge.png", "n": 12});
        assert!(matches(r#"{"a":[{"prefix":"Event"}]}"#, &event));
        assert!(!matches(r#"{"a":[{"prefix":"event"}]}"#, &event));
        assert!(matches(
            r#"{"a":[{"prefix":{"equals-ignore-case":"EVENT"}}]}"#,
            &event
        ));
        assert!(matches(r#"{"a":[{"suffix":".png"}]}"#, &event));
        assert!(matches(
            r#"{"a":[{"suffix":{"equals-ignore-case":".PNG"}}]}"#,
            &event
        ));
        assert!(matches(
            r#"{"a":[{"equals-ignore-case":"eventbridge.PNG"}]}"#,
            &event
        ));
        assert!(matches(r#"{"a":[{"prefix":""}]}"#, &event));
        assert!(!matches(r#"{"n":[{"prefix":"1"}]}"#, &event));
    }

    #[test]
    fn wildcards_match_across_slashes() {
        let event = json!({"f": "/Users/me/dir/doc.txt", "n": 1});
        assert!(matches(
            r#"{"f":[{"wildcard":"/Users/*/doc.txt"}]}"#,
            &event
        ));
        assert!(!matches(
            r#"{"f":[{"wildcard":"/Users/*/doc.txt2"}]}"#,
            &event
        ));
        assert!(matches(r#"{"f":[{"wildcard":"*"}]}"#, &event));
        assert!(!matches(r#"{"n":[{"wildcard":"*"}]}"#, &event));
    }

    #[test]
    fn anything_but_matches_present_values_that_are_not_excluded() {
        let event = json!({"s": "running", "n": 5, "z": null, "list": ["a", "b"]});
        assert!(matches(r#"{"s":[{"anything-but":"stopped"}]}"#, &event));
        assert!(!matches(r#"{"s":[{"anything-but":["running"]}]}"#, &event));
        assert!(matches(r#"{"n":[{"anything-but":"5"}]}"#, &event));
        assert!(!matches(r#"{"n":[{"anything-but":5.0}]}"#, &event));
        assert!(matches(r#"{"z":[{"anything-but":"x"}]}"#, &event));
        assert!(!matches(r#"{"missing":[{"anything-but":"x"}]}"#, &event));
        assert!(!matches(
            r#"{"s":[{"anything-but":{"prefix":"run"}}]}"#,
            &event
        ));
        assert!(matches(
            r#"{"n":[{"anything-but":{"prefix":"run"}}]}"#,
            &event
        ));
        assert!(!matches(
            r#"{"s":[{"anything-but":{"suffix":["ing"]}}]}"#,
            &event
        ));
        assert!(!matches(
            r#"{"s":[{"anything-but":{"equals-ignore-case":"RUNNING"}}]}"#,
            &event
        ));
        assert!(!matches(
            r#"{"s":[{"anything-but":{"wildcard":"r*g"}}]}"#,
            &event
        ));
        assert!(matches(r#"{"list":[{"anything-but":"a"}]}"#, &event));
    }

    #[test]
    fn numeric_ranges_compare_numbers_only() {
        let event = json!({"n": 5, "f": 301.8, "s": "5"});
        assert!(matches(r#"{"n":[{"numeric":[">",0,"<=",5]}]}"#, &event));
        assert!(!matches(r#"{"n":[{"numeric":[">",0,"<",5]}]}"#, &event));
        assert!(matches(r#"{"n":[{"numeric":[">=",5]}]}"#, &event));
        assert!(matches(r#"{"f":[{"numeric":["=",301.8]}]}"#, &event));
        assert!(!matches(r#"{"s":[{"numeric":["=",5]}]}"#, &event));
    }

    #[test]
    fn an_event_that_is_not_an_object_matches_nothing() {
        assert!(!matches(r#"{"a":[{"exists":false}]}"#, &json!("text")));
        assert!(matches(r#"{"a":[{"exists":false}]}"#, &json!({})));
    }

    #[test]
    fn exists_tests_leaves_only() {
        let event = json!({"a": {"b": 1}, "z": null, "empty": []});
        assert!(matches(r#"{"a":{"b":[{"exists":true}]}}"#, &event));
        assert!(!matches(r#"{"a":[{"exists":true}]}"#, &event));
        assert!(matches(r#"{"z":[{"exists":true}]}"#, &event));
        assert!(!matches(r#"{"empty":[{"exists":true}]}"#, &event));
        assert!(matches(r#"{"empty":[{"exists":false}]}"#, &event));
        assert!(matches(r#"{"x":{"y":[{"exists":false}]}}"#, &event));
        assert!(!matches(r#"{"a":{"b":[{"exists":false}]}}"#, &event));
    }

    #[test]
    fn cidr_matches_addresses_in_the_network() {
        let event =
            json!({"ip": "10.0.0.7", "v6": "2001:0db8:1234:1a00:0000:0000:0000:0001", "n": 1});
        assert!(matches(r#"{"ip":[{"cidr":"10.0.0.0/24"}]}"#, &event));
        assert!(!matches(r#"{"ip":[{"cidr":"10.0.1.0/24"}]}"#, &event));
        assert!(matches(
            r#"{"v6":[{"cidr":"2001:db8:1234:1a00::/64"}]}"#,
            &event
        ));
        assert!(!matches(r#"{"n":[{"cidr":"0.0.0.0/0"}]}"#, &event));
    }

    #[test]
    fn or_branches_are_alternatives_anded_with_their_siblings() {
        let pattern = r#"{"s":["x"],"d":{"$or":[{"a":[1]},{"b":[2]}]}}"#;
        assert!(matches(pattern, &json!({"s": "x", "d": {"b": 2}})));
        assert!(!matches(pattern, &json!({"s": "y", "d": {"b": 2}})));
        assert!(!matches(pattern, &json!({"s": "x", "d": {"b": 3}})));
    }

    #[test]
    fn paths_are_dot_joined_in_patterns_and_events() {
        let nested = r#"{"detail":{"state":{"status":["running"]}}}"#;
        let joined = r#"{"detail":{"state.status":["running"]}}"#;
        for pattern in [nested, joined] {
            assert!(matches(
                pattern,
                &json!({"detail": {"state": {"status": "running"}}})
            ));
            assert!(matches(
                pattern,
                &json!({"detail": {"state.status": "running"}})
            ));
        }
    }

    #[test]
    fn empty_keys_are_names_like_any_other() {
        let event = json!({"": {"b": 1}, "a": {"": "x"}});
        assert!(matches(r#"{"":{"b":[1]}}"#, &event));
        assert!(matches(r#"{"a":{"":["x"]}}"#, &event));
        assert!(!matches(r#"{"b":[1]}"#, &event));
    }

    #[test]
    fn the_last_duplicate_field_wins() {
        let pattern = r#"{"a":[{"prefix":"us-"}],"a":[{"anything-but":"us-east"}]}"#;
        assert!(matches(pattern, &json!({"a": "eu-central-1"})));
    }

    #[test]
    fn fields_from_different_array_elements_do_not_combine() {
        let event = json!({"employees": [
            {"firstName": "Anna", "lastName": "Smith"},
            {"firstName": "Peter", "lastName": "Jones"}
        ]});
        assert!(!matches(
            r#"{"employees":{"firstName":["Anna"],"lastName":["Jones"]}}"#,
            &event
        ));
        assert!(matches(
            r#"{"employees":{"firstName":["Peter"],"lastName":["Jones"]}}"#,
            &event
        ));
    }

    #[test]
    fn array_values_match_when_any_element_does() {
        let event = json!({"resources": ["a", "b"], "empty": []});
        assert!(matches(r#"{"resources":["b","c"]}"#, &event));
        assert!(!matches(r#"{"resources":["c"]}"#, &event));
        assert!(!matches(r#"{"empty":[null]}"#, &event));
    }
}
