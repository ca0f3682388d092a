//! JSON Schema handling. API Gateway models and the EventBridge registry take draft 4 only, so a
//! producer's `data` schema must be a valid draft-4 schema, and the stored event schema is the
//! draft-4 envelope around it.

use serde_json::{Value, json};

use crate::{EventTypeName, FieldError, ValidationErrors, Version};

const DRAFT4: &str = "http://json-schema.org/draft-04/schema#";

/// The longest schema the EventBridge Schema Registry stores (`CreateSchema`'s `Content`), in
/// characters: the stored envelope, not only `data`, must fit, on both hosts alike.
pub const MAX_SCHEMA_CHARS: usize = 100_000;

/// A compiled validator for one event version, shared by every request to its route.
pub type CompiledSchema = jsonschema::Validator;

/// Checks that `data` is a draft-4 JSON Schema a broker can enforce, naming each problem under
/// `field` (the request field that held it).
pub fn check_data_schema(field: &str, data: &Value) -> Result<(), ValidationErrors> {
    let mut errors = ValidationErrors::default();
    if !data.is_object() {
        errors.push(field, "must be a JSON Schema object");
        return Err(errors);
    }
    if let Some(declared) = data.get("$schema") {
        let is_draft4 = declared
            .as_str()
            .map(|s| s.trim_end_matches('#') == DRAFT4.trim_end_matches('#'))
            .unwrap_or(false);
        if !is_draft4 {
            errors.push(
                format!("{field}/$schema"),
                format!("only JSON Schema draft 4 ({DRAFT4}) is supported"),
            );
        }
    }
    let meta = jsonschema::draft4::meta::validator();
    for error in meta.iter_errors(data).take(MAX_ERRORS) {
        errors.push(
            pointer(field, &error.instance_path().to_string()),
            brief(error.to_string()),
        );
    }
    if errors.is_empty() {
        // The meta-schema cannot see unresolvable `$ref`s or invalid regexes; compiling can.
        if let Err(error) = compile(data) {
            errors.push(field, format!("schema cannot be compiled: {error}"));
        }
    }
    let chars = longest_envelope_chars(data);
    if chars > MAX_SCHEMA_CHARS {
        errors.push(
            field,
            format!(
                "the event schema around it would be {chars} characters; the schema registry stores at most {MAX_SCHEMA_CHARS}"
            ),
        );
    }
    errors.into_result(())
}

/// The characters of `data`'s envelope under the longest event type name and version, so that
/// a schema accepted here fits whatever it is registered as.
fn longest_envelope_chars(data: &Value) -> usize {
    let name = format!("a{}", "b".repeat(62))
        .parse::<EventTypeName>()
        .expect("the longest name is a name");
    let version = Version::new(u32::MAX).expect("a version");
    envelope(&name, version, data).to_string().chars().count()
}

/// The stored event schema: the seed-compatible envelope with the producer's `data` schema inside.
/// `definitions` of the data schema move to the root so their `#/definitions/...` refs still
/// resolve; every other reference into the data schema (`#`, `#/properties/...`) is pointed at
/// where it now sits, `#/properties/data`.
pub fn envelope(event_type: &EventTypeName, version: Version, data: &Value) -> Value {
    let mut data = data.as_object().cloned().unwrap_or_default();
    refs_in(&mut data, &mut |target| {
        if !is_definition(target)
            && let Some(rest) = target.strip_prefix('#')
            && (rest.is_empty() || rest.starts_with('/'))
        {
            *target = format!("#/properties/data{rest}");
        }
    });
    data.remove("$schema");
    data.remove("id");
    let definitions = data.remove("definitions");
    let mut doc = json!({
        "$schema": DRAFT4,
        "title": format!("{event_type}.{version}"),
        "type": "object",
        "required": ["metadata", "data"],
        "properties": {
            "metadata": {
                "type": "object",
                "required": ["event_attributes"],
                "properties": {
                    "event_attributes": {
                        "type": "object",
                        "required": ["source", "target"],
                        "properties": {
                            "source": {"type": "string", "minLength": 1, "maxLength": 256},
                            "target": {"type": "string", "pattern": "^[a-z][a-z0-9_]{1,62}$"}
                        }
                    },
                    "event_id": {"type": "string", "minLength": 1, "maxLength": 128}
                }
            },
            "data": Value::Object(data)
        }
    });
    if let (Some(defs), Some(root)) = (definitions, doc.as_object_mut()) {
        root.insert("definitions".into(), defs);
    }
    doc
}

/// Compiles a draft-4 schema. Remote `$ref`s are not fetched: the crate is built without resolvers.
pub fn compile(schema: &Value) -> Result<CompiledSchema, String> {
    jsonschema::draft4::new(schema).map_err(|e| e.to_string())
}

/// The most failing paths an answer names: an array of a million wrong items is not a million
/// errors back.
const MAX_ERRORS: usize = 100;
/// The longest reason given for one path: the validator quotes the failing value, which may be
/// megabytes, and an answer must stay small (a Lambda's is at most 6 MB).
const MAX_REASON_CHARS: usize = 300;

/// Validates an instance, naming each failing path (`/data/dest_house`) and its reason, up to
/// [`MAX_ERRORS`] of them.
pub fn validate(schema: &CompiledSchema, instance: &Value) -> Result<(), ValidationErrors> {
    if schema.is_valid(instance) {
        return Ok(());
    }
    let errors: Vec<FieldError> = schema
        .iter_errors(instance)
        .take(MAX_ERRORS)
        .map(|e| {
            let path = e.instance_path().to_string();
            FieldError::new(
                if path.is_empty() { "/".into() } else { path },
                brief(e.to_string()),
            )
        })
        .collect();
    Err(ValidationErrors(errors))
}

/// `reason` cut to [`MAX_REASON_CHARS`] characters, saying that it was.
fn brief(reason: String) -> String {
    match reason.char_indices().nth(MAX_REASON_CHARS) {
        Some((end, _)) => format!("{}… (cut at {MAX_REASON_CHARS} characters)", &reason[..end]),
        None => reason,
    }
}

fn pointer(field: &str, path: &str) -> String {
    if path.is_empty() {
        field.to_string()
    } else {
        format!("{field}{path}")
    }
}

/// The name of definition `definition` of the schema `name` when a document holds it among its
/// components: `{name}.{definition}`, in the characters component names allow (letters, digits,
/// `.`, `-`, `_`).
pub fn component_name(name: &str, definition: &str) -> String {
    let definition: String = definition
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("{name}.{definition}")
}

/// Whether a reference names a definition of the schema (`#/definitions/{name}...`).
fn is_definition(target: &str) -> bool {
    target == "#/definitions" || target.starts_with("#/definitions/")
}

/// Points each reference of a stored schema at where the schema sits once a document holds it,
/// since there `#` is that document: `#/definitions/{d}...` at the component of `d`
/// (`component_name`), every other `#...` at `root` (e.g. `#/components/schemas/{name}`).
pub fn rewrite_refs(schema: &mut Value, name: &str, root: &str) {
    for_each_ref(schema, &mut |target| {
        if let Some(definition) = target.strip_prefix("#/definitions/") {
            let (definition, rest) = match definition.split_once('/') {
                Some((definition, rest)) => (definition, format!("/{rest}")),
                None => (definition, String::new()),
            };
            let definition = definition.replace("~1", "/").replace("~0", "~");
            *target = format!(
                "#/components/schemas/{}{rest}",
                component_name(name, &definition)
            );
        } else if let Some(rest) = target.strip_prefix('#')
            && (rest.is_empty() || rest.starts_with('/'))
        {
            *target = format!("{root}{rest}");
        }
    });
}

/// Calls `f` on the target of every `$ref` where draft 4 reads a schema: not inside `enum` or
/// `default` (values), nor under a property that only happens to be named `$ref`.
fn for_each_ref(schema: &mut Value, f: &mut impl FnMut(&mut String)) {
    if let Value::Object(schema) = schema {
        refs_in(schema, f);
    }
}

/// [`for_each_ref`] of a schema object.
fn refs_in(schema: &mut serde_json::Map<String, Value>, f: &mut impl FnMut(&mut String)) {
    for (keyword, value) in schema.iter_mut() {
        match (keyword.as_str(), value) {
            ("$ref", Value::String(target)) => f(target),
            (
                "properties" | "patternProperties" | "definitions" | "dependencies",
                Value::Object(schemas),
            ) => {
                schemas.values_mut().for_each(|s| for_each_ref(s, f));
            }
            ("items" | "allOf" | "anyOf" | "oneOf", Value::Array(schemas)) => {
                schemas.iter_mut().for_each(|s| for_each_ref(s, f));
            }
            ("items" | "additionalItems" | "additionalProperties" | "not", s) => for_each_ref(s, f),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanned_parcel() -> Value {
        json!({
            "type": "object",
            "properties": {
                "dest_postal_code": {"type": "string"},
                "dest_house": {"type": "integer"},
                "parcel_weight": {"type": "number"}
            },
            "required": ["dest_postal_code", "dest_house", "parcel_weight"]
        })
    }

    fn name() -> EventTypeName {
        EventTypeName::new("scanned_parcel").expect("valid name")
    }

    #[test]
    fn the_seed_schema_is_accepted_and_enveloped() {
        assert!(check_data_schema("data", &scanned_parcel()).is_ok());
        let doc = envelope(&name(), Version::FIRST, &scanned_parcel());
        let compiled = compile(&doc).expect("envelope compiles");
        let good = json!({"metadata": {"event_attributes": {"source": "scanner", "target": "u2"}},
                          "data": {"dest_postal_code": "1234AB", "dest_house": 7, "parcel_weight": 1.5}});
        assert!(validate(&compiled, &good).is_ok());
        assert_eq!(doc["properties"]["data"], scanned_parcel());
    }

    #[test]
    fn invalid_events_name_each_failing_path() {
        let compiled =
            compile(&envelope(&name(), Version::FIRST, &scanned_parcel())).expect("compiles");
        let bad = json!({"metadata": {"event_attributes": {"source": "s", "target": "U2!"}},
                         "data": {"dest_postal_code": 1, "dest_house": "seven"}});
        let errors = validate(&compiled, &bad).expect_err("invalid").0;
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        for expected in [
            "/metadata/event_attributes/target",
            "/data/dest_postal_code",
            "/data/dest_house",
            "/data",
        ] {
            assert!(
                fields.contains(&expected),
                "{expected} missing from {fields:?}"
            );
        }
    }

    #[test]
    fn schemas_that_are_not_draft_4_are_rejected_with_the_reason() {
        let wrong_type = json!({"type": "strin"});
        let errors = check_data_schema("data", &wrong_type)
            .expect_err("invalid")
            .0;
        assert_eq!(errors[0].field, "data/type");

        let draft7 =
            json!({"$schema": "http://json-schema.org/draft-07/schema#", "type": "object"});
        let errors = check_data_schema("data", &draft7).expect_err("invalid").0;
        assert_eq!(errors[0].field, "data/$schema");

        assert!(check_data_schema("data", &json!("string")).is_err());
        // The registry's limit holds for the envelope: data that fits alone may not fit in it.
        let described = |chars: usize| json!({"type": "object", "description": "d".repeat(chars)});
        let overhead = longest_envelope_chars(&described(0));
        assert!(check_data_schema("data", &described(MAX_SCHEMA_CHARS - overhead)).is_ok());
        let errors = check_data_schema("data", &described(MAX_SCHEMA_CHARS - overhead + 1))
            .expect_err("too long")
            .0;
        assert!(errors[0].message.contains("at most 100000"), "{errors:?}");
        let bad_regex = json!({"type": "string", "pattern": "(unclosed"});
        assert!(check_data_schema("data", &bad_regex).is_err());
        let dangling = json!({"$ref": "#/definitions/missing"});
        assert!(check_data_schema("data", &dangling).is_err());
    }

    #[test]
    fn definitions_keep_resolving_inside_the_envelope() {
        let data = json!({
            "definitions": {"house": {"type": "integer", "minimum": 1}},
            "type": "object",
            "properties": {"h": {"$ref": "#/definitions/house"}}
        });
        assert!(check_data_schema("data", &data).is_ok());
        let compiled = compile(&envelope(&name(), Version::FIRST, &data)).expect("compiles");
        let event = |h: i64| json!({"metadata": {"event_attributes": {"source": "s", "target": "u1"}}, "data": {"h": h}});
        assert!(validate(&compiled, &event(3)).is_ok());
        assert!(validate(&compiled, &event(0)).is_err());
        let enveloped = envelope(&name(), Version::FIRST, &data);
        assert_eq!(enveloped["definitions"], data["definitions"]);
    }

    #[test]
    fn references_into_the_data_schema_resolve_inside_the_envelope() {
        // A tree: `#` is the data schema, not the envelope it is stored in.
        let tree = json!({
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": {"type": "string", "enum": [{"$ref": "#"}, "root"]},
                "child": {"$ref": "#"},
                "alias": {"$ref": "#/properties/name"},
                "$ref": {"type": "string"}
            }
        });
        assert!(check_data_schema("data", &tree).is_ok());
        let enveloped = envelope(&name(), Version::FIRST, &tree);
        let data = &enveloped["properties"]["data"];
        assert_eq!(data["properties"]["child"]["$ref"], "#/properties/data");
        assert_eq!(
            data["properties"]["alias"]["$ref"],
            "#/properties/data/properties/name"
        );
        // Values and a property named `$ref` are not references.
        assert_eq!(
            data["properties"]["name"]["enum"],
            tree["properties"]["name"]["enum"]
        );
        assert_eq!(data["properties"]["$ref"], json!({"type": "string"}));
        let compiled = compile(&enveloped).expect("compiles");
        let event = |data: Value| json!({"metadata": {"event_attributes": {"source": "s", "target": "u1"}}, "data": data});
        assert!(
            validate(
                &compiled,
                &event(json!({"name": "root", "child": {"name": "root"}}))
            )
            .is_ok()
        );
        let errors = validate(
            &compiled,
            &event(json!({"name": "root", "child": {"child": {}}})),
        )
        .expect_err("a nameless child")
        .0;
        assert!(
            errors.iter().any(|e| e.field == "/data/child"),
            "{errors:?}"
        );
        assert!(validate(&compiled, &event(json!({"name": "root", "alias": 3}))).is_err());
    }

    #[test]
    fn a_document_holding_a_schema_points_its_references_into_itself() {
        let mut schema = json!({
            "properties": {
                "data": {"properties": {"child": {"$ref": "#/properties/data"}}},
                "item": {"$ref": "#/definitions/a~1b/properties/c"},
                "whole": {"$ref": "#"}
            }
        });
        rewrite_refs(&mut schema, "t.v1", "#/components/schemas/t.v1");
        let properties = &schema["properties"];
        assert_eq!(
            properties["data"]["properties"]["child"]["$ref"],
            "#/components/schemas/t.v1/properties/data"
        );
        assert_eq!(
            properties["item"]["$ref"],
            "#/components/schemas/t.v1.a_b/properties/c"
        );
        assert_eq!(properties["whole"]["$ref"], "#/components/schemas/t.v1");
    }

    #[test]
    fn a_huge_invalid_value_gets_a_small_answer() {
        let compiled =
            compile(&envelope(&name(), Version::FIRST, &scanned_parcel())).expect("compiles");
        let huge = "\"".repeat(200_000);
        let event = json!({"metadata": {"event_attributes": {"source": huge, "target": "u1"}},
                           "data": huge});
        let errors = validate(&compiled, &event).expect_err("invalid").0;
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert!(
            fields.contains(&"/metadata/event_attributes/source"),
            "{fields:?}"
        );
        assert!(fields.contains(&"/data"), "{fields:?}");
        let size: usize = errors.iter().map(|e| e.message.len()).sum();
        assert!(size < 2_000, "{size} bytes of reasons");

        let integers = json!({"type": "array", "items": {"type": "integer"}});
        let compiled = compile(&envelope(&name(), Version::FIRST, &integers)).expect("compiles");
        let event = json!({"metadata": {"event_attributes": {"source": "s", "target": "u1"}},
                           "data": vec!["x"; 1_000]});
        let errors = validate(&compiled, &event).expect_err("invalid").0;
        assert_eq!(errors.len(), MAX_ERRORS);
    }
}
