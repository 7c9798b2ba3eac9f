//! Where received files go: a sanitised name inside the download folder, never outside it and
//! never over an existing file.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

/// The last path component of `name`, with anything but letters, digits, `.`, `-`, `_` and
/// spaces replaced, no leading dots (no hidden files, no `..`), and at most 100 characters.
pub fn sanitise(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = base
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | ' ') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let trimmed = cleaned.trim().trim_start_matches('.');
    let short: String = trimmed.chars().take(100).collect();
    if short.is_empty() {
        "file".to_owned()
    } else {
        short
    }
}

/// Saves `data` as `dir/name`, or `dir/stem (2).ext` and so on when that exists. The file is
/// created with `create_new`, so a file that appears meanwhile is not overwritten either.
pub fn save(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let name = sanitise(name);
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name.as_str(), ""),
    };
    for n in 1..10_000 {
        let candidate = if n == 1 {
            name.clone()
        } else {
            format!("{stem} ({n}){ext}")
        };
        let path = dir.join(candidate);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut file) => {
                file.write_all(data)?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(std::io::Error::other("too many files of that name"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_leave_the_folder_or_hide() {
        assert_eq!(sanitise("../../etc/passwd"), "passwd");
        assert_eq!(sanitise("..\\..\\boot.ini"), "boot.ini");
        assert_eq!(sanitise(".bashrc"), "bashrc");
        assert_eq!(sanitise(".."), "file");
        assert_eq!(sanitise(""), "file");
        assert_eq!(sanitise("a\u{0}b\nc;rm -rf.png"), "a_b_c_rm -rf.png");
        assert_eq!(sanitise("çà va.txt"), "çà va.txt");
        assert_eq!(sanitise(&"x".repeat(300)).len(), 100);
    }

    #[test]
    fn never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        let a = save(dir.path(), "cat.png", b"one").unwrap();
        let b = save(dir.path(), "cat.png", b"two").unwrap();
        let c = save(dir.path(), "../cat.png", b"three").unwrap();
        assert_eq!(a.file_name().unwrap(), "cat.png");
        assert_eq!(b.file_name().unwrap(), "cat (2).png");
        assert_eq!(c.file_name().unwrap(), "cat (3).png");
        assert_eq!(std::fs::read(&a).unwrap(), b"one");
        assert!(c.starts_with(dir.path()));
    }
}
