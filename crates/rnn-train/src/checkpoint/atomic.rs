//! Atomic replacement of a checkpoint directory: write a hidden sibling, fsync, rename into
//! place; and the repair of what a killed save leaves behind.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::Device;

use super::format::{read_state, MODEL_FILE, STATE_FILE};
use super::load;
use crate::{Error, Result};

/// The file-system operations of a save, so that tests can fail any of them half-way.
pub(super) trait FileSystem {
    /// Creates `path` (which must not exist), writes `bytes` and makes them durable.
    fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()>;
    /// Makes the entries of directory `path` durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Renames `from` to `to`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
}

/// The real file system.
pub(super) struct RealFs;

impl FileSystem for RealFs {
    fn write_file(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)?;
        file.write_all(bytes)?;
        file.sync_all()
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        // Unix needs the directory itself fsynced for new entries and renames to survive a
        // power loss; other platforms cannot open a directory as a file and have no equivalent.
        #[cfg(unix)]
        {
            fs::File::open(path)?.sync_all()
        }
        #[cfg(not(unix))]
        {
            let _ = path;
            Ok(())
        }
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }
}

pub(super) fn write_all_files(
    fs: &dyn FileSystem,
    temp: &Path,
    files: &[(String, Vec<u8>)],
) -> Result<()> {
    for (file, bytes) in files {
        let path = temp.join(file);
        fs.write_file(&path, bytes)
            .map_err(|e| Error::file(file, format!("cannot write {}: {e}", path.display())))?;
    }
    fs.sync_dir(temp).map_err(|e| {
        Error::file(
            temp,
            format!("cannot sync the temporary checkpoint directory: {e}"),
        )
    })
}

/// Removes the temporary directory after a failure and turns `e` into an error naming `dir`
/// and saying that the previous checkpoint is intact.
pub(super) fn discard_temp(temp: &Path, dir: &Path, e: Error) -> Error {
    let cleanup = match fs::remove_dir_all(temp) {
        Ok(()) => String::new(),
        Err(r) => format!(
            "; the temporary directory {} could not be removed ({r})",
            temp.display()
        ),
    };
    let what = match e {
        // The file-name-only path given by `write_all_files` reads better inside the message.
        Error::File { path, message } if path.is_relative() && path.components().count() == 1 => {
            format!("{}: {message}", path.display())
        }
        other => other.to_string(),
    };
    Error::file(
        dir,
        format!("checkpoint not saved, the previous one (if any) is unchanged: {what}{cleanup}"),
    )
}

/// Moves the complete `temp` into place as `dir`, keeping the previous checkpoint until the new
/// one is there.
pub(super) fn replace_dir(
    fs: &dyn FileSystem,
    temp: &Path,
    dir: &Path,
    parent: &Path,
    name: &str,
) -> Result<()> {
    let backup = if dir.exists() {
        let backup = unique_sibling(parent, name, "old");
        if let Err(e) = fs.rename(dir, &backup) {
            let e = Error::Invalid(format!(
                "cannot move the previous checkpoint aside to {}: {e}",
                backup.display()
            ));
            return Err(discard_temp(temp, dir, e));
        }
        Some(backup)
    } else {
        None
    };
    if let Err(e) = fs.rename(temp, dir) {
        let restore = match &backup {
            Some(backup) => match fs.rename(backup, dir) {
                Ok(()) => String::new(),
                Err(r) => format!(
                    " (and the previous checkpoint could not be moved back from {}: {r})",
                    backup.display()
                ),
            },
            None => String::new(),
        };
        let e = Error::Invalid(format!(
            "cannot rename {} into place: {e}{restore}",
            temp.display()
        ));
        return Err(discard_temp(temp, dir, e));
    }
    fs.sync_dir(parent).map_err(|e| {
        Error::file(
            parent,
            format!(
                "checkpoint {} written, but its parent directory could not be synced: {e}",
                dir.display()
            ),
        )
    })?;
    if let Some(backup) = backup {
        fs::remove_dir_all(&backup).map_err(|e| {
            Error::file(
                &backup,
                format!(
                    "checkpoint {} written, but the previous one could not be removed: {e}",
                    dir.display()
                ),
            )
        })?;
    }
    Ok(())
}

/// The process id and kind (`tmp` or `old`) of a sibling that a save of checkpoint `name`
/// creates (`.NAME.KIND-PID-NANOS-N`), or `None` for any other file name.
pub(super) fn save_sibling(file_name: &str, name: &str) -> Option<(&'static str, u32)> {
    let rest = file_name
        .strip_prefix('.')?
        .strip_prefix(name)?
        .strip_prefix('.')?;
    let (kind, rest) = if let Some(r) = rest.strip_prefix("tmp-") {
        ("tmp", r)
    } else {
        ("old", rest.strip_prefix("old-")?)
    };
    let mut parts = rest.split('-');
    let pid = parts.next()?.parse().ok()?;
    let nanos_and_n_are_numbers =
        parts.clone().count() == 2 && parts.all(|p| p.parse::<u128>().is_ok());
    nanos_and_n_are_numbers.then_some((kind, pid))
}

/// Whether process `pid` may still be running (always `true` where `/proc` is not available,
/// so that nothing of a live writer is ever removed).
fn process_may_be_alive(pid: u32) -> bool {
    let proc = Path::new("/proc");
    !proc.join("self").exists() || proc.join(pid.to_string()).exists()
}

/// The save siblings of checkpoint `dir` left by processes that are no longer running, with
/// their kind (`tmp`: an unfinished write, `old`: the previous checkpoint moved aside).
pub(super) fn dead_save_siblings(dir: &Path) -> Result<Vec<(&'static str, PathBuf)>> {
    let (parent, name) = split_dir(dir)?;
    let Ok(entries) = fs::read_dir(&parent) else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(file_name) = file_name.to_str() else {
            continue;
        };
        if let Some((kind, pid)) = save_sibling(file_name, &name) {
            if pid != std::process::id() && !process_may_be_alive(pid) {
                out.push((kind, entry.path()));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Repairs what a killed save of checkpoint `dir` can leave behind, before a run resumes from
/// it: if `dir` holds no checkpoint but the previous checkpoint was moved aside
/// (`.NAME.old-*`, a kill between the two renames of
/// [`Checkpoint::save`](super::Checkpoint::save)), the newest such backup that loads is renamed
/// back into place; then unfinished writes (`.NAME.tmp-*`) and other backups of processes that
/// are no longer running are removed. Returns the backup that was restored, if any. Siblings of
/// running processes are never touched.
pub fn recover(dir: &Path) -> Result<Option<PathBuf>> {
    let siblings = dead_save_siblings(dir)?;
    let mut restored = None;
    if !dir.join(STATE_FILE).is_file() {
        let mut backups: Vec<(u64, &PathBuf)> = siblings
            .iter()
            .filter(|(kind, _)| *kind == "old")
            .filter_map(|(_, path)| {
                let state = read_state(&path.join(STATE_FILE)).ok()?;
                load(path, &Device::Cpu).ok()?;
                Some((state.step, path))
            })
            .collect();
        backups.sort();
        if let Some((_, backup)) = backups.last() {
            if dir.exists() {
                // Only an empty directory can be here (a save never leaves anything else).
                fs::remove_dir(dir).map_err(|source| Error::Io {
                    path: dir.to_path_buf(),
                    source,
                })?;
            }
            fs::rename(backup, dir).map_err(|e| {
                Error::file(
                    dir,
                    format!("cannot restore the backup {}: {e}", backup.display()),
                )
            })?;
            restored = Some((*backup).clone());
        }
    }
    for (_, path) in &siblings {
        if Some(path) != restored.as_ref() {
            // Best effort: a leftover that cannot be removed costs only disk space.
            let _ = fs::remove_dir_all(path);
        }
    }
    Ok(restored)
}

/// The parent (`.` for a bare name) and the final component of `dir`.
pub(super) fn split_dir(dir: &Path) -> Result<(PathBuf, String)> {
    let name = dir
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| {
            Error::Invalid(format!(
                "checkpoint path {} must end in a UTF-8 directory name",
                dir.display()
            ))
        })?
        .to_string();
    let parent = match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    Ok((parent, name))
}

/// `dir` may be replaced if it does not exist, is empty, or is a checkpoint; anything else could
/// be the user's data behind a mistyped path.
pub(super) fn check_replaceable(dir: &Path) -> Result<()> {
    let meta = match fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(Error::Io {
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    if !meta.is_dir() {
        return Err(Error::file(
            dir,
            "exists and is not a directory; refusing to replace it with a checkpoint",
        ));
    }
    let mut entries = fs::read_dir(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let is_empty = entries.next().is_none();
    if is_empty || dir.join(STATE_FILE).exists() || dir.join(MODEL_FILE).exists() {
        return Ok(());
    }
    Err(Error::file(
        dir,
        format!(
            "exists and is not a checkpoint (no {STATE_FILE} or {MODEL_FILE}); refusing to \
             replace it"
        ),
    ))
}

/// A fresh sibling name `.{name}.{kind}-{pid}-{nanos}-{n}` of `dir`; the counter keeps names
/// distinct between threads of one process within one clock tick.
pub(super) fn unique_sibling(parent: &Path, name: &str, kind: &str) -> PathBuf {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    parent.join(format!(".{name}.{kind}-{}-{nanos}-{n}", std::process::id()))
}

pub(super) fn check_checkpoint_dir(dir: &Path) -> Result<()> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => Ok(()),
        Ok(_) => Err(Error::file(
            dir,
            "is not a checkpoint directory (not a directory)",
        )),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let hint = match split_dir(dir).ok().and_then(|(p, n)| left_behind(&p, &n)) {
                Some(backup) => format!(
                    "; a save was interrupted while replacing it: the previous checkpoint is at \
                     {} (rename it to {})",
                    backup.display(),
                    dir.display()
                ),
                None => String::new(),
            };
            Err(Error::file(
                dir,
                format!("checkpoint directory does not exist{hint}"),
            ))
        }
        Err(source) => Err(Error::Io {
            path: dir.to_path_buf(),
            source,
        }),
    }
}

/// A previous checkpoint moved aside by a save that then crashed before the new one was
/// renamed into place.
fn left_behind(parent: &Path, name: &str) -> Option<PathBuf> {
    let prefix = format!(".{name}.old-");
    let mut found: Vec<PathBuf> = fs::read_dir(parent)
        .ok()?
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .map(|e| e.path())
        .filter(|p| p.join(STATE_FILE).is_file())
        .collect();
    found.sort();
    found.pop()
}
