//! Commands for every node of a fleet, published as JSON on
//! [`control_channel`](super::keys::control_channel). Whoever serves the admin API (a node, or
//! the operator) publishes them; every node acts on the ones that concern it.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Control {
    /// Close the user's sessions: one (by id) or all of them, on whichever node they are.
    EndSessions {
        user: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<String>,
    },
    /// Stop taking new members and report draining, so the operator moves the node's rooms
    /// (their members then get `moved`).
    Drain { node: String },
    /// Call off a drain (the autoscaler needs the node after all): take new members again.
    /// A node that is stopping ignores it.
    Undrain { node: String },
    /// Send a `system` notice to every room on every node.
    Broadcast { body: String },
}

impl Control {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("control commands serialize")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_have_a_stable_shape() {
        let end = Control::EndSessions {
            user: "dana".into(),
            session: None,
        };
        assert_eq!(end.to_json(), r#"{"kind":"end_sessions","user":"dana"}"#);
        let drain: Control = serde_json::from_str(r#"{"kind":"drain","node":"chat-0"}"#).unwrap();
        assert_eq!(
            drain,
            Control::Drain {
                node: "chat-0".into()
            }
        );
        let undrain = Control::Undrain {
            node: "chat-3".into(),
        };
        assert_eq!(undrain.to_json(), r#"{"kind":"undrain","node":"chat-3"}"#);
    }
}
