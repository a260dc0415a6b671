//! Stride's gRPC contracts, generated from `proto/stride.proto` at build time.
//!
//! Business logic never sees these structs: [`convert`] turns them into `stride-core` types at
//! the edge.

#[allow(clippy::all, clippy::unwrap_used, missing_docs)]
pub mod v1 {
    tonic::include_proto!("stride.v1");
}

pub mod convert;
pub mod tls;

pub use v1::*;
