//! Serving the router: HTTP/1.1 over mutual TLS (the normal mode), or plain HTTP for tests that
//! ask for it explicitly.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// A client that has not finished the TLS handshake by then is dropped, so half-open
/// connections cannot pile up.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts connections until `shutdown` resolves; each connection is served on its own task.
/// Client certificates must chain to the CA; clients without one get 401 on every request.
pub async fn serve_tls(
    listener: TcpListener,
    tls: rustls::ServerConfig,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            _ = &mut shutdown => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!("accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "tls handshake refused: {e}");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "tls handshake timed out");
                    return;
                }
            };
            // Verified at the handshake when presented; without one, every request is answered
            // 401 as kube-apiserver does with anonymous auth off, which tells the user more than
            // a handshake failure would.
            let authenticated = stream
                .get_ref()
                .1
                .peer_certificates()
                .is_some_and(|c| !c.is_empty());
            let router = if authenticated {
                router
            } else {
                Router::new().fallback(unauthorized)
            };
            let service = TowerToHyperService::new(router);
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                // pods/exec, attach and portforward take the connection over.
                .with_upgrades()
                .await
            {
                tracing::debug!(%peer, "connection: {e}");
            }
        });
    }
}

async fn unauthorized() -> axum::response::Response {
    use axum::response::IntoResponse as _;
    crate::ApiError::new(401, "Unauthorized", "Unauthorized").into_response()
}

/// Plain HTTP, only for tests and only when asked for (`--insecure-http`): no authentication.
pub async fn serve_plain(
    listener: TcpListener,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
}
