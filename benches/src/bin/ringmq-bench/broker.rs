//! The broker under test: the real `ringmq` binary on a temporary data directory and a free
//! loopback port, or a broker already running at `--broker`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context};

/// A broker with TLS on its client ports, its certificate made for the run (rcgen) and trusted
/// by `tls`.
pub(crate) struct TlsBroker {
    pub(crate) broker: BrokerProcess,
    pub(crate) tls: ringmq_client::Tls,
    /// Whether it requires logins (`--scram`).
    scram: bool,
    _certificates: tempfile::TempDir,
}

/// The superuser of a `--scram` broker (a throwaway broker on loopback: the passwords are not
/// secrets).
const ROOT: (&str, &str) = ("bench-root", "bench root password");
/// The user the measured connections log in as: not a superuser, allowed by rules.
const CLIENT: (&str, &str) = ("bench-client", "bench client password");

impl TlsBroker {
    /// Starts `ringmq` with `args` and a fresh certificate for 127.0.0.1; with `scram`, it
    /// requires logins.
    pub(crate) fn start(args: &[String], scram: bool) -> anyhow::Result<Self> {
        let dir = tempfile::Builder::new().prefix("ringmq-bench-tls-").tempdir()?;
        let key = rcgen::KeyPair::generate()?;
        let params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])?;
        let certificate = params.self_signed(&key)?;
        let cert_file = dir.path().join("broker.pem");
        let key_file = dir.path().join("broker.key");
        std::fs::write(&cert_file, certificate.pem())?;
        std::fs::write(&key_file, key.serialize_pem())?;
        let mut args = args.to_vec();
        args.extend(["--tls-cert".to_owned(), cert_file.display().to_string()]);
        args.extend(["--tls-key".to_owned(), key_file.display().to_string()]);
        let mut env = Vec::new();
        if scram {
            args.extend(["--auth".to_owned(), "required".to_owned()]);
            env = vec![("RINGMQ_ROOT_USER", ROOT.0), ("RINGMQ_ROOT_PASSWORD", ROOT.1)];
        }
        let broker = BrokerProcess::start_with_env(&args, &env)?;
        let tls = ringmq_client::Tls::with_ca_file(&cert_file)?;
        Ok(Self { broker, tls, scram, _certificates: dir })
    }

    /// With `--scram`: makes the measured connections' user and the rules that let it create,
    /// write and read the bench's topics and read the broker's counters.
    pub(crate) async fn provision(&self) -> anyhow::Result<()> {
        use ringmq_client::access::RuleOperation;
        use ringmq_client::Rule;
        if !self.scram {
            return Ok(());
        }
        let login = ringmq_client::Credentials::new(ROOT.0, ROOT.1);
        let options =
            ringmq_client::ConnectOptions::default().tls(self.tls.clone()).credentials(login);
        let mut root = ringmq_client::Client::connect_with(&self.broker.address, options).await?;
        root.add_user(CLIENT.0, CLIENT.1).await?;
        for rule in [
            Rule::topic(CLIENT.0, "bench-", RuleOperation::All).prefixed(),
            Rule::cluster(CLIENT.0, RuleOperation::Create),
            Rule::cluster(CLIENT.0, RuleOperation::Describe),
        ] {
            root.add_rule(&rule).await?;
        }
        Ok(())
    }

    /// The login of the measured connections (`None` without `--scram`).
    pub(crate) fn client_login(&self) -> Option<ringmq_client::Credentials> {
        self.scram.then(|| ringmq_client::Credentials::new(CLIENT.0, CLIENT.1))
    }
}

/// A broker process this tool started; stopped (SIGTERM, then SIGKILL) when dropped.
pub(crate) struct BrokerProcess {
    child: Child,
    pub(crate) address: String,
    /// `host:port` of its Kafka listener.
    pub(crate) kafka: String,
    _data: tempfile::TempDir,
}

impl BrokerProcess {
    /// Starts `ringmq` (found next to this executable, else built with cargo) with `args`.
    pub(crate) fn start(args: &[String]) -> anyhow::Result<Self> {
        Self::start_with_env(args, &[])
    }

    /// [`start`](Self::start) with `env` in the broker's environment.
    pub(crate) fn start_with_env(args: &[String], env: &[(&str, &str)]) -> anyhow::Result<Self> {
        let binary = locate_broker()?;
        let data = tempfile::Builder::new()
            .prefix("ringmq-bench-")
            .tempdir()
            .context("creating a data directory")?;
        let mut child = Command::new(&binary)
            .args(["--listen", "127.0.0.1:0", "--metrics-listen", "127.0.0.1:0"])
            .args(["--kafka-listen", "127.0.0.1:0", "--data-dir"])
            .arg(data.path())
            .args(args)
            .envs(env.iter().copied())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        let stdout = child.stdout.take().context("broker stdout")?;
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(line);
        });
        let line = receiver.recv_timeout(Duration::from_secs(60)).unwrap_or_default();
        let Some(address) =
            line.strip_prefix("ringmq listening on ").and_then(|rest| rest.split(',').next())
        else {
            let _ = child.kill();
            bail!("the broker did not start (it printed {line:?})");
        };
        let kafka = line
            .split("kafka at ")
            .nth(1)
            .and_then(|rest| rest.trim().split(',').next())
            .unwrap_or_default()
            .to_owned();
        Ok(Self { address: address.to_owned(), kafka, child, _data: data })
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        for _ in 0..200 {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ringmq` beside this executable (the same cargo profile), building it if needed.
fn locate_broker() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating this executable")?;
    let dir = exe.parent().context("executable directory")?;
    let candidate = dir.join("ringmq");
    if candidate.exists() {
        return Ok(candidate);
    }
    let profile = if dir.ends_with("release") { "release" } else { "dev" };
    eprintln!("building the ringmq broker ({profile} profile)...");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(cargo)
        .args(["build", "--profile", profile, "-p", "ringmq-broker", "--bin", "ringmq"])
        .status()
        .context("running cargo build")?;
    if !status.success() || !candidate.exists() {
        bail!("could not build ringmq; build it first: cargo build --release -p ringmq-broker");
    }
    Ok(candidate)
}

/// Where this tool's measurements ran: for the report.
pub(crate) fn host_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .map(|line| line.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZeroUsize::get);
    let kernel = read_trimmed(Path::new("/proc/sys/kernel/osrelease"))
        .unwrap_or_else(|| "unknown kernel".to_owned());
    format!("{cpu}, {cores} cores, Linux {kernel}")
}

/// The commit being measured, if this runs in a git checkout.
pub(crate) fn commit() -> String {
    Command::new("git")
        .args(["describe", "--always", "--dirty"])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_else(|| "unknown".to_owned())
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().map(|text| text.trim().to_owned())
}
