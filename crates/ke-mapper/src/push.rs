//! `pushMethod.http`: a value POSTed as JSON to a plain-HTTP endpoint.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::driver::HttpPush;

#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("{0} is not an http:// URL")]
    Url(String),
    #[error("no answer within {0:?}")]
    Timeout(std::time::Duration),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Http(#[from] hyper::Error),
    #[error("{0}")]
    Request(#[from] http::Error),
    #[error("the server answered {0}")]
    Status(http::StatusCode),
}

pub(crate) async fn post(push: &HttpPush, body: Bytes) -> Result<(), PushError> {
    let uri: http::Uri = push
        .url
        .parse()
        .map_err(|_| PushError::Url(push.url.clone()))?;
    let (Some("http"), Some(host)) = (uri.scheme_str(), uri.host()) else {
        return Err(PushError::Url(push.url.clone()));
    };
    let address = format!("{host}:{}", uri.port_u16().unwrap_or(80));
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(&address).await?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(connection);
        let request = http::Request::post(uri.path_and_query().map_or("/", |p| p.as_str()))
            .header(http::header::HOST, &address)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        let response = sender.send_request(request).await?;
        let status = response.status();
        // Read the answer to its end so the server sees a complete exchange.
        let _ = response.into_body().collect().await;
        if status.is_success() {
            Ok(())
        } else {
            Err(PushError::Status(status))
        }
    };
    tokio::time::timeout(push.timeout, exchange)
        .await
        .map_err(|_| PushError::Timeout(push.timeout))?
}
