//! Power cuts on demand: a LazyFS mount (github.com/dsrhaslab/lazyfs, the
//! FUSE file system Jepsen uses for this) keeps every write in its own cache
//! until the writer fsyncs it, and drops whatever is not fsynced when told
//! to (`lazyfs::clear-cache` on its fault fifo): what a disk holds after
//! the power went out.
//!
//! LazyFS is found in `$CEPHEUS_LAZYFS` (a directory holding `lazyfs` and
//! `libpcache.so`), else in `target/lazyfs` of this checkout, which is
//! where `.ci/run` builds it:
//!
//! ```sh
//! ../shared/bin/lazyfs-build target/lazyfs
//! ```
//!
//! Without `/dev/fuse`, `fusermount3` or the binary the tests say why and
//! skip ([`LazyFs::find`]); a `CEPHEUS_LAZYFS` that points nowhere is an
//! error, not a reason to skip (CI sets it).
//!
//! What LazyFS models and what it does not (read from its source at the
//! vendored commit and tried by hand):
//! - `fsync` and `fdatasync` write a file's cached pages through; nothing
//!   else does. `sync_file_range` and `O_DIRECT` writes stay in its cache
//!   and are lost at a cut.
//! - Metadata operations (create, mkdir, rename, unlink, truncate) go to the
//!   underlying directory at once: a cut never loses a file or a rename, so
//!   a missing directory fsync goes unnoticed here (directory fsync is
//!   accepted as a no-op).
//! - `fallocate(2)` fails with `EOPNOTSUPP`; `posix_fallocate` falls back
//!   to writing zeros.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// How long a mount, a command or an unmount may take. Generous: preallocating
/// the cache takes about a second, more on a busy machine.
const PATIENCE: Duration = Duration::from_secs(60);

/// The size of LazyFS's cache of unsynced (and recently written) pages. It
/// is allocated at mount; pages are evicted (written through, as an OS
/// writes back under memory pressure) only when it is full.
const CACHE_SIZE: &str = "256mb";

/// Where the LazyFS binary and its library are.
#[derive(Debug, Clone)]
pub struct LazyFsBinary {
    dir: PathBuf,
}

/// A mounted LazyFS, unmounted on drop.
pub struct LazyFs {
    child: Option<Child>,
    mountpoint: PathBuf,
    /// The underlying directory, config, fault fifo and log.
    state: TempDir,
}

impl LazyFs {
    /// Finds what a mount needs, or says why it cannot be had here (then
    /// the caller skips). Panics if `CEPHEUS_LAZYFS` is set but holds no
    /// LazyFS.
    pub fn find() -> Result<LazyFsBinary, String> {
        if !Path::new("/dev/fuse").exists() {
            return Err("/dev/fuse is missing (a container without FUSE?)".into());
        }
        let fusermount = std::env::var_os("PATH")
            .map(|paths| std::env::split_paths(&paths).any(|p| p.join("fusermount3").is_file()))
            .unwrap_or(false);
        if !fusermount {
            return Err("fusermount3 is not on PATH (apt-get install fuse3)".into());
        }
        let (dir, explicit) = match std::env::var_os("CEPHEUS_LAZYFS") {
            Some(dir) => (PathBuf::from(dir), true),
            None => (
                Path::new(env!("CARGO_MANIFEST_DIR")).join("target/lazyfs"),
                false,
            ),
        };
        let complete = dir.join("lazyfs").is_file() && dir.join("libpcache.so").exists();
        match (complete, explicit) {
            (true, _) => Ok(LazyFsBinary { dir }),
            (false, true) => panic!(
                "CEPHEUS_LAZYFS={} holds no `lazyfs` and `libpcache.so`; build them with ../shared/bin/lazyfs-build {0}",
                dir.display()
            ),
            (false, false) => Err(format!(
                "LazyFS is not built: run ../shared/bin/lazyfs-build {} (or set CEPHEUS_LAZYFS to where it is)",
                dir.display()
            )),
        }
    }

    /// Mounts a fresh, empty LazyFS (on a directory of its own, [`LazyFs::path`])
    /// and waits until it serves.
    pub fn mount(binary: &LazyFsBinary) -> LazyFs {
        let state = tempfile::Builder::new()
            .prefix("cepheus-lazyfs-")
            .tempdir()
            .expect("a temporary directory can be created");
        let root = state.path().join("root");
        let mountpoint = &state.path().join("mnt");
        for dir in [&root, mountpoint] {
            std::fs::create_dir(dir).expect("the LazyFS directories can be created");
        }
        let config = state.path().join("config.toml");
        // NB: LazyFS reads one command per read() of its fifo; commands sent
        // back to back could arrive as one, so each waits for its answer in
        // the log (`command`).
        std::fs::write(
            &config,
            format!(
                "[faults]\nfifo_path=\"{}\"\n[cache]\napply_eviction=true\n[cache.simple]\ncustom_size=\"{CACHE_SIZE}\"\nblocks_per_page=1\n[filesystem]\nlog_all_operations=false\nlogfile=\"\"\n",
                state.path().join("faults.fifo").display()
            ),
        )
        .expect("the LazyFS config can be written");
        let log = File::create(state.path().join("lazyfs.log")).expect("the LazyFS log opens");
        // NB: LazyFS ignores a config path containing "-o" in any case (it
        // takes it for a FUSE option), as a temporary name can: the path is
        // given relative to its working directory.
        let child = Command::new(binary.dir.join("lazyfs"))
            .current_dir(state.path())
            .arg(mountpoint)
            .args(["--config-path", "config.toml"])
            .args(["-o", "modules=subdir", "-o"])
            .arg(format!("subdir={}", root.display()))
            .arg("-f")
            .env("LD_LIBRARY_PATH", &binary.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log file handle clones"))
            .stderr(log)
            .spawn()
            .expect("the lazyfs binary starts");
        let mut lazyfs = LazyFs {
            child: Some(child),
            mountpoint: mountpoint.to_owned(),
            state,
        };
        let started = Instant::now();
        while !lazyfs.is_mounted() {
            if let Some(Ok(Some(status))) = lazyfs.child.as_mut().map(Child::try_wait) {
                lazyfs.child = None;
                panic!(
                    "lazyfs exited ({status}) before mounting {}; its log:\n{}",
                    mountpoint.display(),
                    lazyfs.log()
                );
            }
            assert!(
                started.elapsed() < PATIENCE,
                "lazyfs did not mount {} within {PATIENCE:?}; its log:\n{}",
                mountpoint.display(),
                lazyfs.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!(
            "LazyFS mounted on {} in {:?}",
            mountpoint.display(),
            started.elapsed()
        );
        lazyfs
    }

    /// The power cut: every write not yet fsynced is dropped. Call it with
    /// nothing writing to the mount (the writer killed): a writer that goes
    /// on could fsync later writes over the hole, which no real cut makes.
    /// Returns how many unsynced bytes there were (LazyFS's own count).
    pub fn power_cut(&mut self) -> u64 {
        let report = self.command(
            "lazyfs::unsynced-data-report",
            &[
                "report: all data blocks are synced!",
                "report: total number of bytes un-fsynced:",
            ],
        );
        let unsynced = report
            .split("un-fsynced:")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        self.command("lazyfs::clear-cache", &["cache is cleared."]);
        unsynced
    }

    /// Writes every cached page through, as an orderly shutdown would.
    pub fn checkpoint(&mut self) {
        self.command("lazyfs::cache-checkpoint", &["checkpoint is done."]);
    }

    /// Where the file system is mounted.
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// LazyFS's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state.path().join("lazyfs.log")).unwrap_or_default()
    }

    /// Sends `command` to the fault fifo and waits for a new log line
    /// holding one of `answers`; returns that line.
    fn command(&mut self, command: &str, answers: &[&str]) -> String {
        let seen = |log: &str| {
            log.lines()
                .filter(|line| answers.iter().any(|a| line.contains(a)))
                .count()
        };
        let before = seen(&self.log());
        self.assert_alive(command);
        // NB: without O_NONBLOCK the open would wait forever for a reader
        // if LazyFS died; alive, it holds the fifo open for reading.
        let mut fifo = OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(self.state.path().join("faults.fifo"))
            .unwrap_or_else(|e| {
                panic!(
                    "LazyFS's fault fifo does not open ({e}); its log:\n{}",
                    self.log()
                )
            });
        fifo.write_all(format!("{command}\n").as_bytes())
            .expect("the LazyFS fault fifo takes a command");
        drop(fifo);
        let started = Instant::now();
        loop {
            let log = self.log();
            if seen(&log) > before {
                return log
                    .lines()
                    .filter(|line| answers.iter().any(|a| line.contains(a)))
                    .nth(before)
                    .unwrap_or_default()
                    .to_owned();
            }
            self.assert_alive(command);
            assert!(
                started.elapsed() < PATIENCE,
                "LazyFS did not answer `{command}` within {PATIENCE:?}; its log:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Panics if LazyFS exited (it crashed: it runs until unmounted).
    fn assert_alive(&mut self, doing: &str) {
        if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
            self.child = None;
            panic!(
                "LazyFS exited ({status}) before `{doing}`; its log ends:\n{}",
                self.log_tail()
            );
        }
    }

    fn log_tail(&self) -> String {
        let log = self.log();
        let mut tail: Vec<&str> = log.lines().rev().take(40).collect();
        tail.reverse();
        tail.join("\n")
    }

    fn is_mounted(&self) -> bool {
        let wanted = self.mountpoint.to_string_lossy().into_owned();
        std::fs::read_to_string("/proc/self/mounts")
            .unwrap_or_default()
            .lines()
            .any(|line| {
                let mut fields = line.split(' ');
                let _device = fields.next();
                fields.next() == Some(wanted.as_str()) && fields.next() == Some("fuse.lazyfs")
            })
    }
}

impl Drop for LazyFs {
    fn drop(&mut self) {
        // NB: a lazy unmount (-z) still succeeds if a killed server's files
        // are not closed yet; LazyFS exits once the mount is gone.
        let unmounted = Command::new("fusermount3")
            .arg("-u")
            .arg(&self.mountpoint)
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
            || Command::new("fusermount3")
                .arg("-uz")
                .arg(&self.mountpoint)
                .status()
                .is_ok_and(|s| s.success());
        if let Some(mut child) = self.child.take() {
            let deadline = Instant::now() + Duration::from_secs(10);
            while unmounted && Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("==== LazyFS log (last lines) ====\n{}", self.log_tail());
        }
    }
}
