//! Every setting of the broker, with its unit and its limit, declared once.
//!
//! Settings come from three layers, later ones winning: the defaults declared below, an optional
//! TOML file (`--config FILE`), and command-line flags. Every setting has a TOML key and a flag
//! of the same name (`frame_size_max`, `--frame-size-max`); a duration's name ends in its unit
//! (`idle_timeout_ms`). An unknown key or flag, or a value out of range, is refused with one line
//! naming the key or flag as the user wrote it, the bad value, and what is accepted. Settings
//! that must agree with each other are checked in one place, `Layers::finish`.
//!
//! Each setting is one declaration in the `settings!` block below (name, type, default, kind
//! with its unit and range, the help, and the names it had before); the flag, the TOML key,
//! `--help`, `--print-config`, the validation error and the tables of `docs/config.md` are all
//! made from it. `clap` parses the command line (its builder API, fed from the declarations) and
//! `toml` the file; the layering is the few lines of `Layers`. A layered-configuration crate
//! (figment) or clap's derive with serde would still need the range and unit written a second
//! time for the docs and the error messages, which is what this module exists to avoid.

mod declare;
mod kind;

use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::{Arg, ArgAction, ArgMatches, Command};
use thiserror::Error;

use self::declare::{settings, Setting};
use self::kind::{Address, Choice, Count, Directory, FilePath, Host, Millis, Raw, Size, Switch};
use crate::groups::store::STATE_CAPACITY_MIN;
pub use crate::log::SyncMethod;
use crate::log::{CAPACITY_MAX, CAPACITY_MIN};
pub use crate::partition::SyncPolicy;
use ringmq_protocol::limits::{
    BATCH_SIZE_MAX, FRAME_BODY_SIZE_MAX, FRAME_HEADER_SIZE, PARTITION_COUNT_MAX, TOPIC_COUNT_MAX,
};

const HOUR_MS: u64 = 3_600_000;

/// Highest produce or fetch quota, bytes per second (the broker's and a principal's own).
pub const QUOTA_RATE_MAX: u64 = 1 << 40;
/// Highest connection quota.
pub const QUOTA_CONNECTIONS_MAX: u32 = 100_000;
/// Highest topic bytes quota.
pub const QUOTA_TOPIC_BYTES_MAX: u64 = 1 << 50;

/// Room a produce frame needs beside its batch (topic name, partition, acks, timeout, ...).
const PRODUCE_OVERHEAD_MAX: u32 = 1024;

settings! {
    Broker {
        /// Address clients connect to.
        listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 7878)), Address;

        /// Directory holding every topic's ring files.
        ///
        /// Locked (`flock` on `DATA_DIR/.lock`) while the broker runs, so no second broker maps
        /// the same files.
        data_dir: PathBuf = PathBuf::from("./ringmq-data"), Directory;

        /// When the broker syncs partitions to disk on its own, beyond what `acks=synced` asks.
        ///
        /// `none`: only for `acks=synced` produces and at shutdown. `interval=<ms>`: every
        /// partition with unsynced data, every interval. `always`: every produce is acknowledged
        /// only after the sync that covers it, as if it asked for `acks=synced`.
        sync: SyncPolicy = SyncPolicy::None,
            Choice::new("POLICY", "none, always or interval=<ms> (1 to 3600000)");

        /// How a sync makes a partition's new bytes durable.
        ///
        /// `msync`: `msync(MS_SYNC)` of the range written since the last sync (on Linux a
        /// range-bounded `fdatasync`). `fdatasync`: the whole ring file's dirty pages.
        /// `range+fdatasync`: `sync_file_range` of the range, then `fdatasync`. Each waits for the
        /// device; the README's *Synced produce* figures compare them. The consumer-group log
        /// always uses `msync` (a few bytes per commit).
        sync_method: SyncMethod = SyncMethod::Msync,
            Choice::new("METHOD", "msync, fdatasync or range+fdatasync");

        /// Pre-fault ring mappings when they are created and opened.
        ///
        /// A new ring is populated for writing (`MADV_POPULATE_WRITE`), an existing one for
        /// reading (`MAP_POPULATE`), so the first lap does not pay a page fault per page.
        prefault: bool = true, Switch;

        /// Threads of the async runtime that serves every connection; 0: one per CPU core.
        ///
        /// 1 keeps every hand-off inside the broker (a produce waking the fetches it answers, a
        /// connection's reads and writes) on one thread, with no wake-up of another: the
        /// latency-first choice while one core can carry the load (the README's *Latency*
        /// section has the figures). Fewer threads than cores also leaves cores to clients on
        /// the same machine. Syncs and other blocking work run on their own threads either way.
        worker_threads: u32 = 0, Count::new(0, 1024);

        /// Busy-poll for up to this many microseconds before parking, each time a connection of
        /// the native protocol waits for its client or a fetch for an append; 0: never (the
        /// default). The Kafka port does not busy-poll.
        ///
        /// A waiting connection checks its socket and the partition, yields to the other
        /// connections and checks again, so a request or an append that comes within the spin
        /// is served without the wake-up of a sleeping thread. The price is CPU: a runtime
        /// thread stays busy for up to this long after every request, however idle the broker
        /// is between requests. Worth it only with a core to spare per worker thread (see
        /// `worker_threads`); the README's *Latency* section measures it.
        busy_poll_us: u32 = 0, Count::new(0, 1_000_000);
    }
    Topics {
        /// Partitions of a topic created without a partition count.
        partition_count_default: u32 = 1, Count::new(1, PARTITION_COUNT_MAX),
            renamed "default_partitions";

        /// Most partitions a client may ask for in one topic.
        partition_count_max: u32 = PARTITION_COUNT_MAX, Count::new(1, PARTITION_COUNT_MAX),
            renamed "topic_partitions_max";

        /// Ring capacity per partition (its retention) of a topic created without one.
        partition_capacity_default: u64 = 256 << 20, Size::new(CAPACITY_MIN, CAPACITY_MAX),
            renamed "default_capacity";

        /// Largest ring capacity per partition a client may ask for.
        partition_capacity_max: u64 = CAPACITY_MAX, Size::new(CAPACITY_MIN, CAPACITY_MAX),
            renamed "topic_capacity_max";

        /// Most topics the broker holds; creating one more is refused with `Busy`.
        topic_count_max: u32 = TOPIC_COUNT_MAX, Count::new(1, TOPIC_COUNT_MAX);

        /// Most ring bytes the broker holds over all topics (partitions × capacity); 0: no limit
        /// but the disk.
        ///
        /// A topic whose rings would pass it is refused before anything is allocated, so one
        /// request cannot take the whole disk.
        ring_bytes_max: u64 = 0, Size::new(0u64, 1 << 50);

        /// Free space a topic creation must leave in the data directory's file system.
        ///
        /// A topic whose ring files would eat into it is refused before anything is allocated
        /// (the rings are allocated in full at creation, so the check is exact but for other
        /// writers of the same file system).
        disk_reserve: u64 = 1 << 30, Size::new(0u64, 1 << 50);
    }
    Limits {
        /// Largest request body accepted; a larger frame is refused from its header alone.
        frame_size_max: u32 = (1 << 20) + (4 << 10), Size::new(4096, FRAME_BODY_SIZE_MAX);

        /// Largest record batch accepted (a small ring's chunk size may lower it per topic).
        ///
        /// A batch travels in a produce frame with the request's other fields, so it is at least
        /// 1 KiB smaller than `frame_size_max`; left unset, it is lowered to fit.
        batch_size_max: u32 = 1 << 20, Size::new(128, BATCH_SIZE_MAX);

        /// Most client connections at once; more are answered `TooManyConnections` and closed.
        connection_count_max: u32 = 1024, Count::new(1, 100_000), renamed "connections_max";

        /// Most connections one client address may hold at once (over both listeners); more
        /// are refused like those over `connection_count_max`.
        connection_count_per_address_max: u32 = 1024, Count::new(1, 100_000);

        /// Most requests one connection may have unanswered before the broker stops reading it.
        in_flight_count_max: u32 = 128, Count::new(1, 65_536), renamed "in_flight_max";

        /// Read buffers in the pool; a connection with a request arriving waits for one.
        ///
        /// Each buffer is `frame_size_max` + 64 KiB of read-ahead + the 20-byte frame header,
        /// allocated once at startup (pages are touched only when used). A connection holds one
        /// only while a request is arriving.
        read_buffer_count: u32 = 64, Count::new(1, 65_536), renamed "read_buffers";
    }
    Quotas {
        /// Record batch bytes per second each principal may produce; 0: no quota.
        ///
        /// Counted per principal over all its connections and both ports (clients that did not
        /// authenticate share one allowance, as `ANONYMOUS`), with one second of burst. A client
        /// over it is slowed, not refused: its request is answered, then nothing more is read
        /// from that connection until the principal is back within its quota (Kafka clients are
        /// told how long in `throttle_time_ms`). A principal given a produce quota of its own
        /// (`ringmq-cli quota set`, or Kafka's AlterClientQuotas) is held to that instead; so it is
        /// for each of the quotas here.
        produce_quota: u64 = 0, Size::new(0u64, QUOTA_RATE_MAX);

        /// Record batch bytes per second each principal may fetch; 0: no quota.
        ///
        /// Counted and enforced like `produce_quota`.
        fetch_quota: u64 = 0, Size::new(0u64, QUOTA_RATE_MAX);

        /// Most connections one principal may have open at once (over both ports); 0: no limit.
        ///
        /// Counted from a connection's login (or its client certificate); on a broker with
        /// `auth = off` every client is `ANONYMOUS`, so this bounds them all together. A login
        /// past it is refused (`TooManyConnections` on the native port, `POLICY_VIOLATION` on
        /// the Kafka port) and the connection closed.
        principal_connection_count_max: u32 = 0, Count::new(0, QUOTA_CONNECTIONS_MAX);

        /// Most ring bytes (partitions × capacity) of the topics one principal has created and
        /// not deleted; 0: no limit. Superusers are not held to it.
        ///
        /// A creation that would pass it is refused before anything is allocated. Who created
        /// each topic is kept in `DATA_DIR/.topic-owners.toml`; topics created before the file
        /// existed count for no one.
        principal_topic_bytes_max: u64 = 0, Size::new(0u64, QUOTA_TOPIC_BYTES_MAX);
    }
    Timeouts {
        /// A connection with no request for this long is closed.
        idle_timeout: Duration = Duration::from_secs(600), Millis::new(10, 24 * HOUR_MS);

        /// A frame must arrive whole within this long once its first byte has.
        frame_timeout: Duration = Duration::from_secs(30), Millis::new(10, HOUR_MS);

        /// A response must be written within this long.
        ///
        /// This also bounds how long a fetch holds a read lease on the log, and so how long a
        /// slow consumer can keep the writer from reclaiming a chunk.
        write_timeout: Duration = Duration::from_secs(10), Millis::new(10, HOUR_MS);

        /// Longest long-poll wait a fetch may ask for.
        fetch_wait_max: Duration = Duration::from_secs(30), Millis::new(0, HOUR_MS);

        /// Longest a produce may wait for its sync or for a chunk readers still lease.
        request_timeout: Duration = Duration::from_secs(30), Millis::new(10, HOUR_MS);

        /// How long a shutdown (SIGINT, SIGTERM) waits for in-flight requests.
        ///
        /// Connections still busy after it are closed; partitions are synced and checkpointed
        /// either way.
        shutdown_timeout: Duration = Duration::from_secs(10), Millis::new(0, HOUR_MS);
    }
    Groups {
        /// Capacity of the log of committed offsets and producer ids.
        ///
        /// The log is `DATA_DIR/.groups/state.ring`. The live state may use a quarter of it
        /// (about 300 000 committed offsets at 64 MiB); beyond that, new offsets are refused
        /// with `Busy`.
        group_log_capacity: u64 = 64 << 20, Size::new(STATE_CAPACITY_MIN, CAPACITY_MAX);

        /// Shortest session timeout a group member may ask for (asking for less gets this).
        group_session_timeout_min: Duration = Duration::from_millis(500),
            Millis::new(10, HOUR_MS);

        /// Longest session timeout a group member may ask for.
        group_session_timeout_max: Duration = Duration::from_secs(300),
            Millis::new(10, 24 * HOUR_MS);

        /// How long a Kafka consumer group that starts empty waits for more members before its
        /// first assignment (Kafka's `group.initial.rebalance.delay.ms`).
        ///
        /// Each member joining within the delay extends it, up to the group's rebalance timeout,
        /// so consumers started together get one assignment instead of one per arrival.
        group_initial_rebalance_delay: Duration = Duration::from_secs(3), Millis::new(0, HOUR_MS);
    }
    Observability {
        /// Log format on stderr: text or json.
        ///
        /// Levels come from `RUST_LOG` (default `info`).
        log_format: LogFormat = LogFormat::Text, Choice::new("FORMAT", "text or json");

        /// Serve the Prometheus metrics endpoint.
        metrics: bool = true, Switch;

        /// Address of the metrics endpoint (`/metrics`, Prometheus text format).
        metrics_listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 9878)), Address;
    }
    Kafka {
        /// Serve Kafka's protocol, so Kafka clients and tools work unmodified.
        kafka: bool = true, Switch;

        /// Address Kafka clients connect to.
        kafka_listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 9092)), Address;

        /// Host name Kafka clients are told to connect to (metadata and coordinator answers).
        ///
        /// Empty: the IP address of `kafka_listen`. Set it when listening on `0.0.0.0` or behind
        /// a name clients resolve.
        kafka_advertised_host: String = String::new(), Host;

        /// Create a topic when a Kafka client asks for its metadata and it does not exist.
        ///
        /// With the broker's defaults for partitions and capacity, as Kafka's
        /// `auto.create.topics.enable` does.
        kafka_auto_create_topics: bool = true, Switch;
    }
    Local {
        /// Path of a Unix domain socket for clients on this host. Empty: off.
        ///
        /// Same-host consumers (`LocalConsumer` in ringmq-client, `ringmq-cli consume --local`)
        /// connect here and then read partitions straight from the mapped ring, with no request
        /// or syscall per fetch. The socket speaks the native protocol, so the same connection
        /// commits group offsets. A socket file left by a broker that died is replaced; any
        /// other file at the path is an error.
        local_listen: PathBuf = PathBuf::new(), FilePath;

        /// File mode of the local socket, octal: who may connect (its owner and group).
        ///
        /// Authentication and permissions apply on top, as on the TCP listeners; a local
        /// connection's host is 127.0.0.1.
        local_listen_mode: FileMode = FileMode(0o600),
            Choice::new("MODE", "an octal file mode from 0 to 777, like 600 or 660");
    }
    Security {
        /// PEM file of the certificate chain the client listeners (native and Kafka) present.
        ///
        /// Empty: plain TCP. Set, with `tls_key`, every client connection is TLS (1.2 or 1.3).
        /// The files are read again on SIGHUP; connections already open keep the old
        /// certificate, new ones get the new.
        tls_cert: PathBuf = PathBuf::new(), FilePath;

        /// PEM file of the private key of `tls_cert` (PKCS#8, PKCS#1 or SEC1).
        tls_key: PathBuf = PathBuf::new(), FilePath;

        /// PEM file of the CA certificates that client certificates must chain to (mutual TLS).
        ///
        /// Empty: clients present no certificate. Set: every client must present one that
        /// chains to these CAs, and its subject (`CN=…,O=…`) is the connection's principal.
        tls_client_ca: PathBuf = PathBuf::new(), FilePath;

        /// Whether clients must authenticate: off or required.
        ///
        /// `required`: every client logs in (SCRAM-SHA-512, SCRAM-SHA-256, or PLAIN over TLS;
        /// SASL on the Kafka port, `Authenticate` on the native one) or presents a client
        /// certificate (`tls_client_ca`). Users are kept in `DATA_DIR/.users.toml`; the first
        /// comes from `RINGMQ_ROOT_USER` and `RINGMQ_ROOT_PASSWORD` when there are none.
        auth: AuthMode = AuthMode::Off, Choice::new("MODE", "off or required");
    }
}

/// Whether clients must authenticate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Anyone who can connect may use the broker.
    Off,
    /// Only authenticated clients may.
    Required,
}

impl FromStr for AuthMode {
    type Err = UnknownChoice;

    fn from_str(text: &str) -> Result<Self, UnknownChoice> {
        match text {
            "off" => Ok(Self::Off),
            "required" => Ok(Self::Required),
            _ => Err(UnknownChoice { text: text.to_owned() }),
        }
    }
}

impl fmt::Display for AuthMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Off => "off",
            Self::Required => "required",
        })
    }
}

/// A Unix file mode (permission bits only), read and printed in octal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileMode(pub u32);

impl FromStr for FileMode {
    type Err = UnknownChoice;

    fn from_str(text: &str) -> Result<Self, UnknownChoice> {
        let digits = text.trim().trim_start_matches("0o");
        match u32::from_str_radix(digits, 8) {
            Ok(mode) if mode <= 0o777 && !digits.is_empty() && !digits.starts_with('+') => {
                Ok(Self(mode))
            }
            _ => Err(UnknownChoice { text: text.to_owned() }),
        }
    }
}

impl fmt::Display for FileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04o}", self.0)
    }
}

impl Config {
    /// The local (Unix socket) listener's path, if it is on.
    pub fn local_listen_path(&self) -> Option<&std::path::Path> {
        (!self.local_listen.as_os_str().is_empty()).then_some(self.local_listen.as_path())
    }

    /// Where `/metrics` is served, if metrics are on.
    pub fn metrics_address(&self) -> Option<SocketAddr> {
        self.metrics.then_some(self.metrics_listen)
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl FromStr for LogFormat {
    type Err = UnknownChoice;

    fn from_str(text: &str) -> Result<Self, UnknownChoice> {
        match text {
            "text" => Ok(Self::Text),
            "json" => Ok(Self::Json),
            _ => Err(UnknownChoice { text: text.to_owned() }),
        }
    }
}

impl fmt::Display for LogFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Text => "text",
            Self::Json => "json",
        })
    }
}

/// A word that is not one of a setting's choices.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{text:?} is not one of the accepted values")]
pub struct UnknownChoice {
    /// The word given.
    pub text: String,
}

/// What loading the configuration produced.
#[derive(Debug)]
pub enum Loaded {
    /// Run the broker with this configuration.
    Run {
        /// The configuration.
        config: Box<Config>,
        /// Old names of settings that were used: they still work, and the broker says so.
        renamed: Vec<Renamed>,
    },
    /// Print this text (help, version, `--print-config`) and exit successfully.
    Print(String),
}

/// An old name of a setting that was used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Renamed {
    /// The name used (`--default-partitions`, or `config key default_partitions`).
    pub old: String,
    /// The current name, in the same form.
    pub new: String,
}

impl fmt::Display for Renamed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} is now called {}; the old name still works", self.old, self.new)
    }
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A command-line flag, as typed (`--default-capacity`).
    Flag(String),
    /// A key of the TOML file, as written.
    File(String),
    /// The declared default of the setting with this key.
    Default(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Flag(flag) => f.write_str(flag),
            Origin::File(key) => write!(f, "config key {key}"),
            Origin::Default(key) => write!(f, "{key} (its default)"),
        }
    }
}

/// A configuration that could not be accepted. Every variant names what was wrong in one line.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The command line could not be parsed: an unknown flag, a flag without its value.
    #[error("{message}")]
    Usage {
        /// The parser's first line.
        message: String,
    },
    /// A value a setting does not accept.
    #[error("invalid value {value:?} for {origin}: expected {accepted}")]
    InvalidValue {
        /// Where the value came from.
        origin: Origin,
        /// The value as given.
        value: String,
        /// What the setting accepts.
        accepted: String,
    },
    /// A value that disagrees with another setting.
    #[error("invalid value {value:?} for {origin}: {relation} {other} ({other_value})")]
    Conflict {
        /// Where the value came from.
        origin: Origin,
        /// The value, as the flag would take it.
        value: String,
        /// How it relates to the other ("larger than").
        relation: &'static str,
        /// The other setting's key.
        other: String,
        /// Its value.
        other_value: String,
    },
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The config file is not valid TOML.
    #[error("config file {path}: {message}")]
    FileSyntax {
        /// The file.
        path: PathBuf,
        /// The TOML parser's first line.
        message: String,
    },
    /// The config file has a key that is no setting.
    #[error("config file {path}: unknown key {key:?} (`ringmq --help` lists every setting)")]
    UnknownKey {
        /// The file.
        path: PathBuf,
        /// The key.
        key: String,
    },
    /// The config file sets one setting under its old and its new name.
    #[error("config file {path}: {old} is the old name of {new}; keep only {new}")]
    DuplicateKey {
        /// The file.
        path: PathBuf,
        /// The old key.
        old: String,
        /// The current key.
        new: String,
    },
}

/// Parses flags (and the TOML file they name) into a configuration.
///
/// # Errors
///
/// [`ConfigError`] for an unknown flag or key, or a value out of range or in conflict with another.
pub fn load<I, T>(args: I) -> Result<Loaded, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let matches = match command().try_get_matches_from(args) {
        Ok(matches) => matches,
        Err(error) => {
            use clap::error::ErrorKind;
            let text = error.render().to_string();
            return match error.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => Ok(Loaded::Print(text)),
                _ => Err(ConfigError::Usage { message: first_line(&text) }),
            };
        }
    };
    let mut layers = Layers::default();
    if let Some(path) = matches.get_one::<PathBuf>("config") {
        layers.apply_file(path)?;
    }
    layers.apply_flags(&matches)?;
    let (config, renamed) = layers.finish()?;
    if matches.get_flag("print_config") {
        return Ok(Loaded::Print(to_toml(&config)));
    }
    Ok(Loaded::Run { config: Box::new(config), renamed })
}

/// The configuration as a TOML file that [`load`] accepts back.
pub fn to_toml(config: &Config) -> String {
    let mut text = String::new();
    let mut section = None;
    for setting in settings() {
        if section != Some(setting.section) {
            if section.is_some() {
                text.push('\n');
            }
            text.push_str(&format!("# {}\n", setting.section.title()));
            section = Some(setting.section);
        }
        text.push_str(&format!("{} = {}\n", setting.key, (setting.to_toml)(config)));
    }
    text
}

/// The settings tables of `docs/config.md`: one per section, every setting with its key, flag,
/// default, accepted values and explanation.
pub fn reference_markdown() -> String {
    let escape = |text: &str| text.replace('|', "\\|").replace('\n', " ");
    let mut text = String::new();
    let mut section = None;
    for setting in settings() {
        if section != Some(setting.section) {
            if section.is_some() {
                text.push('\n');
            }
            text.push_str(&format!("### {}\n\n", setting.section.title()));
            text.push_str("| key / flag | default | accepted | what it does |\n");
            text.push_str("|------------|---------|----------|--------------|\n");
            section = Some(setting.section);
        }
        let mut what = format!("{}.", setting.help);
        if !setting.long.is_empty() {
            what.push(' ');
            what.push_str(&setting.long);
        }
        if setting.switch {
            what.push_str(&format!(" `{}` alone means `true`.", setting.flag()));
        }
        for old in setting.renamed {
            what.push_str(&format!(" Was `{old}` (`{}`).", Setting::flag_of(old)));
        }
        let flags = if setting.switch {
            format!("`{}`, `--no-{}`", setting.flag(), &setting.flag()[2..])
        } else {
            format!("`{}`", setting.flag())
        };
        text.push_str(&format!(
            "| `{}` / {flags} | `{}` | {} | {} |\n",
            setting.key,
            setting.default,
            escape(&setting.accepted),
            escape(&what)
        ));
    }
    text
}

/// The command line: two flags of its own, then one flag per setting (with hidden flags for old
/// names and a `--no-` form for switches).
fn command() -> Command {
    let mut command = Command::new("ringmq")
        .version(env!("CARGO_PKG_VERSION"))
        .about("ringmq: a persistent, zero-copy message queue broker")
        .long_about(
            "ringmq serves topics of memory-mapped ring logs over TCP.\n\nWith no flags it \
             listens on 127.0.0.1:7878 and keeps data in ./ringmq-data. Every flag is also a key \
             of the TOML file given by --config (the flag's name with underscores); flags win \
             over the file. docs/config.md explains every setting.",
        )
        .args_override_self(true)
        .arg(
            Arg::new("config")
                .long("config")
                .value_name("FILE")
                .value_parser(clap::value_parser!(PathBuf))
                .help("TOML file of settings (keys as the flag names, with underscores)"),
        )
        .arg(
            Arg::new("print_config")
                .long("print-config")
                .action(ArgAction::SetTrue)
                .help("Print the effective configuration as TOML and exit"),
        );
    for setting in settings() {
        command = command.next_help_heading(setting.section.title());
        let long_help = {
            let mut text = format!("{}.", setting.help);
            if !setting.long.is_empty() {
                text.push_str("\n\n");
                text.push_str(&setting.long);
            }
            text.push_str(&format!(
                "\n\nAccepts {}. TOML key: {}.\n[default: {}]",
                setting.accepted, setting.key, setting.default
            ));
            text
        };
        let value_arg = |id: String, long: String| {
            let arg = Arg::new(id).long(long).value_name(setting.value_name).action(ArgAction::Set);
            if setting.switch {
                arg.num_args(0..=1).default_missing_value("true")
            } else {
                // `--in-flight-count-max -3` is a bad value, not an unknown flag `-3`.
                arg.allow_negative_numbers(true)
            }
        };
        command = command.arg(
            value_arg(setting.key.clone(), setting.key.replace('_', "-"))
                .help(format!("{} [default: {}]", setting.help, setting.default))
                .long_help(long_help),
        );
        if setting.switch {
            command = command.arg(
                Arg::new(negation_id(&setting.key))
                    .long(format!("no-{}", setting.key.replace('_', "-")))
                    .action(ArgAction::SetTrue)
                    .help(format!("Same as {} false", setting.flag())),
            );
        }
        for old in setting.renamed {
            command = command.arg(
                value_arg(old_id(old), old.replace('_', "-"))
                    .hide(true)
                    .help(format!("Old name of {}", setting.flag())),
            );
        }
    }
    command
}

fn negation_id(key: &str) -> String {
    format!("no {key}")
}

fn old_id(key: &str) -> String {
    format!("old {key}")
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or(text).trim_start_matches("error: ").to_owned()
}

/// The settings by key, old keys included: (index in `settings()`, renamed from).
fn by_key() -> &'static HashMap<String, (usize, Option<&'static str>)> {
    static BY_KEY: std::sync::OnceLock<HashMap<String, (usize, Option<&'static str>)>> =
        std::sync::OnceLock::new();
    BY_KEY.get_or_init(|| {
        let mut map = HashMap::new();
        for (index, setting) in settings().iter().enumerate() {
            let mut insert = |key: String, old| {
                let previous = map.insert(key.clone(), (index, old));
                assert!(previous.is_none(), "setting key {key} declared twice");
            };
            insert(setting.key.clone(), None);
            for old in setting.renamed {
                insert((*old).to_owned(), Some(*old));
            }
        }
        map
    })
}

/// The configuration being built: defaults, then the file, then the flags, with where each
/// setting came from.
struct Layers {
    config: Config,
    origins: Vec<Option<Origin>>,
    renamed: Vec<Renamed>,
}

impl Default for Layers {
    fn default() -> Self {
        Self {
            config: Config::default(),
            origins: vec![None; settings().len()],
            renamed: Vec::new(),
        }
    }
}

impl Layers {
    fn set(&mut self, index: usize, raw: &Raw<'_>, origin: Origin) -> Result<(), ConfigError> {
        let setting = &settings()[index];
        if !(setting.assign)(&mut self.config, raw) {
            return Err(ConfigError::InvalidValue {
                origin,
                value: raw.text(),
                accepted: setting.accepted.clone(),
            });
        }
        self.origins[index] = Some(origin);
        Ok(())
    }

    fn apply_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::ReadFile { path: path.to_owned(), source })?;
        let table: toml::Table = toml::from_str(&text).map_err(|error| {
            let message = error.message().lines().next().unwrap_or("invalid TOML").to_owned();
            ConfigError::FileSyntax { path: path.to_owned(), message }
        })?;
        let mut seen: HashMap<usize, &str> = HashMap::new();
        for (key, value) in &table {
            let Some(&(index, old)) = by_key().get(key.as_str()) else {
                return Err(ConfigError::UnknownKey { path: path.to_owned(), key: key.clone() });
            };
            let new = &settings()[index].key;
            if let Some(other) = seen.insert(index, key) {
                let old = if other == new { key.as_str() } else { other };
                return Err(ConfigError::DuplicateKey {
                    path: path.to_owned(),
                    old: old.to_owned(),
                    new: new.clone(),
                });
            }
            if old.is_some() {
                self.renamed.push(Renamed {
                    old: format!("config key {key}"),
                    new: format!("config key {new}"),
                });
            }
            self.set(index, &Raw::File(value), Origin::File(key.clone()))?;
        }
        Ok(())
    }

    fn apply_flags(&mut self, matches: &ArgMatches) -> Result<(), ConfigError> {
        for (index, setting) in settings().iter().enumerate() {
            // Every form of the flag that was given, by position; the last one wins.
            let mut given: Vec<(usize, String, Option<&'static str>)> = Vec::new();
            let mut value_of = |id: &str, old: Option<&'static str>| {
                if let (Some(position), Some(value)) =
                    (matches.index_of(id), matches.get_one::<String>(id))
                {
                    given.push((position, value.clone(), old));
                }
            };
            value_of(&setting.key, None);
            for old in setting.renamed {
                value_of(&old_id(old), Some(old));
            }
            if setting.switch && matches.get_flag(&negation_id(&setting.key)) {
                if let Some(position) = matches.index_of(&negation_id(&setting.key)) {
                    given.push((position, "false".to_owned(), None));
                }
            }
            for (_, _, old) in &given {
                if let Some(old) = old {
                    self.renamed.push(Renamed { old: Setting::flag_of(old), new: setting.flag() });
                }
            }
            let Some((_, value, old)) = given.into_iter().max_by_key(|(position, ..)| *position)
            else {
                continue;
            };
            let flag = old.map_or_else(|| setting.flag(), Setting::flag_of);
            self.set(index, &Raw::Flag(&value), Origin::Flag(flag))?;
        }
        Ok(())
    }

    fn origin(&self, field: &str) -> Option<&Origin> {
        let index = settings()
            .iter()
            .position(|setting| setting.field == field)
            .unwrap_or_else(|| panic!("no setting {field} is declared"));
        self.origins[index].as_ref()
    }

    /// Checks `lower <= upper` for two settings, blaming the one the user gave (the lower one if
    /// both were).
    fn ordered<T: PartialOrd>(
        &self,
        (lower_field, lower): (&str, T),
        (upper_field, upper): (&str, T),
        show: impl Fn(&T) -> String,
    ) -> Result<(), ConfigError> {
        if lower <= upper {
            return Ok(());
        }
        let (origin, value, relation, other, other_value) =
            match (self.origin(lower_field), self.origin(upper_field)) {
                (None, Some(origin)) => {
                    (origin.clone(), show(&upper), "smaller than", lower_field, show(&lower))
                }
                (Some(origin), _) => {
                    (origin.clone(), show(&lower), "larger than", upper_field, show(&upper))
                }
                (None, None) => (
                    Origin::Default(key_of(lower_field)),
                    show(&lower),
                    "larger than",
                    upper_field,
                    show(&upper),
                ),
            };
        Err(ConfigError::Conflict { origin, value, relation, other: key_of(other), other_value })
    }

    /// Settings that must agree with each other, all checked here; then the configuration.
    fn finish(mut self) -> Result<(Config, Vec<Renamed>), ConfigError> {
        let config = &self.config;
        let size = |bytes: &u64| kind::show_size(*bytes);
        let millis = |duration: &Duration| kind::millis_of(*duration).to_string();
        self.ordered(
            ("partition_count_default", config.partition_count_default),
            ("partition_count_max", config.partition_count_max),
            u32::to_string,
        )?;
        self.ordered(
            ("partition_capacity_default", config.partition_capacity_default),
            ("partition_capacity_max", config.partition_capacity_max),
            size,
        )?;
        self.ordered(
            ("group_session_timeout_min", config.group_session_timeout_min),
            ("group_session_timeout_max", config.group_session_timeout_max),
            millis,
        )?;
        // A batch travels in a produce frame beside the request's other fields. Left unset, the
        // batch limit follows a smaller frame limit down.
        let batch_room = config.frame_size_max - PRODUCE_OVERHEAD_MAX;
        if self.origin("batch_size_max").is_none() {
            self.config.batch_size_max = self.config.batch_size_max.min(batch_room);
        }
        let config = &self.config;
        if config.batch_size_max > batch_room {
            let origin = self.origin("batch_size_max").cloned().expect("set: lowered otherwise");
            return Err(ConfigError::Conflict {
                origin,
                value: size(&u64::from(config.batch_size_max)),
                relation: "larger than",
                other: "frame_size_max less 1KiB".to_owned(),
                other_value: size(&u64::from(batch_room)),
            });
        }
        self.tls_files_agree()?;
        Ok((self.config, self.renamed))
    }

    /// A TLS key needs its certificate and the reverse; client CAs need both.
    fn tls_files_agree(&self) -> Result<(), ConfigError> {
        let config = &self.config;
        let set = |path: &PathBuf| !path.as_os_str().is_empty();
        let pairs = [
            ("tls_key", &config.tls_key, "tls_cert", &config.tls_cert),
            ("tls_cert", &config.tls_cert, "tls_key", &config.tls_key),
            ("tls_client_ca", &config.tls_client_ca, "tls_cert", &config.tls_cert),
        ];
        for (key, value, other, other_value) in pairs {
            if set(value) && !set(other_value) {
                let origin = self.origin(key).cloned().expect("set: empty otherwise");
                return Err(ConfigError::Conflict {
                    origin,
                    value: value.display().to_string(),
                    relation: "given without",
                    other: key_of(other),
                    other_value: String::new(),
                });
            }
        }
        Ok(())
    }
}

/// A setting's key (as the TOML file spells it) from its field name.
fn key_of(field: &str) -> String {
    settings()
        .iter()
        .find(|setting| setting.field == field)
        .map_or_else(|| field.to_owned(), |setting| setting.key.clone())
}

/// Read-ahead a connection's read buffer holds beyond one whole frame.
pub const READ_AHEAD: usize = 64 << 10;

/// Bytes of one read buffer, for frames of up to `frame_size_max` body bytes: the frame header,
/// the body and the read-ahead (what `read_buffer_count`'s help says).
pub fn read_buffer_size(frame_size_max: u32) -> usize {
    let body = usize::try_from(frame_size_max).expect("a u32 fits usize on supported targets");
    FRAME_HEADER_SIZE + body + READ_AHEAD
}

#[cfg(test)]
mod tests;
