//! The verbs on objects: get, list, create, update (PUT), patch, delete, deletecollection, and
//! the `/status` subresource. Objects are schemaless JSON; this module owns the metadata rules
//! (uid, timestamps, generation, resourceVersion, finalizers, namespaces).

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Map, Value, json};

use crate::meta;
use crate::patch::{self, PatchType};
use crate::registry::{Resource, ResourceInfo};
use crate::request::ResourceRoute;
use crate::server::ApiServer;
use crate::status::{self, ApiError};
use crate::storage::{ListOptions, Revision, Storage, StorageError, StoredObject};
use crate::{apply, fields, managed, openapi, pods, proto, scale, services, skim, strategy, table};
use crate::{json_response, watch};
use ke_selectors::{FieldSelector, LabelSelector};

/// How often a read-modify-write is retried when another writer got in between.
const MAX_ATTEMPTS: usize = 8;

type Query = HashMap<String, String>;

pub(crate) async fn handle<S: Storage>(
    server: &ApiServer<S>,
    rr: ResourceRoute,
    method: Method,
    headers: &HeaderMap,
    query: Query,
    body: Body,
) -> Result<Response, ApiError> {
    let writes_crd = strategy::is_crd(&rr.res) && !matches!(method, Method::GET | Method::HEAD);
    let out = handle_verb(server, rr, method, headers, query, body).await;
    if writes_crd && out.is_ok() {
        server.reload_custom_resources().await?;
    }
    out
}

async fn handle_verb<S: Storage>(
    server: &ApiServer<S>,
    rr: ResourceRoute,
    method: Method,
    headers: &HeaderMap,
    query: Query,
    body: Body,
) -> Result<Response, ApiError> {
    let res: &ResourceInfo = &rr.res;
    let ns = rr.namespace.as_deref();
    let dry_run = is_dry_run(&query)?;
    if res.namespaced && ns.is_none() && rr.name.is_some() {
        return Err(ApiError::no_route(&format!(
            "{} must be addressed within a namespace",
            res.plural
        )));
    }
    let sub = rr.subresource.as_deref();
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let manager = managed::manager_name(query.get("fieldManager").map(String::as_str), user_agent);
    let write = Write {
        dry_run,
        manager: Some(&manager),
    };
    if sub == Some("scale") {
        let name = rr.name.as_deref().unwrap_or_default();
        return scale_request(server, res, ns, name, method, headers, body, write).await;
    }
    if sub == Some("binding") || res.create_only {
        if method != Method::POST {
            return Err(ApiError::method_not_allowed(format!(
                "{method} is not supported on bindings"
            )));
        }
        let body = server.read_body(headers, body).await?;
        let binding = parse_request_object(headers, &body)?;
        return pods::bind(
            server,
            ns.unwrap_or_default(),
            rr.name.as_deref(),
            binding,
            dry_run,
        )
        .await;
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok());
    let table =
        table::wants_table(accept).then(|| table::Include::from_query(query.get("includeObject")));
    match (method, rr.name.as_deref()) {
        (Method::GET, Some(name)) => {
            let obj = get_object(server, res, ns, name).await?;
            Ok(match table {
                Some(include) => {
                    let meta = json!({ "resourceVersion": obj["metadata"]["resourceVersion"] });
                    json_response(StatusCode::OK, &table::render(res, &[obj], meta, include))
                }
                None => json_response(StatusCode::OK, &obj),
            })
        }
        (Method::GET, None) if rr.watch_path || is_true(query.get("watch")) => {
            watch::serve(server, rr.res.clone(), ns, &query, table).await
        }
        (Method::GET, None) => {
            let list = list_objects(server, res, ns, &query).await?;
            Ok(match table {
                Some(include) => {
                    let items = list.values(res)?;
                    json_response(
                        StatusCode::OK,
                        &table::render(res, &items, list.meta.clone(), include),
                    )
                }
                None => crate::json_bytes_response(StatusCode::OK, list.to_json_bytes(res)?),
            })
        }
        (Method::POST, None) => {
            if res.namespaced && ns.is_none() {
                return Err(ApiError::method_not_allowed(format!(
                    "create {} within a namespace",
                    res.plural
                )));
            }
            let directive = fields::Directive::from_query(&query)?;
            let body = server.read_body(headers, body).await?;
            let mut obj = parse_request_object(headers, &body)?;
            let warnings = fields::enforce(res, directive, &mut obj)?;
            let created = create_object(server, res, ns, obj, write).await?;
            Ok(with_warnings(
                json_response(StatusCode::CREATED, &created),
                &warnings,
            ))
        }
        (Method::PUT, Some(name)) => {
            let directive = fields::Directive::from_query(&query)?;
            let body = server.read_body(headers, body).await?;
            let mut obj = parse_request_object(headers, &body)?;
            let warnings = fields::enforce(res, directive, &mut obj)?;
            if let Some(body_name) = meta_str(&obj, "name")
                && body_name != name
            {
                return Err(ApiError::bad_request(format!(
                    "the name of the object ({body_name}) does not match the name on the URL ({name})"
                )));
            }
            let updated = update_object(server, res, ns, name, Part::of(sub), write, |_| {
                Ok(obj.clone())
            })
            .await?;
            Ok(with_warnings(
                json_response(StatusCode::OK, &updated),
                &warnings,
            ))
        }
        (Method::PATCH, Some(name)) => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if ct.split(';').next().map(str::trim) == Some(apply::CONTENT_TYPE) {
                let body = server.read_body(headers, body).await?;
                let request = apply::ApplyRequest {
                    res,
                    ns,
                    name,
                    subresource: sub,
                    query: &query,
                    body: &body,
                    dry_run,
                };
                let (resp, warnings) = apply::serve(server, request).await?;
                return Ok(with_warnings(resp, &warnings));
            }
            let kind = PatchType::from_content_type(ct)
                .filter(|k| !(res.is_custom() && *k == PatchType::Strategic))
                .ok_or_else(|| ApiError::unsupported_media_type(ct))?;
            let directive = fields::Directive::from_query(&query)?;
            let body = server.read_body(headers, body).await?;
            let warnings = std::sync::Mutex::new(Vec::new());
            let updated = update_object(server, res, ns, name, Part::of(sub), write, |cur| {
                let mut patched = patch::apply(kind, openapi::root(res), cur, &body).map_err(|e| match e {
                    patch::PatchError::TestFailed { .. } => ApiError::new(
                        422,
                        "Invalid",
                        format!(
                            "the server rejected our request due to an error in our request: {e}"
                        ),
                    ),
                    e => ApiError::bad_request(e.to_string()),
                })?;
                *warnings.lock().unwrap_or_else(|e| e.into_inner()) =
                    fields::enforce(res, directive, &mut patched)?;
                Ok(patched)
            })
            .await?;
            let warnings = warnings.into_inner().unwrap_or_else(|e| e.into_inner());
            Ok(with_warnings(
                json_response(StatusCode::OK, &updated),
                &warnings,
            ))
        }
        (Method::DELETE, Some(name)) if sub.is_none() => {
            let body = server.read_body(headers, body).await?;
            let opts = DeleteOptions::parse(&body, &query)?;
            let dry_run = dry_run || opts.dry_run;
            let out = if res.is("", "namespaces") {
                delete_namespace(server, name, &opts, dry_run).await?
            } else if strategy::is_crd(res) {
                delete_crd(server, name, &opts, dry_run).await?
            } else {
                delete_object(server, res, ns, name, &opts, dry_run).await?
            };
            Ok(match out {
                Deleted::Gone(obj) => json_response(
                    StatusCode::OK,
                    &status::success_status(
                        res,
                        name,
                        obj.pointer("/metadata/uid").and_then(Value::as_str),
                    ),
                ),
                Deleted::Pending(obj) => json_response(StatusCode::OK, &obj),
            })
        }
        (Method::DELETE, None) => {
            if res.is("", "namespaces") {
                return Err(ApiError::method_not_allowed(
                    "deletecollection is not supported on namespaces",
                ));
            }
            let body = server.read_body(headers, body).await?;
            let opts = DeleteOptions::parse(&body, &query)?;
            let dry_run = dry_run || opts.dry_run;
            let list = list_objects(server, res, ns, &query).await?;
            let mut gone = Vec::new();
            for item in &list.values(res)? {
                let name = item
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let item_ns = item.pointer("/metadata/namespace").and_then(Value::as_str);
                match delete_object(server, res, item_ns, name, &opts, dry_run).await {
                    Ok(Deleted::Gone(o) | Deleted::Pending(o)) => gone.push(o),
                    Err(e) if e.reason == "NotFound" => {}
                    Err(e) => return Err(e),
                }
            }
            let out = json!({
                "kind": res.list_kind(),
                "apiVersion": res.api_version(),
                "metadata": list.meta,
                "items": gone,
            });
            Ok(json_response(StatusCode::OK, &out))
        }
        (m, _) => Err(ApiError::method_not_allowed(format!(
            "{m} is not supported on {}{}",
            res.plural,
            sub.map(|s| format!("/{s}")).unwrap_or_default()
        ))),
    }
}

/// `GET|PUT|PATCH <workload>/scale`.
#[allow(clippy::too_many_arguments)]
async fn scale_request<S: Storage>(
    server: &ApiServer<S>,
    res: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    method: Method,
    headers: &HeaderMap,
    body: Body,
    write: Write<'_>,
) -> Result<Response, ApiError> {
    let current = get_object(server, res, ns, name).await?;
    let patch_kind = match method {
        Method::GET => return Ok(json_response(StatusCode::OK, &scale::of(&current))),
        Method::PUT => None,
        Method::PATCH => {
            let ct = headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            Some(
                PatchType::from_content_type(ct)
                    .ok_or_else(|| ApiError::unsupported_media_type(ct))?,
            )
        }
        m => {
            return Err(ApiError::method_not_allowed(format!(
                "{m} is not supported on {}/scale",
                res.plural
            )));
        }
    };
    let body = server.read_body(headers, body).await?;
    let updated = update_object(server, res, ns, name, Part::Main, write, |cur| {
        let replicas = scale::requested(res, cur, patch_kind, &body)?;
        let mut next = cur.clone();
        let spec = next
            .get_mut("spec")
            .and_then(Value::as_object_mut)
            .ok_or_else(|| ApiError::invalid(res, name, "spec", "Required value"))?;
        spec.insert("replicas".into(), json!(replicas));
        Ok(next)
    })
    .await?;
    Ok(json_response(StatusCode::OK, &scale::of(&updated)))
}

/// Adds one `Warning: 299 - "<text>"` header per warning, as kube-apiserver reports dropped
/// fields (kubectl prints them as `Warning: <text>`).
fn with_warnings(mut resp: Response, warnings: &[String]) -> Response {
    for w in warnings {
        let escaped = w.replace('\\', "\\\\").replace('"', "\\\"");
        if let Ok(v) = axum::http::HeaderValue::from_str(&format!("299 - \"{escaped}\"")) {
            resp.headers_mut().append(header::WARNING, v);
        }
    }
    resp
}

/// An object body: JSON, or protobuf for the kinds [`crate::proto`] knows (typed client-go
/// clients such as kubectl's `create namespace` send protobuf and do not fall back to JSON).
fn parse_request_object(headers: &HeaderMap, body: &[u8]) -> Result<Value, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json");
    match ct.split(';').next().unwrap_or_default().trim() {
        "application/json" | "" => parse_object(body),
        "application/vnd.kubernetes.protobuf" => proto::decode(body).map_err(|e| match e {
            proto::ProtoError::Unsupported(_) => ApiError::unsupported_media_type(&e.to_string()),
            proto::ProtoError::Malformed(_) => ApiError::bad_request(e.to_string()),
        }),
        other => Err(ApiError::unsupported_media_type(other)),
    }
}

fn is_true(v: Option<&String>) -> bool {
    matches!(v.map(String::as_str), Some("true" | "1"))
}

fn is_dry_run(q: &Query) -> Result<bool, ApiError> {
    match q.get("dryRun").map(String::as_str) {
        None | Some("") => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "unsupported dryRun value {other:?} (only \"All\")"
        ))),
    }
}

/// A request body that must be one JSON object.
pub(crate) fn parse_object(body: &[u8]) -> Result<Value, ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("the request body is not valid json: {e}")))?;
    if !v.is_object() {
        return Err(ApiError::bad_request(
            "the request body must be a json object",
        ));
    }
    Ok(v)
}

/// A stored object as `res` presents it: every version of a custom resource reads the same
/// stored objects (no conversion), so `apiVersion` is the one asked for.
pub(crate) fn decode_as(res: &ResourceInfo, stored: &StoredObject) -> Result<Value, ApiError> {
    let mut v = decode(stored)?;
    if res.is_custom()
        && let Some(root) = v.as_object_mut()
    {
        root.insert("apiVersion".into(), json!(res.api_version()));
    }
    Ok(v)
}

/// The stored JSON with `metadata.resourceVersion` injected from the storage revision.
pub(crate) fn decode(stored: &StoredObject) -> Result<Value, ApiError> {
    let mut v: Value = serde_json::from_slice(&stored.value)
        .map_err(|e| ApiError::internal(format!("stored object {} is corrupt: {e}", stored.key)))?;
    set_rv(&mut v, stored.mod_revision);
    Ok(v)
}

fn set_rv(v: &mut Value, rv: Revision) {
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.insert("resourceVersion".into(), json!(rv.to_string()));
    }
}

/// What is stored: the object without its resourceVersion (the storage revision is the truth).
fn encode(v: &Value) -> Vec<u8> {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.shift_remove("resourceVersion");
    }
    serde_json::to_vec(&v).unwrap_or_default()
}

fn metadata_mut(obj: &mut Value) -> Result<&mut Map<String, Value>, ApiError> {
    let Value::Object(root) = obj else {
        return Err(ApiError::bad_request("the object must be a json object"));
    };
    let meta = root.entry("metadata").or_insert_with(|| json!({}));
    meta.as_object_mut()
        .ok_or_else(|| ApiError::bad_request("metadata must be a json object"))
}

fn meta_str<'a>(obj: &'a Value, field: &str) -> Option<&'a str> {
    obj.get("metadata")?
        .get(field)?
        .as_str()
        .filter(|s| !s.is_empty())
}

/// Fills `apiVersion`/`kind` when absent; refuses an object of another kind.
pub(crate) fn check_type(res: &ResourceInfo, obj: &mut Value) -> Result<(), ApiError> {
    let want_av = res.api_version();
    let Value::Object(root) = obj else {
        return Err(ApiError::bad_request("the object must be a json object"));
    };
    for (field, want) in [
        ("apiVersion", want_av.as_str()),
        ("kind", res.kind.as_str()),
    ] {
        match root.get(field).and_then(Value::as_str) {
            None | Some("") => {
                root.insert(field.into(), json!(want));
            }
            Some(got) if got == want => {}
            Some(got) => {
                return Err(ApiError::bad_request(format!(
                    "the {field} in the data ({got}) does not match the expected {field} ({want})"
                )));
            }
        }
    }
    Ok(())
}

fn namespaces<S: Storage>(server: &ApiServer<S>) -> Resource {
    server.catalog().builtin_resource("", "namespaces")
}

pub(crate) fn is_deleting(obj: &Value) -> bool {
    meta_str(obj, "deletionTimestamp").is_some()
}

fn has_finalizers(obj: &Value) -> bool {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty())
}

/// New content may only go into an existing namespace that is not being deleted.
async fn check_namespace_writable<S: Storage>(
    server: &ApiServer<S>,
    res: &ResourceInfo,
    ns: &str,
    name: &str,
) -> Result<(), ApiError> {
    let nsr = namespaces(server);
    let stored = server
        .storage
        .get(&nsr.key(None, ns))
        .await
        .map_err(|e| ApiError::from_storage(&nsr, ns, e))?
        .ok_or_else(|| ApiError::not_found(&nsr, ns))?;
    if is_deleting(&decode(&stored)?) {
        return Err(ApiError::forbidden(format!(
            "{} \"{name}\" is forbidden: unable to create new content in namespace {ns} because it is being terminated",
            res.plural
        )));
    }
    Ok(())
}

pub(crate) async fn get_object<S: Storage>(
    server: &ApiServer<S>,
    res: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
) -> Result<Value, ApiError> {
    read_current(server, res, &res.key(ns, name), name)
        .await
        .map(|(_, obj)| obj)
}

/// The stored object at `key` and its decoded form; NotFound as `res`'s 404.
async fn read_current<S: Storage>(
    server: &ApiServer<S>,
    res: &ResourceInfo,
    key: &str,
    name: &str,
) -> Result<(StoredObject, Value), ApiError> {
    let stored = server
        .storage
        .get(key)
        .await
        .map_err(|e| ApiError::from_storage(res, name, e))?
        .ok_or_else(|| ApiError::not_found(res, name))?;
    let obj = decode_as(res, &stored)?;
    Ok((stored, obj))
}

/// POST: assigns name (from `generateName`), uid, timestamps, generation; resets status where
/// Kubernetes does; stores.
pub(crate) async fn create_object<S: Storage>(
    server: &ApiServer<S>,
    res: &ResourceInfo,
    ns: Option<&str>,
    mut obj: Value,
    write: Write<'_>,
) -> Result<Value, ApiError> {
    let dry_run = write.dry_run;
    check_type(res, &mut obj)?;
    let meta = metadata_mut(&mut obj)?;
    if res.namespaced {
        let ns = ns.unwrap_or_default();
        match meta.get("namespace").and_then(Value::as_str) {
            None | Some("") => {}
            Some(body_ns) if body_ns == ns => {}
            Some(_) => {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
        meta.insert("namespace".into(), json!(ns));
    } else {
        meta.shift_remove("namespace");
    }
    let given = meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let generate = meta
        .get("generateName")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    if given.is_empty() && generate.is_empty() {
        return Err(ApiError::invalid(
            res,
            "",
            "metadata.name",
            "Required value: name or generateName is required",
        ));
    }
    let now = meta::now();
    meta.insert("uid".into(), json!(meta::new_uid()));
    meta.insert("creationTimestamp".into(), json!(now));
    meta.insert("generation".into(), json!(1));
    for server_owned in [
        "resourceVersion",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
        "selfLink",
    ] {
        meta.shift_remove(server_owned);
    }
    strategy::prepare_create(res, &mut obj);
    // Held until the Service is stored, so concurrent creates never share an address.
    let _allocating = if res.is("", "services") && !dry_run {
        let guard = server.service_allocation.lock().await;
        services::allocate(server, &mut obj).await?;
        Some(guard)
    } else {
        None
    };
    if let Some(ns) = ns.filter(|_| res.namespaced) {
        check_namespace_writable(server, res, ns, &given).await?;
    }

    for attempt in 0.. {
        let name = if given.is_empty() {
            meta::generate_name(&generate)
        } else {
            given.clone()
        };
        metadata_mut(&mut obj)?.insert("name".into(), json!(name));
        strategy::named(res, &mut obj, &name);
        strategy::validate(res, &obj, &name)?;
        if let Some(manager) = write.manager {
            managed::record_update(
                openapi::root(res),
                None,
                &mut obj,
                manager,
                &res.api_version(),
                "",
            );
        }
        if dry_run {
            return Ok(obj);
        }
        match server
            .storage
            .create(&res.key(ns, &name), encode(&obj))
            .await
        {
            Ok(stored) => {
                set_rv(&mut obj, stored.mod_revision);
                return Ok(obj);
            }
            // A generated name collided: draw another, as kube-apiserver does.
            Err(StorageError::AlreadyExists { .. }) if given.is_empty() && attempt < 5 => continue,
            Err(e) => return Err(ApiError::from_storage(res, &name, e)),
        }
    }
    unreachable!("the create loop returns")
}

/// Which part of an object a write may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// The object itself: everything but `status` (for kinds with a status subresource).
    Main,
    /// The `status` subresource: only `status`.
    Status,
    /// Server-internal writes (pod binding sets `spec.nodeName` and a status condition).
    Whole,
}

/// How a write is made: for real or as a dry run, and by which field manager (none for the
/// server's own writes).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Write<'a> {
    pub dry_run: bool,
    pub manager: Option<&'a str>,
}

impl Part {
    /// The subresource a managedFields entry records for a write of this part.
    fn subresource(self) -> &'static str {
        match self {
            Part::Status => "status",
            Part::Main | Part::Whole => "",
        }
    }

    fn of(subresource: Option<&str>) -> Part {
        match subresource {
            Some("status") => Part::Status,
            _ => Part::Main,
        }
    }
}

/// PUT and PATCH: `mutate` turns the current object into the requested one; this keeps what the
/// server owns, applies the subresource rules, checks a resourceVersion precondition, and writes
/// with the read revision as the expected one (retrying when another writer got in between and
/// the client gave no precondition).
pub(crate) async fn update_object<S, F>(
    server: &ApiServer<S>,
    res: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    part: Part,
    write: Write<'_>,
    mutate: F,
) -> Result<Value, ApiError>
where
    S: Storage,
    F: Fn(&Value) -> Result<Value, ApiError>,
{
    let dry_run = write.dry_run;
    let key = res.key(ns, name);
    for _ in 0..MAX_ATTEMPTS {
        let (stored, current) = read_current(server, res, &key, name).await?;
        let mut candidate = mutate(&current)?;
        if !candidate.is_object() {
            return Err(ApiError::bad_request("the object must be a json object"));
        }
        if let Some(rv) = meta_str(&candidate, "resourceVersion") {
            let rv: Revision = rv.parse().map_err(|_| {
                ApiError::bad_request(format!("invalid resourceVersion {rv:?}: not a number"))
            })?;
            if rv != stored.mod_revision {
                return Err(ApiError::conflict(res, name));
            }
        }
        if let Some(uid) = meta_str(&candidate, "uid")
            && Some(uid) != meta_str(&current, "uid")
        {
            return Err(ApiError::conflict(res, name));
        }
        check_type(res, &mut candidate)?;
        let mut next = prepare_update(res, &current, candidate, part, name)?;
        if let Some(manager) = write.manager {
            managed::record_update(
                openapi::root(res),
                Some(&current),
                &mut next,
                manager,
                &res.api_version(),
                part.subresource(),
            );
        }
        if strip_rv(&next) == strip_rv(&current) {
            return Ok(current);
        }
        // The last finalizer of a deleting object is gone: the object goes with it. (A pod in
        // its grace period without finalizers stays until its node or a forced delete removes
        // it; its status keeps updating meanwhile.)
        let in_grace = next
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .is_some_and(|g| g > 0)
            && !has_finalizers(&current);
        if is_deleting(&next) && !has_finalizers(&next) && !in_grace {
            if dry_run {
                return Ok(next);
            }
            match server.storage.delete(&key, Some(stored.mod_revision)).await {
                Ok(gone) => {
                    let mut out = next;
                    set_rv(&mut out, gone.mod_revision);
                    if let Some(ns) = ns.filter(|_| res.namespaced) {
                        finish_namespace_if_empty(server, ns).await?;
                    }
                    return Ok(out);
                }
                Err(StorageError::Conflict { .. }) => continue,
                Err(e) => return Err(ApiError::from_storage(res, name, e)),
            }
        }
        if dry_run {
            return Ok(next);
        }
        match server
            .storage
            .update(&key, encode(&next), Some(stored.mod_revision))
            .await
        {
            Ok(written) => {
                let mut out = next;
                set_rv(&mut out, written.mod_revision);
                return Ok(out);
            }
            Err(StorageError::Conflict { .. }) => continue,
            Err(e) => return Err(ApiError::from_storage(res, name, e)),
        }
    }
    Err(ApiError::conflict(res, name))
}

fn strip_rv(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.shift_remove("resourceVersion");
    }
    v
}

/// Everything outside `metadata` and `status`: what `generation` tracks.
fn desired_state(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v.as_object_mut() {
        m.shift_remove("metadata");
        m.shift_remove("status");
    }
    v
}

fn prepare_update(
    res: &ResourceInfo,
    current: &Value,
    candidate: Value,
    part: Part,
    name: &str,
) -> Result<Value, ApiError> {
    let mut next = match part {
        Part::Status => {
            let mut n = current.clone();
            copy_field(&mut n, &candidate, "status");
            n
        }
        Part::Main => {
            let mut n = candidate;
            if res.status_subresource {
                copy_field(&mut n, current, "status");
            }
            if res.is("", "namespaces") {
                copy_field(&mut n, current, "spec");
            }
            n
        }
        Part::Whole => candidate,
    };
    let body_name = meta_str(&next, "name").map(str::to_owned);
    if let Some(body_name) = body_name
        && body_name != name
    {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({name})"
        )));
    }
    let cur_meta = current
        .get("metadata")
        .cloned()
        .unwrap_or_else(|| json!({}));
    let generation = cur_meta
        .get("generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    let bump = desired_state(&next) != desired_state(current);
    let meta = metadata_mut(&mut next)?;
    meta.insert("name".into(), json!(name));
    for owned in [
        "namespace",
        "uid",
        "creationTimestamp",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        match cur_meta.get(owned) {
            Some(v) => {
                meta.insert(owned.into(), v.clone());
            }
            None => {
                meta.shift_remove(owned);
            }
        }
    }
    meta.insert(
        "generation".into(),
        json!(if bump { generation + 1 } else { generation }),
    );
    meta.shift_remove("resourceVersion");
    strategy::prepare_update(res, current, &mut next);
    strategy::validate(res, &next, name)?;
    Ok(next)
}

fn copy_field(dst: &mut Value, src: &Value, field: &str) {
    let Some(d) = dst.as_object_mut() else { return };
    match src.get(field) {
        Some(v) => {
            d.insert(field.into(), v.clone());
        }
        None => {
            d.shift_remove(field);
        }
    }
}

/// Parsed `DeleteOptions` (body and query).
#[derive(Debug, Default)]
pub(crate) struct DeleteOptions {
    uid: Option<String>,
    resource_version: Option<Revision>,
    dry_run: bool,
    /// The finalizer the garbage collector acts on before the object goes: `foregroundDeletion`
    /// (dependents first) or `orphan` (dependents released). Background deletion has none: the
    /// object goes at once and the collector deletes dependents after it.
    propagation_finalizer: Option<&'static str>,
    /// `gracePeriodSeconds`: how long a running pod's node gets to stop it. `0` deletes at once.
    grace_period: Option<i64>,
}

impl DeleteOptions {
    fn parse(body: &[u8], q: &Query) -> Result<Self, ApiError> {
        let mut opts = Self::default();
        let mut policy = q.get("propagationPolicy").cloned();
        if let Some(g) = q.get("gracePeriodSeconds") {
            opts.grace_period =
                Some(g.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}"))
                })?);
        }
        if !body.iter().all(u8::is_ascii_whitespace) {
            let v = parse_object(body)?;
            opts.uid = v
                .pointer("/preconditions/uid")
                .and_then(Value::as_str)
                .map(str::to_owned);
            if let Some(rv) = v
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
            {
                opts.resource_version = Some(rv.parse().map_err(|_| {
                    ApiError::bad_request(format!("invalid precondition resourceVersion {rv:?}"))
                })?);
            }
            if let Some(p) = v.get("propagationPolicy").and_then(Value::as_str) {
                policy = Some(p.to_owned());
            }
            if let Some(g) = v.get("gracePeriodSeconds").and_then(Value::as_i64) {
                opts.grace_period = Some(g);
            }
            opts.dry_run = v
                .get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|x| x == "All"));
        }
        opts.propagation_finalizer = match policy.as_deref() {
            None | Some("Background") => None,
            Some("Foreground") => Some("foregroundDeletion"),
            Some("Orphan") => Some("orphan"),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "invalid propagationPolicy {other:?}: must be Orphan, Background or Foreground"
                )));
            }
        };
        Ok(opts)
    }
}

pub(crate) enum Deleted {
    /// Removed from storage; the last state.
    Gone(Value),
    /// Kept until its finalizers are removed; now has `deletionTimestamp`.
    Pending(Value),
}

pub(crate) async fn delete_object<S: Storage>(
    server: &ApiServer<S>,
    res: &ResourceInfo,
    ns: Option<&str>,
    name: &str,
    opts: &DeleteOptions,
    dry_run: bool,
) -> Result<Deleted, ApiError> {
    let key = res.key(ns, name);
    for _ in 0..MAX_ATTEMPTS {
        let (stored, current) = read_current(server, res, &key, name).await?;
        if let Some(uid) = &opts.uid
            && meta_str(&current, "uid") != Some(uid.as_str())
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                    meta_str(&current, "uid").unwrap_or_default()
                ),
            ));
        }
        if let Some(rv) = opts.resource_version
            && rv != stored.mod_revision
        {
            return Err(ApiError::new(
                409,
                "Conflict",
                format!(
                    "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {}",
                    stored.mod_revision
                ),
            ));
        }
        let grace = graceful_period(res, &current, opts.grace_period);
        if has_finalizers(&current) || opts.propagation_finalizer.is_some() || grace > 0 {
            if is_deleting(&current) || dry_run {
                return Ok(Deleted::Pending(current));
            }
            let mut next = current.clone();
            let meta = metadata_mut(&mut next)?;
            if let Some(finalizer) = opts.propagation_finalizer {
                let list = meta.entry("finalizers").or_insert_with(|| json!([]));
                if let Value::Array(list) = list
                    && !list.iter().any(|f| f == finalizer)
                {
                    list.push(json!(finalizer));
                }
            }
            let at =
                std::time::SystemTime::now() + std::time::Duration::from_secs(grace.max(0) as u64);
            meta.insert("deletionTimestamp".into(), json!(meta::rfc3339(at)));
            meta.insert("deletionGracePeriodSeconds".into(), json!(grace));
            match server
                .storage
                .update(&key, encode(&next), Some(stored.mod_revision))
                .await
            {
                Ok(written) => {
                    set_rv(&mut next, written.mod_revision);
                    return Ok(Deleted::Pending(next));
                }
                Err(StorageError::Conflict { .. }) => continue,
                Err(e) => return Err(ApiError::from_storage(res, name, e)),
            }
        }
        if dry_run {
            return Ok(Deleted::Gone(current));
        }
        match server.storage.delete(&key, Some(stored.mod_revision)).await {
            Ok(_) => {
                // The last object of a Terminating namespace lets the namespace go.
                if let Some(ns) = ns.filter(|_| res.namespaced) {
                    finish_namespace_if_empty(server, ns).await?;
                }
                return Ok(Deleted::Gone(current));
            }
            Err(StorageError::Conflict { .. }) => continue,
            Err(e) => return Err(ApiError::from_storage(res, name, e)),
        }
    }
    Err(ApiError::conflict(res, name))
}

/// How long the deletion of `obj` waits for its node (kube-apiserver's graceful deletion of
/// pods): a pod bound to a node and not finished gets its `terminationGracePeriodSeconds`
/// (default 30) unless the request asks for another period; a second request with `0` forces
/// the deletion. Everything else goes at once.
fn graceful_period(res: &ResourceInfo, obj: &Value, requested: Option<i64>) -> i64 {
    if !res.is("", "pods") {
        return 0;
    }
    let bound = obj
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .is_some_and(|n| !n.is_empty());
    let finished = matches!(
        obj.pointer("/status/phase").and_then(Value::as_str),
        Some("Succeeded" | "Failed")
    );
    if !bound || finished {
        return 0;
    }
    requested
        .or_else(|| {
            obj.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30)
        .max(0)
}

/// Deleting a namespace: mark it Terminating, delete everything in it, and remove it once empty
/// (objects held by finalizers keep it Terminating until they go; see
/// [`finish_namespace_if_empty`]). This stands in for kube-controller-manager's namespace
/// controller.
async fn delete_namespace<S: Storage>(
    server: &ApiServer<S>,
    name: &str,
    opts: &DeleteOptions,
    dry_run: bool,
) -> Result<Deleted, ApiError> {
    let nsr = namespaces(server);
    let current = get_object(server, &nsr, None, name).await?;
    if dry_run {
        return Ok(Deleted::Pending(current));
    }
    if let Some(uid) = &opts.uid
        && meta_str(&current, "uid") != Some(uid.as_str())
    {
        return Err(ApiError::conflict(&nsr, name));
    }
    if !is_deleting(&current) {
        let key = nsr.key(None, name);
        let mut next = current.clone();
        metadata_mut(&mut next)?.insert("deletionTimestamp".into(), json!(meta::now()));
        next["status"] = json!({"phase": "Terminating"});
        let expected = meta_str(&current, "resourceVersion").and_then(|r| r.parse().ok());
        server
            .storage
            .update(&key, encode(&next), expected)
            .await
            .map_err(|e| ApiError::from_storage(&nsr, name, e))?;
    }
    let plain = DeleteOptions::default();
    for res in server.catalog().namespaced_collections() {
        let page = server
            .storage
            .list(&res.prefix(Some(name)), ListOptions::default())
            .await
            .map_err(|e| ApiError::from_storage(&res, name, e))?;
        for item in &page.items {
            let obj = decode(item)?;
            let item_name = meta_str(&obj, "name").unwrap_or_default().to_owned();
            match delete_object(server, &res, Some(name), &item_name, &plain, false).await {
                Ok(_) => {}
                Err(e) if e.reason == "NotFound" => {}
                Err(e) => return Err(e),
            }
        }
    }
    match finish_namespace_if_empty(server, name).await? {
        Some(gone) => Ok(Deleted::Gone(gone)),
        // Its last object may have gone meanwhile, taking the namespace with it.
        None => match get_object(server, &nsr, None, name).await {
            Ok(still) => Ok(Deleted::Pending(still)),
            Err(e) if e.reason == "NotFound" => Ok(Deleted::Gone(current)),
            Err(e) => Err(e),
        },
    }
}

/// Deleting a CRD deletes every object of it first (apiextensions does this behind the
/// `customresourcecleanup.apiextensions.k8s.io` finalizer; here it happens before the reply).
async fn delete_crd<S: Storage>(
    server: &ApiServer<S>,
    name: &str,
    opts: &DeleteOptions,
    dry_run: bool,
) -> Result<Deleted, ApiError> {
    let crds = server
        .catalog()
        .builtin_resource("apiextensions.k8s.io", "customresourcedefinitions");
    let crd = get_object(server, &crds, None, name).await?;
    if !dry_run && let Some(served) = crate::crd::resources(&crd).into_iter().next() {
        let page = server
            .storage
            .list(&served.prefix(None), ListOptions::default())
            .await
            .map_err(|e| ApiError::from_storage(&served, "", e))?;
        for item in &page.items {
            match server.storage.delete(&item.key, None).await {
                Ok(_) | Err(StorageError::NotFound { .. }) => {}
                Err(e) => return Err(ApiError::from_storage(&served, &item.key, e)),
            }
        }
    }
    delete_object(server, &crds, None, name, opts, dry_run).await
}

/// Removes a Terminating namespace once nothing is left in it. Returns its last state when it
/// was removed.
async fn finish_namespace_if_empty<S: Storage>(
    server: &ApiServer<S>,
    ns: &str,
) -> Result<Option<Value>, ApiError> {
    let nsr = namespaces(server);
    let Some(stored) = server
        .storage
        .get(&nsr.key(None, ns))
        .await
        .map_err(|e| ApiError::from_storage(&nsr, ns, e))?
    else {
        return Ok(None);
    };
    let current = decode(&stored)?;
    if !is_deleting(&current) || has_finalizers(&current) {
        return Ok(None);
    }
    for res in server.catalog().namespaced_collections() {
        let page = server
            .storage
            .list(
                &res.prefix(Some(ns)),
                ListOptions {
                    limit: Some(1),
                    start_after: None,
                },
            )
            .await
            .map_err(|e| ApiError::from_storage(&res, ns, e))?;
        if !page.items.is_empty() {
            return Ok(None);
        }
    }
    match server
        .storage
        .delete(&nsr.key(None, ns), Some(stored.mod_revision))
        .await
    {
        Ok(_) => Ok(Some(current)),
        // Someone else finished or changed it; they own the outcome.
        Err(StorageError::NotFound { .. } | StorageError::Conflict { .. }) => Ok(None),
        Err(e) => Err(ApiError::from_storage(&nsr, ns, e)),
    }
}

/// Parsed selectors of a list or watch.
pub(crate) struct Selectors {
    pub label: LabelSelector,
    pub field: FieldSelector,
}

impl Selectors {
    pub fn parse(res: &ResourceInfo, q: &Query) -> Result<Self, ApiError> {
        let bad = |e: ke_selectors::SelectorError| ApiError::bad_request(e.to_string());
        Ok(Self {
            label: LabelSelector::parse(q.get("labelSelector").map_or("", String::as_str))
                .map_err(bad)?,
            field: FieldSelector::parse(q.get("fieldSelector").map_or("", String::as_str), |f| {
                res.supports_field(f)
            })
            .map_err(bad)?,
        })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        self.label.matches(obj) && self.field.matches(obj)
    }

    pub fn is_empty(&self) -> bool {
        self.label.is_empty() && self.field.is_empty()
    }

    /// Whether a stored object can match, judged from only the fields the selectors read
    /// (see [`crate::skim`]); `true` when that cannot be told without decoding it.
    pub fn may_match_raw(&self, raw: &[u8]) -> bool {
        if self.is_empty() {
            return true;
        }
        let mut paths: Vec<Vec<&str>> = self
            .field
            .fields()
            .map(|f| f.split('.').collect())
            .collect();
        if !self.label.is_empty() {
            paths.push(vec!["metadata", "labels"]);
        }
        skim::sparse(raw, &paths).is_none_or(|sparse| self.matches(&sparse))
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    rv: Revision,
    after: String,
}

/// LIST, with selectors and `limit`/`continue` paging.
///
/// Pages after the first are read at the store's latest revision, not the first page's (the
/// storage trait has no read-at-revision yet), so a paged list is not a snapshot.
pub(crate) async fn list_objects<S: Storage>(
    server: &ApiServer<S>,
    res: &ResourceInfo,
    ns: Option<&str>,
    q: &Query,
) -> Result<ObjectList, ApiError> {
    let sel = Selectors::parse(res, q)?;
    let limit = match q.get("limit").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| ApiError::bad_request(format!("invalid limit {l:?}")))?,
        ),
    };
    let mut start_after = None;
    let mut token_rv = None;
    if let Some(tok) = q.get("continue").filter(|t| !t.is_empty()) {
        let t: ContinueToken = URL_SAFE_NO_PAD
            .decode(tok)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| ApiError::bad_request("invalid continue token"))?;
        start_after = Some(t.after);
        token_rv = Some(t.rv);
    }
    if token_rv.is_none() {
        check_list_resource_version(server, q).await?;
    }
    let prefix = res.prefix(ns);
    let mut items = Vec::new();
    let mut revision = None;
    let mut next_after = None;
    'pages: loop {
        let page = server
            .storage
            .list(
                &prefix,
                ListOptions {
                    limit,
                    start_after: start_after.clone(),
                },
            )
            .await
            .map_err(|e| ApiError::from_storage(res, "", e))?;
        revision.get_or_insert(page.revision);
        let count = page.items.len();
        for (i, stored) in page.items.iter().enumerate() {
            // Without selectors nothing is decoded; with them, only what the skim keeps.
            if sel.is_empty()
                || sel.may_match_raw(&stored.value) && sel.matches(&decode_as(res, stored)?)
            {
                items.push(stored.clone());
            }
            if limit.is_some_and(|l| items.len() >= l) {
                if i + 1 < count || page.continue_after.is_some() {
                    next_after = Some(stored.key.clone());
                }
                break 'pages;
            }
        }
        match page.continue_after {
            Some(after) if limit.is_some() => start_after = Some(after),
            _ => break,
        }
    }
    let revision = token_rv.or(revision).unwrap_or_default();
    let mut list_meta = json!({ "resourceVersion": revision.to_string() });
    if let Some(after) = next_after {
        let tok = serde_json::to_vec(&ContinueToken {
            rv: revision,
            after,
        })
        .map_err(|e| ApiError::internal(e.to_string()))?;
        list_meta["continue"] = json!(URL_SAFE_NO_PAD.encode(tok));
    }
    Ok(ObjectList {
        meta: list_meta,
        items,
    })
}

/// `resourceVersion` / `resourceVersionMatch` of a LIST. Lists are always served from the
/// latest state, which satisfies "not older than" any revision the server has reached; a
/// revision it has not reached, or an exact historical snapshot (SQLite keeps no old versions),
/// is refused the way kube-apiserver refuses what its cache cannot serve.
async fn check_list_resource_version<S: Storage>(
    server: &ApiServer<S>,
    q: &Query,
) -> Result<(), ApiError> {
    let rv = q
        .get("resourceVersion")
        .map(String::as_str)
        .unwrap_or_default();
    let matching = q
        .get("resourceVersionMatch")
        .map(String::as_str)
        .unwrap_or_default();
    if rv.is_empty() {
        return match matching {
            "" => Ok(()),
            _ => Err(ApiError::bad_request(
                "resourceVersionMatch is forbidden unless resourceVersion is provided",
            )),
        };
    }
    let wanted: Revision = rv
        .parse()
        .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?;
    let current = server
        .storage
        .current_revision()
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?;
    match matching {
        "" | "NotOlderThan" if wanted <= current => Ok(()),
        "" | "NotOlderThan" => Err(ApiError::new(
            504,
            "Timeout",
            format!("Too large resource version: {wanted}, current: {current}"),
        )),
        "Exact" if wanted == current => Ok(()),
        "Exact" => Err(ApiError::gone(format!(
            "too old resource version: {wanted} ({current})"
        ))),
        other => Err(ApiError::bad_request(format!(
            "resourceVersionMatch: Unsupported value: \"{other}\": supported values: \"Exact\", \"NotOlderThan\""
        ))),
    }
}

/// The result of a LIST: the matching objects as stored, and the list's metadata.
pub(crate) struct ObjectList {
    pub meta: Value,
    pub items: Vec<StoredObject>,
}

impl ObjectList {
    /// The items as JSON values (for Tables and deletecollection).
    pub fn values(&self, res: &ResourceInfo) -> Result<Vec<Value>, ApiError> {
        self.items.iter().map(|o| decode_as(res, o)).collect()
    }

    /// The `<Kind>List` body, written from the stored bytes: a LIST of 10,000 pods must not
    /// build 10,000 JSON trees only to serialize them again.
    pub fn to_json_bytes(&self, res: &ResourceInfo) -> Result<Vec<u8>, ApiError> {
        let mut out =
            Vec::with_capacity(self.items.iter().map(|o| o.value.len() + 32).sum::<usize>() + 256);
        let head = json!({ "kind": res.list_kind(), "apiVersion": res.api_version(), "metadata": self.meta });
        let head = serde_json::to_vec(&head).map_err(|e| ApiError::internal(e.to_string()))?;
        // `{...}` without its closing brace, then the items.
        out.extend_from_slice(&head[..head.len() - 1]);
        out.extend_from_slice(b",\"items\":[");
        for (i, stored) in self.items.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            match present_raw(res, stored) {
                Some(bytes) => out.extend_from_slice(&bytes),
                None => {
                    let v = decode_as(res, stored)?;
                    serde_json::to_writer(&mut out, &v)
                        .map_err(|e| ApiError::internal(e.to_string()))?;
                }
            }
        }
        out.extend_from_slice(b"]}");
        Ok(out)
    }
}

/// What [`decode_as`] would serialize to, made by splicing `resourceVersion` into the stored
/// bytes. `None` when that is not possible (custom resources get their `apiVersion` rewritten;
/// an object without a `metadata` object).
fn present_raw(res: &ResourceInfo, stored: &StoredObject) -> Option<Vec<u8>> {
    use serde_json::value::RawValue;
    if res.is_custom() {
        return None;
    }
    let raw: &[u8] = &stored.value;
    let top: std::collections::HashMap<&str, &RawValue> = serde_json::from_slice(raw).ok()?;
    let meta = top.get("metadata")?.get();
    let start = (meta.as_ptr() as usize).checked_sub(raw.as_ptr() as usize)?;
    if raw.get(start) != Some(&b'{') {
        return None;
    }
    let empty = meta[1..].trim_start().starts_with('}');
    let mut out = Vec::with_capacity(raw.len() + 32);
    out.extend_from_slice(&raw[..=start]);
    out.extend_from_slice(format!("\"resourceVersion\":\"{}\"", stored.mod_revision).as_bytes());
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(&raw[start + 1..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::Catalog;

    #[test]
    fn spliced_list_items_equal_decoded_ones() {
        let pods = Catalog::builtin().builtin_resource("", "pods");
        for value in [
            r#"{"apiVersion":"v1","kind":"Pod","spec":{"template":{"metadata":{"x":1}}},"metadata":{"name":"p"}}"#,
            r#"{"metadata":{},"kind":"Pod"}"#,
            r#"{"metadata": { "name" : "spaced" }}"#,
        ] {
            let stored = StoredObject {
                key: "/core/pods/default/p".into(),
                value: value.as_bytes().to_vec().into(),
                create_revision: 3,
                mod_revision: 7,
            };
            let spliced: Value =
                serde_json::from_slice(&present_raw(&pods, &stored).unwrap()).unwrap();
            assert_eq!(spliced, decode_as(&pods, &stored).unwrap(), "{value}");
            assert_eq!(spliced["metadata"]["resourceVersion"], "7");
        }
        let no_meta = StoredObject {
            key: "k".into(),
            value: br#"{"metadata":"odd"}"#.to_vec().into(),
            create_revision: 1,
            mod_revision: 1,
        };
        assert!(present_raw(&pods, &no_meta).is_none());
    }
}
