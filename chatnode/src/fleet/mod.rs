//! The node's background tasks: the heartbeat that reports its load ([`heartbeat`]), its
//! subscription to the live channels of its rooms and the control channel ([`live`]), and
//! carrying out the fleet's control commands ([`control`]); where to send a client this node
//! has no seat for ([`redirect`]), and who is in a room on other nodes ([`elsewhere`]).

pub mod control;
pub mod elsewhere;
pub mod heartbeat;
pub mod live;
pub mod redirect;
