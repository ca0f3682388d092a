//! Runs `statemachines/provisioning.asl.json` on one machine: exactly the Amazon States Language
//! features that file uses, nothing more. A definition using any other state type, field, path
//! form or intrinsic is refused at load time with an error naming the state and the feature, so
//! the file cannot drift into something the local host silently runs differently from AWS.
//!
//! Supported: states `Task`, `Choice`, `Pass`, `Succeed`, `Fail`; fields `Type`, `Comment`,
//! `Next`, `End`, `Resource`, `Parameters` (keys ending in `.$` take a path or an intrinsic),
//! `ResultSelector`, `ResultPath` (a path or null), `Retry` (`ErrorEquals`, `IntervalSeconds`,
//! `MaxAttempts`, `BackoffRate`), `Catch` (`ErrorEquals`, `ResultPath`, `Next`), `Choices` with
//! `Variable` + `StringEquals` + `Next`, `Default`, `Result`, `Error`, `Cause`; paths `$`,
//! `$.a.b` and the context object `$$.State.EnteredTime`, `$$.Execution.Id`, `$$.Execution.Name`; intrinsics
//! `States.Format` and `States.JsonToString`.

use std::collections::BTreeMap;

use async_trait::async_trait;
use serde_json::{Map, Value, json};

/// A task's failure: the error name Retry/Catch match, and its cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure {
    pub error: String,
    pub cause: String,
}

/// What the host provides: the tasks (dispatched by `Resource`), the clock and the wait between
/// retries.
#[async_trait]
pub trait TaskRunner: Send + Sync {
    async fn run(&self, resource: &str, input: Value) -> Result<Value, TaskFailure>;
    /// The current time, RFC 3339 (`$$.State.EnteredTime`).
    fn now(&self) -> String;
    /// Waits before a retry.
    async fn wait(&self, seconds: f64);
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LoadError {
    #[error("the definition is not JSON: {0}")]
    Json(String),
    #[error("placeholder ${{{0}}} has no substitution")]
    MissingSubstitution(String),
    #[error("state {state}: {feature} is not supported by the local runner")]
    Unsupported { state: String, feature: String },
    #[error("state {state}: {problem}")]
    Invalid { state: String, problem: String },
}

/// How an execution ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded(Value),
    Failed { error: String, cause: String },
}

#[derive(Debug)]
pub struct StateMachine {
    start_at: String,
    states: Map<String, Value>,
}

const STATE_FIELDS: &[(&str, &[&str])] = &[
    (
        "Task",
        &[
            "Type",
            "Comment",
            "Next",
            "End",
            "Resource",
            "Parameters",
            "ResultSelector",
            "ResultPath",
            "Retry",
            "Catch",
        ],
    ),
    ("Choice", &["Type", "Comment", "Choices", "Default"]),
    (
        "Pass",
        &["Type", "Comment", "Next", "End", "Result", "ResultPath"],
    ),
    ("Succeed", &["Type", "Comment"]),
    ("Fail", &["Type", "Comment", "Error", "Cause"]),
];

fn unsupported(state: &str, feature: impl Into<String>) -> LoadError {
    LoadError::Unsupported {
        state: state.to_string(),
        feature: feature.into(),
    }
}

fn invalid(state: &str, problem: impl Into<String>) -> LoadError {
    LoadError::Invalid {
        state: state.to_string(),
        problem: problem.into(),
    }
}

/// Replaces every `${Name}` by its substitution.
pub fn substitute(text: &str, values: &BTreeMap<String, String>) -> Result<String, LoadError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| LoadError::MissingSubstitution(after.to_string()))?;
        let name = &after[..end];
        let value = values
            .get(name)
            .ok_or_else(|| LoadError::MissingSubstitution(name.to_string()))?;
        out.push_str(value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

impl StateMachine {
    /// Parses the definition after substitution and refuses any feature this runner lacks.
    pub fn load(text: &str, substitutions: &BTreeMap<String, String>) -> Result<Self, LoadError> {
        let text = substitute(text, substitutions)?;
        let def: Value = serde_json::from_str(&text).map_err(|e| LoadError::Json(e.to_string()))?;
        let top = def
            .as_object()
            .ok_or_else(|| LoadError::Json("not an object".into()))?;
        for k in top.keys() {
            if !["Comment", "StartAt", "States"].contains(&k.as_str()) {
                return Err(unsupported("(top level)", format!("field {k}")));
            }
        }
        let start_at = top
            .get("StartAt")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("(top level)", "StartAt is missing"))?;
        let states = top
            .get("States")
            .and_then(Value::as_object)
            .ok_or_else(|| invalid("(top level)", "States is missing"))?
            .clone();
        let machine = Self {
            start_at: start_at.to_string(),
            states,
        };
        machine.check()?;
        Ok(machine)
    }

    fn check(&self) -> Result<(), LoadError> {
        self.target("(top level)", &self.start_at)?;
        for (name, state) in &self.states {
            let ty = state["Type"]
                .as_str()
                .ok_or_else(|| invalid(name, "Type is missing"))?;
            let fields = STATE_FIELDS
                .iter()
                .find(|(t, _)| *t == ty)
                .map(|(_, f)| *f)
                .ok_or_else(|| unsupported(name, format!("state type {ty}")))?;
            let obj = state
                .as_object()
                .ok_or_else(|| invalid(name, "not an object"))?;
            for k in obj.keys() {
                if !fields.contains(&k.as_str()) {
                    return Err(unsupported(name, format!("field {k} on a {ty} state")));
                }
            }
            if matches!(ty, "Task" | "Pass") {
                match (obj.get("Next").and_then(Value::as_str), obj.get("End")) {
                    (Some(next), None) => self.target(name, next)?,
                    (None, Some(Value::Bool(true))) => {}
                    _ => return Err(invalid(name, "needs exactly one of Next or End: true")),
                }
            }
            for key in ["Parameters", "ResultSelector"] {
                if let Some(t) = obj.get(key) {
                    check_template(name, t)?;
                }
            }
            if let Some(p) = obj.get("ResultPath") {
                check_result_path(name, p)?;
            }
            for r in obj
                .get("Retry")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                for k in r
                    .as_object()
                    .ok_or_else(|| invalid(name, "a retrier is not an object"))?
                    .keys()
                {
                    if ![
                        "ErrorEquals",
                        "IntervalSeconds",
                        "MaxAttempts",
                        "BackoffRate",
                    ]
                    .contains(&k.as_str())
                    {
                        return Err(unsupported(name, format!("Retry field {k}")));
                    }
                }
                error_list(name, r)?;
            }
            for c in obj
                .get("Catch")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                for k in c
                    .as_object()
                    .ok_or_else(|| invalid(name, "a catcher is not an object"))?
                    .keys()
                {
                    if !["ErrorEquals", "ResultPath", "Next"].contains(&k.as_str()) {
                        return Err(unsupported(name, format!("Catch field {k}")));
                    }
                }
                error_list(name, c)?;
                if let Some(p) = c.get("ResultPath") {
                    check_result_path(name, p)?;
                }
                self.target(
                    name,
                    c["Next"]
                        .as_str()
                        .ok_or_else(|| invalid(name, "a catcher has no Next"))?,
                )?;
            }
            if ty == "Choice" {
                for rule in obj
                    .get("Choices")
                    .and_then(Value::as_array)
                    .ok_or_else(|| invalid(name, "Choices is missing"))?
                {
                    let r = rule
                        .as_object()
                        .ok_or_else(|| invalid(name, "a choice is not an object"))?;
                    for k in r.keys() {
                        if !["Variable", "StringEquals", "Next"].contains(&k.as_str()) {
                            return Err(unsupported(name, format!("choice rule {k}")));
                        }
                    }
                    parse_path(
                        name,
                        r.get("Variable")
                            .and_then(Value::as_str)
                            .ok_or_else(|| invalid(name, "a choice has no Variable"))?,
                    )?;
                    if !r.get("StringEquals").is_some_and(Value::is_string) {
                        return Err(invalid(name, "a choice needs a string StringEquals"));
                    }
                    self.target(
                        name,
                        r["Next"]
                            .as_str()
                            .ok_or_else(|| invalid(name, "a choice has no Next"))?,
                    )?;
                }
                if let Some(d) = obj.get("Default") {
                    self.target(
                        name,
                        d.as_str()
                            .ok_or_else(|| invalid(name, "Default is not a string"))?,
                    )?;
                }
            }
        }
        Ok(())
    }

    fn target(&self, state: &str, next: &str) -> Result<(), LoadError> {
        if self.states.contains_key(next) {
            Ok(())
        } else {
            Err(invalid(state, format!("moves to unknown state {next}")))
        }
    }

    /// Runs an execution to its end.
    pub async fn run(&self, runner: &dyn TaskRunner, execution_id: &str, input: Value) -> Outcome {
        let mut current = self.start_at.clone();
        let mut data = input;
        loop {
            let state = &self.states[&current];
            // An execution ARN ends in the execution's name, as Step Functions makes them.
            let name = execution_id.rsplit(':').next().unwrap_or(execution_id);
            let ctx = json!({"State": {"EnteredTime": runner.now(), "Name": current}, "Execution": {"Id": execution_id, "Name": name}});
            let next = match state["Type"].as_str().unwrap_or_default() {
                "Succeed" => return Outcome::Succeeded(data),
                "Fail" => {
                    return Outcome::Failed {
                        error: state["Error"].as_str().unwrap_or_default().to_string(),
                        cause: state["Cause"].as_str().unwrap_or_default().to_string(),
                    };
                }
                "Pass" => {
                    let result = state.get("Result").cloned().unwrap_or_else(|| data.clone());
                    match apply_result_path(data, state.get("ResultPath"), result) {
                        Ok(d) => data = d,
                        Err(f) => {
                            return Outcome::Failed {
                                error: f.error,
                                cause: f.cause,
                            };
                        }
                    }
                    state["Next"].as_str().map(str::to_string)
                }
                "Choice" => {
                    let chosen = state["Choices"].as_array().into_iter().flatten().find(|r| {
                        let path = r["Variable"].as_str().unwrap_or_default();
                        read_path(&data, &ctx, path).ok().as_ref() == Some(&r["StringEquals"])
                    });
                    match chosen
                        .and_then(|r| r["Next"].as_str())
                        .or(state["Default"].as_str())
                    {
                        Some(n) => Some(n.to_string()),
                        None => {
                            return Outcome::Failed {
                                error: "States.NoChoiceMatched".into(),
                                cause: format!("no choice of {current} matched"),
                            };
                        }
                    }
                }
                _ => match self.run_task(runner, state, &ctx, data.clone()).await {
                    Ok(d) => {
                        data = d;
                        state["Next"].as_str().map(str::to_string)
                    }
                    Err(failure) => {
                        let catcher = state["Catch"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .find(|c| matches(c, &failure.error));
                        let Some(c) = catcher else {
                            return Outcome::Failed {
                                error: failure.error,
                                cause: failure.cause,
                            };
                        };
                        let value = json!({"Error": failure.error, "Cause": failure.cause});
                        match apply_result_path(data, c.get("ResultPath"), value) {
                            Ok(d) => data = d,
                            Err(f) => {
                                return Outcome::Failed {
                                    error: f.error,
                                    cause: f.cause,
                                };
                            }
                        }
                        c["Next"].as_str().map(str::to_string)
                    }
                },
            };
            match next {
                Some(n) => current = n,
                None => return Outcome::Succeeded(data),
            }
        }
    }

    async fn run_task(
        &self,
        runner: &dyn TaskRunner,
        state: &Value,
        ctx: &Value,
        data: Value,
    ) -> Result<Value, TaskFailure> {
        let resource = state["Resource"].as_str().unwrap_or_default();
        let params = match state.get("Parameters") {
            Some(t) => eval_template(t, &data, ctx)?,
            None => data.clone(),
        };
        let mut attempts: BTreeMap<usize, u64> = BTreeMap::new();
        loop {
            match runner.run(resource, params.clone()).await {
                Ok(result) => {
                    let result = match state.get("ResultSelector") {
                        Some(t) => eval_template(t, &result, ctx)?,
                        None => result,
                    };
                    return apply_result_path(data, state.get("ResultPath"), result);
                }
                Err(failure) => {
                    let retrier = state["Retry"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .enumerate()
                        .find(|(_, r)| matches(r, &failure.error));
                    let Some((i, r)) = retrier else {
                        return Err(failure);
                    };
                    let done = attempts.entry(i).or_insert(0);
                    let max = r["MaxAttempts"].as_u64().unwrap_or(3);
                    if *done >= max {
                        return Err(failure);
                    }
                    let interval = r["IntervalSeconds"].as_f64().unwrap_or(1.0);
                    let rate = r["BackoffRate"].as_f64().unwrap_or(2.0);
                    runner
                        .wait(interval * rate.powi(i32::try_from(*done).unwrap_or(i32::MAX)))
                        .await;
                    *done += 1;
                }
            }
        }
    }
}

fn error_list(state: &str, rule: &Value) -> Result<(), LoadError> {
    let list = rule["ErrorEquals"]
        .as_array()
        .ok_or_else(|| invalid(state, "ErrorEquals is missing"))?;
    for e in list {
        let e = e
            .as_str()
            .ok_or_else(|| invalid(state, "an error name is not a string"))?;
        if e.starts_with("States.") && !["States.ALL", "States.TaskFailed"].contains(&e) {
            return Err(unsupported(state, format!("error name {e}")));
        }
    }
    Ok(())
}

/// `States.ALL` matches everything, `States.TaskFailed` every task error, else the exact name.
fn matches(rule: &Value, error: &str) -> bool {
    rule["ErrorEquals"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .any(|e| {
            e == "States.ALL"
                || e == error
                || (e == "States.TaskFailed" && !error.starts_with("States."))
        })
}

enum PathRoot {
    Input,
    Context,
}

fn parse_path<'a>(state: &str, path: &'a str) -> Result<(PathRoot, Vec<&'a str>), LoadError> {
    let (root, rest) = if let Some(r) = path.strip_prefix("$$") {
        (PathRoot::Context, r)
    } else if let Some(r) = path.strip_prefix('$') {
        (PathRoot::Input, r)
    } else {
        return Err(unsupported(state, format!("path {path}")));
    };
    if rest.is_empty() {
        return Ok((root, Vec::new()));
    }
    let rest = rest
        .strip_prefix('.')
        .ok_or_else(|| unsupported(state, format!("path {path}")))?;
    let parts: Vec<&str> = rest.split('.').collect();
    if parts.iter().any(|p| {
        p.is_empty()
            || !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    }) {
        return Err(unsupported(state, format!("path {path} (only $.a.b)")));
    }
    Ok((root, parts))
}

fn read_path(data: &Value, ctx: &Value, path: &str) -> Result<Value, TaskFailure> {
    let runtime = |m: String| TaskFailure {
        error: "States.Runtime".into(),
        cause: m,
    };
    let (root, parts) = parse_path("", path).map_err(|e| runtime(e.to_string()))?;
    let mut v = match root {
        PathRoot::Input => data,
        PathRoot::Context => ctx,
    };
    for p in parts {
        v = v
            .get(p)
            .ok_or_else(|| runtime(format!("the path {path} matches nothing")))?;
    }
    Ok(v.clone())
}

fn check_template(state: &str, t: &Value) -> Result<(), LoadError> {
    match t {
        Value::Object(m) => {
            for (k, v) in m {
                if k.ends_with(".$") {
                    let s = v
                        .as_str()
                        .ok_or_else(|| invalid(state, format!("{k} is not a string")))?;
                    if s.starts_with("States.") {
                        parse_intrinsic(state, s)?;
                    } else {
                        parse_path(state, s)?;
                    }
                } else {
                    check_template(state, v)?;
                }
            }
            Ok(())
        }
        Value::Array(a) => a.iter().try_for_each(|v| check_template(state, v)),
        _ => Ok(()),
    }
}

fn check_result_path(state: &str, p: &Value) -> Result<(), LoadError> {
    match p {
        Value::Null => Ok(()),
        Value::String(s) => match parse_path(state, s)? {
            (PathRoot::Input, _) => Ok(()),
            (PathRoot::Context, _) => Err(invalid(state, "ResultPath cannot be a context path")),
        },
        _ => Err(invalid(state, "ResultPath must be a path or null")),
    }
}

/// `States.Format('literal with {}', $.path, ...)` or `States.JsonToString($.path)`.
fn parse_intrinsic<'a>(state: &str, s: &'a str) -> Result<(&'a str, Vec<&'a str>), LoadError> {
    let open = s
        .find('(')
        .ok_or_else(|| unsupported(state, format!("intrinsic {s}")))?;
    let name = &s[..open];
    if !["States.Format", "States.JsonToString"].contains(&name) {
        return Err(unsupported(state, format!("intrinsic {name}")));
    }
    let body = s[open + 1..]
        .strip_suffix(')')
        .ok_or_else(|| invalid(state, format!("{s} is not closed")))?;
    let args: Vec<&str> = if name == "States.Format" {
        let body = body
            .strip_prefix('\'')
            .ok_or_else(|| unsupported(state, "States.Format without a literal template"))?;
        let end = body
            .find('\'')
            .ok_or_else(|| invalid(state, "unclosed template literal"))?;
        let template = &body[..end];
        if template.contains('\\') {
            return Err(unsupported(state, "escapes in a States.Format template"));
        }
        let mut args = vec![template];
        args.extend(
            body[end + 1..]
                .split(',')
                .map(str::trim)
                .filter(|a| !a.is_empty()),
        );
        if args.len() - 1 != template.matches("{}").count() {
            return Err(invalid(
                state,
                format!("{s}: argument count differs from the placeholders"),
            ));
        }
        for a in &args[1..] {
            parse_path(state, a)?;
        }
        args
    } else {
        parse_path(state, body.trim())?;
        vec![body.trim()]
    };
    Ok((name, args))
}

fn eval_intrinsic(s: &str, data: &Value, ctx: &Value) -> Result<Value, TaskFailure> {
    let (name, args) = parse_intrinsic("", s).map_err(|e| TaskFailure {
        error: "States.Runtime".into(),
        cause: e.to_string(),
    })?;
    if name == "States.JsonToString" {
        return Ok(Value::String(read_path(data, ctx, args[0])?.to_string()));
    }
    let mut out = String::new();
    let mut pieces = args[0].split("{}");
    out.push_str(pieces.next().unwrap_or_default());
    for (piece, arg) in pieces.zip(&args[1..]) {
        match read_path(data, ctx, arg)? {
            Value::String(v) => out.push_str(&v),
            other => out.push_str(&other.to_string()),
        }
        out.push_str(piece);
    }
    Ok(Value::String(out))
}

fn eval_template(t: &Value, data: &Value, ctx: &Value) -> Result<Value, TaskFailure> {
    Ok(match t {
        Value::Object(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                if let Some(key) = k.strip_suffix(".$") {
                    let s = v.as_str().unwrap_or_default();
                    let value = if s.starts_with("States.") {
                        eval_intrinsic(s, data, ctx)?
                    } else {
                        read_path(data, ctx, s)?
                    };
                    out.insert(key.to_string(), value);
                } else {
                    out.insert(k.clone(), eval_template(v, data, ctx)?);
                }
            }
            Value::Object(out)
        }
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|v| eval_template(v, data, ctx))
                .collect::<Result<_, _>>()?,
        ),
        other => other.clone(),
    })
}

/// `ResultPath`: absent keeps the result only, null keeps the input, `$.a.b` sets that field.
fn apply_result_path(
    mut data: Value,
    path: Option<&Value>,
    result: Value,
) -> Result<Value, TaskFailure> {
    let p = match path {
        None => return Ok(result),
        Some(Value::Null) => return Ok(data),
        Some(p) => p.as_str().unwrap_or("$"),
    };
    let parts: Vec<&str> = p
        .trim_start_matches('$')
        .split('.')
        .filter(|s| !s.is_empty())
        .collect();
    let Some((last, parents)) = parts.split_last() else {
        return Ok(result);
    };
    let mut v = &mut data;
    for part in parents {
        if !v.is_object() {
            *v = Value::Object(Map::new());
        }
        v = v
            .as_object_mut()
            .map(|m| {
                m.entry(part.to_string())
                    .or_insert_with(|| Value::Object(Map::new()))
            })
            .ok_or_else(|| TaskFailure {
                error: "States.Runtime".into(),
                cause: format!("ResultPath {p}"),
            })?;
    }
    match v.as_object_mut() {
        Some(m) => {
            m.insert(last.to_string(), result);
            Ok(data)
        }
        None => Err(TaskFailure {
            error: "States.Runtime".into(),
            cause: format!("ResultPath {p} does not point into an object"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    fn definition() -> String {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../statemachines/provisioning.asl.json"
        );
        std::fs::read_to_string(path).expect("the provisioning definition is readable")
    }

    fn substitutions() -> BTreeMap<String, String> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../infra/definition-substitutions.json"
        );
        let keys: Map<String, Value> =
            serde_json::from_str(&std::fs::read_to_string(path).expect("substitutions readable"))
                .expect("substitutions are JSON");
        keys.keys()
            .map(|k| (k.clone(), format!("local-{k}")))
            .collect()
    }

    /// Records status writes and describe_build requests; the validate and build tasks answer
    /// from the case.
    struct Fake {
        validate: Result<Value, TaskFailure>,
        build: Result<Value, TaskFailure>,
        statuses: Mutex<Vec<String>>,
        described: Mutex<Vec<Value>>,
        failure: Mutex<Option<(String, String)>>,
        transient_failures: Mutex<u32>,
        /// How often the turn is refused before it comes.
        turns_waited: Mutex<u32>,
        /// How often the turn was asked for, and the statuses written by then.
        turns: Mutex<Vec<usize>>,
    }

    #[async_trait]
    impl TaskRunner for Fake {
        async fn run(&self, resource: &str, input: Value) -> Result<Value, TaskFailure> {
            match resource {
                "arn:aws:states:::dynamodb:updateItem" => {
                    assert_eq!(input["TableName"], "local-DeploymentsTableName");
                    assert_eq!(input["Key"]["PK"]["S"], "DEPLOYMENT#d-1");
                    let values = &input["ExpressionAttributeValues"];
                    // Each write is conditional on the execution, named from its ARN.
                    assert_eq!(values[":execution"]["S"], "d-1");
                    let mut transient = self.transient_failures.lock().expect("lock");
                    if *transient > 0 {
                        *transient -= 1;
                        return Err(TaskFailure {
                            error: "DynamoDB.ProvisionedThroughputExceededException".into(),
                            cause: "throttled".into(),
                        });
                    }
                    self.statuses
                        .lock()
                        .expect("lock")
                        .push(values[":status"]["S"].as_str().expect("status").to_string());
                    if let Some(e) = values[":error"]["S"].as_str() {
                        *self.failure.lock().expect("lock") = Some((
                            e.to_string(),
                            values[":cause"]["S"].as_str().expect("cause").to_string(),
                        ));
                    }
                    Ok(json!({}))
                }
                "arn:aws:states:::lambda:invoke" => {
                    assert_eq!(input["FunctionName"], "local-ProvisionerFunctionArn");
                    match input["Payload"]["task"].as_str() {
                        Some("await_turn") => {
                            let written = self.statuses.lock().expect("lock").len();
                            self.turns.lock().expect("lock").push(written);
                            let mut waited = self.turns_waited.lock().expect("lock");
                            if *waited > 0 {
                                *waited -= 1;
                                return Err(TaskFailure {
                                    error: "Turn.Waiting".into(),
                                    cause: "an older job of the document runs".into(),
                                });
                            }
                            Ok(json!({"Payload": null}))
                        }
                        Some("validate") => self.validate.clone(),
                        Some("describe_build") => {
                            self.described
                                .lock()
                                .expect("lock")
                                .push(input["Payload"].clone());
                            Ok(json!({"Payload": null}))
                        }
                        other => panic!("unexpected task {other:?}"),
                    }
                }
                "arn:aws:states:::codebuild:startBuild.sync" => {
                    assert_eq!(input["ProjectName"], "local-ProducerBuildProjectName");
                    assert_eq!(
                        input["EnvironmentVariablesOverride"][1]["Value"],
                        "order_created/1/deploy.json"
                    );
                    self.build.clone()
                }
                other => panic!("unexpected resource {other}"),
            }
        }
        fn now(&self) -> String {
            "2026-11-27T00:00:00Z".into()
        }
        async fn wait(&self, _seconds: f64) {}
    }

    fn fake(validate: Result<Value, TaskFailure>, build: Result<Value, TaskFailure>) -> Fake {
        Fake {
            validate,
            build,
            statuses: Mutex::default(),
            described: Mutex::default(),
            failure: Mutex::default(),
            transient_failures: Mutex::new(0),
            turns_waited: Mutex::new(0),
            turns: Mutex::default(),
        }
    }

    fn valid() -> Result<Value, TaskFailure> {
        Ok(
            json!({"Payload": {"kind": "producer", "action": "deploy", "stack_name": "busway-producer-order-created-v1"}}),
        )
    }

    async fn run(f: &Fake) -> Outcome {
        let m = StateMachine::load(&definition(), &substitutions())
            .expect("the provisioning definition loads");
        let input = json!({"deployment_id": "d-1", "bucket": "publisher", "key": "order_created/1/deploy.json", "object_version": "v1", "kind": "producer"});
        m.run(f, "local:d-1", input).await
    }

    fn statuses(f: &Fake) -> Vec<String> {
        f.statuses.lock().expect("lock").clone()
    }

    fn described(f: &Fake) -> Vec<Value> {
        f.described.lock().expect("lock").clone()
    }

    fn built() -> Result<Value, TaskFailure> {
        Ok(json!({"Build": {"Id": "producer-build:b-1", "BuildStatus": "SUCCEEDED"}}))
    }

    // The same three cases and sequences as statemachines/test_moto.py on moto's engine.
    #[tokio::test]
    async fn a_valid_config_that_builds_ends_succeeded() {
        let f = fake(valid(), built());
        assert!(matches!(run(&f).await, Outcome::Succeeded(_)));
        assert_eq!(statuses(&f), ["VALIDATING", "BUILDING", "SUCCEEDED"]);
        assert_eq!(*f.failure.lock().expect("lock"), None);
        assert_eq!(
            described(&f),
            [
                json!({"task": "describe_build", "deployment_id": "d-1", "build_id": "producer-build:b-1"})
            ]
        );
    }

    #[tokio::test]
    async fn a_failing_build_ends_failed_with_its_error() {
        let f = fake(
            valid(),
            Err(TaskFailure {
                error: "Build.Failed".into(),
                cause: "cdk deploy exited 1".into(),
            }),
        );
        assert_eq!(
            run(&f).await,
            Outcome::Failed {
                error: "Deployment.Failed".into(),
                cause: "the deployment record holds the error and its cause".into()
            }
        );
        assert_eq!(statuses(&f), ["VALIDATING", "BUILDING", "FAILED"]);
        assert_eq!(
            described(&f),
            [json!({
                "task": "describe_build",
                "deployment_id": "d-1",
                "failure": {"Error": "Build.Failed", "Cause": "cdk deploy exited 1"}
            })]
        );
        let (error, cause) = f
            .failure
            .lock()
            .expect("lock")
            .clone()
            .expect("a failure is recorded");
        assert_eq!(error, "Build.Failed");
        assert_eq!(
            serde_json::from_str::<Value>(&cause).expect("cause is JSON"),
            json!({"Error": "Build.Failed", "Cause": "cdk deploy exited 1"})
        );
    }

    #[tokio::test]
    async fn an_invalid_config_ends_failed_without_building() {
        let f = fake(
            Err(TaskFailure {
                error: "DeployConfig.Invalid".into(),
                cause: "$.target_unit: must match".into(),
            }),
            Ok(json!({})),
        );
        assert!(matches!(run(&f).await, Outcome::Failed { .. }));
        assert_eq!(statuses(&f), ["VALIDATING", "FAILED"]);
        assert_eq!(
            f.failure
                .lock()
                .expect("lock")
                .as_ref()
                .map(|(e, _)| e.as_str()),
            Some("DeployConfig.Invalid")
        );
    }

    #[tokio::test]
    async fn a_throttled_status_write_is_retried() {
        let f = fake(valid(), built());
        *f.transient_failures.lock().expect("lock") = 2;
        assert!(matches!(run(&f).await, Outcome::Succeeded(_)));
        assert_eq!(statuses(&f), ["VALIDATING", "BUILDING", "SUCCEEDED"]);
    }

    #[tokio::test]
    async fn a_job_waits_its_turn_before_it_records_anything() {
        let f = fake(valid(), built());
        *f.turns_waited.lock().expect("lock") = 3;
        assert!(matches!(run(&f).await, Outcome::Succeeded(_)));
        // Asked four times, with nothing written before the turn came.
        assert_eq!(*f.turns.lock().expect("lock"), [0, 0, 0, 0]);
        assert_eq!(statuses(&f), ["VALIDATING", "BUILDING", "SUCCEEDED"]);
    }

    #[tokio::test]
    async fn a_turn_that_never_comes_fails_the_job() {
        let f = fake(valid(), built());
        *f.turns_waited.lock().expect("lock") = u32::MAX;
        assert!(matches!(run(&f).await, Outcome::Failed { .. }));
        assert_eq!(statuses(&f), ["FAILED"]);
        let error = f.failure.lock().expect("lock").clone().map(|(e, _)| e);
        assert_eq!(error.as_deref(), Some("Turn.Waiting"));
        // The first try and 180 retries.
        assert_eq!(f.turns.lock().expect("lock").len(), 181);
    }

    #[test]
    fn a_missing_substitution_is_refused() {
        let err = StateMachine::load(&definition(), &BTreeMap::new()).expect_err("refused");
        assert!(matches!(err, LoadError::MissingSubstitution(_)), "{err}");
    }

    #[test]
    fn features_the_runner_lacks_are_refused_naming_state_and_feature() {
        let cases = [
            (
                r#"{"StartAt":"A","States":{"A":{"Type":"Map","End":true}}}"#,
                "state A: state type Map",
            ),
            (
                r#"{"StartAt":"A","States":{"A":{"Type":"Pass","End":true,"InputPath":"$.x"}}}"#,
                "state A: field InputPath on a Pass state",
            ),
            (
                r#"{"StartAt":"A","States":{"A":{"Type":"Pass","Next":"B","Parameters":{}},"B":{"Type":"Succeed"}}}"#,
                "state A: field Parameters on a Pass state",
            ),
            (
                r#"{"StartAt":"A","States":{"A":{"Type":"Task","Resource":"r","End":true,"Parameters":{"x.$":"States.UUID()"}}}}"#,
                "state A: intrinsic States.UUID",
            ),
            (
                r#"{"StartAt":"A","States":{"A":{"Type":"Task","Resource":"r","End":true,"Parameters":{"x.$":"$.a[0]"}}}}"#,
                "state A: path $.a[0]",
            ),
            (
                r#"{"StartAt":"A","States":{"A":{"Type":"Choice","Choices":[{"Variable":"$.a","NumericEquals":1,"Next":"A"}]}}}"#,
                "state A: choice rule NumericEquals",
            ),
            (
                r#"{"StartAt":"A","States":{"A":{"Type":"Task","Resource":"r","End":true,"Retry":[{"ErrorEquals":["States.ALL"],"JitterStrategy":"FULL"}]}}}"#,
                "state A: Retry field JitterStrategy",
            ),
            (
                r#"{"StartAt":"A","QueryLanguage":"JSONata","States":{"A":{"Type":"Succeed"}}}"#,
                "field QueryLanguage",
            ),
        ];
        for (text, message) in cases {
            let err = StateMachine::load(text, &BTreeMap::new())
                .expect_err(message)
                .to_string();
            assert!(err.contains(message), "{err} does not say {message}");
        }
    }
}
