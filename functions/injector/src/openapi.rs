//! The broker's OpenAPI document names each deployed event version as its own path, whose
//! request body is that version's enveloped schema, so a producer team can generate a client
//! for its own events.

use busway_core::schema::{component_name, rewrite_refs};
use busway_core::{EventTypeName, Version};
use serde_json::{Map, Value, json};

/// `document` (the router's generated one) with a path for each deployed version, and the parts
/// every busway document shares (`busway_http::openapi::finish`).
pub fn with_routes(mut document: Value, deployed: &[(EventTypeName, Version, Value)]) -> Value {
    for (event_type, version, schema) in deployed {
        let name = format!("{event_type}.v{version}");
        let (schema, definitions) = component(schema, &name);
        let schemas = &mut document["components"]["schemas"];
        if !schemas.is_object() {
            *schemas = json!({});
        }
        for (component, value) in definitions {
            schemas[component] = value;
        }
        schemas[&name] = schema;
        document["paths"][format!("/{event_type}/{version}")] = json!({
            "post": {
                "tags": ["events"],
                "operationId": format!("publish_{event_type}_v{version}"),
                "summary": format!("Publish a {event_type} event, version {version}"),
                "requestBody": {
                    "required": true,
                    "content": {"application/json": {"schema": {"$ref": format!("#/components/schemas/{name}")}}},
                },
                "responses": {
                    "200": {
                        "description": "the event is on the bus; `duplicate` when its `event_id` was accepted before",
                        "content": {"application/json": {"schema": published()}},
                    },
                },
            },
        });
    }
    // The generic route answers what every version's route does.
    let generic = &mut document["paths"]["/{event_type}/{version}"]["post"]["responses"]["200"];
    if generic.is_object() {
        generic["content"] = json!({"application/json": {"schema": published()}});
    }
    busway_http::openapi::finish(document)
}

/// `{"event_id", "duplicate"}`.
fn published() -> Value {
    json!({
        "type": "object",
        "required": ["event_id", "duplicate"],
        "properties": {"event_id": {"type": "string"}, "duplicate": {"type": "boolean"}},
    })
}

/// The stored draft-4 schema as a component: its `definitions` become components named after
/// it, and its references point into the document (`rewrite_refs`), since there `#` is the
/// document's root. `$schema` stays, so a reader knows the dialect.
fn component(schema: &Value, name: &str) -> (Value, Map<String, Value>) {
    let root = format!("#/components/schemas/{name}");
    let mut schema = schema.clone();
    let mut definitions = Map::new();
    if let Some(Value::Object(found)) = schema.as_object_mut().and_then(|r| r.remove("definitions"))
    {
        definitions = found
            .into_iter()
            .map(|(k, mut v)| {
                rewrite_refs(&mut v, name, &root);
                (component_name(name, &k), v)
            })
            .collect();
    }
    rewrite_refs(&mut schema, name, &root);
    (schema, definitions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deployed_version_is_a_path_whose_body_is_its_envelope_with_definitions_as_components() {
        let event_type: EventTypeName = "order_created".parse().expect("a name");
        let version = Version::new(2).expect("a version");
        let data = json!({
            "type": "object",
            "properties": {"item": {"$ref": "#/definitions/item"}},
            "definitions": {"item": {"type": "string"}},
        });
        let schema = busway_core::schema::envelope(&event_type, version, &data);
        let document = with_routes(
            json!({"openapi": "3.1.0", "paths": {}}),
            &[(event_type, version, schema)],
        );
        let body = &document["paths"]["/order_created/2"]["post"]["requestBody"]["content"]["application/json"]
            ["schema"]["$ref"];
        assert_eq!(body, "#/components/schemas/order_created.v2");
        let component = &document["components"]["schemas"]["order_created.v2"];
        assert_eq!(
            component["properties"]["data"]["properties"]["item"]["$ref"],
            "#/components/schemas/order_created.v2.item"
        );
        assert_eq!(
            document["components"]["schemas"]["order_created.v2.item"],
            json!({"type": "string"})
        );
        assert!(component.get("definitions").is_none());
        assert!(
            document["paths"]["/order_created/2"]["post"]["responses"]["400"].is_object(),
            "the shared error answers are added"
        );
    }
}
