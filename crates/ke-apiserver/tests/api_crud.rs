//! The verbs, metadata rules and error statuses, called in-process on a SQLite store.

mod apisupport;

use apisupport::{cm, names, start};
use axum::http::{Method, StatusCode};
use serde_json::{Value, json};

const CMS: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test]
async fn discovery_documents() {
    let s = start().await;
    let (code, v) = s.get("/version").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(v["gitVersion"], "v1.32.10-kubeedge-rs");
    let (_, v) = s.get("/api").await;
    assert_eq!(v["versions"], json!(["v1"]));
    let (_, v) = s.get("/apis").await;
    assert!(
        v["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "apps")
    );
    let (_, v) = s.get("/apis/apps/v1").await;
    let deploy = v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "deployments")
        .unwrap();
    assert_eq!(deploy["shortNames"], json!(["deploy"]));
    let (code, v) = s.get("/apis/nope.io/v1").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(v["kind"], "Status");
    let (code, _) = s.get("/openapi/v2").await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn initial_namespaces_exist() {
    let s = start().await;
    let (_, v) = s.get("/api/v1/namespaces").await;
    assert_eq!(
        names(&v),
        vec!["default", "kube-node-lease", "kube-public", "kube-system"]
    );
    assert_eq!(v["items"][0]["status"]["phase"], "Active");
}

#[tokio::test]
async fn create_sets_server_metadata() {
    let s = start().await;
    let (code, v) = s.post(CMS, &cm("a", json!({}))).await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    let m = &v["metadata"];
    assert_eq!(m["namespace"], "default");
    assert_eq!(m["generation"], 1);
    assert_eq!(m["uid"].as_str().unwrap().len(), 36);
    assert!(m["creationTimestamp"].as_str().unwrap().ends_with('Z'));
    let rv: u64 = m["resourceVersion"].as_str().unwrap().parse().unwrap();
    let (_, got) = s.get(&format!("{CMS}/a")).await;
    assert_eq!(got, v);

    let (code, v) = s.post(CMS, &cm("a", json!({}))).await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert_eq!(v["reason"], "AlreadyExists");

    let mut g = cm("", json!({}));
    g["metadata"] = json!({"generateName": "gen-"});
    let (code, v) = s.post(CMS, &g).await;
    assert_eq!(code, StatusCode::CREATED);
    let name = v["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("gen-") && name.len() == 9, "{name}");
    let rv2: u64 = v["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv2 > rv);
}

#[tokio::test]
async fn create_validation_errors() {
    let s = start().await;
    let (code, v) = s.post(CMS, &cm("Bad_Name", json!({}))).await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(v["reason"], "Invalid");
    assert_eq!(v["details"]["causes"][0]["field"], "metadata.name");

    let (code, v) = s
        .post("/api/v1/namespaces/missing/configmaps", &cm("a", json!({})))
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(v["message"], "namespaces \"missing\" not found");

    let mut wrong = cm("a", json!({}));
    wrong["kind"] = json!("Secret");
    let (code, v) = s.post(CMS, &wrong).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert_eq!(v["reason"], "BadRequest");

    let mut other_ns = cm("a", json!({}));
    other_ns["metadata"]["namespace"] = json!("kube-system");
    let (code, _) = s.post(CMS, &other_ns).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);

    let (code, v) = s
        .call(Method::POST, CMS, "application/json", "{not json")
        .await;
    assert_eq!(
        (code, v["status"].as_str()),
        (StatusCode::BAD_REQUEST, Some("Failure"))
    );
    let (code, v) = s.call(Method::POST, CMS, "application/json", "[1]").await;
    assert_eq!(
        (code, v["code"].as_u64()),
        (StatusCode::BAD_REQUEST, Some(400))
    );

    let (code, v) = s
        .call(Method::POST, CMS, "application/yaml", "kind: ConfigMap")
        .await;
    assert_eq!(code, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert_eq!(v["reason"], "UnsupportedMediaType");

    let (code, v) = s.get("/api/v1/namespaces/default/widgets").await;
    assert_eq!(
        (code, v["reason"].as_str()),
        (StatusCode::NOT_FOUND, Some("NotFound"))
    );
    let (code, v) = s.get(&format!("{CMS}/nope")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    assert_eq!(v["details"]["name"], "nope");
    let (code, v) = s
        .call(Method::POST, &format!("{CMS}/a"), "application/json", "{}")
        .await;
    assert_eq!(
        (code, v["reason"].as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, Some("MethodNotAllowed"))
    );
}

#[tokio::test]
async fn oversized_body_is_413() {
    let s = start().await;
    let mut big = cm("big", json!({}));
    big["data"]["k"] = json!("x".repeat(3 * 1024 * 1024 + 1));
    let (code, v) = s.post(CMS, &big).await;
    assert_eq!(code, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(v["reason"], "RequestEntityTooLarge");
}

#[tokio::test]
async fn update_with_optimistic_concurrency() {
    let s = start().await;
    let (_, created) = s.post(CMS, &cm("a", json!({}))).await;
    let mut stale = created.clone();
    stale["data"]["k"] = json!("v2");
    let (code, updated) = s.put(&format!("{CMS}/a"), &stale).await;
    assert_eq!(code, StatusCode::OK, "{updated}");
    assert_eq!(updated["metadata"]["generation"], 2);
    assert_eq!(updated["metadata"]["uid"], created["metadata"]["uid"]);
    assert_ne!(
        updated["metadata"]["resourceVersion"],
        created["metadata"]["resourceVersion"]
    );

    // The same resourceVersion again is now stale.
    stale["data"]["k"] = json!("v3");
    let (code, v) = s.put(&format!("{CMS}/a"), &stale).await;
    assert_eq!(code, StatusCode::CONFLICT);
    assert_eq!(v["reason"], "Conflict");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("the object has been modified")
    );

    // Without a resourceVersion the update is unconditional; server-owned fields survive.
    let mut blind = cm("a", json!({}));
    blind["data"]["k"] = json!("v4");
    blind["metadata"]["creationTimestamp"] = json!("2000-01-01T00:00:00Z");
    let (code, v) = s.put(&format!("{CMS}/a"), &blind).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(v["data"]["k"], "v4");
    assert_eq!(
        v["metadata"]["creationTimestamp"],
        created["metadata"]["creationTimestamp"]
    );

    // A no-op update does not write.
    let (_, again) = s.put(&format!("{CMS}/a"), &blind).await;
    assert_eq!(
        again["metadata"]["resourceVersion"],
        v["metadata"]["resourceVersion"]
    );

    let (code, _) = s.put(&format!("{CMS}/other"), &blind).await;
    assert_eq!(code, StatusCode::BAD_REQUEST, "name mismatch");
    let (code, _) = s.put(&format!("{CMS}/zzz"), &cm("zzz", json!({}))).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
    let mut bad_rv = blind.clone();
    bad_rv["metadata"]["resourceVersion"] = json!("abc");
    let (code, _) = s.put(&format!("{CMS}/a"), &bad_rv).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn patches() {
    let s = start().await;
    s.post(CMS, &cm("a", json!({"x": "1"}))).await;
    let url = format!("{CMS}/a");
    let (code, v) = s
        .patch(
            &url,
            "application/merge-patch+json",
            r#"{"metadata":{"labels":{"y":"2","x":null}}}"#,
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{v}");
    assert_eq!(v["metadata"]["labels"], json!({"y": "2"}));
    let (_, v) = s
        .patch(
            &url,
            "application/json-patch+json",
            r#"[{"op":"replace","path":"/data/k","value":"w"}]"#,
        )
        .await;
    assert_eq!(v["data"]["k"], "w");
    let (_, v) = s
        .patch(
            &url,
            "application/strategic-merge-patch+json",
            r#"{"$setElementOrder/x":[],"data":{"s":"1"}}"#,
        )
        .await;
    assert_eq!(v["data"], json!({"k": "w", "s": "1"}));
    assert!(v.get("$setElementOrder/x").is_none());

    let (code, v) = s
        .patch(
            &url,
            "application/json-patch+json",
            r#"[{"op":"test","path":"/data/k","value":"nope"}]"#,
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    let (code, _) = s
        .patch(
            &url,
            "application/json-patch+json",
            r#"[{"op":"remove","path":"/nope"}]"#,
        )
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (code, _) = s.patch(&url, "application/merge-patch+json", "{").await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    // Server-side apply needs a field manager.
    let (code, v) = s.patch(&url, "application/apply-patch+yaml", "a: b").await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(
        v["message"].as_str().unwrap().contains("fieldManager"),
        "{v}"
    );
    let (code, _) = s.patch(&url, "application/x-unknown", "{}").await;
    assert_eq!(code, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // A resourceVersion in a patch is a precondition.
    let (code, v) = s
        .patch(
            &url,
            "application/merge-patch+json",
            r#"{"metadata":{"resourceVersion":"1"}}"#,
        )
        .await;
    assert_eq!(
        (code, v["reason"].as_str()),
        (StatusCode::CONFLICT, Some("Conflict"))
    );
    let (code, _) = s
        .patch(&format!("{CMS}/none"), "application/merge-patch+json", "{}")
        .await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn status_subresource_separates_spec_and_status() {
    let s = start().await;
    let deps = "/apis/apps/v1/namespaces/default/deployments";
    let d = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
        "spec": {"replicas": 1}, "status": {"replicas": 9}});
    let (code, v) = s.post(deps, &d).await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    assert!(v.get("status").is_none(), "status is reset on create");

    let (_, v) = s
        .patch(
            &format!("{deps}/web/status"),
            "application/merge-patch+json",
            r#"{"status":{"readyReplicas":1},"spec":{"replicas":5}}"#,
        )
        .await;
    assert_eq!(v["status"], json!({"readyReplicas": 1}));
    assert_eq!(v["spec"]["replicas"], 1, "status writes leave spec alone");
    assert_eq!(v["metadata"]["generation"], 1);

    let (_, v) = s
        .patch(
            &format!("{deps}/web"),
            "application/merge-patch+json",
            r#"{"status":{"readyReplicas":7},"spec":{"replicas":3}}"#,
        )
        .await;
    assert_eq!(
        v["status"],
        json!({"readyReplicas": 1}),
        "spec writes leave status alone"
    );
    assert_eq!(v["spec"]["replicas"], 3);
    assert_eq!(v["metadata"]["generation"], 2);

    let mut put = v.clone();
    put["status"] = json!({"readyReplicas": 3});
    let (code, v) = s.put(&format!("{deps}/web/status"), &put).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(v["status"]["readyReplicas"], 3);
    let (code, _) = s.get(&format!("{CMS}/x/status")).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "configmaps have no status");

    let pods = "/api/v1/namespaces/default/pods";
    let (_, p) = s
        .post(
            pods,
            &json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}}),
        )
        .await;
    assert_eq!(p["status"]["phase"], "Pending");
    assert_eq!(p["kind"], "Pod");
}

#[tokio::test]
async fn delete_and_finalizers() {
    let s = start().await;
    s.post(CMS, &cm("plain", json!({}))).await;
    let (code, v) = s.delete(&format!("{CMS}/plain")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(
        (v["kind"].as_str(), v["status"].as_str()),
        (Some("Status"), Some("Success"))
    );
    let (code, _) = s.delete(&format!("{CMS}/plain")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);

    let mut f = cm("held", json!({}));
    f["metadata"]["finalizers"] = json!(["example.com/hold"]);
    s.post(CMS, &f).await;
    let (code, v) = s.delete(&format!("{CMS}/held")).await;
    assert_eq!(code, StatusCode::OK);
    assert!(v["metadata"]["deletionTimestamp"].is_string(), "{v}");
    let (code, _) = s.get(&format!("{CMS}/held")).await;
    assert_eq!(code, StatusCode::OK, "kept while finalizers remain");
    let (code, _) = s
        .patch(
            &format!("{CMS}/held"),
            "application/merge-patch+json",
            r#"{"metadata":{"finalizers":null}}"#,
        )
        .await;
    assert_eq!(code, StatusCode::OK);
    let (code, _) = s.get(&format!("{CMS}/held")).await;
    assert_eq!(code, StatusCode::NOT_FOUND, "gone with its last finalizer");

    // Preconditions, propagationPolicy, dryRun.
    let (_, c) = s.post(CMS, &cm("pre", json!({}))).await;
    let (code, _) = s
        .call(
            Method::DELETE,
            &format!("{CMS}/pre"),
            "application/json",
            json!({"preconditions": {"uid": "other"}}).to_string(),
        )
        .await;
    assert_eq!(code, StatusCode::CONFLICT);
    let (code, _) = s
        .delete(&format!("{CMS}/pre?propagationPolicy=Sideways"))
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (code, _) = s
        .delete(&format!(
            "{CMS}/pre?dryRun=All&propagationPolicy=Foreground"
        ))
        .await;
    assert_eq!(code, StatusCode::OK);
    let (code, _) = s.get(&format!("{CMS}/pre")).await;
    assert_eq!(code, StatusCode::OK, "dry run kept it");
    let (code, _) = s
        .call(Method::DELETE, &format!("{CMS}/pre"), "application/json",
            json!({"preconditions": {"uid": c["metadata"]["uid"]}, "propagationPolicy": "Background"}).to_string())
        .await;
    assert_eq!(code, StatusCode::OK);
}

#[tokio::test]
async fn dry_run_create_writes_nothing() {
    let s = start().await;
    let (code, v) = s
        .post(&format!("{CMS}?dryRun=All"), &cm("dry", json!({})))
        .await;
    assert_eq!(code, StatusCode::CREATED);
    assert_eq!(v["metadata"]["name"], "dry");
    let (code, _) = s.get(&format!("{CMS}/dry")).await;
    assert_eq!(code, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn deleting_a_namespace_removes_its_objects() {
    let s = start().await;
    s.post("/api/v1/namespaces", &json!({"metadata": {"name": "team"}}))
        .await;
    let team = "/api/v1/namespaces/team/configmaps";
    s.post(team, &cm("a", json!({}))).await;
    let mut held = cm("held", json!({}));
    held["metadata"]["finalizers"] = json!(["x/y"]);
    s.post(team, &held).await;
    s.post(CMS, &cm("survivor", json!({}))).await;

    let (code, v) = s.delete("/api/v1/namespaces/team").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(v["status"]["phase"], "Terminating", "{v}");
    let (code, v) = s.post(team, &cm("late", json!({}))).await;
    assert_eq!(
        (code, v["reason"].as_str()),
        (StatusCode::FORBIDDEN, Some("Forbidden"))
    );
    let (_, v) = s.get(team).await;
    assert_eq!(names(&v), vec!["held"]);

    s.patch(
        &format!("{team}/held"),
        "application/merge-patch+json",
        r#"{"metadata":{"finalizers":[]}}"#,
    )
    .await;
    let (code, _) = s.get("/api/v1/namespaces/team").await;
    assert_eq!(
        code,
        StatusCode::NOT_FOUND,
        "namespace goes with its last object"
    );
    let (code, _) = s.get(&format!("{CMS}/survivor")).await;
    assert_eq!(code, StatusCode::OK);
}

#[tokio::test]
async fn delete_collection() {
    let s = start().await;
    for (n, tier) in [("a", "web"), ("b", "web"), ("c", "db")] {
        s.post(CMS, &cm(n, json!({"tier": tier}))).await;
    }
    let (code, v) = s.delete(&format!("{CMS}?labelSelector=tier%3Dweb")).await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(names(&v), vec!["a", "b"]);
    let (_, v) = s.get(CMS).await;
    assert_eq!(names(&v), vec!["c"]);
}

#[tokio::test]
async fn secrets_default_type_and_merge_string_data() {
    let s = start().await;
    let (_, v) = s
        .post(
            "/api/v1/namespaces/default/secrets",
            &json!({"metadata": {"name": "s"}, "stringData": {"user": "admin"}}),
        )
        .await;
    assert_eq!(v["type"], "Opaque");
    assert_eq!(v["data"]["user"], "YWRtaW4=");
    assert!(v.get("stringData").is_none());
}

#[tokio::test]
async fn cluster_scoped_and_other_groups() {
    let s = start().await;
    let (code, v) = s
        .post("/api/v1/nodes", &json!({"metadata": {"name": "edge-1", "labels": {"node-role.kubernetes.io/edge": ""}}, "status": {"phase": "Running"}}))
        .await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    assert!(v["metadata"].get("namespace").is_none());
    assert_eq!(
        v["status"]["phase"], "Running",
        "nodes keep status on create"
    );
    let (_, v) = s
        .get("/api/v1/nodes?labelSelector=node-role.kubernetes.io%2Fedge")
        .await;
    assert_eq!(names(&v), vec!["edge-1"]);
    let (code, _) = s
        .post(
            "/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases",
            &json!({"metadata": {"name": "edge-1"}, "spec": {"holderIdentity": "edge-1"}}),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED);
    let (code, v) = s.get("/apis/coordination.k8s.io/v1/leases").await;
    assert_eq!(code, StatusCode::OK);
    assert_eq!(v["kind"], "LeaseList");
    assert_eq!(v["apiVersion"], "coordination.k8s.io/v1");
    let (code, _) = s
        .post(
            "/apis/batch/v1/namespaces/default/jobs",
            &json!({"metadata": {"name": "j"}, "spec": {"template": {"spec": {
                "restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}}),
        )
        .await;
    assert_eq!(code, StatusCode::CREATED);
    // The server generates the Job's selector from its uid and labels the template to match.
    let (_, job) = s.get("/apis/batch/v1/namespaces/default/jobs/j").await;
    let uid = job["metadata"]["uid"].as_str().unwrap();
    assert_eq!(
        job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
        uid
    );
    assert_eq!(
        job["spec"]["template"]["metadata"]["labels"]["job-name"],
        "j"
    );
    let (code, v) = s
        .post(
            "/apis/batch/v1/namespaces/default/jobs",
            &json!({"metadata": {"name": "always"}, "spec": {"template": {"spec": {
                "containers": [{"name": "c", "image": "busybox"}]}}}}),
        )
        .await;
    assert_eq!(code, StatusCode::UNPROCESSABLE_ENTITY, "{v}");
    assert_eq!(
        v["details"]["causes"][0]["field"],
        "spec.template.spec.restartPolicy"
    );
    let (code, _) = s
        .post(
            "/api/v1/namespaces/default/services",
            &json!({"metadata": {"name": "1svc"}}),
        )
        .await;
    assert_eq!(
        code,
        StatusCode::UNPROCESSABLE_ENTITY,
        "service names are DNS-1035"
    );
}

/// Replaces a random subtree of `v` by a value of a random other type.
fn mutate(v: &mut Value, rng: &mut fastrand::Rng) {
    let garbage = |rng: &mut fastrand::Rng| match rng.u8(0..7) {
        0 => Value::Null,
        1 => json!(rng.bool()),
        2 => json!(rng.i64(..)),
        3 => json!(-1.5e300),
        4 => json!("\u{0}<&>\u{fffd}".repeat(rng.usize(0..4))),
        5 => json!([1, "two", {"three": [null]}]),
        _ => json!({"$patch": "delete", "": {}}),
    };
    match v {
        Value::Object(m) if !m.is_empty() && rng.u8(0..4) != 0 => {
            let i = rng.usize(0..m.len());
            let child = m.values_mut().nth(i).unwrap();
            mutate(child, rng);
        }
        Value::Array(a) if !a.is_empty() && rng.u8(0..4) != 0 => {
            let i = rng.usize(0..a.len());
            mutate(&mut a[i], rng);
        }
        _ => *v = garbage(rng),
    }
}

/// Garbage manifests of every shape — wrong types anywhere, hostile strings, directives where
/// they do not belong, absurd nesting — get a Status error or are stored; the server never
/// answers 500 and keeps serving.
#[tokio::test]
async fn garbage_never_crashes_the_server() {
    let s = start().await;
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "labels": {"a": "b"}},
        "spec": {"containers": [{"name": "c", "image": "i", "ports": [{"containerPort": 80}],
            "env": [{"name": "E", "valueFrom": {"configMapKeyRef": {"name": "x", "key": "y"}}}]}],
            "tolerations": [{"key": "k"}]}});
    let deploy = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": pod["spec"].clone()}}});
    let targets = [
        ("/api/v1/namespaces/default/pods", &pod),
        ("/apis/apps/v1/namespaces/default/deployments", &deploy),
    ];
    let mut seed = pod.clone();
    seed["metadata"]["name"] = json!("seed");
    let (code, v) = s.post(targets[0].0, &seed).await;
    assert_eq!(code, StatusCode::CREATED, "{v}");
    let mut rng = fastrand::Rng::with_seed(7);
    let mut outcomes = std::collections::BTreeMap::<u16, usize>::new();
    for round in 0..300 {
        let (url, base) = targets[round % targets.len()];
        let mut body = base.clone();
        for _ in 0..rng.usize(1..4) {
            mutate(&mut body, &mut rng);
        }
        if let Some(m) = body.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("name".into(), json!(format!("g{round}")));
        }
        let (code, v) = s
            .call(Method::POST, url, "application/json", body.to_string())
            .await;
        assert!(code.as_u16() < 500, "{code} for {body}: {v}");
        if !code.is_success() {
            assert_eq!(v["kind"], "Status", "{v}");
        }
        *outcomes.entry(code.as_u16()).or_default() += 1;
        // The same garbage as every kind of patch on an existing object.
        if let Some(m) = body.get_mut("metadata").and_then(Value::as_object_mut) {
            m.insert("name".into(), json!("seed"));
        }
        let seed_url = format!("{}/seed?fieldManager=fuzz", targets[0].0);
        for ct in [
            "application/merge-patch+json",
            "application/strategic-merge-patch+json",
            "application/json-patch+json",
            "application/apply-patch+yaml",
        ] {
            let (code, v) = s.call(Method::PATCH, &seed_url, ct, body.to_string()).await;
            assert!(code.as_u16() < 500, "{code} for {ct} {body}: {v}");
            *outcomes.entry(code.as_u16()).or_default() += 1;
        }
    }
    // Both accepted and refused inputs were exercised.
    assert!(
        outcomes.keys().any(|c| *c < 300) && outcomes.keys().any(|c| *c >= 400),
        "{outcomes:?}"
    );
    let deep = format!("{}{}", "{\"a\":".repeat(100_000), "}".repeat(100_000));
    let (code, _) = s
        .call(Method::POST, targets[0].0, "application/json", deep)
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (code, _) = s.get("/api/v1/namespaces/default/pods").await;
    assert_eq!(code, StatusCode::OK);
}
