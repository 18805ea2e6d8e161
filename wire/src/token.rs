//! Join tokens: HS256 JWTs that name the room, the user and their role.
//!
//! The room API mints them; every node of a fleet verifies them with the shared secret, so a
//! token works on whichever node the room lives on.

use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use crate::RoomId;
use crate::clock::unix_seconds;
use crate::frames::{Member, Role};

/// The claims of a join token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinClaims {
    /// The room, `namespace/name`.
    pub room: RoomId,
    /// The user id.
    pub sub: String,
    /// The display name.
    pub name: String,
    pub role: Role,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// Not valid before this (seconds since the Unix epoch), when set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// When it was issued (seconds since the Unix epoch); never in the future.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// The room's incarnation: a room name used again (a ChatRoom deleted and applied anew)
    /// is another room, and this token joins only the one it was minted for. Tokens without
    /// it (minted by hand, or before incarnations) bind only the name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inc: Option<String>,
}

impl JoinClaims {
    pub fn member(&self) -> Member {
        Member {
            user: self.sub.clone(),
            name: self.name.clone(),
            role: self.role,
        }
    }
}

/// Why a client could not prove who it is. Maps onto 401 or 403 before the upgrade.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("a join token is required (?token= or Authorization: Bearer)")]
    Missing,
    #[error("the join token has expired")]
    Expired,
    #[error("the join token is invalid: {0}")]
    Invalid(String),
    #[error("the join token is for room {token_room}, not {requested}")]
    WrongRoom {
        token_room: RoomId,
        requested: RoomId,
    },
}

/// Seconds of clock skew tolerated between the minting and the verifying machine.
const LEEWAY_SECONDS: u64 = 5;
/// Longest lifetime of a minted token.
pub const MAX_TOKEN_TTL: Duration = Duration::from_secs(7 * 24 * 3600);

/// Signs and verifies join tokens with one shared secret.
pub struct TokenKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl TokenKeys {
    /// Keys from the shared secret. Surrounding whitespace is ignored, since files and
    /// Kubernetes Secrets often end in a newline: every node and the operator agree.
    pub fn from_secret(secret: &[u8]) -> Self {
        let secret = secret.trim_ascii();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECONDS;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Mints a token for `member` in `room` (any incarnation), valid for `ttl` (capped at
    /// [`MAX_TOKEN_TTL`]).
    pub fn mint(&self, room: &RoomId, member: &Member, ttl: Duration) -> (String, u64) {
        self.mint_for(room, None, member, ttl)
    }

    /// Mints a token for `member` in one incarnation of `room` (see [`JoinClaims::inc`]).
    pub fn mint_for(
        &self,
        room: &RoomId,
        incarnation: Option<&str>,
        member: &Member,
        ttl: Duration,
    ) -> (String, u64) {
        let now = unix_seconds();
        let exp = now + ttl.min(MAX_TOKEN_TTL).as_secs();
        let claims = JoinClaims {
            room: room.clone(),
            sub: member.user.clone(),
            name: member.name.clone(),
            role: member.role,
            exp,
            nbf: None,
            iat: Some(now),
            inc: incarnation.filter(|i| !i.is_empty()).map(str::to_owned),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .expect("HS256 signing cannot fail");
        (token, exp)
    }

    /// Verifies `token` and checks that it is for `room`.
    pub fn verify(&self, token: &str, room: &RoomId) -> Result<JoinClaims, AuthError> {
        let data = jsonwebtoken::decode::<JoinClaims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::ImmatureSignature => {
                    AuthError::Invalid("it is not valid yet (nbf)".into())
                }
                _ => AuthError::Invalid(e.to_string()),
            })?;
        let claims = data.claims;
        if claims
            .iat
            .is_some_and(|iat| iat > unix_seconds() + LEEWAY_SECONDS)
        {
            return Err(AuthError::Invalid(
                "it was issued in the future (iat)".into(),
            ));
        }
        claims.member().check_bounds().map_err(AuthError::Invalid)?;
        if &claims.room != room {
            return Err(AuthError::WrongRoom {
                token_room: claims.room,
                requested: room.clone(),
            });
        }
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member() -> Member {
        Member {
            user: "u1".into(),
            name: "Ann".into(),
            role: Role::Customer,
        }
    }

    fn room(s: &str) -> RoomId {
        s.parse().unwrap()
    }

    #[test]
    fn a_minted_token_verifies_for_its_room_only() {
        let keys = TokenKeys::from_secret(b"secret");
        let (token, _) = keys.mint(&room("a/b"), &member(), Duration::from_secs(60));
        let claims = keys.verify(&token, &room("a/b")).unwrap();
        assert_eq!(claims.member(), member());
        assert!(matches!(
            keys.verify(&token, &room("a/c")),
            Err(AuthError::WrongRoom { .. })
        ));
    }

    #[test]
    fn another_secret_or_garbage_is_invalid() {
        let keys = TokenKeys::from_secret(b"secret");
        let (token, _) = keys.mint(&room("a/b"), &member(), Duration::from_secs(60));
        let other = TokenKeys::from_secret(b"other");
        assert!(matches!(
            other.verify(&token, &room("a/b")),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            keys.verify("not.a.jwt", &room("a/b")),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn an_expired_token_is_refused() {
        let keys = TokenKeys::from_secret(b"secret");
        let claims = JoinClaims {
            room: room("a/b"),
            sub: "u1".into(),
            name: "Ann".into(),
            role: Role::Agent,
            exp: unix_seconds() - 120,
            nbf: None,
            iat: None,
            inc: None,
        };
        let token =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &keys.encoding).unwrap();
        assert_eq!(keys.verify(&token, &room("a/b")), Err(AuthError::Expired));
    }

    fn signed(keys: &TokenKeys, claims: &JoinClaims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &keys.encoding).unwrap()
    }

    fn claims() -> JoinClaims {
        JoinClaims {
            room: room("a/b"),
            sub: "u1".into(),
            name: "Ann".into(),
            role: Role::Agent,
            exp: unix_seconds() + 600,
            nbf: None,
            iat: Some(unix_seconds()),
            inc: None,
        }
    }

    #[test]
    fn a_token_names_its_rooms_incarnation() {
        let keys = TokenKeys::from_secret(b"secret");
        let member = Member {
            user: "u1".into(),
            name: "Ann".into(),
            role: Role::Customer,
        };
        let ttl = Duration::from_secs(60);
        let (token, _) = keys.mint_for(&room("a/b"), Some("0f9c"), &member, ttl);
        let claims = keys.verify(&token, &room("a/b")).unwrap();
        assert_eq!(claims.inc.as_deref(), Some("0f9c"));
        let (token, _) = keys.mint_for(&room("a/b"), Some(""), &member, ttl);
        assert_eq!(keys.verify(&token, &room("a/b")).unwrap().inc, None);
    }

    #[test]
    fn a_token_from_the_future_is_refused_within_the_leeway_only() {
        let keys = TokenKeys::from_secret(b"secret");
        let later = JoinClaims {
            nbf: Some(unix_seconds() + 3600),
            ..claims()
        };
        assert!(matches!(
            keys.verify(&signed(&keys, &later), &room("a/b")),
            Err(AuthError::Invalid(why)) if why.contains("nbf")
        ));
        let issued_later = JoinClaims {
            iat: Some(unix_seconds() + 3600),
            ..claims()
        };
        assert!(matches!(
            keys.verify(&signed(&keys, &issued_later), &room("a/b")),
            Err(AuthError::Invalid(why)) if why.contains("iat")
        ));
        let skewed = JoinClaims {
            nbf: Some(unix_seconds() + 2),
            iat: Some(unix_seconds() + 2),
            ..claims()
        };
        assert!(keys.verify(&signed(&keys, &skewed), &room("a/b")).is_ok());
    }

    #[test]
    fn a_token_with_an_oversized_name_is_refused() {
        let keys = TokenKeys::from_secret(b"secret");
        let long = JoinClaims {
            name: "n".repeat(crate::frames::bounds::DISPLAY_NAME_BYTES + 1),
            ..claims()
        };
        assert!(matches!(
            keys.verify(&signed(&keys, &long), &room("a/b")),
            Err(AuthError::Invalid(why)) if why.contains("display name")
        ));
    }
}
