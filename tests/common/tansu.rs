//! A Kafka-API broker for the scale-out tests: tansu (a broker in Rust,
//! `cargo install tansu@0.6.0 --locked --features dynostore`), started on a
//! free port with in-memory storage and killed when dropped.
//!
//! Where tansu is missing outside CI the tests say so and pass; under `CI`
//! they fail (`.ci/run` installs it).

use std::fs::File;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// A running tansu broker.
pub struct Tansu {
    child: Child,
    port: u16,
    dir: TempDir,
}

/// The tansu binary: `$CEPHEUS_TANSU`, then `tansu` on the PATH, then
/// `~/.cargo/bin/tansu`.
pub fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CEPHEUS_TANSU") {
        return Some(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("tansu"))
            .find(|candidate| candidate.is_file())
    });
    on_path.or_else(|| {
        let home = PathBuf::from(std::env::var_os("HOME")?);
        let candidate = home.join(".cargo/bin/tansu");
        candidate.is_file().then_some(candidate)
    })
}

impl Tansu {
    /// Starts a broker, or returns `None` (after saying so) when tansu is
    /// not installed outside CI.
    pub fn start() -> Option<Tansu> {
        let Some(binary) = binary() else {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must have tansu (see .ci/run)"
            );
            eprintln!("tansu is not installed: skipping the Kafka test (cargo install tansu@0.6.0 --locked --features dynostore)");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("cepheus-tansu-")
            .tempdir()
            .expect("a temporary directory can be created");
        let port = super::free_port();
        let log = File::create(dir.path().join("tansu.log")).expect("the log file opens");
        let address = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(&binary)
            .arg("broker")
            .arg("--listener-url")
            .arg(&address)
            .arg("--advertised-listener-url")
            .arg(&address)
            .arg("--storage-engine")
            .arg("memory://tansu/")
            .env("RUST_LOG", "warn")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the log handle clones"))
            .stderr(log)
            .spawn()
            .expect("tansu starts");
        let broker = Tansu { child, port, dir };
        let deadline = Instant::now() + super::PATIENCE;
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "tansu did not listen within {:?}; its log:\n{}",
                super::PATIENCE,
                broker.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(broker)
    }

    /// `127.0.0.1:port`, for `bootstrap.servers`.
    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// What tansu logged.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("tansu.log")).unwrap_or_default()
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
