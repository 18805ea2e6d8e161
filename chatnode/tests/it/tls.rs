//! Getting into a locked Redis. A fleet node on a Redis that requires TLS and a client
//! certificate (`rediss://`), as managed Redis services do: it reports, and members on two
//! nodes hear each other, over TLS; without the client certificate, or without the CA that
//! signed the server's, it does not get in (and says so by staying not ready). A password
//! kept apart from the URL (`--redis-password`, from a Secret of its own) gets a node in. A
//! Redis Cluster over TLS (`rediss+cluster://`): rooms chat across its shards.

use std::time::Duration;

use crate::support::{Client, Node, Redis, RedisCluster};

/// A fleet node on `url` with `args`; not waited for.
async fn node(url: &str, name: &str, args: &[&str]) -> Node {
    Node::start_on_redis(url, name, args).await
}

#[tokio::test]
async fn nodes_reach_a_redis_that_requires_tls_and_a_client_certificate() {
    let (redis, tls) = Redis::start_tls().await;
    let (ca, cert, key) = (
        tls.ca.display().to_string(),
        tls.client_cert.display().to_string(),
        tls.client_key.display().to_string(),
    );
    let with_certificate = [
        "--redis-ca-file",
        &ca,
        "--redis-client-cert-file",
        &cert,
        "--redis-client-key-file",
        &key,
    ];
    let url = tls.url();
    let nodes = [
        node(&url, "chat-0", &with_certificate).await,
        node(&url, "chat-1", &with_certificate).await,
    ];
    for node in &nodes {
        crate::support::eventually("the node reaches Redis over TLS", || async {
            node.get("/readyz").await.status() == 200
        })
        .await;
    }
    // The reports went through TLS into the server (read here over its plain port).
    for name in ["chat-0", "chat-1"] {
        assert!(redis.state().reports.report(name).await.unwrap().is_some());
    }
    let room = "support/secure";
    let (mut ann, _) = Client::join(&nodes[0].ws_as(room, "ann", "")).await;
    let (mut bob, _) = Client::join(&nodes[1].ws_as(room, "bob", "")).await;
    ann.say("over TLS").await;
    assert_eq!(bob.message().await.content.body, "over TLS");
    assert_eq!(ann.message().await.content.body, "over TLS");

    // No client certificate, or no CA for the server's: never ready.
    let without_certificate = node(&url, "chat-2", &["--redis-ca-file", &ca]).await;
    let unknown_ca = node(&url, "chat-3", &with_certificate[2..]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for node in [&without_certificate, &unknown_ca] {
        assert_eq!(node.get("/readyz").await.status(), 503);
    }
    assert!(
        redis
            .state()
            .reports
            .report("chat-2")
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        redis
            .state()
            .reports
            .report("chat-3")
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn a_password_kept_apart_from_the_url_gets_a_node_in() {
    let redis = Redis::start_guarded("s3cret-password").await;
    let url = format!("redis://127.0.0.1:{}", redis.port);
    let guarded = node(&url, "chat-0", &["--redis-password", "s3cret-password"]).await;
    crate::support::eventually("the node reaches Redis with the password", || async {
        guarded.get("/readyz").await.status() == 200
    })
    .await;
    let wrong = node(&url, "chat-1", &["--redis-password", "guess"]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(wrong.get("/readyz").await.status(), 503);
    assert!(
        redis
            .state()
            .reports
            .report("chat-0")
            .await
            .unwrap()
            .is_some()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_chat_over_a_redis_cluster_that_serves_tls() {
    let (cluster, tls) = RedisCluster::start_tls(3, 0).await;
    let ca = tls.ca.display().to_string();
    let url = cluster.tls_url();
    let one = Node::on_redis(&url, "chat-0", &["--redis-ca-file", &ca]).await;
    let two = Node::on_redis(&url, "chat-1", &["--redis-ca-file", &ca]).await;
    // Rooms on several shards: each message from one node reaches the other, through the
    // room's shard, over TLS.
    for n in 0..6 {
        let room = format!("support/tls-{n}");
        let (mut ann, _) = Client::join(&one.ws_as(&room, "ann", "")).await;
        let (mut bob, _) = Client::join(&two.ws_as(&room, "bob", "")).await;
        ann.say("across the shards").await;
        assert_eq!(
            bob.message().await.content.body,
            "across the shards",
            "{room}"
        );
    }
    // Without the CA, the cluster's certificates are not trusted: never ready.
    let untrusting = Node::start_on_redis(&url, "chat-2", &[]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(untrusting.get("/readyz").await.status(), 503);
}
