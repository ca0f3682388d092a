//! Names that end up in S3 keys, URL paths, stack names and rule names. They are validated in
//! their constructors, so an unsafe name cannot exist past the edge.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a name or version was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error(
        "must match ^[a-z][a-z0-9_]{{1,62}}$ (2 to 63 characters: lowercase letters, digits, underscore; starting with a letter)"
    )]
    Invalid,
    #[error("must be an integer from 1")]
    InvalidVersion,
}

fn is_valid_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    (2..=63).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes[1..]
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            pub fn new(value: impl Into<String>) -> Result<Self, NameError> {
                let value = value.into();
                if is_valid_name(&value) {
                    Ok(Self(value))
                } else {
                    Err(NameError::Invalid)
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<String> for $name {
            type Error = NameError;
            fn try_from(value: String) -> Result<Self, NameError> {
                Self::new(value)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(s: &str) -> Result<Self, NameError> {
                Self::new(s)
            }
        }
    };
}

name_type!(
    /// The application that owns an event type; the bus `Source` is `busway.{application}`.
    Application
);
name_type!(
    /// A team: what owns event types, subscriptions and API keys.
    Team
);
name_type!(
    /// An event type such as `scanned_parcel`.
    EventTypeName
);
name_type!(
    /// The unit or department a consumer stands for; events carry it in
    /// `metadata.event_attributes.target`.
    TargetUnit
);

/// An event type's version: an integer from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Version(u32);

impl Version {
    pub const FIRST: Version = Version(1);

    pub fn new(value: u32) -> Result<Self, NameError> {
        if value >= 1 {
            Ok(Self(value))
        } else {
            Err(NameError::InvalidVersion)
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }

    pub fn next(self) -> Version {
        Version(self.0.saturating_add(1))
    }

    /// Versions arrive as `"1"` (the seed's subscription body, URL paths) or as `1`.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, NameError> {
        match value {
            serde_json::Value::Number(n) => n
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or(NameError::InvalidVersion)
                .and_then(Self::new),
            serde_json::Value::String(s) => s.parse(),
            _ => Err(NameError::InvalidVersion),
        }
    }
}

impl std::str::FromStr for Version {
    type Err = NameError;
    fn from_str(s: &str) -> Result<Self, NameError> {
        // Digits only: no sign, no whitespace, no leading zeros that would alias another path.
        if s.is_empty()
            || s.len() > 9
            || !s.bytes().all(|b| b.is_ascii_digit())
            || s.starts_with('0')
        {
            return Err(NameError::InvalidVersion);
        }
        s.parse::<u32>()
            .map_err(|_| NameError::InvalidVersion)
            .and_then(Self::new)
    }
}

impl TryFrom<u32> for Version {
    type Error = NameError;
    fn try_from(value: u32) -> Result<Self, NameError> {
        Self::new(value)
    }
}

impl From<Version> for u32 {
    fn from(value: Version) -> u32 {
        value.0
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_contract() {
        for ok in ["u2", "scanned_parcel", "demo", "a1_b2"] {
            assert!(EventTypeName::new(ok).is_ok(), "{ok}");
        }
        let too_long = "a".repeat(64);
        for bad in [
            "", "a", "U2", "2u", "_a", "a-b", "a/b", "a b", "../x", "é1", &too_long,
        ] {
            assert_eq!(TargetUnit::new(bad), Err(NameError::Invalid), "{bad}");
        }
        assert!(Application::new("a".repeat(63)).is_ok());
    }

    #[test]
    fn versions_are_positive_integers_without_aliases() {
        assert_eq!("1".parse::<Version>().map(Version::get), Ok(1));
        for bad in ["0", "01", "-1", "+1", " 1", "1.0", "", "99999999999"] {
            assert!(bad.parse::<Version>().is_err(), "{bad}");
        }
        assert_eq!(
            Version::from_json(&serde_json::json!(2)).map(Version::get),
            Ok(2)
        );
        assert_eq!(
            Version::from_json(&serde_json::json!("3")).map(Version::get),
            Ok(3)
        );
        assert!(Version::from_json(&serde_json::json!(1.5)).is_err());
        assert!(Version::from_json(&serde_json::json!(0)).is_err());
    }

    #[test]
    fn names_deserialize_only_when_valid() {
        assert!(serde_json::from_str::<EventTypeName>("\"ok_name\"").is_ok());
        assert!(serde_json::from_str::<EventTypeName>("\"../etc\"").is_err());
        assert!(serde_json::from_str::<Version>("0").is_err());
    }
}
