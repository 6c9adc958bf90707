//! Thin CRI v1 client for kubeedge-rs.
//!
//! This crate is only the *transport*: it dials a container runtime's CRI
//! socket (containerd here) over a unix domain socket and hands out the
//! generated gRPC clients for the CRI `RuntimeService` and `ImageService`,
//! plus a few helpers that every caller would otherwise write again (version
//! probe, "is this image present").
//!
//! It deliberately contains no pod lifecycle policy: how sandboxes and
//! containers are created, restarted, garbage-collected or reported back to the
//! cloud belongs to edged, which builds on top of [`CriClient`].
//!
//! The protocol types are re-exported as [`api`] (the `runtime.v1` package of
//! cri-api), so users need no direct dependency on `k8s-cri`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ke_cri::CriError> {
//! let cri = ke_cri::CriClient::connect("unix:///run/containerd/containerd.sock").await?;
//! let v = cri.version().await?;
//! println!("{} {}", v.runtime_name, v.runtime_version);
//! let mut runtime = cri.runtime(); // a cheap clone; calls need `&mut`
//! let pods = runtime.list_pod_sandbox(ke_cri::api::ListPodSandboxRequest::default()).await;
//! # let _ = pods;
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tower::service_fn;

/// CRI v1 protocol types and generated clients (`runtime.v1`).
pub use k8s_cri::v1 as api;

use api::image_service_client::ImageServiceClient;
use api::runtime_service_client::RuntimeServiceClient;

/// Generated `RuntimeService` client bound to a CRI connection.
pub type RuntimeClient = RuntimeServiceClient<Channel>;
/// Generated `ImageService` client bound to a CRI connection.
pub type ImageClient = ImageServiceClient<Channel>;

/// How long [`CriClient::connect`] waits for the socket to accept.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The kubelet raises gRPC's 4 MiB default to 16 MiB because ListContainers /
/// ListImages on a busy node exceed it; we follow suit.
const MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// The CRI API version we speak, sent in `VersionRequest`.
pub const CRI_API_VERSION: &str = "v1";

/// Errors from [`CriClient`]; every variant names the endpoint, because an
/// edge node may talk to more than one runtime and "connection refused" alone
/// does not say which.
#[derive(Debug, thiserror::Error)]
pub enum CriError {
    /// The endpoint string is not `unix:///path` or a bare socket path.
    #[error("invalid CRI endpoint {endpoint:?}: {reason}")]
    InvalidEndpoint {
        /// Endpoint as given by the caller.
        endpoint: String,
        /// Why it was rejected.
        reason: String,
    },
    /// Dialling the socket failed.
    #[error("cannot connect to CRI endpoint {endpoint}: {detail}")]
    Connect {
        /// Endpoint as given by the caller.
        endpoint: String,
        /// The full error chain, flattened so `Display` alone is actionable.
        detail: String,
        /// Underlying transport error.
        #[source]
        source: tonic::transport::Error,
    },
    /// The socket did not accept within the connect timeout.
    #[error("timed out after {timeout:?} connecting to CRI endpoint {endpoint}")]
    ConnectTimeout {
        /// Endpoint as given by the caller.
        endpoint: String,
        /// The timeout that elapsed.
        timeout: Duration,
    },
    /// A CRI call returned a gRPC error status.
    #[error("CRI {call} on {endpoint} failed: {}: {}", status.code(), status.message())]
    Call {
        /// Endpoint as given by the caller.
        endpoint: String,
        /// The RPC name, e.g. `ImageStatus`.
        call: &'static str,
        /// The gRPC status; boxed because `tonic::Status` is large and would
        /// bloat every `Result` in the happy path.
        #[source]
        status: Box<tonic::Status>,
    },
}

impl CriError {
    /// The gRPC status of a failed call, if this is a [`CriError::Call`].
    pub fn status(&self) -> Option<&tonic::Status> {
        match self {
            CriError::Call { status, .. } => Some(status),
            _ => None,
        }
    }
}

/// A connection to one CRI endpoint.
///
/// Cloning is cheap: all clones share one HTTP/2 connection, which tonic
/// re-dials through the same unix socket if the runtime restarts.
#[derive(Clone, Debug)]
pub struct CriClient {
    endpoint: String,
    runtime: RuntimeClient,
    image: ImageClient,
}

impl CriClient {
    /// Connects to `endpoint` (`unix:///path/to/sock` or `/path/to/sock`) with
    /// [`DEFAULT_CONNECT_TIMEOUT`].
    pub async fn connect(endpoint: &str) -> Result<CriClient, CriError> {
        Self::connect_with_timeout(endpoint, DEFAULT_CONNECT_TIMEOUT).await
    }

    /// Like [`CriClient::connect`] with an explicit connect timeout.
    pub async fn connect_with_timeout(
        endpoint: &str,
        timeout: Duration,
    ) -> Result<CriClient, CriError> {
        let path: Arc<Path> = socket_path(endpoint)?.into();
        let connect_err = |source: tonic::transport::Error| CriError::Connect {
            endpoint: endpoint.to_owned(),
            detail: error_chain(&source),
            source,
        };
        // The URI is a placeholder: tonic needs one to build HTTP/2 requests,
        // but the connector below ignores it and always dials the socket.
        let ep = Endpoint::try_from("http://[::]")
            .map_err(connect_err)?
            .connect_timeout(timeout);
        let channel = ep.connect_with_connector(service_fn(move |_: Uri| {
            let path = Arc::clone(&path);
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(&*path).await?)) }
        }));
        // connect_timeout bounds each dial; this also bounds the HTTP/2
        // handshake in case a non-gRPC server holds the socket open.
        let channel = tokio::time::timeout(timeout, channel)
            .await
            .map_err(|_| CriError::ConnectTimeout {
                endpoint: endpoint.to_owned(),
                timeout,
            })?
            .map_err(connect_err)?;
        Ok(CriClient {
            endpoint: endpoint.to_owned(),
            runtime: RuntimeServiceClient::new(channel.clone())
                .max_decoding_message_size(MAX_MESSAGE_SIZE),
            image: ImageServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_SIZE),
        })
    }

    /// The endpoint this client was connected with, as given.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// A `RuntimeService` client (cheap clone sharing the connection).
    pub fn runtime(&self) -> RuntimeClient {
        self.runtime.clone()
    }

    /// An `ImageService` client (cheap clone sharing the connection).
    pub fn image(&self) -> ImageClient {
        self.image.clone()
    }

    /// Wraps a gRPC status from call `call` into a [`CriError`] naming this
    /// endpoint; for callers using [`CriClient::runtime`] / [`CriClient::image`]
    /// directly.
    pub fn call_error(&self, call: &'static str, status: tonic::Status) -> CriError {
        CriError::Call {
            endpoint: self.endpoint.clone(),
            call,
            status: Box::new(status),
        }
    }

    /// CRI `Version`: runtime name/version and the CRI API version it speaks.
    pub async fn version(&self) -> Result<api::VersionResponse, CriError> {
        self.runtime()
            .version(api::VersionRequest {
                version: CRI_API_VERSION.to_owned(),
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| self.call_error("Version", s))
    }

    /// CRI `ImageStatus` for `image`; `None` if the runtime does not have it.
    pub async fn image_status(&self, image: &str) -> Result<Option<api::Image>, CriError> {
        self.image()
            .image_status(api::ImageStatusRequest {
                image: Some(image_spec(image)),
                verbose: false,
            })
            .await
            .map(|r| r.into_inner().image)
            .map_err(|s| self.call_error("ImageStatus", s))
    }

    /// Whether `image` is present in the runtime's image store. Edge nodes
    /// often cannot reach a registry, so callers check this before pulling.
    pub async fn image_present(&self, image: &str) -> Result<bool, CriError> {
        Ok(self.image_status(image).await?.is_some())
    }
}

/// An [`api::ImageSpec`] naming `image` with everything else defaulted.
pub fn image_spec(image: &str) -> api::ImageSpec {
    api::ImageSpec {
        image: image.to_owned(),
        ..Default::default()
    }
}

/// Maps a CRI endpoint string to the socket path to dial.
fn socket_path(endpoint: &str) -> Result<PathBuf, CriError> {
    let invalid = |reason: &str| CriError::InvalidEndpoint {
        endpoint: endpoint.to_owned(),
        reason: reason.to_owned(),
    };
    let path = match endpoint.split_once("://") {
        Some(("unix", path)) => path,
        Some((scheme, _)) => {
            return Err(invalid(&format!(
                "unsupported scheme {scheme:?}; only unix:// sockets are supported"
            )));
        }
        None => endpoint,
    };
    if path.is_empty() {
        return Err(invalid("empty socket path"));
    }
    Ok(PathBuf::from(path))
}

fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        out.push_str(": ");
        out.push_str(&e.to_string());
        cur = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_forms() {
        assert_eq!(
            socket_path("unix:///run/containerd/containerd.sock").unwrap(),
            PathBuf::from("/run/containerd/containerd.sock")
        );
        assert_eq!(
            socket_path("/tmp/x.sock").unwrap(),
            PathBuf::from("/tmp/x.sock")
        );
        assert_eq!(
            socket_path("rel/x.sock").unwrap(),
            PathBuf::from("rel/x.sock")
        );
        for bad in ["tcp://127.0.0.1:1234", "unix://", ""] {
            let err = socket_path(bad).unwrap_err();
            assert!(
                matches!(err, CriError::InvalidEndpoint { ref endpoint, .. } if endpoint == bad),
                "{bad}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn connect_error_names_endpoint() {
        let dir = tempfile::tempdir().unwrap();
        let endpoint = format!("unix://{}/missing.sock", dir.path().display());
        let err = CriClient::connect_with_timeout(&endpoint, Duration::from_secs(2))
            .await
            .unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&endpoint), "{msg}");
        assert!(
            matches!(err, CriError::Connect { .. }),
            "expected Connect error, got {err:?}"
        );
    }
}
