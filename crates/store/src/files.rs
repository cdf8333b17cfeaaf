//! The SQLite database file and its file system: usable before any connection is tried, and how
//! much room is left (for `/readyz`).

use crate::StoreError;

/// Checks, before any connection is tried, that the SQLite file can be created or opened for
/// writing, so a missing, read-only or unwritable data directory is named with its cause at once
/// (not as a pool timeout). The file is made readable by its owner only.
pub(crate) fn usable_database_file(path: &std::path::Path) -> Result<(), StoreError> {
    let fail = |p: &std::path::Path, cause: String| StoreError::DataDir {
        path: p.display().to_string(),
        cause,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| fail(dir, format!("cannot create it: {e}")))?;
        let probe = dir.join(".signaalpoort-write-check");
        std::fs::write(&probe, b"").map_err(|e| {
            fail(
                dir,
                format!("cannot write in it (SQLite needs to, for its journal): {e}"),
            )
        })?;
        let _ = std::fs::remove_file(&probe);
    }
    let existed = path.exists();
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| {
            fail(
                path,
                format!("cannot open the database file for writing: {e}"),
            )
        })?;
    if !existed {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| fail(path, format!("cannot restrict its permissions: {e}")))?;
    }
    Ok(())
}

/// Free bytes for unprivileged writers on the file system holding `dir`.
pub(crate) fn free_bytes(dir: &std::path::Path) -> Result<u64, StoreError> {
    let st = rustix::fs::statvfs(dir).map_err(|e| StoreError::DataDir {
        path: dir.display().to_string(),
        cause: format!("cannot read its free space: {e}"),
    })?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}
