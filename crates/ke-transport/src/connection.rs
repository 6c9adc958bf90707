use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use ke_message::Message;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message as Frame};

use crate::TransportError;

/// An upgraded cloud–edge connection carrying [`Message`]s.
pub struct Connection<S> {
    ws: WebSocketStream<S>,
    max_frame_bytes: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Connection<S> {
    pub(crate) fn new(ws: WebSocketStream<S>, max_frame_bytes: usize) -> Connection<S> {
        Connection {
            ws,
            max_frame_bytes,
        }
    }

    /// Splits into independently owned halves so one task can write while another reads.
    pub fn split(self) -> (MessageSender<S>, MessageReceiver<S>) {
        let (sink, stream) = self.ws.split();
        (
            MessageSender { sink },
            MessageReceiver {
                stream,
                max_frame_bytes: self.max_frame_bytes,
            },
        )
    }
}

/// The writing half.
pub struct MessageSender<S> {
    sink: SplitSink<WebSocketStream<S>, Frame>,
}

impl<S: AsyncRead + AsyncWrite + Unpin> MessageSender<S> {
    /// Writes one message as one text frame, exactly as upstream's `WriteJSON` does.
    pub async fn send(&mut self, message: &Message) -> Result<(), TransportError> {
        let frame = String::from_utf8(ke_message::encode_frame(message))
            .expect("serde_json always produces UTF-8");
        self.sink
            .send(Frame::text(frame))
            .await
            .map_err(TransportError::WebSocket)
    }

    /// Closes the connection with a code and a reason the peer can log. Best effort: the peer
    /// may already be gone.
    pub async fn close(&mut self, code: CloseCode, reason: &str) {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = self.sink.send(Frame::Close(Some(frame))).await;
        let _ = self.sink.close().await;
    }
}

/// The reading half.
pub struct MessageReceiver<S> {
    stream: SplitStream<WebSocketStream<S>>,
    max_frame_bytes: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> MessageReceiver<S> {
    /// The next message. `Ok(None)` when the peer closed cleanly or the stream ended.
    ///
    /// Text and binary frames both carry JSON (gorilla's `ReadJSON` reads either); control
    /// frames are handled by tungstenite and skipped here. A frame over the size limit and a
    /// frame that is not a valid message are errors: the caller should close the connection,
    /// since the peer is not speaking the protocol.
    pub async fn recv(&mut self) -> Result<Option<Message>, TransportError> {
        loop {
            let Some(frame) = self.stream.next().await else {
                return Ok(None);
            };
            let payload = match frame {
                Ok(Frame::Text(text)) => text.as_bytes().to_vec(),
                Ok(Frame::Binary(bytes)) => bytes.to_vec(),
                Ok(Frame::Close(_)) => return Ok(None),
                Ok(Frame::Ping(_) | Frame::Pong(_) | Frame::Frame(_)) => continue,
                Err(tungstenite::Error::Capacity(CapacityError::MessageTooLong {
                    size,
                    max_size,
                })) => {
                    return Err(TransportError::FrameTooLarge {
                        size,
                        max: max_size,
                    });
                }
                Err(
                    tungstenite::Error::ConnectionClosed
                    | tungstenite::Error::AlreadyClosed
                    | tungstenite::Error::Protocol(
                        tungstenite::error::ProtocolError::ResetWithoutClosingHandshake,
                    ),
                ) => return Ok(None),
                Err(err) => return Err(TransportError::WebSocket(err)),
            };
            debug_assert!(payload.len() <= self.max_frame_bytes);
            return Ok(Some(ke_message::decode(&payload)?));
        }
    }
}
