//! An application's AsyncAPI 3.0 document: the events it publishes through the broker API, one
//! channel per active event version, each message's payload the version's enveloped schema from
//! the registry, and the HTTP binding of the broker's `POST /{event_type}/{version}`.

use serde_json::{Map, Value, json};

use crate::Application;
use crate::event::{EventType, EventVersion};
use crate::schema::{component_name, rewrite_refs};

/// The HTTP bindings' version (AsyncAPI bindings, `http`).
const HTTP_BINDING: &str = "0.3.0";

/// The document of `application` from the event types it may publish (its own and those that
/// name it among their writers) with their versions. `broker` is the broker API's base URL when
/// the host knows it (`http://127.0.0.1:4001`); without it the channels' addresses stand alone.
pub fn document(
    application: &Application,
    broker: Option<&url::Url>,
    events: &[(EventType, Vec<EventVersion>)],
) -> Value {
    let mut channels = Map::new();
    let mut operations = Map::new();
    let mut messages = Map::new();
    let mut schemas = Map::new();
    for (event, versions) in events {
        for version in versions.iter().filter(|v| v.is_active()) {
            let name = format!("{}.v{}", event.event_type, version.version);
            let (payload, definitions) = payload(&version.schema, &name);
            schemas.extend(definitions);
            let description = if version.description.is_empty() {
                event.description.clone()
            } else {
                version.description.clone()
            };
            messages.insert(
                name.clone(),
                json!({
                    "name": name,
                    "title": format!("{} version {}", event.event_type, version.version),
                    "summary": description,
                    "contentType": "application/json",
                    "payload": payload,
                    "bindings": {"http": {
                        "headers": {
                            "type": "object",
                            "required": ["Authorization"],
                            "properties": {
                                "Authorization": {"type": "string", "description": "`Bearer <key>`: a producer key of a writer application"},
                                "x-request-id": {"type": "string", "description": "carried into the event's metadata.request_id; made when absent"},
                            },
                        },
                        "bindingVersion": HTTP_BINDING,
                    }},
                }),
            );
            let mut channel = json!({
                "address": format!("/{}/{}", event.event_type, version.version),
                "title": name,
                "description": format!("{description} (owned by application {})", event.application),
                "messages": {&name: {"$ref": format!("#/components/messages/{name}")}},
            });
            if broker.is_some() {
                channel["servers"] = json!([{"$ref": "#/servers/broker"}]);
            }
            channels.insert(name.clone(), channel);
            operations.insert(
                format!("publish_{}_v{}", event.event_type, version.version),
                json!({
                    "action": "send",
                    "title": format!("Publish {name}"),
                    "channel": {"$ref": format!("#/channels/{name}")},
                    "messages": [{"$ref": format!("#/channels/{name}/messages/{name}")}],
                    "bindings": {"http": {"method": "POST", "bindingVersion": HTTP_BINDING}},
                }),
            );
        }
    }
    let mut document = json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": format!("busway: the events of application {application}"),
            "version": "1.0.0",
            "description": "Each channel is a deployed event version on the busway broker API; publish with POST and a producer key.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {
            "messages": messages,
            "schemas": schemas,
            "securitySchemes": {"bearer_key": {"type": "http", "scheme": "bearer", "description": "a busway producer key"}},
        },
    });
    if let Some(broker) = broker {
        let host = broker.host_str().unwrap_or_default();
        let host = match broker.port() {
            Some(port) => format!("{host}:{port}"),
            None => host.to_string(),
        };
        let mut server = json!({
            "host": host,
            "protocol": broker.scheme(),
            "description": "the busway broker API",
            "security": [{"$ref": "#/components/securitySchemes/bearer_key"}],
        });
        let path = broker.path().trim_end_matches('/');
        if !path.is_empty() {
            server["pathname"] = json!(path);
        }
        document["servers"] = json!({"broker": server});
    }
    document
}

/// The stored draft-4 envelope as an AsyncAPI payload: its `definitions` become components
/// named after the message and its references point into the document (where `#` is the
/// document's root); `$schema` goes, as AsyncAPI's schema dialect is its own superset of JSON
/// Schema.
fn payload(schema: &Value, name: &str) -> (Value, Map<String, Value>) {
    let home = format!("#/components/messages/{name}/payload");
    let mut schema = schema.clone();
    let mut definitions = Map::new();
    if let Some(root) = schema.as_object_mut() {
        root.remove("$schema");
        if let Some(Value::Object(found)) = root.remove("definitions") {
            definitions = found
                .into_iter()
                .map(|(k, mut v)| {
                    rewrite_refs(&mut v, name, &home);
                    (component_name(name, &k), v)
                })
                .collect();
        }
    }
    rewrite_refs(&mut schema, name, &home);
    (schema, definitions)
}
