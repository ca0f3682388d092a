//! Records as DynamoDB items: every field of a domain record is a native attribute named as its
//! serde field (strings S, numbers N, lists L, objects M), so the table reads well in the console
//! and the state machine's `UpdateItem` writes the same attributes the adapter reads. Absent
//! optional fields are absent attributes.
//!
//! Every record item carries `format_version` (`busway_core::format`): writing a whole record
//! stamps the current format, reading takes it out and refuses a newer one. Updates of single
//! fields that every format has (counters, states, the latest version, a deployment's progress)
//! leave the item's format as it was.

use std::collections::HashMap;

use anyhow::{Context, anyhow};
use aws_sdk_dynamodb::types::AttributeValue;
use busway_core::format::{FORMAT_FIELD, RECORD_FORMAT, take_format};
use busway_core::ports::StoreError;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Number, Value};

pub type Item = HashMap<String, AttributeValue>;

pub fn s(value: impl Into<String>) -> AttributeValue {
    AttributeValue::S(value.into())
}

pub fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

/// The record's fields as JSON, `None` fields as nulls.
pub fn fields<T: Serialize>(record: &T) -> Result<Map<String, Value>, StoreError> {
    match serde_json::to_value(record).context("encoding a record")? {
        Value::Object(fields) => Ok(fields),
        other => Err(anyhow!("a record must encode as an object, not {other}").into()),
    }
}

/// The record's fields as attributes, with the current format; `None` fields are left out.
pub fn to_attributes<T: Serialize>(record: &T) -> Result<Item, StoreError> {
    let mut item: Item = fields(record)?
        .into_iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (k, to_attribute(v)))
        .collect();
    item.insert(FORMAT_FIELD.into(), n(RECORD_FORMAT));
    Ok(item)
}

/// The item's attributes as JSON fields.
pub fn to_fields(item: &Item) -> Result<Map<String, Value>, StoreError> {
    item.iter()
        .map(|(k, v)| Ok((k.clone(), from_attribute(v)?)))
        .collect()
}

/// The record in `fields`, of any format up to the current one; fields the record does not name
/// (keys, index keys) are ignored.
pub fn decode<T: DeserializeOwned>(mut fields: Map<String, Value>) -> Result<T, StoreError> {
    let what = match fields.get("PK") {
        Some(Value::String(pk)) => pk.clone(),
        _ => "an item".to_string(),
    };
    take_format(&mut fields, RECORD_FORMAT, &what).map_err(anyhow::Error::from)?;
    Ok(
        serde_json::from_value(Value::Object(fields))
            .with_context(|| format!("decoding {what}"))?,
    )
}

pub fn from_item<T: DeserializeOwned>(item: &Item) -> Result<T, StoreError> {
    decode(to_fields(item)?)
}

pub fn to_attribute(value: Value) -> AttributeValue {
    match value {
        Value::Null => AttributeValue::Null(true),
        Value::Bool(b) => AttributeValue::Bool(b),
        Value::Number(x) => AttributeValue::N(x.to_string()),
        Value::String(x) => AttributeValue::S(x),
        Value::Array(xs) => AttributeValue::L(xs.into_iter().map(to_attribute).collect()),
        Value::Object(fields) => AttributeValue::M(
            fields
                .into_iter()
                .map(|(k, v)| (k, to_attribute(v)))
                .collect(),
        ),
    }
}

fn from_attribute(value: &AttributeValue) -> Result<Value, StoreError> {
    Ok(match value {
        AttributeValue::Null(_) => Value::Null,
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::N(x) => Value::Number(number(x)?),
        AttributeValue::S(x) => Value::String(x.clone()),
        AttributeValue::L(xs) => {
            Value::Array(xs.iter().map(from_attribute).collect::<Result<_, _>>()?)
        }
        AttributeValue::M(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| Ok((k.clone(), from_attribute(v)?)))
                .collect::<Result<_, StoreError>>()?,
        ),
        other => return Err(anyhow!("unexpected attribute type in {other:?}").into()),
    })
}

fn number(text: &str) -> Result<Number, StoreError> {
    if let Ok(i) = text.parse::<i64>() {
        return Ok(i.into());
    }
    if let Ok(u) = text.parse::<u64>() {
        return Ok(u.into());
    }
    text.parse::<f64>()
        .ok()
        .and_then(Number::from_f64)
        .ok_or_else(|| anyhow!("attribute number {text:?} does not fit JSON").into())
}

/// The string attribute `name` of `item`, if it has one.
pub fn get_s<'a>(item: &'a Item, name: &str) -> Option<&'a str> {
    item.get(name)
        .and_then(|v| v.as_s().ok())
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_keep_their_shape_through_attributes() {
        let record = json!({
            "name": "parcel", "version": 3, "ratio": 0.5, "big": u64::MAX, "negative": -2,
            "flag": true, "tags": ["a", "b"], "nested": {"x": [1, {"y": null}]}, "absent": null,
            "empty": ""
        });
        let item = to_attributes(&record).expect("encodes");
        assert!(!item.contains_key("absent"), "None fields are not written");
        assert_eq!(item["version"], AttributeValue::N("3".into()));
        let back: Value = from_item(&item).expect("decodes");
        let mut expected = record.clone();
        expected.as_object_mut().map(|o| o.remove("absent"));
        assert_eq!(back, expected);
    }

    #[test]
    fn records_carry_their_format_and_a_newer_one_is_refused() {
        let mut item = to_attributes(&json!({"name": "parcel"})).expect("encodes");
        assert_eq!(item[FORMAT_FIELD], n(RECORD_FORMAT));
        let back: Value = from_item(&item).expect("decodes");
        assert_eq!(
            back,
            json!({"name": "parcel"}),
            "the format is not a field of the record"
        );

        item.remove(FORMAT_FIELD);
        assert!(
            from_item::<Value>(&item).is_ok(),
            "an item of the first release"
        );

        item.insert(FORMAT_FIELD.into(), n(RECORD_FORMAT + 1));
        item.insert("PK".into(), s("EVENT#parcel"));
        let error = from_item::<Value>(&item).expect_err("a newer format");
        let message = format!("{error:#}");
        assert!(
            message.contains("EVENT#parcel") && message.contains(&format!("up to {RECORD_FORMAT}")),
            "{message}"
        );
    }

    #[test]
    fn attribute_types_no_record_uses_are_refused() {
        let item = Item::from([("ids".to_string(), AttributeValue::Ss(vec!["a".into()]))]);
        assert!(from_item::<Value>(&item).is_err());
    }
}
