//! What cloudcore keeps in the cluster, read through a kubeconfig the way upstream's keadm
//! does: the join token in the Secret `kubeedge/tokensecret` (`tokendata`).

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::Secret;
use ke_pki::token::{
    SECRET_KEY as TOKEN_KEY, SECRET_NAME as TOKEN_SECRET, SECRET_NAMESPACE as NAMESPACE,
};
use kube::api::Api;
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Reading the kubeconfig (exec plugins included) and one answer from the API server, or a
/// clear error instead of a hang.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

/// The join token cloudcore last stored, `None` while there is none yet.
pub fn join_token(kubeconfig: &Path) -> anyhow::Result<Option<String>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    runtime.block_on(async {
        tokio::time::timeout(REQUEST_TIMEOUT, read_token(kubeconfig))
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "no join token through {} within {REQUEST_TIMEOUT:?}",
                    kubeconfig.display()
                )
            })?
    })
}

async fn read_token(kubeconfig: &Path) -> anyhow::Result<Option<String>> {
    let config = Kubeconfig::read_from(kubeconfig)
        .with_context(|| format!("read kubeconfig {}", kubeconfig.display()))?;
    let config = kube::Config::from_custom_kubeconfig(config, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("kubeconfig {}", kubeconfig.display()))?;
    let server = config.cluster_url.to_string();
    let client = kube::Client::try_from(config).context("API server client")?;
    let secrets: Api<Secret> = Api::namespaced(client, NAMESPACE);
    let secret = secrets
        .get_opt(TOKEN_SECRET)
        .await
        .with_context(|| format!("read secret {NAMESPACE}/{TOKEN_SECRET} from {server}"))?;
    let token = secret
        .and_then(|s| s.data)
        .and_then(|mut data| data.remove(TOKEN_KEY))
        .map(|bytes| String::from_utf8_lossy(&bytes.0).trim().to_owned());
    Ok(token.filter(|t| !t.is_empty()))
}
