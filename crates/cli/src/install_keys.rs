//! `signaalpoort install-keys`: copies the key files of a mounted Kubernetes Secret into the key
//! directory with owner-only permissions.
//!
//! The gateway refuses key files readable by group or others. A Secret volume cannot give that to
//! a non-root pod: with `fsGroup` the kubelet adds group read, without it the files belong to root.
//! So an initContainer running this same image copies them first (0700 directory, 0600 files),
//! instead of a second image with a shell.

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// Copies every regular file of `from` (following symlinks, skipping the Secret volume's own
/// `..data`-style entries) into `to`. Returns the names copied, sorted. Files already in `to` are
/// replaced atomically, so a restarted pod gets the Secret's current keys.
pub fn install_keys(from: &Path, to: &Path) -> anyhow::Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry.with_context(|| format!("reading {}", from.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        // metadata() follows the symlinks a Secret volume is made of.
        let meta = std::fs::metadata(entry.path())
            .with_context(|| format!("reading {}", entry.path().display()))?;
        if meta.is_file() {
            names.push(name);
        }
    }
    names.sort();
    if names.is_empty() {
        bail!(
            "{} holds no key files: is the Secret mounted and filled?",
            from.display()
        );
    }
    create_private_dir(to)?;
    for name in &names {
        let bytes = std::fs::read(from.join(name))
            .with_context(|| format!("reading {}", from.join(name).display()))?;
        write_private(&to.join(name), &bytes)?;
    }
    Ok(names)
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        builder.mode(0o700);
        builder
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        // An existing directory keeps its mode with create(): narrow it.
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("chmod 700 {}", dir.display()))?;
    }
    #[cfg(not(unix))]
    builder
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    Ok(())
}

/// Writes `bytes` to a new 0600 file beside `path`, syncs it and renames it over `path`.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let mut tmp: PathBuf = path.to_owned();
    tmp.set_extension("install-tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{symlink, PermissionsExt};

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    /// A Secret volume as the kubelet lays it out: files are symlinks into `..data`, which points at
    /// a timestamped directory; all group- and world-readable.
    fn secret_volume(dir: &Path, files: &[(&str, &str)]) {
        let real = dir.join("..2026_11_23_17_00_00.1");
        std::fs::create_dir_all(&real).unwrap();
        for (name, bytes) in files {
            std::fs::write(real.join(name), bytes).unwrap();
            std::fs::set_permissions(real.join(name), std::fs::Permissions::from_mode(0o644))
                .unwrap();
            symlink(Path::new("..data").join(name), dir.join(name)).unwrap();
        }
        symlink("..2026_11_23_17_00_00.1", dir.join("..data")).unwrap();
    }

    #[test]
    fn copies_a_secret_volume_owner_only_and_skips_its_internals() {
        let tmp = tempfile::tempdir().unwrap();
        let (from, to) = (tmp.path().join("secret"), tmp.path().join("data/keys"));
        secret_volume(
            &from,
            &[("pseudonym.key", "k1"), ("checkpoint-ed25519.pk8", "k2")],
        );
        let names = install_keys(&from, &to).unwrap();
        assert_eq!(names, ["checkpoint-ed25519.pk8", "pseudonym.key"]);
        assert_eq!(mode(&to), 0o700);
        for (name, content) in [("pseudonym.key", "k1"), ("checkpoint-ed25519.pk8", "k2")] {
            assert_eq!(std::fs::read(to.join(name)).unwrap(), content.as_bytes());
            assert_eq!(mode(&to.join(name)), 0o600, "{name}");
        }
        let mut left: Vec<_> = to
            .read_dir()
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        left.sort();
        assert_eq!(left, ["checkpoint-ed25519.pk8", "pseudonym.key"]);
    }

    #[test]
    fn a_rerun_replaces_the_keys_with_the_secrets_current_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let (from, to) = (tmp.path().join("secret"), tmp.path().join("keys"));
        std::fs::create_dir_all(&to).unwrap();
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(to.join("pseudonym.key"), b"old").unwrap();
        secret_volume(&from, &[("pseudonym.key", "new")]);
        install_keys(&from, &to).unwrap();
        assert_eq!(std::fs::read(to.join("pseudonym.key")).unwrap(), b"new");
        assert_eq!(mode(&to.join("pseudonym.key")), 0o600);
        assert_eq!(mode(&to), 0o700);
    }

    #[test]
    fn an_empty_or_missing_secret_is_an_error_naming_it() {
        let tmp = tempfile::tempdir().unwrap();
        let empty = tmp.path().join("empty");
        std::fs::create_dir_all(&empty).unwrap();
        let err = install_keys(&empty, &tmp.path().join("keys")).unwrap_err();
        assert!(err.to_string().contains("holds no key files"), "{err}");
        assert!(!tmp.path().join("keys").exists());
        let err = install_keys(&tmp.path().join("absent"), &tmp.path().join("keys")).unwrap_err();
        assert!(format!("{err:#}").contains("absent"), "{err:#}");
    }
}
