//! The operator's decisions, as pure functions over what the reconcilers read: where a room
//! goes ([`placement`], [`room`]), what a fleet's workload looks like ([`workload`]) and how
//! many nodes it should run ([`autoscale`]). No
//! I/O here; everything is tested without a cluster or Redis.

pub mod autoscale;
pub mod placement;
pub mod room;
pub mod workload;
