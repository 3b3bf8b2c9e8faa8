//! A small filesystem of a test's own, to make the disk full on purpose.
//!
//! `Tmpfs::mount` mounts a tmpfs of a given size (it needs root, which CI has) on a fresh
//! directory; `fill_leaving` writes a filler file so that only so many bytes stay free, and
//! removing the filler gives the space back. Dropping the guard unmounts, also when the test
//! failed. A machine where mounting is refused fails the test with the reason: the fault
//! cannot be made any other way, and a silent skip would hide that it never ran.

use anyhow::{Context, bail};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

pub struct Tmpfs {
    /// Holds the mount point; removed after the unmount.
    dir: Option<tempfile::TempDir>,
    mount_point: PathBuf,
    mounted: bool,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size_bytes` on a new directory under the system's temporary
    /// directory.
    pub fn mount(size_bytes: u64) -> anyhow::Result<Tmpfs> {
        let dir = tempfile::Builder::new()
            .prefix("mailgate-tmpfs-")
            .tempdir()
            .context("creating the mount point")?;
        let mount_point = dir.path().join("fs");
        std::fs::create_dir(&mount_point).context("creating the mount point")?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size_bytes},mode=0755")])
            .arg("tmpfs")
            .arg(&mount_point)
            .output()
            .context("running mount(8)")?;
        if !out.status.success() {
            bail!(
                "cannot mount a {size_bytes}-byte tmpfs on {} ({}): the disk-full tests need root \
                 (CI runs them as root); run them as root or leave them out with -E 'not test(disk_full)'",
                mount_point.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(Tmpfs {
            dir: Some(dir),
            mount_point,
            mounted: true,
        })
    }

    pub fn path(&self) -> &Path {
        &self.mount_point
    }

    /// Bytes an unprivileged writer can still use.
    pub fn free_bytes(&self) -> anyhow::Result<u64> {
        let out = Command::new("df")
            .args(["--block-size=1", "--output=avail"])
            .arg(&self.mount_point)
            .output()
            .context("running df(1)")?;
        let text = String::from_utf8_lossy(&out.stdout);
        text.lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .with_context(|| format!("unexpected df output: {text:?}"))
    }

    /// Writes the file `name` (real zero bytes: tmpfs counts pages written) so that about
    /// `leave_bytes` stay free; returns its path. Removing it gives the space back.
    pub fn fill_leaving(&self, name: &str, leave_bytes: u64) -> anyhow::Result<PathBuf> {
        let path = self.mount_point.join(name);
        let free = self.free_bytes()?;
        let mut remaining = free.saturating_sub(leave_bytes);
        let mut file = std::fs::File::create(&path).context("creating the filler")?;
        let chunk = vec![0u8; 64 * 1024];
        while remaining > 0 {
            let n = remaining.min(chunk.len() as u64) as usize;
            file.write_all(&chunk[..n]).context("writing the filler")?;
            remaining -= n as u64;
        }
        file.sync_all().context("writing the filler")?;
        Ok(path)
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if self.mounted {
            // A process of the test (a server being killed) may still hold a file open:
            // a lazy unmount detaches the filesystem now and frees it when the last one
            // closes, instead of failing with EBUSY and leaving the mount behind.
            let ok = Command::new("umount")
                .arg(&self.mount_point)
                .status()
                .is_ok_and(|s| s.success())
                || Command::new("umount")
                    .arg("-l")
                    .arg(&self.mount_point)
                    .status()
                    .is_ok_and(|s| s.success());
            if !ok {
                eprintln!(
                    "could not unmount the tmpfs at {}",
                    self.mount_point.display()
                );
                // Keep the directory: removing it would walk into the still-mounted tmpfs.
                if let Some(dir) = self.dir.take() {
                    let _ = dir.keep();
                }
            }
            self.mounted = false;
        }
    }
}
