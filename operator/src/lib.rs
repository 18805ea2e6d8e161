//! The chatfleet operator's library. So far only its decision core, placement, which is free
//! of I/O and Kubernetes types so it can be tested and benchmarked on its own. The reconcilers
//! (issue 3) will index Kubernetes and Redis state into its inputs.

pub mod placement;
