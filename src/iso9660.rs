//! A minimal ISO 9660 (ECMA-119) image writer with Joliet names: one root
//! directory of regular files, nothing else. Pure: bytes in, bytes out.
//!
//! Why Joliet: the primary tree only allows `A-Z0-9_` 8.3 names, so `user-data`
//! cannot be spelled there. Linux's isofs reads the Joliet tree when the
//! supplementary descriptor carries a UCS-2 escape sequence (and no Rock Ridge is
//! present), and returns its names verbatim; the volume label that
//! go-blockdevice (which Talos uses to find the `cidata` volume) reports is the
//! Joliet descriptor's volume identifier when there is one, else the primary's
//! (siderolabs/go-blockdevice v2.0.30 `blkid/internal/filesystems/iso9660/iso9660.go`).
//! So both descriptors carry the same label.

use thiserror::Error;

const SECTOR: usize = 2048;
// Sectors 0–15 are the system area. Layout: PVD, Joliet SVD, terminator, then per tree an L and an M path table and
// the root directory; file data follows.
const PVD: usize = 16;
const SVD: usize = 17;
const TERMINATOR: usize = 18;
const PATH_TABLES: [usize; 4] = [19, 20, 21, 22];
const ROOT_PRIMARY: usize = 23;
const ROOT_JOLIET: usize = 24;
const FIRST_DATA: usize = 25;
/// Joliet level 3 escape sequence (`%/E`, ECMA-35 designation of UCS-2 level 3).
const JOLIET_ESCAPE: &[u8] = b"%/E";
/// Joliet allows 64 UCS-2 characters per name; the volume label has 16.
const MAX_NAME: usize = 64;
const MAX_LABEL: usize = 16;

#[derive(Debug, Error, PartialEq)]
pub enum IsoError {
    #[error(
        "ISO 9660 volume label `{0}`: 1–16 characters of A-Z, a-z, 0-9, `_`, `-` only\n  fix: use a short ASCII label such as `cidata`"
    )]
    Label(String),
    #[error(
        "ISO 9660 file name `{0}`: 1–64 characters of A-Z, a-z, 0-9, `_`, `-`, `.` only, unique\n  fix: rename the file"
    )]
    Name(String),
    #[error(
        "ISO 9660 image too large: {0} bytes in one directory sector or more than 4 GiB\n  fix: fewer or smaller files"
    )]
    TooLarge(usize),
}

/// One regular file in the root directory.
#[derive(Debug, Clone, Copy)]
pub struct File<'a> {
    pub name: &'a str,
    pub data: &'a [u8],
}

/// Build the image: `label` on both volume descriptors, `files` in the root.
pub fn image(label: &str, files: &[File<'_>]) -> Result<Vec<u8>, IsoError> {
    let label_ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if label.is_empty() || label.len() > MAX_LABEL || !label.chars().all(label_ok) {
        return Err(IsoError::Label(label.into()));
    }
    let name_ok = |c: char| label_ok(c) || c == '.';
    let mut sorted: Vec<File<'_>> = files.to_vec();
    sorted.sort_by(|a, b| a.name.cmp(b.name));
    for (i, f) in sorted.iter().enumerate() {
        let dup = i > 0 && sorted[i - 1].name == f.name;
        if f.name.is_empty() || f.name.len() > MAX_NAME || !f.name.chars().all(name_ok) || dup {
            return Err(IsoError::Name(f.name.into()));
        }
    }
    // File extents, in sorted order.
    let mut extents = Vec::with_capacity(sorted.len());
    let mut next = FIRST_DATA;
    for f in &sorted {
        extents.push(next);
        next += f.data.len().div_ceil(SECTOR);
    }
    let total = next;
    if total * SECTOR > u32::MAX as usize {
        return Err(IsoError::TooLarge(total * SECTOR));
    }
    let primary_names = primary_names(&sorted);
    let joliet_names: Vec<Vec<u8>> = sorted.iter().map(|f| ucs2(f.name)).collect();
    let root_primary = directory(ROOT_PRIMARY, &sorted, &extents, &primary_names)?;
    let root_joliet = directory(ROOT_JOLIET, &sorted, &extents, &joliet_names)?;

    let mut img = vec![0u8; total * SECTOR];
    let at = |s: usize| s * SECTOR;
    let pvd = descriptor(1, label.as_bytes(), ROOT_PRIMARY, total, false);
    let svd = descriptor(2, &ucs2(label), ROOT_JOLIET, total, true);
    img[at(PVD)..at(PVD) + SECTOR].copy_from_slice(&pvd);
    img[at(SVD)..at(SVD) + SECTOR].copy_from_slice(&svd);
    img[at(TERMINATOR)..at(TERMINATOR) + 7].copy_from_slice(b"\xffCD001\x01");
    for (i, s) in PATH_TABLES.iter().enumerate() {
        let root = if i < 2 { ROOT_PRIMARY } else { ROOT_JOLIET };
        let t = path_table(root, i % 2 == 1);
        img[at(*s)..at(*s) + t.len()].copy_from_slice(&t);
    }
    img[at(ROOT_PRIMARY)..at(ROOT_PRIMARY) + root_primary.len()].copy_from_slice(&root_primary);
    img[at(ROOT_JOLIET)..at(ROOT_JOLIET) + root_joliet.len()].copy_from_slice(&root_joliet);
    for (f, e) in sorted.iter().zip(&extents) {
        img[at(*e)..at(*e) + f.data.len()].copy_from_slice(f.data);
    }
    Ok(img)
}

/// Level-1 names for the primary tree (`USER_DAT.;1`): d-characters, 8.3, unique.
fn primary_names(files: &[File<'_>]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    for (i, f) in files.iter().enumerate() {
        let d = |s: &str, n: usize| -> String {
            s.chars()
                .map(|c| match c.to_ascii_uppercase() {
                    c @ ('A'..='Z' | '0'..='9') => c,
                    _ => '_',
                })
                .take(n)
                .collect()
        };
        let (stem, ext) = f.name.rsplit_once('.').unwrap_or((f.name, ""));
        let mut name = format!("{}.{};1", d(stem, 8), d(ext, 3));
        if out.iter().any(|o| o == name.as_bytes()) {
            // Collisions after truncation: a numbered stem keeps them unique.
            name = format!("F{i:07}.{};1", d(ext, 3));
        }
        out.push(name.into_bytes());
    }
    out
}

fn ucs2(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_be_bytes).collect()
}

fn both16(v: u16) -> [u8; 4] {
    let (l, b) = (v.to_le_bytes(), v.to_be_bytes());
    [l[0], l[1], b[0], b[1]]
}

fn both32(v: u32) -> [u8; 8] {
    let (l, b) = (v.to_le_bytes(), v.to_be_bytes());
    [l[0], l[1], l[2], l[3], b[0], b[1], b[2], b[3]]
}

/// A directory record (ECMA-119 9.1) with a fixed 1970-01-01 UTC timestamp, so
/// the same files always give the same image.
fn record(extent: usize, size: usize, dir: bool, id: &[u8]) -> Vec<u8> {
    let len = 33 + id.len() + (1 - id.len() % 2);
    let mut r = vec![0u8; len];
    r[0] = len as u8;
    r[2..10].copy_from_slice(&both32(extent as u32));
    r[10..18].copy_from_slice(&both32(size as u32));
    r[18..25].copy_from_slice(&[70, 1, 1, 0, 0, 0, 0]);
    r[25] = if dir { 2 } else { 0 };
    r[28..32].copy_from_slice(&both16(1));
    r[32] = id.len() as u8;
    r[33..33 + id.len()].copy_from_slice(id);
    r
}

/// The root directory: `.`, `..`, then the files; must fit one sector.
fn directory(
    own: usize,
    files: &[File<'_>],
    extents: &[usize],
    names: &[Vec<u8>],
) -> Result<Vec<u8>, IsoError> {
    let mut d = record(own, SECTOR, true, &[0]);
    d.extend(record(own, SECTOR, true, &[1]));
    // Records are sorted by their identifier in this tree (ECMA-119 9.3).
    let mut entries: Vec<(&Vec<u8>, usize, usize)> = names
        .iter()
        .zip(files.iter().zip(extents))
        .map(|(n, (f, e))| (n, *e, f.data.len()))
        .collect();
    entries.sort();
    for (n, e, size) in entries {
        d.extend(record(e, size, false, n));
    }
    if d.len() > SECTOR {
        return Err(IsoError::TooLarge(d.len()));
    }
    Ok(d)
}

/// A path table holding the root only (ECMA-119 9.4); `big` = the M table.
fn path_table(root: usize, big: bool) -> Vec<u8> {
    let mut t = vec![1u8, 0];
    if big {
        t.extend((root as u32).to_be_bytes());
        t.extend(1u16.to_be_bytes());
    } else {
        t.extend((root as u32).to_le_bytes());
        t.extend(1u16.to_le_bytes());
    }
    t.extend([0, 0]);
    t
}

/// A primary (type 1) or Joliet supplementary (type 2) volume descriptor (ECMA-119 8.4/8.5).
fn descriptor(kind: u8, label: &[u8], root: usize, total: usize, joliet: bool) -> Vec<u8> {
    let mut d = vec![0u8; SECTOR];
    d[0] = kind;
    d[1..6].copy_from_slice(b"CD001");
    d[6] = 1;
    // Text fields are space-padded: ASCII spaces, or UCS-2 spaces in Joliet.
    let pad = |d: &mut [u8], range: std::ops::Range<usize>, text: &[u8]| {
        let field = &mut d[range];
        for (i, b) in field.iter_mut().enumerate() {
            *b = if joliet && i % 2 == 0 { 0 } else { b' ' };
        }
        field[..text.len()].copy_from_slice(text);
    };
    pad(&mut d, 8..40, b"");
    pad(&mut d, 40..72, label);
    d[80..88].copy_from_slice(&both32(total as u32));
    if joliet {
        d[88..91].copy_from_slice(JOLIET_ESCAPE);
    }
    d[120..124].copy_from_slice(&both16(1));
    d[124..128].copy_from_slice(&both16(1));
    d[128..132].copy_from_slice(&both16(SECTOR as u16));
    d[132..140].copy_from_slice(&both32(10));
    let (l, m) = if joliet {
        (PATH_TABLES[2], PATH_TABLES[3])
    } else {
        (PATH_TABLES[0], PATH_TABLES[1])
    };
    d[140..144].copy_from_slice(&(l as u32).to_le_bytes());
    d[148..152].copy_from_slice(&(m as u32).to_be_bytes());
    d[156..190].copy_from_slice(&record(root, SECTOR, true, &[0]));
    for r in [
        190..318,
        318..446,
        446..574,
        574..702,
        702..739,
        739..776,
        776..813,
    ] {
        pad(&mut d, r, b"");
    }
    // Dates "not specified": sixteen ASCII zeros and a zero offset.
    for start in [813, 830, 847, 864] {
        d[start..start + 16].copy_from_slice(b"0000000000000000");
    }
    d[881] = 1;
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_what_ecma_119_and_joliet_expect() {
        let img = image(
            "cidata",
            &[File {
                name: "user-data",
                data: b"hello",
            }],
        )
        .unwrap();
        assert_eq!(img.len(), 26 * SECTOR);
        assert_eq!(&img[PVD * SECTOR..PVD * SECTOR + 6], b"\x01CD001");
        assert_eq!(&img[PVD * SECTOR + 40..PVD * SECTOR + 47], b"cidata ");
        assert_eq!(&img[SVD * SECTOR..SVD * SECTOR + 6], b"\x02CD001");
        assert_eq!(&img[SVD * SECTOR + 88..SVD * SECTOR + 91], b"%/E");
        assert_eq!(
            &img[SVD * SECTOR + 40..SVD * SECTOR + 54],
            &[
                0, b'c', 0, b'i', 0, b'd', 0, b'a', 0, b't', 0, b'a', 0, b' '
            ]
        );
        assert_eq!(
            &img[TERMINATOR * SECTOR..TERMINATOR * SECTOR + 6],
            b"\xffCD001"
        );
        assert_eq!(&img[25 * SECTOR..25 * SECTOR + 5], b"hello");
        // The primary tree spells the name in d-characters.
        let root = &img[ROOT_PRIMARY * SECTOR..];
        let third = 34 + 34;
        assert_eq!(&root[third + 33..third + 33 + 11], b"USER_DAT.;1");
    }

    #[test]
    fn bad_labels_and_names_are_refused() {
        assert_eq!(image("", &[]), Err(IsoError::Label("".into())));
        assert!(image("a label", &[]).is_err());
        assert!(image("seventeen-chars-x", &[]).is_err());
        let f = |name| File { name, data: b"" };
        assert!(image("cidata", &[f("a/b")]).is_err());
        assert!(image("cidata", &[f("x"), f("x")]).is_err());
        assert!(image("cidata", &[f(&"n".repeat(65))]).is_err());
    }

    #[test]
    fn truncated_primary_names_stay_unique() {
        let f = |name| File { name, data: b"" };
        let n = primary_names(&[f("network-config"), f("network-configs")]);
        assert_ne!(n[0], n[1]);
    }
}
