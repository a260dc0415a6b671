//! Stride's HTTP front door: Marathon 1.10's `/v2` REST API, `/ping`, `/metrics` and the SSE
//! event stream, served with actix-web.
//!
//! The gateway is stateless. Reads come from the state store ([`stride_store::StateStore`]) and
//! are rendered with `stride-core`'s functions, so every replica answers every request the same
//! way. Every change goes to the scheduler leader over gRPC through a [`LeaderLink`]; the gateway
//! never writes desired state, and the only validation it does itself is the parsing that lets a
//! bad body get its 400/422 without a round trip.
//!
//! ```text
//!  client ──HTTP──► NormalizePath ─► common headers + metrics ─► routes::{apps, tasks, …}
//!                                                                 │ reads        │ changes
//!                                                                 ▼              ▼
//!                                               StateStore (apps, instances,   LeaderLink ──gRPC──► leader
//!                                               deployments, events)             (Control)
//!  /v2/events ◄── EventHub (one store tail per gateway, broadcast to every SSE client)
//! ```
//!
//! Entry points: [`run`] with the real gRPC link, [`run_with_leader`] with any [`LeaderLink`]
//! (tests pass a fake, `stride dev` may pass an in-process one).

pub mod admission;
pub mod audit;
pub mod auth;
pub mod config;
pub mod error;
mod events;
mod http;
pub mod labels;
pub mod leader;
pub mod metrics;
mod read;
mod routes;
mod server;
mod state;

pub use config::{Config, ConfigError};
pub use error::GatewayError;
pub use leader::{GrpcLeaderLink, LeaderLink};
pub use server::{run, run_with_leader};

/// The Marathon API version Stride is compatible with, shown as `version` on `/v2/info`.
pub const MARATHON_COMPATIBLE_VERSION: &str = "1.10.26";
