//! The chatfleet operator. Its decisions (placement, where a room goes, the resources a fleet
//! needs) are pure functions in [`decide`]; the reconcilers in [`reconcile`] read Kubernetes
//! and Redis, call them, and write the results back. [`api`] serves the room API over
//! Kubernetes. `main.rs` only wires them together.

pub mod api;
pub mod backoff;
pub mod config;
pub mod context;
pub mod controllers;
pub mod crd;
pub mod decide;
pub mod error;
pub mod fleet_redis;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod node_views;
pub mod reconcile;
pub mod secrets;
