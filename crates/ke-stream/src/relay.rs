//! The byte relay both ends need: a session on one side, a byte stream (the runtime's streaming
//! server, a client's upgraded connection) on the other, until either ends.

use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};

use crate::Session;

/// Copies both ways until one side ends; then the session ends (dropped) and the stream's
/// write half is shut down.
pub async fn relay<S>(io: S, mut session: Session)
where
    S: AsyncRead + AsyncWrite,
{
    let (mut from_io, mut to_io) = tokio::io::split(io);
    let sender = session.sender();
    let outgoing = async move {
        let mut buf = vec![0u8; crate::tunnel::CHUNK_BYTES];
        loop {
            match from_io.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if sender.send(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    let incoming = async {
        while let Some(data) = session.recv().await {
            if to_io.write_all(&data).await.is_err() {
                return;
            }
        }
    };
    tokio::select! {
        () = outgoing => {}
        () = incoming => {}
    }
    let _ = to_io.shutdown().await;
}
