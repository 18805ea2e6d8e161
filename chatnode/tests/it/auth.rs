//! A client proves who it is before the upgrade: 401 for a missing, bad or expired token,
//! 403 for a token of another room.

use std::time::Duration;

use chatfleet_wire::frames::Role;
use tokio_tungstenite::tungstenite::Error;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::support::{Client, SECRET, in_process, token, token_with};

async fn refused_status(url: &str) -> u16 {
    match Client::try_connect(url).await {
        Err(Error::Http(response)) => {
            let body =
                String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).to_string();
            assert!(
                body.contains("\"error\""),
                "the refusal explains itself as JSON: {body}"
            );
            response.status().as_u16()
        }
        Err(other) => panic!("expected an HTTP refusal, got {other}"),
        Ok(_) => panic!("{url} was accepted"),
    }
}

#[tokio::test]
async fn missing_bad_expired_and_foreign_tokens_are_refused_before_the_upgrade() {
    let node = in_process(&[]).await;
    let room = "support/locked";
    assert_eq!(refused_status(&node.ws(room, "")).await, 401);
    assert_eq!(refused_status(&node.ws(room, "token=not-a-jwt")).await, 401);
    let forged = token_with(
        "another-secret",
        room,
        "eve",
        Role::Agent,
        Duration::from_secs(60),
    );
    assert_eq!(
        refused_status(&node.ws(room, &format!("token={forged}"))).await,
        401
    );
    let expired = token_with(SECRET, room, "ann", Role::Customer, Duration::ZERO);
    // Tokens are checked with a few seconds of leeway; this one is long past it.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        refused_status(&node.ws(room, &format!("token={expired}"))).await,
        401
    );
    let elsewhere = token("support/other", "ann", Role::Customer);
    assert_eq!(
        refused_status(&node.ws(room, &format!("token={elsewhere}"))).await,
        403
    );
    // Dev auth is off unless asked for.
    assert_eq!(refused_status(&node.ws(room, "user=ann")).await, 401);
    // The valid token still works.
    Client::join(&node.ws_as(room, "ann", "")).await;
}

#[tokio::test]
async fn a_bearer_header_carries_the_token_too() {
    let node = in_process(&[]).await;
    let room = "support/bearer";
    let mut request = node.ws(room, "").into_client_request().unwrap();
    let bearer = format!("Bearer {}", token(room, "ann", Role::Agent));
    request
        .headers_mut()
        .insert("authorization", bearer.parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::connect_async(request).await.unwrap();
    use futures_util::StreamExt;
    let first = ws.next().await.unwrap().unwrap();
    assert!(first.to_text().unwrap().contains("\"type\":\"welcome\""));
}

#[tokio::test]
async fn dev_auth_takes_a_plain_user_name_when_enabled() {
    let node = in_process(&["--insecure-dev-auth"]).await;
    let (_, welcome) = Client::join(&node.ws("dev/trial", "user=zoe&name=Zoe&role=agent")).await;
    assert_eq!(
        (
            welcome.user.user.as_str(),
            welcome.user.name.as_str(),
            welcome.user.role
        ),
        ("zoe", "Zoe", Role::Agent)
    );
}
