//! Every setting of the broker, with its unit and its limit.
//!
//! Settings come from three places, later ones winning: the defaults below, an optional TOML file
//! (`--config FILE`), and command-line flags. Every flag has a TOML key of the same name with
//! underscores (`--frame-size-max` is `frame_size_max`). Unknown keys and bad values are refused
//! with one line naming the key, the bad value, and what is accepted.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::Parser;
use serde::Deserialize;

use crate::log::{CAPACITY_MAX, CHUNK_COUNT_MIN, CHUNK_SIZE_MIN};
use ringmq_protocol::limits::{BATCH_SIZE_MAX, FRAME_BODY_SIZE_MAX, PARTITION_COUNT_MAX};

/// When the broker syncs partitions to disk on its own, beyond what `acks=synced` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncPolicy {
    /// Only when a producer asks (`acks=synced`), and at shutdown.
    None,
    /// Every partition with unsynced data, every interval.
    Interval(Duration),
    /// Every produce is acknowledged only after the sync that covers it (as if `acks=synced`).
    Always,
}

impl FromStr for SyncPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let accepted = "expected none, always or interval=<ms> (1 to 3600000)";
        match text {
            "none" => Ok(Self::None),
            "always" => Ok(Self::Always),
            _ => {
                let millis = text
                    .strip_prefix("interval=")
                    .and_then(|ms| ms.parse::<u64>().ok())
                    .filter(|ms| (1..=3_600_000).contains(ms))
                    .ok_or_else(|| accepted.to_owned())?;
                Ok(Self::Interval(Duration::from_millis(millis)))
            }
        }
    }
}

impl fmt::Display for SyncPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("none"),
            Self::Always => f.write_str("always"),
            Self::Interval(interval) => write!(f, "interval={}", interval.as_millis()),
        }
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The effective configuration of a broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Address the broker listens on.
    pub listen: SocketAddr,
    /// Directory holding every topic's ring files; locked while the broker runs.
    pub data_dir: PathBuf,
    /// Partitions of a topic created without a partition count.
    pub default_partitions: u32,
    /// Ring capacity per partition, bytes, for a topic created without one.
    pub default_capacity: u64,
    /// Largest ring capacity per partition a client may ask for, bytes.
    pub topic_capacity_max: u64,
    /// Most partitions a client may ask for in one topic.
    pub topic_partitions_max: u32,
    /// When the broker syncs on its own.
    pub sync: SyncPolicy,
    /// Largest frame body accepted, bytes.
    pub frame_size_max: u32,
    /// Largest record batch accepted, bytes (a small ring's chunk size may lower it per topic).
    pub batch_size_max: u32,
    /// Most client connections at once; more are refused with `TooManyConnections`.
    pub connections_max: u32,
    /// Most requests one connection may have unanswered; then the broker stops reading it.
    pub in_flight_max: u32,
    /// Read buffers in the pool (each `frame_size_max` + 84 KiB); connections wait for one.
    pub read_buffers: u32,
    /// A connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// A frame must arrive whole within this long once its first byte has.
    pub frame_timeout: Duration,
    /// A response must be written within this long; this also bounds how long a fetch holds a
    /// lease on the log (and so how long the writer may wait to reclaim a chunk).
    pub write_timeout: Duration,
    /// Longest long-poll wait a fetch may ask for.
    pub fetch_wait_max: Duration,
    /// Longest a produce may wait for its sync or for a busy chunk.
    pub request_timeout: Duration,
    /// How long shutdown waits for in-flight requests before closing connections.
    pub shutdown_timeout: Duration,
    /// Pre-fault ring mappings when they are created and opened.
    pub prefault: bool,
    /// Log output format.
    pub log_format: LogFormat,
    /// Where `/metrics` is served (Prometheus text format); `None` turns metrics off.
    pub metrics_listen: Option<SocketAddr>,
    /// Capacity of the log holding committed offsets and producer ids, bytes.
    pub group_log_capacity: u64,
    /// Shortest session timeout a group member may ask for.
    pub group_session_timeout_min: Duration,
    /// Longest session timeout a group member may ask for.
    pub group_session_timeout_max: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            data_dir: PathBuf::from("./ringmq-data"),
            default_partitions: 1,
            default_capacity: 256 << 20,
            topic_capacity_max: CAPACITY_MAX,
            topic_partitions_max: PARTITION_COUNT_MAX,
            sync: SyncPolicy::None,
            frame_size_max: (1 << 20) + (4 << 10),
            batch_size_max: 1 << 20,
            connections_max: 1024,
            in_flight_max: 128,
            read_buffers: 64,
            idle_timeout: Duration::from_secs(600),
            frame_timeout: Duration::from_secs(30),
            write_timeout: Duration::from_secs(10),
            fetch_wait_max: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            shutdown_timeout: Duration::from_secs(10),
            prefault: true,
            log_format: LogFormat::Text,
            metrics_listen: Some(SocketAddr::from(([127, 0, 0, 1], 9878))),
            group_log_capacity: 64 << 20,
            group_session_timeout_min: Duration::from_millis(500),
            group_session_timeout_max: Duration::from_secs(300),
        }
    }
}

/// Command-line flags. Each overrides the TOML key of the same name.
#[derive(Debug, Parser)]
#[command(
    name = "ringmq",
    version,
    args_override_self = true,
    about = "ringmq: a persistent, zero-copy message queue broker",
    long_about = "ringmq serves topics of memory-mapped ring logs over TCP.\n\nWith no flags it listens on 127.0.0.1:7878 and keeps data in ./ringmq-data. Every flag can also be set in a TOML file given by --config (key = flag name with underscores); flags win over the file."
)]
struct Args {
    /// TOML file of settings (keys as the flag names, with underscores).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
    /// Address to listen on [default: 127.0.0.1:7878].
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// Data directory [default: ./ringmq-data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Partitions for topics created without a count, 1-1024 [default: 1].
    #[arg(long, value_name = "N")]
    default_partitions: Option<String>,
    /// Ring capacity per partition for topics created without one, e.g. 1GiB [default: 256MiB].
    #[arg(long, value_name = "SIZE")]
    default_capacity: Option<String>,
    /// Largest ring capacity per partition a client may ask for [default: 1TiB].
    #[arg(long, value_name = "SIZE")]
    topic_capacity_max: Option<String>,
    /// Most partitions a client may ask for in one topic, 1-1024 [default: 1024].
    #[arg(long, value_name = "N")]
    topic_partitions_max: Option<String>,
    /// Broker-side syncing: none, always, or interval=MS (sync every MS milliseconds) [default: none].
    #[arg(long, value_name = "POLICY")]
    sync: Option<String>,
    /// Largest frame body accepted, e.g. 1MiB [default: 1MiB + 4KiB].
    #[arg(long, value_name = "SIZE")]
    frame_size_max: Option<String>,
    /// Largest record batch accepted, at most the frame size [default: 1MiB].
    #[arg(long, value_name = "SIZE")]
    batch_size_max: Option<String>,
    /// Most client connections at once [default: 1024].
    #[arg(long, value_name = "N")]
    connections_max: Option<String>,
    /// Most unanswered requests per connection [default: 128].
    #[arg(long, value_name = "N")]
    in_flight_max: Option<String>,
    /// Read buffers in the pool, each frame-size-max + 84KiB [default: 64].
    #[arg(long, value_name = "N")]
    read_buffers: Option<String>,
    /// Close a connection idle this long, ms [default: 600000].
    #[arg(long, value_name = "MS")]
    idle_timeout_ms: Option<String>,
    /// A started frame must arrive whole within this long, ms [default: 30000].
    #[arg(long, value_name = "MS")]
    frame_timeout_ms: Option<String>,
    /// A response must be written within this long, ms; bounds read leases [default: 10000].
    #[arg(long, value_name = "MS")]
    write_timeout_ms: Option<String>,
    /// Longest long-poll wait a fetch may ask for, ms [default: 30000].
    #[arg(long, value_name = "MS")]
    fetch_wait_max_ms: Option<String>,
    /// Longest a produce may wait for its sync or a busy chunk, ms [default: 30000].
    #[arg(long, value_name = "MS")]
    request_timeout_ms: Option<String>,
    /// How long shutdown waits for in-flight requests, ms [default: 10000].
    #[arg(long, value_name = "MS")]
    shutdown_timeout_ms: Option<String>,
    /// Pre-fault ring mappings: true or false [default: true].
    #[arg(long, value_name = "BOOL")]
    prefault: Option<String>,
    /// Log format: text or json (levels from RUST_LOG) [default: text].
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// Address of the Prometheus metrics endpoint, /metrics [default: 127.0.0.1:9878].
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<String>,
    /// Serve no metrics endpoint (TOML: metrics = false).
    #[arg(long)]
    no_metrics: bool,
    /// Capacity of the log of committed offsets and producer ids, at least 16MiB [default: 64MiB].
    #[arg(long, value_name = "SIZE")]
    group_log_capacity: Option<String>,
    /// Shortest session timeout a group member may ask for, ms [default: 500].
    #[arg(long, value_name = "MS")]
    group_session_timeout_min_ms: Option<String>,
    /// Longest session timeout a group member may ask for, ms [default: 300000].
    #[arg(long, value_name = "MS")]
    group_session_timeout_max_ms: Option<String>,
}

/// The TOML file's shape: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<toml::Value>,
    data_dir: Option<toml::Value>,
    default_partitions: Option<toml::Value>,
    default_capacity: Option<toml::Value>,
    topic_capacity_max: Option<toml::Value>,
    topic_partitions_max: Option<toml::Value>,
    sync: Option<toml::Value>,
    frame_size_max: Option<toml::Value>,
    batch_size_max: Option<toml::Value>,
    connections_max: Option<toml::Value>,
    in_flight_max: Option<toml::Value>,
    read_buffers: Option<toml::Value>,
    idle_timeout_ms: Option<toml::Value>,
    frame_timeout_ms: Option<toml::Value>,
    write_timeout_ms: Option<toml::Value>,
    fetch_wait_max_ms: Option<toml::Value>,
    request_timeout_ms: Option<toml::Value>,
    shutdown_timeout_ms: Option<toml::Value>,
    prefault: Option<toml::Value>,
    log_format: Option<toml::Value>,
    metrics_listen: Option<toml::Value>,
    metrics: Option<toml::Value>,
    group_log_capacity: Option<toml::Value>,
    group_session_timeout_min_ms: Option<toml::Value>,
    group_session_timeout_max_ms: Option<toml::Value>,
}

/// What loading the configuration produced.
#[derive(Debug)]
pub enum Loaded {
    /// Run the broker with this configuration.
    Run(Box<Config>),
    /// Print this text (help, version, `--print-config`) and exit successfully.
    Print(String),
}

/// A setting that could not be accepted: one line naming the key, the value and what is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// Parses flags (and the TOML file they name) into a configuration.
///
/// # Errors
///
/// [`ConfigError`] for an unknown flag or key, or a value out of range.
pub fn load<I, T>(args: I) -> Result<Loaded, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args = match Args::try_parse_from(args) {
        Ok(args) => args,
        Err(error) => {
            use clap::error::ErrorKind;
            return match error.kind() {
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
                    Ok(Loaded::Print(error.render().to_string()))
                }
                _ => Err(ConfigError(first_line(&error.render().to_string()))),
            };
        }
    };
    let file = match &args.config {
        Some(path) => read_file(path)?,
        None => FileConfig::default(),
    };
    let config = merge(&args, &file)?;
    if args.print_config {
        return Ok(Loaded::Print(to_toml(&config)));
    }
    Ok(Loaded::Run(Box::new(config)))
}

fn first_line(text: &str) -> String {
    text.lines().next().unwrap_or(text).trim_start_matches("error: ").to_owned()
}

fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        ConfigError(format!("cannot read config file {}: {error}", path.display()))
    })?;
    toml::from_str(&text).map_err(|error| {
        let message = error.message().lines().next().unwrap_or("invalid TOML").to_owned();
        ConfigError(format!("config file {}: {message}", path.display()))
    })
}

/// One setting's raw value and where it came from, for error messages.
enum Raw<'a> {
    Flag(&'a str),
    File(&'a toml::Value),
}

impl Raw<'_> {
    fn text(&self) -> String {
        match self {
            Raw::Flag(text) => (*text).to_owned(),
            Raw::File(toml::Value::String(text)) => text.clone(),
            Raw::File(value) => value.to_string(),
        }
    }
}

fn raw<'a>(flag: &'a Option<String>, file: &'a Option<toml::Value>) -> Option<Raw<'a>> {
    flag.as_deref().map(Raw::Flag).or(file.as_ref().map(Raw::File))
}

fn invalid(key: &str, raw: &Raw<'_>, accepted: &str) -> ConfigError {
    let origin = match raw {
        Raw::Flag(_) => format!("--{}", key.replace('_', "-")),
        Raw::File(_) => format!("config key {key}"),
    };
    ConfigError(format!("invalid value {:?} for {origin}: {accepted}", raw.text()))
}

fn number(
    key: &str,
    raw: Option<Raw<'_>>,
    range: std::ops::RangeInclusive<u64>,
    default: u64,
) -> Result<u64, ConfigError> {
    let Some(raw) = raw else { return Ok(default) };
    let accepted = format!("expected a whole number from {} to {}", range.start(), range.end());
    let value = match &raw {
        Raw::File(toml::Value::Integer(value)) => u64::try_from(*value).ok(),
        other => other.text().trim().parse::<u64>().ok(),
    };
    value.filter(|value| range.contains(value)).ok_or_else(|| invalid(key, &raw, &accepted))
}

fn size(
    key: &str,
    raw: Option<Raw<'_>>,
    range: std::ops::RangeInclusive<u64>,
    default: u64,
) -> Result<u64, ConfigError> {
    let Some(raw) = raw else { return Ok(default) };
    let accepted = format!(
        "expected a size like 64KiB, 512MiB or 1GiB, from {} to {}",
        bytesize::ByteSize::b(*range.start()).display().iec(),
        bytesize::ByteSize::b(*range.end()).display().iec()
    );
    let value = match &raw {
        Raw::File(toml::Value::Integer(value)) => u64::try_from(*value).ok(),
        other => other.text().trim().parse::<bytesize::ByteSize>().ok().map(|size| size.as_u64()),
    };
    value.filter(|value| range.contains(value)).ok_or_else(|| invalid(key, &raw, &accepted))
}

fn millis(
    key: &str,
    raw: Option<Raw<'_>>,
    range: std::ops::RangeInclusive<u64>,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let default_ms = u64::try_from(default.as_millis()).unwrap_or(u64::MAX);
    number(key, raw, range, default_ms).map(Duration::from_millis)
}

fn merge(args: &Args, file: &FileConfig) -> Result<Config, ConfigError> {
    let defaults = Config::default();
    let listen = match raw(&args.listen, &file.listen) {
        None => defaults.listen,
        Some(raw) => raw.text().parse::<SocketAddr>().map_err(|_| {
            invalid("listen", &raw, "expected an address like 127.0.0.1:7878 or [::1]:7878")
        })?,
    };
    let data_dir = match (&args.data_dir, &file.data_dir) {
        (Some(path), _) => path.clone(),
        (None, Some(toml::Value::String(path))) => PathBuf::from(path),
        (None, Some(value)) => {
            return Err(invalid("data_dir", &Raw::File(value), "expected a path string"))
        }
        (None, None) => defaults.data_dir,
    };
    if data_dir.as_os_str().is_empty() {
        return Err(ConfigError(
            "invalid value \"\" for --data-dir: expected a directory path".to_owned(),
        ));
    }
    let u32_of = |value: u64| u32::try_from(value).unwrap_or(u32::MAX);
    let default_partitions = u32_of(number(
        "default_partitions",
        raw(&args.default_partitions, &file.default_partitions),
        1..=u64::from(PARTITION_COUNT_MAX),
        u64::from(defaults.default_partitions),
    )?);
    let default_capacity = size(
        "default_capacity",
        raw(&args.default_capacity, &file.default_capacity),
        CHUNK_SIZE_MIN * CHUNK_COUNT_MIN..=CAPACITY_MAX,
        defaults.default_capacity,
    )?;
    let topic_capacity_max = size(
        "topic_capacity_max",
        raw(&args.topic_capacity_max, &file.topic_capacity_max),
        CHUNK_SIZE_MIN * CHUNK_COUNT_MIN..=CAPACITY_MAX,
        defaults.topic_capacity_max,
    )?;
    let topic_partitions_max = u32_of(number(
        "topic_partitions_max",
        raw(&args.topic_partitions_max, &file.topic_partitions_max),
        1..=u64::from(PARTITION_COUNT_MAX),
        u64::from(defaults.topic_partitions_max),
    )?);
    if default_capacity > topic_capacity_max {
        return Err(ConfigError(format!(
            "invalid value \"{default_capacity}\" for default_capacity: larger than topic_capacity_max ({topic_capacity_max})"
        )));
    }
    if default_partitions > topic_partitions_max {
        return Err(ConfigError(format!(
            "invalid value \"{default_partitions}\" for default_partitions: more than topic_partitions_max ({topic_partitions_max})"
        )));
    }
    let sync = match raw(&args.sync, &file.sync) {
        None => defaults.sync,
        Some(raw) => {
            raw.text().parse::<SyncPolicy>().map_err(|accepted| invalid("sync", &raw, &accepted))?
        }
    };
    let frame_size_max = u32_of(size(
        "frame_size_max",
        raw(&args.frame_size_max, &file.frame_size_max),
        4096..=u64::from(FRAME_BODY_SIZE_MAX),
        u64::from(defaults.frame_size_max),
    )?);
    // A batch travels inside a produce frame, with the request's other fields.
    let batch_limit = u64::from(BATCH_SIZE_MAX).min(u64::from(frame_size_max) - 1024);
    let batch_size_max = u32_of(size(
        "batch_size_max",
        raw(&args.batch_size_max, &file.batch_size_max),
        128..=batch_limit,
        u64::from(defaults.batch_size_max).min(batch_limit),
    )?);
    let connections_max = u32_of(number(
        "connections_max",
        raw(&args.connections_max, &file.connections_max),
        1..=100_000,
        u64::from(defaults.connections_max),
    )?);
    let in_flight_max = u32_of(number(
        "in_flight_max",
        raw(&args.in_flight_max, &file.in_flight_max),
        1..=65_536,
        u64::from(defaults.in_flight_max),
    )?);
    let read_buffers = u32_of(number(
        "read_buffers",
        raw(&args.read_buffers, &file.read_buffers),
        1..=65_536,
        u64::from(defaults.read_buffers),
    )?);
    let hour = 3_600_000;
    let idle_timeout = millis(
        "idle_timeout_ms",
        raw(&args.idle_timeout_ms, &file.idle_timeout_ms),
        10..=24 * hour,
        defaults.idle_timeout,
    )?;
    let frame_timeout = millis(
        "frame_timeout_ms",
        raw(&args.frame_timeout_ms, &file.frame_timeout_ms),
        10..=hour,
        defaults.frame_timeout,
    )?;
    let write_timeout = millis(
        "write_timeout_ms",
        raw(&args.write_timeout_ms, &file.write_timeout_ms),
        10..=hour,
        defaults.write_timeout,
    )?;
    let fetch_wait_max = millis(
        "fetch_wait_max_ms",
        raw(&args.fetch_wait_max_ms, &file.fetch_wait_max_ms),
        0..=hour,
        defaults.fetch_wait_max,
    )?;
    let request_timeout = millis(
        "request_timeout_ms",
        raw(&args.request_timeout_ms, &file.request_timeout_ms),
        10..=hour,
        defaults.request_timeout,
    )?;
    let shutdown_timeout = millis(
        "shutdown_timeout_ms",
        raw(&args.shutdown_timeout_ms, &file.shutdown_timeout_ms),
        0..=hour,
        defaults.shutdown_timeout,
    )?;
    let prefault = match raw(&args.prefault, &file.prefault) {
        None => defaults.prefault,
        Some(Raw::File(toml::Value::Boolean(value))) => *value,
        Some(raw) => match raw.text().as_str() {
            "true" => true,
            "false" => false,
            _ => return Err(invalid("prefault", &raw, "expected true or false")),
        },
    };
    let log_format = match raw(&args.log_format, &file.log_format) {
        None => defaults.log_format,
        Some(raw) => match raw.text().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => return Err(invalid("log_format", &raw, "expected text or json")),
        },
    };
    let metrics_enabled = match (args.no_metrics, &file.metrics) {
        (true, _) => false,
        (false, None) => true,
        (false, Some(toml::Value::Boolean(enabled))) => *enabled,
        (false, Some(value)) => {
            return Err(invalid("metrics", &Raw::File(value), "expected true or false"))
        }
    };
    let metrics_listen = match raw(&args.metrics_listen, &file.metrics_listen) {
        None => defaults.metrics_listen,
        Some(raw) => Some(raw.text().parse::<SocketAddr>().map_err(|_| {
            invalid("metrics_listen", &raw, "expected an address like 127.0.0.1:9878")
        })?),
    }
    .filter(|_| metrics_enabled);
    let group_log_capacity = size(
        "group_log_capacity",
        raw(&args.group_log_capacity, &file.group_log_capacity),
        crate::groups::store::STATE_CAPACITY_MIN..=CAPACITY_MAX,
        defaults.group_log_capacity,
    )?;
    let group_session_timeout_min = millis(
        "group_session_timeout_min_ms",
        raw(&args.group_session_timeout_min_ms, &file.group_session_timeout_min_ms),
        10..=hour,
        defaults.group_session_timeout_min,
    )?;
    let group_session_timeout_max = millis(
        "group_session_timeout_max_ms",
        raw(&args.group_session_timeout_max_ms, &file.group_session_timeout_max_ms),
        10..=24 * hour,
        defaults.group_session_timeout_max,
    )?;
    if group_session_timeout_min > group_session_timeout_max {
        return Err(ConfigError(format!(
            "invalid value \"{}\" for group_session_timeout_min_ms: larger than group_session_timeout_max_ms ({})",
            group_session_timeout_min.as_millis(),
            group_session_timeout_max.as_millis()
        )));
    }
    Ok(Config {
        listen,
        data_dir,
        default_partitions,
        default_capacity,
        topic_capacity_max,
        topic_partitions_max,
        sync,
        frame_size_max,
        batch_size_max,
        connections_max,
        in_flight_max,
        read_buffers,
        idle_timeout,
        frame_timeout,
        write_timeout,
        fetch_wait_max,
        request_timeout,
        shutdown_timeout,
        prefault,
        log_format,
        metrics_listen,
        group_log_capacity,
        group_session_timeout_min,
        group_session_timeout_max,
    })
}

/// The configuration as a TOML file that [`load`] accepts.
pub fn to_toml(config: &Config) -> String {
    let ms = |duration: Duration| duration.as_millis();
    format!(
        "listen = \"{}\"\ndata_dir = {:?}\ndefault_partitions = {}\ndefault_capacity = {}\ntopic_capacity_max = {}\ntopic_partitions_max = {}\nsync = \"{}\"\nframe_size_max = {}\nbatch_size_max = {}\nconnections_max = {}\nin_flight_max = {}\nread_buffers = {}\nidle_timeout_ms = {}\nframe_timeout_ms = {}\nwrite_timeout_ms = {}\nfetch_wait_max_ms = {}\nrequest_timeout_ms = {}\nshutdown_timeout_ms = {}\nprefault = {}\nlog_format = \"{}\"\ngroup_log_capacity = {}\ngroup_session_timeout_min_ms = {}\ngroup_session_timeout_max_ms = {}\n{}",
        config.listen,
        config.data_dir.display().to_string(),
        config.default_partitions,
        config.default_capacity,
        config.topic_capacity_max,
        config.topic_partitions_max,
        config.sync,
        config.frame_size_max,
        config.batch_size_max,
        config.connections_max,
        config.in_flight_max,
        config.read_buffers,
        ms(config.idle_timeout),
        ms(config.frame_timeout),
        ms(config.write_timeout),
        ms(config.fetch_wait_max),
        ms(config.request_timeout),
        ms(config.shutdown_timeout),
        config.prefault,
        match config.log_format {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        },
        config.group_log_capacity,
        ms(config.group_session_timeout_min),
        ms(config.group_session_timeout_max),
        match config.metrics_listen {
            Some(address) => format!("metrics_listen = \"{address}\"\n"),
            None => "metrics = false\n".to_owned(),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Config, ConfigError> {
        match load(std::iter::once("ringmq").chain(args.iter().copied()))? {
            Loaded::Run(config) => Ok(*config),
            Loaded::Print(text) => panic!("unexpected print: {text}"),
        }
    }

    #[test]
    fn no_flags_gives_the_documented_defaults() {
        let config = run(&[]).unwrap();
        assert_eq!(config, Config::default());
        assert_eq!(config.listen.to_string(), "127.0.0.1:7878");
        assert_eq!(config.data_dir, PathBuf::from("./ringmq-data"));
    }

    #[test]
    fn flags_parse_units() {
        let config = run(&[
            "--default-capacity",
            "1GiB",
            "--sync",
            "interval=250",
            "--frame-size-max",
            "2MiB",
            "--listen",
            "127.0.0.1:0",
        ])
        .unwrap();
        assert_eq!(config.default_capacity, 1 << 30);
        assert_eq!(config.sync, SyncPolicy::Interval(Duration::from_millis(250)));
        assert_eq!(config.frame_size_max, 2 << 20);
        assert_eq!(config.listen.port(), 0);
    }

    #[test]
    fn bad_values_name_the_key_the_value_and_what_is_accepted() {
        let cases: [(&[&str], &str); 6] = [
            (&["--default-capacity", "lots"], "invalid value \"lots\" for --default-capacity: expected a size like"),
            (&["--sync", "sometimes"], "invalid value \"sometimes\" for --sync: expected none, always or interval=<ms>"),
            (&["--listen", "localhost"], "invalid value \"localhost\" for --listen: expected an address"),
            (&["--default-partitions", "0"], "invalid value \"0\" for --default-partitions: expected a whole number from 1 to 1024"),
            (&["--prefault", "yes"], "invalid value \"yes\" for --prefault: expected true or false"),
            (&["--batch-size-max", "2MiB"], "for --batch-size-max"),
        ];
        for (args, expected) in cases {
            let error = run(args).unwrap_err().to_string();
            assert!(error.contains(expected), "{args:?}: {error}");
            assert!(!error.contains('\n'), "one line: {error}");
        }
        let error = run(&["--no-such-flag"]).unwrap_err().to_string();
        assert!(error.contains("--no-such-flag") && !error.contains('\n'), "{error}");
    }

    #[test]
    fn group_settings_are_checked() {
        let config =
            run(&["--group-log-capacity", "32MiB", "--group-session-timeout-min-ms", "100"])
                .unwrap();
        assert_eq!(config.group_log_capacity, 32 << 20);
        assert_eq!(config.group_session_timeout_min, Duration::from_millis(100));
        let error = run(&["--group-log-capacity", "1MiB"]).unwrap_err().to_string();
        assert!(error.contains("for --group-log-capacity"), "{error}");
        let error = run(&[
            "--group-session-timeout-min-ms",
            "5000",
            "--group-session-timeout-max-ms",
            "1000",
        ])
        .unwrap_err()
        .to_string();
        assert!(error.contains("larger than group_session_timeout_max_ms"), "{error}");
    }

    #[test]
    fn file_settings_apply_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ringmq.toml");
        std::fs::write(&path, "default_partitions = 4\ndefault_capacity = \"64MiB\"\nsync = \"always\"\nprefault = false\n").unwrap();
        let file = path.to_str().unwrap();
        let config = run(&["--config", file, "--default-partitions", "2"]).unwrap();
        assert_eq!((config.default_partitions, config.default_capacity), (2, 64 << 20));
        assert_eq!(config.sync, SyncPolicy::Always);
        assert!(!config.prefault);
    }

    #[test]
    fn file_unknown_keys_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ringmq.toml");
        std::fs::write(&path, "default_partitons = 4\n").unwrap();
        let error = run(&["--config", path.to_str().unwrap()]).unwrap_err().to_string();
        assert!(error.contains("default_partitons"), "{error}");
        std::fs::write(&path, "in_flight_max = -3\n").unwrap();
        let error = run(&["--config", path.to_str().unwrap()]).unwrap_err().to_string();
        assert!(error.contains("config key in_flight_max") && error.contains("\"-3\""), "{error}");
    }

    #[test]
    fn metrics_can_move_or_be_turned_off() {
        assert_eq!(run(&[]).unwrap().metrics_listen.unwrap().to_string(), "127.0.0.1:9878");
        assert_eq!(
            run(&["--metrics-listen", "127.0.0.1:0"]).unwrap().metrics_listen.unwrap().port(),
            0
        );
        assert_eq!(run(&["--no-metrics"]).unwrap().metrics_listen, None);
        let error = run(&["--metrics-listen", "nine"]).unwrap_err().to_string();
        assert!(error.contains("--metrics-listen"), "{error}");
    }

    #[test]
    fn printed_config_loads_back_to_the_same() {
        for args in [&["--no-metrics"][..], &["--metrics-listen", "127.0.0.1:9999"]] {
            let config = run(args).unwrap();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("printed.toml");
            std::fs::write(&path, to_toml(&config)).unwrap();
            assert_eq!(run(&["--config", path.to_str().unwrap()]).unwrap(), config);
        }
        let config = run(&["--sync", "interval=100", "--default-capacity", "48MiB"]).unwrap();
        let text = to_toml(&config);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("printed.toml");
        std::fs::write(&path, &text).unwrap();
        assert_eq!(run(&["--config", path.to_str().unwrap()]).unwrap(), config);
    }
}
