//! Subscriptions: a consumer's target unit and connection for one event version.

use serde::{Deserialize, Serialize};

use crate::{EventTypeName, TargetUnit, Team, Timestamp, Version};

/// The consumer deploy.json schema's limit, and more than any ARN or sane URL needs.
pub const MAX_CONNECTION_STRING: usize = 2048;

/// How a consumer receives events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConsumerConnection {
    #[serde(rename = "HTTPS")]
    Https,
    #[serde(rename = "LAMBDA")]
    Lambda,
    #[serde(rename = "SQS")]
    Sqs,
}

impl ConsumerConnection {
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "HTTPS" => Ok(Self::Https),
            "LAMBDA" => Ok(Self::Lambda),
            "SQS" => Ok(Self::Sqs),
            other => Err(format!(
                "unknown connection_type {other:?}: expected one of HTTPS, LAMBDA, SQS"
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Https => "HTTPS",
            Self::Lambda => "LAMBDA",
            Self::Sqs => "SQS",
        }
    }

    /// The account and the function or queue name of a LAMBDA or SQS target that passed
    /// `check_connection_string`; `None` for HTTPS.
    pub fn target_in_account(self, value: &str) -> Option<(&str, &str)> {
        let arn = match self {
            Self::Lambda => Arn::parse(value, "lambda").ok()?,
            Self::Sqs => Arn::parse(value, "sqs").ok()?,
            Self::Https => return None,
        };
        let name = match self {
            Self::Lambda => arn.resource.split(':').nth(1)?,
            _ => arn.resource,
        };
        Some((arn.account, name))
    }

    /// Checks that `value` is the kind of address this connection type delivers to.
    pub fn check_connection_string(self, value: &str) -> Result<(), String> {
        if value.len() > MAX_CONNECTION_STRING {
            return Err(format!(
                "must be at most {MAX_CONNECTION_STRING} characters"
            ));
        }
        match self {
            Self::Lambda => {
                let arn = Arn::parse(value, "lambda")?;
                let mut parts = arn.resource.splitn(3, ':');
                let (kind, name, qualifier) = (parts.next(), parts.next(), parts.next());
                if kind != Some("function") || !name.is_some_and(is_lambda_name) {
                    return Err("must be a Lambda function ARN: arn:aws:lambda:{region}:{account}:function:{name}".into());
                }
                if qualifier.is_some_and(|q| {
                    q.is_empty()
                        || q.len() > 128
                        || !q.bytes().all(|b| {
                            b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'$'
                        })
                }) {
                    return Err("has an invalid function qualifier".into());
                }
                Ok(())
            }
            Self::Sqs => {
                let arn = Arn::parse(value, "sqs")?;
                if !is_queue_name(arn.resource) {
                    return Err(
                        "must be an SQS queue ARN: arn:aws:sqs:{region}:{account}:{queue_name}"
                            .into(),
                    );
                }
                Ok(())
            }
            Self::Https => check_endpoint_url(value),
        }
    }
}

struct Arn<'a> {
    account: &'a str,
    resource: &'a str,
}

impl<'a> Arn<'a> {
    fn parse(value: &'a str, service: &str) -> Result<Self, String> {
        let expected =
            format!("must be an ARN of the form arn:aws:{service}:{{region}}:{{account}}:...");
        let mut parts = value.splitn(6, ':');
        let fields: Vec<&str> = parts.by_ref().take(5).collect();
        let resource = parts.next().ok_or_else(|| expected.clone())?;
        let [arn, partition, svc, region, account] = fields[..] else {
            return Err(expected);
        };
        let partition_ok = matches!(partition, "aws" | "aws-cn" | "aws-us-gov");
        let region_ok = !region.is_empty()
            && region
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        let account_ok = account.len() == 12 && account.bytes().all(|b| b.is_ascii_digit());
        if arn != "arn" || !partition_ok || svc != service || !region_ok || !account_ok {
            return Err(expected);
        }
        Ok(Self { account, resource })
    }
}

fn is_lambda_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn is_queue_name(name: &str) -> bool {
    let base = name.strip_suffix(".fifo").unwrap_or(name);
    (1..=80).contains(&name.len())
        && !base.is_empty()
        && base
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// HTTPS endpoints must be `https://`; plain `http://` is accepted only for loopback hosts, so a
/// developer can point a subscription at a consumer on their laptop.
fn check_endpoint_url(value: &str) -> Result<(), String> {
    let url = url::Url::parse(value).map_err(|e| format!("must be an absolute URL: {e}"))?;
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials in the URL".into());
    }
    let host = url.host().ok_or("must have a host")?;
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(&host) => Ok(()),
        "http" => Err("must use https (http is accepted only for loopback hosts)".into()),
        other => Err(format!("must use https, not {other}")),
    }
}

fn is_loopback(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => *d == "localhost",
        url::Host::Ipv4(ip) => ip.is_loopback(),
        url::Host::Ipv6(ip) => ip.is_loopback(),
    }
}

/// EventBridge's target retry policy: how often, and for how long, a failed delivery is retried
/// before the event goes to the dead-letter store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    pub maximum_retry_attempts: u32,
    pub maximum_event_age_seconds: u32,
}

impl RetryPolicy {
    /// EventBridge's limits for both fields.
    pub const ATTEMPTS: std::ops::RangeInclusive<u32> = 0..=185;
    pub const AGE_SECONDS: std::ops::RangeInclusive<u32> = 60..=86_400;

    pub fn new(
        maximum_retry_attempts: u32,
        maximum_event_age_seconds: u32,
    ) -> Result<Self, String> {
        if !Self::ATTEMPTS.contains(&maximum_retry_attempts) {
            return Err(format!(
                "maximum_retry_attempts must be from {} to {}",
                Self::ATTEMPTS.start(),
                Self::ATTEMPTS.end()
            ));
        }
        if !Self::AGE_SECONDS.contains(&maximum_event_age_seconds) {
            return Err(format!(
                "maximum_event_age_seconds must be from {} to {}",
                Self::AGE_SECONDS.start(),
                Self::AGE_SECONDS.end()
            ));
        }
        Ok(Self {
            maximum_retry_attempts,
            maximum_event_age_seconds,
        })
    }
}

/// EventBridge's defaults: 185 retries within 24 hours.
impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            maximum_retry_attempts: 185,
            maximum_event_age_seconds: 86_400,
        }
    }
}

/// How hard the local host may drive a subscription's target (on AWS, API destinations have
/// their own invocation rate limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeliverySettings {
    /// Attempts in flight at once; fewer while the target struggles.
    pub max_in_flight: u32,
    /// Attempts started per second at most; unlimited when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invocation_rate_limit_per_second: Option<u32>,
}

impl DeliverySettings {
    pub const MAX_IN_FLIGHT: std::ops::RangeInclusive<u32> = 1..=100;
    /// API destinations' range.
    pub const RATE: std::ops::RangeInclusive<u32> = 1..=300;

    pub fn new(max_in_flight: u32, rate: Option<u32>) -> Result<Self, String> {
        if !Self::MAX_IN_FLIGHT.contains(&max_in_flight) {
            return Err(format!(
                "max_in_flight must be from {} to {}",
                Self::MAX_IN_FLIGHT.start(),
                Self::MAX_IN_FLIGHT.end()
            ));
        }
        if rate.is_some_and(|r| !Self::RATE.contains(&r)) {
            return Err(format!(
                "invocation_rate_limit_per_second must be from {} to {}",
                Self::RATE.start(),
                Self::RATE.end()
            ));
        }
        Ok(Self {
            max_in_flight,
            invocation_rate_limit_per_second: rate,
        })
    }
}

/// Four in flight: a consumer that serves one request at a time (Python's `http.server`, a
/// one-worker container) queues at most five connections (`listen` backlog 5, socketserver's
/// default), so four requests plus the one it serves never overflow it, while a consumer that
/// answers in 2 ms still takes 2,000 events a second. Raise it for targets that scale.
impl Default for DeliverySettings {
    fn default() -> Self {
        Self {
            max_in_flight: 4,
            invocation_rate_limit_per_second: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SubscriptionState {
    Active,
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    pub event_type: EventTypeName,
    pub version: Version,
    pub target_unit: TargetUnit,
    pub connection_type: ConsumerConnection,
    pub connection_string: String,
    /// Subscriptions stored before retry policies existed get EventBridge's defaults.
    #[serde(default)]
    pub retry_policy: RetryPolicy,
    /// Subscriptions stored before delivery settings existed get the defaults.
    #[serde(default)]
    pub delivery: DeliverySettings,
    pub state: SubscriptionState,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: Timestamp,
    /// The team that made it; `None` for subscriptions made before ownership, which only
    /// platform admins manage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<Team>,
    /// Where its latest replay on the Custom Event Bus starts: its consumer stack's subscriber
    /// starts there. `None` when never replayed there (the local host replays with its cursor).
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        with = "time::serde::rfc3339::option"
    )]
    pub replay_from: Option<Timestamp>,
}

impl Subscription {
    /// Two subscriptions are the same when they would deliver the same events to the same place.
    pub fn same_target(&self, other: &Subscription) -> bool {
        self.event_type == other.event_type
            && self.version == other.version
            && self.target_unit == other.target_unit
            && self.connection_type == other.connection_type
            && self.connection_string == other.connection_string
    }
}

/// Filters of `GET /subscriptions`; `None` matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SubscriptionFilter {
    pub event_type: Option<EventTypeName>,
    pub version: Option<Version>,
    pub target_unit: Option<TargetUnit>,
}

impl SubscriptionFilter {
    pub fn accepts(&self, s: &Subscription) -> bool {
        self.event_type.as_ref().is_none_or(|e| *e == s.event_type)
            && self.version.is_none_or(|v| v == s.version)
            && self
                .target_unit
                .as_ref()
                .is_none_or(|t| *t == s.target_unit)
    }
}

#[cfg(test)]
mod tests {
    use super::ConsumerConnection::*;

    #[test]
    fn connection_strings_are_checked_by_type() {
        let ok = [
            (
                Lambda,
                "arn:aws:lambda:eu-west-1:123456789012:function:my-target-lambda-processor",
            ),
            (
                Lambda,
                "arn:aws:lambda:eu-west-1:123456789012:function:fn:live",
            ),
            (Sqs, "arn:aws:sqs:eu-west-1:123456789012:orders"),
            (Sqs, "arn:aws:sqs:eu-west-1:123456789012:orders.fifo"),
            (Https, "https://consumer.example.com/hooks/parcel"),
            (Https, "http://127.0.0.1:8080/hook"),
            (Https, "http://localhost:8080/hook"),
            (Https, "http://[::1]:8080/hook"),
        ];
        for (kind, value) in ok {
            assert_eq!(kind.check_connection_string(value), Ok(()), "{value}");
        }
        let bad = [
            (Lambda, "arn:aws:sqs:eu-west-1:123456789012:orders"),
            (Lambda, "arn:aws:lambda:eu-west-1:{ACCOUNT}:function:x"),
            (
                Lambda,
                "arn:aws:lambda:eu-west-1:123456789012:function:bad/name",
            ),
            (Sqs, "arn:aws:lambda:eu-west-1:123456789012:function:x"),
            (Sqs, "arn:aws:sqs:eu-west-1:123456789012:"),
            (
                Sqs,
                "https://sqs.eu-west-1.amazonaws.com/123456789012/orders",
            ),
            (Https, "http://consumer.example.com/hook"),
            (Https, "ftp://example.com"),
            (Https, "not a url"),
            (Https, "https://user:pw@example.com/"),
            (Https, &format!("https://example.com/{}", "a".repeat(2048))),
        ];
        for (kind, value) in bad {
            assert!(kind.check_connection_string(value).is_err(), "{value}");
        }
    }
}
