//! `PATCH` with `Content-Type: application/apply-patch+yaml`: server-side apply
//! (`kubectl apply --server-side`). The body is the manager's whole intent for the object, in
//! YAML or JSON; it creates the object when missing. Ownership and merging are in
//! [`crate::managed`]; this module is the request around them.

use std::collections::HashMap;

use axum::http::StatusCode;
use axum::response::Response;
use serde_json::{Value, json};

use crate::handlers::{self, Part, Write};
use crate::managed::{self, Conflict};
use crate::registry::ResourceInfo;
use crate::server::ApiServer;
use crate::status::ApiError;
use crate::storage::Storage;
use crate::{fields, json_response, openapi};

pub const CONTENT_TYPE: &str = "application/apply-patch+yaml";

/// One apply request, already routed.
pub(crate) struct ApplyRequest<'a> {
    pub res: &'a ResourceInfo,
    pub ns: Option<&'a str>,
    pub name: &'a str,
    pub subresource: Option<&'a str>,
    pub query: &'a HashMap<String, String>,
    pub body: &'a [u8],
    pub dry_run: bool,
}

pub(crate) async fn serve<S: Storage>(
    server: &ApiServer<S>,
    req: ApplyRequest<'_>,
) -> Result<(Response, Vec<String>), ApiError> {
    let res = req.res;
    let manager = req
        .query
        .get("fieldManager")
        .filter(|m| !m.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request(
                "PATCH with application/apply-patch+yaml requires fieldManager to be set",
            )
        })?;
    let force = match req.query.get("force").map(String::as_str) {
        None | Some("" | "false") => false,
        Some("true") => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid force value {other:?}"
            )));
        }
    };
    let directive = fields::Directive::from_query(req.query)?;
    let mut applied: Value = serde_yaml::from_slice(req.body)
        .map_err(|e| ApiError::bad_request(format!("error decoding YAML: {e}")))?;
    if !applied.is_object() {
        return Err(ApiError::bad_request(
            "the applied configuration must be an object",
        ));
    }
    handlers::check_type(res, &mut applied)?;
    match applied.pointer("/metadata/name").and_then(Value::as_str) {
        Some(n) if n != req.name => {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({n}) does not match the name on the URL ({})",
                req.name
            )));
        }
        Some(_) => {}
        None => {
            if let Some(meta) = applied
                .as_object_mut()
                .map(|o| o.entry("metadata").or_insert_with(|| json!({})))
                .and_then(Value::as_object_mut)
            {
                meta.insert("name".into(), json!(req.name));
            }
        }
    }
    let warnings = fields::enforce(res, directive, &mut applied)?;
    let schema = openapi::root(res);
    let subresource = if req.subresource == Some("status") {
        "status"
    } else {
        ""
    };
    let api_version = res.api_version();
    let write = Write {
        dry_run: req.dry_run,
        manager: None,
    };
    let apply_to = |live: Option<&Value>| {
        managed::apply(
            schema,
            live,
            &applied,
            manager,
            force,
            &api_version,
            subresource,
        )
        .map_err(|c| conflict_error(&c))
    };
    let existing = match handlers::get_object(server, res, req.ns, req.name).await {
        Ok(_) => true,
        Err(e) if e.reason == "NotFound" && subresource.is_empty() => false,
        Err(e) => return Err(e),
    };
    if !existing {
        let obj = apply_to(None)?;
        match handlers::create_object(server, res, req.ns, obj, write).await {
            Ok(created) => return Ok((json_response(StatusCode::CREATED, &created), warnings)),
            // Someone created it meanwhile: apply onto theirs.
            Err(e) if e.reason == "AlreadyExists" => {}
            Err(e) => return Err(e),
        }
    }
    let part = if subresource == "status" {
        Part::Status
    } else {
        Part::Main
    };
    let updated = handlers::update_object(server, res, req.ns, req.name, part, write, |cur| {
        apply_to(Some(cur))
    })
    .await?;
    Ok((json_response(StatusCode::OK, &updated), warnings))
}

/// The 409 kube-apiserver answers when an apply would take fields others own.
fn conflict_error(conflicts: &[Conflict]) -> ApiError {
    let message = match conflicts {
        [one] => format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            one.manager, one.field
        ),
        many => {
            let mut by_manager: Vec<(&str, Vec<&str>)> = Vec::new();
            for c in many {
                match by_manager.iter_mut().find(|(m, _)| *m == c.manager) {
                    Some((_, fields)) => fields.push(&c.field),
                    None => by_manager.push((&c.manager, vec![&c.field])),
                }
            }
            let mut text = format!("Apply failed with {} conflicts:", many.len());
            for (m, mut fields) in by_manager {
                fields.sort_unstable();
                text.push_str(&format!(" conflicts with {m}:"));
                for f in fields {
                    text.push_str(&format!("\n- {f}"));
                }
            }
            text
        }
    };
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| json!({"reason": "FieldManagerConflict", "message": format!("conflict with {}", c.manager), "field": c.field}))
        .collect();
    ApiError::new(409, "Conflict", message).with_details(json!({ "causes": causes }))
}
