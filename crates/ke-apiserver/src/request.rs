//! URL → route, following kube-apiserver's `RequestInfoFactory`: `/api/v1/…` and
//! `/apis/<group>/<version>/…`, an optional legacy `watch/` segment, `namespaces/<ns>/` scoping,
//! then `<resource>[/<name>[/<subresource>]]`.

use crate::registry::{Catalog, Resource};

#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    Version,
    Health,
    /// `/api`
    CoreVersions,
    /// `/apis`
    GroupList,
    /// `/api/v1` or `/apis/<group>/<version>`
    ResourceList {
        group: String,
        version: String,
    },
    /// `/apis/<group>`
    Group(String),
    Resource(ResourceRoute),
    /// `/openapi/v3`
    OpenApiIndex,
    /// `/openapi/v3/<key>`, key `api/v1` or `apis/<group>/<version>`
    OpenApi(String),
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResourceRoute {
    pub res: Resource,
    /// Namespace from the URL; `None` = cluster-scoped, or all namespaces for a collection.
    pub namespace: Option<String>,
    pub name: Option<String>,
    pub subresource: Option<String>,
    /// The deprecated `/watch/` path form.
    pub watch_path: bool,
}

/// Why a path names nothing we serve (always a 404).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoRoute;

pub fn parse(path: &str, catalog: &Catalog) -> Result<Route, NoRoute> {
    let segs: Vec<&str> = path.trim_end_matches('/').split('/').skip(1).collect();
    match segs.as_slice() {
        ["version"] => Ok(Route::Version),
        ["healthz" | "livez" | "readyz", ..] => Ok(Route::Health),
        ["api"] => Ok(Route::CoreVersions),
        ["openapi", "v3"] => Ok(Route::OpenApiIndex),
        ["openapi", "v3", key @ ..] => Ok(Route::OpenApi(key.join("/"))),
        ["apis"] => Ok(Route::GroupList),
        ["api", "v1"] => Ok(Route::ResourceList {
            group: String::new(),
            version: "v1".into(),
        }),
        ["api", "v1", rest @ ..] => resource(catalog, "", "v1", rest),
        ["apis", group] if catalog.groups().iter().any(|(g, _)| g == group) => {
            Ok(Route::Group((*group).to_owned()))
        }
        ["apis", group, version] if catalog.resources_of(group, version).next().is_some() => {
            Ok(Route::ResourceList {
                group: (*group).to_owned(),
                version: (*version).to_owned(),
            })
        }
        ["apis", group, version, rest @ ..] => resource(catalog, group, version, rest),
        _ => Err(NoRoute),
    }
}

/// Subresources of pods besides `status`: `binding` is the scheduler's, the others are streams
/// that the node's agent answers (see [`crate::PodStreams`]).
pub const POD_SUBRESOURCES: &[&str] = &["binding", "log", "exec", "attach", "portforward"];

fn resource(
    catalog: &Catalog,
    group: &str,
    version: &str,
    rest: &[&str],
) -> Result<Route, NoRoute> {
    let (watch_path, mut rest) = match rest {
        ["watch", tail @ ..] => (true, tail),
        _ => (false, rest),
    };
    let mut namespace = None;
    // `namespaces/<ns>/status` and `/finalize` are subresources of the namespace itself.
    if let ["namespaces", ns, next, tail @ ..] = rest
        && !matches!(*next, "status" | "finalize")
    {
        namespace = Some((*ns).to_owned());
        rest = &rest[2..];
        let _ = tail;
    }
    let (plural, name, sub) = match rest {
        [plural] => (*plural, None, None),
        [plural, name] => (*plural, Some(*name), None),
        [plural, name, sub] => (*plural, Some(*name), Some(*sub)),
        _ => return Err(NoRoute),
    };
    let res = catalog.lookup(group, version, plural).ok_or(NoRoute)?;
    if namespace.is_some() && !res.namespaced {
        return Err(NoRoute);
    }
    if let Some(sub) = sub
        && !(sub == "status" && res.status_subresource
            || sub == "scale" && res.scale_subresource
            || res.is("", "pods") && POD_SUBRESOURCES.contains(&sub))
    {
        return Err(NoRoute);
    }
    if name.is_some_and(str::is_empty) {
        return Err(NoRoute);
    }
    Ok(Route::Resource(ResourceRoute {
        res,
        namespace,
        name: name.map(str::to_owned),
        subresource: sub.map(str::to_owned),
        watch_path,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(path: &str) -> Result<Route, NoRoute> {
        super::parse(path, &Catalog::builtin())
    }

    fn rr(path: &str) -> ResourceRoute {
        match parse(path).unwrap() {
            Route::Resource(r) => r,
            other => panic!("{path}: {other:?}"),
        }
    }

    #[test]
    fn paths() {
        assert_eq!(parse("/api").unwrap(), Route::CoreVersions);
        assert_eq!(parse("/apis/").unwrap(), Route::GroupList);
        assert_eq!(parse("/apis/apps").unwrap(), Route::Group("apps".into()));
        assert!(parse("/apis/nope").is_err());
        assert!(parse("/apis/apps/v2").is_err());
        let r = rr("/api/v1/namespaces/ns1/configmaps/cm1");
        assert_eq!(r.res.plural, "configmaps");
        assert_eq!(r.namespace.as_deref(), Some("ns1"));
        assert_eq!(r.name.as_deref(), Some("cm1"));
        let r = rr("/api/v1/namespaces/ns1");
        assert_eq!(
            (r.res.plural.as_str(), r.name.as_deref()),
            ("namespaces", Some("ns1"))
        );
        let r = rr("/api/v1/namespaces/ns1/status");
        assert_eq!(r.subresource.as_deref(), Some("status"));
        assert_eq!(r.namespace, None);
        let r = rr("/api/v1/pods");
        assert_eq!((r.namespace.clone(), r.name.clone()), (None, None));
        let r = rr("/apis/apps/v1/watch/namespaces/a/deployments");
        assert!(r.watch_path);
        let r = rr("/apis/apps/v1/namespaces/a/deployments/d/status");
        assert_eq!(r.subresource.as_deref(), Some("status"));
        assert!(parse("/api/v1/namespaces/a/configmaps/c/status").is_err());
        assert!(parse("/api/v1/namespaces/a/nodes").is_err());
        assert!(parse("/api/v1/widgets").is_err());
        assert!(parse("/api/v1/namespaces/a/configmaps/c/d/e").is_err());
        assert!(parse("/").is_err());
    }
}
