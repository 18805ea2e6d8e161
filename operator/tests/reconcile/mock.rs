//! A scripted Kubernetes API server: answers each request from a handler and records it, so
//! a test asserts on what the reconciler asked for rather than on the order of every call.

use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::client::Body;
use kube::runtime::reflector::{self, Store};
use kube::runtime::watcher;
use operator::context::{Context, Settings};
use operator::crd::{ChatFleet, ChatFleetSpec};
use operator::metrics::Metrics;
use serde_json::{Value, json};

/// One request the reconciler made.
#[derive(Debug, Clone)]
pub struct Call {
    pub method: Method,
    /// Path and query.
    pub uri: String,
    pub body: Value,
}

impl Call {
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or_default()
    }
}

/// What the handler answers: a status and a JSON body.
pub type Reply = (StatusCode, Value);

pub struct MockApi {
    calls: Arc<Mutex<Vec<Call>>>,
}

impl MockApi {
    /// A client whose every request goes to `handler`.
    pub fn start(
        handler: impl Fn(&Call) -> Reply + Send + Sync + 'static,
    ) -> (kube::Client, MockApi) {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let recorded = calls.clone();
        tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect_bytes().await.unwrap();
                let call = Call {
                    method: parts.method,
                    uri: parts.uri.to_string(),
                    body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                };
                let (status, reply) = handler(&call);
                recorded.lock().unwrap().push(call);
                let response = Response::builder()
                    .status(status)
                    .header("content-type", "application/json")
                    .body(Body::from(serde_json::to_vec(&reply).unwrap()))
                    .unwrap();
                respond.send_response(response);
            }
        });
        (kube::Client::new(service, "default"), MockApi { calls })
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    /// The requests with this method whose path ends with `suffix`.
    pub fn find(&self, method: Method, suffix: &str) -> Vec<Call> {
        self.calls()
            .into_iter()
            .filter(|c| c.method == method && c.path().ends_with(suffix))
            .collect()
    }

    /// The reasons of the events published, in order.
    pub fn event_reasons(&self) -> Vec<String> {
        self.find(Method::POST, "/events")
            .iter()
            .map(|c| c.body["reason"].as_str().unwrap_or_default().to_owned())
            .collect()
    }
}

/// The API server's answer for a missing object.
pub fn not_found() -> Reply {
    (
        StatusCode::NOT_FOUND,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "reason": "NotFound", "code": 404, "message": "not found"}),
    )
}

/// A pod of fleet `fleet` in `support`, Ready or not.
pub fn pod(fleet: &str, name: &str, ready: bool) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": name, "namespace": "support", "uid": format!("uid-{name}"),
                     "labels": {"app.kubernetes.io/name": "chatnode", "chatfleet.dev/fleet": fleet}},
        "status": {"conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]}
    }))
    .unwrap()
}

/// A reflector's store holding `objects`, as if it had watched them arrive.
pub fn store<K>(objects: Vec<K>) -> Store<K>
where
    K: kube::Resource<DynamicType = ()> + Clone + 'static,
{
    let (reader, mut writer) = reflector::store();
    for object in objects {
        writer.apply_watcher_event(&watcher::Event::Apply(object));
    }
    reader
}

/// A pod cache holding `pods`.
pub fn pod_store(pods: Vec<Pod>) -> Store<Pod> {
    store(pods)
}

/// A fleet cache holding `fleets`.
pub fn fleet_store(fleets: Vec<ChatFleet>) -> Store<ChatFleet> {
    store(fleets)
}

pub fn context(client: kube::Client, pods: Vec<Pod>) -> Arc<Context> {
    let metrics = Arc::new(Metrics::new());
    let ctx = Context::new(client, pod_store(pods), metrics, Settings::default(), None);
    Arc::new(ctx)
}

/// Fleet `support/chat` on the Redis at `redis_url`, its token key in Secret `tokens`.
pub fn fleet(redis_url: &str) -> ChatFleet {
    let spec: ChatFleetSpec = serde_json::from_value(json!({
        "image": "chatnode:dev",
        "redis": {"url": redis_url},
        "tokenSecret": {"name": "tokens", "key": "secret"},
    }))
    .unwrap();
    ChatFleet {
        metadata: meta("chat"),
        spec,
        status: None,
    }
}

pub fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: Some("support".into()),
        uid: Some(format!("uid-{name}")),
        generation: Some(1),
        resource_version: Some("1".into()),
        ..ObjectMeta::default()
    }
}
