//! The CloudFormation templates `cdk synth` writes for a CDK app, read as CloudFormation would
//! deploy them into one account and region: resources by stack, and their intrinsic functions
//! (`Ref`, `Fn::GetAtt`, `Fn::Join`, `Fn::Sub`, `Fn::ImportValue`, ...) resolved to the names and
//! ARNs the resources get. Enough of CloudFormation to give a test the exact environment, names
//! and IAM policies a deployment would have; a construct it does not know fails loudly.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::{Map, Value};

pub const ACCOUNT: &str = "123456789012";

pub struct Templates {
    pub region: String,
    /// Stack name → template.
    pub stacks: BTreeMap<String, Value>,
}

/// One resource: its stack, logical id, type and properties.
#[derive(Clone, Copy)]
pub struct Resource<'a> {
    pub stack: &'a str,
    pub id: &'a str,
    pub kind: &'a str,
    pub properties: &'a Value,
}

/// Runs `cdk synth` in `app_dir` (an app of this repository, its npm packages installed by
/// scripts/setup.sh) into `out`, with `context` as `-c key=value` pairs.
pub fn synth(app_dir: &Path, out: &Path, context: &[(&str, &str)]) {
    let mut command = Command::new("npx");
    command
        .current_dir(app_dir)
        .args(["--no-install", "cdk", "synth", "--no-notices", "-q", "-o"])
        .arg(out)
        .env("CDK_DISABLE_VERSION_CHECK", "1")
        .env("CDK_DISABLE_CLI_TELEMETRY", "true");
    for (key, value) in context {
        command.arg("-c").arg(format!("{key}={value}"));
    }
    let output = command
        .output()
        .expect("npx runs: scripts/setup.sh installs node and the CDK packages");
    assert!(
        output.status.success(),
        "cdk synth in {} failed: {}{}",
        app_dir.display(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

impl Templates {
    /// Every `*.template.json` of a cloud assembly.
    pub fn load(dir: &Path, region: &str) -> Templates {
        let mut stacks = BTreeMap::new();
        for entry in std::fs::read_dir(dir).expect("the cloud assembly") {
            let path = entry.expect("an entry").path();
            let Some(name) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".template.json"))
            else {
                continue;
            };
            let text = std::fs::read_to_string(&path).expect("a template");
            let template: Value = serde_json::from_str(&text).expect("a JSON template");
            stacks.insert(name.to_string(), template);
        }
        assert!(!stacks.is_empty(), "no template in {}", dir.display());
        Templates {
            region: region.to_string(),
            stacks,
        }
    }

    pub fn resources(&self) -> impl Iterator<Item = Resource<'_>> {
        self.stacks.iter().flat_map(|(stack, template)| {
            template["Resources"]
                .as_object()
                .into_iter()
                .flatten()
                .map(move |(id, r)| Resource {
                    stack,
                    id,
                    kind: r["Type"].as_str().unwrap_or_default(),
                    properties: &r["Properties"],
                })
        })
    }

    pub fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = Resource<'a>> + 'a {
        self.resources().filter(move |r| r.kind == kind)
    }

    pub fn get(&self, stack: &str, id: &str) -> Resource<'_> {
        self.resources()
            .find(|r| r.stack == stack && r.id == id)
            .unwrap_or_else(|| panic!("no resource {id} in stack {stack}"))
    }

    /// A property of a resource, resolved.
    pub fn property(&self, r: Resource<'_>, name: &str) -> Value {
        self.resolve(r.stack, &r.properties[name])
    }

    pub fn string(&self, r: Resource<'_>, name: &str) -> String {
        match self.property(r, name) {
            Value::String(s) => s,
            other => panic!("{}.{name} of {} is not a string: {other}", r.id, r.stack),
        }
    }

    /// `value` with every intrinsic function in it replaced by what CloudFormation makes of it.
    pub fn resolve(&self, stack: &str, value: &Value) -> Value {
        match value {
            Value::Array(items) => {
                Value::Array(items.iter().map(|v| self.resolve(stack, v)).collect())
            }
            Value::Object(map) if map.len() == 1 => {
                let (key, arg) = map.iter().next().expect("one entry");
                if key == "Ref" || key.starts_with("Fn::") {
                    Value::String(self.intrinsic(stack, key, arg))
                } else {
                    Value::Object(self.resolve_map(stack, map))
                }
            }
            Value::Object(map) => Value::Object(self.resolve_map(stack, map)),
            other => other.clone(),
        }
    }

    fn resolve_map(&self, stack: &str, map: &Map<String, Value>) -> Map<String, Value> {
        map.iter()
            .map(|(k, v)| (k.clone(), self.resolve(stack, v)))
            .collect()
    }

    fn text(&self, stack: &str, value: &Value) -> String {
        match self.resolve(stack, value) {
            Value::String(s) => s,
            other => panic!("a string was expected in {stack}: {other}"),
        }
    }

    fn intrinsic(&self, stack: &str, function: &str, arg: &Value) -> String {
        match function {
            "Ref" => self.reference(stack, arg.as_str().expect("Ref names a string")),
            "Fn::GetAtt" => {
                let id = arg[0].as_str().expect("GetAtt's logical id");
                let attribute = arg[1].as_str().expect("GetAtt's attribute");
                self.attribute(stack, id, attribute)
            }
            "Fn::Join" => {
                let separator = arg[0].as_str().expect("Join's separator");
                let parts: Vec<String> = arg[1]
                    .as_array()
                    .expect("Join's list")
                    .iter()
                    .map(|p| self.text(stack, p))
                    .collect();
                parts.join(separator)
            }
            "Fn::Sub" => {
                let template = arg.as_str().expect("Fn::Sub without variables");
                let mut out = String::new();
                let mut rest = template;
                while let Some(start) = rest.find("${") {
                    out.push_str(&rest[..start]);
                    let end = rest[start..].find('}').expect("a closed ${") + start;
                    let name = &rest[start + 2..end];
                    out.push_str(&match name.split_once('.') {
                        Some((id, attribute)) => self.attribute(stack, id, attribute),
                        None => self.reference(stack, name),
                    });
                    rest = &rest[end + 1..];
                }
                out.push_str(rest);
                out
            }
            "Fn::ImportValue" => {
                let name = self.text(stack, arg);
                self.export(&name)
            }
            "Fn::Select" => {
                let index = arg[0].as_u64().expect("Select's index") as usize;
                // A part of a split string (CDK takes an ARN's partition and region so).
                if let Some(split) = arg[1].get("Fn::Split") {
                    let separator = split[0].as_str().expect("Split's separator");
                    let text = self.text(stack, &split[1]);
                    return text
                        .split(separator)
                        .nth(index)
                        .expect("the part Select names")
                        .to_string();
                }
                let list = self.resolve(stack, &arg[1]);
                list[index].as_str().expect("a string").to_string()
            }
            other => panic!("intrinsic function {other} is not known to this test"),
        }
    }

    fn export(&self, name: &str) -> String {
        for (stack, template) in &self.stacks {
            for output in template["Outputs"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(_, o)| o)
            {
                if output["Export"]["Name"].as_str() == Some(name) {
                    return self.text(stack, &output["Value"]);
                }
            }
        }
        panic!("no stack exports {name}")
    }

    fn reference(&self, stack: &str, name: &str) -> String {
        match name {
            "AWS::AccountId" => return ACCOUNT.to_string(),
            "AWS::Region" => return self.region.clone(),
            "AWS::Partition" => return "aws".to_string(),
            "AWS::URLSuffix" => return "amazonaws.com".to_string(),
            "AWS::StackName" => return stack.to_string(),
            _ => {}
        }
        let r = self.get(stack, name);
        let named = |property: &str| self.string(r, property);
        match r.kind {
            "AWS::DynamoDB::Table" => named("TableName"),
            "AWS::S3::Bucket" => named("BucketName"),
            "AWS::Events::EventBus" => named("Name"),
            "AWS::Lambda::Function" => named("FunctionName"),
            "AWS::ApiGateway::Stage" => named("StageName"),
            "AWS::CodeBuild::Project" => named("Name"),
            "AWS::StepFunctions::StateMachine" => self.attribute(stack, name, "Arn"),
            // Names CloudFormation would generate: the logical id stands in, unique per stack.
            _ => format!("{stack}-{name}"),
        }
    }

    fn attribute(&self, stack: &str, id: &str, attribute: &str) -> String {
        let r = self.get(stack, id);
        let (region, account) = (&self.region, ACCOUNT);
        let arn = |service: &str, resource: String| {
            format!("arn:aws:{service}:{region}:{account}:{resource}")
        };
        match (r.kind, attribute) {
            ("AWS::DynamoDB::Table", "Arn") => {
                arn("dynamodb", format!("table/{}", self.string(r, "TableName")))
            }
            ("AWS::S3::Bucket", "Arn") => format!("arn:aws:s3:::{}", self.string(r, "BucketName")),
            ("AWS::Events::EventBus", "Arn") => {
                arn("events", format!("event-bus/{}", self.string(r, "Name")))
            }
            ("AWS::Lambda::Function", "Arn") => arn(
                "lambda",
                format!("function:{}", self.string(r, "FunctionName")),
            ),
            ("AWS::CodeBuild::Project", "Arn") => {
                arn("codebuild", format!("project/{}", self.string(r, "Name")))
            }
            ("AWS::StepFunctions::StateMachine", "Arn") => arn(
                "states",
                format!("stateMachine:{}", self.string(r, "StateMachineName")),
            ),
            ("AWS::EventSchemas::Registry", "RegistryName") => self.string(r, "RegistryName"),
            ("AWS::SQS::Queue", "Arn") => arn("sqs", format!("{stack}-{id}")),
            ("AWS::IAM::Role", "Arn") => format!("arn:aws:iam::{account}:role/{stack}-{id}"),
            ("AWS::Logs::LogGroup", "Arn") => arn("logs", format!("log-group:{stack}-{id}:*")),
            // Attributes no call of the functions names: unique, never matching a real resource.
            _ => format!("{stack}/{id}.{attribute}"),
        }
    }
}
