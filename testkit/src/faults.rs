//! Real faults for reliability tests: a tmpfs that fills up, a file made
//! immutable.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A tmpfs mounted for the life of this value: a disk that really fills up,
/// even for root (whom file modes do not stop).
pub struct Tmpfs {
    pub path: PathBuf,
}

impl Tmpfs {
    /// Mount a tmpfs of `size` bytes on `path` (created if needed). None if
    /// this machine does not allow mounting.
    pub fn mount(path: &Path, size: u64) -> Option<Tmpfs> {
        std::fs::create_dir_all(path).ok()?;
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(path)
            .status()
            .ok()?;
        st.success().then(|| Tmpfs { path: path.to_owned() })
    }

    /// Write a file until the filesystem is full; returns the bytes written.
    pub fn fill(&self, name: &str) -> u64 {
        use std::io::Write;
        let mut f = std::fs::File::create(self.path.join(name)).expect("create filler");
        let chunk = vec![0xA5u8; 4096];
        let mut n = 0u64;
        while f.write_all(&chunk).is_ok() {
            n += chunk.len() as u64;
        }
        // Fill the last partial block too.
        while f.write_all(&chunk[..1]).is_ok() {
            n += 1;
        }
        let _ = f.sync_all();
        n
    }

    pub fn free(&self, name: &str) {
        std::fs::remove_file(self.path.join(name)).expect("remove filler");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

/// A file made immutable (`chattr +i`) for the life of this value: every
/// write to it fails, even for root and even through descriptors opened
/// before, and so does opening it for writing.
pub struct Immutable {
    pub path: PathBuf,
}

impl Immutable {
    /// None if the file system or the machine does not allow it.
    pub fn set(path: &Path) -> Option<Immutable> {
        let st = Command::new("chattr").arg("+i").arg(path).status().ok()?;
        st.success().then(|| Immutable { path: path.to_owned() })
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr").arg("-i").arg(&self.path).status();
    }
}
