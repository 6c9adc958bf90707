//! Shared by the API tests: a server on a temporary SQLite store, called in-process through the
//! router (no network), with helpers that return `(status, json)`.
#![allow(dead_code)]

use axum::Router;
use axum::body::Body;
use axum::http::{Method, Request, StatusCode};
use http_body_util::BodyExt as _;
use ke_apiserver::storage::sqlite::{Durability, SqliteOptions, SqliteStorage};
use ke_apiserver::{ApiServer, ServerConfig};
use serde_json::Value;
use tower::ServiceExt as _;

pub struct TestServer {
    pub server: ApiServer<SqliteStorage>,
    pub router: Router,
    _dir: tempfile::TempDir,
}

pub async fn start() -> TestServer {
    start_with(ServerConfig::default()).await
}

pub async fn start_with(config: ServerConfig) -> TestServer {
    let dir = tempfile::tempdir().unwrap();
    let storage = SqliteStorage::open_with(
        dir.path().join("db.sqlite"),
        SqliteOptions {
            durability: Durability::Normal,
            ..SqliteOptions::default()
        },
    )
    .unwrap();
    let server = ApiServer::new(storage, config).await.unwrap();
    let router = server.router();
    TestServer {
        server,
        router,
        _dir: dir,
    }
}

impl TestServer {
    pub async fn raw(
        &self,
        method: Method,
        uri: &str,
        content_type: &str,
        body: impl Into<Body>,
    ) -> axum::response::Response {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", content_type)
            .body(body.into())
            .unwrap();
        self.router.clone().oneshot(req).await.unwrap()
    }

    pub async fn call(
        &self,
        method: Method,
        uri: &str,
        content_type: &str,
        body: impl Into<Body>,
    ) -> (StatusCode, Value) {
        let resp = self.raw(method, uri, content_type, body).await;
        let status = resp.status();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let v = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, v)
    }

    pub async fn get(&self, uri: &str) -> (StatusCode, Value) {
        self.call(Method::GET, uri, "application/json", Body::empty())
            .await
    }

    pub async fn post(&self, uri: &str, body: &Value) -> (StatusCode, Value) {
        self.call(Method::POST, uri, "application/json", body.to_string())
            .await
    }

    pub async fn put(&self, uri: &str, body: &Value) -> (StatusCode, Value) {
        self.call(Method::PUT, uri, "application/json", body.to_string())
            .await
    }

    pub async fn patch(&self, uri: &str, content_type: &str, body: &str) -> (StatusCode, Value) {
        self.call(Method::PATCH, uri, content_type, body.to_owned())
            .await
    }

    pub async fn delete(&self, uri: &str) -> (StatusCode, Value) {
        self.call(Method::DELETE, uri, "application/json", Body::empty())
            .await
    }
}

pub fn names(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_owned())
        .collect()
}

pub fn cm(name: &str, labels: Value) -> Value {
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "labels": labels},
        "data": {"k": "v"}
    })
}
