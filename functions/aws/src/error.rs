//! Vendor errors as domain errors. What the SDK still reports after its own retries is either
//! transient (throttled, timed out, a 5xx, a connection that broke) and becomes
//! `StoreError::Unavailable`, or it is a fault nothing will repair and becomes `Unexpected`.
//! Condition failures are not handled here: what they mean depends on the write.

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use busway_core::ports::StoreError;

/// Error codes of DynamoDB, S3 and API Gateway that say "not now" rather than "never".
const TRANSIENT_CODES: &[&str] = &[
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionConflictException",
    "TransactionInProgressException",
    "SlowDown",
    "RequestTimeout",
    "InternalError",
    // API Gateway's throttling.
    "TooManyRequestsException",
];

/// Why a transaction was cancelled, when trying again later may succeed (the
/// `CancellationReasons` codes of TransactWriteItems).
pub const TRANSIENT_CANCELLATIONS: &[&str] = &[
    "TransactionConflict",
    "ThrottlingError",
    "ProvisionedThroughputExceeded",
    "RequestLimitExceeded",
];

/// Whether the call may succeed when made again later. DynamoDB's and S3's clients share the
/// smithy HTTP response type.
pub fn is_transient<E: ProvideErrorMetadata>(err: &SdkError<E, HttpResponse>) -> bool {
    match err {
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => true,
        SdkError::DispatchFailure(failure) => failure.is_io() || failure.is_timeout(),
        SdkError::ServiceError(context) => {
            context.raw().status().is_server_error()
                || context
                    .err()
                    .code()
                    .is_some_and(|code| TRANSIENT_CODES.contains(&code))
        }
        _ => false,
    }
}

/// `op` names the call in the message, as `.context` does elsewhere.
pub fn store_error<E>(op: &str, err: SdkError<E, HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    if is_transient(&err) {
        StoreError::Unavailable(format!("{op}: {}", DisplayErrorContext(&err)))
    } else {
        StoreError::Unexpected(anyhow::Error::new(err).context(op.to_string()))
    }
}
