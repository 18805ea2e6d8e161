//! The chatfleet operator. Its decisions (placement, the resources a fleet needs) are pure
//! functions free of I/O; the reconcilers read Kubernetes and Redis, call them, and write the
//! results back. `main.rs` only wires them together.

pub mod backoff;
pub mod config;
pub mod context;
pub mod controllers;
pub mod crd;
pub mod error;
pub mod fleet;
pub mod fleet_admin;
pub mod http;
pub mod metrics;
pub mod placement;
pub mod redis_pool;
pub mod room;
pub mod room_api;
pub mod seats;
pub mod workload;
