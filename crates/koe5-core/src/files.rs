//! Opening the files of a model directory safely. A model directory may be named by a
//! role that is not a superuser (`GRANT SET ON PARAMETER koe5.model_path`), and whatever
//! sits in it is opened inside a PostgreSQL backend, or the postmaster when preloading.
//! So every model file is:
//!
//! - opened without blocking (a FIFO would otherwise hang `open()` beyond the reach of
//!   cancel and statement_timeout) and accepted only if it is a regular file (`/dev/zero`
//!   would otherwise be read until the OOM killer resets the server);
//! - at most a size cap long ([`MAX_JSON`], [`MAX_TOKENIZER`]);
//! - inside the model directory once symlinks are followed, unless every symlink on the
//!   way belongs to root or to the server's own user: a link someone else made may not
//!   lead the server to its own files (their SHA-256, size or first bytes would be
//!   reported back). A Hugging Face cache snapshot (`models--owner--name/snapshots/REV`)
//!   may link into its repository's `blobs/`, as the cache is laid out.
//!
//! It also says which file a path names now ([`file_stamp`]) and what a file holds
//! ([`sha256_file`]), so a model can tell that its files changed.

use std::fs::{File, Metadata};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use crate::error::{Error, ErrorKind, Result};

/// The JSON files of a model (config.json, modules.json, sentence_bert_config.json,
/// 1_Pooling/config.json): KoE5's largest is under 1 KB.
pub const MAX_JSON: u64 = 1 << 20;
/// tokenizer.json: KoE5's is 17 MB (XLM-R's 250,002 pieces); BGE-M3's the same.
pub const MAX_TOKENIZER: u64 = 64 << 20;
/// Symlinks followed in a row at most (Linux's own limit).
const MAX_HOPS: usize = 40;

/// Who may own a symlink that leads out of a model directory: root and the user the
/// server runs as.
fn trusted_owner(uid: u32) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    uid == 0 || uid == unsafe { libc::geteuid() }
}

/// The directories a model file may resolve into: the model directory itself and, for
/// a Hugging Face cache snapshot, its repository directory.
fn roots(dir: &Path) -> Vec<PathBuf> {
    let mut roots = vec![dir.to_path_buf()];
    if let Some(snapshots) = dir.parent() {
        if let Some(repo) = snapshots.parent() {
            let is_repo = repo.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("models--"));
            if snapshots.file_name().is_some_and(|n| n == "snapshots") && is_repo {
                roots.push(repo.to_path_buf());
            }
        }
    }
    roots
}

fn not_regular(path: &Path) -> Error {
    Error::new(ErrorKind::MissingFile, format!("\"{}\" is not a regular file", path.display()))
        .with_detail("Model files must be regular files: devices, FIFOs and sockets are refused.")
}

fn escapes(path: &Path) -> Error {
    Error::new(ErrorKind::MissingFile, format!("model file \"{}\" leads out of the model directory", path.display()))
        .with_detail(
            "A symbolic link that points outside the model directory is followed only if it belongs to root or \
             to the server's operating-system user.",
        )
}

/// Checks where `path` (a file under `dir`) really is: follows every symlink on the
/// way, component by component, and accepts the result if it lies inside `dir` (or its
/// snapshot repository), or if every symlink followed has a trusted owner.
pub fn check_inside(dir: &Path, path: &Path) -> Result<()> {
    let root = std::fs::canonicalize(dir).map_err(|e| Error::io(dir, e))?;
    let rel = path.strip_prefix(dir).map_err(|_| escapes(path))?;
    let mut all_trusted = true;
    let mut cur = root.clone();
    let mut todo: Vec<PathBuf> = rel.components().rev().map(|c| PathBuf::from(c.as_os_str())).collect();
    let mut hops = 0;
    while let Some(part) = todo.pop() {
        match part.components().next() {
            Some(Component::ParentDir) => {
                cur.pop();
                continue;
            }
            Some(Component::RootDir) => {
                cur = PathBuf::from("/");
                continue;
            }
            Some(Component::CurDir) | None => continue,
            _ => {}
        }
        let next = cur.join(&part);
        let meta = std::fs::symlink_metadata(&next).map_err(|e| Error::io(path, e))?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > MAX_HOPS {
                return Err(Error::new(ErrorKind::Io, format!("too many symbolic links at \"{}\"", path.display())));
            }
            all_trusted &= trusted_owner(meta.uid());
            let target = std::fs::read_link(&next).map_err(|e| Error::io(path, e))?;
            // Resolve the target's components from where the link sits.
            todo.extend(target.components().rev().map(|c| PathBuf::from(c.as_os_str())));
        } else {
            cur = next;
        }
    }
    if all_trusted || roots(&root).iter().any(|r| cur.starts_with(r)) {
        Ok(())
    } else {
        Err(escapes(path))
    }
}

/// Opens `path` (a file of the model directory `dir`) for reading, after the checks
/// above; `cap` bytes at most. Returns the file and its metadata.
pub fn open(dir: &Path, path: &Path, cap: u64) -> Result<(File, Metadata)> {
    check_inside(dir, path)?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if !meta.is_file() {
        return Err(not_regular(path));
    }
    if meta.len() > cap {
        return Err(Error::new(
            ErrorKind::InvalidConfig,
            format!("model file \"{}\" is larger than the {} MiB koe5 reads", path.display(), cap >> 20),
        ));
    }
    Ok((file, meta))
}

/// The whole of a small model file (JSON, tokenizer), through [`open`].
pub fn read(dir: &Path, path: &Path, cap: u64) -> Result<Vec<u8>> {
    let (file, meta) = open(dir, path, cap)?;
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    // A file that grows while it is read is still cut at the cap.
    file.take(cap + 1).read_to_end(&mut bytes).map_err(|e| Error::io(path, e))?;
    if bytes.len() as u64 > cap {
        return Err(Error::new(
            ErrorKind::InvalidConfig,
            format!("model file \"{}\" is larger than the {} MiB koe5 reads", path.display(), cap >> 20),
        ));
    }
    Ok(bytes)
}

/// Whether `path` names something (file, directory, link, anything), without opening it.
pub fn present(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

/// Which file a path names (device, inode), with its size and modification time:
/// enough to notice that it was rewritten in place or replaced by a rename.
pub type FileStamp = (u64, u64, u64, SystemTime);

pub fn file_stamp(path: &Path) -> Result<FileStamp> {
    let meta = std::fs::metadata(path).map_err(|e| Error::io(path, e))?;
    Ok((meta.dev(), meta.ino(), meta.len(), meta.modified().map_err(|e| Error::io(path, e))?))
}

/// SHA-256 of a model file, hex-encoded, read in 1 MiB pieces (opened by [`open`], as a
/// file of the directory that holds it); `interrupt` runs between pieces.
pub fn sha256_file(path: &Path, interrupt: &mut dyn FnMut()) -> Result<String> {
    use sha2::{Digest, Sha256};
    let (mut f, _) = open(path.parent().unwrap_or(Path::new("/")), path, u64::MAX)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        interrupt();
        let n = f.read(&mut buf).map_err(|e| Error::io(path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Fails if `path` is no longer the file `before` stamped: a file rewritten in place
/// while it was read would give a half-old, half-new model.
pub(crate) fn check_unchanged(path: &Path, before: &FileStamp) -> Result<()> {
    if file_stamp(path)? != *before {
        return Err(Error::new(
            ErrorKind::Io,
            format!("model file \"{}\" changed while it was being loaded", path.display()),
        )
        .with_hint("Replace a model by renaming a complete new directory into place, then retry."));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn scratch(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("koe5-files-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn fifos_devices_and_big_files_are_refused_at_once() {
        let d = scratch("kinds");
        let fifo = d.join("modules.json");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let t = std::time::Instant::now();
        let e = read(&d, &fifo, MAX_JSON).unwrap_err();
        assert!(t.elapsed().as_secs() < 2 && e.message.contains("not a regular file"), "{e:?}");
        let zero = d.join("config.json");
        symlink("/dev/zero", &zero).unwrap();
        assert!(read(&d, &zero, MAX_JSON).unwrap_err().message.contains("not a regular file"));
        let big = d.join("tokenizer.json");
        File::create(&big).unwrap().set_len(MAX_JSON + 1).unwrap();
        let e = read(&d, &big, MAX_JSON).unwrap_err();
        assert_eq!(e.kind, ErrorKind::InvalidConfig);
        assert!(e.message.contains("larger than the 1 MiB"), "{e:?}");
        std::fs::write(d.join("ok.json"), b"{}").unwrap();
        assert_eq!(read(&d, &d.join("ok.json"), MAX_JSON).unwrap(), b"{}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn links_out_of_the_directory_need_a_trusted_owner() {
        let d = scratch("links");
        let outside = scratch("links-outside");
        std::fs::write(outside.join("secret"), b"x").unwrap();
        std::fs::write(d.join("real.json"), b"{}").unwrap();
        symlink("real.json", d.join("inside.json")).unwrap();
        symlink(outside.join("secret"), d.join("out.json")).unwrap();
        // Inside: fine whoever owns the link. Out, with our own link: trusted.
        check_inside(&d, &d.join("inside.json")).unwrap();
        check_inside(&d, &d.join("out.json")).unwrap();
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            // A link that belongs to someone else (nobody) may stay inside, not leave.
            for name in ["inside.json", "out.json"] {
                std::os::unix::fs::lchown(d.join(name), Some(65534), Some(65534)).unwrap();
            }
            check_inside(&d, &d.join("inside.json")).unwrap();
            let e = check_inside(&d, &d.join("out.json")).unwrap_err();
            assert!(e.message.contains("leads out of the model directory"), "{e:?}");
            assert!(read(&d, &d.join("out.json"), MAX_JSON).is_err());
            // ... nor through a directory link of its own.
            symlink(&outside, d.join("sub")).unwrap();
            std::os::unix::fs::lchown(d.join("sub"), Some(65534), Some(65534)).unwrap();
            assert!(check_inside(&d, &d.join("sub/secret")).is_err());
        }
        // A cache snapshot may link into its repository's blobs.
        let repo = d.join("models--o--n");
        std::fs::create_dir_all(repo.join("blobs")).unwrap();
        std::fs::create_dir_all(repo.join("snapshots/abc")).unwrap();
        std::fs::write(repo.join("blobs/123"), b"{}").unwrap();
        symlink("../../blobs/123", repo.join("snapshots/abc/config.json")).unwrap();
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } == 0 {
            std::os::unix::fs::lchown(repo.join("snapshots/abc/config.json"), Some(65534), Some(65534)).unwrap();
        }
        let snap = repo.join("snapshots/abc");
        assert_eq!(read(&snap, &snap.join("config.json"), MAX_JSON).unwrap(), b"{}");
        std::fs::remove_dir_all(&d).unwrap();
        std::fs::remove_dir_all(&outside).unwrap();
    }
}
