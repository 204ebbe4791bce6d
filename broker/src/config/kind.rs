//! The kinds of value a setting holds. A kind knows how to read a value from a flag or a TOML
//! value, what it accepts (checked on every value, whatever its origin), how to print it back as
//! TOML, and how to show it in help and in `docs/config.md`. A setting's declaration names its
//! kind once; everything else follows from it.

use std::fmt::Display;
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// A setting's value as given, before it is checked.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Raw<'a> {
    /// The text after a command-line flag.
    Flag(&'a str),
    /// A value in the TOML file.
    File(&'a toml::Value),
}

impl Raw<'_> {
    /// The value as the user wrote it, for error messages.
    pub(crate) fn text(&self) -> String {
        match self {
            Raw::Flag(text) => (*text).to_owned(),
            Raw::File(toml::Value::String(text)) => text.clone(),
            Raw::File(value) => value.to_string(),
        }
    }

    /// A whole number: a TOML integer, or text of digits.
    fn whole_number(&self) -> Option<u64> {
        match self {
            Raw::File(toml::Value::Integer(value)) => u64::try_from(*value).ok(),
            Raw::File(toml::Value::String(text)) => text.trim().parse().ok(),
            Raw::Flag(text) => text.trim().parse().ok(),
            Raw::File(_) => None,
        }
    }

    /// Text: a flag's value or a TOML string (not a number or a table).
    fn as_text(&self) -> Option<&str> {
        match self {
            Raw::Flag(text) => Some(text),
            Raw::File(toml::Value::String(text)) => Some(text),
            Raw::File(_) => None,
        }
    }
}

/// A kind of setting value.
pub(crate) trait Kind {
    /// The checked value the configuration holds.
    type Value;
    /// Appended to the setting's name to make its key and flag: the unit of a plain number.
    const UNIT_SUFFIX: &'static str = "";
    /// A switch: the flag may be given without a value, and has a `--no-` form.
    const SWITCH: bool = false;
    /// The placeholder for the value in `--help`.
    fn value_name(&self) -> &'static str;
    /// What is accepted, as the end of "expected ...".
    fn accepted(&self) -> String;
    /// The checked value, or `None` if `raw` is not accepted.
    fn parse(&self, raw: &Raw<'_>) -> Option<Self::Value>;
    /// The value as TOML, as `--print-config` prints it (and reads back the same).
    fn to_toml(&self, value: &Self::Value) -> toml::Value;
    /// The value as help and docs show it (a default, say), in a form the flag accepts.
    fn show(&self, value: &Self::Value) -> String;
}

/// The unit suffix of a kind, from a value of it (the declaration macro has an expression).
pub(crate) fn unit_suffix<K: Kind>(_: &K) -> &'static str {
    K::UNIT_SUFFIX
}

/// Whether a kind is a switch, from a value of it.
pub(crate) fn is_switch<K: Kind>(_: &K) -> bool {
    K::SWITCH
}

/// A socket address, `ip:port`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Address;

impl Kind for Address {
    type Value = SocketAddr;

    fn value_name(&self) -> &'static str {
        "ADDR"
    }

    fn accepted(&self) -> String {
        "an address like 127.0.0.1:7878 or [::1]:7878".to_owned()
    }

    fn parse(&self, raw: &Raw<'_>) -> Option<SocketAddr> {
        raw.as_text()?.trim().parse().ok()
    }

    fn to_toml(&self, value: &SocketAddr) -> toml::Value {
        toml::Value::String(value.to_string())
    }

    fn show(&self, value: &SocketAddr) -> String {
        value.to_string()
    }
}

/// A directory path (not empty).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Directory;

impl Kind for Directory {
    type Value = PathBuf;

    fn value_name(&self) -> &'static str {
        "DIR"
    }

    fn accepted(&self) -> String {
        "a directory path".to_owned()
    }

    fn parse(&self, raw: &Raw<'_>) -> Option<PathBuf> {
        raw.as_text().filter(|text| !text.is_empty()).map(PathBuf::from)
    }

    fn to_toml(&self, value: &PathBuf) -> toml::Value {
        toml::Value::String(value.display().to_string())
    }

    fn show(&self, value: &PathBuf) -> String {
        value.display().to_string()
    }
}

/// A file path, or empty for "none".
#[derive(Debug, Clone, Copy)]
pub(crate) struct FilePath;

impl Kind for FilePath {
    type Value = PathBuf;

    fn value_name(&self) -> &'static str {
        "FILE"
    }

    fn accepted(&self) -> String {
        "a file path (or empty)".to_owned()
    }

    fn parse(&self, raw: &Raw<'_>) -> Option<PathBuf> {
        raw.as_text().map(PathBuf::from)
    }

    fn to_toml(&self, value: &PathBuf) -> toml::Value {
        toml::Value::String(value.display().to_string())
    }

    fn show(&self, value: &PathBuf) -> String {
        value.display().to_string()
    }
}

/// A host name or IP address (letters, digits, `.`, `-`, `:`), or empty.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Host;

impl Kind for Host {
    type Value = String;

    fn value_name(&self) -> &'static str {
        "HOST"
    }

    fn accepted(&self) -> String {
        "a host name or IP address (or empty), at most 253 characters".to_owned()
    }

    fn parse(&self, raw: &Raw<'_>) -> Option<String> {
        let text = raw.as_text()?.trim();
        let valid = text.len() <= 253
            && text.bytes().all(|byte| byte.is_ascii_alphanumeric() || b".-:".contains(&byte));
        valid.then(|| text.to_owned())
    }

    fn to_toml(&self, value: &String) -> toml::Value {
        toml::Value::String(value.clone())
    }

    fn show(&self, value: &String) -> String {
        value.clone()
    }
}

/// A whole number in `min..=max`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Count<T> {
    min: u64,
    max: u64,
    value: PhantomData<T>,
}

impl<T: Into<u64>> Count<T> {
    /// Whole numbers from `min` to `max`.
    pub(crate) fn new(min: T, max: T) -> Self {
        let (min, max) = (min.into(), max.into());
        assert!(min <= max, "empty range {min}..={max}");
        Self { min, max, value: PhantomData }
    }
}

impl<T: Copy + Into<u64> + TryFrom<u64> + Display> Kind for Count<T> {
    type Value = T;

    fn value_name(&self) -> &'static str {
        "N"
    }

    fn accepted(&self) -> String {
        format!("a whole number from {} to {}", self.min, self.max)
    }

    fn parse(&self, raw: &Raw<'_>) -> Option<T> {
        let value = raw.whole_number().filter(|value| (self.min..=self.max).contains(value))?;
        T::try_from(value).ok()
    }

    fn to_toml(&self, value: &T) -> toml::Value {
        toml_integer((*value).into())
    }

    fn show(&self, value: &T) -> String {
        value.to_string()
    }
}

/// A size in bytes in `min..=max`: a plain number of bytes or a number with a unit (`64KiB`,
/// `1.5GiB`, `10MB`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Size<T> {
    min: u64,
    max: u64,
    value: PhantomData<T>,
}

impl<T: Into<u64>> Size<T> {
    /// Sizes from `min` to `max` bytes.
    pub(crate) fn new(min: T, max: T) -> Self {
        let (min, max) = (min.into(), max.into());
        assert!(min <= max, "empty range {min}..={max}");
        Self { min, max, value: PhantomData }
    }
}

impl<T: Copy + Into<u64> + TryFrom<u64>> Kind for Size<T> {
    type Value = T;

    fn value_name(&self) -> &'static str {
        "SIZE"
    }

    fn accepted(&self) -> String {
        format!(
            "a size like 64KiB, 512MiB or 1GiB, from {} to {}",
            bytesize::ByteSize::b(self.min).display().iec(),
            bytesize::ByteSize::b(self.max).display().iec()
        )
    }

    fn parse(&self, raw: &Raw<'_>) -> Option<T> {
        let bytes = match raw {
            Raw::File(toml::Value::Integer(value)) => u64::try_from(*value).ok(),
            other => other.as_text()?.trim().parse::<bytesize::ByteSize>().ok().map(|s| s.as_u64()),
        };
        T::try_from(bytes.filter(|bytes| (self.min..=self.max).contains(bytes))?).ok()
    }

    fn to_toml(&self, value: &T) -> toml::Value {
        toml_integer((*value).into())
    }

    fn show(&self, value: &T) -> String {
        show_size((*value).into())
    }
}

/// A size the way a person writes it: the largest binary unit that divides it (`256MiB`,
/// `1028KiB`), else bytes.
pub(crate) fn show_size(bytes: u64) -> String {
    const UNITS: [(u32, &str); 4] = [(40, "TiB"), (30, "GiB"), (20, "MiB"), (10, "KiB")];
    for (shift, unit) in UNITS {
        if bytes != 0 && bytes.trailing_zeros() >= shift {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// A duration in whole milliseconds in `min..=max`; the key and flag end in `_ms`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Millis {
    min: u64,
    max: u64,
}

impl Millis {
    /// Durations from `min` to `max` milliseconds.
    pub(crate) const fn new(min: u64, max: u64) -> Self {
        assert!(min <= max, "empty range");
        Self { min, max }
    }
}

impl Kind for Millis {
    type Value = Duration;
    const UNIT_SUFFIX: &'static str = "_ms";

    fn value_name(&self) -> &'static str {
        "MS"
    }

    fn accepted(&self) -> String {
        format!("a whole number of milliseconds from {} to {}", self.min, self.max)
    }

    fn parse(&self, raw: &Raw<'_>) -> Option<Duration> {
        raw.whole_number()
            .filter(|millis| (self.min..=self.max).contains(millis))
            .map(Duration::from_millis)
    }

    fn to_toml(&self, value: &Duration) -> toml::Value {
        toml_integer(millis_of(*value))
    }

    fn show(&self, value: &Duration) -> String {
        millis_of(*value).to_string()
    }
}

/// Whole milliseconds of a duration (saturating: no setting comes near).
pub(crate) fn millis_of(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// On or off: `true` or `false`; the flag alone means `true`, `--no-<flag>` means `false`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Switch;

impl Kind for Switch {
    type Value = bool;
    const SWITCH: bool = true;

    fn value_name(&self) -> &'static str {
        "BOOL"
    }

    fn accepted(&self) -> String {
        "true or false".to_owned()
    }

    fn parse(&self, raw: &Raw<'_>) -> Option<bool> {
        match raw {
            Raw::File(toml::Value::Boolean(value)) => Some(*value),
            other => match other.as_text()?.trim() {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            },
        }
    }

    fn to_toml(&self, value: &bool) -> toml::Value {
        toml::Value::Boolean(*value)
    }

    fn show(&self, value: &bool) -> String {
        value.to_string()
    }
}

/// One of a set of words, read by the type's `FromStr` and printed by its `Display`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Choice<T> {
    value_name: &'static str,
    accepted: &'static str,
    value: PhantomData<T>,
}

impl<T> Choice<T> {
    /// A choice shown as `value_name` in help, accepting what `accepted` describes.
    pub(crate) const fn new(value_name: &'static str, accepted: &'static str) -> Self {
        Self { value_name, accepted, value: PhantomData }
    }
}

impl<T: FromStr + Display> Kind for Choice<T> {
    type Value = T;

    fn value_name(&self) -> &'static str {
        self.value_name
    }

    fn accepted(&self) -> String {
        self.accepted.to_owned()
    }

    fn parse(&self, raw: &Raw<'_>) -> Option<T> {
        raw.as_text()?.trim().parse().ok()
    }

    fn to_toml(&self, value: &T) -> toml::Value {
        toml::Value::String(value.to_string())
    }

    fn show(&self, value: &T) -> String {
        value.to_string()
    }
}

fn toml_integer(value: u64) -> toml::Value {
    // Every setting's range ends far below i64::MAX (the largest is 1 TiB).
    toml::Value::Integer(i64::try_from(value).expect("setting ranges fit a TOML integer"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_reads_what_it_prints() {
        let size = Size::<u64>::new(4096, 1 << 40);
        for bytes in [4096, 1 << 20, (1 << 20) + (4 << 10), 1 << 40] {
            let shown = size.show(&bytes);
            assert_eq!(size.parse(&Raw::Flag(&shown)), Some(bytes), "{shown}");
            assert_eq!(size.parse(&Raw::File(&size.to_toml(&bytes))), Some(bytes));
        }
        let millis = Millis::new(0, 10);
        assert_eq!(millis.parse(&Raw::Flag("10")), Some(Duration::from_millis(10)));
        assert_eq!(millis.parse(&Raw::Flag("11")), None);
        assert_eq!(Switch.parse(&Raw::File(&toml::Value::Boolean(false))), Some(false));
        assert_eq!(Switch.parse(&Raw::Flag("yes")), None);
        let count = Count::<u32>::new(1, 4);
        assert_eq!(count.parse(&Raw::File(&toml::Value::Integer(-3))), None);
        assert_eq!(count.parse(&Raw::File(&toml::Value::Integer(4))), Some(4));
        assert_eq!(Directory.parse(&Raw::Flag("")), None);
        assert_eq!(Address.parse(&Raw::File(&toml::Value::Integer(7878))), None);
    }

    #[test]
    fn sizes_show_in_the_largest_exact_unit() {
        assert_eq!(show_size(256 << 20), "256MiB");
        assert_eq!(show_size((1 << 20) + (4 << 10)), "1028KiB");
        assert_eq!(show_size(1000), "1000");
        assert_eq!(show_size(0), "0");
        assert_eq!(show_size(1 << 40), "1TiB");
    }
}
