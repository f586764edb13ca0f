//! Stemcell tarballs for `create_stemcell`, the way the BOSH director prepares them: the `image` member is
//! extracted to a file and the `cloud_properties` of `stemcell.MF` go with it.
//!
//! `stemcell.MF` is YAML; the launcher reads only its `cloud_properties` block, which in published stemcells
//! is a flat map of scalars. Anything else there (nested maps, lists) is refused with a message that says to
//! give `cloud_properties` in the pool config instead; values from the config win over the manifest's.
use serde_json::{Map, Value};
use std::io::Read;
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

/// A stemcell ready for `create_stemcell`: the extracted image (removed on drop) and its cloud_properties.
pub struct Extracted {
    pub image: PathBuf,
    pub cloud_properties: Map<String, Value>,
    _dir: tempfile::TempDir,
}

/// Opens a tarball, gunzipping it when it starts with the gzip magic.
fn open(tarball: &Path) -> Result<tar::Archive<Box<dyn Read>>, TarballError> {
    let read = |source| TarballError::Read { path: tarball.to_path_buf(), source };
    let mut f = std::fs::File::open(tarball).map_err(read)?;
    let mut magic = [0u8; 2];
    f.read_exact(&mut magic).map_err(read)?;
    let f = std::fs::File::open(tarball).map_err(read)?;
    let reader: Box<dyn Read> =
        if magic == [0x1f, 0x8b] { Box::new(flate2::read::GzDecoder::new(f)) } else { Box::new(f) };
    Ok(tar::Archive::new(reader))
}

/// Checks that a file is a stemcell tarball (it has an `image` member) without extracting it.
pub fn probe(tarball: &Path) -> Result<(), TarballError> {
    let read = |source| TarballError::Read { path: tarball.to_path_buf(), source };
    let mut archive = open(tarball)?;
    for entry in archive.entries().map_err(read)? {
        let entry = entry.map_err(read)?;
        if entry.path().map_err(read)?.to_string_lossy().trim_start_matches("./") == "image" {
            return Ok(());
        }
    }
    Err(TarballError::NoImage(tarball.to_path_buf()))
}

/// The text of a tarball's `stemcell.MF` (read up to that member; `None` when it has none).
pub fn read_manifest(tarball: &Path) -> Result<Option<String>, TarballError> {
    let read = |source| TarballError::Read { path: tarball.to_path_buf(), source };
    let mut archive = open(tarball)?;
    for entry in archive.entries().map_err(read)? {
        let entry = entry.map_err(read)?;
        if entry.path().map_err(read)?.to_string_lossy().trim_start_matches("./") == "stemcell.MF" {
            let mut text = String::new();
            entry.take(1 << 20).read_to_string(&mut text).map_err(read)?;
            return Ok(Some(text));
        }
    }
    Ok(None)
}

/// The top-level `api_version` of a stemcell manifest.
pub fn manifest_api_version(text: &str) -> Option<u32> {
    text.lines()
        .find_map(|l| l.strip_prefix("api_version:"))
        .and_then(|v| v.trim().trim_matches(['\'', '"']).parse().ok())
}

/// Extracts `image` and reads `stemcell.MF` from a (gzipped) stemcell tarball into a directory under `tmp`.
pub fn extract(tarball: &Path, tmp: &Path, overrides: &Map<String, Value>) -> Result<Extracted, TarballError> {
    let read = |source| TarballError::Read { path: tarball.to_path_buf(), source };
    let dir = tempfile::Builder::new().prefix("stemcell-").tempdir_in(tmp).map_err(read)?;
    let mut archive = open(tarball)?;
    let image = dir.path().join("image");
    let (mut have_image, mut manifest) = (false, None);
    for entry in archive.entries().map_err(read)? {
        let mut entry = entry.map_err(read)?;
        let name = entry.path().map_err(read)?.to_string_lossy().trim_start_matches("./").to_string();
        match name.as_str() {
            "image" => {
                let mut out = std::fs::File::create(&image).map_err(read)?;
                std::io::copy(&mut entry, &mut out).map_err(read)?;
                have_image = true;
            }
            "stemcell.MF" => {
                let mut text = String::new();
                entry.take(1 << 20).read_to_string(&mut text).map_err(read)?;
                manifest = Some(text);
            }
            _ => {}
        }
    }
    if !have_image {
        return Err(TarballError::NoImage(tarball.to_path_buf()));
    }
    let mut cloud_properties = match manifest {
        Some(text) => manifest_cloud_properties(&text)
            .map_err(|reason| TarballError::Manifest { path: tarball.to_path_buf(), reason })?,
        None => Map::new(),
    };
    for (k, v) in overrides {
        cloud_properties.insert(k.clone(), v.clone());
    }
    Ok(Extracted { image, cloud_properties, _dir: dir })
}

fn scalar(v: &str) -> Value {
    let v = v.trim();
    if let Some(q) = v.strip_prefix('\'').and_then(|r| r.strip_suffix('\'')) {
        return Value::String(q.replace("''", "'"));
    }
    if let Some(q) = v.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        return Value::String(q.to_string());
    }
    match v {
        "true" => return Value::Bool(true),
        "false" => return Value::Bool(false),
        "null" | "~" | "" => return Value::Null,
        _ => {}
    }
    if let Ok(n) = v.parse::<i64>() {
        return Value::from(n);
    }
    if let Ok(f) = v.parse::<f64>() {
        return Value::from(f);
    }
    Value::String(v.to_string())
}

/// The flat `cloud_properties:` map of a stemcell manifest.
pub fn manifest_cloud_properties(text: &str) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    let mut inside = false;
    let mut indent = None;
    for line in text.lines() {
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let lead = line.len() - line.trim_start().len();
        if !inside {
            if lead == 0 && line.trim_end() == "cloud_properties:" {
                inside = true;
            } else if lead == 0 && line.starts_with("cloud_properties:") {
                let rest = line["cloud_properties:".len()..].trim();
                if rest == "{}" {
                    return Ok(out);
                }
                return Err(
                    "cloud_properties is not a block map; set cloud_properties in the pool's stemcell config".into()
                );
            }
            continue;
        }
        if lead == 0 {
            break;
        }
        if *indent.get_or_insert(lead) != lead {
            return Err(
                "cloud_properties holds nested values; set cloud_properties in the pool's stemcell config".into()
            );
        }
        let (k, v) = line.trim().split_once(':').ok_or_else(|| format!("cannot read line {:?}", line.trim()))?;
        if v.trim().is_empty() || v.trim().starts_with(['[', '{', '|', '>', '&', '*']) {
            return Err(format!(
                "cloud_properties.{} is not a scalar; set cloud_properties in the pool's stemcell config",
                k.trim()
            ));
        }
        out.insert(k.trim().to_string(), scalar(v));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const MF: &str = "---\nname: bosh-openstack-kvm-ubuntu-jammy-go_agent\nversion: '1.506'\napi_version: 3\nstemcell_formats:\n- openstack-qcow2\ncloud_properties:\n  name: bosh-openstack-kvm-ubuntu-jammy-go_agent\n  version: '1.506'\n  disk: 5120\n  auto_disk_config: true\n  os_distro: \"ubuntu\"\nsha1: abc\n";

    #[test]
    fn manifest_api_version_is_read() {
        assert_eq!(manifest_api_version(MF), Some(3));
        assert_eq!(manifest_api_version("name: x\napi_version: '2'\n"), Some(2));
        assert_eq!(manifest_api_version("name: x\ncloud_properties:\n  api_version: 9\n"), None);
        assert_eq!(manifest_api_version("api_version: three\n"), None);
    }

    #[test]
    fn manifest_cloud_properties_are_read_flat() {
        let cp = manifest_cloud_properties(MF).unwrap();
        assert_eq!(
            Value::Object(cp),
            json!({"name": "bosh-openstack-kvm-ubuntu-jammy-go_agent", "version": "1.506", "disk": 5120, "auto_disk_config": true, "os_distro": "ubuntu"})
        );
        assert!(manifest_cloud_properties("cloud_properties:\n  a:\n    b: 1\n")
            .unwrap_err()
            .contains("in the pool's stemcell config"));
        assert!(manifest_cloud_properties("cloud_properties:\n  a: 1\n    b: 1\n").unwrap_err().contains("nested"));
        assert!(manifest_cloud_properties("cloud_properties: {}\n").unwrap().is_empty());
    }

    #[test]
    fn extracts_the_image_from_a_gzipped_tarball() {
        let d = tempfile::tempdir().unwrap();
        let tgz = d.path().join("stemcell.tgz");
        {
            let gz = flate2::write::GzEncoder::new(std::fs::File::create(&tgz).unwrap(), flate2::Compression::fast());
            let mut t = tar::Builder::new(gz);
            for (name, data) in [("stemcell.MF", MF.as_bytes()), ("image", b"IMAGEBYTES".as_slice())] {
                let mut h = tar::Header::new_gnu();
                h.set_size(data.len() as u64);
                h.set_mode(0o644);
                h.set_cksum();
                t.append_data(&mut h, name, data).unwrap();
            }
            t.into_inner().unwrap().finish().unwrap();
        }
        let over = json!({"disk": 9}).as_object().unwrap().clone();
        let e = extract(&tgz, d.path(), &over).unwrap();
        assert_eq!(std::fs::read(&e.image).unwrap(), b"IMAGEBYTES");
        assert_eq!(e.cloud_properties["disk"], 9);
        assert_eq!(e.cloud_properties["version"], "1.506");
        let image = e.image.clone();
        drop(e);
        assert!(!image.exists(), "the extracted image is removed");
        std::fs::write(d.path().join("bad.tar"), vec![0u8; 1024]).unwrap();
        assert!(matches!(extract(&d.path().join("bad.tar"), d.path(), &Map::new()), Err(TarballError::NoImage(_))));
        probe(&tgz).unwrap();
        assert_eq!(read_manifest(&tgz).unwrap().as_deref().and_then(manifest_api_version), Some(3));
        assert_eq!(read_manifest(&d.path().join("bad.tar")).unwrap(), None);
        assert!(matches!(probe(&d.path().join("bad.tar")), Err(TarballError::NoImage(_))));
        std::fs::write(d.path().join("junk"), vec![0x42u8; 4096]).unwrap();
        assert!(probe(&d.path().join("junk")).is_err());
        assert!(matches!(probe(&d.path().join("missing")), Err(TarballError::Read { .. })));
    }
}
