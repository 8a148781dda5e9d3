//! MetalLB in L2 mode: the upstream native manifest of a pinned release (checked
//! against its SHA-256), applied in dependency order, then the profile's address
//! pool and an L2Advertisement bound to the workload link, retried while MetalLB's
//! admission webhook is not serving yet.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::{Value, json};

use super::{AddonError, Links, ManifestSource, Options, apply_all, wait_ready};
use crate::jsonschema;
use crate::kube::{Client, Discovery, KubeError, daemonset_ready, deployment_ready};
use crate::net::AddressBook;
use crate::plan::Plan;
use crate::profile::MetalLb;

pub const NAMESPACE: &str = "metallb-system";
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
const WEBHOOK_SERVICE: &str = "metallb-webhook-service";

#[derive(Debug, Deserialize)]
pub struct Pins {
    pub versions: BTreeMap<String, Pin>,
}

#[derive(Debug, Deserialize)]
pub struct Pin {
    pub url: String,
    pub file: String,
    pub sha256: String,
}

/// The pins built into talos-pve (`embedded/metallb.yaml`).
pub fn pins() -> &'static Pins {
    static P: OnceLock<Pins> = OnceLock::new();
    P.get_or_init(|| {
        serde_saphyr::from_str(include_str!("../../embedded/metallb.yaml"))
            .expect("embedded/metallb.yaml is valid (unit-tested)")
    })
}

pub fn pin(version: &str) -> Result<&'static Pin, AddonError> {
    let p = pins();
    p.versions
        .get(version.trim_start_matches('v'))
        .ok_or_else(|| AddonError::MetalLbVersion {
            version: version.into(),
            supported: p.versions.keys().cloned().collect::<Vec<_>>().join(", "),
        })
}

/// The upstream manifest copy shipped in the binary (see `embedded/metallb/NOTICE`).
fn embedded_copy(file: &str) -> Option<&'static [u8]> {
    match file {
        "metallb-native-v0.16.1.yaml" => Some(include_bytes!(
            "../../embedded/metallb/metallb-native-v0.16.1.yaml"
        )),
        _ => None,
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, bytes).as_ref())
}

pub fn verify(origin: &str, bytes: &[u8], pin: &Pin) -> Result<(), AddonError> {
    let got = sha256_hex(bytes);
    if got != pin.sha256 {
        return Err(AddonError::Checksum {
            origin: origin.into(),
            got,
            want: pin.sha256.clone(),
        });
    }
    Ok(())
}

async fn fetch(url: &str, book: &AddressBook) -> Result<Vec<u8>, AddonError> {
    let err = |what: String| AddonError::Manifest {
        origin: url.into(),
        what,
    };
    if book.is_lab() {
        return Err(err(
            "the lab never reaches the internet; use `--manifests embedded` or a directory".into(),
        ));
    }
    let parsed = reqwest::Url::parse(url).map_err(|e| err(e.to_string()))?;
    let host = parsed.host_str().unwrap_or_default().to_owned();
    let port = parsed.port_or_known_default().unwrap_or(443);
    let target = tokio::net::lookup_host((host.as_str(), port))
        .await
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| err(format!("cannot resolve {host}\n  fix: check DNS, or use `--manifests DIR` with the file downloaded elsewhere")))?;
    let dial = book.resolve(target).map_err(|e| err(e.to_string()))?;
    crate::tls::install_provider();
    let http = reqwest::Client::builder()
        .resolve(&host, dial)
        .build()
        .map_err(|e| err(e.to_string()))?;
    let resp = http.get(url).send().await.map_err(|e| {
        err(format!(
            "{e}\n  fix: check internet access, or use `--manifests DIR`"
        ))
    })?;
    if !resp.status().is_success() {
        return Err(err(format!("HTTP {}", resp.status())));
    }
    Ok(resp.bytes().await.map_err(|e| err(e.to_string()))?.to_vec())
}

/// The manifest bytes for `version` from `source`, verified against the pin.
pub async fn manifest(
    version: &str,
    source: &ManifestSource,
    book: &AddressBook,
) -> Result<Vec<u8>, AddonError> {
    let pin = pin(version)?;
    let (origin, bytes) = match source {
        ManifestSource::Fetch => (pin.url.clone(), fetch(&pin.url, book).await?),
        ManifestSource::Embedded => {
            let b = embedded_copy(&pin.file).ok_or_else(|| AddonError::Manifest {
                origin: "embedded".into(),
                what: format!(
                    "no copy of {} is built in\n  fix: use `--manifests DIR`",
                    pin.file
                ),
            })?;
            ("embedded".into(), b.to_vec())
        }
        ManifestSource::Dir(dir) => {
            let p = dir.join(&pin.file);
            let b = std::fs::read(&p).map_err(|e| AddonError::Manifest {
                origin: p.display().to_string(),
                what: format!("{e}\n  fix: download {} into {}", pin.url, dir.display()),
            })?;
            (p.display().to_string(), b)
        }
    };
    verify(&origin, &bytes, pin)?;
    Ok(bytes)
}

/// The manifest's objects (empty documents dropped).
pub fn parse(bytes: &[u8]) -> Result<Vec<Value>, AddonError> {
    let text = std::str::from_utf8(bytes).map_err(|_| AddonError::Manifest {
        origin: "manifest".into(),
        what: "not UTF-8".into(),
    })?;
    let docs: Vec<Value> =
        serde_saphyr::from_str_multiple(text).map_err(|e| AddonError::Manifest {
            origin: "manifest".into(),
            what: e.to_string(),
        })?;
    Ok(docs.into_iter().filter(|d| d.is_object()).collect())
}

/// The `openAPIV3Schema` of `crd`'s served `version` among `objs`.
pub fn crd_schema<'a>(objs: &'a [Value], crd: &str, version: &str) -> Option<&'a Value> {
    let c = objs
        .iter()
        .find(|o| o["kind"] == "CustomResourceDefinition" && o["metadata"]["name"] == crd)?;
    c["spec"]["versions"]
        .as_array()?
        .iter()
        .find(|v| v["name"] == version)
        .map(|v| &v["schema"]["openAPIV3Schema"])
}

/// The profile's address pool and its L2 advertisement on the configured link.
pub fn resources(m: &MetalLb, links: &Links) -> [Value; 2] {
    let meta = json!({"name": m.pool_name, "namespace": NAMESPACE});
    [
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "IPAddressPool", "metadata": meta,
            "spec": {"addresses": [m.pool.to_string()]}}),
        json!({"apiVersion": "metallb.io/v1beta1", "kind": "L2Advertisement", "metadata": meta,
            "spec": {"ipAddressPools": [m.pool_name], "interfaces": [links.name(m.interface)]}}),
    ]
}

/// Every custom resource checked against its CRD schema from the manifest.
pub fn check_resources(objs: &[Value], crs: &[Value]) -> Result<(), AddonError> {
    for cr in crs {
        let kind = cr["kind"].as_str().unwrap_or_default();
        let crd = format!("{}s.metallb.io", kind.to_lowercase());
        let name = cr["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let Some(s) = crd_schema(objs, &crd, "v1beta1") else {
            return Err(AddonError::Schema {
                kind: kind.into(),
                name,
                issues: format!("the manifest has no CRD {crd}"),
            });
        };
        let issues = jsonschema::validate(s, cr);
        if !issues.is_empty() {
            let issues = issues
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; ");
            return Err(AddonError::Schema {
                kind: kind.into(),
                name,
                issues,
            });
        }
    }
    Ok(())
}

fn webhook_ready(slices: &[Value]) -> Result<(), String> {
    let ready = slices
        .iter()
        .flat_map(|s| s["endpoints"].as_array().into_iter().flatten())
        .any(|e| e["conditions"]["ready"] == true);
    if ready {
        Ok(())
    } else {
        Err(format!(
            "{} EndpointSlice(s), no ready endpoint",
            slices.len()
        ))
    }
}

/// Apply the manifest, wait for the controller and its webhook, make sure no node is
/// excluded from announcing, then apply the pool and advertisement. Returns how many
/// manifest objects were applied and which nodes lost the exclude label.
/// The release manifests, applied; its workloads roll out once the CNI runs.
pub struct Applied {
    objects: usize,
    crs: [Value; 2],
}

/// Everything in order: manifests, workloads ready, webhook serving, pool applied.
pub async fn install(
    client: &Client,
    plan: &Plan,
    m: &MetalLb,
    opts: &Options,
) -> Result<(usize, Vec<String>), AddonError> {
    let applied = apply(client, m, opts).await?;
    finish(client, plan, applied, opts).await
}

/// Apply the release manifests (safe before the CNI is ready: the pods wait for it).
pub async fn apply(client: &Client, m: &MetalLb, opts: &Options) -> Result<Applied, AddonError> {
    let bytes = manifest(&m.version, &opts.manifests, &opts.addresses).await?;
    let objs = parse(&bytes)?;
    let crs = resources(m, &opts.links);
    check_resources(&objs, &crs)?;
    let objects = apply_all(client, objs, &opts.poll).await?;
    Ok(Applied { objects, crs })
}

/// Wait for the workloads and the webhook, then apply the pool and its advertisement.
pub async fn finish(
    client: &Client,
    plan: &Plan,
    applied: Applied,
    opts: &Options,
) -> Result<(usize, Vec<String>), AddonError> {
    let Applied { objects, crs } = applied;
    let poll = &opts.poll;
    let ready = async {
        let ctrl = format!("/apis/apps/v1/namespaces/{NAMESPACE}/deployments/controller");
        wait_ready(
            client,
            "the MetalLB controller Deployment",
            &ctrl,
            deployment_ready,
            poll,
        )
        .await?;
        let speaker = format!("/apis/apps/v1/namespaces/{NAMESPACE}/daemonsets/speaker");
        wait_ready(
            client,
            "the MetalLB speaker DaemonSet",
            &speaker,
            daemonset_ready,
            poll,
        )
        .await?;
        let slices = format!(
            "/apis/discovery.k8s.io/v1/namespaces/{NAMESPACE}/endpointslices?labelSelector=kubernetes.io%2Fservice-name%3D{WEBHOOK_SERVICE}"
        );
        poll.watch(
            client,
            &slices,
            "the MetalLB webhook service to have a ready endpoint",
            |items| async move { Ok::<_, KubeError>(webhook_ready(&items)) },
        )
        .await
        .map_err(AddonError::from)
    };
    // Neither needs the webhook: done while the workloads come up.
    let meanwhile = async {
        let unlabelled = remove_exclude_labels(client, plan).await?;
        Ok::<_, AddonError>((unlabelled, Discovery::run(client).await?))
    };
    let ((), (unlabelled, disc)) = tokio::try_join!(ready, meanwhile)?;
    for cr in &crs {
        let res = disc.for_object(cr)?;
        opts.webhook_retry
            .until(&format!("MetalLB's webhook to accept {}", cr["kind"]), || async {
                match client.apply(res, cr).await {
                    Ok(_) => Ok(Ok(())),
                    Err(e) if e.code() == Some(500) && e.message().is_some_and(|m| m.contains("failed calling webhook")) => {
                        tracing::debug!(error = %e, "MetalLB webhook not serving yet; retrying");
                        Ok(Err(e.to_string()))
                    }
                    Err(e) => Err(e),
                }
            })
            .await?;
    }
    Ok((objects, unlabelled))
}

/// Speakers skip nodes carrying the exclude label, and every node here may be a
/// control plane: talos-pve never sets it, so remove it where someone did.
async fn remove_exclude_labels(client: &Client, plan: &Plan) -> Result<Vec<String>, AddonError> {
    let labelled = client
        .list(&format!(
            "/api/v1/nodes?labelSelector={}",
            crate::kube::segment(EXCLUDE_LABEL)
        ))
        .await?;
    let mut removed = Vec::new();
    for n in &plan.nodes {
        if !labelled
            .iter()
            .any(|o| o["metadata"]["name"] == n.name.as_str())
        {
            continue;
        }
        tracing::warn!(node = %n.name, label = EXCLUDE_LABEL, "MetalLB would not announce from this node; removing the label");
        client
            .merge_patch(
                &format!("/api/v1/nodes/{}", n.name),
                &json!({"metadata": {"labels": {EXCLUDE_LABEL: null}}}),
            )
            .await?;
        removed.push(n.name.clone());
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_manifest_matches_its_pin_and_tampering_is_caught() {
        let p = pin("0.16.1").unwrap();
        let bytes = embedded_copy(&p.file).unwrap();
        verify("embedded", bytes, p).unwrap();
        let mut bad = bytes.to_vec();
        bad.push(b'\n');
        assert!(matches!(
            verify("x", &bad, p),
            Err(AddonError::Checksum { .. })
        ));
        assert!(pin("0.13.0").unwrap_err().to_string().contains("0.16.1"));
    }

    #[tokio::test]
    async fn offline_directory_is_verified_and_the_lab_never_fetches() {
        let p = pin("0.16.1").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let src = ManifestSource::from_arg(Some(dir.path().to_str().unwrap()));
        let lab = AddressBook::lab();
        let e = manifest("0.16.1", &src, &lab)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&p.url),
            "a missing file names where to get it: {e}"
        );
        let file = dir.path().join(&p.file);
        std::fs::write(&file, embedded_copy(&p.file).unwrap()).unwrap();
        assert_eq!(
            sha256_hex(&manifest("0.16.1", &src, &lab).await.unwrap()),
            p.sha256
        );
        std::fs::write(&file, b"kind: Namespace\n").unwrap();
        assert!(matches!(
            manifest("0.16.1", &src, &lab).await,
            Err(AddonError::Checksum { .. })
        ));
        let e = manifest("0.16.1", &ManifestSource::from_arg(None), &lab)
            .await
            .unwrap_err();
        assert!(e.to_string().contains("never reaches the internet"), "{e}");
        assert_eq!(
            ManifestSource::from_arg(Some("embedded")),
            ManifestSource::Embedded
        );
    }

    #[test]
    fn manifest_parses_and_profile_resources_satisfy_the_crds() {
        let objs = parse(embedded_copy("metallb-native-v0.16.1.yaml").unwrap()).unwrap();
        assert_eq!(objs.len(), 26);
        let ns = &objs[0];
        assert_eq!(
            ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
            "privileged"
        );
        let m = MetalLb {
            version: "0.16.1".into(),
            pool_name: "default".into(),
            pool: "10.8.31.10-10.8.31.200".parse().unwrap(),
            interface: crate::profile::LinkRole::Workload,
        };
        let links = Links {
            management: "eth0".into(),
            workload: "eth1".into(),
        };
        let crs = resources(&m, &links);
        assert_eq!(crs[1]["spec"]["interfaces"], json!(["eth1"]));
        check_resources(&objs, &crs).unwrap();
        let mut bad = crs.clone();
        bad[1]["spec"]["interface"] = json!("eth1");
        assert!(
            check_resources(&objs, &bad)
                .unwrap_err()
                .to_string()
                .contains("spec.interface")
        );
    }
}
