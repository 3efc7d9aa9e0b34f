//! Warning Events on Kubernetes objects: where `kubectl describe` shows a user why the control
//! plane did not do what their object asks (a rejected VirtualService, a CA Secret that changed
//! while running).

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::Client;
use kube::api::{Api, PostParams};

/// Records a Warning Event `reason` on `object`. `name` identifies the occurrence: an Event of
/// that name that exists already (another replica, an earlier relist wrote it) is left as is,
/// so that one occurrence is one Event however many replicas see it.
pub async fn warn(
    client: Client,
    object: ObjectReference,
    name: String,
    reason: &str,
    message: String,
) {
    // A cluster-scoped object's events live in `default`, as kubectl's do.
    let namespace = object
        .namespace
        .clone()
        .unwrap_or_else(|| "default".to_string());
    let described = format!(
        "{} {}/{}",
        object.kind.as_deref().unwrap_or("object"),
        namespace,
        object.name.as_deref().unwrap_or("")
    );
    let now = Time(k8s_openapi::jiff::Timestamp::now());
    let event = Event {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.clone()),
            ..ObjectMeta::default()
        },
        involved_object: object,
        reason: Some(reason.to_string()),
        message: Some(message),
        type_: Some("Warning".to_string()),
        source: Some(EventSource {
            component: Some("mesh-control".to_string()),
            host: None,
        }),
        reporting_component: Some("mesh-control".to_string()),
        first_timestamp: Some(now.clone()),
        last_timestamp: Some(now),
        count: Some(1),
        ..Event::default()
    };
    let events: Api<Event> = Api::namespaced(client, &namespace);
    match events.create(&PostParams::default(), &event).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 409 => {}
        Err(e) => tracing::warn!(object = %described, "cannot record the {reason} Event: {e}"),
    }
}
