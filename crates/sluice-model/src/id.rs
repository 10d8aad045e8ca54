use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use ulid::{Generator, Ulid};

/// A message id: a ULID, so ids sort by creation time and are unique across
/// nodes without coordination. Ids made in one process are strictly
/// increasing, even within one millisecond.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId(Ulid);

static GENERATOR: Mutex<Option<Generator>> = Mutex::new(None);

impl MessageId {
    /// A new, time-ordered id.
    pub fn new() -> Self {
        let mut guard = GENERATOR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let generator = guard.get_or_insert_with(Generator::new);
        // The monotonic generator fails only when 2^80 ids are made in one
        // millisecond; fall back to a fresh random id in that case.
        MessageId(generator.generate().unwrap_or_else(|_| Ulid::new()))
    }

    /// The id as 16 big-endian bytes (sorts like the id).
    pub fn to_bytes(self) -> [u8; 16] {
        self.0.to_bytes()
    }

    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        MessageId(Ulid::from_bytes(bytes))
    }

    /// Milliseconds since the Unix epoch at which the id was made.
    pub fn timestamp_ms(self) -> u64 {
        self.0.timestamp_ms()
    }
}

impl Default for MessageId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl fmt::Debug for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MessageId({})", self.0)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("`{input}` is not a message id (expected a 26-character ULID such as 01J9Z3XK5V8Q2M4N6P7R8S9T0A)")]
pub struct MessageIdError {
    pub input: String,
}

impl FromStr for MessageId {
    type Err = MessageIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ulid::from_string(s.trim())
            .map(MessageId)
            .map_err(|_| MessageIdError { input: s.to_string() })
    }
}

impl Serialize for MessageId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MessageId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_increase_and_round_trip() {
        let mut last = MessageId::new();
        for _ in 0..10_000 {
            let id = MessageId::new();
            assert!(id > last, "{id} should sort after {last}");
            assert_eq!(id.to_string().parse::<MessageId>().unwrap(), id);
            assert_eq!(MessageId::from_bytes(id.to_bytes()), id);
            last = id;
        }
    }

    #[test]
    fn bad_id_is_a_clear_error() {
        let err = "nope".parse::<MessageId>().unwrap_err();
        assert!(err.to_string().contains("`nope` is not a message id"));
    }
}
