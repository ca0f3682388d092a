//! The provisioning state machine agrees with the task contract in `busway_core::tasks` and with
//! the definition substitutions the platform (`infra/`) provides.

use std::collections::BTreeSet;
use std::path::PathBuf;

use busway_core::tasks;
use serde_json::Value;

fn repo_file(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join(rel)
}

fn read_json(rel: &str) -> Value {
    let path = repo_file(rel);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{} cannot be read: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn definition() -> Value {
    read_json("statemachines/provisioning.asl.json")
}

fn states(def: &Value) -> &serde_json::Map<String, Value> {
    def["States"].as_object().expect("States is an object")
}

/// `${Name}` occurrences anywhere in a text.
fn placeholders(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        let after = &rest[start + 2..];
        let end = after.find('}').expect("every ${ is closed");
        out.insert(after[..end].to_string());
        rest = &after[end..];
    }
    out
}

/// Every `ErrorEquals` name used by a Retry or Catch of any state.
fn error_names(def: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for state in states(def).values() {
        for list in ["Retry", "Catch"] {
            for rule in state[list].as_array().into_iter().flatten() {
                for e in rule["ErrorEquals"]
                    .as_array()
                    .expect("ErrorEquals is a list")
                {
                    out.insert(e.as_str().expect("error names are strings").to_string());
                }
            }
        }
    }
    out
}

/// AWS service errors the state machine retries; anything else outside `States.*` must be a
/// busway `error_type`.
const SERVICE_ERRORS: &[&str] = &[
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "CodeBuild.AccountLimitExceededException",
    "CodeBuild.CodeBuildException",
    busway_core::tasks::CONDITION_FAILED,
];

const STATES_ERRORS: &[&str] = &["States.ALL", "States.TaskFailed", "States.Timeout"];

#[test]
fn the_definition_parses_and_every_transition_names_a_state() {
    let def = definition();
    let states = states(&def);
    let start = def["StartAt"].as_str().expect("StartAt");
    assert!(states.contains_key(start), "StartAt {start} is not a state");
    for (name, state) in states {
        let mut targets: Vec<&str> = Vec::new();
        targets.extend(state["Next"].as_str());
        targets.extend(state["Default"].as_str());
        for list in ["Catch", "Choices"] {
            for rule in state[list].as_array().into_iter().flatten() {
                targets.extend(rule["Next"].as_str());
            }
        }
        for t in targets {
            assert!(states.contains_key(t), "{name} moves to unknown state {t}");
        }
    }
}

#[test]
fn every_placeholder_has_a_substitution_in_infra_and_every_substitution_is_used() {
    let text = std::fs::read_to_string(repo_file("statemachines/provisioning.asl.json"))
        .expect("definition readable");
    let used = placeholders(&text);
    let provided: BTreeSet<String> = read_json("infra/definition-substitutions.json")
        .as_object()
        .expect("substitutions are an object")
        .keys()
        .cloned()
        .collect();
    assert!(!used.is_empty(), "the definition names no placeholder");
    let missing: Vec<_> = used.difference(&provided).collect();
    assert!(
        missing.is_empty(),
        "no substitution in infra for {missing:?}"
    );
    let unused: Vec<_> = provided.difference(&used).collect();
    assert!(
        unused.is_empty(),
        "infra substitutes {unused:?}, unused by the definition"
    );
}

#[test]
fn no_arn_or_account_is_written_into_the_definition() {
    let text = std::fs::read_to_string(repo_file("statemachines/provisioning.asl.json"))
        .expect("definition readable");
    for line in text.lines().filter(|l| l.contains("arn:aws:")) {
        assert!(
            line.contains("arn:aws:states:::"),
            "a resource ARN is hard-coded instead of a ${{Placeholder}}: {line}"
        );
    }
    assert!(
        !text.contains("123456789012"),
        "an account id is hard-coded"
    );
}

#[test]
fn every_custom_error_name_is_a_known_error_type() {
    let names = error_names(&definition());
    for name in &names {
        if name.starts_with("States.") {
            assert!(STATES_ERRORS.contains(&name.as_str()), "unexpected {name}");
        } else {
            assert!(
                tasks::ALL.contains(&name.as_str()) || SERVICE_ERRORS.contains(&name.as_str()),
                "{name} is neither a busway error_type (tasks::ALL) nor a listed AWS service error"
            );
        }
    }
    // The task errors the validator can return are all handled by name, not only by States.ALL.
    for e in [
        tasks::DEPLOY_CONFIG_INVALID,
        tasks::DEPLOY_CONFIG_NOT_FOUND,
        tasks::STORE_UNAVAILABLE,
    ] {
        assert!(names.contains(e), "the definition never names {e}");
    }
}

#[test]
fn every_task_names_a_known_function_or_service_integration() {
    let def = definition();
    let provisioner_arn = format!(
        "${{{}FunctionArn}}",
        capitalized(tasks::PROVISIONER_FUNCTION)
    );
    for (name, state) in states(&def) {
        if state["Type"] != "Task" {
            continue;
        }
        let resource = state["Resource"].as_str().expect("Task has a Resource");
        match resource {
            "arn:aws:states:::lambda:invoke" => {
                assert_eq!(
                    state["Parameters"]["FunctionName"], provisioner_arn,
                    "{name} invokes a function other than the provisioner"
                );
                let task = state["Parameters"]["Payload"]["task"]
                    .as_str()
                    .expect("a lambda task names its task");
                assert!(tasks::TASKS.contains(&task), "{name}: unknown task {task}");
                assert!(tasks::FUNCTIONS.contains(&tasks::PROVISIONER_FUNCTION));
            }
            "arn:aws:states:::dynamodb:updateItem" => {
                assert_eq!(state["Parameters"]["TableName"], "${DeploymentsTableName}");
            }
            "arn:aws:states:::codebuild:startBuild.sync" => {
                let project = state["Parameters"]["ProjectName"]
                    .as_str()
                    .expect("project");
                assert!(
                    ["${ProducerBuildProjectName}", "${ConsumerBuildProjectName}"]
                        .contains(&project),
                    "{name} builds unknown project {project}"
                );
            }
            other => panic!("{name} uses an unknown resource {other}"),
        }
    }
}

fn describes_a_build(state: &Value) -> bool {
    state["Parameters"]["Payload"]["task"] == tasks::TASK_DESCRIBE_BUILD
}

/// Where a transition to `target` ends up once the describe-build tasks on the way are passed.
fn past_describes<'a>(states: &'a serde_json::Map<String, Value>, mut target: &'a str) -> &'a str {
    while let Some(next) = states
        .get(target)
        .filter(|s| describes_a_build(s))
        .and_then(|s| s["Next"].as_str())
    {
        target = next;
    }
    target
}

#[test]
fn every_task_either_catches_everything_into_the_failure_record_or_is_it() {
    let def = definition();
    let states = states(&def);
    for (name, state) in states {
        if state["Type"] != "Task" || name == "RecordFailed" {
            continue;
        }
        let catch_all = state["Catch"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["ErrorEquals"] == serde_json::json!(["States.ALL"]));
        let catch_all =
            catch_all.unwrap_or_else(|| panic!("{name} lets an error end the execution"));
        let target = catch_all["Next"].as_str().expect("a Catch names its Next");
        if describes_a_build(state) {
            // Describing a build never changes how the deployment ends: a failure moves on to
            // the record the task precedes, keeping the state (and $.failure) as it was.
            assert_eq!(Some(target), state["Next"].as_str(), "{name}");
            assert!(
                catch_all["ResultPath"].is_null(),
                "{name} overwrites its input"
            );
        } else {
            assert_eq!(
                past_describes(states, target),
                "RecordFailed",
                "{name} lets an error end the execution without a FAILED record"
            );
        }
    }
}

#[test]
fn every_build_is_described_whether_it_succeeds_or_fails() {
    let def = definition();
    let states = states(&def);
    let builds: Vec<_> = states
        .iter()
        .filter(|(_, s)| s["Resource"] == "arn:aws:states:::codebuild:startBuild.sync")
        .collect();
    assert!(!builds.is_empty(), "the definition runs no build");
    for (name, build) in builds {
        assert_eq!(build["ResultSelector"]["id.$"], "$.Build.Id", "{name}");
        let succeeded = &states[build["Next"].as_str().expect("Next")];
        assert!(describes_a_build(succeeded), "{name} succeeds undescribed");
        assert_eq!(
            succeeded["Parameters"]["Payload"]["build_id.$"],
            format!("{}.id", build["ResultPath"].as_str().expect("ResultPath")),
            "{name}"
        );
        assert_eq!(succeeded["Next"], "RecordSucceeded", "{name}");
        for catch in build["Catch"].as_array().expect("a build catches") {
            let failed = &states[catch["Next"].as_str().expect("Next")];
            assert!(describes_a_build(failed), "{name} fails undescribed");
            assert_eq!(
                failed["Parameters"]["Payload"]["failure.$"], catch["ResultPath"],
                "{name}: the describe task reads another failure than the build's"
            );
        }
    }
}

#[test]
fn every_status_of_the_pipeline_after_pending_is_recorded() {
    let def = definition();
    let written: BTreeSet<&str> = states(&def)
        .values()
        .filter_map(|s| s["Parameters"]["ExpressionAttributeValues"][":status"]["S"].as_str())
        .collect();
    use busway_core::deployment::DeploymentStatus::*;
    for s in [Validating, Building, Succeeded, Failed] {
        assert!(
            written.contains(s.as_str()),
            "status {} is never written",
            s.as_str()
        );
    }
    for s in &written {
        assert!(
            busway_core::deployment::DeploymentStatus::parse(s).is_some(),
            "{s} is not a deployment status"
        );
    }
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}
