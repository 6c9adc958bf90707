//! ConfigMaps and Secrets a pod refers to, read through metamanager: from the cloud when it is
//! reachable, from the node's store when it is not — so env and volumes work offline.

use crate::METAMANAGER;
use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use ke_bus::Bus;
use ke_message::Message;
use ke_message::constants::{group, operation, resource_type, source};
use serde_json::Value;

/// Longer than metamanager's own wait for the cloud, so its local fallback always answers.
const QUERY_TIMEOUT: Duration = Duration::from_secs(70);

/// The data of an object by key; `None` when it does not exist.
type Data = Option<BTreeMap<String, Vec<u8>>>;

/// The objects of one namespace, each fetched at most once per [`Objects`].
pub(crate) struct Objects<'a> {
    bus: &'a Bus,
    namespace: &'a str,
    cache: BTreeMap<(&'static str, String), Data>,
}

impl<'a> Objects<'a> {
    pub fn new(bus: &'a Bus, namespace: &'a str) -> Objects<'a> {
        Objects {
            bus,
            namespace,
            cache: BTreeMap::new(),
        }
    }

    pub fn namespace(&self) -> &str {
        self.namespace
    }

    /// A ConfigMap's `data` and `binaryData`, or a Secret's decoded `data`; `Ok(None)` if it
    /// does not exist, `Err` if neither the cloud nor the node's store could say.
    pub async fn data(
        &mut self,
        kind: &'static str,
        name: &str,
    ) -> Result<Option<&BTreeMap<String, Vec<u8>>>, String> {
        let key = (kind, name.to_owned());
        if !self.cache.contains_key(&key) {
            let data = self.fetch(kind, name).await?;
            self.cache.insert(key.clone(), data);
        }
        Ok(self.cache.get(&key).and_then(Option::as_ref))
    }

    async fn fetch(&self, kind: &str, name: &str) -> Result<Data, String> {
        let resource = format!("{}/{kind}/{name}", self.namespace);
        let query =
            Message::new().with_route(source::EDGED, group::META, &resource, operation::QUERY);
        let reply = self
            .bus
            .send_sync(METAMANAGER, query, QUERY_TIMEOUT)
            .await
            .map_err(|e| format!("{resource}: {e}"))?;
        // The cloud answers with the object or a Status; the local store with a list of
        // stored values.
        let content = &reply.content;
        let object: Value = match content {
            Value::Array(values) => match values.first() {
                None => return Ok(None),
                Some(value) => value
                    .as_str()
                    .and_then(|v| serde_json::from_str(v).ok())
                    .ok_or_else(|| format!("{resource}: unreadable stored object"))?,
            },
            object if object["metadata"].is_object() => object.clone(),
            status if status["ErrStatus"]["reason"] == "NotFound" => return Ok(None),
            other => return Err(format!("{resource}: {other}")),
        };
        Ok(Some(decode(&object, kind == resource_type::SECRET)))
    }
}

fn decode(object: &Value, secret: bool) -> BTreeMap<String, Vec<u8>> {
    let base64 = |text: &str| base64::engine::general_purpose::STANDARD.decode(text).ok();
    let mut data = BTreeMap::new();
    for (key, value) in object["data"].as_object().into_iter().flatten() {
        let Some(text) = value.as_str() else { continue };
        let bytes = if secret {
            base64(text)
        } else {
            Some(text.as_bytes().to_vec())
        };
        if let Some(bytes) = bytes {
            data.insert(key.clone(), bytes);
        }
    }
    for (key, value) in object["binaryData"].as_object().into_iter().flatten() {
        if let Some(bytes) = value.as_str().and_then(base64) {
            data.insert(key.clone(), bytes);
        }
    }
    data
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn secrets_are_decoded_and_configmaps_keep_text_and_binary_data() {
        let secret = decode(&json!({"data": {"token": "czNjcmV0"}}), true);
        assert_eq!(secret["token"], b"s3cret");
        let configmap = decode(
            &json!({"data": {"mode": "fast"}, "binaryData": {"blob": "AAE="}}),
            false,
        );
        assert_eq!(configmap["mode"], b"fast");
        assert_eq!(configmap["blob"], [0u8, 1]);
    }
}
