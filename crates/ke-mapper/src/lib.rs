//! The mapper SDK: everything a KubeEdge mapper does except speaking its protocol.
//!
//! A mapper is a [`Driver`] plus [`run`]: it serves DMI's `DeviceMapperService` on its own unix
//! socket, registers with edgecore (`MapperRegister`, retried until edgecore answers) and gets
//! the devices of its protocol, then runs each device ([`device`]): connect, write desired
//! values, read every property each `collectCycle`, report values to edgecore
//! (`ReportDeviceStatus`, when a value changes or `reportCycle` has passed) and the device's
//! state (`ReportDeviceStates`: `online`, or `offline` while it cannot be reached), and push
//! values to an MQTT broker or an HTTP endpoint when the property asks (`pushMethod.mqtt`,
//! `pushMethod.http`). Devices and models
//! edgecore adds, changes or removes later arrive through the service ([`service`]); a changed
//! device restarts with its new settings, so a new desired value is written at once.

mod device;
pub mod driver;
mod push;
mod service;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use ke_dmi::v1beta1 as pb;
use ke_dmi::v1beta1::device_manager_service_client::DeviceManagerServiceClient;
use tokio_util::sync::CancellationToken;

pub use crate::driver::{
    Connection, DeviceConfig, Driver, DriverError, HttpPush, MqttPush, PropertyConfig,
};

#[derive(Debug, Clone)]
pub struct MapperSettings {
    /// The mapper's name (edgecore keeps one record per name).
    pub name: String,
    pub version: String,
    /// Where this mapper serves `DeviceMapperService`.
    pub socket: PathBuf,
    /// edgecore's DMI socket (`deviceTwin.dmiSockPath`/dmi.sock).
    pub edgecore_socket: PathBuf,
}

/// The devices a mapper runs, and the models they refer to.
pub(crate) struct State {
    driver: Arc<dyn Driver>,
    edgecore: tonic::transport::Channel,
    devices: Mutex<HashMap<String, device::Handle>>,
    models: Mutex<HashMap<String, pb::DeviceModel>>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn key(namespace: &str, name: &str) -> String {
    let namespace = if namespace.is_empty() {
        "default"
    } else {
        namespace
    };
    format!("{namespace}/{name}")
}

impl State {
    fn manager(&self) -> DeviceManagerServiceClient<tonic::transport::Channel> {
        DeviceManagerServiceClient::new(self.edgecore.clone())
    }

    /// Starts `device`, replacing the run of an earlier version of it.
    fn start(self: &Arc<Self>, device: &pb::Device) {
        let config = {
            let models = lock(&self.models);
            device::config(device, &models)
        };
        let key = key(&config.namespace, &config.name);
        let handle = device::start(config, Arc::clone(&self.driver), self.manager());
        if let Some(old) = lock(&self.devices).insert(key, handle) {
            old.stop();
        }
    }

    fn stop(&self, namespace: &str, name: &str) {
        if let Some(old) = lock(&self.devices).remove(&key(namespace, name)) {
            old.stop();
        }
    }
}

/// Runs a mapper for `driver` until `cancel`.
pub async fn run(
    settings: MapperSettings,
    driver: Arc<dyn Driver>,
    cancel: CancellationToken,
) -> anyhow::Result<()> {
    let state = Arc::new(State {
        driver,
        edgecore: ke_dmi::socket::channel(&settings.edgecore_socket),
        devices: Mutex::default(),
        models: Mutex::default(),
    });
    let incoming = ke_dmi::socket::listen(&settings.socket)
        .with_context(|| format!("listen on {}", settings.socket.display()))?;
    let server = tokio::spawn({
        let (state, cancel) = (Arc::clone(&state), cancel.clone());
        async move {
            tonic::transport::Server::builder()
                .add_service(service::server(state))
                .serve_with_incoming_shutdown(incoming, cancel.cancelled_owned())
                .await
        }
    });
    tracing::info!(socket = %settings.socket.display(), protocol = state.driver.protocol(), "mapper serving");
    let registered = cancel
        .run_until_cancelled(register(&settings, &state))
        .await;
    if let Some(response) = registered {
        for model in response.model_list {
            lock(&state.models).insert(key(&model.namespace, &model.name), model);
        }
        tracing::info!(
            devices = response.device_list.len(),
            "registered with edgecore"
        );
        for device in &response.device_list {
            // edgecore may have sent a newer version through the service meanwhile.
            let started = lock(&state.devices).contains_key(&key(&device.namespace, &device.name));
            if !started {
                state.start(device);
            }
        }
    }
    cancel.cancelled().await;
    for (_, device) in lock(&state.devices).drain() {
        device.stop();
    }
    let _ = std::fs::remove_file(&settings.socket);
    server.await?.context("DeviceMapperService")?;
    Ok(())
}

/// `MapperRegister` until edgecore answers (it may start after the mapper).
async fn register(settings: &MapperSettings, state: &State) -> pb::MapperRegisterResponse {
    let mapper = pb::MapperInfo {
        name: settings.name.clone(),
        version: settings.version.clone(),
        api_version: "v1beta1".into(),
        protocol: state.driver.protocol().to_owned(),
        address: settings.socket.to_string_lossy().into_owned().into_bytes(),
        state: "ok".into(),
    };
    let mut wait = Duration::from_millis(200);
    loop {
        let request = pb::MapperRegisterRequest {
            with_data: true,
            mapper: Some(mapper.clone()),
        };
        match state.manager().mapper_register(request).await {
            Ok(response) => return response.into_inner(),
            Err(status) => {
                tracing::warn!(
                    edgecore = %settings.edgecore_socket.display(),
                    code = ?status.code(),
                    message = status.message(),
                    "registering with edgecore failed; retrying"
                );
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(10));
            }
        }
    }
}
