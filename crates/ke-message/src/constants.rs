//! Names that cloud and edge peers agree on, exactly as upstream KubeEdge spells them.
//!
//! They stay strings rather than enums because the wire carries open sets: servicebus uses HTTP
//! methods as operations, the router uses rule names as resources, and a newer peer may send
//! values an older one has never seen and must pass through unchanged.

/// Content of a successful acknowledgement.
pub const MESSAGE_SUCCESSFUL_CONTENT: &str = "OK";

/// Literal namespace token used in resource strings for cluster-scoped objects.
pub const NULL_NAMESPACE: &str = "null";

/// `route.operation` values.
pub mod operation {
    pub const INSERT: &str = "insert";
    pub const DELETE: &str = "delete";
    pub const QUERY: &str = "query";
    pub const UPDATE: &str = "update";
    pub const PATCH: &str = "patch";
    pub const UPLOAD: &str = "upload";
    pub const RESPONSE: &str = "response";
    pub const ERROR: &str = "error";
    pub const UNHOLD_UPGRADE: &str = "unhold-upgrade";
    pub const KEEPALIVE: &str = "keepalive";
    pub const CONNECT: &str = "connect";
    pub const CONNECTED: &str = "connected";
    pub const DISCONNECTED: &str = "disconnected";
    pub const SUBSCRIBE: &str = "subscribe";
    pub const UNSUBSCRIBE: &str = "unsubscribe";
    pub const MESSAGE: &str = "message";
    pub const PUBLISH: &str = "publish";
    pub const START: &str = "start";
    pub const STOP: &str = "stop";
    pub const GET: &str = "get";
    pub const GET_RESULT: &str = "get_result";
    pub const LIST: &str = "list";
    pub const DETAIL: &str = "detail";
    pub const DELTA: &str = "delta";
    pub const DOCUMENT: &str = "document";
    pub const UPDATED: &str = "updated";
    pub const DELETED: &str = "deleted";
    /// Control operations a WebSocket server answers with `"ack"` instead of routing.
    pub const CONFIG: &str = "config";
    pub const PING: &str = "ping";
    pub const PONG: &str = "pong";
    pub const CREATE_VOLUME: &str = "createvolume";
    pub const DELETE_VOLUME: &str = "deletevolume";
    pub const CONTROLLER_PUBLISH_VOLUME: &str = "controllerpublishvolume";
    pub const CONTROLLER_UNPUBLISH_VOLUME: &str = "controllerunpublishvolume";
    pub const APPLICATION_RESPONSE: &str = "applicationResponse";
}

/// Resource types: the `<type>` token of `<ns>/<type>/<name>`.
pub mod resource_type {
    pub const POD: &str = "pod";
    pub const EVENT: &str = "event";
    pub const CONFIGMAP: &str = "configmap";
    pub const SERVICE_ACCOUNT_TOKEN: &str = "serviceaccounttoken";
    pub const SECRET: &str = "secret";
    pub const NODE: &str = "node";
    pub const POD_LIST: &str = "podlist";
    pub const POD_STATUS: &str = "podstatus";
    pub const POD_PATCH: &str = "podpatch";
    pub const NODE_STATUS: &str = "nodestatus";
    pub const NODE_PATCH: &str = "nodepatch";
    pub const RULE: &str = "rule";
    pub const RULE_ENDPOINT: &str = "ruleendpoint";
    pub const RULE_STATUS: &str = "rulestatus";
    pub const LEASE: &str = "lease";
    pub const SERVICE_ACCOUNT_ACCESS: &str = "serviceaccountaccess";
    pub const CERTIFICATE_SIGNING_REQUEST: &str = "certificatesigningrequest";
    pub const KUBE_CA_CERT: &str = "k8s/ca.crt";
    pub const SERVICE: &str = "service";
    pub const ENDPOINTS: &str = "endpoints";
    pub const PERSISTENT_VOLUME: &str = "persistentvolume";
    pub const PERSISTENT_VOLUME_CLAIM: &str = "persistentvolumeclaim";
    pub const VOLUME_ATTACHMENT: &str = "volumeattachment";
    pub const VOLUME: &str = "volume";
    pub const MEMBERSHIP: &str = "membership";
    pub const TWIN: &str = "twin";
    pub const AUTH_INFO: &str = "auth_info";
    pub const DEVICE: &str = "device";
    pub const DEVICE_MODEL: &str = "devicemodel";
    pub const DEVICE_MAPPER: &str = "devicemapper";
    pub const NODE_CONNECTION: &str = "node/connection";
}

/// `route.group` values. Receivers dispatch on these; they are not bus addresses.
pub mod group {
    pub const RESOURCE: &str = "resource";
    pub const FUNC: &str = "func";
    pub const USER: &str = "user";
    pub const TWIN: &str = "twin";
    pub const META: &str = "meta";
    pub const HUB: &str = "hub";
    pub const BUS: &str = "bus";
    pub const EDGED: &str = "edged";
    pub const TASK_MANAGER: &str = "taskmanager";
    pub const DYNAMIC_CONTROLLER: &str = "dynamiccontroller";
}

/// Module names that appear as `route.source` on the wire.
pub mod source {
    pub const EDGE_CONTROLLER: &str = "edgecontroller";
    pub const DEVICE_CONTROLLER: &str = "devicecontroller";
    pub const CLOUD_HUB: &str = "cloudhub";
    pub const SYNC_CONTROLLER: &str = "synccontroller";
    /// EdgeHub keeps the module name `websocket` even when it speaks QUIC.
    pub const EDGE_HUB: &str = "websocket";
    pub const EDGED: &str = "edged";
    pub const META_MANAGER: &str = "metamanager";
    pub const TWIN: &str = "twin";
    pub const EVENT_BUS: &str = "eventbus";
    pub const SERVICE_BUS: &str = "servicebus";
    pub const ROUTER_EVENT_BUS: &str = "router_eventbus";
    pub const ROUTER_SERVICE_BUS: &str = "router_servicebus";
    pub const META_SERVER: &str = "metaserver";
    pub const TASK_MANAGER: &str = "taskmanager";
    pub const EDGE_MANAGER: &str = "edgemgr";
}

/// Content strings with a protocol meaning.
pub mod content {
    /// Content of the edge's keepalive message.
    pub const KEEPALIVE_PING: &str = "ping";
    pub const CLOUD_CONNECTED: &str = "cloud_connected";
    pub const CLOUD_DISCONNECTED: &str = "cloud_disconnected";
}
