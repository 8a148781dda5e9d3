//! Reading a profile from disk: size and encoding checks, YAML parsing with
//! line/column errors, and the `apiVersion`/`kind` gate.

use std::path::{Path, PathBuf};

use thiserror::Error;

use super::types::{API_VERSION, KIND, Profile};

/// Profiles are a few KiB; anything this large is a wrong file, not a profile.
const MAX_PROFILE_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Error)]
pub enum ProfileError {
    // The io error is part of the message, not a `source`: `{:#}` would repeat it after the fix line.
    #[error("cannot read profile {path}: {cause}\n  fix: check the path given to --profile")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error(
        "profile {path} is {size} bytes; a profile is a small YAML file\n  fix: point --profile at the cluster profile (e.g. profiles/homelab.yaml)"
    )]
    TooLarge { path: PathBuf, size: u64 },
    #[error(
        "profile {path} is empty\n  fix: start from profiles/homelab.yaml or run `talos-pve init`"
    )]
    Empty { path: PathBuf },
    #[error(
        "profile {path} is not UTF-8 text (byte {offset} is invalid); is this a binary file?\n  fix: point --profile at the YAML cluster profile"
    )]
    NotText { path: PathBuf, offset: usize },
    #[error("profile {path}{location}: {message}\n  fix: {fix}")]
    Syntax {
        path: PathBuf,
        location: String,
        message: String,
        fix: String,
    },
    #[error(
        "profile {path}: field `{field}` is `{found}`, expected `{expected}`\n  fix: set `{field}: {expected}`"
    )]
    Header {
        path: PathBuf,
        field: &'static str,
        found: String,
        expected: &'static str,
    },
    #[error("profile {path}: `{field}`: {message}\n  fix: {fix}")]
    Field {
        path: PathBuf,
        field: String,
        message: String,
        fix: String,
    },
}

/// Load and parse a profile file.
pub fn load(path: &Path) -> Result<Profile, ProfileError> {
    let read_err = |cause| ProfileError::Read {
        path: path.to_owned(),
        cause,
    };
    let size = std::fs::metadata(path).map_err(read_err)?.len();
    if size > MAX_PROFILE_BYTES {
        return Err(ProfileError::TooLarge {
            path: path.to_owned(),
            size,
        });
    }
    let bytes = std::fs::read(path).map_err(read_err)?;
    let text = String::from_utf8(bytes).map_err(|e| ProfileError::NotText {
        path: path.to_owned(),
        offset: e.utf8_error().valid_up_to(),
    })?;
    parse(&text, path)
}

/// Parse profile text; `path` is only used in messages.
pub fn parse(text: &str, path: &Path) -> Result<Profile, ProfileError> {
    if text.trim().is_empty()
        || text
            .lines()
            .all(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
    {
        return Err(ProfileError::Empty {
            path: path.to_owned(),
        });
    }
    if let Some(offset) = text.find('\0') {
        return Err(ProfileError::NotText {
            path: path.to_owned(),
            offset,
        });
    }
    let profile: Profile = serde_saphyr::from_str(text).map_err(|e| syntax_error(&e, path))?;
    if profile.api_version != API_VERSION {
        return Err(ProfileError::Header {
            path: path.to_owned(),
            field: "apiVersion",
            found: profile.api_version,
            expected: API_VERSION,
        });
    }
    if profile.kind != KIND {
        return Err(ProfileError::Header {
            path: path.to_owned(),
            field: "kind",
            found: profile.kind,
            expected: KIND,
        });
    }
    // Names that point at nothing, and acknowledgements that would waive an error.
    if let Some(r) = super::wiring::refusal(&profile).or_else(|| crate::lint::refusal(&profile)) {
        return Err(ProfileError::Field {
            path: path.to_owned(),
            field: r.field,
            message: r.message,
            fix: r.fix,
        });
    }
    Ok(profile)
}

/// The YAML parser's text without what the surrounding message already says: its own
/// `error: ` and `line N column M: ` prefix, and `<input>` instead of the file name.
/// Also used for other YAML/JSON inputs (the wizard's discovery file).
pub(crate) fn tidy_message(raw: &str, path: &Path) -> String {
    let mut m = raw.strip_prefix("error: ").unwrap_or(raw);
    if let Some(rest) = m.strip_prefix("line ")
        && let Some((pos, tail)) = rest.split_once(": ")
        && pos.split(" column ").all(|n| n.parse::<u64>().is_ok())
    {
        m = tail;
    }
    m.replace("<input>", &path.display().to_string())
}

fn syntax_error(e: &serde_saphyr::Error, path: &Path) -> ProfileError {
    let location = e
        .location()
        .filter(|l| l.line() > 0)
        .map(|l| format!(":{}:{}", l.line(), l.column()))
        .unwrap_or_default();
    let message = tidy_message(&e.to_string(), path);
    let fix = if message.contains("unknown field") {
        "remove or rename the field; the accepted fields are listed in the message and in profiles/homelab.yaml"
    } else if message.contains("missing field") {
        "add the missing field (see profiles/homelab.yaml for a complete example)"
    } else if message.contains("tabs disallowed") {
        "indent with spaces: YAML does not allow tabs for indentation"
    } else if message.contains("budget") || message.contains("alias") || message.contains("limit") {
        "the file expands beyond sane limits (anchors/aliases); write the profile out plainly"
    } else {
        "correct the value at that line; addresses are plain IPv4 (10.8.16.20), subnets CIDR (10.8.16.0/24)"
    };
    ProfileError::Syntax {
        path: path.to_owned(),
        location,
        message,
        fix: fix.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_name_the_file_once_without_parser_prefixes() {
        let path = Path::new("cluster.yaml");
        let e = parse("metadata: {name: x}\n", path)
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("profile cluster.yaml:1:1: missing field `apiVersion`"),
            "{e}"
        );
        assert!(e.contains("--> cluster.yaml:1:1"), "{e}");
        assert!(!e.contains("<input>") && !e.contains("error: line"), "{e}");
        assert!(e.contains("\n  fix: add the missing field"), "{e}");
    }

    fn homelab_text() -> String {
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/profiles/homelab.yaml"
        ))
        .unwrap()
    }

    #[test]
    fn a_tab_in_the_indentation_gets_a_yaml_fix() {
        let text = homelab_text().replacen("\n  name: homelab", "\n\tname: homelab", 1);
        let e = parse(&text, Path::new("c.yaml")).unwrap_err().to_string();
        assert!(e.contains("tabs disallowed"), "{e}");
        assert!(e.contains("fix: indent with spaces"), "{e}");
        assert!(!e.contains("IPv4"), "{e}");
    }

    #[test]
    fn acknowledging_an_error_is_refused_naming_file_and_field() {
        let text = format!(
            "{}\nlint:\n  acknowledge:\n    - code: NET403\n      reason: one endpoint is fine here\n    - code: NET003\n      reason: please\n",
            homelab_text()
        );
        let e = parse(&text, Path::new("c.yaml")).unwrap_err().to_string();
        assert!(
            e.starts_with("profile c.yaml: `lint.acknowledge[1].code`: NET003"),
            "{e}"
        );
        assert!(e.contains("errors cannot be acknowledged"), "{e}");
        assert!(e.contains("\n  fix: fix what NET003 reports"), "{e}");
    }
}
