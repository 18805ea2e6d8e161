//! The node itself, free of HTTP and Redis: who may join ([`admission`]), the node's seats and
//! drain ([`hub`]), its rooms ([`registry`], [`room`]), each client's connection
//! ([`connection`]), the path that writes into its socket ([`outbox`], [`client_socket`],
//! [`ws_frame`]), and the per-user session limit ([`user_sessions`]).

pub mod admission;
pub mod client_socket;
pub mod closing;
pub mod connection;
pub mod hub;
pub mod outbox;
pub mod rate;
pub mod registry;
pub mod room;
pub mod user_sessions;
pub mod ws_frame;

pub use hub::{Hub, HubSettings};
