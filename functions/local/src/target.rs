//! The targets a subscription delivers to (HTTPS, the Lambda Invoke API, an embedded queue, an
//! SQS-API queue), one attempt of one event each, and how an attempt's failure is classified:
//! whether another attempt may succeed, and whether the target is struggling (it timed out,
//! refused the connection or asked to slow down), which its subscription's flow control reads.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use busway_core::deploy::ConsumerDeploy;
use busway_core::subscription::ConsumerConnection;
use busway_core::webhook::{self, SigningSecrets};

use crate::delivery::DeliveryConfig;
use crate::eventlog::Logged;
use crate::store::SqliteStore;

/// Where a subscription's events go.
#[derive(Debug)]
pub enum Target {
    /// Signed with the subscription's secrets (Standard Webhooks).
    Http {
        url: reqwest::Url,
        subscription_id: String,
    },
    Lambda {
        invoke_url: reqwest::Url,
    },
    Queue {
        name: String,
    },
    Sqs(SqsQueue),
}

/// A queue on an SQS-API server, addressed by its ARN; its URL is looked up once.
#[derive(Debug)]
pub struct SqsQueue {
    client: aws_sdk_sqs::Client,
    name: String,
    account: String,
    url: tokio::sync::OnceCell<String>,
}

impl SqsQueue {
    fn new(endpoint: &str, arn: &str) -> anyhow::Result<Self> {
        // arn:aws:sqs:{region}:{account}:{name}
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let [_, _, _, region, account, name] = parts[..] else {
            bail!("not an SQS queue ARN: {arn}");
        };
        let key = std::env::var("AWS_ACCESS_KEY_ID").unwrap_or_else(|_| "test".into());
        let secret = std::env::var("AWS_SECRET_ACCESS_KEY").unwrap_or_else(|_| "test".into());
        let config = aws_sdk_sqs::Config::builder()
            .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
            .region(aws_sdk_sqs::config::Region::new(region.to_string()))
            .endpoint_url(endpoint)
            // Every call ends: an attempt after 5 s (as API destinations), the call with its
            // SDK retries after 15 s; the delivery's own retries follow the subscription's policy.
            .timeout_config(
                aws_sdk_sqs::config::timeout::TimeoutConfig::builder()
                    .operation_attempt_timeout(Duration::from_secs(5))
                    .operation_timeout(Duration::from_secs(15))
                    .build(),
            )
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                key, secret, None, None, "busway",
            ))
            .build();
        Ok(Self {
            client: aws_sdk_sqs::Client::from_conf(config),
            name: name.to_string(),
            account: account.to_string(),
            url: tokio::sync::OnceCell::new(),
        })
    }

    /// SendMessageBatch in tens; a failed entry is retried, the others are not sent again.
    async fn send(&self, events: &[Logged]) -> Vec<Result<(), AttemptError>> {
        let url = match self
            .url
            .get_or_try_init(|| async {
                let found = self
                    .client
                    .get_queue_url()
                    .queue_name(&self.name)
                    .queue_owner_aws_account_id(&self.account)
                    .send()
                    .await;
                found
                    .map_err(|e| {
                        format!(
                            "queue {} not found: {}",
                            self.name,
                            aws_sdk_sqs::error::DisplayErrorContext(e)
                        )
                    })?
                    .queue_url
                    .ok_or_else(|| format!("queue {} has no URL", self.name))
            })
            .await
        {
            Ok(url) => url.clone(),
            Err(e) => {
                return events
                    .iter()
                    .map(|_| Err(AttemptError::retryable(e.clone())))
                    .collect();
            }
        };
        let mut results = Vec::with_capacity(events.len());
        for chunk in events.chunks(10) {
            let entries: Result<Vec<_>, _> = chunk
                .iter()
                .enumerate()
                .map(|(i, e)| {
                    aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(e.json.as_ref())
                        .build()
                })
                .collect();
            let sent = match entries {
                Ok(entries) => {
                    self.client
                        .send_message_batch()
                        .queue_url(&url)
                        .set_entries(Some(entries))
                        .send()
                        .await
                }
                Err(e) => {
                    results.extend(
                        chunk
                            .iter()
                            .map(|_| Err(AttemptError::fatal(e.to_string()))),
                    );
                    continue;
                }
            };
            match sent {
                Ok(out) => {
                    let failed: HashMap<String, String> = out
                        .failed()
                        .iter()
                        .map(|f| {
                            (
                                f.id().to_string(),
                                format!("{}: {}", f.code(), f.message().unwrap_or_default()),
                            )
                        })
                        .collect();
                    results.extend((0..chunk.len()).map(|i| match failed.get(&i.to_string()) {
                        Some(error) => Err(AttemptError::retryable(format!(
                            "SendMessageBatch entry failed: {error}"
                        ))),
                        None => Ok(()),
                    }));
                }
                Err(e) => {
                    let message = format!(
                        "SendMessageBatch failed: {}",
                        aws_sdk_sqs::error::DisplayErrorContext(e)
                    );
                    results.extend(
                        chunk
                            .iter()
                            .map(|_| Err(AttemptError::retryable(message.clone()))),
                    );
                }
            }
        }
        results
    }
}

impl Target {
    pub fn new(doc: &ConsumerDeploy, config: &DeliveryConfig) -> anyhow::Result<Self> {
        match doc.connection_type {
            ConsumerConnection::Https => Ok(Self::Http {
                url: doc
                    .connection_string
                    .parse()
                    .context("connection string is not a URL")?,
                subscription_id: doc.subscription_id.clone(),
            }),
            ConsumerConnection::Lambda => {
                let Some(endpoint) = &config.lambda_endpoint else {
                    bail!(
                        "LAMBDA subscriptions need a Lambda Invoke API endpoint on this machine: start busway with \
                         `busway up --lambda-endpoint http://127.0.0.1:9000` (the address `cargo lambda watch` serves)"
                    );
                };
                // arn:aws:lambda:{region}:{account}:function:{name}[:{qualifier}]
                let mut parts = doc.connection_string.splitn(8, ':').skip(6);
                let name = parts
                    .next()
                    .ok_or_else(|| anyhow!("not a Lambda function ARN"))?;
                let mut url: reqwest::Url = format!(
                    "{}/2015-03-31/functions/{name}/invocations",
                    endpoint.trim_end_matches('/')
                )
                .parse()
                .context("--lambda-endpoint is not a URL")?;
                if let Some(qualifier) = parts.next() {
                    url.query_pairs_mut().append_pair("Qualifier", qualifier);
                }
                Ok(Self::Lambda { invoke_url: url })
            }
            ConsumerConnection::Sqs => match &config.sqs_endpoint {
                Some(endpoint) => Ok(Self::Sqs(SqsQueue::new(endpoint, &doc.connection_string)?)),
                None => {
                    let name = embedded_queue_name(&doc.connection_string)
                        .ok_or_else(|| anyhow!("not an SQS queue ARN"))?;
                    Ok(Self::Queue { name: name.into() })
                }
            },
        }
    }
}

/// The embedded queue an SQS ARN delivers into without `--sqs-endpoint`: its last part only,
/// so ARNs of other accounts or regions with that name share it.
pub fn embedded_queue_name(arn: &str) -> Option<&str> {
    ConsumerConnection::Sqs
        .target_in_account(arn)
        .map(|(_, name)| name)
}

/// The deployed SQS rules whose ARN names embedded queue `name`.
pub async fn rules_into_queue(
    store: &SqliteStore,
    name: &str,
) -> Result<Vec<ConsumerDeploy>, busway_core::ports::StoreError> {
    Ok(store
        .rules()
        .await?
        .into_iter()
        .filter_map(|(_, doc)| serde_json::from_value::<ConsumerDeploy>(doc).ok())
        .filter(|doc| {
            doc.connection_type == ConsumerConnection::Sqs
                && embedded_queue_name(&doc.connection_string) == Some(name)
        })
        .collect())
}

/// Why one attempt failed, whether another attempt may succeed, and whether the target is
/// struggling.
#[derive(Debug)]
pub struct AttemptError {
    pub message: String,
    pub retryable: bool,
    /// The target timed out, refused the connection or answered 429/503: its subscription
    /// sends less until it recovers.
    pub congestion: bool,
    /// The wait the target asked for (`Retry-After`).
    pub retry_after: Option<Duration>,
}

impl AttemptError {
    fn retryable(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
            congestion: false,
            retry_after: None,
        }
    }
    fn fatal(message: impl Into<String>) -> Self {
        Self {
            retryable: false,
            ..Self::retryable(message)
        }
    }
    fn congestion(message: impl Into<String>, retry_after: Option<Duration>) -> Self {
        Self {
            congestion: true,
            retry_after,
            ..Self::retryable(message)
        }
    }
}

/// The shared SSRF guard (`busway_core::ssrf`), as an attempt's outcome.
fn ssrf_error(refused: &busway_core::ssrf::Refused) -> AttemptError {
    match refused {
        busway_core::ssrf::Refused::Never(why) => AttemptError::fatal(why.clone()),
        busway_core::ssrf::Refused::NotNow(why) => AttemptError::retryable(why.clone()),
    }
}

fn classify(
    status: reqwest::StatusCode,
    retry_after: Option<Duration>,
) -> Result<(), AttemptError> {
    use reqwest::StatusCode;
    let message = || format!("target answered {status}");
    if status.is_success() {
        Ok(())
    } else if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        Err(AttemptError::congestion(message(), retry_after))
    } else if status == StatusCode::REQUEST_TIMEOUT || status.is_server_error() {
        Err(AttemptError::retryable(message()))
    } else {
        Err(AttemptError::fatal(message()))
    }
}

/// `Retry-After` in seconds (the form targets use for throttling); an HTTP date is ignored and
/// the subscription's own backoff applies.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()
        .map(Duration::from_secs)
}

fn request_error(e: reqwest::Error) -> AttemptError {
    if let Some(refused) = busway_core::ssrf::refusal(&e) {
        ssrf_error(refused)
    } else if e.is_timeout() {
        AttemptError::congestion(
            format!("timed out: {}", busway_core::ssrf::describe(e)),
            None,
        )
    } else if e.is_connect() {
        AttemptError::congestion(
            format!("connection failed: {}", busway_core::ssrf::describe(e)),
            None,
        )
    } else {
        AttemptError::retryable(format!(
            "request failed: {}",
            busway_core::ssrf::describe(e)
        ))
    }
}

/// Makes single attempts: keep-alive HTTP clients, the store for embedded queues.
pub struct Client {
    /// HTTPS subscriptions' targets, held to the SSRF guard when their names resolve.
    http: reqwest::Client,
    /// The Lambda Invoke API the operator configured (`--lambda-endpoint`), which may be on a
    /// private network.
    lambda: reqwest::Client,
    store: SqliteStore,
    timeout: Duration,
}

impl Client {
    pub fn new(store: SqliteStore, config: &DeliveryConfig) -> anyhow::Result<Self> {
        let builder = || {
            reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                // One request per attempt: the subscription's policy retries. reqwest's own
                // retries (of HTTP/2 refusals, which this HTTP/1.1 client never gets) would
                // clone every request in case.
                .retry(reqwest::retry::never().max_retries_per_request(0))
                .user_agent(concat!("busway/", env!("CARGO_PKG_VERSION")))
                // Connections are kept and reused; a target's idle ones close after a while.
                .pool_idle_timeout(Duration::from_secs(90))
                .connect_timeout(config.timeout)
        };
        Ok(Self {
            http: builder()
                .dns_resolver(Arc::new(busway_core::ssrf::PublicResolver))
                // Through a proxy from the environment, the resolver would check the proxy's
                // address, not the target's.
                .no_proxy()
                .build()
                .context("building the HTTP client")?,
            lambda: builder().build().context("building the HTTP client")?,
            store,
            timeout: config.timeout,
        })
    }

    /// One attempt to deliver one event.
    pub async fn attempt(&self, target: &Target, event: &Logged) -> Result<(), AttemptError> {
        match target {
            Target::Queue { name } => self
                .store
                .send_messages(name, vec![event.json.to_string()])
                .await
                .map_err(|e| AttemptError::retryable(format!("queue write failed: {e}"))),
            Target::Sqs(queue) => queue
                .send(std::slice::from_ref(event))
                .await
                .pop()
                .unwrap_or_else(|| {
                    Err(AttemptError::retryable("SendMessageBatch answered nothing"))
                }),
            Target::Http {
                url,
                subscription_id,
            } => {
                busway_core::ssrf::check(url).map_err(|refused| ssrf_error(&refused))?;
                let headers = self.signature(subscription_id, event).await?;
                self.post(url, event, headers, false).await
            }
            Target::Lambda { invoke_url } => self.post(invoke_url, event, Vec::new(), true).await,
        }
    }

    /// The Standard Webhooks headers of one attempt: the event's id (the same on every attempt),
    /// now, and a signature per valid secret of the subscription.
    async fn signature(
        &self,
        subscription_id: &str,
        event: &Logged,
    ) -> Result<Vec<(&'static str, String)>, AttemptError> {
        let secrets = self
            .store
            .signing_secrets(subscription_id)
            .await
            .map_err(|e| AttemptError::retryable(format!("reading the signing secrets: {e}")))?;
        if secrets.is_empty() {
            return Ok(Vec::new());
        }
        #[derive(serde::Deserialize)]
        struct Id<'a> {
            id: &'a str,
        }
        let id = serde_json::from_str::<Id>(&event.json)
            .map(|e| e.id.to_string())
            .unwrap_or_else(|_| event.seq.to_string());
        let now = busway_core::now();
        let signature = webhook::signature_header(&secrets, now, &id, event.json.as_bytes())
            .map_err(AttemptError::fatal)?;
        Ok(vec![
            (webhook::ID_HEADER, id),
            (webhook::TIMESTAMP_HEADER, now.unix_timestamp().to_string()),
            (webhook::SIGNATURE_HEADER, signature),
        ])
    }

    async fn post(
        &self,
        url: &reqwest::Url,
        event: &Logged,
        headers: Vec<(&'static str, String)>,
        lambda: bool,
    ) -> Result<(), AttemptError> {
        let client = if lambda { &self.lambda } else { &self.http };
        let mut request = client.post(url.clone());
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let response = request
            .header("content-type", "application/json")
            .body(event.json.to_string())
            .timeout(self.timeout)
            .send()
            .await
            .map_err(request_error)?;
        classify(response.status(), retry_after(response.headers()))?;
        if lambda && let Some(kind) = response.headers().get("x-amz-function-error") {
            let kind = kind.to_str().unwrap_or("Unhandled").to_string();
            let body = response.text().await.unwrap_or_default();
            return Err(AttemptError::retryable(format!(
                "function error {kind}: {}",
                truncate(&body, 512)
            )));
        }
        Ok(())
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_read_in_seconds() {
        let mut headers = reqwest::header::HeaderMap::new();
        assert_eq!(retry_after(&headers), None);
        headers.insert(reqwest::header::RETRY_AFTER, " 7".parse().expect("a value"));
        assert_eq!(retry_after(&headers), Some(Duration::from_secs(7)));
        headers.insert(
            reqwest::header::RETRY_AFTER,
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().expect("a value"),
        );
        assert_eq!(retry_after(&headers), None);
    }

    #[test]
    fn only_throttling_timeouts_and_server_errors_are_retried() {
        use reqwest::StatusCode;
        assert!(classify(StatusCode::OK, None).is_ok());
        for retry in [
            StatusCode::INTERNAL_SERVER_ERROR,
            StatusCode::BAD_GATEWAY,
            StatusCode::REQUEST_TIMEOUT,
        ] {
            assert!(
                classify(retry, None).is_err_and(|e| e.retryable && !e.congestion),
                "{retry}"
            );
        }
        for slow_down in [
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::SERVICE_UNAVAILABLE,
        ] {
            let wait = Some(Duration::from_secs(3));
            assert!(
                classify(slow_down, wait)
                    .is_err_and(|e| e.retryable && e.congestion && e.retry_after == wait),
                "{slow_down}"
            );
        }
        for fatal in [
            StatusCode::BAD_REQUEST,
            StatusCode::NOT_FOUND,
            StatusCode::UNAUTHORIZED,
        ] {
            assert!(
                classify(fatal, None).is_err_and(|e| !e.retryable),
                "{fatal}"
            );
        }
    }
}
