//! Code every shoal binary shares: configuration from the environment, telemetry,
//! gRPC server plumbing (health, reflection, transport tuning), content hashes,
//! name validation and shutdown. Nothing here knows about peers or files.

pub mod admin;
pub mod auth;
pub mod bytestream;
pub mod config;
pub mod direct;
pub mod grpc;
pub mod hash;
pub mod names;
pub mod net;
pub mod rpcmetrics;
pub mod shutdown;
pub mod telemetry;
pub mod ticket;
pub mod tls;
pub mod tracecontext;

/// Version reported by every binary and by `Discover`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Size of the messages chunk bytes travel in, on every stream.
pub const STREAM_MESSAGE_BYTES: usize = 256 * 1024;

/// Read up to `n` bytes (fewer only at end of input) into a new buffer without zeroing
/// it first: chunk bytes stream in messages of this size, and zero-filling a fresh
/// buffer per message costs more CPU than the hashing.
pub fn read_message(r: &mut impl std::io::Read, n: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut buf = Vec::with_capacity(n);
    r.take(n as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    #[test]
    fn read_message_reads_whole_messages_then_the_tail() {
        let data: Vec<u8> = (0..1000u32).map(|i| i as u8).collect();
        let mut r = &data[..];
        let a = super::read_message(&mut r, 600).unwrap();
        let b = super::read_message(&mut r, 600).unwrap();
        let c = super::read_message(&mut r, 600).unwrap();
        assert_eq!((a.len(), b.len(), c.len()), (600, 400, 0));
        assert_eq!([a, b].concat(), data);
    }
}
