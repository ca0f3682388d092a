//! `GET /asyncapi/{application}` on the running local host answers an AsyncAPI 3 document that
//! the AsyncAPI parser from npm (tests/asyncapi/, installed by scripts/setup.sh) accepts: a
//! channel per active event version the application may publish, its message's payload the
//! version's enveloped schema, and the broker's HTTP binding.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use busway_tests::{Broker, seed_event, v2_data_schema};
use serde_json::{Value, json};

/// Runs tests/asyncapi/validate.mjs on `document`: its exit status and its lines.
fn parse_with_asyncapi_parser(document: &Value) -> (bool, String) {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("asyncapi");
    assert!(
        dir.join("node_modules/@asyncapi/parser").is_dir(),
        "the AsyncAPI parser is not installed in {}: run scripts/setup.sh",
        dir.display()
    );
    let mut child = Command::new("node")
        .arg("validate.mjs")
        .current_dir(&dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("node runs");
    child
        .stdin
        .take()
        .expect("a stdin")
        .write_all(document.to_string().as_bytes())
        .expect("the document is written");
    let output = child.wait_with_output().expect("node ends");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applications_asyncapi_document_passes_the_asyncapi_parser() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    let mut v2 = json!({"data": v2_data_schema(), "description": "Parcel scanned by id"});
    // A definition and a reference to it, as producers' schemas have.
    v2["data"]["definitions"] = json!({"weight": {"type": "number", "minimum": 0}});
    v2["data"]["properties"]["weight"] = json!({"$ref": "#/definitions/weight"});
    busway.add_deployed_version("scanned_parcel", &v2).await;

    let reply = busway.get("/asyncapi/demo").await;
    let document = reply.expect(200).clone();
    assert_eq!(document["asyncapi"], "3.0.0");
    let channels = document["channels"].as_object().expect("channels");
    assert_eq!(
        channels.keys().collect::<Vec<_>>(),
        ["scanned_parcel.v1", "scanned_parcel.v2"]
    );
    assert_eq!(
        document["channels"]["scanned_parcel.v2"]["address"],
        "/scanned_parcel/2"
    );
    let broker = url::Url::parse(&busway.broker_url("/")).expect("a URL");
    assert_eq!(
        document["servers"]["broker"]["host"],
        format!(
            "{}:{}",
            broker.host_str().expect("a host"),
            broker.port().expect("a port")
        )
    );
    let operation = &document["operations"]["publish_scanned_parcel_v1"];
    assert_eq!(operation["action"], "send");
    assert_eq!(operation["bindings"]["http"]["method"], "POST");

    // The payload is the registry's enveloped schema, its definitions moved to components.
    let stored = busway.get("/events/scanned_parcel/versions/1").await;
    let mut stored = stored.expect(200)["schema"].clone();
    stored
        .as_object_mut()
        .expect("a schema object")
        .remove("$schema");
    assert_eq!(
        document["components"]["messages"]["scanned_parcel.v1"]["payload"],
        stored
    );
    let v2_payload = &document["components"]["messages"]["scanned_parcel.v2"]["payload"];
    assert_eq!(
        v2_payload["properties"]["data"]["properties"]["weight"]["$ref"],
        "#/components/schemas/scanned_parcel.v2.weight"
    );

    let (valid, diagnostics) = parse_with_asyncapi_parser(&document);
    assert!(valid, "the AsyncAPI parser refused it: {diagnostics}");
    assert!(
        diagnostics.contains(r#""channels":["/scanned_parcel/1","/scanned_parcel/2"]"#),
        "{diagnostics}"
    );

    // The parser is not lenient: a channel whose message is missing is refused.
    let mut broken = document.clone();
    broken["components"]["messages"]
        .as_object_mut()
        .expect("messages")
        .remove("scanned_parcel.v1");
    let (valid, diagnostics) = parse_with_asyncapi_parser(&broken);
    assert!(!valid, "a dangling $ref passed: {diagnostics}");

    busway
        .get("/asyncapi/nobody")
        .await
        .expect_error(404, "not_found");
    busway.stop().await;
}
