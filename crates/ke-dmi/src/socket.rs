//! gRPC over unix sockets: where edgecore's socket is, dialing one, listening on one.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::{Channel, Endpoint, Uri};

/// edgecore's socket for `deviceTwin.dmiSockPath`: a path ending in `.sock` is taken as its
/// directory (upstream's rule), and the socket is `dmi.sock` in that directory.
pub fn edgecore_socket(dmi_sock_path: &str) -> PathBuf {
    let path = Path::new(
        dmi_sock_path
            .strip_prefix("unix://")
            .unwrap_or(dmi_sock_path),
    );
    let dir = if path.extension().is_some_and(|e| e == "sock") {
        path.parent().unwrap_or(Path::new("/"))
    } else {
        path
    };
    dir.join("dmi.sock")
}

/// A socket address as mappers register it (`/path` or `unix:///path`).
pub fn socket_path(address: &str) -> PathBuf {
    PathBuf::from(address.strip_prefix("unix://").unwrap_or(address))
}

/// A channel to the gRPC server on `path`, dialed on first use and again after failures.
pub fn channel(path: &Path) -> Channel {
    let path = path.to_owned();
    // The URI is required by tonic but unused: every connection goes to `path`.
    Endpoint::from_static("http://dmi.local")
        .connect_timeout(std::time::Duration::from_secs(5))
        .timeout(std::time::Duration::from_secs(10))
        .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?)) }
        }))
}

/// Listens on `path`, replacing a stale socket file left by an earlier run.
pub fn listen(path: &Path) -> std::io::Result<UnixListenerStream> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => return Err(err),
    }
    Ok(UnixListenerStream::new(UnixListener::bind(path)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edgecores_socket_follows_upstreams_rule() {
        assert_eq!(
            edgecore_socket("/etc/kubeedge/"),
            Path::new("/etc/kubeedge/dmi.sock")
        );
        assert_eq!(
            edgecore_socket("/etc/kubeedge/dmi.sock"),
            Path::new("/etc/kubeedge/dmi.sock")
        );
        assert_eq!(
            edgecore_socket("unix:///run/ke"),
            Path::new("/run/ke/dmi.sock")
        );
        assert_eq!(
            socket_path("unix:///etc/kubeedge/modbus.sock"),
            Path::new("/etc/kubeedge/modbus.sock")
        );
    }
}
