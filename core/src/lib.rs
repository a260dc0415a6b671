//! The domain of Stride, with no I/O.
//!
//! Everything a scheduler, gateway or agent must agree on lives here as plain data and pure
//! functions: path ids ([`path`]), Marathon's app definition with its JSON shape, defaults and
//! validation ([`app`], [`validation`], [`parse`]), instances and task ids ([`instance`]),
//! deployment plans and the scaling arithmetic ([`deployment`], [`scaling`]), offer matching
//! ([`matching`]), launch backoff ([`backoff`]), events ([`events`]) and the error codes every
//! service maps to HTTP and gRPC ([`error`]).
//!
//! Services depend on this crate; this crate depends on no service.

pub mod agent;
pub mod app;
pub mod backoff;
pub mod deployment;
pub mod duration;
pub mod error;
pub mod events;
pub mod group;
pub mod instance;
pub mod layers;
pub mod matching;
pub mod num;
pub mod parse;
pub mod path;
pub mod render;
pub mod rendezvous;
pub mod scaling;
pub mod time;
pub mod validation;
pub mod versioning;

pub use app::App;
pub use error::{ApiError, ErrorCode};
pub use path::PathId;
pub use time::Timestamp;
