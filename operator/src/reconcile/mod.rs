//! The two reconcilers. Each reads state (Kubernetes objects, the pod cache, the fleet's
//! Redis), asks `crate::decide` what to do, and writes the result ([`writes`]). The statuses
//! they write and the conditions they share are built in [`status`]; the room events they
//! queue for the fleet's webhooks in [`webhooks`].

pub mod autoscale;
pub mod fleet;
pub mod placing;
pub mod pods;
pub mod room;
pub mod status;
pub mod webhooks;
pub mod writes;
