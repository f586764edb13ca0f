//! Stemcell tarballs for `create_stemcell`, the way the BOSH director prepares them: the `image` member is
//! extracted to a file and the `cloud_properties` of `stemcell.MF` go with it.
//!
//! Each use walks the tarball once: [`extract`] takes the image and the manifest in the same pass,
//! [`read_manifest`] stops at the manifest, [`check`] stops once it has seen both. A gzipped tarball may be
//! several gzip members one after the other (as `pigz` and some build tools write them); they are read as one
//! stream, as the CPI reads stemcells. `stemcell.MF` is YAML, read with a YAML parser that bounds nesting and
//! alias expansion (a hostile manifest gets an error, never a crash); values from the pool config win over
//! the manifest's `cloud_properties`.
use serde::Deserialize;
use serde_json::{Map, Value};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum TarballError {
    #[error("cannot read stemcell tarball {path}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("stemcell tarball {0} has no `image` member")]
    NoImage(PathBuf),
    #[error("stemcell.MF in {path}: {reason}")]
    Manifest { path: PathBuf, reason: String },
}

/// What the launcher reads of `stemcell.MF`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifest {
    /// The top-level `api_version` (a number, or a string of one); `None` when absent or not a number.
    pub api_version: Option<u32>,
    /// The `cloud_properties` map (empty when absent).
    pub cloud_properties: Map<String, Value>,
}

/// The longest `stemcell.MF` read (published ones are about 1 KiB).
const MAX_MANIFEST: u64 = 1 << 20;

/// Parses the text of `stemcell.MF`.
pub fn parse_manifest(text: &str) -> Result<Manifest, String> {
    #[derive(Deserialize)]
    struct Raw {
        #[serde(default)]
        api_version: Option<Value>,
        #[serde(default)]
        cloud_properties: Option<Value>,
    }
    if text.trim().is_empty() {
        return Ok(Manifest::default());
    }
    let raw: Raw = serde_norway::from_str(text).map_err(|e| e.to_string())?;
    let api_version = match raw.api_version {
        Some(Value::Number(n)) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    };
    let cloud_properties = match raw.cloud_properties {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => m,
        Some(_) => {
            return Err("cloud_properties is not a map; set cloud_properties in the pool's stemcell config".into())
        }
    };
    Ok(Manifest { api_version, cloud_properties })
}

/// A stemcell ready for `create_stemcell`: the extracted image (removed on drop), its cloud_properties, and
/// the manifest's `api_version`.
pub struct Extracted {
    pub image: PathBuf,
    pub cloud_properties: Map<String, Value>,
    pub api_version: Option<u32>,
    _dir: tempfile::TempDir,
}

/// What one walk of a tarball found.
#[derive(Default)]
struct Found {
    image: bool,
    manifest: Option<String>,
}

/// Regular file data (a GNU sparse file too): never a link, a directory or a device.
fn is_file<R: Read>(entry: &tar::Entry<'_, R>) -> bool {
    let t = entry.header().entry_type();
    t.is_file() || t.is_contiguous() || t.is_gnu_sparse()
}

/// Walks a (gzipped) tarball once, up to the manifest and, when `image` is wanted, up to the image too
/// (copied to `image_to` when given).
fn walk(tarball: &Path, want_image: bool, image_to: Option<&Path>) -> Result<Found, TarballError> {
    let read = |source| TarballError::Read { path: tarball.to_path_buf(), source };
    let mut r = BufReader::with_capacity(1 << 20, std::fs::File::open(tarball).map_err(read)?);
    let gzip = r.fill_buf().map_err(read)?.starts_with(&[0x1f, 0x8b]);
    let stream: Box<dyn Read> = if gzip { Box::new(flate2::read::MultiGzDecoder::new(r)) } else { Box::new(r) };
    let mut archive = tar::Archive::new(stream);
    let mut found = Found::default();
    for entry in archive.entries().map_err(read)? {
        let mut entry = entry.map_err(read)?;
        if !is_file(&entry) {
            continue;
        }
        let name = entry.path().map_err(read)?.to_string_lossy().trim_start_matches("./").to_string();
        match name.as_str() {
            "image" if want_image && !found.image => {
                if let Some(to) = image_to {
                    let mut out = std::fs::File::create(to).map_err(read)?;
                    std::io::copy(&mut entry, &mut out).map_err(read)?;
                }
                found.image = true;
            }
            "stemcell.MF" if found.manifest.is_none() => {
                let mut text = String::new();
                entry.take(MAX_MANIFEST).read_to_string(&mut text).map_err(read)?;
                found.manifest = Some(text);
            }
            _ => {}
        }
        if found.manifest.is_some() && (found.image || !want_image) {
            break;
        }
    }
    Ok(found)
}

fn manifest_of(tarball: &Path, text: Option<String>) -> Result<Option<Manifest>, TarballError> {
    text.map(|t| parse_manifest(&t).map_err(|reason| TarballError::Manifest { path: tarball.to_path_buf(), reason }))
        .transpose()
}

/// Checks that a file is a stemcell tarball (it has an `image` member, and a `stemcell.MF`, if any, that
/// reads) without extracting it.
pub fn check(tarball: &Path) -> Result<(), TarballError> {
    let found = walk(tarball, true, None)?;
    if !found.image {
        return Err(TarballError::NoImage(tarball.to_path_buf()));
    }
    manifest_of(tarball, found.manifest).map(|_| ())
}

/// A tarball's `stemcell.MF` (read up to that member; `None` when it has none).
pub fn read_manifest(tarball: &Path) -> Result<Option<Manifest>, TarballError> {
    let found = walk(tarball, false, None)?;
    manifest_of(tarball, found.manifest)
}

/// Extracts `image` and reads `stemcell.MF` from a (gzipped) stemcell tarball, in one pass, into a directory
/// under `tmp`; `overrides` win over the manifest's cloud_properties.
pub fn extract(tarball: &Path, tmp: &Path, overrides: &Map<String, Value>) -> Result<Extracted, TarballError> {
    let read = |source| TarballError::Read { path: tarball.to_path_buf(), source };
    let dir = tempfile::Builder::new().prefix("stemcell-").tempdir_in(tmp).map_err(read)?;
    let image = dir.path().join("image");
    let found = walk(tarball, true, Some(&image))?;
    if !found.image {
        return Err(TarballError::NoImage(tarball.to_path_buf()));
    }
    let manifest = manifest_of(tarball, found.manifest)?.unwrap_or_default();
    let mut cloud_properties = manifest.cloud_properties;
    for (k, v) in overrides {
        cloud_properties.insert(k.clone(), v.clone());
    }
    Ok(Extracted { image, cloud_properties, api_version: manifest.api_version, _dir: dir })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MF: &str = "---\nname: bosh-openstack-kvm-ubuntu-jammy-go_agent\nversion: '1.506'\napi_version: 3\nstemcell_formats:\n- openstack-qcow2\ncloud_properties:\n  name: bosh-openstack-kvm-ubuntu-jammy-go_agent\n  version: '1.506'\n  disk: 5120\n  auto_disk_config: true\n  os_distro: \"ubuntu\"\nsha1: abc\n";

    /// A tar of `files`, gzipped as one member, or as one member per file when `members` (the way `cat
    /// a.gz b.gz` joins them).
    fn tgz(dir: &Path, files: &[(&str, &[u8])], members: bool) -> PathBuf {
        let mut t = tar::Builder::new(Vec::new());
        let mut cuts = Vec::new();
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            t.append_data(&mut h, name, *data).unwrap();
            cuts.push(t.get_ref().len());
        }
        let tar = t.into_inner().unwrap();
        let gz = |bytes: &[u8]| {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut e, bytes).unwrap();
            e.finish().unwrap()
        };
        let out = if members {
            let mut at = 0;
            let mut out = Vec::new();
            for c in cuts.into_iter().chain([tar.len()]) {
                out.extend(gz(&tar[at..c]));
                at = c;
            }
            out
        } else {
            gz(&tar)
        };
        let path = dir.join(if members { "multi.tgz" } else { "stemcell.tgz" });
        std::fs::write(&path, out).unwrap();
        path
    }

    #[test]
    fn manifest_api_version_is_read() {
        let api = |t: &str| parse_manifest(t).unwrap().api_version;
        assert_eq!(api(MF), Some(3));
        assert_eq!(api("name: x\napi_version: '2'\n"), Some(2));
        assert_eq!(api("name: x\ncloud_properties:\n  api_version: 9\n"), None);
        assert_eq!(api("api_version: three\n"), None);
        assert_eq!(api("api_version: -1\n"), None);
        assert_eq!(api(""), None);
    }

    #[test]
    fn manifest_cloud_properties_are_read_as_yaml() {
        let cp = parse_manifest(MF).unwrap().cloud_properties;
        assert_eq!(
            Value::Object(cp),
            json!({"name": "bosh-openstack-kvm-ubuntu-jammy-go_agent", "version": "1.506", "disk": 5120, "auto_disk_config": true, "os_distro": "ubuntu"})
        );
        // nested values go to create_stemcell as they are, like the director sends them
        let cp = parse_manifest("cloud_properties:\n  a:\n    b: 1\n  c: [x, {d: null}]\n").unwrap().cloud_properties;
        assert_eq!(Value::Object(cp), json!({"a": {"b": 1}, "c": ["x", {"d": null}]}));
        assert!(parse_manifest("cloud_properties: {}\n").unwrap().cloud_properties.is_empty());
        assert!(parse_manifest("cloud_properties:\n").unwrap().cloud_properties.is_empty());
        assert!(parse_manifest("cloud_properties: [1]\n").unwrap_err().contains("in the pool's stemcell config"));
        assert!(parse_manifest("cloud_properties:\n  a: 1\n    b: 1\n").is_err());
        assert!(parse_manifest("- a\n- b\n").is_err());
    }

    /// The escapes of YAML's quoted scalars, which the hand-written parser left in place (`\"` stayed `\"`).
    #[test]
    fn manifest_quoted_strings_are_unescaped() {
        let text = r#"api_version: "3"
cloud_properties:
  double: "say \"hi\"\tand\\go \u00e9\x41 \
    on"
  single: 'it''s \n literal'
  colon: "a: b # not a comment"
  plain: value # a comment
  empty: ""
"#;
        let m = parse_manifest(text).unwrap();
        assert_eq!(m.api_version, Some(3));
        assert_eq!(
            Value::Object(m.cloud_properties),
            json!({"double": "say \"hi\"\tand\\go éA on", "single": "it's \\n literal", "colon": "a: b # not a comment",
                   "plain": "value", "empty": ""})
        );
    }

    /// A hostile manifest is an error, not a crash or a memory blow-up.
    #[test]
    fn hostile_manifests_are_refused() {
        let deep = format!("cloud_properties:\n  a:\n  {}x\n", "- ".repeat(400_000));
        let e = std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || parse_manifest(&deep).unwrap_err())
            .unwrap()
            .join()
            .unwrap();
        assert!(e.contains("recursion limit"), "{e}");
        let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
        for i in 1..12 {
            let p = i - 1;
            bomb.push_str(&format!("a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"));
        }
        bomb.push_str("cloud_properties: {x: *a11}\n");
        assert!(parse_manifest(&bomb).unwrap_err().contains("repetition limit"));
    }

    #[test]
    fn extracts_the_image_from_a_gzipped_tarball() {
        let d = tempfile::tempdir().unwrap();
        let good = tgz(d.path(), &[("stemcell.MF", MF.as_bytes()), ("image", b"IMAGEBYTES")], false);
        let over = json!({"disk": 9}).as_object().unwrap().clone();
        let e = extract(&good, d.path(), &over).unwrap();
        assert_eq!(std::fs::read(&e.image).unwrap(), b"IMAGEBYTES");
        assert_eq!(e.cloud_properties["disk"], 9);
        assert_eq!(e.cloud_properties["version"], "1.506");
        assert_eq!(e.api_version, Some(3));
        let image = e.image.clone();
        drop(e);
        assert!(!image.exists(), "the extracted image is removed");
        std::fs::write(d.path().join("bad.tar"), vec![0u8; 1024]).unwrap();
        assert!(matches!(extract(&d.path().join("bad.tar"), d.path(), &Map::new()), Err(TarballError::NoImage(_))));
        check(&good).unwrap();
        assert_eq!(read_manifest(&good).unwrap().and_then(|m| m.api_version), Some(3));
        assert_eq!(read_manifest(&d.path().join("bad.tar")).unwrap(), None);
        assert!(matches!(check(&d.path().join("bad.tar")), Err(TarballError::NoImage(_))));
        std::fs::write(d.path().join("junk"), vec![0x42u8; 4096]).unwrap();
        assert!(check(&d.path().join("junk")).is_err());
        assert!(matches!(check(&d.path().join("missing")), Err(TarballError::Read { .. })));
        // a manifest that does not read fails the check and the extraction, naming the file
        let files: [(&str, &[u8]); 2] = [("image", b"I"), ("stemcell.MF", b"cloud_properties: [1]\n")];
        let bad = tgz(d.path(), &files, false);
        assert!(matches!(check(&bad), Err(TarballError::Manifest { .. })));
        assert!(matches!(extract(&bad, d.path(), &Map::new()), Err(TarballError::Manifest { .. })));
    }

    /// Concatenated gzip members are one stream: a reader of the first member only would see a tarball
    /// without its image.
    #[test]
    fn a_multi_member_gzip_is_read_whole() {
        let d = tempfile::tempdir().unwrap();
        let image = vec![7u8; 100_000];
        let files: [(&str, &[u8]); 3] =
            [("stemcell.MF", MF.as_bytes()), ("./stemcell_dpkg_l.txt", b"ii x"), ("./image", &image)];
        let multi = tgz(d.path(), &files, true);
        let mut members = 0;
        let bytes = std::fs::read(&multi).unwrap();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let mut dec = flate2::bufread::GzDecoder::new(rest);
            std::io::copy(&mut dec, &mut std::io::sink()).unwrap();
            rest = dec.into_inner();
            members += 1;
        }
        assert_eq!(members, 4, "one gzip member per file and one for the tar's end");
        check(&multi).unwrap();
        let e = extract(&multi, d.path(), &Map::new()).unwrap();
        assert_eq!(std::fs::read(&e.image).unwrap(), image);
        assert_eq!((e.api_version, e.cloud_properties["disk"].as_u64()), (Some(3), Some(5120)));
    }
}
