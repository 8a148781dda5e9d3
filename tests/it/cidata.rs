//! The cidata image read back by real tools (installed by `.ci/run`): util-linux
//! `blkid` (the label), genisoimage's `isoinfo` (Joliet names and contents) and
//! libarchive's `bsdtar` (a third, independent ISO 9660 reader). Under `CI=true` a
//! missing tool is a failure; elsewhere the test skips with the reason.

use std::path::Path;
use std::process::Command;

use proptest::prelude::*;
use talos_pve::iso9660::{File, image};
use talos_pve::talos::cidata;

fn tool(name: &str) -> bool {
    let found = Command::new(name).arg("--version").output().is_ok()
        || Command::new(name).arg("-version").output().is_ok();
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI=true but `{name}` is not installed (.ci/run installs it)");
        }
        eprintln!("skipped: `{name}` is not installed (.ci/run installs it)");
    }
    found
}

fn run(cmd: &str, args: &[&str]) -> Vec<u8> {
    let out = Command::new(cmd).args(args).output().expect("tool runs");
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn write(dir: &Path, img: &[u8]) -> String {
    let p = dir.join("cidata.iso");
    std::fs::write(&p, img).unwrap();
    p.display().to_string()
}

#[test]
fn real_tools_see_label_cidata_and_byte_identical_files() {
    if !(tool("blkid") && tool("isoinfo") && tool("bsdtar")) {
        return;
    }
    let config = b"version: v1alpha1\nmachine:\n  type: controlplane\n".repeat(300);
    let img = cidata::image("talos-k8s-01", "120", &config).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let p = write(tmp.path(), &img);

    let label = run("blkid", &["-p", "-o", "value", "-s", "LABEL", &p]);
    assert_eq!(String::from_utf8_lossy(&label).trim(), "cidata");
    let kind = run("blkid", &["-p", "-o", "value", "-s", "TYPE", &p]);
    assert_eq!(String::from_utf8_lossy(&kind).trim(), "iso9660");

    let listing = String::from_utf8(run("isoinfo", &["-J", "-f", "-i", &p])).unwrap();
    let mut names: Vec<&str> = listing.lines().collect();
    names.sort_unstable();
    assert_eq!(names, ["/meta-data", "/user-data"]);
    assert_eq!(
        run("isoinfo", &["-J", "-x", "/user-data", "-i", &p]),
        config
    );
    assert_eq!(
        run("isoinfo", &["-J", "-x", "/meta-data", "-i", &p]),
        b"instance-id: 120\nlocal-hostname: talos-k8s-01\n"
    );
    let d = String::from_utf8(run("isoinfo", &["-d", "-i", &p])).unwrap();
    assert!(d.contains("Volume id: cidata"), "{d}");
    assert!(d.contains("Joliet with UCS level 3"), "{d}");

    assert_eq!(run("bsdtar", &["-xOf", &p, "user-data"]), config);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(12))]
    /// Sizes around block boundaries and random bytes survive a real reader.
    #[test]
    fn bsdtar_reads_back_any_contents(
        user in proptest::collection::vec(any::<u8>(), 0..6200),
        meta in proptest::collection::vec(any::<u8>(), 0..100),
    ) {
        if !tool("bsdtar") {
            return Ok(());
        }
        let img = image("cidata", &[
            File { name: "user-data", data: &user },
            File { name: "meta-data", data: &meta },
        ]).unwrap();
        let tmp = tempfile::tempdir().unwrap();
        let p = write(tmp.path(), &img);
        prop_assert_eq!(run("bsdtar", &["-xOf", &p, "user-data"]), user);
        prop_assert_eq!(run("bsdtar", &["-xOf", &p, "meta-data"]), meta);
    }
}
