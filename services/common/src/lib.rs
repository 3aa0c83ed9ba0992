//! Code every shoal binary shares: configuration from the environment, telemetry,
//! gRPC server plumbing (health, reflection, transport tuning), content hashes,
//! name validation and shutdown. Nothing here knows about peers or files.

pub mod admin;
pub mod auth;
pub mod config;
pub mod grpc;
pub mod hash;
pub mod names;
pub mod rpcmetrics;
pub mod shutdown;
pub mod telemetry;
pub mod tls;
pub mod tracecontext;

/// Version reported by every binary and by `Discover`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Size of the messages chunk bytes travel in, on every stream.
pub const STREAM_MESSAGE_BYTES: usize = 256 * 1024;
