//! Tracker errors, and the one place they become gRPC statuses.

use tonic::Status;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unavailable(String),
    /// A cap was reached; the status carries a `retry-after` (seconds) hint.
    #[error("{0}")]
    ResourceExhausted(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl From<Error> for Status {
    fn from(e: Error) -> Status {
        match e {
            Error::NotFound(m) => Status::not_found(m),
            Error::AlreadyExists(m) => Status::already_exists(m),
            Error::InvalidArgument(m) => Status::invalid_argument(m),
            Error::FailedPrecondition(m) => Status::failed_precondition(m),
            Error::Unavailable(m) => Status::unavailable(m),
            Error::ResourceExhausted(m) => {
                let mut s = Status::resource_exhausted(m);
                s.metadata_mut()
                    .insert("retry-after", crate::uploads::RETRY_AFTER_SECS.into());
                s
            }
            Error::Store(e) => Status::internal(e.to_string()),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub fn bad_hash(s: &str) -> Result<shoal_common::hash::Hash> {
    s.parse()
        .map_err(|e: shoal_common::hash::BadHash| Error::InvalidArgument(e.to_string()))
}
