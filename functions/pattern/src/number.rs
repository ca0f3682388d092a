//! Numbers as event-ruler sees them: the raw text, plus a comparable value when the text
//! can be represented exactly.
//!
//! event-ruler compiles a number literal into two matchers, the raw text and a canonical
//! `ComparableNumber`; the latter exists only when `BigDecimal.valueOf(double)` equals
//! the written value, i.e. when the double's shortest decimal form has the same value as
//! the text. Numbers that fail that test (for example integers above 2^53 that round)
//! match by text only, and never satisfy a `numeric` condition.

/// A JSON number: its text and, when exact, its value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Num {
    pub(crate) text: String,
    pub(crate) value: Option<f64>,
}

impl Num {
    pub(crate) fn from_text(text: &str) -> Num {
        Num {
            text: text.to_owned(),
            value: comparable(text),
        }
    }
}

/// The value of `text` when it survives a round trip through `f64` unchanged.
pub(crate) fn comparable(text: &str) -> Option<f64> {
    let value: f64 = text.parse().ok()?;
    if !value.is_finite() {
        return None;
    }
    let written = decimal(text)?;
    let shortest = decimal(&format!("{value:e}"))?;
    (written == shortest).then_some(if value == 0.0 { 0.0 } else { value })
}

/// A decimal number reduced to sign, significant digits and exponent, so that two
/// spellings of one value compare equal (`300`, `300.0` and `3e2`).
fn decimal(text: &str) -> Option<(bool, String, i64)> {
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], unsigned[at + 1..].parse::<i64>().ok()?),
        None => (unsigned, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits: String = int_part.chars().chain(frac_part.chars()).collect();
    let leading = digits.len() - digits.trim_start_matches('0').len();
    let significant = digits.trim_matches('0');
    if significant.is_empty() {
        return Some((false, String::new(), 0));
    }
    // Value = 0.<significant> * 10^point.
    let frac_len = i64::try_from(frac_part.len()).ok()?;
    let digit_len = i64::try_from(digits.len()).ok()?;
    let leading = i64::try_from(leading).ok()?;
    let point = exponent.checked_add(digit_len - frac_len - leading)?;
    Some((negative, significant.to_owned(), point))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spellings_of_one_value_are_comparable_and_equal() {
        assert_eq!(comparable("300"), Some(300.0));
        assert_eq!(comparable("300.0"), Some(300.0));
        assert_eq!(comparable("3.0e2"), Some(300.0));
        assert_eq!(comparable("301.8"), Some(301.8));
        assert_eq!(comparable("-0"), Some(0.0));
    }

    #[test]
    fn numbers_that_round_in_a_double_are_not_comparable() {
        assert_eq!(comparable("9007199254740993"), None);
        assert_eq!(comparable("0.10000000000000000001"), None);
        assert_eq!(comparable("1e400"), None);
    }

    #[test]
    fn large_exact_integers_stay_comparable() {
        assert_eq!(comparable("123456789012"), Some(123_456_789_012.0));
        assert_eq!(
            comparable("9007199254740992"),
            Some(9_007_199_254_740_992.0)
        );
    }
}
