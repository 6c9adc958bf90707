//! The mapper's `DeviceMapperService`: edgecore adds, changes and removes devices and models.

use std::sync::Arc;

use ke_dmi::v1beta1 as pb;
use ke_dmi::v1beta1::device_mapper_service_server::{
    DeviceMapperService, DeviceMapperServiceServer,
};
use tonic::{Request, Response, Status};

use crate::{State, key, lock};

pub(crate) fn server(state: Arc<State>) -> DeviceMapperServiceServer<Service> {
    DeviceMapperServiceServer::new(Service { state })
}

pub(crate) struct Service {
    state: Arc<State>,
}

fn device_of(device: Option<pb::Device>) -> Result<pb::Device, Status> {
    device
        .filter(|d| !d.name.is_empty())
        .ok_or_else(|| Status::invalid_argument("the request carries no named device"))
}

fn model_of(model: Option<pb::DeviceModel>) -> Result<pb::DeviceModel, Status> {
    model
        .filter(|m| !m.name.is_empty())
        .ok_or_else(|| Status::invalid_argument("the request carries no named model"))
}

#[tonic::async_trait]
impl DeviceMapperService for Service {
    async fn register_device(
        &self,
        request: Request<pb::RegisterDeviceRequest>,
    ) -> Result<Response<pb::RegisterDeviceResponse>, Status> {
        let device = device_of(request.into_inner().device)?;
        self.state.start(&device);
        Ok(Response::new(pb::RegisterDeviceResponse {
            device_name: device.name,
            device_namespace: device.namespace,
        }))
    }

    async fn remove_device(
        &self,
        request: Request<pb::RemoveDeviceRequest>,
    ) -> Result<Response<pb::RemoveDeviceResponse>, Status> {
        let request = request.into_inner();
        self.state
            .stop(&request.device_namespace, &request.device_name);
        Ok(Response::new(pb::RemoveDeviceResponse {}))
    }

    async fn update_device(
        &self,
        request: Request<pb::UpdateDeviceRequest>,
    ) -> Result<Response<pb::UpdateDeviceResponse>, Status> {
        let device = device_of(request.into_inner().device)?;
        self.state.start(&device);
        Ok(Response::new(pb::UpdateDeviceResponse {}))
    }

    async fn create_device_model(
        &self,
        request: Request<pb::CreateDeviceModelRequest>,
    ) -> Result<Response<pb::CreateDeviceModelResponse>, Status> {
        let model = model_of(request.into_inner().model)?;
        let response = pb::CreateDeviceModelResponse {
            device_model_name: model.name.clone(),
            device_model_namespace: model.namespace.clone(),
        };
        lock(&self.state.models).insert(key(&model.namespace, &model.name), model);
        Ok(Response::new(response))
    }

    async fn remove_device_model(
        &self,
        request: Request<pb::RemoveDeviceModelRequest>,
    ) -> Result<Response<pb::RemoveDeviceModelResponse>, Status> {
        let request = request.into_inner();
        lock(&self.state.models).remove(&key(&request.model_namespace, &request.model_name));
        Ok(Response::new(pb::RemoveDeviceModelResponse {}))
    }

    async fn update_device_model(
        &self,
        request: Request<pb::UpdateDeviceModelRequest>,
    ) -> Result<Response<pb::UpdateDeviceModelResponse>, Status> {
        let model = model_of(request.into_inner().model)?;
        lock(&self.state.models).insert(key(&model.namespace, &model.name), model);
        Ok(Response::new(pb::UpdateDeviceModelResponse {}))
    }

    async fn get_device(
        &self,
        request: Request<pb::GetDeviceRequest>,
    ) -> Result<Response<pb::GetDeviceResponse>, Status> {
        let request = request.into_inner();
        let devices = lock(&self.state.devices);
        let handle = devices
            .get(&key(&request.device_namespace, &request.device_name))
            .ok_or_else(|| {
                Status::not_found(format!(
                    "device {}/{} is not run by this mapper",
                    request.device_namespace, request.device_name
                ))
            })?;
        let values = lock(&handle.values);
        let twins = handle
            .config
            .properties
            .iter()
            .map(|p| pb::Twin {
                property_name: p.name.clone(),
                observed_desired: p.desired.as_ref().map(|d| pb::TwinProperty {
                    value: d.clone(),
                    metadata: Default::default(),
                }),
                reported: values.get(&p.name).map(|v| pb::TwinProperty {
                    value: v.clone(),
                    metadata: Default::default(),
                }),
            })
            .collect();
        Ok(Response::new(pb::GetDeviceResponse {
            device: Some(pb::Device {
                name: handle.config.name.clone(),
                namespace: handle.config.namespace.clone(),
                spec: None,
                status: Some(pb::DeviceStatus {
                    twins,
                    report_to_cloud: true,
                    report_cycle: 0,
                }),
            }),
        }))
    }
}
