//! CA and server certificate shared through the API server, as upstream keeps them: Secrets
//! `kubeedge/casecret` (`cadata`, `cakeydata`) and `kubeedge/cloudcoresecret`
//! (`cloudcoredata`, `cloudcorekeydata`), DER. Several cloudcore replicas then sign edge
//! certificates with one CA, and an edge can move between them.
//!
//! Before cloudhub starts, [`restore`] writes what the Secrets hold over the local files (the
//! Secrets win: they are what the other replicas use); after it started (having created any
//! missing material), [`publish`] creates the Secrets that do not exist yet.
//!
//! The join token goes where upstream's `keadm gettoken` reads it: `kubeedge/tokensecret`
//! (`tokendata`), rewritten by [`publish_join_tokens`] whenever cloudhub issues one.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use ke_cloudhub::CloudHubSettings;
use ke_pki::token::{SECRET_KEY as TOKEN_KEY, SECRET_NAME as TOKEN_SECRET, SECRET_NAMESPACE};
use ke_pki::{CertificateAuthority, EcKeyPair, ServerCert};
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;

pub const NAMESPACE: &str = SECRET_NAMESPACE;
const CA_SECRET: &str = "casecret";
const CERT_SECRET: &str = "cloudcoresecret";

pub async fn restore(client: &kube::Client, settings: &CloudHubSettings) -> anyhow::Result<()> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    if let Some(data) = get(&secrets, CA_SECRET).await? {
        let (cert, key) = pair(&data, "cadata", "cakeydata", CA_SECRET)?;
        let ca = CertificateAuthority::from_parts(cert, EcKeyPair::from_sec1_der(&key)?)
            .context("CA from secret kubeedge/casecret")?;
        ca.save(&settings.ca_cert_file, &settings.ca_key_file)?;
        tracing::info!("CA restored from secret {NAMESPACE}/{CA_SECRET}");
    }
    if let Some(data) = get(&secrets, CERT_SECRET).await? {
        let (cert, key) = pair(&data, "cloudcoredata", "cloudcorekeydata", CERT_SECRET)?;
        let server = ServerCert::from_parts(cert, EcKeyPair::from_sec1_der(&key)?)
            .context("server certificate from secret kubeedge/cloudcoresecret")?;
        // cloudhub reissues it if it does not cover this replica's addresses.
        server.save(&settings.cert_file, &settings.key_file)?;
        tracing::info!("server certificate restored from secret {NAMESPACE}/{CERT_SECRET}");
    }
    Ok(())
}

pub async fn publish(client: &kube::Client, settings: &CloudHubSettings) -> anyhow::Result<()> {
    ensure_namespace(client).await?;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), NAMESPACE);
    let ca = CertificateAuthority::load(&settings.ca_cert_file, &settings.ca_key_file)?;
    create_if_missing(
        &secrets,
        CA_SECRET,
        [("cadata", ca.ca_der()), ("cakeydata", ca.ca_key_der())],
    )
    .await?;
    let server = ServerCert::load(&settings.cert_file, &settings.key_file)?;
    create_if_missing(
        &secrets,
        CERT_SECRET,
        [
            ("cloudcoredata", server.cert_der()),
            ("cloudcorekeydata", server.key().sec1_der()),
        ],
    )
    .await
}

async fn ensure_namespace(client: &kube::Client) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = Namespace {
        metadata: ObjectMeta {
            name: Some(NAMESPACE.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match namespaces.create(&PostParams::default(), &namespace).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(err) => Err(err).context("create namespace kubeedge"),
    }
}

async fn get(
    secrets: &Api<Secret>,
    name: &str,
) -> anyhow::Result<Option<BTreeMap<String, ByteString>>> {
    Ok(secrets
        .get_opt(name)
        .await
        .with_context(|| format!("read secret {NAMESPACE}/{name}"))?
        .and_then(|s| s.data))
}

fn pair(
    data: &BTreeMap<String, ByteString>,
    cert: &str,
    key: &str,
    secret: &str,
) -> anyhow::Result<(Vec<u8>, Vec<u8>)> {
    let field = |k: &str| {
        data.get(k)
            .map(|b| b.0.clone())
            .with_context(|| format!("secret {NAMESPACE}/{secret} has no {k}"))
    };
    Ok((field(cert)?, field(key)?))
}

fn secret(name: &str, data: &[(&str, &[u8])]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            namespace: Some(NAMESPACE.into()),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec())))
                .collect(),
        ),
        type_: Some("Opaque".into()),
        ..Default::default()
    }
}

async fn create_if_missing<const N: usize>(
    secrets: &Api<Secret>,
    name: &str,
    data: [(&str, &[u8]); N],
) -> anyhow::Result<()> {
    match secrets
        .create(&PostParams::default(), &secret(name, &data))
        .await
    {
        Ok(_) => {
            tracing::info!("stored secret {NAMESPACE}/{name}");
            Ok(())
        }
        // Another replica was first; `restore` uses its copy on the next start.
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(()),
        Err(err) => Err(err).with_context(|| format!("create secret {NAMESPACE}/{name}")),
    }
}

/// Keeps `kubeedge/tokensecret` at cloudhub's current join token until cloudhub stops issuing
/// them. A failed write is retried every few seconds, or given up for a newer token.
pub async fn publish_join_tokens(client: kube::Client, mut tokens: watch::Receiver<String>) {
    let secrets: Api<Secret> = Api::namespaced(client, NAMESPACE);
    loop {
        let token = tokens.borrow_and_update().clone();
        if !token.is_empty() {
            while let Err(err) = put_token(&secrets, &token).await {
                tracing::warn!(error = %format!("{err:#}"), "cannot store the join token; retrying");
                tokio::time::sleep(Duration::from_secs(5)).await;
                if tokens.has_changed().unwrap_or(true) {
                    break;
                }
            }
        }
        if tokens.changed().await.is_err() {
            return;
        }
    }
}

async fn put_token(secrets: &Api<Secret>, token: &str) -> anyhow::Result<()> {
    let wanted = secret(TOKEN_SECRET, &[(TOKEN_KEY, token.as_bytes())]);
    let context = || format!("write secret {NAMESPACE}/{TOKEN_SECRET}");
    match secrets.get_opt(TOKEN_SECRET).await.with_context(context)? {
        None => {
            secrets
                .create(&PostParams::default(), &wanted)
                .await
                .with_context(context)?;
        }
        Some(current) => {
            let mut replacement = wanted;
            replacement.metadata.resource_version = current.metadata.resource_version;
            secrets
                .replace(TOKEN_SECRET, &PostParams::default(), &replacement)
                .await
                .with_context(context)?;
        }
    }
    tracing::info!("join token stored in secret {NAMESPACE}/{TOKEN_SECRET}");
    Ok(())
}
