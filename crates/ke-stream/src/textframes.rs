//! Reading a Go peer's tunnel: upstream writes every tunnel message — SPDY bytes, gzip, logs
//! cut mid-character — as a WebSocket *text* frame, and tungstenite refuses text that is not
//! UTF-8. [`TextAsBinary`] sits under tungstenite and turns the opcode of each incoming text
//! frame into binary as the bytes pass, so the payload arrives untouched (the tunnel treats
//! text and binary alike, so this is done for every peer). It skips the HTTP upgrade head
//! itself (up to the first blank line, so frames read together with it are tracked too) and
//! then follows the frame headers as they stream by; only the first byte of a header is ever
//! changed.

use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const OPCODE_TEXT: u8 = 0x1;
const OPCODE_BINARY: u8 = 0x2;

/// Where the reader is in the incoming frame sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// In the HTTP upgrade head: `matched` bytes of the blank line's `\r\n\r\n` seen.
    Head {
        matched: usize,
    },
    /// Inside a frame header: `seen` of its bytes so far, `length` the payload length field
    /// decoded so far, `extended` how many extended-length bytes follow, `masked` whether a
    /// 4-byte key follows.
    Header {
        seen: usize,
        extended: usize,
        masked: bool,
        length: u64,
    },
    Payload {
        remaining: u64,
    },
}

const NEW_HEADER: State = State::Header {
    seen: 0,
    extended: 0,
    masked: false,
    length: 0,
};

pub struct TextAsBinary<S> {
    inner: S,
    state: State,
}

impl<S> TextAsBinary<S> {
    /// Wraps a stream whose next incoming bytes are the peer's HTTP upgrade request or answer.
    pub fn new(inner: S) -> TextAsBinary<S> {
        TextAsBinary {
            inner,
            state: State::Head { matched: 0 },
        }
    }

    /// Wraps a stream whose upgrade is already done: the next incoming byte starts a frame.
    pub fn after_upgrade(inner: S) -> TextAsBinary<S> {
        TextAsBinary {
            inner,
            state: NEW_HEADER,
        }
    }

    /// Walks `bytes` (just read), rewriting text opcodes.
    fn rewrite(&mut self, bytes: &mut [u8]) {
        let mut i = 0;
        while i < bytes.len() {
            match self.state {
                State::Head { matched } => {
                    let expected = b"\r\n\r\n"[matched];
                    let byte = bytes[i];
                    i += 1;
                    let matched = match (byte == expected, byte == b'\r') {
                        (true, _) => matched + 1,
                        (false, true) => 1,
                        (false, false) => 0,
                    };
                    self.state = if matched == 4 {
                        NEW_HEADER
                    } else {
                        State::Head { matched }
                    };
                }
                State::Payload { remaining } => {
                    let take = remaining.min((bytes.len() - i) as u64);
                    i += take as usize;
                    self.state = match remaining - take {
                        0 => NEW_HEADER,
                        remaining => State::Payload { remaining },
                    };
                }
                State::Header {
                    seen,
                    extended,
                    masked,
                    length,
                } => {
                    let byte = bytes[i];
                    let (extended, masked, length) = match seen {
                        0 if byte & 0x0f == OPCODE_TEXT => {
                            bytes[i] = (byte & 0xf0) | OPCODE_BINARY;
                            (extended, masked, length)
                        }
                        1 => {
                            let masked = byte & 0x80 != 0;
                            match byte & 0x7f {
                                126 => (2, masked, 0),
                                127 => (8, masked, 0),
                                short => (0, masked, u64::from(short)),
                            }
                        }
                        n if n >= 2 && n < 2 + extended => {
                            (extended, masked, (length << 8) | u64::from(byte))
                        }
                        // The first byte of a non-text frame, or a masking key byte.
                        _ => (extended, masked, length),
                    };
                    i += 1;
                    let seen = seen + 1;
                    let total = 2 + extended + if masked { 4 } else { 0 };
                    self.state = if seen >= 2 && seen == total {
                        match length {
                            0 => NEW_HEADER,
                            remaining => State::Payload { remaining },
                        }
                    } else {
                        State::Header {
                            seen,
                            extended,
                            masked,
                            length,
                        }
                    };
                }
            }
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TextAsBinary<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let this = &mut *self;
            this.rewrite(&mut buf.filled_mut()[before..]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TextAsBinary<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(opcode: u8, fin: bool, masked: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        let mask_bit = if masked { 0x80 } else { 0 };
        match payload.len() {
            n if n < 126 => out.push(mask_bit | n as u8),
            n if n < 65536 => {
                out.push(mask_bit | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(mask_bit | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        if masked {
            out.extend_from_slice(&[0, 0, 0, 0]);
        }
        out.extend_from_slice(payload);
        out
    }

    #[test]
    fn text_opcodes_become_binary_in_any_piece_sizes() {
        let payload_small = b"\xff\xfe not utf-8";
        let payload_mid = vec![0x81u8; 300];
        let payload_big = vec![0x01u8; 70_000];
        let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
        let mut stream = head.to_vec();
        stream.extend(frame(OPCODE_TEXT, true, false, payload_small));
        stream.extend(frame(0x9, true, false, b"ping")); // control frames untouched
        stream.extend(frame(OPCODE_TEXT, false, true, &payload_mid));
        stream.extend(frame(0x0, true, true, b"")); // continuation, empty
        stream.extend(frame(OPCODE_TEXT, true, false, &payload_big));
        let mut expected = head.to_vec();
        expected.extend(frame(OPCODE_BINARY, true, false, payload_small));
        expected.extend(frame(0x9, true, false, b"ping"));
        expected.extend(frame(OPCODE_BINARY, false, true, &payload_mid));
        expected.extend(frame(0x0, true, true, b""));
        expected.extend(frame(OPCODE_BINARY, true, false, &payload_big));
        for piece in [1, 3, 7, 1000, stream.len()] {
            let mut shim = TextAsBinary::new(());
            let mut out = stream.clone();
            for chunk in out.chunks_mut(piece) {
                shim.rewrite(chunk);
            }
            assert_eq!(out, expected, "pieces of {piece}");
        }
    }
}
