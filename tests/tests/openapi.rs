//! The OpenAPI documents the running local host serves (`GET /openapi.json` on the portal and the
//! broker) name every route the code registers, and the broker's names each deployed version
//! with its enveloped schema as the request body.
//!
//! The routes are read from the router definitions in `functions/*/src`: every `.route(...)` and
//! `.route_service(...)` call with the methods of its method router, and every
//! `#[utoipa::path(...)]` that `utoipa_axum::routes!` registers. Routes of the broker crate
//! belong to the broker's document, all others to the portal's.

use std::path::{Path, PathBuf};

use busway_tests::{Broker, seed_event};
use serde_json::Value;

/// Routes that are not part of either API, and so of neither document: the catalog web page
/// and the operators' metrics and health probes.
const NOT_API: [&str; 4] = ["/ui", "/metrics", "/healthz", "/readyz"];

/// Sources whose routers serve something other than busway's APIs: the demo's own consumer.
const NOT_API_SOURCES: [&str; 1] = ["functions/local/src/demo.rs"];

const METHODS: [&str; 5] = ["get", "post", "put", "delete", "patch"];

#[derive(Debug)]
struct Route {
    source: String,
    method: String,
    path: String,
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a readable source folder") {
        let path = entry.expect("a folder entry").path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The text between the parenthesis at `open` and its match.
fn argument(text: &str, open: usize) -> &str {
    let mut depth = 0;
    for (i, c) in text[open..].char_indices() {
        match c {
            '(' => depth += 1,
            ')' => {
                depth -= 1;
                if depth == 0 {
                    return &text[open + 1..open + i];
                }
            }
            _ => {}
        }
    }
    panic!("unbalanced parentheses after byte {open}")
}

fn first_string(text: &str) -> Option<&str> {
    let start = text.find('"')? + 1;
    let end = start + text[start..].find('"')?;
    Some(&text[start..end])
}

/// `{*rest}`, axum's catch-all, is `{rest}` in a document.
fn document_path(path: &str) -> String {
    path.replace("{*", "{")
}

fn routes_in(root: &Path, file: &Path) -> Vec<Route> {
    let text = std::fs::read_to_string(file).expect("a readable source file");
    let source = file
        .strip_prefix(root)
        .expect("under the repository")
        .to_string_lossy()
        .into_owned();
    let mut routes = Vec::new();
    for call in [".route(", ".route_service("] {
        for (at, _) in text.match_indices(call) {
            let args = argument(&text, at + call.len() - 1);
            let path = first_string(args).expect("a route's path is a literal");
            let after_path = &args[args.find(',').expect("a route's handler")..];
            let methods: Vec<&str> = METHODS
                .into_iter()
                .filter(|m| {
                    after_path.contains(&format!("{m}(")) || after_path.contains(&format!(".{m}("))
                })
                .collect();
            assert!(
                !methods.is_empty(),
                "{source}: no method found for route {path}"
            );
            routes.extend(methods.into_iter().map(|method| Route {
                source: source.clone(),
                method: method.into(),
                path: document_path(path),
            }));
        }
    }
    for (at, _) in text.match_indices("#[utoipa::path(") {
        let args = argument(&text, at + "#[utoipa::path".len());
        let method = args
            .split(',')
            .next()
            .expect("a method first")
            .trim()
            .to_string();
        let path_at = args.find("path = ").expect("a path");
        let path = first_string(&args[path_at..]).expect("a literal path");
        routes.push(Route {
            source: source.clone(),
            method,
            path: document_path(path),
        });
    }
    routes
}

fn declared_routes() -> Vec<Route> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the repository")
        .to_path_buf();
    let mut files = Vec::new();
    for crate_dir in std::fs::read_dir(root.join("functions")).expect("functions/") {
        let src = crate_dir.expect("a crate").path().join("src");
        if src.is_dir() {
            rust_files(&src, &mut files);
        }
    }
    files
        .iter()
        .flat_map(|file| routes_in(&root, file))
        .filter(|r| !NOT_API_SOURCES.contains(&r.source.as_str()))
        .filter(|r| {
            !NOT_API
                .iter()
                .any(|p| r.path == *p || r.path.starts_with(&format!("{p}/")))
        })
        .collect()
}

async fn document(busway: &Broker, url: String) -> Value {
    let reply = busway.send(reqwest::Client::new().get(url)).await;
    let document = reply.expect(200).clone();
    assert_eq!(document["openapi"], "3.1.0");
    document
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_the_code_declares_is_in_its_api_document() {
    let routes = declared_routes();
    // The reading of the sources finds what is known to be there.
    for (method, path) in [
        ("post", "/events"),
        ("post", "/{event_type}/{version}"),
        ("get", "/queues/{name}/messages"),
        ("get", "/openapi.json"),
    ] {
        assert!(
            routes.iter().any(|r| r.method == method && r.path == path),
            "{method} {path} was not found in the sources: {routes:?}"
        );
    }

    let busway = Broker::start().await;
    let portal = document(&busway, busway.portal_url("/openapi.json")).await;
    let broker = document(&busway, busway.broker_url("/openapi.json")).await;
    let missing: Vec<String> = routes
        .iter()
        .filter(|r| {
            let document = if r.source.starts_with("functions/injector/") {
                &broker
            } else {
                &portal
            };
            document["paths"][&r.path][&r.method].is_null()
        })
        .map(|r| format!("{} {} ({})", r.method.to_uppercase(), r.path, r.source))
        .collect();
    assert!(
        missing.is_empty(),
        "routes missing from their OpenAPI document: {missing:?}"
    );
    busway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_broker_document_has_each_deployed_version_with_its_enveloped_schema() {
    let busway = Broker::start().await;
    busway.create_deployed_event(&seed_event()).await;
    let stored = busway.get("/events/scanned_parcel/versions/1").await;
    let stored = stored.expect(200)["schema"].clone();

    let broker = document(&busway, busway.broker_url("/openapi.json")).await;
    let operation = &broker["paths"]["/scanned_parcel/1"]["post"];
    let body = &operation["requestBody"]["content"]["application/json"]["schema"]["$ref"];
    assert_eq!(body, "#/components/schemas/scanned_parcel.v1");
    assert_eq!(
        broker["components"]["schemas"]["scanned_parcel.v1"], stored,
        "the request body is the version's enveloped schema"
    );
    assert_eq!(
        operation["security"],
        serde_json::json!([{"bearer_key": []}])
    );
    assert!(operation["responses"]["400"].is_object());

    // Without a key the document is not served, like every other route.
    let anonymous = busway
        .send_as(
            reqwest::Client::new().get(busway.broker_url("/openapi.json")),
            None,
        )
        .await;
    anonymous.expect_error(401, "unauthorized");
    busway.stop().await;
}
