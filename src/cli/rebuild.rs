//! `talos-pve rebuild node NAME` / `rebuild cluster --from BACKUP`: the shell around
//! `rebuild` — profile, cluster directory, lab or real hosts, the plan of
//! destructive steps and the confirmation (`--yes`; never silently without a terminal).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::args::{Global, LabArgs, Output, ProfileArgs};
use super::common::{close_lab, hosts, open_lab};
use super::preflight::{PveArgs, runtime};
use super::up::confirm;
use crate::addons::ManifestSource;
use crate::progress::{ProgressMode, Reporter};
use crate::rebuild::{self, Ctx, cluster, node, render_steps};

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub what: What,
}

#[derive(Debug, clap::Subcommand)]
pub enum What {
    /// Rebuild one lost or broken node: remove its stale etcd member, recreate its VM
    /// with the same VMID, MACs and addresses (or reset it), boot it with its config
    /// from the existing secrets on its cidata volume, and wait until it rejoins.
    Node {
        /// The node (as named in the profile).
        name: String,
        #[command(flatten)]
        common: Common,
    },
    /// All control planes lost: recreate the VMs, boot them with configs from the
    /// same secrets (cidata volumes), recover etcd from a backup on the endpoint node, let the others join.
    Cluster {
        /// A backup directory written by `talos-pve backup`, or an etcd snapshot file.
        #[arg(long, value_name = "BACKUP")]
        from: PathBuf,
        /// Accept a raw etcd `db` copy (no hash trailer); it may be inconsistent.
        #[arg(long)]
        skip_hash_check: bool,
        /// Decrypt the backup's encrypted secrets bundle with this age identity file
        /// to check it is the cluster directory's.
        #[arg(long, value_name = "FILE")]
        age_identity: Option<PathBuf>,
        #[command(flatten)]
        common: Common,
    },
}

#[derive(Debug, clap::Args)]
pub struct Common {
    #[command(flatten)]
    pub profile: ProfileArgs,
    #[command(flatten)]
    pub lab: LabArgs,
    #[command(flatten)]
    pub pve: PveArgs,
    /// Do not ask for confirmation (required without a terminal).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Rebuild even though the probe finds it healthy (and, for `cluster`, wipe a
    /// still-running etcd).
    #[arg(long)]
    pub force: bool,
    /// Progress display: bars on a terminal, plain timestamped lines otherwise.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,
}

pub fn run(g: &Global, a: Args) -> anyhow::Result<ExitCode> {
    let c = match &a.what {
        What::Node { common, .. } | What::Cluster { common, .. } => common,
    };
    let lab = c.lab.options()?;
    let profile = super::common::load_profile(&c.profile.profile)?;
    let (plan, dir) = super::common::plan_and_dir(&profile, c.profile.dir.as_deref())?;
    crate::dir_lock::hold(&dir)?;
    eprintln!("cluster directory: {}", dir.root.display());
    runtime()?.block_on(async {
        let dc = open_lab(&dir, &profile, lab.as_ref()).await?;
        let result = async {
            let env = hosts(
                dc.as_ref(),
                lab.as_ref(),
                &profile,
                &c.profile.profile,
                &c.pve,
                ManifestSource::from_arg(None),
            )?;
            let rep = Reporter::select(g.output == Output::Json, c.progress, g.verbose > 0);
            let ctx = Ctx {
                env: &env,
                profile: &profile,
                plan: &plan,
                dir: &dir,
                rep: &rep,
            };
            converge(&ctx, &a.what).await
        }
        .await;
        close_lab(dc, &c.lab)?;
        let done = result?;
        match g.output {
            Output::Json => println!("{}", serde_json::json!({"event": "rebuilt", "what": done})),
            Output::Text => {
                println!("{done}");
                if lab.is_some() {
                    print!(
                        "{}",
                        crate::up::LabHints::new(&c.profile.profile, &dir).render()
                    );
                }
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

async fn converge(ctx: &Ctx<'_>, what: &What) -> anyhow::Result<String> {
    match what {
        What::Node { name, common } => rebuild_node(ctx, name, common).await,
        What::Cluster {
            from,
            skip_hash_check,
            age_identity,
            common,
        } => rebuild_cluster(ctx, from, *skip_hash_check, age_identity.as_deref(), common).await,
    }
}

async fn rebuild_node(ctx: &Ctx<'_>, name: &str, c: &Common) -> anyhow::Result<String> {
    let (creds, state) = rebuild::prepare(ctx)?;
    let job = node::assess(ctx, &creds, name, c.force).await?;
    eprint!(
        "{}",
        render_steps(&format!("Rebuild plan for node {name}:"), &job.steps)
    );
    confirm(c.yes, &format!("Rebuild node {name}?"))?;
    node::run(ctx, &creds, &state, &job).await?;
    Ok(format!(
        "node {name} rebuilt: VM {} on {}, etcd and Kubernetes healthy",
        job.node.vmid, job.node.host
    ))
}

async fn rebuild_cluster(
    ctx: &Ctx<'_>,
    from: &Path,
    skip_hash_check: bool,
    identity: Option<&Path>,
    c: &Common,
) -> anyhow::Result<String> {
    // The backup is checked offline first: nothing is rendered from a bundle that
    // does not match it.
    let src = cluster::load_source(from, skip_hash_check)?;
    cluster::check_backup(ctx.dir, &ctx.plan.cluster, &src, from, identity)?;
    for w in &src.warnings {
        eprintln!("warning: {w}");
    }
    let (creds, state) = rebuild::prepare(ctx)?;
    let job = cluster::assess(ctx, &creds, &src, c.force).await?;
    let cluster = &ctx.plan.cluster;
    eprint!(
        "{}",
        render_steps(&format!("Rebuild plan for cluster {cluster}:"), &job.steps)
    );
    confirm(
        c.yes,
        &format!("Rebuild cluster {cluster} from {}?", src.origin),
    )?;
    cluster::run(ctx, &creds, &state, &src, &job).await?;
    Ok(format!(
        "cluster {cluster} rebuilt from {}; the existing talosconfig and kubeconfig in {} still work",
        src.origin,
        ctx.dir.root.display()
    ))
}
