//! A device that exists only in the mapper, for demos and tests: each property holds a value
//! (its visitor's `initial`, else 0 / false / ""), a write sets it, and with `"random": true`
//! a numeric value wanders within `minimum`..`maximum` on every read.

use std::collections::HashMap;

use ke_mapper::{Connection, DeviceConfig, Driver, DriverError, PropertyConfig};

pub struct VirtualDriver;

#[tonic::async_trait]
impl Driver for VirtualDriver {
    fn protocol(&self) -> &str {
        "virtual"
    }

    async fn connect(&self, _device: &DeviceConfig) -> Result<Box<dyn Connection>, DriverError> {
        Ok(Box::new(VirtualDevice::default()))
    }
}

#[derive(Default)]
struct VirtualDevice {
    values: HashMap<String, String>,
}

fn initial(property: &PropertyConfig) -> String {
    match &property.visitor["initial"] {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => match property.value_type.as_str() {
            "BOOLEAN" | "BOOL" => "false".into(),
            "STRING" => String::new(),
            _ => "0".into(),
        },
        other => other.to_string(),
    }
}

#[tonic::async_trait]
impl Connection for VirtualDevice {
    async fn read(&mut self, property: &PropertyConfig) -> Result<String, DriverError> {
        let value = self
            .values
            .entry(property.name.clone())
            .or_insert_with(|| initial(property));
        if property.visitor["random"].as_bool() == Some(true)
            && let Ok(current) = value.parse::<f64>()
        {
            let a = property.visitor["minimum"].as_f64().unwrap_or(0.0);
            let b = property.visitor["maximum"].as_f64().unwrap_or(100.0);
            if !a.is_finite() || !b.is_finite() {
                return Err(DriverError::Config(
                    "minimum and maximum must be numbers".into(),
                ));
            }
            let (min, max) = (a.min(b), a.max(b));
            let step = (fastrand::f64() - 0.5) * (max - min) / 10.0;
            let next = (current + step).clamp(min, max);
            *value = if matches!(property.value_type.as_str(), "INT" | "INTEGER") {
                format!("{}", next.round() as i64)
            } else {
                format!("{:.2}", next)
            };
        }
        Ok(value.clone())
    }

    async fn write(&mut self, property: &PropertyConfig, value: &str) -> Result<(), DriverError> {
        self.values.insert(property.name.clone(), value.to_owned());
        Ok(())
    }
}
