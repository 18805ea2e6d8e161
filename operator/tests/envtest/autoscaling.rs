//! The autoscaler against the real API server, with real nodes reporting their seats: it
//! keeps the buffer, and nothing wedges it (a drain it did not start, a restart mid-drain,
//! `minReplicas` raised mid-drain).

use chatfleet_wire::control::Control;

use super::*;

/// The fleet's `spec.replicas` and its autoscaler's view, read from the API server.
async fn fleet_when(
    client: &kube::Client,
    what: &str,
    done: impl Fn(&ChatFleet) -> bool,
) -> ChatFleet {
    let fleets: Api<ChatFleet> = Api::namespaced(client.clone(), NS);
    eventually(what, || async {
        let fleet = fleets.get("chat").await.ok()?;
        done(&fleet).then_some(fleet)
    })
    .await
}

/// Autoscaling against the real API server, with real nodes reporting their seats: a fleet
/// short of its buffer grows, and one with seats to spare drains its highest ordinal (the node
/// hears the drain and reports it), then shrinks; Events say so; min holds.
#[tokio::test]
async fn the_autoscaler_keeps_a_buffer_of_free_seats() {
    let Some(assets) = assets() else { return };
    let (_server, client, redis) = api_server_with_crds(&assets).await;
    let fleets: Api<ChatFleet> = Api::namespaced(client.clone(), NS);
    let with_autoscaling =
        |autoscaling: serde_json::Value| dry_fleet(json!({ "autoscaling": autoscaling }));
    for (bad, message) in [
        (
            json!({"minReplicas": 3, "maxReplicas": 2, "bufferSeats": 1}),
            "minReplicas must not exceed maxReplicas",
        ),
        (
            json!({"maxReplicas": 2, "bufferSeats": "lots"}),
            "bufferSeats must be a count or a percentage",
        ),
        (
            json!({"maxReplicas": 2, "bufferSeats": "100%"}),
            "bufferSeats must be a count or a percentage below 100%",
        ),
    ] {
        let refused = fleets
            .create(&DRY_RUN, &with_autoscaling(bad))
            .await
            .unwrap_err();
        assert!(refused.to_string().contains(message), "{refused}");
    }
    fleets
        .create(
            &DRY_RUN,
            &with_autoscaling(json!({"maxReplicas": 4, "bufferSeats": "25%"})),
        )
        .await
        .unwrap();

    start_operator(&client);
    let autoscaling =
        json!({"minReplicas": 1, "maxReplicas": 3, "bufferSeats": 3, "cooldownSeconds": 1});
    create_fleet_with(
        &client,
        &redis,
        json!({"replicas": 1, "autoscaling": autoscaling}),
    )
    .await;
    let first = node_pod(&client, &redis, "chat-0").await;

    // Two of chat-0's four seats taken: 2 free, 3 wanted. The fleet grows to two nodes.
    let room = "support/busy";
    let mut users = Vec::new();
    for user in ["ann", "bob"] {
        users.push(testkit::Client::join(&first.ws_as(room, user, "")).await.0);
    }
    // The replicas change first, then the status that records the decision.
    let grown = fleet_when(&client, "the fleet to grow", |f| {
        let scaling = f.status.as_ref().and_then(|s| s.autoscaling.as_ref());
        f.spec.replicas == 2 && scaling.is_some_and(|a| a.desired_replicas == 2)
    })
    .await;
    let scaling = grown.status.unwrap().autoscaling.unwrap();
    assert!(scaling.last_scale_time.is_some());
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), NS);
    eventually("the StatefulSet to follow", || async {
        (sets.get("chat").await.ok()?.spec.replicas == Some(2)).then_some(())
    })
    .await;
    let second = node_pod(&client, &redis, "chat-1").await;

    // 6 free with two nodes: without chat-1 only 2 would be, so it stays.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let steady = fleets.get("chat").await.unwrap();
    assert_eq!(steady.spec.replicas, 2);
    assert!(
        steady
            .status
            .unwrap()
            .autoscaling
            .unwrap()
            .draining_node
            .is_none()
    );

    // chat-0's users leave and one user sits on chat-1: 7 free, 3 without chat-1. It is
    // drained (and says so), but it is busy, so it stays for now.
    let dee = testkit::Client::join(&second.ws_as("support/calm", "dee", ""))
        .await
        .0;
    for user in users {
        user.leave().await;
    }
    let draining = |wanted: bool| {
        let redis = &redis;
        async move {
            eventually(&format!("chat-1 to report draining: {wanted}"), || async {
                let key = chatfleet_wire::keys::node_report("chat-1");
                let json: Option<String> = redis.conn().await.get(&key).await.ok()?;
                let report: chatfleet_wire::load::LoadReport = serde_json::from_str(&json?).ok()?;
                (report.draining == wanted).then_some(())
            })
            .await
        }
    };
    draining(true).await;

    // A surge on chat-0 while chat-1 drains: 2 free without chat-1, 3 wanted. The drain is
    // called off, and chat-1 takes members again.
    let mut surge = Vec::new();
    for user in ["eve", "fay"] {
        surge.push(testkit::Client::join(&first.ws_as(room, user, "")).await.0);
    }
    draining(false).await;
    let kept = fleet_when(&client, "the drain to be called off", |f| {
        let scaling = f.status.as_ref().and_then(|s| s.autoscaling.as_ref());
        scaling.is_some_and(|a| a.draining_node.is_none())
    })
    .await;
    assert_eq!(kept.spec.replicas, 2);

    // Everyone leaves: 8 free, 4 without chat-1. It is drained again, then removed.
    for user in surge {
        user.leave().await;
    }
    dee.leave().await;
    draining(true).await;
    let shrunk = fleet_when(&client, "the fleet to shrink", |f| {
        let drained = f.status.as_ref().and_then(|s| s.autoscaling.as_ref());
        f.spec.replicas == 1 && drained.is_some_and(|a| a.draining_node.is_none())
    })
    .await;
    let status = shrunk.status.unwrap();
    assert_eq!(status.autoscaling.unwrap().desired_replicas, 1);
    assert_eq!(
        status.selector.as_deref(),
        Some("app.kubernetes.io/name=chatnode,chatfleet.dev/fleet=chat")
    );
    drop(second);

    // Each decision is an Event on the fleet.
    let events: Api<k8s_openapi::api::events::v1::Event> = Api::namespaced(client.clone(), NS);
    let reasons = eventually("the scaling Events", || async {
        let reasons: Vec<String> = events
            .list(&Default::default())
            .await
            .ok()?
            .items
            .into_iter()
            .filter(|e| e.regarding.as_ref().and_then(|r| r.kind.as_deref()) == Some("ChatFleet"))
            .filter_map(|e| e.reason)
            .collect();
        let all = ["ScaledUp", "Draining", "DrainCalledOff", "ScaledDown"];
        all.iter()
            .all(|r| reasons.iter().any(|x| x == r))
            .then_some(reasons)
    })
    .await;
    assert_eq!(
        reasons.iter().filter(|r| *r == "DrainCalledOff").count(),
        1,
        "one drain called off: {reasons:?}"
    );

    // At minReplicas it stays, however idle.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(fleets.get("chat").await.unwrap().spec.replicas, 1);
}

/// Plays the kubelet for `nodes`: each pod's Ready condition follows its node's `/readyz`
/// (a drained node fails it), checked every 200 ms until the task is aborted.
fn play_kubelet(client: &kube::Client, nodes: &[(&str, &Node)]) -> tokio::task::JoinHandle<()> {
    let client = client.clone();
    let nodes: Vec<(String, String)> = nodes
        .iter()
        .map(|(name, node)| (name.to_string(), format!("http://{}/readyz", node.addr)))
        .collect();
    tokio::spawn(async move {
        let mut ready = std::collections::HashMap::new();
        loop {
            for (name, url) in &nodes {
                let now = reqwest::get(url)
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if ready.insert(name.clone(), now) != Some(now) {
                    set_ready(&client, name, now).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}

/// Whether `node` reports draining, as its load report says.
async fn reports_draining(redis: &Redis, node: &str) -> Option<bool> {
    let report = redis.state().reports.report(node).await.ok()??;
    Some(report.draining)
}

/// Nothing wedges the autoscaler: a node drained by an administrator (not Ready, as a drained
/// node is) does not stop the fleet growing for a surge; `minReplicas` raised to the fleet's
/// size during a scale-down calls the drain off; and an operator restarted again and again
/// while it drains a node still finishes the scale-down, leaving no drained node untracked.
#[tokio::test]
async fn nothing_wedges_the_autoscaler() {
    let Some(assets) = assets() else { return };
    let (_server, client, redis) = api_server_with_crds(&assets).await;
    let settings = Settings {
        room_resync: Duration::from_millis(500),
        fleet_resync: Duration::from_secs(1),
        ..Settings::default()
    };
    let mut operator = spawn_operator(&client, settings.clone());
    let autoscaling =
        json!({"minReplicas": 2, "maxReplicas": 3, "bufferSeats": 3, "cooldownSeconds": 1});
    create_fleet_with(
        &client,
        &redis,
        json!({"replicas": 2, "autoscaling": autoscaling}),
    )
    .await;
    let chat0 = node_pod(&client, &redis, "chat-0").await;
    let chat1 = node_pod(&client, &redis, "chat-1").await;
    let kubelet = play_kubelet(&client, &[("chat-0", &chat0), ("chat-1", &chat1)]);
    // minReplicas 2 keeps both nodes while the users arrive. One user on each node: 6 free,
    // 2 without chat-1, 3 wanted: the fleet holds at two.
    let mut users = vec![
        testkit::Client::join(&chat0.ws_as("support/a", "ann", ""))
            .await
            .0,
        testkit::Client::join(&chat1.ws_as("support/b", "bob", ""))
            .await
            .0,
    ];

    // An administrator drains chat-0 (it fails readiness), then a surge fills chat-1: 2 free
    // on the one undrained node, 3 wanted. The fleet grows past the drained node.
    let control = redis.state().control;
    control
        .publish(&Control::Drain {
            node: "chat-0".into(),
        })
        .await
        .unwrap();
    eventually("chat-0 to report its drain", || async {
        reports_draining(&redis, "chat-0").await.filter(|d| *d)
    })
    .await;
    users.push(
        testkit::Client::join(&chat1.ws_as("support/b", "cid", ""))
            .await
            .0,
    );
    fleet_when(
        &client,
        "the fleet to grow past a node drained by hand",
        |f| f.spec.replicas == 3,
    )
    .await;
    let chat2 = node_pod(&client, &redis, "chat-2").await;
    kubelet.abort();
    let kubelet = play_kubelet(
        &client,
        &[("chat-0", &chat0), ("chat-1", &chat1), ("chat-2", &chat2)],
    );
    control
        .publish(&Control::Undrain {
            node: "chat-0".into(),
        })
        .await
        .unwrap();

    // Everyone leaves but one user on chat-2: it is drained to shrink the fleet, and waited
    // for while busy. minReplicas raised to 3 meanwhile calls the drain off.
    let dee = testkit::Client::join(&chat2.ws_as("support/c", "dee", ""))
        .await
        .0;
    for user in users.drain(..) {
        user.leave().await;
    }
    eventually("chat-2 to be drained", || async {
        reports_draining(&redis, "chat-2").await.filter(|d| *d)
    })
    .await;
    let fleets: Api<ChatFleet> = Api::namespaced(client.clone(), NS);
    let set_min = |min: u32| {
        let fleets = fleets.clone();
        async move {
            let patch = json!({"spec": {"autoscaling": {"minReplicas": min}}});
            fleets
                .patch("chat", &PatchParams::default(), &Patch::Merge(&patch))
                .await
                .unwrap();
        }
    };
    set_min(3).await;
    eventually("chat-2 to take members again", || async {
        reports_draining(&redis, "chat-2").await.filter(|d| !*d)
    })
    .await;
    let kept = fleet_when(&client, "the drain record to go", |f| {
        let scaling = f.status.as_ref().and_then(|s| s.autoscaling.as_ref());
        scaling.is_some_and(|a| a.draining_node.is_none())
    })
    .await;
    assert_eq!(kept.spec.replicas, 3);

    // minReplicas back to 2: chat-2 is drained again and, once its user leaves, removed,
    // while the operator is restarted every 700 ms, between any two steps of the drain.
    set_min(2).await;
    let mut dee = Some(dee);
    for restart in 0..8 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        drop(operator);
        operator = spawn_operator(&client, settings.clone());
        if restart == 3
            && let Some(dee) = dee.take()
        {
            dee.leave().await;
        }
    }
    let shrunk = fleet_when(&client, "the fleet to shrink to two", |f| {
        let scaling = f.status.as_ref().and_then(|s| s.autoscaling.as_ref());
        f.spec.replicas == 2 && scaling.is_some_and(|a| a.draining_node.is_none())
    })
    .await;
    assert_eq!(
        shrunk.status.unwrap().autoscaling.unwrap().desired_replicas,
        2
    );
    // The nodes the fleet keeps take members; none was left drained.
    for node in ["chat-0", "chat-1"] {
        assert_eq!(reports_draining(&redis, node).await, Some(false), "{node}");
    }
    kubelet.abort();
    drop(operator);
}
