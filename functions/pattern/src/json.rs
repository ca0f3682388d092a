//! A small JSON reader for pattern and event text.
//!
//! `serde_json` cannot be used for pattern text because EventBridge's answers depend on
//! details it throws away: the exact text of numbers (a pattern `[300]` also matches the
//! raw text `300`, even when the number cannot be compared numerically), duplicate keys
//! inside operator objects (which AWS rejects, while it lets a later duplicate *field*
//! win), and the Jackson error messages that AWS returns for text that is not JSON.
//!
//! [`Reader`] also reads events as a stream of tokens, so the matcher can skip the
//! parts of an event that no pattern names without building them.

use std::borrow::Cow;

/// A parsed JSON value that keeps number text and every object entry, in order.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Json {
    Null,
    Bool(bool),
    Number(String),
    String(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    /// The token name event-ruler puts into messages such as
    /// `Invalid member in numeric match: X` (Jackson's `getText()`).
    pub(crate) fn token_text(&self) -> String {
        match self {
            Json::Null => "null".to_owned(),
            Json::Bool(b) => b.to_string(),
            Json::Number(text) | Json::String(text) => text.clone(),
            Json::Array(_) => "[".to_owned(),
            Json::Object(_) => "{".to_owned(),
        }
    }
}

/// Nesting deeper than this is refused, as Jackson 2.15+ does, so that hostile input
/// cannot overflow the stack.
const MAX_DEPTH: usize = 1000;

const EXPECTED_VALUE: &str =
    "(JSON String, Number, Array, Object or token 'null', 'true' or 'false')";

/// Parses the first JSON value of `text`.
///
/// Like Jackson's streaming parser used by event-ruler, text after the first complete
/// value is not read when `allow_trailing` is set. Errors are Jackson's message texts,
/// without the `at [Source: ...]` location.
pub(crate) fn parse(text: &str, allow_trailing: bool) -> Result<Json, String> {
    let mut reader = Reader {
        bytes: text.as_bytes(),
        text,
        pos: 0,
        depth: 0,
    };
    reader.skip_ws();
    if reader.pos >= reader.bytes.len() {
        return Err("No content to map due to end-of-input".to_owned());
    }
    let value = reader.value()?;
    if !allow_trailing {
        reader.skip_ws();
        if let Some(c) = reader.peek_char() {
            return Err(format!(
                "Unexpected character ({}): expected end-of-input",
                char_desc(c)
            ));
        }
    }
    Ok(value)
}

pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
    text: &'a str,
    pos: usize,
    depth: usize,
}

/// Jackson's `_getCharDesc`.
fn char_desc(c: char) -> String {
    let code = u32::from(c);
    if c.is_control() {
        format!("(CTRL-CHAR, code {code})")
    } else if code > 255 {
        format!("'{c}' (code {code} / 0x{code:x})")
    } else {
        format!("'{c}' (code {code})")
    }
}

impl<'a> Reader<'a> {
    fn skip_ws(&mut self) {
        while let Some(&b) = self.bytes.get(self.pos) {
            if matches!(b, b' ' | b'\t' | b'\n' | b'\r') {
                self.pos += 1;
            } else {
                break;
            }
        }
    }

    fn peek_char(&self) -> Option<char> {
        self.text
            .get(self.pos..)
            .and_then(|rest| rest.chars().next())
    }

    fn unexpected(&self, what: &str) -> String {
        match self.peek_char() {
            Some(c) => format!("Unexpected character ({}): {what}", char_desc(c)),
            None => "Unexpected end-of-input".to_owned(),
        }
    }

    fn value(&mut self) -> Result<Json, String> {
        self.skip_ws();
        let Some(&b) = self.bytes.get(self.pos) else {
            return Err(format!(
                "Unexpected end-of-input: expected a value {EXPECTED_VALUE}"
            ));
        };
        match b {
            b'{' => self.nested(Self::object),
            b'[' => self.nested(Self::array),
            b'"' => {
                self.pos += 1;
                self.string().map(Json::String)
            }
            b'-' | b'0'..=b'9' => self.number(),
            b']' | b'}' | b',' | b':' => Err(self.unexpected("expected a value")),
            _ => self.keyword(),
        }
    }

    fn nested(&mut self, read: fn(&mut Self) -> Result<Json, String>) -> Result<Json, String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!(
                "Document nesting depth ({}) exceeds the maximum allowed ({MAX_DEPTH}, from `StreamReadConstraints.getMaxNestingDepth()`)",
                self.depth
            ));
        }
        self.pos += 1;
        let value = read(self);
        self.depth -= 1;
        value
    }

    /// `true`, `false`, `null`, or Jackson's "Unrecognized token" for anything else.
    fn keyword(&mut self) -> Result<Json, String> {
        let rest = &self.text[self.pos..];
        for (word, value) in [
            ("true", Json::Bool(true)),
            ("false", Json::Bool(false)),
            ("null", Json::Null),
        ] {
            if let Some(after) = rest.strip_prefix(word)
                && !after.chars().next().is_some_and(is_token_char)
            {
                self.pos += word.len();
                return Ok(value);
            }
        }
        let token: String = rest
            .chars()
            .take_while(|&c| is_token_char(c))
            .take(256)
            .collect();
        if token.is_empty() {
            return Err(self.unexpected("expected a valid value (JSON String, Number, Array, Object or token 'null', 'true' or 'false')"));
        }
        Err(format!(
            "Unrecognized token '{token}': was expecting {EXPECTED_VALUE}"
        ))
    }

    fn object(&mut self) -> Result<Json, String> {
        let mut entries = Vec::new();
        self.skip_ws();
        if self.bytes.get(self.pos) == Some(&b'}') {
            self.pos += 1;
            return Ok(Json::Object(entries));
        }
        loop {
            self.skip_ws();
            match self.bytes.get(self.pos) {
                Some(b'"') => self.pos += 1,
                Some(_) => {
                    return Err(self.unexpected("was expecting double-quote to start field name"));
                }
                None => {
                    return Err(
                        "Unexpected end-of-input: expected close marker for Object".to_owned()
                    );
                }
            }
            let key = self.string()?;
            self.skip_ws();
            if self.bytes.get(self.pos) != Some(&b':') {
                return Err(
                    self.unexpected("was expecting a colon to separate field name and value")
                );
            }
            self.pos += 1;
            let value = self.value()?;
            entries.push((key, value));
            self.skip_ws();
            match self.bytes.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Json::Object(entries));
                }
                Some(_) => {
                    return Err(self.unexpected("was expecting comma to separate Object entries"));
                }
                None => {
                    return Err(
                        "Unexpected end-of-input: expected close marker for Object".to_owned()
                    );
                }
            }
        }
    }

    fn array(&mut self) -> Result<Json, String> {
        let mut items = Vec::new();
        self.skip_ws();
        if self.bytes.get(self.pos) == Some(&b']') {
            self.pos += 1;
            return Ok(Json::Array(items));
        }
        loop {
            items.push(self.value()?);
            self.skip_ws();
            match self.bytes.get(self.pos) {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Json::Array(items));
                }
                Some(_) => {
                    return Err(self.unexpected("was expecting comma to separate Array entries"));
                }
                None => {
                    return Err(
                        "Unexpected end-of-input: expected close marker for Array".to_owned()
                    );
                }
            }
        }
    }

    /// Reads a string whose opening quote has been consumed.
    fn string(&mut self) -> Result<String, String> {
        self.string_cow().map(Cow::into_owned)
    }

    /// Reads a string whose opening quote has been consumed, borrowing it from the
    /// text when it has no escapes.
    fn string_cow(&mut self) -> Result<Cow<'a, str>, String> {
        let text = self.text;
        let start = self.pos;
        let rest = &self.bytes[start..];
        let stop = string_stop(rest);
        self.pos += stop;
        if rest.get(stop) == Some(&b'"') {
            self.pos += 1;
            return Ok(Cow::Borrowed(&text[start..self.pos - 1]));
        }
        let mut out = String::from(&text[start..self.pos]);
        loop {
            let start = self.pos;
            while let Some(&b) = self.bytes.get(self.pos) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.pos += 1;
            }
            out.push_str(&self.text[start..self.pos]);
            match self.bytes.get(self.pos) {
                None => {
                    return Err(
                        "Unexpected end-of-input: was expecting closing quote for a string value"
                            .to_owned(),
                    );
                }
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(Cow::Owned(out));
                }
                Some(b'\\') => {
                    self.pos += 1;
                    self.escape(&mut out)?;
                }
                Some(_) => {
                    return Err(format!(
                        "Illegal unquoted character ({}): has to be escaped using backslash to be included in string value",
                        self.peek_char().map(char_desc).unwrap_or_default()
                    ));
                }
            }
        }
    }

    fn escape(&mut self, out: &mut String) -> Result<(), String> {
        let Some(c) = self.peek_char() else {
            return Err("Unexpected end-of-input in character escape sequence".to_owned());
        };
        self.pos += c.len_utf8();
        let decoded = match c {
            '"' => '"',
            '\\' => '\\',
            '/' => '/',
            'b' => '\u{8}',
            'f' => '\u{c}',
            'n' => '\n',
            'r' => '\r',
            't' => '\t',
            'u' => {
                let high = self.hex4()?;
                if (0xD800..0xDC00).contains(&high) && self.text[self.pos..].starts_with("\\u") {
                    let save = self.pos;
                    self.pos += 2;
                    let low = self.hex4()?;
                    if (0xDC00..0xE000).contains(&low) {
                        let code = 0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00);
                        char::from_u32(code).unwrap_or(char::REPLACEMENT_CHARACTER)
                    } else {
                        self.pos = save;
                        char::REPLACEMENT_CHARACTER
                    }
                } else {
                    // A lone surrogate cannot live in a Rust string; Java would keep it,
                    // but no EventBridge answer depends on it.
                    char::from_u32(high).unwrap_or(char::REPLACEMENT_CHARACTER)
                }
            }
            other => {
                return Err(format!(
                    "Unrecognized character escape {}",
                    char_desc(other)
                ));
            }
        };
        out.push(decoded);
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self
            .text
            .get(self.pos..self.pos + 4)
            .ok_or_else(|| "Unexpected end-of-input within/between String entries".to_owned())?;
        let code = u32::from_str_radix(digits, 16).map_err(|_| {
            "Unexpected character: expected a hex-digit for character escape sequence".to_owned()
        })?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(
                "Unexpected character: expected a hex-digit for character escape sequence"
                    .to_owned(),
            );
        }
        self.pos += 4;
        Ok(code)
    }

    fn number(&mut self) -> Result<Json, String> {
        self.number_text().map(|text| Json::Number(text.to_owned()))
    }

    fn number_text(&mut self) -> Result<&'a str, String> {
        let start = self.pos;
        if self.bytes.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        let int_start = self.pos;
        self.digits();
        let int_len = self.pos - int_start;
        if int_len == 0 {
            let token: String = self.text[start..]
                .chars()
                .take_while(|&c| !c.is_whitespace() && !matches!(c, ',' | ']' | '}'))
                .take(256)
                .collect();
            return Err(format!(
                "Non-standard token '{token}': enable `JsonReadFeature.ALLOW_NON_NUMERIC_NUMBERS` to allow"
            ));
        }
        if int_len > 1 && self.bytes[int_start] == b'0' {
            return Err("Invalid numeric value: Leading zeroes not allowed".to_owned());
        }
        if self.bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            if self.digits() == 0 {
                return Err(self.unexpected("Decimal point not followed by a digit"));
            }
        }
        if matches!(self.bytes.get(self.pos), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.bytes.get(self.pos), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if self.digits() == 0 {
                return Err(self.unexpected("Exponent indicator not followed by a digit"));
            }
        }
        if let Some(c) = self.peek_char()
            && is_token_char(c)
        {
            return Err(format!(
                "Unexpected character ({}) in numeric value",
                char_desc(c)
            ));
        }
        Ok(&self.text[start..self.pos])
    }

    fn digits(&mut self) -> usize {
        let start = self.pos;
        while self.bytes.get(self.pos).is_some_and(u8::is_ascii_digit) {
            self.pos += 1;
        }
        self.pos - start
    }
}

/// The start of a value in a token stream: scalars are read whole, containers are
/// entered and then read with [`Reader::next_key`] or [`Reader::next_item`].
#[derive(Debug)]
pub(crate) enum Token<'a> {
    Object,
    Array,
    Str(Cow<'a, str>),
    Num(&'a str),
    Bool(bool),
    Null,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(text: &'a str) -> Reader<'a> {
        Reader {
            bytes: text.as_bytes(),
            text,
            pos: 0,
            depth: 0,
        }
    }

    fn enter(&mut self) -> Result<(), String> {
        self.depth += 1;
        self.pos += 1;
        if self.depth > MAX_DEPTH {
            return Err(format!(
                "Document nesting depth ({}) exceeds the maximum allowed ({MAX_DEPTH})",
                self.depth
            ));
        }
        Ok(())
    }

    /// Reads the next value's first token.
    pub(crate) fn token(&mut self) -> Result<Token<'a>, String> {
        self.skip_ws();
        match self.bytes.get(self.pos) {
            None => Err("Unexpected end-of-input: expected a value".to_owned()),
            Some(b'{') => self.enter().map(|()| Token::Object),
            Some(b'[') => self.enter().map(|()| Token::Array),
            Some(b'"') => {
                self.pos += 1;
                self.string_cow().map(Token::Str)
            }
            Some(b'-' | b'0'..=b'9') => self.number_text().map(Token::Num),
            Some(b']' | b'}' | b',' | b':') => Err(self.unexpected("expected a value")),
            Some(_) => match self.keyword()? {
                Json::Bool(b) => Ok(Token::Bool(b)),
                _ => Ok(Token::Null),
            },
        }
    }

    /// The next key of an entered object, or `None` at its end. `first` tells whether
    /// no key has been read yet.
    pub(crate) fn next_key(&mut self, first: &mut bool) -> Result<Option<Cow<'a, str>>, String> {
        self.skip_ws();
        match self.bytes.get(self.pos) {
            Some(b'}') => {
                self.pos += 1;
                self.depth -= 1;
                return Ok(None);
            }
            Some(b',') if !*first => {
                self.pos += 1;
                self.skip_ws();
            }
            Some(_) if *first => {}
            Some(_) => {
                return Err(self.unexpected("was expecting comma to separate Object entries"));
            }
            None => {
                return Err("Unexpected end-of-input: expected close marker for Object".to_owned());
            }
        }
        *first = false;
        if self.bytes.get(self.pos) != Some(&b'"') {
            return Err(self.unexpected("was expecting double-quote to start field name"));
        }
        self.pos += 1;
        let key = self.string_cow()?;
        self.skip_ws();
        if self.bytes.get(self.pos) != Some(&b':') {
            return Err(self.unexpected("was expecting a colon to separate field name and value"));
        }
        self.pos += 1;
        Ok(Some(key))
    }

    /// Whether an entered array has another item; consumes the separator or the end.
    pub(crate) fn next_item(&mut self, first: &mut bool) -> Result<bool, String> {
        self.skip_ws();
        match self.bytes.get(self.pos) {
            Some(b']') => {
                self.pos += 1;
                self.depth -= 1;
                Ok(false)
            }
            Some(b',') if !*first => {
                self.pos += 1;
                Ok(true)
            }
            Some(_) if *first => {
                *first = false;
                Ok(true)
            }
            Some(_) => Err(self.unexpected("was expecting comma to separate Array entries")),
            None => Err("Unexpected end-of-input: expected close marker for Array".to_owned()),
        }
    }

    /// Reads and checks the next value without keeping it.
    pub(crate) fn skip_value(&mut self) -> Result<(), String> {
        match self.token()? {
            Token::Object => {
                let mut first = true;
                while self.next_key(&mut first)?.is_some() {
                    self.skip_value()?;
                }
            }
            Token::Array => {
                let mut first = true;
                while self.next_item(&mut first)? {
                    self.skip_value()?;
                }
            }
            Token::Str(_) | Token::Num(_) | Token::Bool(_) | Token::Null => {}
        }
        Ok(())
    }

    /// Checks that nothing but whitespace follows.
    pub(crate) fn finish(&mut self) -> Result<(), String> {
        self.skip_ws();
        match self.peek_char() {
            Some(c) => Err(format!(
                "Unexpected character ({}): expected end-of-input",
                char_desc(c)
            )),
            None => Ok(()),
        }
    }
}

/// Index of the first byte that ends the plain run of a string: a quote, a backslash
/// or a control character (or the length). Event strings are mostly plain runs, so
/// they are scanned eight bytes at a time with the classic "has zero byte" and "has
/// byte less than" word tricks. Those can flag a byte wrongly only above a byte that
/// really matches (a borrow carries upwards), so the lowest flag is always exact.
fn string_stop(bytes: &[u8]) -> usize {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let mut at = 0;
    let mut words = bytes.chunks_exact(8);
    for chunk in &mut words {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        let w = u64::from_le_bytes(word);
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        let hits = ((quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (w.wrapping_sub(ONES * 0x20) & !w))
            & HIGHS;
        if hits != 0 {
            return at + (hits.trailing_zeros() / 8) as usize;
        }
        at += 8;
    }
    at + words
        .remainder()
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
        .unwrap_or(bytes.len() - at)
}

/// Characters Jackson keeps together when it reports an unrecognized token.
fn is_token_char(c: char) -> bool {
    c.is_alphanumeric() || c == '_' || c == '$'
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_keep_their_text() {
        assert_eq!(parse("300.0", false), Ok(Json::Number("300.0".to_owned())));
        assert_eq!(parse("-1e5", false), Ok(Json::Number("-1e5".to_owned())));
    }

    #[test]
    fn duplicate_keys_are_all_kept_in_order() {
        let parsed = parse(r#"{"a":1,"a":2}"#, false);
        assert_eq!(
            parsed,
            Ok(Json::Object(vec![
                ("a".to_owned(), Json::Number("1".to_owned())),
                ("a".to_owned(), Json::Number("2".to_owned())),
            ]))
        );
    }

    #[test]
    fn escapes_and_surrogate_pairs_are_decoded() {
        assert_eq!(
            parse(r#""a\"\\\/\n\u00e9\ud83d\ude00""#, false),
            Ok(Json::String("a\"\\/\né😀".to_owned()))
        );
    }

    #[test]
    fn bare_words_give_jacksons_unrecognized_token_message() {
        assert_eq!(
            parse("this is not json", false),
            Err(format!(
                "Unrecognized token 'this': was expecting {EXPECTED_VALUE}"
            ))
        );
    }

    #[test]
    fn single_quotes_give_jacksons_field_name_message() {
        assert_eq!(
            parse("{'bad': 1}", false),
            Err("Unexpected character (''' (code 39)): was expecting double-quote to start field name".to_owned())
        );
    }

    #[test]
    fn deep_nesting_is_refused_without_overflowing_the_stack() {
        let text = "[".repeat(100_000);
        assert!(parse(&text, false).is_err());
    }

    #[test]
    fn trailing_text_is_ignored_only_when_allowed() {
        assert!(parse("{} x", true).is_ok());
        assert!(parse("{} x", false).is_err());
    }

    #[test]
    fn the_word_scan_stops_at_the_first_quote_backslash_or_control_byte() {
        for text in [
            "",
            "abc",
            "abcdefgh",
            "abcdefghijklmnop",
            "é€😀 long enough text",
        ] {
            assert_eq!(string_stop(text.as_bytes()), text.len(), "{text}");
            for stop in ["\"", "\\\\", "\n", "\u{1f}"] {
                for at in 0..=text.len() {
                    if !text.is_char_boundary(at) {
                        continue;
                    }
                    let joined = format!("{}{stop}{}", &text[..at], &text[at..]);
                    assert_eq!(string_stop(joined.as_bytes()), at, "{joined:?}");
                }
            }
        }
    }

    #[test]
    fn leading_zeroes_are_rejected() {
        assert!(parse("01", false).is_err());
    }
}
