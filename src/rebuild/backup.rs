//! A self-contained backup: everything `rebuild cluster --from` needs, in one
//! directory — the validated etcd snapshot, the profile, the secrets bundle (plain,
//! or encrypted to an age recipient), talosconfig, kubeconfig — and a manifest with
//! each file's size and SHA-256 plus the versions involved.
//!
//! Written atomically: built in a hidden temporary directory beside the target and
//! renamed into place, so a backup directory either is complete or does not exist.
//! Every file is 0600, the directory 0700. `verify` checks a backup offline.

use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use ring::digest::{SHA256, digest};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::files::{SECRET_MODE, write_new};
use crate::pki::SecretsBundle;
use crate::talos::api::snapshot::{SnapshotError, validate_snapshot};

pub const MANIFEST: &str = "manifest.json";
pub const SNAPSHOT: &str = "etcd.snapshot";
pub const PROFILE: &str = "profile.yaml";
pub const SECRETS: &str = "secrets.yaml";
pub const SECRETS_AGE: &str = "secrets.yaml.age";
pub const TALOSCONFIG: &str = "talosconfig";
pub const KUBECONFIG: &str = "kubeconfig";
/// Every name a backup's manifest may list: the format defines these files and no
/// others, so an entry can never name a path (`../x`, `/etc/x`, `a/b`).
const ENTRIES: &[&str] = &[
    SNAPSHOT,
    PROFILE,
    SECRETS,
    SECRETS_AGE,
    TALOSCONFIG,
    KUBECONFIG,
];
/// etcd's largest supported backend (`--quota-backend-bytes` 8 GiB): a bigger
/// snapshot is not one, and is never read into memory.
const MAX_SNAPSHOT: u64 = 8 << 30;
/// Profile, bundle and configs are a few KiB.
const MAX_SMALL_FILE: u64 = 1 << 20;
/// The first line of every (binary) age file.
const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";
const FORMAT: u32 = 1;

#[derive(Debug, Error)]
pub enum BackupError {
    #[error("{path}: {cause}\n  fix: check that the path exists and is readable/writable")]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("backup {dir}: {detail}\n  fix: {fix}")]
    Invalid {
        dir: PathBuf,
        detail: String,
        fix: &'static str,
    },
    #[error(
        "backup {dir}: {file}: {cause}\n  fix: use another backup; this snapshot cannot restore etcd"
    )]
    Snapshot {
        dir: PathBuf,
        file: String,
        cause: SnapshotError,
    },
    #[error(
        "--age-recipient `{0}` is not an age X25519 recipient (age1…)\n  fix: pass the public key printed by `age-keygen`"
    )]
    Recipient(String),
    #[error(
        "{path}: {detail}\n  fix: pass the age identity file (AGE-SECRET-KEY-1… lines) that matches the backup's recipient"
    )]
    Identity { path: PathBuf, detail: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    pub name: String,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format: u32,
    pub cluster: String,
    /// UTC, RFC 3339.
    pub taken_at: String,
    /// The control plane the snapshot came from.
    pub node: String,
    pub talos_pve_version: String,
    pub talos_version: String,
    pub kubernetes_version: String,
    /// The age recipient the secrets bundle is encrypted to, when it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub age_recipient: Option<String>,
    pub files: Vec<FileEntry>,
}

impl Manifest {
    pub fn secrets_file(&self) -> &'static str {
        if self.age_recipient.is_some() {
            SECRETS_AGE
        } else {
            SECRETS
        }
    }
}

/// What goes into a backup (already read; the snapshot already validated).
pub struct Contents<'a> {
    pub cluster: &'a str,
    pub node: &'a str,
    pub talos_version: &'a str,
    pub kubernetes_version: &'a str,
    pub snapshot: &'a [u8],
    pub profile: &'a [u8],
    pub secrets: &'a [u8],
    pub talosconfig: &'a [u8],
    pub kubeconfig: &'a [u8],
    /// Encrypt the secrets bundle to this age recipient.
    pub age_recipient: Option<&'a str>,
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BackupError + '_ {
    move |source| BackupError::Io {
        path: path.to_owned(),
        cause: source,
    }
}

fn sha256(b: &[u8]) -> String {
    hex::encode(digest(&SHA256, b))
}

/// Write `<out>/<cluster>-<UTC timestamp>/`; returns its path and manifest.
pub fn write(out: &Path, c: &Contents<'_>) -> Result<(PathBuf, Manifest), BackupError> {
    validate_snapshot(c.snapshot).map_err(|source| BackupError::Snapshot {
        dir: out.to_owned(),
        file: SNAPSHOT.into(),
        cause: source,
    })?;
    let secrets: Zeroizing<Vec<u8>> = match c.age_recipient {
        Some(r) => Zeroizing::new(encrypt(r, c.secrets)?),
        None => Zeroizing::new(c.secrets.to_vec()),
    };
    let now = time::OffsetDateTime::now_utc();
    let stamp = now
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .unwrap_or_default();
    let name = format!("{}-{stamp}", c.cluster);
    let dir = out.join(&name);
    let tmp = out.join(format!(".{name}.partial-{}", std::process::id()));
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true).mode(0o700).create(out).map_err(io(out))?;
    b.recursive(false).create(&tmp).map_err(io(&tmp))?;
    let manifest = Manifest {
        format: FORMAT,
        cluster: c.cluster.to_owned(),
        taken_at: now
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        node: c.node.to_owned(),
        talos_pve_version: env!("CARGO_PKG_VERSION").to_owned(),
        talos_version: c.talos_version.to_owned(),
        kubernetes_version: c.kubernetes_version.to_owned(),
        age_recipient: c.age_recipient.map(str::to_owned),
        files: Vec::new(),
    };
    let secrets_name = manifest.secrets_file();
    let r = fill(
        &tmp,
        manifest,
        &[
            (SNAPSHOT, c.snapshot),
            (PROFILE, c.profile),
            (secrets_name, &secrets),
            (TALOSCONFIG, c.talosconfig),
            (KUBECONFIG, c.kubeconfig),
        ],
    )
    .and_then(|m| {
        // rename(2) onto an existing non-empty directory fails: never mixes two backups.
        if dir.exists() {
            return Err(BackupError::Invalid {
                dir: dir.clone(),
                detail: "a backup with this name (same second) already exists".into(),
                fix: "run the backup again",
            });
        }
        std::fs::rename(&tmp, &dir).map_err(io(&dir))?;
        Ok(m)
    });
    match r {
        Ok(m) => Ok((dir, m)),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

fn fill(tmp: &Path, mut m: Manifest, files: &[(&str, &[u8])]) -> Result<Manifest, BackupError> {
    for (name, bytes) in files {
        let p = tmp.join(name);
        write_new(&p, bytes, SECRET_MODE).map_err(io(&p))?;
        m.files.push(FileEntry {
            name: (*name).to_owned(),
            bytes: bytes.len() as u64,
            sha256: sha256(bytes),
        });
    }
    let p = tmp.join(MANIFEST);
    let json = serde_json::to_vec_pretty(&m).expect("manifest serializes");
    write_new(&p, &json, SECRET_MODE).map_err(io(&p))?;
    Ok(m)
}

/// What `verify` found.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    pub manifest: Manifest,
    /// The secrets bundle was decrypted and validated (plain bundles always are).
    pub secrets_checked: bool,
}

/// Check a backup without touching any cluster: the manifest, every file's size and
/// hash, the snapshot's trailer, and the secrets bundle (parsed and validated, or
/// for an encrypted one a well-formed age file — decrypted and validated as well
/// when `identity` is given).
pub fn verify(dir: &Path, identity: Option<&Path>) -> Result<Verified, BackupError> {
    verify_with_snapshot(dir, identity).map(|(v, _)| v)
}

/// `verify`, keeping the snapshot it read (each file is read once).
fn verify_with_snapshot(
    dir: &Path,
    identity: Option<&Path>,
) -> Result<(Verified, Vec<u8>), BackupError> {
    let invalid = |detail: String, fix: &'static str| BackupError::Invalid {
        dir: dir.to_owned(),
        detail,
        fix,
    };
    let manifest: Manifest =
        serde_json::from_slice(&open_bounded(dir, MANIFEST, None)?).map_err(|e| {
            invalid(
                format!("{MANIFEST} is unreadable: {e}"),
                "the backup is damaged; use another one",
            )
        })?;
    if manifest.format != FORMAT {
        return Err(invalid(
            format!("format {} is not {FORMAT}", manifest.format),
            "use the talos-pve version that wrote it",
        ));
    }
    for (i, f) in manifest.files.iter().enumerate() {
        if !ENTRIES.contains(&f.name.as_str()) {
            return Err(invalid(
                format!(
                    "{MANIFEST} entry `{}` is not a file of a backup (one of {})",
                    f.name.escape_debug(),
                    ENTRIES.join(", ")
                ),
                "the manifest was altered; use a backup written by `talos-pve backup`",
            ));
        }
        if manifest.files[..i].iter().any(|g| g.name == f.name) {
            return Err(invalid(
                format!("{MANIFEST} lists {} twice", f.name),
                "the manifest was altered; use a backup written by `talos-pve backup`",
            ));
        }
    }
    for want in [
        SNAPSHOT,
        PROFILE,
        manifest.secrets_file(),
        TALOSCONFIG,
        KUBECONFIG,
    ] {
        if !manifest.files.iter().any(|f| f.name == want) {
            return Err(invalid(
                format!("{MANIFEST} does not list {want}"),
                "the backup is incomplete; use another one",
            ));
        }
    }
    let mut snapshot = Vec::new();
    for f in &manifest.files {
        let bytes = read(dir, &manifest, &f.name)?;
        if sha256(&bytes) != f.sha256 {
            return Err(invalid(
                format!(
                    "{} is {} bytes with SHA-256 {}, the manifest says {} bytes, {}",
                    f.name,
                    bytes.len(),
                    sha256(&bytes),
                    f.bytes,
                    f.sha256
                ),
                "the file was changed or damaged after the backup; use another backup",
            ));
        }
        if f.name == SNAPSHOT {
            snapshot = bytes;
        }
    }
    validate_snapshot(&snapshot).map_err(|source| BackupError::Snapshot {
        dir: dir.to_owned(),
        file: SNAPSHOT.into(),
        cause: source,
    })?;
    let secrets = read(dir, &manifest, manifest.secrets_file())?;
    let secrets_checked = match (&manifest.age_recipient, identity) {
        (None, _) => {
            check_bundle(dir, &secrets)?;
            true
        }
        (Some(_), None) => {
            check_age_file(&secrets).map_err(|d| {
                invalid(
                    format!("{SECRETS_AGE}: {d}"),
                    "the encrypted bundle is damaged; use another backup",
                )
            })?;
            false
        }
        (Some(_), Some(id)) => {
            let plain = decrypt(id, &secrets)?;
            check_bundle(dir, &plain)?;
            true
        }
    };
    let v = Verified {
        manifest,
        secrets_checked,
    };
    Ok((v, snapshot))
}

/// A verified backup's snapshot, for recovery.
pub fn load_snapshot(dir: &Path) -> Result<(Manifest, Vec<u8>), BackupError> {
    let (v, snapshot) = verify_with_snapshot(dir, None)?;
    Ok((v.manifest, snapshot))
}

/// The backup's secrets bundle in plain text: as stored, or decrypted with
/// `identity`; `None` for an encrypted one without an identity.
pub fn plain_secrets(
    dir: &Path,
    m: &Manifest,
    identity: Option<&Path>,
) -> Result<Option<Zeroizing<Vec<u8>>>, BackupError> {
    match (&m.age_recipient, identity) {
        (None, _) => read(dir, m, SECRETS).map(|b| Some(Zeroizing::new(b))),
        (Some(_), Some(id)) => decrypt(id, &read(dir, m, SECRETS_AGE)?).map(Some),
        (Some(_), None) => Ok(None),
    }
}

/// A file the manifest lists, exactly the size it says.
fn read(dir: &Path, m: &Manifest, name: &str) -> Result<Vec<u8>, BackupError> {
    let entry = m.files.iter().find(|f| f.name == name);
    let Some(entry) = entry.filter(|_| ENTRIES.contains(&name)) else {
        return Err(BackupError::Invalid {
            dir: dir.to_owned(),
            detail: format!("{MANIFEST} does not list {name}"),
            fix: "the backup is incomplete; use another one",
        });
    };
    open_bounded(dir, name, Some(entry.bytes))
}

/// Read `dir/name`, a plain name the format defines. The final component is opened
/// with `O_NOFOLLOW`: a symlink fails instead of leading outside the backup.
fn open_bounded(dir: &Path, name: &str, expected: Option<u64>) -> Result<Vec<u8>, BackupError> {
    let cap = if name == SNAPSHOT {
        MAX_SNAPSHOT
    } else {
        MAX_SMALL_FILE
    };
    read_regular(dir, name, libc::O_NOFOLLOW, cap, expected)
}

/// An etcd snapshot given as a file (`rebuild cluster --from FILE`): the user's
/// path, so a symlink is followed, but only to a regular file of a snapshot's size.
pub fn read_snapshot_file(path: &Path) -> Result<Vec<u8>, BackupError> {
    let (dir, name) = match (path.parent(), path.file_name().and_then(|n| n.to_str())) {
        (Some(d), Some(n)) => (d, n),
        _ => (Path::new("."), path.to_str().unwrap_or_default()),
    };
    read_regular(dir, name, 0, MAX_SNAPSHOT, None)
}

/// Read `dir/name` refusing anything but a regular file: opened with `O_NONBLOCK`
/// (a FIFO cannot hang the open) plus `flags`; the type and size come from the
/// opened handle, so what is checked is what is read. The size must be under `cap`
/// and equal `expected` (the manifest's) *before* reading, and the read is bounded
/// by it (a file growing meanwhile is refused).
fn read_regular(
    dir: &Path,
    name: &str,
    flags: i32,
    cap: u64,
    expected: Option<u64>,
) -> Result<Vec<u8>, BackupError> {
    let p = dir.join(name);
    let refuse = |detail: String, fix: &'static str| BackupError::Invalid {
        dir: dir.to_owned(),
        detail: format!("{name}: {detail}"),
        fix,
    };
    let altered =
        "the backup was altered: restore the file from a backup written by `talos-pve backup`";
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&p)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::ELOOP) => refuse(
                "is a symbolic link; a backup holds only regular files".into(),
                altered,
            ),
            _ => BackupError::Io {
                path: p.clone(),
                cause: e,
            },
        })?;
    let meta = file.metadata().map_err(io(&p))?;
    if !meta.file_type().is_file() {
        return Err(refuse(
            "is not a regular file (a device, FIFO, socket or directory); a backup holds only regular files".into(),
            altered,
        ));
    }
    let size = meta.len();
    if size > cap {
        return Err(refuse(
            format!("is {size} bytes, more than the {cap} bytes such a file can hold"),
            altered,
        ));
    }
    if let Some(want) = expected
        && size != want
    {
        return Err(refuse(
            format!("is {size} bytes, the manifest says {want}"),
            "the file was changed or damaged after the backup; use another backup",
        ));
    }
    let mut bytes = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
    file.take(size + 1)
        .read_to_end(&mut bytes)
        .map_err(io(&p))?;
    if bytes.len() as u64 != size {
        return Err(refuse(
            format!(
                "changed size while being read ({size} bytes when opened, {} read)",
                bytes.len()
            ),
            "make sure nothing writes into the backup directory, then retry",
        ));
    }
    Ok(bytes)
}

fn check_bundle(dir: &Path, bytes: &[u8]) -> Result<(), BackupError> {
    let invalid = |detail: String| BackupError::Invalid {
        dir: dir.to_owned(),
        detail,
        fix: "the secrets bundle in this backup cannot rebuild the cluster; use another backup",
    };
    let text = Zeroizing::new(
        String::from_utf8(bytes.to_vec())
            .map_err(|_| invalid("the secrets bundle is not UTF-8 text".into()))?,
    );
    let b = SecretsBundle::parse(&text).map_err(|e| invalid(format!("secrets bundle: {e}")))?;
    b.validate(time::OffsetDateTime::now_utc())
        .map_err(|e| invalid(format!("secrets bundle: {e}")))
}

/// The structure of a binary age file: the version line, at least one recipient
/// stanza, the header MAC line, and a payload (nonce + at least one chunk).
fn check_age_file(b: &[u8]) -> Result<(), String> {
    let rest = b
        .strip_prefix(AGE_MAGIC)
        .ok_or("not an age file (no `age-encryption.org/v1` header)")?;
    let mut stanzas = 0;
    let mut pos = 0;
    for line in rest.split(|c| *c == b'\n') {
        pos += line.len() + 1;
        if line.starts_with(b"-> ") {
            stanzas += 1;
        } else if line.starts_with(b"--- ") {
            if stanzas == 0 {
                return Err("the age header has no recipient stanza".into());
            }
            // 16-byte nonce, then chunks of ciphertext with a 16-byte tag each.
            let payload = rest.len().saturating_sub(pos);
            if payload < 16 + 16 {
                return Err(format!("the age payload is truncated ({payload} bytes)"));
            }
            return Ok(());
        }
    }
    Err("the age header does not end (no `---` MAC line): truncated".into())
}

/// An age X25519 recipient (`age1…`); checked before any work starts.
pub fn parse_recipient(recipient: &str) -> Result<age::x25519::Recipient, BackupError> {
    recipient
        .trim()
        .parse()
        .map_err(|_| BackupError::Recipient(recipient.to_owned()))
}

fn encrypt(recipient: &str, plain: &[u8]) -> Result<Vec<u8>, BackupError> {
    age::encrypt(&parse_recipient(recipient)?, plain)
        .map_err(|e| BackupError::Recipient(format!("{recipient}: {e}")))
}

/// Decrypt with the identities in an age identity file.
pub fn decrypt(identity_file: &Path, cipher: &[u8]) -> Result<Zeroizing<Vec<u8>>, BackupError> {
    let err = |detail: String| BackupError::Identity {
        path: identity_file.to_owned(),
        detail,
    };
    let text = Zeroizing::new(std::fs::read(identity_file).map_err(io(identity_file))?);
    let ids = age::IdentityFile::from_buffer(std::io::BufReader::new(&text[..]))
        .map_err(|e| err(format!("not an age identity file: {e}")))?
        .into_identities()
        .map_err(|e| err(e.to_string()))?;
    if ids.is_empty() {
        return Err(err("holds no identity".into()));
    }
    let d = age::Decryptor::new(cipher).map_err(|e| err(format!("reading the age file: {e}")))?;
    let mut r = d
        .decrypt(ids.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|e| err(format!("decrypting: {e}")))?;
    let mut out = Zeroizing::new(Vec::new());
    r.read_to_end(&mut out)
        .map_err(|e| err(format!("decrypting: {e}")))?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    fn contents<'a>(snapshot: &'a [u8], recipient: Option<&'a str>) -> Contents<'a> {
        Contents {
            cluster: "c",
            node: "n",
            talos_version: "v1.13.0",
            kubernetes_version: "1.36.0",
            snapshot,
            profile: b"p",
            secrets: b"not a bundle",
            talosconfig: b"t",
            kubeconfig: b"k",
            age_recipient: recipient,
        }
    }

    #[test]
    fn a_failed_write_leaves_nothing_behind() {
        let out = tempfile::tempdir().unwrap();
        let snap = crate::talos::api::snapshot::seal(vec![0u8; 512]);
        assert!(matches!(
            write(out.path(), &contents(&snap[..100], None)),
            Err(BackupError::Snapshot { .. })
        ));
        assert!(matches!(
            write(out.path(), &contents(&snap, Some("age1nope"))),
            Err(BackupError::Recipient(_))
        ));
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 0);
        // Written, but the bundle inside does not parse: verify says so.
        let (dir, m) = write(out.path(), &contents(&snap, None)).unwrap();
        assert_eq!(m.files.len(), 5);
        let e = verify(&dir, None).unwrap_err().to_string();
        assert!(e.contains("secrets bundle"), "{e}");
        assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 1);
        // A file missing from the directory is named.
        std::fs::remove_file(dir.join(KUBECONFIG)).unwrap();
        let e = verify(&dir, None).unwrap_err().to_string();
        assert!(e.contains("kubeconfig"), "{e}");
    }

    /// A written backup whose manifest `edit` changes; returns the verify error.
    fn tampered(edit: impl FnOnce(&Path, &mut Manifest)) -> String {
        let out = tempfile::tempdir().unwrap();
        let snap = crate::talos::api::snapshot::seal(vec![0u8; 512]);
        let (dir, mut m) = write(out.path(), &contents(&snap, None)).unwrap();
        edit(&dir, &mut m);
        std::fs::write(dir.join(MANIFEST), serde_json::to_vec(&m).unwrap()).unwrap();
        verify(&dir, None).unwrap_err().to_string()
    }

    fn entry<'a>(m: &'a mut Manifest, name: &str) -> &'a mut FileEntry {
        m.files.iter_mut().find(|f| f.name == name).unwrap()
    }

    #[test]
    fn manifest_entries_are_the_formats_plain_names() {
        let outside = tempfile::NamedTempFile::new().unwrap();
        let abs = outside.path().to_str().unwrap().to_owned();
        for bad in [
            "../../etc/passwd".to_string(),
            abs,
            "sub/kubeconfig".into(),
            "".into(),
        ] {
            let e = tampered(|_, m| entry(m, KUBECONFIG).name = bad.clone());
            assert!(
                e.contains(&format!("entry `{bad}` is not a file of a backup")),
                "{bad}: {e}"
            );
            assert!(e.contains("\n  fix: "), "{e}");
        }
        let e = tampered(|_, m| m.files.push(m.files[0].clone()));
        assert!(e.contains("lists etcd.snapshot twice"), "{e}");
    }

    #[test]
    fn only_regular_files_are_read() {
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(outside.path(), b"k").unwrap();
        let e = tampered(|dir, _| {
            std::fs::remove_file(dir.join(KUBECONFIG)).unwrap();
            std::os::unix::fs::symlink(outside.path(), dir.join(KUBECONFIG)).unwrap();
        });
        assert!(e.contains("kubeconfig: is a symbolic link"), "{e}");
        // `/dev/stdin`-style: a link to a device fails the same way, before any read.
        let e = tampered(|dir, _| {
            std::fs::remove_file(dir.join(PROFILE)).unwrap();
            std::os::unix::fs::symlink("/dev/stdin", dir.join(PROFILE)).unwrap();
        });
        assert!(e.contains("profile.yaml: is a symbolic link"), "{e}");
        // A FIFO in place of a file: refused without blocking on the open.
        let e = tampered(|dir, _| {
            let p = dir.join(TALOSCONFIG);
            std::fs::remove_file(&p).unwrap();
            let made = std::process::Command::new("mkfifo").arg(&p).status();
            assert!(made.unwrap().success());
        });
        assert!(e.contains("talosconfig: is not a regular file"), "{e}");
    }

    #[test]
    fn sizes_are_checked_before_reading() {
        // A sparse multi-GiB file: refused from its metadata, nothing is read.
        let e = tampered(|dir, m| {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join(SNAPSHOT))
                .unwrap();
            f.set_len(MAX_SNAPSHOT + 1).unwrap();
            entry(m, SNAPSHOT).bytes = MAX_SNAPSHOT + 1;
        });
        assert!(
            e.contains("etcd.snapshot: is 8589934593 bytes, more than"),
            "{e}"
        );
        let e = tampered(|dir, _| {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(dir.join(PROFILE))
                .unwrap();
            f.set_len(4 << 30).unwrap();
        });
        assert!(
            e.contains("profile.yaml: is 4294967296 bytes, more than"),
            "{e}"
        );
        let e = tampered(|dir, _| std::fs::write(dir.join(PROFILE), b"pp").unwrap());
        assert!(
            e.contains("profile.yaml: is 2 bytes, the manifest says 1"),
            "{e}"
        );
    }

    #[test]
    fn age_structure_check_names_damage() {
        let id = age::x25519::Identity::generate();
        let c = age::encrypt(&id.to_public(), b"secret").unwrap();
        assert_eq!(check_age_file(&c), Ok(()));
        assert!(
            check_age_file(b"plain")
                .unwrap_err()
                .contains("not an age file")
        );
        let header_end = c.windows(4).position(|w| w == b"--- ").unwrap();
        assert!(
            check_age_file(&c[..header_end])
                .unwrap_err()
                .contains("does not end")
        );
        assert!(check_age_file(&c[..header_end + 48]).is_err());
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.txt");
        std::fs::write(
            &key,
            format!("# test key\n{}\n", id.to_string().expose_secret()),
        )
        .unwrap();
        assert_eq!(&decrypt(&key, &c).unwrap()[..], b"secret");
        let other = dir.path().join("other.txt");
        let o = age::x25519::Identity::generate();
        std::fs::write(&other, o.to_string().expose_secret()).unwrap();
        assert!(matches!(
            decrypt(&other, &c),
            Err(BackupError::Identity { .. })
        ));
    }
}
