//! Reaching the kinds behind wire tokens ([`ke_message::kinds::Kind`]) through kube-rs.

use ke_message::kinds::Kind;
use kube::Client;
use kube::api::{Api, ApiResource, DynamicObject};

pub(crate) trait KindApi {
    /// The API for objects of this kind in `namespace` (ignored for cluster-scoped kinds).
    fn api(&self, client: &Client, namespace: Option<&str>) -> Api<DynamicObject>;
}

impl KindApi for Kind {
    fn api(&self, client: &Client, namespace: Option<&str>) -> Api<DynamicObject> {
        let resource = ApiResource {
            group: self.group.to_owned(),
            version: self.version.to_owned(),
            api_version: self.api_version(),
            kind: self.kind.to_owned(),
            plural: self.plural.to_owned(),
        };
        match namespace {
            Some(ns) if self.namespaced => Api::namespaced_with(client.clone(), ns, &resource),
            _ => Api::all_with(client.clone(), &resource),
        }
    }
}
