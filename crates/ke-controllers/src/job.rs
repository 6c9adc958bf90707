//! Jobs (NonIndexed): run pods until `completions` of them succeed, at most `parallelism` at a
//! time; more than `backoffLimit` failures (or `activeDeadlineSeconds` passed) fail the Job.
//! The status carries `startTime`, `completionTime`, counts and the `Complete` / `Failed`
//! conditions that `kubectl wait --for=condition=complete` reads. A `suspend`ed Job runs
//! nothing.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::chrono::Utc;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};

use crate::common::{controller_ref, is_ready, now, phase};
use crate::replicaset::owned_pods;
use crate::{Error, RESYNC};

struct Ctx {
    client: Client,
}

pub async fn run(client: Client) {
    let jobs: Api<Job> = Api::all(client.clone());
    let pods: Api<Pod> = Api::all(client.clone());
    // Only Job pods: the API server labels every Job's template with its controller uid.
    let job_pods = watcher::Config::default().labels("batch.kubernetes.io/controller-uid");
    Controller::new(jobs, watcher::Config::default())
        .owns(pods, job_pods)
        .run(reconcile, crate::retry_later, Arc::new(Ctx { client }))
        .for_each(|_| async {})
        .await;
}

fn condition(job: &Job, type_: &str) -> bool {
    job.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|c| c.type_ == type_ && c.status == "True")
}

async fn reconcile(job: Arc<Job>, ctx: Arc<Ctx>) -> Result<Action, Error> {
    if job.metadata.deletion_timestamp.is_some()
        || condition(&job, "Complete")
        || condition(&job, "Failed")
    {
        return Ok(Action::await_change());
    }
    let client = &ctx.client;
    let ns = job.namespace().unwrap_or_default();
    let spec = job.spec.clone().unwrap_or_default();
    let completions = spec.completions.unwrap_or(1).max(0);
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let pods = owned_pods(client, job.as_ref(), spec.selector.as_ref()).await?;
    let succeeded = pods.iter().filter(|p| phase(p) == "Succeeded").count() as i32;
    let failed = pods.iter().filter(|p| phase(p) == "Failed").count() as i32;
    let active: Vec<&Pod> = pods
        .iter()
        .filter(|p| {
            !matches!(phase(p), "Succeeded" | "Failed") && p.metadata.deletion_timestamp.is_none()
        })
        .collect();
    let start = job
        .status
        .as_ref()
        .and_then(|s| s.start_time.clone())
        .unwrap_or_else(now);
    let past_deadline = spec
        .active_deadline_seconds
        .is_some_and(|d| (Utc::now() - start.0).num_seconds() >= d);

    let mut status = json!({
        "startTime": start,
        "active": active.len(),
        "ready": active.iter().filter(|p| is_ready(p)).count(),
        "succeeded": succeeded,
        "failed": failed,
        "terminating": pods.iter().filter(|p| p.metadata.deletion_timestamp.is_some()).count(),
    });
    let done = |type_: &str, reason: &str, message: &str| {
        json!([{
            "type": type_,
            "status": "True",
            "reason": reason,
            "message": message,
            "lastProbeTime": now(),
            "lastTransitionTime": now(),
        }])
    };
    if succeeded >= completions {
        for p in &active {
            delete(&pods_api, p).await?;
        }
        status["active"] = json!(0);
        status["completionTime"] = json!(now());
        let mut conds = done(
            "SuccessCriteriaMet",
            "CompletionsReached",
            "Reached expected number of succeeded pods",
        );
        if let (Value::Array(a), Value::Array(b)) = (
            &mut conds,
            done(
                "Complete",
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ),
        ) {
            a.extend(b);
        }
        status["conditions"] = conds;
    } else if failed > backoff_limit || past_deadline {
        for p in &active {
            delete(&pods_api, p).await?;
        }
        status["active"] = json!(0);
        let (reason, message) = if past_deadline {
            (
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            )
        } else {
            (
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            )
        };
        let mut conds = done("FailureTarget", reason, message);
        if let (Value::Array(a), Value::Array(b)) = (&mut conds, done("Failed", reason, message)) {
            a.extend(b);
        }
        status["conditions"] = conds;
    } else if spec.suspend != Some(true) {
        let remaining = completions - succeeded;
        let want_active = usize::try_from(parallelism.min(remaining)).unwrap_or(0);
        let template = spec.template.clone();
        for _ in active.len()..want_active {
            let mut meta = template.metadata.clone().unwrap_or_default();
            meta.name = None;
            meta.generate_name = Some(format!("{}-", job.name_any()));
            meta.namespace = Some(ns.clone());
            meta.owner_references = Some(vec![controller_ref(job.as_ref())]);
            let pod = Pod {
                metadata: meta,
                spec: template.spec.clone(),
                status: None,
            };
            pods_api.create(&PostParams::default(), &pod).await?;
        }
    }
    let current = serde_json::to_value(job.status.clone().unwrap_or_default()).unwrap_or_default();
    let changed = ["active", "ready", "succeeded", "failed", "terminating"]
        .iter()
        .any(|k| current.get(*k).unwrap_or(&json!(0)) != &status[*k])
        || current.get("startTime").is_none()
        || status.get("conditions").is_some();
    if changed {
        Api::<Job>::namespaced(client.clone(), &ns)
            .patch_status(
                &job.name_any(),
                &PatchParams::default(),
                &Patch::Merge(json!({ "status": status })),
            )
            .await?;
    }
    Ok(Action::requeue(
        spec.active_deadline_seconds.map_or(RESYNC, |d| {
            Duration::from_secs(u64::try_from(d).unwrap_or(1)).min(RESYNC)
        }),
    ))
}

async fn delete(api: &Api<Pod>, pod: &Pod) -> Result<(), Error> {
    match api
        .delete(&pod.name_any(), &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}
