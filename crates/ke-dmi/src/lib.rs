//! KubeEdge's Device Management Interface (DMI) v1beta1, shared by edgecore and mappers.
//!
//! * [`v1beta1`]: the messages and both services, generated from `proto/api.proto` — upstream's
//!   field names, numbers and types (golden `dmi.md`), so stock mappers talk to our edgecore
//!   and our mappers to a stock one. edgecore serves `DeviceManagerService`; each mapper serves
//!   `DeviceMapperService` at the address it registers.
//! * [`convert`]: Kubernetes Device/DeviceModel objects to DMI messages, and `configData` maps.
//! * [`socket`]: gRPC over unix sockets, both ends.

pub mod convert;
pub mod socket;

#[allow(clippy::all, clippy::pedantic)]
pub mod v1beta1 {
    tonic::include_proto!("v1beta1");
}
