//! A session's id names the process that holds it: `{node}/{boot}/{n}`, where `boot` is
//! random per process start and `n` counts the process's sessions. Seats and session slots in
//! Redis are keyed by these ids, so anyone who sees a slot can tell whose it is and, from the
//! node's load report (which carries its `boot`), whether that process still lives.

/// The part of a session id that names its process: `{node}/{boot}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Holder {
    pub node: String,
    pub boot: String,
}

impl Holder {
    /// A new process of `node`: its boot is random, so a restarted node never reuses the
    /// ids of the process before it.
    pub fn new_boot(node: &str) -> Self {
        let boot = uuid::Uuid::new_v4().simple().to_string();
        Self {
            node: node.to_owned(),
            boot: boot[..8].to_owned(),
        }
    }

    /// The `n`th session id of this process.
    pub fn session(&self, n: u64) -> String {
        format!("{}/{}/{n}", self.node, self.boot)
    }

    /// Who holds `session`; `None` for ids that do not have this shape.
    pub fn of(session: &str) -> Option<Self> {
        let mut parts = session.split('/');
        let (node, boot, n) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || node.is_empty() || boot.is_empty() || n.is_empty() {
            return None;
        }
        Some(Self {
            node: node.to_owned(),
            boot: boot.to_owned(),
        })
    }

    /// The prefix every session id of this process starts with.
    pub fn prefix(&self) -> String {
        format!("{}/{}/", self.node, self.boot)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_id_names_its_process() {
        let holder = Holder::new_boot("chat-0");
        let id = holder.session(7);
        assert!(id.starts_with(&holder.prefix()));
        assert_eq!(Holder::of(&id), Some(holder.clone()));
        assert_ne!(
            Holder::new_boot("chat-0"),
            holder,
            "each start has its own boot"
        );
        for odd in ["", "chat-0", "chat-0/ab", "chat-0//1", "a/b/c/d"] {
            assert_eq!(Holder::of(odd), None, "{odd}");
        }
    }
}
