use tonic::Code;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{what}: {message}")]
    Rpc {
        what: String,
        code: Code,
        message: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("verification failed: {0}")]
    Verify(String),
    #[error("{0}")]
    Other(String),
}

impl ClientError {
    pub fn rpc(what: &str, s: tonic::Status) -> Self {
        let message = match s.code() {
            Code::Unavailable if s.message().is_empty() || s.message().contains("transport") => {
                format!("unreachable ({})", s.message())
            }
            _ => s.message().to_string(),
        };
        ClientError::Rpc {
            what: what.to_string(),
            code: s.code(),
            message,
        }
    }

    pub fn io(path: &std::path::Path, source: std::io::Error) -> Self {
        ClientError::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// The gRPC code behind the error, if it came from a call.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }
}
