//! The gateway's two secrets, created on first start with owner-only permissions: the pseudonym key
//! (HMAC for BSNs) and the Ed25519 checkpoint key. Neither ever enters the database.

use std::io::Write;
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom, SystemRandom};
use signaalpoort_core::access_log::Ed25519FileSigner;
use signaalpoort_core::{PseudonymKey, PSEUDONYM_KEY_LEN};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: expected {expected} bytes, found {found}")]
    WrongLength {
        path: PathBuf,
        expected: usize,
        found: usize,
    },
    #[error("{path}: not a valid Ed25519 PKCS#8 key")]
    BadCheckpointKey { path: PathBuf },
    #[error("the system random number generator failed")]
    Random,
    #[error("{path}: readable by group or others (mode {mode:o}); run chmod 600")]
    TooOpen { path: PathBuf, mode: u32 },
}

pub fn pseudonym_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("pseudonym.key")
}

pub fn checkpoint_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join("keys").join("checkpoint-ed25519.pk8")
}

/// Loads the pseudonym key, creating it when absent.
pub fn load_or_create_pseudonym_key(path: &Path) -> Result<PseudonymKey, KeyError> {
    let bytes = load_or_create(path, || {
        let mut key = [0u8; PSEUDONYM_KEY_LEN];
        SystemRandom::new()
            .fill(&mut key)
            .map_err(|_| KeyError::Random)?;
        Ok(key.to_vec())
    })?;
    let key: [u8; PSEUDONYM_KEY_LEN] =
        bytes
            .as_slice()
            .try_into()
            .map_err(|_| KeyError::WrongLength {
                path: path.to_owned(),
                expected: PSEUDONYM_KEY_LEN,
                found: bytes.len(),
            })?;
    Ok(PseudonymKey::from_bytes(&key))
}

/// Loads the checkpoint signing key (the default file-backed [`CheckpointSigner`]), creating it
/// when absent. `origin` is the log's name: the checkpoints' origin line and the key name.
///
/// [`CheckpointSigner`]: signaalpoort_core::access_log::CheckpointSigner
pub fn load_or_create_checkpoint_key(
    path: &Path,
    origin: &str,
) -> Result<Ed25519FileSigner, KeyError> {
    let bytes = load_or_create(path, || {
        Ed25519FileSigner::generate_pkcs8().map_err(|_| KeyError::Random)
    })?;
    Ed25519FileSigner::from_pkcs8(origin, &bytes).map_err(|_| KeyError::BadCheckpointKey {
        path: path.to_owned(),
    })
}

/// Loads a key file, creating it owner-only from `generate` when absent (also for a witness key).
pub fn load_or_create_raw(
    path: &Path,
    generate: impl FnOnce() -> Result<Vec<u8>, KeyError>,
) -> Result<Vec<u8>, KeyError> {
    load_or_create(path, generate)
}

fn load_or_create(
    path: &Path,
    generate: impl FnOnce() -> Result<Vec<u8>, KeyError>,
) -> Result<Vec<u8>, KeyError> {
    let io = |source| KeyError::Io {
        path: path.to_owned(),
        source,
    };
    match std::fs::read(path) {
        Ok(bytes) => {
            check_permissions(path)?;
            Ok(bytes)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let bytes = generate()?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let mut file = options.open(path).map_err(io)?;
            file.write_all(&bytes).map_err(io)?;
            file.sync_all().map_err(io)?;
            tracing::info!(path = %path.display(), "created key file");
            Ok(bytes)
        }
        Err(e) => Err(io(e)),
    }
}

fn check_permissions(path: &Path) -> Result<(), KeyError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(|source| KeyError::Io {
                path: path.to_owned(),
                source,
            })?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(KeyError::TooOpen {
                path: path.to_owned(),
                mode: mode & 0o777,
            });
        }
    }
    Ok(())
}
