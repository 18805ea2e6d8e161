//! Room identity: `namespace/name`, both DNS labels, so a room maps 1:1 onto a Kubernetes
//! `ChatRoom` object and is safe to embed in URLs and Redis keys.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The longest namespace or room name, as for a Kubernetes DNS label.
pub const MAX_LABEL_LEN: usize = 63;

/// A room's fleet-wide identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoomId {
    namespace: String,
    name: String,
}

/// Why a string is not a valid room id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomIdError {
    #[error("a room id is `namespace/name`, got {0:?}")]
    Shape(String),
    #[error(
        "{what} {value:?} must be 1-63 lowercase letters, digits or '-', starting and ending with a letter or digit"
    )]
    Label { what: &'static str, value: String },
}

impl RoomId {
    /// Builds a room id from its two parts, validating both.
    pub fn new(namespace: &str, name: &str) -> Result<Self, RoomIdError> {
        check_label("namespace", namespace)?;
        check_label("room name", name)?;
        Ok(Self {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        })
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn name(&self) -> &str {
        &self.name
    }
}

/// In the OpenAPI document a room id is what it is on the wire: a `namespace/name` string.
#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for RoomId {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "`namespace/name`, both DNS labels (1-63 of a-z, 0-9, '-')",
            ))
            .examples(["support/case-1"])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for RoomId {}

/// True when `value` is a DNS-1123 label.
pub fn is_dns_label(value: &str) -> bool {
    let bytes = value.as_bytes();
    let ok_char = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
    let ok_edge = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    !bytes.is_empty()
        && bytes.len() <= MAX_LABEL_LEN
        && bytes.iter().all(ok_char)
        && bytes.first().is_some_and(ok_edge)
        && bytes.last().is_some_and(ok_edge)
}

fn check_label(what: &'static str, value: &str) -> Result<(), RoomIdError> {
    if is_dns_label(value) {
        Ok(())
    } else {
        Err(RoomIdError::Label {
            what,
            value: value.to_owned(),
        })
    }
}

impl std::str::FromStr for RoomId {
    type Err = RoomIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (namespace, name) = s
            .split_once('/')
            .ok_or_else(|| RoomIdError::Shape(s.to_owned()))?;
        Self::new(namespace, name)
    }
}

impl TryFrom<String> for RoomId {
    type Error = RoomIdError;

    fn try_from(value: String) -> Result<Self, Self::Error> {
        value.parse()
    }
}

impl From<RoomId> for String {
    fn from(id: RoomId) -> Self {
        id.to_string()
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_namespace_and_name() {
        let id: RoomId = "support/case-42".parse().unwrap();
        assert_eq!(id.namespace(), "support");
        assert_eq!(id.name(), "case-42");
        assert_eq!(id.to_string(), "support/case-42");
    }

    #[test]
    fn rejects_what_is_not_a_dns_label() {
        for bad in [
            "", "a", "a/", "/b", "A/b", "a/b/c", "a/-b", "a/b-", "a/b_c", "a/b c",
        ] {
            assert!(bad.parse::<RoomId>().is_err(), "{bad:?} should be rejected");
        }
        let long = format!("ns/{}", "x".repeat(64));
        assert!(long.parse::<RoomId>().is_err());
        let longest = format!("ns/{}", "x".repeat(63));
        assert!(longest.parse::<RoomId>().is_ok());
    }

    #[test]
    fn serializes_as_a_plain_string() {
        let id = RoomId::new("a", "b").unwrap();
        assert_eq!(serde_json::to_string(&id).unwrap(), "\"a/b\"");
        let back: RoomId = serde_json::from_str("\"a/b\"").unwrap();
        assert_eq!(back, id);
        assert!(serde_json::from_str::<RoomId>("\"nope\"").is_err());
    }
}
