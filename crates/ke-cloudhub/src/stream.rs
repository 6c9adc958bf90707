use tokio::io::{AsyncRead, AsyncWrite};

/// Any byte stream an edge connection can ride on: TLS over TCP in production, an in-memory
/// pipe in tests. Boxed so sessions, node tasks and the registry share one concrete type.
pub(crate) trait ByteStream: AsyncRead + AsyncWrite + Send + Unpin {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin> ByteStream for T {}

pub(crate) type EdgeStream = Box<dyn ByteStream>;
