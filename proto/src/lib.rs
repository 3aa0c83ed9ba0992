//! Generated code for the `shoal.v1` gRPC API, and its file descriptor set for reflection.

#![allow(clippy::all, missing_docs)]

pub mod v1 {
    tonic::include_proto!("shoal.v1");
}

/// Encoded `FileDescriptorSet` of every `shoal.v1` proto, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("shoal_descriptor");
