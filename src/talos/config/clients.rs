//! The operator's credentials: talosconfig (Talos API, admin cert `O=os:admin` from the
//! OS CA) and the admin kubeconfig (`O=system:masters, CN=admin`, ECDSA P-256, from the
//! Kubernetes CA), both valid for one year.
//!
//! Determinism: the admin certificates are random (serial, key), so `gen` reuses the
//! ones in existing files while they are issued by the bundle's CA and valid for at
//! least `REUSE_MARGIN` more; only then are the files byte-identical on re-run.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;
use time::OffsetDateTime;
use zeroize::Zeroizing;

use super::ConfigError;
use super::yaml::Yaml;
use crate::pki::cert::{self, CertAndKey};
use crate::pki::{KeyAlg, PrivateKey, SecretsBundle, Sensitive};
use crate::plan::Plan;

/// Re-issue an admin certificate when less than this is left.
pub const REUSE_MARGIN: time::Duration = time::Duration::days(30);
const TALOS_ADMIN_ORG: &str = "os:admin";
const KUBE_ADMIN_ORG: &str = "system:masters";
const KUBE_ADMIN_CN: &str = "admin";

/// An admin client certificate with its key.
pub type AdminCert = CertAndKey;

pub fn issue_talos_admin(s: &SecretsBundle, now: OffsetDateTime) -> Result<AdminCert, ConfigError> {
    let (ca, key) = s.os_ca()?;
    Ok(cert::new_client(
        &ca,
        &key,
        KeyAlg::Ed25519,
        &[TALOS_ADMIN_ORG],
        None,
        now,
    )?)
}

pub fn issue_kube_admin(s: &SecretsBundle, now: OffsetDateTime) -> Result<AdminCert, ConfigError> {
    let (ca, key) = s.k8s_ca()?;
    Ok(cert::new_client(
        &ca,
        &key,
        KeyAlg::EcdsaP256,
        &[KUBE_ADMIN_ORG],
        Some(KUBE_ADMIN_CN),
        now,
    )?)
}

fn b64(text: &str) -> String {
    STANDARD.encode(text.as_bytes())
}

/// The talosconfig: context = cluster name, endpoints = control-plane management
/// addresses, nodes = every node's management address.
pub fn talosconfig(
    plan: &Plan,
    s: &SecretsBundle,
    admin: &AdminCert,
) -> Result<Zeroizing<String>, ConfigError> {
    let (ca, _) = s.os_ca()?;
    let addrs = |it: &mut dyn Iterator<Item = &crate::plan::NodePlan>| {
        Yaml::seq(it.map(|n| Yaml::from(n.management.address.addr().to_string())))
    };
    let ctx = Yaml::map()
        .with("endpoints", addrs(&mut plan.control_planes()))
        .with("nodes", addrs(&mut plan.nodes.iter()))
        .with("ca", b64(&ca))
        .with("crt", b64(&admin.cert_pem))
        .with("key", b64(&admin.key.to_talos_pem()));
    let doc = Yaml::map()
        .with("context", &plan.cluster)
        .with("contexts", Yaml::map().with(&plan.cluster, ctx));
    Ok(Zeroizing::new(doc.to_document()))
}

fn kube_user(plan: &Plan) -> String {
    format!("admin@{}", plan.cluster)
}

/// The admin kubeconfig for the API endpoint.
pub fn kubeconfig(
    plan: &Plan,
    s: &SecretsBundle,
    admin: &AdminCert,
) -> Result<Zeroizing<String>, ConfigError> {
    let (ca, _) = s.k8s_ca()?;
    let user = kube_user(plan);
    let doc = Yaml::map()
        .with("apiVersion", "v1")
        .with("kind", "Config")
        .with(
            "clusters",
            Yaml::seq([Yaml::map().with("name", &plan.cluster).with(
                "cluster",
                Yaml::map()
                    .with("server", &plan.endpoint)
                    .with("certificate-authority-data", b64(&ca)),
            )]),
        )
        .with(
            "users",
            Yaml::seq([Yaml::map().with("name", &user).with(
                "user",
                Yaml::map()
                    .with("client-certificate-data", b64(&admin.cert_pem))
                    .with("client-key-data", b64(&admin.key.to_talos_pem())),
            )]),
        )
        .with(
            "contexts",
            Yaml::seq([Yaml::map()
                .with(
                    "context",
                    Yaml::map()
                        .with("cluster", &plan.cluster)
                        .with("namespace", "default")
                        .with("user", &user),
                )
                .with("name", &user)]),
        )
        .with("current-context", &user);
    Ok(Zeroizing::new(doc.to_document()))
}

#[derive(Deserialize)]
struct TalosConfigFile {
    context: String,
    contexts: BTreeMap<String, TalosContext>,
}

#[derive(Deserialize)]
struct TalosContext {
    #[serde(default)]
    crt: String,
    #[serde(default)]
    key: Sensitive,
}

#[derive(Deserialize)]
struct KubeConfigFile {
    #[serde(default)]
    users: Vec<KubeUser>,
}

#[derive(Deserialize)]
struct KubeUser {
    name: String,
    user: KubeUserData,
}

#[derive(Deserialize)]
struct KubeUserData {
    #[serde(default, rename = "client-certificate-data")]
    crt: String,
    #[serde(default, rename = "client-key-data")]
    key: Sensitive,
}

/// Decode base64 cert + key and accept them only if `ca` issued the cert to
/// `orgs`/`cn`, the key matches, and it stays valid for `REUSE_MARGIN`.
fn reusable(
    crt_b64: &str,
    key_b64: &Sensitive,
    ca_pem: &str,
    (orgs, cn): (&[&str], Option<&str>),
    now: OffsetDateTime,
) -> Option<AdminCert> {
    let cert_pem = String::from_utf8(STANDARD.decode(crt_b64).ok()?).ok()?;
    let key_pem = Zeroizing::new(String::from_utf8(STANDARD.decode(key_b64.expose()).ok()?).ok()?);
    let key = PrivateKey::from_pem(&key_pem, "admin key").ok()?;
    let info = cert::inspect(&cert_pem, "admin certificate").ok()?;
    let ca = cert::inspect(ca_pem, "CA").ok()?;
    let ok = info.signed_by(&ca)
        && info.client_auth
        && info.organizations == orgs
        && info.common_name.as_deref() == cn
        && info.valid_for(now, REUSE_MARGIN)
        && cert::key_matches(&info, &key);
    ok.then_some(CertAndKey { cert_pem, key })
}

/// The admin cert of an existing talosconfig, if it can be kept (see module doc).
pub fn reusable_talos_admin(
    existing: &str,
    s: &SecretsBundle,
    now: OffsetDateTime,
) -> Option<AdminCert> {
    let file: TalosConfigFile = serde_saphyr::from_str(existing).ok()?;
    let ctx = file.contexts.get(&file.context)?;
    let (ca, _) = s.os_ca().ok()?;
    reusable(&ctx.crt, &ctx.key, &ca, (&[TALOS_ADMIN_ORG], None), now)
}

/// The admin cert of an existing kubeconfig for `plan`'s cluster, if it can be kept.
pub fn reusable_kube_admin(
    existing: &str,
    plan: &Plan,
    s: &SecretsBundle,
    now: OffsetDateTime,
) -> Option<AdminCert> {
    let file: KubeConfigFile = serde_saphyr::from_str(existing).ok()?;
    let name = kube_user(plan);
    let u = file.users.iter().find(|u| u.name == name)?;
    let (ca, _) = s.k8s_ca().ok()?;
    reusable(
        &u.user.crt,
        &u.user.key,
        &ca,
        (&[KUBE_ADMIN_ORG], Some(KUBE_ADMIN_CN)),
        now,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admin_certs_are_reused_only_while_good() {
        let plan = Plan::build(&crate::test_support::homelab()).unwrap();
        let now = OffsetDateTime::now_utc();
        let s = SecretsBundle::generate(now).unwrap();
        let admin = issue_talos_admin(&s, now).unwrap();
        let tc = talosconfig(&plan, &s, &admin).unwrap();
        assert!(tc.starts_with("context: homelab\ncontexts:\n    homelab:\n        endpoints:\n            - 10.8.16.20\n"));
        let again = reusable_talos_admin(&tc, &s, now).expect("reused");
        assert_eq!(talosconfig(&plan, &s, &again).unwrap(), tc, "same bytes");
        // Close to expiry, or from another CA: re-issue.
        assert!(reusable_talos_admin(&tc, &s, now + time::Duration::days(340)).is_none());
        let kube = issue_kube_admin(&s, now).unwrap();
        let kc = kubeconfig(&plan, &s, &kube).unwrap();
        assert!(reusable_kube_admin(&kc, &plan, &s, now).is_some());
        // A kubeconfig cert is not a talosconfig cert (different CA and org).
        let swapped = talosconfig(&plan, &s, &kube).unwrap();
        assert!(reusable_talos_admin(&swapped, &s, now).is_none());
        assert!(reusable_talos_admin("not: [yaml", &s, now).is_none());
    }
}
