//! The real parts these tests use live in the shared `testkit` crate.

pub use testkit::*;
