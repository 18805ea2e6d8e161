//! A room's members on other nodes, for a member joining here: the room's seats in Redis say
//! how many members it has fleet-wide and which nodes they are on (a seat's session id begins
//! with its node's name), and those nodes' rosters say who they are (as of their last
//! heartbeat).

use std::collections::BTreeSet;

use chatfleet_state::{FleetState, StateError};
use chatfleet_wire::RoomId;
use chatfleet_wire::frames::Member;

/// What a joining member learns of the room beyond this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Elsewhere {
    /// Members connected to other nodes.
    pub members: Vec<Member>,
    /// Sessions in the room across the fleet, the joining one's included.
    pub room_size: u32,
}

/// Rooms larger than this list only this node's members in a welcome: reading every seat at
/// every join would cost each join the room's size, and a welcome listing thousands of
/// members helps nobody. The count stays room-wide.
pub const LISTED_UP_TO: usize = 1_000;

pub async fn read(
    state: &FleetState,
    room: &RoomId,
    this_node: &str,
) -> Result<Elsewhere, StateError> {
    let room_size = state.room_seats.count(room).await?;
    if room_size > LISTED_UP_TO {
        return Ok(Elsewhere {
            members: Vec::new(),
            room_size: room_size as u32,
        });
    }
    let holders = state.room_seats.holders(room).await?;
    let nodes: BTreeSet<&str> = holders
        .iter()
        .filter_map(|session| session.split('/').next())
        .filter(|node| *node != this_node)
        .collect();
    let mut members = Vec::new();
    for node in nodes {
        for member in state.reports.roster(node, room).await? {
            members.push(Member {
                user: member.user,
                name: member.name,
                role: member.role,
            });
        }
    }
    Ok(Elsewhere {
        members,
        room_size: holders.len() as u32,
    })
}
