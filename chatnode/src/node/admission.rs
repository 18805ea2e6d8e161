//! Admission: whether a node, and then a room, takes one more member. Pure functions over a
//! snapshot, so the rules are tested without a network; the hub applies them atomically.

use chatfleet_wire::frames::ErrorCode;

/// What the node looks like at the moment a client asks to join.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeState {
    pub users: u32,
    pub max_users: u32,
    pub draining: bool,
    /// False while the node cannot reach Redis (always true standalone).
    pub backend_ready: bool,
}

/// Why a join was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the node is shutting down; reconnect to be placed elsewhere")]
    Draining,
    #[error("the node cannot reach Redis; retry shortly")]
    Unavailable,
    #[error("the node is full")]
    NodeFull,
    #[error("the room is full")]
    RoomFull,
    #[error("the room was closed")]
    RoomClosed,
    #[error("you already hold as many sessions as the fleet allows; close one first")]
    SessionLimit,
    #[error("a moderator removed you from this room")]
    Removed,
}

impl Refusal {
    pub fn code(self) -> ErrorCode {
        match self {
            Refusal::Draining => ErrorCode::Draining,
            Refusal::Unavailable => ErrorCode::Unavailable,
            Refusal::NodeFull => ErrorCode::NodeFull,
            Refusal::RoomFull => ErrorCode::RoomFull,
            Refusal::RoomClosed => ErrorCode::RoomClosed,
            Refusal::SessionLimit => ErrorCode::SessionLimit,
            Refusal::Removed => ErrorCode::Removed,
        }
    }
}

/// May the node take one more session? Draining wins over everything (the client should go
/// elsewhere), then availability, then capacity.
pub fn admit_to_node(state: NodeState) -> Result<(), Refusal> {
    if state.draining {
        Err(Refusal::Draining)
    } else if !state.backend_ready {
        Err(Refusal::Unavailable)
    } else if state.users >= state.max_users {
        Err(Refusal::NodeFull)
    } else {
        Ok(())
    }
}

/// May the room take one more member?
pub fn admit_to_room(members: u32, max_members: u32) -> Result<(), Refusal> {
    if members >= max_members {
        Err(Refusal::RoomFull)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(users: u32) -> NodeState {
        NodeState {
            users,
            max_users: 300,
            draining: false,
            backend_ready: true,
        }
    }

    #[test]
    fn node_admits_until_its_limit() {
        assert_eq!(admit_to_node(node(0)), Ok(()));
        assert_eq!(admit_to_node(node(299)), Ok(()));
        assert_eq!(admit_to_node(node(300)), Err(Refusal::NodeFull));
        assert_eq!(admit_to_node(node(301)), Err(Refusal::NodeFull));
    }

    #[test]
    fn draining_and_unavailable_refuse_even_with_room_to_spare() {
        let draining = NodeState {
            draining: true,
            backend_ready: false,
            ..node(0)
        };
        assert_eq!(admit_to_node(draining), Err(Refusal::Draining));
        let down = NodeState {
            backend_ready: false,
            ..node(300)
        };
        assert_eq!(admit_to_node(down), Err(Refusal::Unavailable));
    }

    #[test]
    fn room_admits_until_its_limit() {
        assert_eq!(admit_to_room(0, 1), Ok(()));
        assert_eq!(admit_to_room(1, 1), Err(Refusal::RoomFull));
        assert_eq!(admit_to_room(0, 0), Err(Refusal::RoomFull));
        assert_eq!(Refusal::RoomFull.code(), ErrorCode::RoomFull);
    }
}
