//! Helpers shared by the fuzz targets (included with `#[path]`, not a crate).
#![allow(dead_code)]

/// Panics unless `message` names `path`: every error about a user's file must say which file.
pub fn assert_names(message: &str, path: &str) {
    assert!(
        message.contains(path),
        "error does not name the file {path}: {message}"
    );
}

/// Splits `data` at a position given by its first two bytes (little-endian), after them.
pub fn split2(data: &[u8]) -> (&[u8], &[u8]) {
    if data.len() < 2 {
        return (data, &[]);
    }
    let at = u16::from_le_bytes([data[0], data[1]]) as usize;
    let rest = &data[2..];
    rest.split_at(at.min(rest.len()))
}

/// Writes `data` to `name` in a per-process scratch folder (in /dev/shm when there is one) and
/// returns its path, for parsers that only read from a file.
pub fn scratch_file(name: &str, data: &[u8]) -> std::path::PathBuf {
    static DIR: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let base = if std::path::Path::new("/dev/shm").is_dir() {
            std::path::PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("rnn-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    });
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    path
}
