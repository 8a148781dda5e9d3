//! What a lab Talos node's nocloud platform reads from a CD-ROM at boot. Written
//! from the readers' side and sharing no code with `crate::iso9660` (the writer),
//! so a wrong image fails here as it would on a real node:
//!
//! - the label is what go-blockdevice reports: the first supplementary
//!   descriptor's volume identifier decoded as UTF-16BE, else the primary's
//!   (siderolabs/go-blockdevice v2.0.30 `blkid/internal/filesystems/iso9660/iso9660.go`);
//!   Talos matches `cidata` or `CIDATA` (talos v1.13.9 `platform/nocloud/metadata.go`);
//! - names are read as Linux's isofs returns them: from the Joliet tree when a
//!   supplementary descriptor carries a UCS-2 escape (`%/@`, `%/C`, `%/E`), with a
//!   `;1` version suffix dropped (linux `fs/isofs/joliet.c` `get_joliet_filename`);
//!   without Joliet, primary names are lower-cased and lose `;1` and a trailing dot
//!   (`fs/isofs/dir.c` `isofs_name_translate`, the default `map=normal`).

use std::collections::BTreeMap;

const BLOCK: usize = 2048;

/// The files of a `cidata` volume, by the names Talos would open.
#[derive(Debug, Clone, PartialEq)]
pub struct Volume {
    pub label: String,
    pub files: BTreeMap<String, Vec<u8>>,
}

/// Read an ISO 9660 image; `Err` says what a mount or probe would fail on.
pub fn read(img: &[u8]) -> Result<Volume, String> {
    let mut primary = None;
    let mut supplementary = None;
    for i in 16..32 {
        let d = img
            .get(i * BLOCK..(i + 1) * BLOCK)
            .ok_or("image ends inside the volume descriptor set")?;
        if &d[1..6] != b"CD001" {
            return Err(format!("sector {i}: no CD001 signature"));
        }
        match d[0] {
            255 => break,
            1 if primary.is_none() => primary = Some(d),
            2 if supplementary.is_none() => supplementary = Some(d),
            _ => {}
        }
    }
    let pvd = primary.ok_or("no primary volume descriptor")?;
    if u16::from_le_bytes([pvd[128], pvd[129]]) as usize != BLOCK {
        return Err("logical block size is not 2048".into());
    }
    let trim = |s: String| s.trim_end_matches([' ', '\0']).to_owned();
    let label = match supplementary {
        Some(s) => trim(utf16be(&s[40..72])),
        None => trim(String::from_utf8_lossy(&pvd[40..72]).into_owned()),
    };
    let joliet = supplementary
        .filter(|s| s[88] == 0x25 && s[89] == 0x2f && matches!(s[90], 0x40 | 0x43 | 0x45));
    let (tree, is_joliet) = match joliet {
        Some(s) => (s, true),
        None => (pvd, false),
    };
    let root = &tree[156..190];
    let start = u32::from_le_bytes(root[2..6].try_into().expect("4 bytes")) as usize;
    let len = u32::from_le_bytes(root[10..14].try_into().expect("4 bytes")) as usize;
    let dir = img
        .get(start * BLOCK..start * BLOCK + len)
        .ok_or("root directory outside the image")?;
    let mut files = BTreeMap::new();
    let mut pos = 0;
    while pos < dir.len() {
        let rlen = dir[pos] as usize;
        if rlen == 0 {
            // Records do not cross a block: the rest of this one is padding.
            pos = (pos / BLOCK + 1) * BLOCK;
            continue;
        }
        let r = dir
            .get(pos..pos + rlen)
            .ok_or("directory record runs past the directory")?;
        pos += rlen;
        let id_len = r[32] as usize;
        let id = r.get(33..33 + id_len).ok_or("file identifier too long")?;
        let is_dir = r[25] & 2 != 0;
        if is_dir || id == [0] || id == [1] {
            continue;
        }
        let mut name = if is_joliet {
            utf16be(id)
        } else {
            String::from_utf8_lossy(id).to_ascii_lowercase()
        };
        if let Some(stripped) = name.strip_suffix(";1") {
            name = stripped.to_owned();
        }
        if !is_joliet && name.ends_with('.') {
            name.pop();
        }
        let at = u32::from_le_bytes(r[2..6].try_into().expect("4 bytes")) as usize;
        let size = u32::from_le_bytes(r[10..14].try_into().expect("4 bytes")) as usize;
        let data = img
            .get(at * BLOCK..at * BLOCK + size)
            .ok_or_else(|| format!("`{name}` extends past the end of the image"))?;
        files.insert(name, data.to_vec());
    }
    Ok(Volume { label, files })
}

fn utf16be(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::iso9660::{File, image};
    use proptest::prelude::*;

    #[test]
    fn garbage_is_not_a_volume() {
        assert!(read(&[]).is_err());
        assert!(read(&vec![0u8; 40 * BLOCK]).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Whatever the contents and sizes (empty, one byte, block boundaries,
        /// several blocks), every file comes back byte-identical under its name.
        #[test]
        fn written_files_read_back_identically(
            user in proptest::collection::vec(any::<u8>(), 0..9000),
            meta in proptest::collection::vec(any::<u8>(), 0..2100),
            extra in proptest::collection::vec(any::<u8>(), 2047..2050),
        ) {
            let img = image("cidata", &[
                File { name: "user-data", data: &user },
                File { name: "meta-data", data: &meta },
                File { name: "network-config", data: &extra },
            ]).unwrap();
            prop_assert_eq!(img.len() % BLOCK, 0);
            let v = read(&img).unwrap();
            prop_assert_eq!(v.label.as_str(), "cidata");
            prop_assert_eq!(v.files.len(), 3);
            prop_assert_eq!(&v.files["user-data"], &user);
            prop_assert_eq!(&v.files["meta-data"], &meta);
            prop_assert_eq!(&v.files["network-config"], &extra);
        }
    }
}
