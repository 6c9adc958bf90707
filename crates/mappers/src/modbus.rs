//! Modbus TCP: a client for the few functions a mapper needs, and the driver that maps device
//! properties onto registers and coils.
//!
//! A property's `visitors.configData`: `register` (`HoldingRegister`, `InputRegister`,
//! `CoilRegister`/`Coil`, `DiscreteInputRegister`/`DiscreteInput`), `offset` (the address),
//! `limit` (registers to read: 1 = 16 bit, 2 = 32 bit, 4 = 64 bit), `scale` (value = raw ×
//! scale), `isSwap` (bytes within each register swapped), `isRegisterSwap` (low register first).
//! The device's `protocol.configData`: `ip`, `port` (502), `slaveID` (1).

use std::time::Duration;

use ke_mapper::{Connection, DeviceConfig, Driver, DriverError, PropertyConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(3);

pub struct ModbusDriver;

#[tonic::async_trait]
impl Driver for ModbusDriver {
    fn protocol(&self) -> &str {
        "modbus"
    }

    async fn connect(&self, device: &DeviceConfig) -> Result<Box<dyn Connection>, DriverError> {
        let ip = device.protocol["ip"]
            .as_str()
            .ok_or_else(|| DriverError::Config("protocol.configData.ip is missing".into()))?;
        let port = device.protocol["port"].as_u64().unwrap_or(502);
        let unit = device.protocol["slaveID"].as_u64().unwrap_or(1);
        let unit = u8::try_from(unit)
            .map_err(|_| DriverError::Config(format!("slaveID {unit} is not 0–255")))?;
        let address = format!("{ip}:{port}");
        let stream = tokio::time::timeout(TIMEOUT, TcpStream::connect(&address))
            .await
            .map_err(|_| DriverError::Device(format!("{address}: no answer")))?
            .map_err(|e| DriverError::Device(format!("{address}: {e}")))?;
        let _ = stream.set_nodelay(true);
        Ok(Box::new(ModbusConnection {
            client: Client {
                stream,
                unit,
                transaction: 0,
            },
        }))
    }
}

/// The Modbus tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Table {
    Coils,
    DiscreteInputs,
    HoldingRegisters,
    InputRegisters,
}

/// Where and how a property lives on the device.
#[derive(Debug, Clone, PartialEq)]
struct Visitor {
    table: Table,
    address: u16,
    count: u16,
    scale: f64,
    swap_bytes: bool,
    swap_registers: bool,
}

fn visitor(property: &PropertyConfig) -> Result<Visitor, DriverError> {
    let v = &property.visitor;
    let table = match v["register"].as_str().unwrap_or("HoldingRegister") {
        "HoldingRegister" => Table::HoldingRegisters,
        "InputRegister" => Table::InputRegisters,
        "CoilRegister" | "Coil" => Table::Coils,
        "DiscreteInputRegister" | "DiscreteInput" => Table::DiscreteInputs,
        other => {
            return Err(DriverError::Config(format!(
                "register {other:?} is not a Modbus table"
            )));
        }
    };
    let number = |key: &str, default: u64| v[key].as_u64().unwrap_or(default);
    let address = u16::try_from(number("offset", 0))
        .map_err(|_| DriverError::Config("offset is beyond 65535".into()))?;
    let count = match number("limit", 1) {
        n @ (1 | 2 | 4) => n as u16,
        n if property.value_type == "STRING" && (1..=125).contains(&n) => n as u16,
        n => {
            return Err(DriverError::Config(format!(
                "limit {n}: use 1, 2 or 4 registers"
            )));
        }
    };
    Ok(Visitor {
        table,
        address,
        count,
        scale: v["scale"].as_f64().filter(|s| *s != 0.0).unwrap_or(1.0),
        swap_bytes: v["isSwap"].as_bool().unwrap_or(false),
        swap_registers: v["isRegisterSwap"].as_bool().unwrap_or(false),
    })
}

struct ModbusConnection {
    client: Client,
}

/// Registers as the big-endian bytes of one value, after the configured swaps.
fn to_bytes(registers: &[u16], visitor: &Visitor) -> Vec<u8> {
    let mut registers = registers.to_vec();
    if visitor.swap_registers {
        registers.reverse();
    }
    registers
        .iter()
        .flat_map(|r| {
            let [hi, lo] = r.to_be_bytes();
            if visitor.swap_bytes {
                [lo, hi]
            } else {
                [hi, lo]
            }
        })
        .collect()
}

fn from_bytes(bytes: &[u8], visitor: &Visitor) -> Vec<u16> {
    let mut registers: Vec<u16> = bytes
        .chunks(2)
        .map(|c| {
            let (hi, lo) = (c[0], *c.get(1).unwrap_or(&0));
            if visitor.swap_bytes {
                u16::from_be_bytes([lo, hi])
            } else {
                u16::from_be_bytes([hi, lo])
            }
        })
        .collect();
    if visitor.swap_registers {
        registers.reverse();
    }
    registers
}

fn format_number(value: f64, integer: bool) -> String {
    if integer {
        format!("{}", value.round() as i64)
    } else {
        format!("{value}")
    }
}

/// A register value as the property's text.
fn decode(registers: &[u16], visitor: &Visitor, value_type: &str) -> Result<String, DriverError> {
    let bytes = to_bytes(registers, visitor);
    let raw = match (value_type, bytes.len()) {
        ("STRING", _) => {
            let text = String::from_utf8_lossy(&bytes);
            return Ok(text.trim_end_matches('\0').to_owned());
        }
        ("BOOLEAN" | "BOOL", _) => return Ok((bytes.iter().any(|b| *b != 0)).to_string()),
        ("FLOAT" | "DOUBLE", 4) => f64::from(f32::from_be_bytes(
            bytes[..4].try_into().unwrap_or_default(),
        )),
        ("FLOAT" | "DOUBLE", 8) => f64::from_be_bytes(bytes[..8].try_into().unwrap_or_default()),
        (_, 2) => f64::from(i16::from_be_bytes([bytes[0], bytes[1]])),
        (_, 4) => f64::from(i32::from_be_bytes(
            bytes[..4].try_into().unwrap_or_default(),
        )),
        (_, 8) => i64::from_be_bytes(bytes[..8].try_into().unwrap_or_default()) as f64,
        (_, n) => {
            return Err(DriverError::Config(format!(
                "{n} bytes do not make a number"
            )));
        }
    };
    let integer = matches!(value_type, "INT" | "INTEGER");
    Ok(format_number(raw * visitor.scale, integer))
}

/// The property's text as registers to write.
fn encode(value: &str, visitor: &Visitor, value_type: &str) -> Result<Vec<u16>, DriverError> {
    let bad = || DriverError::Config(format!("{value:?} is not a {value_type} value"));
    let bytes: Vec<u8> = match value_type {
        "STRING" => {
            let mut bytes = value.as_bytes().to_vec();
            bytes.resize(usize::from(visitor.count) * 2, 0);
            bytes
        }
        "BOOLEAN" | "BOOL" => {
            let on = matches!(value, "true" | "1");
            if !on && !matches!(value, "false" | "0") {
                return Err(bad());
            }
            let mut bytes = vec![0; usize::from(visitor.count) * 2];
            if let Some(last) = bytes.last_mut() {
                *last = u8::from(on);
            }
            bytes
        }
        _ => {
            let number: f64 = value.parse().map_err(|_| bad())?;
            let raw = number / visitor.scale;
            match (value_type, visitor.count) {
                ("FLOAT" | "DOUBLE", 2) => (raw as f32).to_be_bytes().to_vec(),
                ("FLOAT" | "DOUBLE", 4) => raw.to_be_bytes().to_vec(),
                (_, 1) => (raw.round() as i16).to_be_bytes().to_vec(),
                (_, 2) => (raw.round() as i32).to_be_bytes().to_vec(),
                (_, 4) => (raw.round() as i64).to_be_bytes().to_vec(),
                _ => return Err(bad()),
            }
        }
    };
    Ok(from_bytes(&bytes, visitor))
}

#[tonic::async_trait]
impl Connection for ModbusConnection {
    async fn read(&mut self, property: &PropertyConfig) -> Result<String, DriverError> {
        let visitor = visitor(property)?;
        match visitor.table {
            Table::Coils | Table::DiscreteInputs => {
                let function = if visitor.table == Table::Coils { 1 } else { 2 };
                let bits = self.client.read_bits(function, visitor.address).await?;
                Ok(bits.to_string())
            }
            Table::HoldingRegisters | Table::InputRegisters => {
                let function = if visitor.table == Table::HoldingRegisters {
                    3
                } else {
                    4
                };
                let registers = self
                    .client
                    .read_registers(function, visitor.address, visitor.count)
                    .await?;
                decode(&registers, &visitor, &property.value_type)
            }
        }
    }

    async fn write(&mut self, property: &PropertyConfig, value: &str) -> Result<(), DriverError> {
        let visitor = visitor(property)?;
        match visitor.table {
            Table::Coils => {
                let on = match value {
                    "true" | "1" | "on" => true,
                    "false" | "0" | "off" => false,
                    _ => {
                        return Err(DriverError::Config(format!(
                            "{value:?} is not a coil state"
                        )));
                    }
                };
                self.client.write_coil(visitor.address, on).await
            }
            Table::HoldingRegisters => {
                let registers = encode(value, &visitor, &property.value_type)?;
                self.client
                    .write_registers(visitor.address, &registers)
                    .await
            }
            Table::InputRegisters | Table::DiscreteInputs => Err(DriverError::Config(
                "input registers and discrete inputs are read-only".into(),
            )),
        }
    }
}

/// Modbus TCP requests on one connection, one at a time.
struct Client {
    stream: TcpStream,
    unit: u8,
    transaction: u16,
}

impl Client {
    async fn request(&mut self, pdu: &[u8]) -> Result<Vec<u8>, DriverError> {
        let io = |e: std::io::Error| DriverError::Device(e.to_string());
        self.transaction = self.transaction.wrapping_add(1);
        let mut frame = Vec::with_capacity(7 + pdu.len());
        frame.extend_from_slice(&self.transaction.to_be_bytes());
        frame.extend_from_slice(&0u16.to_be_bytes());
        frame.extend_from_slice(&(u16::try_from(pdu.len() + 1).unwrap_or(u16::MAX)).to_be_bytes());
        frame.push(self.unit);
        frame.extend_from_slice(pdu);
        let exchange = async {
            self.stream.write_all(&frame).await.map_err(io)?;
            let mut header = [0u8; 7];
            self.stream.read_exact(&mut header).await.map_err(io)?;
            let length = usize::from(u16::from_be_bytes([header[4], header[5]]));
            if !(2..=254).contains(&length) {
                return Err(DriverError::Device(format!("bad frame length {length}")));
            }
            let mut body = vec![0u8; length - 1];
            self.stream.read_exact(&mut body).await.map_err(io)?;
            if u16::from_be_bytes([header[0], header[1]]) != self.transaction {
                return Err(DriverError::Device("answer to another request".into()));
            }
            Ok(body)
        };
        let body = tokio::time::timeout(TIMEOUT, exchange)
            .await
            .map_err(|_| DriverError::Device("no answer within 3 s".into()))??;
        match body.first() {
            Some(function) if *function == pdu[0] => Ok(body),
            Some(function) if *function == pdu[0] | 0x80 => Err(DriverError::Device(format!(
                "exception {} for function {}",
                body.get(1).copied().unwrap_or(0),
                pdu[0]
            ))),
            _ => Err(DriverError::Device("malformed answer".into())),
        }
    }

    async fn read_registers(
        &mut self,
        function: u8,
        address: u16,
        count: u16,
    ) -> Result<Vec<u16>, DriverError> {
        let mut pdu = vec![function];
        pdu.extend_from_slice(&address.to_be_bytes());
        pdu.extend_from_slice(&count.to_be_bytes());
        let body = self.request(&pdu).await?;
        let bytes = body.get(2..).unwrap_or_default();
        if bytes.len() != usize::from(count) * 2 || body[1] as usize != bytes.len() {
            return Err(DriverError::Device("short register answer".into()));
        }
        Ok(bytes
            .chunks(2)
            .map(|c| u16::from_be_bytes([c[0], c[1]]))
            .collect())
    }

    async fn read_bits(&mut self, function: u8, address: u16) -> Result<bool, DriverError> {
        let mut pdu = vec![function];
        pdu.extend_from_slice(&address.to_be_bytes());
        pdu.extend_from_slice(&1u16.to_be_bytes());
        let body = self.request(&pdu).await?;
        let byte = body
            .get(2)
            .ok_or_else(|| DriverError::Device("short bit answer".into()))?;
        Ok(byte & 1 == 1)
    }

    async fn write_registers(
        &mut self,
        address: u16,
        registers: &[u16],
    ) -> Result<(), DriverError> {
        let mut pdu = vec![16];
        pdu.extend_from_slice(&address.to_be_bytes());
        pdu.extend_from_slice(&(registers.len() as u16).to_be_bytes());
        pdu.push((registers.len() * 2) as u8);
        for register in registers {
            pdu.extend_from_slice(&register.to_be_bytes());
        }
        self.request(&pdu).await.map(drop)
    }

    async fn write_coil(&mut self, address: u16, on: bool) -> Result<(), DriverError> {
        let mut pdu = vec![5];
        pdu.extend_from_slice(&address.to_be_bytes());
        pdu.extend_from_slice(&(if on { 0xFF00u16 } else { 0 }).to_be_bytes());
        self.request(&pdu).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn property(value_type: &str, visitor: Value) -> PropertyConfig {
        PropertyConfig {
            name: "p".into(),
            visitor,
            value_type: value_type.into(),
            access_mode: "ReadWrite".into(),
            desired: None,
            collect_cycle: Duration::from_secs(1),
            report_cycle: Duration::from_secs(1),
            report_to_cloud: true,
            push_mqtt: None,
            push_http: None,
        }
    }

    #[test]
    fn values_round_trip_through_registers() {
        let cases = [
            ("INT", json!({"limit": 1}), "-12"),
            ("INT", json!({"limit": 2, "isRegisterSwap": true}), "70000"),
            ("INT", json!({"limit": 1, "scale": 0.1}), "215"),
            ("FLOAT", json!({"limit": 2, "isSwap": true}), "21.5"),
            ("FLOAT", json!({"limit": 1, "scale": 0.5}), "10.5"),
            ("BOOLEAN", json!({}), "true"),
            ("STRING", json!({"limit": 3}), "abcd"),
        ];
        for (value_type, config, value) in cases {
            let p = property(value_type, config);
            let v = visitor(&p).unwrap();
            let registers = encode(value, &v, value_type).unwrap();
            assert_eq!(
                registers.len(),
                usize::from(v.count),
                "{value_type} {value}"
            );
            assert_eq!(
                decode(&registers, &v, value_type).unwrap(),
                value,
                "{value_type}"
            );
        }
    }

    #[test]
    fn bad_settings_are_configuration_errors() {
        for config in [
            json!({"register": "Magic"}),
            json!({"limit": 3}),
            json!({"offset": 70000}),
        ] {
            assert!(matches!(
                visitor(&property("INT", config)),
                Err(DriverError::Config(_))
            ));
        }
        let v = visitor(&property("INT", json!({}))).unwrap();
        assert!(encode("warm", &v, "INT").is_err());
        assert!(encode("maybe", &v, "BOOLEAN").is_err());
    }
}
