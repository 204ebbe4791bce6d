//! Topic and group names: the characters and lengths both ends accept.
//!
//! A topic name becomes a directory name on the broker, so it is restricted to a portable set:
//! 1 to [`TOPIC_NAME_SIZE_MAX`] bytes of `[A-Za-z0-9._-]`, not starting with `.` (the broker keeps
//! its own files there).

use crate::limits::{GROUP_NAME_SIZE_MAX, TOPIC_NAME_SIZE_MAX};

/// Checks a topic name; the error is a lower-case sentence saying what is wrong.
///
/// # Errors
///
/// Returns why the name is not allowed.
pub fn validate_topic_name(name: &str) -> Result<(), &'static str> {
    validate_name(name, TOPIC_NAME_SIZE_MAX)
}

/// Checks a consumer group name with the same rules as a topic name.
///
/// # Errors
///
/// Returns why the name is not allowed.
pub fn validate_group_name(name: &str) -> Result<(), &'static str> {
    validate_name(name, GROUP_NAME_SIZE_MAX)
}

fn validate_name(name: &str, max: usize) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("name is empty");
    }
    if name.len() > max {
        return Err("name is longer than 200 bytes");
    }
    if name.starts_with('.') {
        return Err("name may not start with '.'");
    }
    if !name.bytes().all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-'))
    {
        return Err("name may only contain A-Z, a-z, 0-9, '.', '_' and '-'");
    }
    Ok(())
}

const _: () = assert!(TOPIC_NAME_SIZE_MAX == 200 && GROUP_NAME_SIZE_MAX == 200);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_portable_names_and_rejects_the_rest() {
        for good in ["orders", "a", "Orders.v2_eu-west", &"x".repeat(200)] {
            assert_eq!(validate_topic_name(good), Ok(()), "{good}");
        }
        for bad in ["", ".", "..", ".lock", "a/b", "a b", "ümlaut", &"x".repeat(201), "a\0b"] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
    }
}
