//! The integration suite, one test binary (one link instead of one per file): each
//! module is one area, run against the in-process cluster harness (`shoal_testkit`).
//! nextest still runs every test in a process of its own, so a module may set globals
//! (a tracing subscriber, environment variables) as if it were alone.

mod auth;
mod backup;
mod bad_input;
mod bad_reports;
mod core;
mod failover;
mod grpc_surface;
mod ha;
mod http_limits;
mod limits;
mod metrics;
mod model;
mod names;
mod paging;
mod receipts;
mod replication;
mod streaming;
mod tickets;
mod tls;
mod tracing;
mod uploads;
mod webserver;
