//! A container's environment: literal `env`, `valueFrom` (ConfigMap and Secret keys, pod and
//! resource fields) and `envFrom`.

use ke_message::constants::resource_type;

use crate::downward::{self, PodFacts};
use crate::model::{Container, Pod};
use crate::objects::Objects;

/// Why a container cannot be configured yet (kubelet's `CreateContainerConfigError`).
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

/// The environment of `container` in `pod`, in kubelet's order: `envFrom` first, then `env`
/// (later entries win).
pub async fn resolve(
    objects: &mut Objects<'_>,
    pod: &Pod,
    container: &Container,
    facts: &PodFacts,
) -> Result<Vec<(String, String)>, ConfigError> {
    let mut env: Vec<(String, String)> = Vec::new();
    fn set(env: &mut Vec<(String, String)>, name: String, value: String) {
        env.retain(|(n, _)| *n != name);
        env.push((name, value));
    }
    let namespace = pod.namespace();
    for from in &container.env_from {
        let (kind, reference) = match (&from.config_map_ref, &from.secret_ref) {
            (Some(reference), _) => (resource_type::CONFIGMAP, reference),
            (None, Some(reference)) => (resource_type::SECRET, reference),
            (None, None) => continue,
        };
        match objects
            .data(kind, &reference.name)
            .await
            .map_err(ConfigError)?
        {
            Some(data) => {
                for (key, value) in data {
                    let value = String::from_utf8_lossy(value).into_owned();
                    set(&mut env, format!("{}{key}", from.prefix), value);
                }
            }
            None if reference.optional => {}
            None => {
                return Err(ConfigError(format!(
                    "{kind} {namespace}/{} not found",
                    reference.name
                )));
            }
        }
    }
    for var in &container.env {
        let Some(from) = &var.value_from else {
            let value = expand(&var.value, &env);
            set(&mut env, var.name.clone(), value);
            continue;
        };
        let value = if let Some(field) = &from.field_ref {
            downward::field(pod, &field.field_path, facts)
        } else if let Some(reference) = &from.resource_field_ref {
            downward::resource(pod, &container.name, reference, facts)
        } else {
            let (kind, reference) = match (&from.config_map_key_ref, &from.secret_key_ref) {
                (Some(reference), _) => (resource_type::CONFIGMAP, reference),
                (None, Some(reference)) => (resource_type::SECRET, reference),
                (None, None) => continue,
            };
            let found = objects
                .data(kind, &reference.name)
                .await
                .map_err(ConfigError)?
                .and_then(|data| data.get(&reference.key))
                .map(|value| String::from_utf8_lossy(value).into_owned());
            if found.is_none() && !reference.optional {
                return Err(ConfigError(format!(
                    "couldn't find key {} in {kind} {namespace}/{}",
                    reference.key, reference.name
                )));
            }
            found
        };
        if let Some(value) = value {
            set(&mut env, var.name.clone(), value);
        }
    }
    Ok(env)
}

/// kubelet's `$(VAR)` expansion (env values, command, args): a defined variable's value
/// replaces `$(VAR)`, `$$` is a literal `$`, anything else stays as written.
pub fn expand(input: &str, env: &[(String, String)]) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
            continue;
        }
        if let Some((name, tail)) = after.strip_prefix('(').and_then(|r| r.split_once(')')) {
            match env.iter().rev().find(|(n, _)| n == name) {
                Some((_, value)) => out.push_str(value),
                None => {
                    out.push_str("$(");
                    out.push_str(name);
                    out.push(')');
                }
            }
            rest = tail;
            continue;
        }
        out.push('$');
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_expand_as_kubelet_expands_them() {
        let env = vec![
            ("POD_IP".to_owned(), "10.88.0.4".to_owned()),
            ("PORT".to_owned(), "8080".to_owned()),
        ];
        assert_eq!(
            expand("--addr=$(POD_IP):$(PORT)", &env),
            "--addr=10.88.0.4:8080"
        );
        assert_eq!(expand("$(MISSING) stays", &env), "$(MISSING) stays");
        assert_eq!(
            expand("$$(POD_IP) is escaped", &env),
            "$(POD_IP) is escaped"
        );
        assert_eq!(expand("cost: 5$ and $(", &env), "cost: 5$ and $(");
        assert_eq!(expand("plain", &env), "plain");
    }
}
