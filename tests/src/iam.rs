//! IAM as far as busway's functions meet it: the AWS calls an SDK request makes (action and
//! resource ARNs, read off the wire as IAM authorizes them), and the identity policies of a role
//! in a synthesized template deciding whether each is allowed.

use serde_json::Value;

use crate::cfn::{ACCOUNT, Resource, Templates};

/// One authorization IAM makes for a request: `dynamodb:PutItem` on a table's ARN, ...
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Call {
    pub action: String,
    pub resource: String,
    /// The item's partition key of a single-item DynamoDB call (`dynamodb:LeadingKeys`).
    pub leading_key: Option<String>,
}

/// An Allow statement: its actions, its resources, and the `dynamodb:LeadingKeys` patterns of
/// its `ForAllValues:StringLike` condition, when it has one.
type Statement = (Vec<String>, Vec<String>, Option<Vec<String>>);

/// The Allow statements of a role's identity policies.
#[derive(Debug, Clone)]
pub struct Policy {
    statements: Vec<Statement>,
}

/// The one condition busway's roles use: a table's items by their partition key.
fn leading_keys(statement: &Value) -> Option<Vec<String>> {
    let condition = statement.get("Condition")?;
    let patterns = &condition["ForAllValues:StringLike"]["dynamodb:LeadingKeys"];
    assert!(
        condition.as_object().is_some_and(|c| c.len() == 1) && patterns.is_array(),
        "only ForAllValues:StringLike on dynamodb:LeadingKeys is evaluated here: {statement}"
    );
    Some(strings(patterns))
}

impl Policy {
    /// Every `AWS::IAM::Policy` attached to `role` (a logical id in the same stack), resolved.
    /// Statements this evaluator cannot judge (Deny, NotAction, conditions) fail the test.
    pub fn of_role(templates: &Templates, role: Resource<'_>) -> Policy {
        let mut statements = Vec::new();
        for policy in templates.of_kind("AWS::IAM::Policy") {
            let attached = policy.properties["Roles"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|r| r["Ref"].as_str() == Some(role.id));
            if policy.stack != role.stack || !attached {
                continue;
            }
            let document = templates.property(policy, "PolicyDocument");
            for statement in document["Statement"].as_array().into_iter().flatten() {
                for unsupported in ["NotAction", "NotResource"] {
                    assert!(
                        statement.get(unsupported).is_none(),
                        "{}: {unsupported} is not evaluated here: {statement}",
                        policy.id
                    );
                }
                assert_eq!(statement["Effect"], "Allow", "{}: {statement}", policy.id);
                statements.push((
                    strings(&statement["Action"]),
                    strings(&statement["Resource"]),
                    leading_keys(statement),
                ));
            }
        }
        assert!(!statements.is_empty(), "{} has no policy", role.id);
        Policy { statements }
    }

    pub fn allows(&self, call: &Call) -> bool {
        self.statements.iter().any(|(actions, resources, keys)| {
            actions
                .iter()
                .any(|a| wildcard(&a.to_lowercase(), &call.action.to_lowercase()))
                && resources.iter().any(|r| wildcard(r, &call.resource))
                && keys.as_ref().is_none_or(|patterns| {
                    call.leading_key
                        .as_ref()
                        .is_some_and(|k| patterns.iter().any(|p| wildcard(p, k)))
                })
        })
    }
}

fn strings(value: &Value) -> Vec<String> {
    match value {
        Value::String(s) => vec![s.clone()],
        Value::Array(items) => items.iter().flat_map(strings).collect(),
        other => panic!("a string or a list of strings was expected: {other}"),
    }
}

/// IAM's matching: `*` any run of characters (`/` included), `?` any one character.
pub fn wildcard(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// A request as it arrived at the endpoint: the SigV4 signing service names the AWS service.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub query: &'a str,
    pub authorization: &'a str,
    pub target: Option<&'a str>,
    pub body: &'a [u8],
}

impl Request<'_> {
    /// `Credential=AKID/date/region/SERVICE/aws4_request`.
    pub fn service(&self) -> Option<&str> {
        let scope = self.authorization.split("Credential=").nth(1)?;
        scope.split('/').nth(3)
    }

    /// What IAM authorizes for this request, in the region of the emulated account.
    pub fn calls(&self, region: &str) -> Vec<Call> {
        let arn = |service: &str, resource: String| Call {
            resource: format!("arn:aws:{service}:{region}:{ACCOUNT}:{resource}"),
            ..Call::default()
        };
        let with = |action: String, call: Call| Call { action, ..call };
        let body: Value = serde_json::from_slice(self.body).unwrap_or(Value::Null);
        let operation = self
            .target
            .and_then(|t| t.split('.').nth(1))
            .unwrap_or_default()
            .to_string();
        match self.service().unwrap_or_default() {
            "dynamodb" => {
                let table = |item: &Value| {
                    let name = item["TableName"].as_str().unwrap_or_default();
                    match item["IndexName"].as_str() {
                        Some(index) => arn("dynamodb", format!("table/{name}/index/{index}")),
                        None => arn("dynamodb", format!("table/{name}")),
                    }
                };
                match operation.as_str() {
                    "TransactWriteItems" | "TransactGetItems" => body["TransactItems"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .flat_map(|item| item.as_object().into_iter().flatten())
                        .map(|(kind, item)| {
                            let action = match kind.as_str() {
                                "ConditionCheck" => "ConditionCheckItem".to_string(),
                                "Get" | "Put" | "Update" | "Delete" => format!("{kind}Item"),
                                other => panic!("a transaction item {other}"),
                            };
                            with(format!("dynamodb:{action}"), table(item))
                        })
                        .collect(),
                    "BatchGetItem" | "BatchWriteItem" => body["RequestItems"]
                        .as_object()
                        .into_iter()
                        .flatten()
                        .map(|(name, _)| {
                            with(
                                format!("dynamodb:{operation}"),
                                arn("dynamodb", format!("table/{name}")),
                            )
                        })
                        .collect(),
                    _ => {
                        let key = body.get("Key").or(body.get("Item"));
                        vec![Call {
                            leading_key: key
                                .and_then(|k| k["PK"]["S"].as_str())
                                .map(str::to_string),
                            ..with(format!("dynamodb:{operation}"), table(&body))
                        }]
                    }
                }
            }
            "events" => {
                let buses: Vec<String> = match body["Entries"].as_array() {
                    Some(entries) => entries
                        .iter()
                        .map(|e| e["EventBusName"].as_str().unwrap_or("default").to_string())
                        .collect(),
                    None => vec![
                        body["EventBusName"]
                            .as_str()
                            .unwrap_or("default")
                            .to_string(),
                    ],
                };
                buses
                    .into_iter()
                    .map(|bus| {
                        let resource = if bus.starts_with("arn:") {
                            Call {
                                resource: bus,
                                ..Call::default()
                            }
                        } else {
                            arn("events", format!("event-bus/{bus}"))
                        };
                        with(format!("events:{operation}"), resource)
                    })
                    .collect()
            }
            "states" => {
                let resource = body["stateMachineArn"]
                    .as_str()
                    .or(body["executionArn"].as_str())
                    .unwrap_or("*")
                    .to_string();
                vec![Call {
                    action: format!("states:{operation}"),
                    resource,
                    ..Call::default()
                }]
            }
            "codebuild" => body["ids"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|id| id.as_str()?.split(':').next())
                .map(|project| {
                    with(
                        format!("codebuild:{operation}"),
                        arn("codebuild", format!("project/{project}")),
                    )
                })
                .collect(),
            "schemas" => vec![self.schemas_call(region)],
            "s3" => vec![self.s3_call()],
            // API Gateway's IAM actions are HTTP methods on resources that are its paths.
            "apigateway" => vec![Call {
                action: format!("apigateway:{}", self.method),
                resource: format!("arn:aws:apigateway:{region}::{}", self.path),
                ..Call::default()
            }],
            other => panic!(
                "a call to {other:?} ({} {}) is not known to this test",
                self.method, self.path
            ),
        }
    }

    /// `/v1/registries/name/{registry}/schemas/name/{schema}[/versions]`.
    fn schemas_call(&self, region: &str) -> Call {
        let parts: Vec<&str> = self.path.trim_start_matches('/').split('/').collect();
        let (registry, schema) = match parts.as_slice() {
            ["v1", "registries", "name", r, "schemas", "name", s, ..] => (*r, *s),
            _ => panic!("a Schema Registry path {}", self.path),
        };
        let action = match (self.method, parts.len()) {
            ("GET", 8) if parts[7] == "versions" => "ListSchemaVersions",
            ("GET", 7) => "DescribeSchema",
            ("POST", 7) => "CreateSchema",
            ("PUT", 7) => "UpdateSchema",
            ("DELETE", 7) => "DeleteSchema",
            _ => panic!("a Schema Registry call {} {}", self.method, self.path),
        };
        Call {
            action: format!("schemas:{action}"),
            resource: format!("arn:aws:schemas:{region}:{ACCOUNT}:schema/{registry}/{schema}"),
            ..Call::default()
        }
    }

    /// Path-style S3: `/{bucket}` or `/{bucket}/{key}`.
    fn s3_call(&self) -> Call {
        let path = self.path.trim_start_matches('/');
        let (bucket, key) = path.split_once('/').unwrap_or((path, ""));
        let has = |param: &str| {
            self.query
                .split('&')
                .any(|p| p == param || p.starts_with(&format!("{param}=")))
        };
        let action = match (self.method, key.is_empty()) {
            ("GET" | "HEAD", false) if has("versionId") => "GetObjectVersion",
            ("GET" | "HEAD", false) => "GetObject",
            ("PUT", false) => "PutObject",
            ("DELETE", false) if has("versionId") => "DeleteObjectVersion",
            ("DELETE", false) => "DeleteObject",
            ("GET", true) if has("versions") => "ListBucketVersions",
            ("GET", true) => "ListBucket",
            _ => panic!("an S3 call {} {}", self.method, self.path),
        };
        let resource = if key.is_empty() {
            format!("arn:aws:s3:::{bucket}")
        } else {
            // busway's keys are made of validated names: nothing in them is percent-encoded.
            format!("arn:aws:s3:::{bucket}/{key}")
        };
        Call {
            action: format!("s3:{action}"),
            resource,
            ..Call::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_as_iam_matches_them() {
        assert!(wildcard(
            "arn:aws:s3:::b/*/deploy.json",
            "arn:aws:s3:::b/t/1/deploy.json"
        ));
        assert!(!wildcard(
            "arn:aws:s3:::b/*/deploy.json",
            "arn:aws:s3:::b/t/1/schema.json"
        ));
        assert!(wildcard("s3:get*", "s3:getobject"));
        assert!(wildcard("a?c", "abc"));
        assert!(!wildcard("arn:aws:s3:::b", "arn:aws:s3:::b/k"));
    }

    #[test]
    fn a_leading_keys_condition_allows_only_items_of_those_keys() {
        let statement = serde_json::json!({"Effect": "Allow", "Action": "dynamodb:PutItem",
            "Resource": "arn:aws:dynamodb:r:1:table/t",
            "Condition": {"ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["EVENT_ID#*"]}}});
        let policy = Policy {
            statements: vec![(
                strings(&statement["Action"]),
                strings(&statement["Resource"]),
                leading_keys(&statement),
            )],
        };
        let put = |key: Option<&str>| Call {
            action: "dynamodb:PutItem".into(),
            resource: "arn:aws:dynamodb:r:1:table/t".into(),
            leading_key: key.map(str::to_string),
        };
        assert!(policy.allows(&put(Some("EVENT_ID#scanned_parcel.1#ab"))));
        assert!(!policy.allows(&put(Some("SUBSCRIPTION#s-1"))));
        assert!(!policy.allows(&put(None)));
    }
}
