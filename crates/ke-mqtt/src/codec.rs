//! MQTT 3.1.1 packets (OASIS standard, section 3) and their wire form.
//!
//! [`decode`] takes what has arrived so far: `Ok(None)` until a whole packet is there, then
//! the packet (its bytes consumed). Anything the specification forbids — reserved flags set,
//! QoS 3, a wildcard in a PUBLISH topic, invalid UTF-8, a field longer than its packet — is a
//! [`CodecError`], after which the connection must be closed (spec 4.8). Packets larger than
//! the caller's limit are refused from their fixed header, before their body is buffered.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::topic;

/// The largest remaining length four length bytes can carry (256 MiB − 1).
pub const MAX_REMAINING_LENGTH: usize = 268_435_455;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum QoS {
    AtMostOnce = 0,
    AtLeastOnce = 1,
    ExactlyOnce = 2,
}

impl QoS {
    pub fn from_bits(bits: u8) -> Result<QoS, CodecError> {
        match bits {
            0 => Ok(QoS::AtMostOnce),
            1 => Ok(QoS::AtLeastOnce),
            2 => Ok(QoS::ExactlyOnce),
            other => Err(CodecError::InvalidQoS(other)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Connect(Connect),
    ConnAck(ConnAck),
    Publish(Publish),
    PubAck(u16),
    PubRec(u16),
    PubRel(u16),
    PubComp(u16),
    Subscribe(Subscribe),
    SubAck(SubAck),
    Unsubscribe(Unsubscribe),
    UnsubAck(u16),
    PingReq,
    PingResp,
    Disconnect,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connect {
    /// 4 for MQTT 3.1.1 (`MQTT`), 3 for 3.1 (`MQIsdp`), which older mappers still speak.
    pub protocol_level: u8,
    pub client_id: String,
    pub clean_session: bool,
    pub keep_alive: u16,
    pub will: Option<Will>,
    pub username: Option<String>,
    pub password: Option<Bytes>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Will {
    pub topic: String,
    pub payload: Bytes,
    pub qos: QoS,
    pub retain: bool,
}

/// CONNACK return codes (spec 3.2.2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectCode {
    Accepted = 0,
    UnacceptableProtocol = 1,
    IdentifierRejected = 2,
    ServerUnavailable = 3,
    BadUsernameOrPassword = 4,
    NotAuthorized = 5,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnAck {
    pub session_present: bool,
    pub code: ConnectCode,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Publish {
    pub dup: bool,
    pub qos: QoS,
    pub retain: bool,
    pub topic: String,
    /// Present exactly when `qos` is above 0.
    pub packet_id: Option<u16>,
    pub payload: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    pub packet_id: u16,
    pub filters: Vec<(String, QoS)>,
}

/// Granted QoS per filter, or `None` for a refused one (0x80).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubAck {
    pub packet_id: u16,
    pub granted: Vec<Option<QoS>>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsubscribe {
    pub packet_id: u16,
    pub filters: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    #[error("malformed remaining length (more than four length bytes)")]
    MalformedLength,
    #[error("packet of {size} bytes exceeds the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("unknown packet type {0}")]
    UnknownType(u8),
    #[error("invalid fixed header flags {flags:#06b} for {packet}")]
    InvalidFlags { packet: &'static str, flags: u8 },
    #[error("{0} is cut short")]
    Truncated(&'static str),
    #[error("{0} has {1} bytes after its end")]
    TrailingBytes(&'static str, usize),
    #[error("invalid QoS {0}")]
    InvalidQoS(u8),
    #[error("a string is not valid UTF-8 or contains U+0000")]
    InvalidString,
    #[error("unsupported protocol {name:?} level {level}")]
    UnsupportedProtocol { name: String, level: u8 },
    #[error("invalid CONNECT flags {0:#010b}")]
    InvalidConnectFlags(u8),
    #[error("invalid topic name {0:?}")]
    InvalidTopic(String),
    #[error("invalid topic filter {0:?}")]
    InvalidFilter(String),
    #[error("packet identifier 0")]
    ZeroPacketId,
    #[error("{0} without any topic filter")]
    NoFilters(&'static str),
    #[error("invalid CONNACK return code {0}")]
    InvalidConnectCode(u8),
    #[error("invalid SUBACK return code {0:#x}")]
    InvalidSubAckCode(u8),
}

/// The next whole packet in `buffer` (consumed), `Ok(None)` if more bytes are needed.
pub fn decode(buffer: &mut BytesMut, max_packet: usize) -> Result<Option<Packet>, CodecError> {
    // The first byte alone can be wrong: no need to wait for a body that may never come.
    if let Some(&first) = buffer.first() {
        check_first_byte(first)?;
    }
    let Some((header_len, remaining)) = fixed_header(buffer)? else {
        return Ok(None);
    };
    let size = header_len + remaining;
    if size > max_packet {
        return Err(CodecError::TooLarge {
            size,
            max: max_packet,
        });
    }
    if buffer.len() < size {
        buffer.reserve(size - buffer.len());
        return Ok(None);
    }
    let first = buffer[0];
    buffer.advance(header_len);
    let body = buffer.split_to(remaining).freeze();
    parse(first >> 4, first & 0x0f, body).map(Some)
}

/// The packet type and its fixed header flags (spec 2.2).
fn check_first_byte(first: u8) -> Result<(), CodecError> {
    let (kind, flags) = (first >> 4, first & 0x0f);
    let (packet, wanted) = match kind {
        3 => return QoS::from_bits((flags >> 1) & 0b11).map(|_| ()),
        6 => ("PUBREL", 0b0010),
        8 => ("SUBSCRIBE", 0b0010),
        10 => ("UNSUBSCRIBE", 0b0010),
        1 | 2 | 4 | 5 | 7 | 9 | 11..=14 => ("packet", 0),
        other => return Err(CodecError::UnknownType(other)),
    };
    if flags == wanted {
        Ok(())
    } else {
        Err(CodecError::InvalidFlags { packet, flags })
    }
}

/// The fixed header's length and the remaining length, once both are complete.
fn fixed_header(buffer: &[u8]) -> Result<Option<(usize, usize)>, CodecError> {
    let mut remaining = 0usize;
    for (i, byte) in buffer.iter().skip(1).take(4).enumerate() {
        remaining |= usize::from(byte & 0x7f) << (7 * i);
        if byte & 0x80 == 0 {
            return Ok(Some((i + 2, remaining)));
        }
    }
    if buffer.len() >= 5 {
        return Err(CodecError::MalformedLength);
    }
    Ok(None)
}

fn parse(kind: u8, flags: u8, mut body: Bytes) -> Result<Packet, CodecError> {
    let expect_flags = |packet: &'static str, wanted: u8| {
        if flags == wanted {
            Ok(())
        } else {
            Err(CodecError::InvalidFlags { packet, flags })
        }
    };
    let packet = match kind {
        1 => {
            expect_flags("CONNECT", 0)?;
            Packet::Connect(connect(&mut body)?)
        }
        2 => {
            expect_flags("CONNACK", 0)?;
            let ack = take_u8(&mut body, "CONNACK")?;
            let code = take_u8(&mut body, "CONNACK")?;
            if ack & 0xfe != 0 {
                return Err(CodecError::InvalidFlags {
                    packet: "CONNACK",
                    flags: ack,
                });
            }
            Packet::ConnAck(ConnAck {
                session_present: ack & 1 == 1,
                code: connect_code(code)?,
            })
        }
        3 => Packet::Publish(publish(flags, &mut body)?),
        4 => {
            expect_flags("PUBACK", 0)?;
            Packet::PubAck(packet_id(&mut body, "PUBACK")?)
        }
        5 => {
            expect_flags("PUBREC", 0)?;
            Packet::PubRec(packet_id(&mut body, "PUBREC")?)
        }
        6 => {
            expect_flags("PUBREL", 0b0010)?;
            Packet::PubRel(packet_id(&mut body, "PUBREL")?)
        }
        7 => {
            expect_flags("PUBCOMP", 0)?;
            Packet::PubComp(packet_id(&mut body, "PUBCOMP")?)
        }
        8 => {
            expect_flags("SUBSCRIBE", 0b0010)?;
            let packet_id = packet_id(&mut body, "SUBSCRIBE")?;
            let mut filters = Vec::new();
            while body.has_remaining() {
                let filter = filter(&mut body, "SUBSCRIBE")?;
                let options = take_u8(&mut body, "SUBSCRIBE")?;
                if options & 0xfc != 0 {
                    return Err(CodecError::InvalidQoS(options));
                }
                filters.push((filter, QoS::from_bits(options)?));
            }
            if filters.is_empty() {
                return Err(CodecError::NoFilters("SUBSCRIBE"));
            }
            Packet::Subscribe(Subscribe { packet_id, filters })
        }
        9 => {
            expect_flags("SUBACK", 0)?;
            let packet_id = packet_id(&mut body, "SUBACK")?;
            let granted = body
                .iter()
                .map(|code| match code {
                    0x80 => Ok(None),
                    code => QoS::from_bits(*code)
                        .map(Some)
                        .map_err(|_| CodecError::InvalidSubAckCode(*code)),
                })
                .collect::<Result<_, _>>()?;
            body.clear();
            Packet::SubAck(SubAck { packet_id, granted })
        }
        10 => {
            expect_flags("UNSUBSCRIBE", 0b0010)?;
            let packet_id = packet_id(&mut body, "UNSUBSCRIBE")?;
            let mut filters = Vec::new();
            while body.has_remaining() {
                filters.push(filter(&mut body, "UNSUBSCRIBE")?);
            }
            if filters.is_empty() {
                return Err(CodecError::NoFilters("UNSUBSCRIBE"));
            }
            Packet::Unsubscribe(Unsubscribe { packet_id, filters })
        }
        11 => {
            expect_flags("UNSUBACK", 0)?;
            Packet::UnsubAck(packet_id(&mut body, "UNSUBACK")?)
        }
        12 => {
            expect_flags("PINGREQ", 0)?;
            Packet::PingReq
        }
        13 => {
            expect_flags("PINGRESP", 0)?;
            Packet::PingResp
        }
        14 => {
            expect_flags("DISCONNECT", 0)?;
            Packet::Disconnect
        }
        other => return Err(CodecError::UnknownType(other)),
    };
    if body.has_remaining() {
        return Err(CodecError::TrailingBytes(name(&packet), body.remaining()));
    }
    Ok(packet)
}

fn connect(body: &mut Bytes) -> Result<Connect, CodecError> {
    const WHAT: &str = "CONNECT";
    let protocol = string(body, WHAT)?;
    let protocol_level = take_u8(body, WHAT)?;
    match (protocol.as_str(), protocol_level) {
        ("MQTT", 4) | ("MQIsdp", 3) => {}
        _ => {
            return Err(CodecError::UnsupportedProtocol {
                name: protocol,
                level: protocol_level,
            });
        }
    }
    let flags = take_u8(body, WHAT)?;
    let will_flag = flags & 0b0000_0100 != 0;
    let will_qos = QoS::from_bits((flags >> 3) & 0b11)?;
    let will_retain = flags & 0b0010_0000 != 0;
    let has_password = flags & 0b0100_0000 != 0;
    let has_username = flags & 0b1000_0000 != 0;
    let reserved = flags & 1 != 0;
    let stray_will = !will_flag && (will_qos != QoS::AtMostOnce || will_retain);
    if reserved || stray_will || (has_password && !has_username) {
        return Err(CodecError::InvalidConnectFlags(flags));
    }
    let keep_alive = take_u16(body, WHAT)?;
    let client_id = string(body, WHAT)?;
    let will = if will_flag {
        let topic = string(body, WHAT)?;
        if !topic::valid_name(&topic) {
            return Err(CodecError::InvalidTopic(topic));
        }
        Some(Will {
            topic,
            payload: binary(body, WHAT)?,
            qos: will_qos,
            retain: will_retain,
        })
    } else {
        None
    };
    let username = has_username.then(|| string(body, WHAT)).transpose()?;
    let password = has_password.then(|| binary(body, WHAT)).transpose()?;
    Ok(Connect {
        protocol_level,
        client_id,
        clean_session: flags & 0b0000_0010 != 0,
        keep_alive,
        will,
        username,
        password,
    })
}

fn publish(flags: u8, body: &mut Bytes) -> Result<Publish, CodecError> {
    let qos = QoS::from_bits((flags >> 1) & 0b11)?;
    let dup = flags & 0b1000 != 0;
    if dup && qos == QoS::AtMostOnce {
        return Err(CodecError::InvalidFlags {
            packet: "PUBLISH",
            flags,
        });
    }
    let topic = string(body, "PUBLISH")?;
    if !topic::valid_name(&topic) {
        return Err(CodecError::InvalidTopic(topic));
    }
    let packet_id = match qos {
        QoS::AtMostOnce => None,
        _ => Some(packet_id(body, "PUBLISH")?),
    };
    Ok(Publish {
        dup,
        qos,
        retain: flags & 1 != 0,
        topic,
        packet_id,
        payload: body.split_off(0),
    })
}

fn filter(body: &mut Bytes, what: &'static str) -> Result<String, CodecError> {
    let filter = string(body, what)?;
    if topic::valid_filter(&filter) {
        Ok(filter)
    } else {
        Err(CodecError::InvalidFilter(filter))
    }
}

fn connect_code(code: u8) -> Result<ConnectCode, CodecError> {
    Ok(match code {
        0 => ConnectCode::Accepted,
        1 => ConnectCode::UnacceptableProtocol,
        2 => ConnectCode::IdentifierRejected,
        3 => ConnectCode::ServerUnavailable,
        4 => ConnectCode::BadUsernameOrPassword,
        5 => ConnectCode::NotAuthorized,
        other => return Err(CodecError::InvalidConnectCode(other)),
    })
}

fn name(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}

fn take_u8(body: &mut Bytes, what: &'static str) -> Result<u8, CodecError> {
    if body.remaining() < 1 {
        return Err(CodecError::Truncated(what));
    }
    Ok(body.get_u8())
}

fn take_u16(body: &mut Bytes, what: &'static str) -> Result<u16, CodecError> {
    if body.remaining() < 2 {
        return Err(CodecError::Truncated(what));
    }
    Ok(body.get_u16())
}

fn packet_id(body: &mut Bytes, what: &'static str) -> Result<u16, CodecError> {
    match take_u16(body, what)? {
        0 => Err(CodecError::ZeroPacketId),
        id => Ok(id),
    }
}

fn binary(body: &mut Bytes, what: &'static str) -> Result<Bytes, CodecError> {
    let len = usize::from(take_u16(body, what)?);
    if body.remaining() < len {
        return Err(CodecError::Truncated(what));
    }
    Ok(body.split_to(len))
}

fn string(body: &mut Bytes, what: &'static str) -> Result<String, CodecError> {
    let bytes = binary(body, what)?;
    match std::str::from_utf8(&bytes) {
        Ok(text) if !text.contains('\0') => Ok(text.to_owned()),
        _ => Err(CodecError::InvalidString),
    }
}

/// Appends `packet`'s wire form to `out`. Fields are the caller's to keep valid (strings
/// under 64 KiB, packet identifiers where the QoS needs them).
pub fn encode(packet: &Packet, out: &mut BytesMut) {
    let mut body = BytesMut::new();
    let first = match packet {
        Packet::Connect(c) => {
            let (name, level) = if c.protocol_level == 3 {
                ("MQIsdp", 3)
            } else {
                ("MQTT", 4)
            };
            put_str(&mut body, name);
            body.put_u8(level);
            let mut flags = 0u8;
            if c.clean_session {
                flags |= 0b10;
            }
            if let Some(will) = &c.will {
                flags |= 0b100 | ((will.qos as u8) << 3);
                if will.retain {
                    flags |= 0b10_0000;
                }
            }
            if c.password.is_some() {
                flags |= 0b100_0000;
            }
            if c.username.is_some() {
                flags |= 0b1000_0000;
            }
            body.put_u8(flags);
            body.put_u16(c.keep_alive);
            put_str(&mut body, &c.client_id);
            if let Some(will) = &c.will {
                put_str(&mut body, &will.topic);
                put_bytes(&mut body, &will.payload);
            }
            if let Some(username) = &c.username {
                put_str(&mut body, username);
            }
            if let Some(password) = &c.password {
                put_bytes(&mut body, password);
            }
            0x10
        }
        Packet::ConnAck(ack) => {
            body.put_u8(u8::from(ack.session_present));
            body.put_u8(ack.code as u8);
            0x20
        }
        Packet::Publish(p) => {
            put_str(&mut body, &p.topic);
            if let Some(id) = p.packet_id {
                body.put_u16(id);
            }
            body.put_slice(&p.payload);
            0x30 | (u8::from(p.dup) << 3) | ((p.qos as u8) << 1) | u8::from(p.retain)
        }
        Packet::PubAck(id) => {
            body.put_u16(*id);
            0x40
        }
        Packet::PubRec(id) => {
            body.put_u16(*id);
            0x50
        }
        Packet::PubRel(id) => {
            body.put_u16(*id);
            0x62
        }
        Packet::PubComp(id) => {
            body.put_u16(*id);
            0x70
        }
        Packet::Subscribe(s) => {
            body.put_u16(s.packet_id);
            for (filter, qos) in &s.filters {
                put_str(&mut body, filter);
                body.put_u8(*qos as u8);
            }
            0x82
        }
        Packet::SubAck(ack) => {
            body.put_u16(ack.packet_id);
            for granted in &ack.granted {
                body.put_u8(granted.map_or(0x80, |q| q as u8));
            }
            0x90
        }
        Packet::Unsubscribe(u) => {
            body.put_u16(u.packet_id);
            for filter in &u.filters {
                put_str(&mut body, filter);
            }
            0xa2
        }
        Packet::UnsubAck(id) => {
            body.put_u16(*id);
            0xb0
        }
        Packet::PingReq => 0xc0,
        Packet::PingResp => 0xd0,
        Packet::Disconnect => 0xe0,
    };
    out.reserve(body.len() + 5);
    out.put_u8(first);
    let mut remaining = body.len();
    loop {
        let mut byte = (remaining % 128) as u8;
        remaining /= 128;
        if remaining > 0 {
            byte |= 0x80;
        }
        out.put_u8(byte);
        if remaining == 0 {
            break;
        }
    }
    out.put_slice(&body);
}

fn put_str(out: &mut BytesMut, text: &str) {
    put_bytes(out, text.as_bytes());
}

fn put_bytes(out: &mut BytesMut, bytes: &[u8]) {
    out.put_u16(bytes.len() as u16);
    out.put_slice(bytes);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const MAX: usize = 1 << 20;

    fn decode_all(bytes: &[u8]) -> Result<Option<Packet>, CodecError> {
        decode(&mut BytesMut::from(bytes), MAX)
    }

    #[test]
    fn a_client_connect_and_publish_decode() {
        // What `mosquitto_pub -i dev1 -q 1 -t '$hw/x' -m hi -u u -P p` sends, built byte by
        // byte from the specification (3.1 and 3.3): CONNECT, then PUBLISH QoS 1, id 1.
        let connect = [
            0x10, 0x1c, 0x00, 0x04, b'M', b'Q', b'T', b'T', 0x04, 0xc2, 0x00, 0x3c, 0x00, 0x04,
            b'd', b'e', b'v', b'1', 0x00, 0x01, b'u', 0x00, 0x01, b'p',
        ];
        let mut fixed = connect.to_vec();
        fixed[1] = (fixed.len() - 2) as u8;
        match decode_all(&fixed).unwrap().unwrap() {
            Packet::Connect(c) => {
                assert_eq!(c.client_id, "dev1");
                assert_eq!(
                    (c.protocol_level, c.keep_alive, c.clean_session),
                    (4, 60, true)
                );
                assert_eq!(c.username.as_deref(), Some("u"));
                assert_eq!(c.password.as_deref(), Some(&b"p"[..]));
                assert!(c.will.is_none());
            }
            other => panic!("{other:?}"),
        }
        let publish = [
            0x32, 0x0b, 0x00, 0x05, b'$', b'h', b'w', b'/', b'x', 0x00, 0x01, b'h', b'i',
        ];
        let packet = decode_all(&publish).unwrap().unwrap();
        assert_eq!(
            packet,
            Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtLeastOnce,
                retain: false,
                topic: "$hw/x".into(),
                packet_id: Some(1),
                payload: Bytes::from_static(b"hi"),
            })
        );
        let mut out = BytesMut::new();
        encode(&packet, &mut out);
        assert_eq!(&out[..], &publish[..]);
    }

    #[test]
    fn partial_input_waits_and_two_packets_come_one_by_one() {
        let mut wire = BytesMut::new();
        encode(&Packet::PingReq, &mut wire);
        encode(&Packet::PubAck(7), &mut wire);
        let mut buffer = BytesMut::new();
        let mut out = Vec::new();
        for byte in wire.iter() {
            buffer.put_u8(*byte);
            while let Some(packet) = decode(&mut buffer, MAX).unwrap() {
                out.push(packet);
            }
        }
        assert_eq!(out, [Packet::PingReq, Packet::PubAck(7)]);
        assert!(buffer.is_empty());
    }

    #[test]
    fn the_remaining_length_is_encoded_in_up_to_four_bytes() {
        for (len, bytes) in [
            (0usize, 1usize),
            (127, 1),
            (128, 2),
            (16_383, 2),
            (16_384, 3),
            (2_097_152, 4),
        ] {
            let publish = Packet::Publish(Publish {
                dup: false,
                qos: QoS::AtMostOnce,
                retain: false,
                topic: "t".into(),
                packet_id: None,
                payload: Bytes::from(vec![0u8; len.saturating_sub(3)]),
            });
            let mut out = BytesMut::new();
            encode(&publish, &mut out);
            let (header, remaining) = fixed_header(&out).unwrap().unwrap();
            assert_eq!(remaining, len.max(3), "{len}");
            assert_eq!(header - 1, bytes.max(1), "{len}");
        }
        assert_eq!(
            decode_all(&[0x30, 0xff, 0xff, 0xff, 0xff, 0x01]),
            Err(CodecError::MalformedLength)
        );
    }

    #[test]
    fn what_the_specification_forbids_is_an_error() {
        let refused: [(&[u8], CodecError); 9] = [
            // PUBLISH QoS 3.
            (&[0x36, 0x03, 0x00, 0x01, b't'], CodecError::InvalidQoS(3)),
            // PUBLISH with a wildcard in its topic.
            (
                &[0x30, 0x03, 0x00, 0x01, b'#'],
                CodecError::InvalidTopic("#".into()),
            ),
            // SUBSCRIBE with flags 0 instead of 0b0010.
            (
                &[0x80, 0x06, 0x00, 0x01, 0x00, 0x01, b'a', 0x00],
                CodecError::InvalidFlags {
                    packet: "SUBSCRIBE",
                    flags: 0,
                },
            ),
            // SUBSCRIBE without filters.
            (
                &[0x82, 0x02, 0x00, 0x01],
                CodecError::NoFilters("SUBSCRIBE"),
            ),
            // SUBSCRIBE with a bad filter.
            (
                &[0x82, 0x07, 0x00, 0x01, 0x00, 0x02, b'a', b'#', 0x00],
                CodecError::InvalidFilter("a#".into()),
            ),
            // PUBACK with packet id 0.
            (&[0x40, 0x02, 0x00, 0x00], CodecError::ZeroPacketId),
            // A string longer than its packet.
            (
                &[0x30, 0x03, 0x00, 0x09, b't'],
                CodecError::Truncated("PUBLISH"),
            ),
            // Invalid UTF-8 in a topic.
            (
                &[0x30, 0x04, 0x00, 0x02, 0xc3, 0x28],
                CodecError::InvalidString,
            ),
            // Reserved packet type 15.
            (&[0xf0, 0x00], CodecError::UnknownType(15)),
        ];
        for (bytes, error) in refused {
            assert_eq!(decode_all(bytes), Err(error), "{bytes:02x?}");
        }
        let too_big = decode(&mut BytesMut::from(&[0x30, 0x80, 0x80, 0x01][..]), 1024);
        assert_eq!(
            too_big,
            Err(CodecError::TooLarge {
                size: 16_388,
                max: 1024
            })
        );
    }

    fn qos() -> impl Strategy<Value = QoS> {
        prop_oneof![
            Just(QoS::AtMostOnce),
            Just(QoS::AtLeastOnce),
            Just(QoS::ExactlyOnce)
        ]
    }

    fn name() -> impl Strategy<Value = String> {
        "[a-z$]{1,3}(/[a-z0-9]{0,4}){0,4}"
    }

    fn packet() -> impl Strategy<Value = Packet> {
        let publish = (
            any::<bool>(),
            qos(),
            any::<bool>(),
            name(),
            1u16..,
            proptest::collection::vec(any::<u8>(), 0..300),
        )
            .prop_map(|(dup, qos, retain, topic, id, payload)| {
                Packet::Publish(Publish {
                    dup: dup && qos != QoS::AtMostOnce,
                    qos,
                    retain,
                    topic,
                    packet_id: (qos != QoS::AtMostOnce).then_some(id),
                    payload: Bytes::from(payload),
                })
            });
        let connect = (
            "[a-z0-9]{0,20}",
            any::<bool>(),
            any::<u16>(),
            proptest::option::of((name(), qos(), any::<bool>())),
            proptest::option::of(("[a-z]{0,8}", proptest::option::of("[a-z]{0,8}"))),
        )
            .prop_map(
                |(client_id, clean_session, keep_alive, will, credentials)| {
                    let (username, password) = match credentials {
                        Some((user, password)) => (Some(user), password.map(Bytes::from)),
                        None => (None, None),
                    };
                    Packet::Connect(Connect {
                        protocol_level: 4,
                        client_id,
                        clean_session,
                        keep_alive,
                        will: will.map(|(topic, qos, retain)| Will {
                            topic,
                            payload: Bytes::from_static(b"gone"),
                            qos,
                            retain,
                        }),
                        username,
                        password,
                    })
                },
            );
        let subscribe = (1u16.., proptest::collection::vec((name(), qos()), 1..4))
            .prop_map(|(packet_id, filters)| Packet::Subscribe(Subscribe { packet_id, filters }));
        prop_oneof![
            publish,
            connect,
            subscribe,
            (1u16..).prop_map(Packet::PubAck),
            (1u16..).prop_map(Packet::PubRel),
            Just(Packet::PingReq),
            Just(Packet::Disconnect),
        ]
    }

    proptest! {
        #[test]
        fn packets_survive_a_round_trip(packet in packet()) {
            let mut out = BytesMut::new();
            encode(&packet, &mut out);
            prop_assert_eq!(decode(&mut out, MAX).unwrap(), Some(packet));
            prop_assert!(out.is_empty());
        }

        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut buffer = BytesMut::from(&bytes[..]);
            let _ = decode(&mut buffer, MAX);
        }
    }
}
