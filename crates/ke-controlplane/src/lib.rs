//! The embedded control plane: the API server on SQLite, and the scheduler and controllers as
//! clients of it — in-process, through the API server's router, so they pay neither TCP nor
//! TLS and see exactly what an external client would.

use ke_apiserver::ApiServer;
use ke_apiserver::storage::Storage;
use ke_controllers::{ControlLoops, Settings};

/// A `kube::Client` that calls `server` in-process.
pub fn in_process_client<S: Storage>(server: &ApiServer<S>) -> kube::Client {
    kube::Client::new(server.router(), "default")
}

/// Starts the scheduler and the controllers against `server`.
pub fn start_controllers<S: Storage>(server: &ApiServer<S>, settings: Settings) -> ControlLoops {
    ControlLoops::spawn(in_process_client(server), settings)
}
