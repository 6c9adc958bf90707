//! What a protocol implements: connecting to a device, reading and writing its properties.

use std::time::Duration;

use serde_json::Value;

/// A device as its driver sees it: the DMI device with its model's types merged in.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceConfig {
    pub name: String,
    pub namespace: String,
    /// `spec.protocol.configData` (the model's `protocolConfigData` under it), e.g.
    /// `{"ip": "10.0.0.5", "port": 502, "slaveID": 1}`.
    pub protocol: Value,
    pub properties: Vec<PropertyConfig>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PropertyConfig {
    pub name: String,
    /// The property's `visitors.configData`, e.g. `{"register": "HoldingRegister", "offset": 2}`.
    pub visitor: Value,
    /// The model's type: `INT`, `FLOAT`, `DOUBLE`, `BOOLEAN`, `STRING`, … (upper case).
    pub value_type: String,
    /// `ReadWrite` or `ReadOnly` (from the model).
    pub access_mode: String,
    /// The desired value from the Device, if any.
    pub desired: Option<String>,
    pub collect_cycle: Duration,
    pub report_cycle: Duration,
    pub report_to_cloud: bool,
    /// `pushMethod.mqtt`: where each new value is also published.
    pub push_mqtt: Option<MqttPush>,
    /// `pushMethod.http`: where each new value is also POSTed.
    pub push_http: Option<HttpPush>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpPush {
    /// `http://<hostName>:<port><requestPath>`.
    pub url: String,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttPush {
    /// `tcp://host:port`.
    pub address: String,
    pub topic: String,
    /// 0 or 1 (2 is sent as 1).
    pub qos: u8,
    pub retained: bool,
}

impl PropertyConfig {
    pub fn writable(&self) -> bool {
        !self.access_mode.eq_ignore_ascii_case("ReadOnly")
    }
}

/// Why a driver could not do something; mappers log it and report the device's state.
#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    /// The device's settings make no sense for the protocol: from `connect`, retried with
    /// backoff like any failure; from `read`/`write`, that property is skipped (and logged).
    #[error("configuration: {0}")]
    Config(String),
    /// The device did not answer or refused (retried).
    #[error("device: {0}")]
    Device(String),
}

/// An open connection to one device.
#[tonic::async_trait]
pub trait Connection: Send {
    /// The property's current value, as text (`"25"`, `"21.5"`, `"true"`).
    async fn read(&mut self, property: &PropertyConfig) -> Result<String, DriverError>;
    /// Sets the property to `value` (a desired value from the cloud).
    async fn write(&mut self, property: &PropertyConfig, value: &str) -> Result<(), DriverError>;
}

/// A protocol: how to reach devices that speak it.
#[tonic::async_trait]
pub trait Driver: Send + Sync + 'static {
    /// The name devices use in `spec.protocol.protocolName` (`modbus`, `virtual`).
    fn protocol(&self) -> &str;
    async fn connect(&self, device: &DeviceConfig) -> Result<Box<dyn Connection>, DriverError>;
}
