//! Resource strings: parsed once at the boundary into types, built back with `Display`.
//!
//! Two shapes carry Kubernetes objects:
//!
//! * the wire form `<namespace>/<type>[/<name>]`, e.g. `default/pod/web` or `null/node/edge-1`
//!   (the literal namespace `null` marks cluster-scoped objects) — see [`WireResource`];
//! * the cloud-internal form `node/<node-id>/<namespace>/<type>[/<name>]`, which cloudcore's
//!   controllers use to address a node; cloudhub strips the `node/<id>/` prefix before sending and
//!   adds it back on receipt — see [`NodeResource`], [`trim_node_prefix`], [`node_id_of`].
//!
//! Other resources (`membership/detail`, `device/<ns>/<name>/twin/edge_updated`, rule names,
//! servicebus `port:path`) are free-form and stay plain strings — except an MQTT topic carried
//! from eventbus to devicetwin, which is base64url-encoded because it contains slashes
//! ([`mqtt_topic_resource`], [`topic_of_resource`]).

use std::fmt;
use std::str::FromStr;

use crate::constants::NULL_NAMESPACE;

const NODE_TOKEN: &str = "node";

/// A resource string that does not have the expected shape.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid resource {resource:?}: {reason}")]
pub struct ResourceError {
    pub resource: String,
    pub reason: &'static str,
}

impl ResourceError {
    fn new(resource: &str, reason: &'static str) -> ResourceError {
        ResourceError {
            resource: resource.to_owned(),
            reason,
        }
    }
}

/// `<namespace>/<type>[/<name>]`: how a Kubernetes object is named on the cloud–edge link.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct WireResource {
    /// `None` for cluster-scoped objects, written as the literal `null`.
    pub namespace: Option<String>,
    pub resource_type: String,
    /// `None` when the resource names a whole type, e.g. a list query `default/pod`.
    pub name: Option<String>,
}

impl WireResource {
    pub fn new(namespace: Option<&str>, resource_type: &str, name: Option<&str>) -> WireResource {
        WireResource {
            namespace: namespace.map(str::to_owned),
            resource_type: resource_type.to_owned(),
            name: name.map(str::to_owned),
        }
    }

    /// Parses `<ns>/<type>` or `<ns>/<type>/<name>`; every token must be non-empty.
    pub fn parse(resource: &str) -> Result<WireResource, ResourceError> {
        let mut tokens = resource.split('/');
        let (Some(namespace), Some(resource_type)) = (tokens.next(), tokens.next()) else {
            return Err(ResourceError::new(
                resource,
                "expected <namespace>/<type>[/<name>]",
            ));
        };
        let name = tokens.next();
        if tokens.next().is_some() {
            return Err(ResourceError::new(
                resource,
                "more than three tokens in <namespace>/<type>/<name>",
            ));
        }
        if namespace.is_empty() || resource_type.is_empty() || name == Some("") {
            return Err(ResourceError::new(resource, "empty token"));
        }
        Ok(WireResource {
            namespace: (namespace != NULL_NAMESPACE).then(|| namespace.to_owned()),
            resource_type: resource_type.to_owned(),
            name: name.map(str::to_owned),
        })
    }

    /// The cloud-internal form addressed to `node_id`.
    pub fn for_node(&self, node_id: &str) -> NodeResource {
        NodeResource {
            node_id: node_id.to_owned(),
            resource: self.clone(),
        }
    }
}

impl fmt::Display for WireResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let namespace = self.namespace.as_deref().unwrap_or(NULL_NAMESPACE);
        write!(f, "{namespace}/{}", self.resource_type)?;
        if let Some(name) = &self.name {
            write!(f, "/{name}")?;
        }
        Ok(())
    }
}

impl FromStr for WireResource {
    type Err = ResourceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        WireResource::parse(s)
    }
}

/// `node/<node-id>/<namespace>/<type>[/<name>]`: a wire resource addressed to one edge node,
/// as cloudcore's controllers build it (upstream's `BuildResource`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NodeResource {
    pub node_id: String,
    pub resource: WireResource,
}

impl NodeResource {
    pub fn parse(resource: &str) -> Result<NodeResource, ResourceError> {
        let (node_id, rest) = split_node_prefix(resource)
            .ok_or_else(|| ResourceError::new(resource, "expected node/<node-id>/..."))?;
        let wire = WireResource::parse(rest).map_err(|e| ResourceError::new(resource, e.reason))?;
        Ok(wire.for_node(node_id))
    }
}

impl fmt::Display for NodeResource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{NODE_TOKEN}/{}/{}", self.node_id, self.resource)
    }
}

impl FromStr for NodeResource {
    type Err = ResourceError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeResource::parse(s)
    }
}

/// The resource eventbus gives a device or node MQTT topic on its way to devicetwin: Go's
/// `base64.URLEncoding` (URL alphabet, padded).
pub fn mqtt_topic_resource(topic: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE.encode(topic)
}

/// The MQTT topic back from such a resource.
pub fn topic_of_resource(resource: &str) -> Option<String> {
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::URL_SAFE
        .decode(resource)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// Splits `node/<id>/<rest>` into `(id, rest)`. `rest` may be any shape, e.g. `membership`.
pub fn split_node_prefix(resource: &str) -> Option<(&str, &str)> {
    let rest = resource.strip_prefix(NODE_TOKEN)?.strip_prefix('/')?;
    let (node_id, rest) = rest.split_once('/')?;
    (!node_id.is_empty() && !rest.is_empty()).then_some((node_id, rest))
}

/// What cloudhub does before writing a message to the edge: drop the `node/<id>/` prefix, leaving
/// other resources unchanged.
pub fn trim_node_prefix(resource: &str) -> &str {
    split_node_prefix(resource).map_or(resource, |(_, rest)| rest)
}

/// What cloudhub does on receipt from an edge: address the wire resource to the sending node.
pub fn add_node_prefix(node_id: &str, resource: &str) -> String {
    format!("{NODE_TOKEN}/{node_id}/{resource}")
}

/// The node a resource refers to: the token after the first `node` token that is followed by a
/// non-empty token, as upstream's dispatcher finds it. Works on both `node/<id>/...` and on
/// wire forms like `null/node/<id>`.
pub fn node_id_of(resource: &str) -> Option<&str> {
    let mut tokens = resource.split('/').peekable();
    while let Some(token) = tokens.next() {
        if token == NODE_TOKEN
            && let Some(next) = tokens.peek().filter(|t| !t.is_empty())
        {
            return Some(next);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_namespaced_and_cluster_scoped_wire_resources() {
        let pod = WireResource::parse("default/pod/web").unwrap();
        assert_eq!(pod, WireResource::new(Some("default"), "pod", Some("web")));
        assert_eq!(pod.to_string(), "default/pod/web");

        let node = WireResource::parse("null/node/edge-1").unwrap();
        assert_eq!(node.namespace, None);
        assert_eq!(node.to_string(), "null/node/edge-1");

        let list = WireResource::parse("default/pod").unwrap();
        assert_eq!(list.name, None);
        assert_eq!(list.to_string(), "default/pod");
    }

    #[test]
    fn rejects_malformed_wire_resources_with_a_reason() {
        for bad in [
            "",
            "pod",
            "/pod/web",
            "default//web",
            "default/pod/",
            "a/b/c/d",
        ] {
            let err = WireResource::parse(bad).unwrap_err();
            assert_eq!(err.resource, bad);
            assert!(err.to_string().starts_with("invalid resource"), "{err}");
        }
    }

    #[test]
    fn node_resources_round_trip_through_the_wire_form() {
        let cloud = "node/edge-1/default/configmap/cm";
        let parsed: NodeResource = cloud.parse().unwrap();
        assert_eq!(parsed.node_id, "edge-1");
        assert_eq!(parsed.resource.to_string(), "default/configmap/cm");
        assert_eq!(parsed.to_string(), cloud);

        let wire = trim_node_prefix(cloud);
        assert_eq!(wire, "default/configmap/cm");
        assert_eq!(add_node_prefix("edge-1", wire), cloud);

        let built = WireResource::new(None, "nodepatch", Some("edge-1")).for_node("edge-1");
        assert_eq!(built.to_string(), "node/edge-1/null/nodepatch/edge-1");
    }

    #[test]
    fn trim_leaves_non_node_resources_alone() {
        assert_eq!(trim_node_prefix("node/edge-1/membership"), "membership");
        assert_eq!(trim_node_prefix("default/pod/web"), "default/pod/web");
        assert_eq!(trim_node_prefix("node/edge-1"), "node/edge-1");
        assert_eq!(trim_node_prefix("nodes/x/y"), "nodes/x/y");
        assert_eq!(trim_node_prefix("node//x"), "node//x");
        assert!(NodeResource::parse("node/edge-1/membership").is_err());
    }

    #[test]
    fn finds_the_node_id_like_the_upstream_dispatcher() {
        assert_eq!(node_id_of("node/edge-1/default/pod/web"), Some("edge-1"));
        assert_eq!(node_id_of("null/node/edge-2"), Some("edge-2"));
        assert_eq!(node_id_of("node//x/node/edge-3"), Some("edge-3"));
        assert_eq!(node_id_of("default/pod/web"), None);
        assert_eq!(node_id_of("node"), None);
        assert_eq!(node_id_of("membership/detail"), None);
    }
}
