//! Pages of the portal's lists: `limit` (default [`DEFAULT_LIMIT`], at most [`MAX_LIMIT`]) and an
//! opaque `next_token` that continues after the last item of a page. Each store makes its own
//! position (a key of the list's order); the token only hides it, so a client passes it back as
//! it was given.

use crate::ValidationErrors;

pub const DEFAULT_LIMIT: usize = 50;
pub const MAX_LIMIT: usize = 100;

/// A page asked for: at most `limit` items after `after`, the position a store gave as `next`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: usize,
    pub after: Option<String>,
}

impl Default for PageRequest {
    fn default() -> Self {
        Self {
            limit: DEFAULT_LIMIT,
            after: None,
        }
    }
}

/// A page of items, and the position after its last one when more may follow. A store may
/// answer fewer than `limit` items (DynamoDB applies a filter after reading a page) and still
/// have more.
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub next: Option<String>,
}

impl PageRequest {
    /// Reads `limit` and `next_token` of a query string; each bad one is named.
    pub fn from_query(
        limit: Option<&str>,
        next_token: Option<&str>,
        errors: &mut ValidationErrors,
    ) -> Self {
        let mut page = Self::default();
        if let Some(limit) = limit {
            match limit.parse::<usize>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => page.limit = n,
                _ => errors.push("limit", format!("must be an integer from 1 to {MAX_LIMIT}")),
            }
        }
        if let Some(token) = next_token {
            match decode(token) {
                Some(after) => page.after = Some(after),
                None => errors.push("next_token", "is not a token this API gave"),
            }
        }
        page
    }
}

/// A store's position as the token a client sees.
pub fn encode(position: &str) -> String {
    hex::encode(position.as_bytes())
}

fn decode(token: &str) -> Option<String> {
    if token.is_empty() || !token.len().is_multiple_of(2) {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..token.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_gives_back_its_position_and_bad_input_is_named() {
        let mut errors = ValidationErrors::default();
        let token = encode("EVENT#parcel|7");
        let page = PageRequest::from_query(Some("10"), Some(&token), &mut errors);
        assert!(errors.is_empty());
        assert_eq!(page.limit, 10);
        assert_eq!(page.after.as_deref(), Some("EVENT#parcel|7"));

        let page = PageRequest::from_query(None, None, &mut errors);
        assert_eq!(page, PageRequest::default());

        for (limit, token) in [
            (Some("0"), None),
            (Some("101"), None),
            (None, Some("zz")),
            (None, Some("abc")),
        ] {
            let mut errors = ValidationErrors::default();
            PageRequest::from_query(limit, token, &mut errors);
            assert_eq!(errors.0.len(), 1, "{limit:?} {token:?}");
        }
    }
}
