//! Kubernetes `Device`/`DeviceModel` objects (JSON, `devices.kubeedge.io/v1beta1`) to DMI
//! messages, as upstream's `dtcommon.ConvertDevice`/`ConvertDeviceModel` do, and the free-form
//! `configData` maps both ways.
//!
//! `configData` values travel as `google.protobuf.Any` wrappers: strings as `StringValue`,
//! numbers as `FloatValue` (upstream turns every JSON number into a float32), booleans as
//! `BoolValue`. Upstream refuses nested objects and arrays, so the device never reaches its
//! mapper; we send them as a `StringValue` of their JSON instead.

use std::collections::HashMap;

use prost::Message as _;
use prost_types::Any;
use serde_json::{Map, Value, json};

use crate::v1beta1 as pb;

const STRING: &str = "type.googleapis.com/google.protobuf.StringValue";
const FLOAT: &str = "type.googleapis.com/google.protobuf.FloatValue";
const DOUBLE: &str = "type.googleapis.com/google.protobuf.DoubleValue";
const BOOL: &str = "type.googleapis.com/google.protobuf.BoolValue";
const INT32: &str = "type.googleapis.com/google.protobuf.Int32Value";
const INT64: &str = "type.googleapis.com/google.protobuf.Int64Value";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConvertError {
    #[error("the device has no metadata.name")]
    NoName,
    #[error("device {0} names no deviceModelRef")]
    NoModel(String),
}

/// A JSON object as a `CustomizedValue`; `None` for anything else.
pub fn customized_value(config: &Value) -> Option<pb::CustomizedValue> {
    let object = config.as_object()?;
    let data = object
        .iter()
        .filter_map(|(key, value)| Some((key.clone(), to_any(value)?)))
        .collect();
    Some(pb::CustomizedValue { data })
}

fn to_any(value: &Value) -> Option<Any> {
    let (type_url, bytes) = match value {
        Value::Null => return None,
        Value::String(s) => (STRING, s.clone().encode_to_vec()),
        Value::Bool(b) => (BOOL, b.encode_to_vec()),
        Value::Number(n) => (
            FLOAT,
            (n.as_f64().unwrap_or_default() as f32).encode_to_vec(),
        ),
        other => (STRING, other.to_string().encode_to_vec()),
    };
    Some(Any {
        type_url: type_url.to_owned(),
        value: bytes,
    })
}

/// A `CustomizedValue` back as a JSON object (what a mapper's driver reads). Wrappers it does
/// not know are left out.
pub fn customized_to_json(value: Option<&pb::CustomizedValue>) -> Value {
    let mut out = Map::new();
    let Some(value) = value else {
        return Value::Object(out);
    };
    let mut keys: Vec<&String> = value.data.keys().collect();
    keys.sort();
    for key in keys {
        if let Some(json) = from_any(&value.data[key]) {
            out.insert(key.clone(), json);
        }
    }
    Value::Object(out)
}

fn from_any(any: &Any) -> Option<Value> {
    let bytes = any.value.as_slice();
    Some(match any.type_url.as_str() {
        STRING => json!(String::decode(bytes).ok()?),
        BOOL => json!(bool::decode(bytes).ok()?),
        INT32 => json!(i32::decode(bytes).ok()?),
        INT64 => json!(i64::decode(bytes).ok()?),
        FLOAT => number(f64::from(f32::decode(bytes).ok()?)),
        DOUBLE => number(f64::decode(bytes).ok()?),
        _ => return None,
    })
}

/// Whole floats as integers: `502` arrives as float32 502.0 and is a port again.
fn number(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 9.0e15 {
        json!(f as i64)
    } else {
        json!(f)
    }
}

fn str_at<'a>(value: &'a Value, pointer: &str) -> &'a str {
    value.pointer(pointer).and_then(Value::as_str).unwrap_or("")
}

/// `base` with the keys of `instance` laid over it (the Device's settings win over the
/// model's, as upstream's `overrideDeviceInstanceConfig`).
fn overlay(base: Option<&Value>, instance: Option<&Value>) -> Value {
    let mut merged = base.and_then(Value::as_object).cloned().unwrap_or_default();
    if let Some(instance) = instance.and_then(Value::as_object) {
        for (key, value) in instance {
            merged.insert(key.clone(), value.clone());
        }
    }
    Value::Object(merged)
}

/// A Device object as the DMI `Device`, with its model's protocol and visitor settings under
/// its own.
pub fn device(device: &Value, model: Option<&Value>) -> Result<pb::Device, ConvertError> {
    let name = str_at(device, "/metadata/name");
    if name.is_empty() {
        return Err(ConvertError::NoName);
    }
    let model_name = str_at(device, "/spec/deviceModelRef/name");
    if model_name.is_empty() {
        return Err(ConvertError::NoModel(name.to_owned()));
    }
    let spec = &device["spec"];
    let model_properties: HashMap<&str, &Value> = model
        .and_then(|m| m.pointer("/spec/properties"))
        .and_then(Value::as_array)
        .map(|ps| ps.iter().map(|p| (str_at(p, "/name"), p)).collect())
        .unwrap_or_default();
    let properties = spec["properties"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let prop_name = str_at(p, "/name");
            let model_visitors = model_properties
                .get(prop_name)
                .and_then(|m| m.pointer("/visitors/configData"));
            let visitor_config = overlay(model_visitors, p.pointer("/visitors/configData"));
            pb::DeviceProperty {
                name: prop_name.to_owned(),
                desired: p.get("desired").map(twin_property),
                visitors: Some(pb::VisitorConfig {
                    protocol_name: str_at(p, "/visitors/protocolName").to_owned(),
                    config_data: customized_value(&visitor_config),
                }),
                report_cycle: p["reportCycle"].as_i64().unwrap_or_default(),
                collect_cycle: p["collectCycle"].as_i64().unwrap_or_default(),
                report_to_cloud: p["reportToCloud"].as_bool().unwrap_or_default(),
                push_method: p.get("pushMethod").map(push_method),
            }
        })
        .collect();
    let methods = spec["methods"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|m| pb::DeviceMethod {
            name: str_at(m, "/name").to_owned(),
            description: str_at(m, "/description").to_owned(),
            property_names: m["propertyNames"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect(),
        })
        .collect();
    let protocol_config = overlay(
        model.and_then(|m| m.pointer("/spec/protocolConfigData")),
        spec.pointer("/protocol/configData"),
    );
    Ok(pb::Device {
        name: name.to_owned(),
        namespace: namespace_of(device).to_owned(),
        spec: Some(pb::DeviceSpec {
            device_model_reference: model_name.to_owned(),
            protocol: Some(pb::ProtocolConfig {
                protocol_name: str_at(spec, "/protocol/protocolName").to_owned(),
                config_data: customized_value(&protocol_config),
            }),
            properties,
            methods,
        }),
        status: None,
    })
}

/// An object's `metadata.namespace`, `default` when it names none.
pub fn namespace_of(object: &Value) -> &str {
    match str_at(object, "/metadata/namespace") {
        "" => "default",
        namespace => namespace,
    }
}

fn twin_property(value: &Value) -> pb::TwinProperty {
    let metadata = value["metadata"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| {
                    let text = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
                    (k.clone(), text)
                })
                .collect()
        })
        .unwrap_or_default();
    pb::TwinProperty {
        value: str_at(value, "/value").to_owned(),
        metadata,
    }
}

fn push_method(value: &Value) -> pb::PushMethod {
    pb::PushMethod {
        http: value.get("http").map(|h| pb::PushMethodHttp {
            hostname: str_at(h, "/hostName").to_owned(),
            port: h["port"].as_i64().unwrap_or_default(),
            requestpath: str_at(h, "/requestPath").to_owned(),
            timeout: h["timeout"].as_i64().unwrap_or_default(),
        }),
        mqtt: value.get("mqtt").map(|m| pb::PushMethodMqtt {
            address: str_at(m, "/address").to_owned(),
            topic: str_at(m, "/topic").to_owned(),
            qos: m["qos"]
                .as_i64()
                .and_then(|q| i32::try_from(q).ok())
                .unwrap_or_default(),
            retained: m["retained"].as_bool().unwrap_or_default(),
        }),
        otel: value.get("otel").map(|o| pb::PushMethodOtel {
            endpoint_url: str_at(o, "/endpointURL").to_owned(),
        }),
        db_method: None,
        anomaly_detection: None,
    }
}

/// A DeviceModel object as the DMI `DeviceModel`.
pub fn device_model(model: &Value) -> pb::DeviceModel {
    let properties = model
        .pointer("/spec/properties")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|p| pb::ModelProperty {
            name: str_at(p, "/name").to_owned(),
            description: str_at(p, "/description").to_owned(),
            r#type: str_at(p, "/type").to_owned(),
            access_mode: str_at(p, "/accessMode").to_owned(),
            minimum: str_at(p, "/minimum").to_owned(),
            maximum: str_at(p, "/maximum").to_owned(),
            unit: str_at(p, "/unit").to_owned(),
        })
        .collect();
    pb::DeviceModel {
        name: str_at(model, "/metadata/name").to_owned(),
        namespace: namespace_of(model).to_owned(),
        spec: Some(pb::DeviceModelSpec {
            properties,
            commands: Vec::new(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn golden(name: &str) -> Value {
        let path = format!("{}/tests/golden/{name}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str::<Value>(&text).unwrap()["content"].take()
    }

    #[test]
    fn upstreams_device_and_model_convert_with_their_settings() {
        let model = golden("25-devicemodel-insert.json");
        let device_object = golden("26-device-insert.json");
        let converted = device(&device_object, Some(&model)).unwrap();
        assert_eq!(converted.name, "thermometer-01");
        assert_eq!(converted.namespace, "default");
        let spec = converted.spec.unwrap();
        assert_eq!(spec.device_model_reference, "thermometer-model");
        let protocol = spec.protocol.unwrap();
        assert_eq!(protocol.protocol_name, "modbus");
        assert_eq!(
            customized_to_json(protocol.config_data.as_ref()),
            json!({"ip": "192.168.1.50", "port": 502, "slaveID": 1})
        );
        let property = &spec.properties[0];
        assert_eq!(property.name, "temperature");
        assert_eq!(property.desired.as_ref().unwrap().value, "20");
        assert_eq!(
            property.desired.as_ref().unwrap().metadata["type"],
            "integer"
        );
        assert_eq!(property.collect_cycle, 10_000);
        assert!(property.report_to_cloud);
        let visitors = property.visitors.as_ref().unwrap();
        assert_eq!(
            customized_to_json(visitors.config_data.as_ref()),
            json!({"isRegisterSwap": false, "isSwap": false, "limit": 1, "offset": 2,
                   "register": "HoldingRegister", "scale": 1})
        );

        let model = device_model(&model);
        assert_eq!(model.name, "thermometer-model");
        let property = &model.spec.unwrap().properties[0];
        assert_eq!(
            (property.r#type.as_str(), property.access_mode.as_str()),
            ("INT", "ReadWrite")
        );
        assert_eq!(
            (property.minimum.as_str(), property.maximum.as_str()),
            ("-40", "100")
        );
    }

    #[test]
    fn the_device_wins_over_its_model_and_odd_values_survive() {
        let model = json!({"spec": {"protocolConfigData": {"ip": "10.0.0.1", "port": 502},
            "properties": [{"name": "p", "visitors": {"configData": {"scale": 2, "offset": 1}}}]}});
        let object = json!({"metadata": {"name": "d"}, "spec": {"deviceModelRef": {"name": "m"},
            "protocol": {"protocolName": "modbus", "configData": {"ip": "10.0.0.2", "nested": {"a": [1]}}},
            "properties": [{"name": "p", "visitors": {"configData": {"offset": 7}}}]}});
        let spec = device(&object, Some(&model)).unwrap().spec.unwrap();
        assert_eq!(
            customized_to_json(spec.protocol.unwrap().config_data.as_ref()),
            json!({"ip": "10.0.0.2", "nested": "{\"a\":[1]}", "port": 502})
        );
        assert_eq!(
            customized_to_json(
                spec.properties[0]
                    .visitors
                    .as_ref()
                    .unwrap()
                    .config_data
                    .as_ref()
            ),
            json!({"offset": 7, "scale": 2})
        );
        assert_eq!(customized_to_json(None), json!({}));
        assert_eq!(
            device(&json!({"metadata": {"name": "d"}}), None),
            Err(ConvertError::NoModel("d".into()))
        );
        assert_eq!(device(&json!("x"), None), Err(ConvertError::NoName));
        let unknown = pb::CustomizedValue {
            data: [(
                "x".to_owned(),
                Any {
                    type_url: "t".into(),
                    value: vec![1],
                },
            )]
            .into(),
        };
        assert_eq!(customized_to_json(Some(&unknown)), json!({}));
    }
}
