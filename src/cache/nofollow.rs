//! Paths inside the cache directory, opened, created, renamed and removed
//! without following a symbolic link anywhere below the directory itself:
//! a link planted in the tree (a `.mod` pointing at the CA key, a module
//! directory pointing outside) is an error, never a way out. One
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` where the kernel has it
//! (Linux 5.6), else one `openat(O_NOFOLLOW)` per path element.
//! Blocking calls: run them on the blocking pool.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};

/// The cache directory, held open: every path below is resolved from it.
pub struct Tree {
    root: OwnedFd,
}

/// How a file is opened.
#[derive(Clone, Copy)]
pub enum Access {
    Read,
    Write,
    ReadWrite,
}

impl Tree {
    /// Opens `root` (the configured directory may itself be a link).
    pub fn open(root: &Path) -> io::Result<Tree> {
        let root = rustix::fs::open(root, OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())?;
        Ok(Tree { root })
    }

    /// Opens the existing file `relative` (`/`-separated) for `access`.
    pub fn open_file(&self, relative: &str, access: Access) -> io::Result<File> {
        let flags = match access {
            Access::Read => OFlags::RDONLY,
            Access::Write => OFlags::WRONLY,
            Access::ReadWrite => OFlags::RDWR,
        };
        Ok(File::from(self.open_beneath(relative, flags)?))
    }

    /// Opens the existing file `relative` for appending.
    pub fn open_append(&self, relative: &str) -> io::Result<File> {
        Ok(File::from(
            self.open_beneath(relative, OFlags::WRONLY | OFlags::APPEND)?,
        ))
    }

    /// Creates the file `relative` (it must not exist) for reading and
    /// writing, its directories made as needed.
    pub fn create_file(&self, relative: &str, mode: u32) -> io::Result<File> {
        let (parent, name) = self.parent(relative, true)?;
        let flags = OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW;
        let fd = rustix::fs::openat(parent, name, flags | OFlags::CLOEXEC, Mode::from(mode))?;
        Ok(File::from(fd))
    }

    /// Opens the directory `relative`, creating it and every directory
    /// above it as needed.
    pub fn make_dirs(&self, relative: &str) -> io::Result<OwnedFd> {
        self.walk(relative.split('/').filter(|e| !e.is_empty()), true)
    }

    /// Moves `from` to `to` (both relative), making `to`'s directories.
    pub fn rename(&self, from: &str, to: &str) -> io::Result<()> {
        let (from_dir, from_name) = self.parent(from, false)?;
        let (to_dir, to_name) = self.parent(to, true)?;
        Ok(rustix::fs::renameat(from_dir, from_name, to_dir, to_name)?)
    }

    /// Moves `from` to `to` only when nothing is at `to` (`AlreadyExists`
    /// otherwise), making `to`'s directories: a create-only publish.
    pub fn rename_new(&self, from: &str, to: &str) -> io::Result<()> {
        let (from_dir, from_name) = self.parent(from, false)?;
        let (to_dir, to_name) = self.parent(to, true)?;
        let flags = rustix::fs::RenameFlags::NOREPLACE;
        Ok(rustix::fs::renameat_with(
            from_dir, from_name, to_dir, to_name, flags,
        )?)
    }

    /// Removes the file `relative` (a link there is removed, not followed).
    pub fn remove(&self, relative: &str) -> io::Result<()> {
        let (dir, name) = self.parent(relative, false)?;
        Ok(rustix::fs::unlinkat(dir, name, AtFlags::empty())?)
    }

    /// Whether `relative` is a symbolic link, or lies under one.
    #[cfg(test)]
    pub fn is_link(&self, relative: &str) -> bool {
        match self.open_beneath(relative, OFlags::PATH) {
            Ok(_) => false,
            Err(e) => e.raw_os_error() == Some(libc::ELOOP),
        }
    }

    /// One open below the root that follows no link (ELOOP if one is met).
    fn open_beneath(&self, relative: &str, flags: OFlags) -> io::Result<OwnedFd> {
        let resolve = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS;
        let flags = flags | OFlags::CLOEXEC;
        match rustix::fs::openat2(&self.root, relative, flags, Mode::empty(), resolve) {
            Err(e) if e == rustix::io::Errno::NOSYS || e == rustix::io::Errno::PERM => {
                let (parent, name) = self.parent(relative, false)?;
                Ok(rustix::fs::openat(
                    parent,
                    name,
                    flags | OFlags::NOFOLLOW,
                    Mode::empty(),
                )?)
            }
            other => Ok(other?),
        }
    }

    /// The directory holding `relative` (made as needed when `create`)
    /// and its last element.
    fn parent<'r>(&self, relative: &'r str, create: bool) -> io::Result<(OwnedFd, &'r str)> {
        let (dirs, name) = relative.rsplit_once('/').unwrap_or(("", relative));
        if name.is_empty() || name == "." || name == ".." {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a file name",
            ));
        }
        Ok((
            self.walk(dirs.split('/').filter(|e| !e.is_empty()), create)?,
            name,
        ))
    }

    /// Opens each directory element in turn, refusing links (ELOOP) and
    /// `..`; makes missing ones when `create` (one that exists costs an
    /// open, no mkdir).
    fn walk<'e>(
        &self,
        elements: impl Iterator<Item = &'e str>,
        create: bool,
    ) -> io::Result<OwnedFd> {
        let flags = OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let mut dir = rustix::fs::openat(&self.root, ".", flags, Mode::empty())?;
        for element in elements {
            if element == "." || element == ".." {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "not a tree path",
                ));
            }
            let mut opened = rustix::fs::openat(dir.as_fd(), element, flags, Mode::empty());
            if create && matches!(opened, Err(rustix::io::Errno::NOENT)) {
                match rustix::fs::mkdirat(dir.as_fd(), element, Mode::from(0o755)) {
                    Err(rustix::io::Errno::EXIST) | Ok(()) => {}
                    Err(e) => return Err(e.into()),
                }
                opened = rustix::fs::openat(dir.as_fd(), element, flags, Mode::empty());
            }
            dir = match opened {
                // A link to a directory fails as "not a directory": say what it is.
                Err(rustix::io::Errno::NOTDIR) if is_symlink(&dir, element) => {
                    return Err(rustix::io::Errno::LOOP.into());
                }
                other => other?,
            };
        }
        Ok(dir)
    }
}

/// Whether `name` in `dir` is a symbolic link (not followed to tell).
fn is_symlink(dir: &OwnedFd, name: &str) -> bool {
    rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW).is_ok_and(|st| {
        rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::symlink;

    #[test]
    fn links_in_the_tree_are_never_followed() {
        let work = tempfile::tempdir().unwrap();
        let (root, outside) = (work.path().join("cache"), work.path().join("outside"));
        std::fs::create_dir_all(root.join("m/@v")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("key"), "secret").unwrap();
        symlink(outside.join("key"), root.join("m/@v/v1.0.0.mod")).unwrap();
        symlink(&outside, root.join("linked")).unwrap();
        let tree = Tree::open(&root).unwrap();

        let loops = |e: io::Error| e.raw_os_error() == Some(libc::ELOOP);
        assert!(loops(
            tree.open_file("m/@v/v1.0.0.mod", Access::Read).unwrap_err()
        ));
        assert!(loops(
            tree.open_file("linked/key", Access::Read).unwrap_err()
        ));
        assert!(tree.is_link("m/@v/v1.0.0.mod") && tree.is_link("linked/key"));
        assert!(loops(tree.create_file("linked/new", 0o644).unwrap_err()));
        assert!(loops(tree.make_dirs("linked/sub").unwrap_err()));
        std::fs::write(root.join("temp"), "x").unwrap();
        assert!(loops(tree.rename("temp", "linked/moved").unwrap_err()));
        assert!(tree.remove("linked/key").is_err());
        assert!(outside.join("key").exists() && !outside.join("moved").exists());
        assert!(!outside.join("new").exists() && !outside.join("sub").exists());
        assert!(tree.open_file("../outside/key", Access::Read).is_err());

        // A plain file, made, moved and read back, stays inside.
        tree.create_file("a/b/new", 0o644)
            .unwrap()
            .write_all(b"data")
            .unwrap();
        tree.rename("a/b/new", "c/d/file").unwrap();
        let mut text = String::new();
        tree.open_file("c/d/file", Access::Read)
            .unwrap()
            .read_to_string(&mut text)
            .unwrap();
        assert_eq!(text, "data");
        tree.remove("m/@v/v1.0.0.mod").unwrap();
        assert!(
            outside.join("key").exists(),
            "the link went, not its target"
        );
    }
}
