//! The server state and the single dispatching handler: every path is parsed by
//! [`crate::request`] rather than by a router table, because Kubernetes paths are ambiguous to a
//! pattern router (`/api/v1/namespaces/<ns>/status` vs `/api/v1/namespaces/<ns>/<resource>`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde_json::json;

use crate::openapi::Documents;
use crate::pods::{self, PodStreams, STREAM_SUBRESOURCES};
use crate::registry::{Catalog, Registry};
use crate::request::{self, Route};
use crate::status::ApiError;
use crate::storage::{Storage, StorageError};
use crate::{crd, handlers};
use crate::{discovery, json_response};

/// Namespaces that exist from the start, as in every Kubernetes cluster.
pub const INITIAL_NAMESPACES: &[&str] =
    &["default", "kube-system", "kube-public", "kube-node-lease"];

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Larger request bodies are refused with 413 (etcd's default request limit is 1.5 MiB of
    /// value; kube-apiserver allows 3 MiB bodies).
    pub max_body_bytes: usize,
    /// How often a watch with `allowWatchBookmarks` gets a BOOKMARK.
    pub bookmark_interval: Duration,
    /// Upper bound (and default) of a watch's lifetime, like `--min-request-timeout` (1800 s).
    pub max_watch_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 3 * 1024 * 1024,
            bookmark_interval: Duration::from_secs(60),
            max_watch_timeout: Duration::from_secs(1800),
        }
    }
}

/// OpenAPI documents and the catalog they describe.
type OpenApiCache = (Arc<Catalog>, Arc<Documents>);

/// The API server over one storage backend; cheap to clone.
#[derive(Clone)]
pub struct ApiServer<S> {
    pub(crate) storage: S,
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) registry: Arc<Registry>,
    pub(crate) pod_streams: Option<Arc<dyn PodStreams>>,
    /// The OpenAPI documents of the catalog they were built from (rebuilt when CRDs change).
    openapi: Arc<Mutex<Option<OpenApiCache>>>,
    /// Serializes Service creates (see [`crate::services`]).
    pub(crate) service_allocation: Arc<tokio::sync::Mutex<()>>,
}

impl<S: Storage> ApiServer<S> {
    /// Wraps `storage`: serves the CRDs stored there and creates the initial namespaces if they
    /// are missing.
    pub async fn new(storage: S, config: ServerConfig) -> Result<Self, StorageError> {
        let server = Self {
            storage,
            config: Arc::new(config),
            registry: Arc::new(Registry::default()),
            pod_streams: None,
            openapi: Arc::default(),
            service_allocation: Arc::default(),
        };
        server
            .reload_custom_resources()
            .await
            .map_err(|e| StorageError::Backend(e.message))?;
        let ns = server.catalog().builtin_resource("", "namespaces");
        for name in INITIAL_NAMESPACES {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
            let write = handlers::Write {
                dry_run: false,
                manager: None,
            };
            match handlers::create_object(&server, &ns, None, body, write).await {
                Ok(_) => {}
                Err(e) if e.reason == "AlreadyExists" => {}
                Err(e) => return Err(StorageError::Backend(e.message)),
            }
        }
        Ok(server)
    }

    /// Who answers `pods/<name>/{log,exec,attach,portforward}`; without one those get 503.
    pub fn with_pod_streams(mut self, streams: Arc<dyn PodStreams>) -> Self {
        self.pod_streams = Some(streams);
        self
    }

    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// The kinds served right now.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.registry.snapshot()
    }

    /// The OpenAPI documents of the current catalog.
    pub(crate) fn openapi(&self) -> Arc<Documents> {
        let catalog = self.catalog();
        let mut cache = self.openapi.lock().unwrap_or_else(|e| e.into_inner());
        match cache.as_ref() {
            Some((built_from, docs)) if Arc::ptr_eq(built_from, &catalog) => Arc::clone(docs),
            _ => {
                let docs = Arc::new(Documents::build(&catalog));
                *cache = Some((catalog, Arc::clone(&docs)));
                docs
            }
        }
    }

    /// Rebuilds the catalog from the stored CRDs; called after every CRD write. A CRD that fails
    /// validation (it could only have been stored by an older version) is skipped and logged.
    pub(crate) async fn reload_custom_resources(&self) -> Result<(), ApiError> {
        let crds = self
            .catalog()
            .builtin_resource("apiextensions.k8s.io", "customresourcedefinitions");
        let page = self
            .storage
            .list(&crds.prefix(None), Default::default())
            .await
            .map_err(|e| ApiError::from_storage(&crds, "", e))?;
        let mut custom = Vec::new();
        for stored in &page.items {
            let crd = handlers::decode(stored)?;
            match crd::validate(&crd) {
                Ok(()) if !handlers::is_deleting(&crd) => custom.extend(crd::resources(&crd)),
                Ok(()) => {}
                Err((field, message)) => {
                    tracing::warn!(key = %stored.key, %field, %message, "not serving an invalid CRD");
                }
            }
        }
        self.registry.replace(Catalog::with_custom(custom));
        Ok(())
    }

    /// The HTTP surface, ready to be served or called in-process.
    pub fn router(&self) -> Router {
        Router::new()
            .fallback(dispatch::<S>)
            .with_state(self.clone())
    }

    /// Reads the request body, refusing bodies over the limit with 413.
    pub(crate) async fn read_body(
        &self,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<bytes::Bytes, ApiError> {
        let limit = self.config.max_body_bytes;
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limit as u64) {
            return Err(ApiError::too_large(limit));
        }
        match Limited::new(body, limit).collect().await {
            Ok(c) => Ok(c.to_bytes()),
            Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
                Err(ApiError::too_large(limit))
            }
            Err(e) => Err(ApiError::bad_request(format!("reading request body: {e}"))),
        }
    }
}

async fn dispatch<S: Storage>(State(server): State<ApiServer<S>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let query: HashMap<String, String> = match Query::try_from_uri(&parts.uri) {
        Ok(Query(q)) => q,
        Err(e) => return ApiError::bad_request(format!("query: {e}")).into_response(),
    };
    let catalog = server.catalog();
    let route = match request::parse(parts.uri.path(), &catalog) {
        Ok(r) => r,
        Err(_) => return ApiError::no_route(parts.uri.path()).into_response(),
    };
    let read_only = matches!(parts.method, Method::GET | Method::HEAD);
    let doc = match route {
        Route::Resource(rr)
            if rr
                .subresource
                .as_deref()
                .is_some_and(|s| STREAM_SUBRESOURCES.contains(&s)) =>
        {
            let (ns, name, sub) = (
                rr.namespace.unwrap_or_default(),
                rr.name.unwrap_or_default(),
                rr.subresource.unwrap_or_default(),
            );
            return pods::stream(&server, &ns, &name, &sub, Request::from_parts(parts, body)).await;
        }
        Route::Resource(rr) => {
            return handlers::handle(&server, rr, parts.method, &parts.headers, query, body)
                .await
                .unwrap_or_else(IntoResponse::into_response);
        }
        _ if !read_only => {
            return ApiError::method_not_allowed(format!(
                "{} is not supported on {}",
                parts.method,
                parts.uri.path()
            ))
            .into_response();
        }
        Route::Health => return (StatusCode::OK, "ok").into_response(),
        Route::OpenApiIndex => {
            return crate::json_bytes_response(StatusCode::OK, server.openapi().index());
        }
        Route::OpenApi(key) => {
            return match server.openapi().get(&key) {
                Some(doc) => crate::json_bytes_response(StatusCode::OK, doc),
                None => ApiError::no_route(parts.uri.path()).into_response(),
            };
        }
        Route::Version => discovery::version(),
        Route::CoreVersions => discovery::core_versions(),
        Route::GroupList => discovery::group_list(&catalog),
        Route::Group(g) => match discovery::group(&catalog, &g) {
            Some(d) => d,
            None => return ApiError::no_route(parts.uri.path()).into_response(),
        },
        Route::ResourceList { group, version } => {
            discovery::resource_list(&catalog, &group, &version)
        }
    };
    json_response(StatusCode::OK, &doc)
}
