//! Test support: start the real `ringmq` binary on a free loopback port with a temporary data
//! directory, restart it on the same data, kill it with SIGKILL or stop it with SIGTERM.

#![allow(dead_code, reason = "each test binary uses part of the support module")]
#![allow(clippy::unwrap_used, reason = "test support fails the test on error")]

pub(crate) mod certs;
pub(crate) mod proxy;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running broker process.
pub(crate) struct Broker {
    child: Option<Child>,
    pub(crate) address: String,
    /// `host:port` of the metrics endpoint.
    pub(crate) metrics: String,
    /// `host:port` of the Kafka listener.
    pub(crate) kafka: String,
    pub(crate) data_dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    args: Vec<String>,
    listen: String,
    kafka_listen: String,
    log_path: PathBuf,
    env: Vec<(String, String)>,
}

impl Broker {
    /// Starts a broker with a fresh data directory and these extra flags.
    pub(crate) fn start(args: &[&str]) -> Self {
        Self::start_with_env(args, &[])
    }

    /// Starts a broker with a fresh data directory, these extra flags and environment variables.
    pub(crate) fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Self {
        let temp = tempfile::tempdir().unwrap();
        let data_dir = temp.path().join("data");
        let log_path = temp.path().join("broker.log");
        let args: Vec<String> = args.iter().map(|arg| (*arg).to_owned()).collect();
        let mut broker = Self {
            child: None,
            address: String::new(),
            metrics: String::new(),
            kafka: String::new(),
            data_dir,
            _temp: Some(temp),
            args,
            listen: "127.0.0.1:0".to_owned(),
            kafka_listen: "127.0.0.1:0".to_owned(),
            log_path,
            env: env.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect(),
        };
        broker.spawn().unwrap_or_else(|error| panic!("{error}"));
        broker
    }

    /// Starts the broker again on the same data directory and the same port, so clients that
    /// reconnect find it.
    pub(crate) fn restart_same_port(&mut self) {
        self.kill();
        self.listen = self.address.clone();
        self.kafka_listen = self.kafka.clone();
        // The port may linger for a moment after the kill; retry briefly.
        let mut attempts = 0;
        while let Err(error) = self.spawn() {
            attempts += 1;
            assert!(attempts < 50, "{error}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn spawn(&mut self) -> Result<(), String> {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(&self.log_path).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ringmq"))
            .args(["--listen", &self.listen, "--data-dir"])
            .arg(&self.data_dir)
            .args([
                "--prefault",
                "false",
                "--partition-capacity-default",
                "8MiB",
                "--group-log-capacity",
                "16MiB",
                "--metrics-listen",
                "127.0.0.1:0",
                "--kafka-listen",
                &self.kafka_listen,
            ])
            .args(&self.args)
            .env("RUST_LOG", "info")
            .envs(self.env.iter().map(|(key, value)| (key, value)))
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(line);
        });
        let line = receiver.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        let Some(address) =
            line.strip_prefix("ringmq listening on ").and_then(|rest| rest.split(',').next())
        else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "broker did not start (first line {line:?}); its log:\n{}",
                self.log()
            ));
        };
        self.address = address.to_owned();
        self.metrics = line
            .split("metrics at http://")
            .nth(1)
            .and_then(|rest| rest.split('/').next())
            .unwrap_or_default()
            .to_owned();
        self.kafka = line
            .split("kafka at ")
            .nth(1)
            .map(|rest| rest.trim().split(',').next().unwrap_or_default())
            .unwrap_or_default()
            .to_owned();
        self.child = Some(child);
        Ok(())
    }

    /// Kills the broker with SIGKILL and waits for it to die.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Stops the broker with SIGTERM and waits for it to exit; returns whether it exited cleanly.
    pub(crate) fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else { return false };
        let pid = child.id();
        let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.success();
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Sends a signal (`"STOP"`, `"CONT"`, ...) to the running broker with `kill(1)`.
    pub(crate) fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("the broker is running").id();
        let status = Command::new("kill").args([&format!("-{signal}"), &pid.to_string()]).status();
        assert!(status.unwrap().success(), "kill -{signal} {pid} failed");
    }

    /// Freezes the broker (SIGSTOP) and returns once every one of its threads has stopped: the
    /// signal alone takes effect asynchronously, and a request sent right after it could still be
    /// answered.
    pub(crate) fn freeze(&self) {
        self.signal("STOP");
        let pid = self.child.as_ref().expect("the broker is running").id();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stopped = std::fs::read_dir(format!("/proc/{pid}/task"))
                .expect("the broker's /proc entry")
                .filter_map(Result::ok)
                .all(|task| {
                    // The state is the field after the parenthesised command name.
                    let stat =
                        std::fs::read_to_string(task.path().join("stat")).unwrap_or_default();
                    let state = stat.rsplit_once(") ").map(|(_, rest)| rest.chars().next());
                    matches!(state, Some(Some('T' | 't')) | None)
                });
            if stopped {
                return;
            }
            assert!(Instant::now() < deadline, "the broker did not stop within 10 s");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Starts the broker again on the same data directory (after `kill` or `terminate`).
    pub(crate) fn restart(&mut self) {
        self.kill();
        self.listen = "127.0.0.1:0".to_owned();
        self.kafka_listen = "127.0.0.1:0".to_owned();
        self.spawn().unwrap_or_else(|error| panic!("{error}"));
    }

    /// Whether the process is still running.
    pub(crate) fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|child| child.try_wait().unwrap().is_none())
    }

    /// The broker's log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub(crate) fn data_dir(&self) -> &Path {
        &self.data_dir
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The path of a workspace binary, building it if `cargo test` did not.
pub(crate) fn workspace_binary(package: &str, name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_owned();
    let path = dir.join(name);
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status =
            Command::new(cargo).args(["build", "-p", package, "--bin", name]).status().unwrap();
        assert!(status.success(), "building {name} failed");
    }
    assert!(path.exists(), "{} not found", path.display());
    path
}

/// Runs a future with a timeout so a hung test fails instead of hanging CI.
pub(crate) async fn within<T>(seconds: u64, future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(seconds), future).await.expect("test step timed out")
}

/// The broker's `/metrics` page at `address` (`host:port`), as text.
pub(crate) fn metrics_text(address: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("the metrics endpoint");
    stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: ringmq\r\n\r\n").expect("a request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("a response");
    response
}
