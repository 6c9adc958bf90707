//! LIST (selectors, paging) and WATCH (streaming, selectors, bookmarks, 410 after compaction).

mod apisupport;

use std::time::Duration;

use apisupport::{cm, names, start, start_with};
use axum::body::Body;
use axum::http::{Method, StatusCode};
use http_body_util::BodyExt as _;
use ke_apiserver::ServerConfig;
use ke_apiserver::storage::Storage as _;
use serde_json::{Value, json};

const CMS: &str = "/api/v1/namespaces/default/configmaps";

#[tokio::test]
async fn list_with_selectors() {
    let s = start().await;
    for (n, labels) in [
        ("a", json!({"app": "web", "tier": "front"})),
        ("b", json!({"app": "web", "tier": "back"})),
        ("c", json!({"app": "db"})),
        ("d", json!({})),
    ] {
        s.post(CMS, &cm(n, labels)).await;
    }
    s.post(
        "/api/v1/namespaces/kube-system/configmaps",
        &cm("e", json!({"app": "web"})),
    )
    .await;
    let q = |sel: &str| {
        format!(
            "{CMS}?labelSelector={}",
            sel.replace(' ', "%20").replace('=', "%3D")
        )
    };
    let cases = [
        ("app=web", vec!["a", "b"]),
        ("app==web", vec!["a", "b"]),
        ("app!=web", vec!["c", "d"]),
        ("app in (db,web),tier", vec!["a", "b"]),
        ("app notin (web)", vec!["c", "d"]),
        ("tier", vec!["a", "b"]),
        ("!tier", vec!["c", "d"]),
    ];
    for (sel, want) in cases {
        let (code, v) = s.get(&q(sel)).await;
        assert_eq!(code, StatusCode::OK, "{sel}: {v}");
        assert_eq!(names(&v), want, "{sel}");
    }
    let (_, v) = s.get("/api/v1/configmaps?labelSelector=app%3Dweb").await;
    assert_eq!(names(&v), vec!["a", "b", "e"], "all namespaces");
    assert_eq!(v["kind"], "ConfigMapList");
    assert!(
        v["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse::<u64>()
            .is_ok()
    );

    let (_, v) = s
        .get(&format!("{CMS}?fieldSelector=metadata.name%3Db"))
        .await;
    assert_eq!(names(&v), vec!["b"]);
    let (_, v) = s
        .get("/api/v1/configmaps?fieldSelector=metadata.namespace!%3Ddefault")
        .await;
    assert_eq!(names(&v), vec!["e"]);
    let (code, v) = s
        .get(&format!("{CMS}?fieldSelector=spec.nodeName%3Dx"))
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("field label not supported")
    );
    let (code, _) = s.get(&format!("{CMS}?labelSelector=a%20b")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn pod_field_selectors() {
    let s = start().await;
    let pods = "/api/v1/namespaces/default/pods";
    for (n, node) in [("p1", "n1"), ("p2", "n2")] {
        s.post(
            pods,
            &json!({"metadata": {"name": n}, "spec": {"nodeName": node}}),
        )
        .await;
    }
    s.patch(
        &format!("{pods}/p2/status"),
        "application/merge-patch+json",
        r#"{"status":{"phase":"Running"}}"#,
    )
    .await;
    let (_, v) = s.get("/api/v1/pods?fieldSelector=spec.nodeName%3Dn1").await;
    assert_eq!(names(&v), vec!["p1"]);
    let (_, v) = s
        .get("/api/v1/pods?fieldSelector=status.phase%3DRunning,spec.nodeName%3Dn2")
        .await;
    assert_eq!(names(&v), vec!["p2"]);
}

#[tokio::test]
async fn paging_with_limit_and_continue() {
    let s = start().await;
    for i in 0..7 {
        let labels = if i % 2 == 0 {
            json!({"even": "y"})
        } else {
            json!({})
        };
        s.post(CMS, &cm(&format!("c{i}"), labels)).await;
    }
    let mut seen = Vec::new();
    let mut url = format!("{CMS}?limit=3");
    let mut pages = 0;
    loop {
        let (code, v) = s.get(&url).await;
        assert_eq!(code, StatusCode::OK, "{v}");
        assert!(v["items"].as_array().unwrap().len() <= 3);
        seen.extend(names(&v));
        pages += 1;
        match v["metadata"]["continue"].as_str() {
            Some(tok) => url = format!("{CMS}?limit=3&continue={tok}"),
            None => break,
        }
    }
    assert_eq!(seen, (0..7).map(|i| format!("c{i}")).collect::<Vec<_>>());
    assert_eq!(pages, 3);

    // Selectors fill pages from further reads.
    let (_, v) = s.get(&format!("{CMS}?limit=2&labelSelector=even")).await;
    assert_eq!(names(&v), vec!["c0", "c2"]);
    let tok = v["metadata"]["continue"].as_str().unwrap().to_owned();
    let (_, v) = s
        .get(&format!("{CMS}?limit=2&labelSelector=even&continue={tok}"))
        .await;
    assert_eq!(names(&v), vec!["c4", "c6"]);

    let (code, _) = s.get(&format!("{CMS}?limit=2&continue=garbage")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (code, _) = s.get(&format!("{CMS}?limit=x")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
}

/// Reads newline-delimited watch events until `n` arrived or `wait` passed.
async fn read_events(body: &mut Body, n: usize, wait: Duration) -> Vec<Value> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + wait;
    while out.len() < n {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(f))) => f,
            _ => break,
        };
        if let Ok(data) = frame.into_data() {
            buf.extend_from_slice(&data);
        }
        while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = buf.drain(..=pos).collect();
            out.push(serde_json::from_slice(&line).unwrap());
        }
    }
    out
}

fn kinds(events: &[Value]) -> Vec<(String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e["type"].as_str().unwrap().to_owned(),
                e["object"]["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn watch_from_now_and_from_a_revision() {
    let s = start().await;
    let (_, a) = s.post(CMS, &cm("a", json!({}))).await;
    let rv_a = a["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();

    let resp = s
        .raw(
            Method::GET,
            &format!("{CMS}?watch=true"),
            "application/json",
            Body::empty(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let ev = read_events(&mut body, 1, Duration::from_secs(5)).await;
    assert_eq!(kinds(&ev), vec![("ADDED".into(), "a".into())]);

    s.post(CMS, &cm("b", json!({}))).await;
    s.patch(
        &format!("{CMS}/a"),
        "application/merge-patch+json",
        r#"{"data":{"k":"2"}}"#,
    )
    .await;
    s.delete(&format!("{CMS}/b")).await;
    let ev = read_events(&mut body, 3, Duration::from_secs(5)).await;
    assert_eq!(
        kinds(&ev),
        vec![
            ("ADDED".into(), "b".into()),
            ("MODIFIED".into(), "a".into()),
            ("DELETED".into(), "b".into())
        ]
    );
    assert_eq!(ev[1]["object"]["data"]["k"], "2");
    let rvs: Vec<u64> = ev
        .iter()
        .map(|e| {
            e["object"]["metadata"]["resourceVersion"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(rvs.windows(2).all(|w| w[0] < w[1]), "{rvs:?}");

    // Resuming from a's creation replays everything after it, with no initial ADDED of a.
    let resp = s
        .raw(
            Method::GET,
            &format!("/api/v1/watch/namespaces/default/configmaps?resourceVersion={rv_a}"),
            "",
            Body::empty(),
        )
        .await;
    let mut body = resp.into_body();
    let ev = read_events(&mut body, 3, Duration::from_secs(5)).await;
    assert_eq!(kinds(&ev)[0], ("ADDED".into(), "b".into()));
    assert_eq!(ev.len(), 3);
}

#[tokio::test]
async fn watch_with_selectors_reports_objects_leaving_the_selection() {
    let s = start().await;
    s.post(CMS, &cm("a", json!({"app": "web"}))).await;
    s.post(CMS, &cm("other", json!({}))).await;
    let resp = s
        .raw(
            Method::GET,
            &format!("{CMS}?watch=1&labelSelector=app%3Dweb"),
            "",
            Body::empty(),
        )
        .await;
    let mut body = resp.into_body();
    let ev = read_events(&mut body, 1, Duration::from_secs(5)).await;
    assert_eq!(kinds(&ev), vec![("ADDED".into(), "a".into())]);
    s.patch(
        &format!("{CMS}/other"),
        "application/merge-patch+json",
        r#"{"data":{"x":"1"}}"#,
    )
    .await;
    s.patch(
        &format!("{CMS}/a"),
        "application/merge-patch+json",
        r#"{"metadata":{"labels":{"app":"db"}}}"#,
    )
    .await;
    let ev = read_events(&mut body, 1, Duration::from_secs(5)).await;
    assert_eq!(kinds(&ev), vec![("DELETED".into(), "a".into())]);
}

#[tokio::test]
async fn watch_timeout_and_bookmarks() {
    let s = start_with(ServerConfig {
        bookmark_interval: Duration::from_millis(200),
        ..ServerConfig::default()
    })
    .await;
    let (_, list) = s.get(CMS).await;
    let rv = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_owned();
    let resp = s
        .raw(
            Method::GET,
            &format!(
                "{CMS}?watch=true&resourceVersion={rv}&allowWatchBookmarks=true&timeoutSeconds=1"
            ),
            "",
            Body::empty(),
        )
        .await;
    let mut body = resp.into_body();
    let started = std::time::Instant::now();
    let ev = read_events(&mut body, 100, Duration::from_secs(5)).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "timeoutSeconds ends the watch"
    );
    assert!(!ev.is_empty());
    for e in &ev {
        assert_eq!(e["type"], "BOOKMARK");
        assert_eq!(e["object"]["kind"], "ConfigMap");
        assert_eq!(e["object"]["metadata"]["resourceVersion"], rv.as_str());
    }

    // sendInitialEvents ends the initial burst with an annotated bookmark.
    s.post(CMS, &cm("a", json!({}))).await;
    let resp = s
        .raw(Method::GET, &format!("{CMS}?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true&timeoutSeconds=1"), "", Body::empty())
        .await;
    let mut body = resp.into_body();
    let ev = read_events(&mut body, 2, Duration::from_secs(5)).await;
    assert_eq!(ev[0]["type"], "ADDED");
    assert_eq!(ev[1]["type"], "BOOKMARK");
    assert_eq!(
        ev[1]["object"]["metadata"]["annotations"]["k8s.io/initial-events-end"],
        "true"
    );
}

#[tokio::test]
async fn watch_from_a_compacted_revision_is_410() {
    let s = start().await;
    for i in 0..3 {
        s.post(CMS, &cm(&format!("c{i}"), json!({}))).await;
    }
    let rev = s.server.storage().current_revision().await.unwrap();
    s.server.storage().compact(rev).await.unwrap();
    let resp = s
        .raw(
            Method::GET,
            &format!("{CMS}?watch=true&resourceVersion=1"),
            "",
            Body::empty(),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let ev = read_events(&mut body, 1, Duration::from_secs(5)).await;
    assert_eq!(ev[0]["type"], "ERROR");
    assert_eq!(ev[0]["object"]["code"], 410);
    assert_eq!(ev[0]["object"]["kind"], "Status");
    let (code, _) = s
        .get(&format!("{CMS}?watch=true&resourceVersion=abc"))
        .await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn list_resource_version_semantics() {
    let s = start().await;
    s.post(CMS, &cm("a", json!({}))).await;
    let (_, list) = s.get(CMS).await;
    let rv: u64 = list["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let q = |rv: u64, m: &str| format!("{CMS}?resourceVersion={rv}&resourceVersionMatch={m}");
    assert_eq!(s.get(&q(rv, "Exact")).await.0, StatusCode::OK);
    assert_eq!(s.get(&q(rv - 1, "NotOlderThan")).await.0, StatusCode::OK);
    let (code, v) = s.get(&format!("{CMS}?resourceVersion=0")).await;
    assert_eq!(
        (code, v["items"].as_array().unwrap().len()),
        (StatusCode::OK, 1)
    );
    s.post(CMS, &cm("b", json!({}))).await;
    // An older exact snapshot is not kept.
    let (code, v) = s.get(&q(rv, "Exact")).await;
    assert_eq!(
        (code, v["reason"].as_str()),
        (StatusCode::GONE, Some("Expired"))
    );
    let (code, v) = s.get(&q(rv + 100, "NotOlderThan")).await;
    assert_eq!(
        (code.as_u16(), v["reason"].as_str()),
        (504, Some("Timeout"))
    );
    let (code, _) = s.get(&q(rv, "Sometime")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
    let (code, _) = s.get(&format!("{CMS}?resourceVersionMatch=Exact")).await;
    assert_eq!(code, StatusCode::BAD_REQUEST);
}
