//! One tunnel message as upstream's `pkg/stream` frames it, in one WebSocket message (see
//! [`crate::tunnel`] for which frame type): `uvarint connectID`, `uvarint type`, then the data
//! (the rest of the message).

use bytes::Bytes;

/// Upstream's `MessageType` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    LogsConnect,
    ExecConnect,
    MetricConnect,
    Data,
    /// Either side is done with one session.
    RemoveConnect,
    /// The cloud closes the whole tunnel (connect id 0, the reason as data).
    CloseConnect,
    AttachConnect,
    /// A type this version does not know (a newer peer's); its session is refused.
    Other(u64),
}

impl MessageType {
    pub fn code(self) -> u64 {
        match self {
            MessageType::LogsConnect => 0,
            MessageType::ExecConnect => 1,
            MessageType::MetricConnect => 2,
            MessageType::Data => 3,
            MessageType::RemoveConnect => 4,
            MessageType::CloseConnect => 5,
            MessageType::AttachConnect => 6,
            MessageType::Other(code) => code,
        }
    }

    pub fn from_code(code: u64) -> MessageType {
        match code {
            0 => MessageType::LogsConnect,
            1 => MessageType::ExecConnect,
            2 => MessageType::MetricConnect,
            3 => MessageType::Data,
            4 => MessageType::RemoveConnect,
            5 => MessageType::CloseConnect,
            6 => MessageType::AttachConnect,
            other => MessageType::Other(other),
        }
    }

    /// A message that opens a session.
    pub fn opens_session(self) -> bool {
        matches!(
            self,
            MessageType::LogsConnect
                | MessageType::ExecConnect
                | MessageType::MetricConnect
                | MessageType::AttachConnect
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelMessage {
    pub connect_id: u64,
    pub kind: MessageType,
    pub data: Bytes,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("tunnel message ends inside its {0} varint")]
    Truncated(&'static str),
    #[error("tunnel message {0} varint overflows 64 bits")]
    Overflow(&'static str),
}

impl TunnelMessage {
    pub fn new(connect_id: u64, kind: MessageType, data: impl Into<Bytes>) -> TunnelMessage {
        TunnelMessage {
            connect_id,
            kind,
            data: data.into(),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.data.len() + 11);
        put_uvarint(&mut out, self.connect_id);
        put_uvarint(&mut out, self.kind.code());
        out.extend_from_slice(&self.data);
        out
    }

    pub fn decode(frame: Bytes) -> Result<TunnelMessage, FrameError> {
        let (connect_id, used) = uvarint(&frame, "connectID")?;
        let (code, used2) = uvarint(&frame[used..], "type")?;
        let kind = MessageType::from_code(code);
        Ok(TunnelMessage {
            connect_id,
            kind,
            data: frame.slice(used + used2..),
        })
    }
}

/// Go's `binary.PutUvarint`.
fn put_uvarint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// Go's `binary.Uvarint`, with its errors typed: the value and the bytes it took.
fn uvarint(bytes: &[u8], field: &'static str) -> Result<(u64, usize), FrameError> {
    let mut value = 0u64;
    for (i, &byte) in bytes.iter().enumerate() {
        if i == 10 || (i == 9 && byte > 1) {
            return Err(FrameError::Overflow(field));
        }
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Ok((value, i + 1));
        }
    }
    Err(FrameError::Truncated(field))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn frames_as_upstream() {
        // connectID 300 (0xac 0x02), type DATA (3), then the data.
        let message = TunnelMessage::new(300, MessageType::Data, &b"hi"[..]);
        assert_eq!(message.encode(), vec![0xac, 0x02, 0x03, b'h', b'i']);
        assert_eq!(
            TunnelMessage::decode(Bytes::from(message.encode())),
            Ok(message)
        );
    }

    #[test]
    fn bad_frames_are_errors() {
        assert_eq!(
            TunnelMessage::decode(Bytes::from_static(&[])),
            Err(FrameError::Truncated("connectID"))
        );
        assert_eq!(
            TunnelMessage::decode(Bytes::from_static(&[1, 0x80])),
            Err(FrameError::Truncated("type"))
        );
        assert_eq!(
            TunnelMessage::decode(Bytes::from_static(&[1, 9])).map(|m| m.kind),
            Ok(MessageType::Other(9))
        );
        assert_eq!(
            TunnelMessage::decode(Bytes::from_static(&[0xff; 11])),
            Err(FrameError::Overflow("connectID"))
        );
    }

    proptest! {
        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
            let _ = TunnelMessage::decode(Bytes::from(bytes));
        }

        #[test]
        fn round_trips(id in any::<u64>(), code in any::<u64>(), data in proptest::collection::vec(any::<u8>(), 0..64)) {
            let kind = MessageType::from_code(code);
            let message = TunnelMessage::new(id, kind, data);
            prop_assert_eq!(TunnelMessage::decode(Bytes::from(message.encode())), Ok(message));
        }
    }
}
