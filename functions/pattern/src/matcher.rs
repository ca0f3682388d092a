//! The leaf conditions of a pattern and how each one tests one event value.

use std::net::IpAddr;

use crate::event::Scalar;
use crate::number::Num;

/// A literal value in a pattern array.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Literal {
    Str(String),
    Num(Num),
    Bool(bool),
    Null,
}

/// One element of a pattern array. A field matches when any of its matchers does.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Matcher {
    Exact(Literal),
    Prefix(String),
    Suffix(String),
    /// Case-folded text (see [`fold`]).
    PrefixIgnoreCase(String),
    SuffixIgnoreCase(String),
    EqualsIgnoreCase(String),
    Wildcard(Wildcard),
    Numeric(Range),
    /// `exists: true`; `exists: false` is not a value test and lives on the field.
    Exists,
    Cidr(Cidr),
    /// Matches a present value that none of the inner matchers match. The inner
    /// matchers are only `Exact`, `Prefix`, `Suffix`, `EqualsIgnoreCase` and `Wildcard`.
    AnythingBut(Vec<Matcher>),
}

impl Matcher {
    pub(crate) fn matches(&self, value: &Scalar<'_>) -> bool {
        match self {
            Matcher::Exact(literal) => literal_matches(literal, value),
            Matcher::Prefix(prefix) => value
                .as_str()
                .is_some_and(|s| s.starts_with(prefix.as_str())),
            Matcher::Suffix(suffix) => value.as_str().is_some_and(|s| s.ends_with(suffix.as_str())),
            Matcher::PrefixIgnoreCase(prefix) => value
                .as_str()
                .is_some_and(|s| fold(s).starts_with(prefix.as_str())),
            Matcher::SuffixIgnoreCase(suffix) => value
                .as_str()
                .is_some_and(|s| fold(s).ends_with(suffix.as_str())),
            Matcher::EqualsIgnoreCase(text) => value.as_str().is_some_and(|s| fold(s) == *text),
            Matcher::Wildcard(wildcard) => value.as_str().is_some_and(|s| wildcard.matches(s)),
            Matcher::Numeric(range) => value.number().is_some_and(|n| range.contains(n)),
            Matcher::Exists => true,
            Matcher::Cidr(cidr) => value
                .as_str()
                .and_then(|s| s.parse::<IpAddr>().ok())
                .is_some_and(|ip| cidr.contains(ip)),
            Matcher::AnythingBut(inner) => !inner.iter().any(|m| m.matches(value)),
        }
    }
}

/// A literal matches the same JSON type with the same value; numbers match when their
/// comparable values are equal or their texts are identical (event-ruler adds both).
fn literal_matches(literal: &Literal, value: &Scalar<'_>) -> bool {
    match (literal, value) {
        (Literal::Str(a), Scalar::Str(b)) => a == b,
        (Literal::Num(a), Scalar::Num(b)) => {
            a.text == b.text || matches!((a.value, b.value), (Some(x), Some(y)) if x == y)
        }
        (Literal::Bool(a), Scalar::Bool(b)) => a == b,
        (Literal::Null, Scalar::Null) => true,
        _ => false,
    }
}

/// Case folding for the `equals-ignore-case` family: each character maps to its simple
/// lower-case form. event-ruler compares character by character (no expansion such as
/// `ß` to `ss`), so a character whose lower case is several characters is kept as is.
pub(crate) fn fold(text: &str) -> String {
    text.chars().map(fold_char).collect()
}

fn fold_char(c: char) -> char {
    if c.is_ascii() {
        return c.to_ascii_lowercase();
    }
    let mut lower = c.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(single), None) => single,
        _ => c,
    }
}

/// A `wildcard` value split at its unescaped `*`s: `parts[0] * parts[1] * ...`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Wildcard {
    pub(crate) parts: Vec<String>,
}

impl Wildcard {
    /// Greedy leftmost matching is exact for patterns whose only operator is `*`, and
    /// runs in time linear in the value times the pattern.
    pub(crate) fn matches(&self, text: &str) -> bool {
        let Some((first, rest)) = self.parts.split_first() else {
            return text.is_empty();
        };
        let Some(mut remaining) = text.strip_prefix(first.as_str()) else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            return remaining.is_empty();
        };
        for part in middle {
            match remaining.find(part.as_str()) {
                Some(at) => remaining = &remaining[at + part.len()..],
                None => return false,
            }
        }
        remaining.ends_with(last.as_str())
    }
}

/// A numeric condition: optional lower and upper bounds, each inclusive or not.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Range {
    pub(crate) low: Option<Bound>,
    pub(crate) high: Option<Bound>,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Bound {
    pub(crate) value: f64,
    pub(crate) inclusive: bool,
}

impl Range {
    pub(crate) fn contains(&self, n: f64) -> bool {
        let above = match self.low {
            Some(b) if b.inclusive => n >= b.value,
            Some(b) => n > b.value,
            None => true,
        };
        let below = match self.high {
            Some(b) if b.inclusive => n <= b.value,
            Some(b) => n < b.value,
            None => true,
        };
        above && below
    }
}

/// An IPv4 or IPv6 network. IPv4 addresses never fall in an IPv6 network, nor the
/// reverse, as in event-ruler, which compares the address bytes of one family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Cidr {
    pub(crate) v6: bool,
    pub(crate) bits: u8,
    pub(crate) network: u128,
}

impl Cidr {
    pub(crate) fn new(ip: IpAddr, bits: u8) -> Cidr {
        let (v6, raw) = address_bits(ip);
        Cidr {
            v6,
            bits,
            network: mask(raw, v6, bits),
        }
    }

    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        let (v6, raw) = address_bits(ip);
        v6 == self.v6 && mask(raw, v6, self.bits) == self.network
    }
}

pub(crate) fn address_bits(ip: IpAddr) -> (bool, u128) {
    match ip {
        IpAddr::V4(v4) => (false, u128::from(u32::from(v4))),
        IpAddr::V6(v6) => (true, u128::from(v6)),
    }
}

/// Keeps the top `bits` bits of an address of the family's width.
pub(crate) fn mask(raw: u128, v6: bool, bits: u8) -> u128 {
    let width: u32 = if v6 { 128 } else { 32 };
    let bits = u32::from(bits).min(width);
    if bits == 0 {
        return 0;
    }
    let keep = u128::MAX << (128 - bits);
    let shifted = raw << (128 - width);
    (shifted & keep) >> (128 - width)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wildcard(parts: &[&str]) -> Wildcard {
        Wildcard {
            parts: parts.iter().map(|p| (*p).to_owned()).collect(),
        }
    }

    #[test]
    fn wildcard_star_spans_slashes_and_may_be_empty() {
        let w = wildcard(&["/Users/", "/doc.txt"]);
        assert!(w.matches("/Users/a/b/c/doc.txt"));
        assert!(w.matches("/Users//doc.txt"));
        assert!(!w.matches("/Users/a/notdoc.txt2"));
    }

    #[test]
    fn wildcard_without_star_is_an_exact_match() {
        assert!(wildcard(&[""]).matches(""));
        assert!(!wildcard(&[""]).matches("x"));
        assert!(wildcard(&["abc"]).matches("abc"));
    }

    #[test]
    fn wildcard_overlapping_parts_do_not_share_characters() {
        let w = wildcard(&["a", "ba", "ab"]);
        assert!(!w.matches("abab"));
        assert!(w.matches("ababab"));
    }

    #[test]
    fn folding_is_per_character() {
        assert_eq!(fold("EventBridge"), "eventbridge");
        assert_eq!(fold("ÀÉ"), "àé");
        assert_eq!(fold("İ"), "İ");
    }

    #[test]
    fn cidr_masks_ipv4_and_ipv6() {
        let net = Cidr::new("10.0.0.0".parse().expect("ip"), 24);
        assert!(net.contains("10.0.0.255".parse().expect("ip")));
        assert!(!net.contains("10.0.1.0".parse().expect("ip")));
        let v6 = Cidr::new("2001:db8:1234:1a00::".parse().expect("ip"), 64);
        assert!(
            v6.contains(
                "2001:0db8:1234:1a00:0000:0000:0000:0001"
                    .parse()
                    .expect("ip")
            )
        );
        assert!(!v6.contains("10.0.0.1".parse().expect("ip")));
        let all = Cidr::new("1.2.3.4".parse().expect("ip"), 0);
        assert!(all.contains("200.1.1.1".parse().expect("ip")));
    }

    #[test]
    fn ranges_respect_inclusive_and_exclusive_bounds() {
        let r = Range {
            low: Some(Bound {
                value: 0.0,
                inclusive: false,
            }),
            high: Some(Bound {
                value: 5.0,
                inclusive: true,
            }),
        };
        assert!(!r.contains(0.0));
        assert!(r.contains(5.0));
        assert!(!r.contains(5.000_001));
    }
}
