use std::cmp::Ordering;
use std::fmt;

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// The type of a context property value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    String,
    Int,
    Float,
    Bool,
    Timestamp,
    Bytes,
}

impl ValueType {
    pub fn as_str(self) -> &'static str {
        match self {
            ValueType::String => "string",
            ValueType::Int => "int",
            ValueType::Float => "float",
            ValueType::Bool => "bool",
            ValueType::Timestamp => "timestamp",
            ValueType::Bytes => "bytes",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "string" => ValueType::String,
            "int" => ValueType::Int,
            "float" => ValueType::Float,
            "bool" => ValueType::Bool,
            "timestamp" => ValueType::Timestamp,
            "bytes" => ValueType::Bytes,
            _ => return None,
        })
    }
}

impl fmt::Display for ValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A context property value. Timestamps are kept in UTC.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    String(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Timestamp(OffsetDateTime),
    Bytes(Vec<u8>),
}

impl Value {
    pub fn value_type(&self) -> ValueType {
        match self {
            Value::String(_) => ValueType::String,
            Value::Int(_) => ValueType::Int,
            Value::Float(_) => ValueType::Float,
            Value::Bool(_) => ValueType::Bool,
            Value::Timestamp(_) => ValueType::Timestamp,
            Value::Bytes(_) => ValueType::Bytes,
        }
    }

    /// A timestamp value, normalised to UTC.
    pub fn timestamp(t: OffsetDateTime) -> Self {
        Value::Timestamp(t.to_offset(time::UtcOffset::UTC))
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The value as text, the way a filter literal or an operator would write it.
    /// Strings are returned as they are (no quotes).
    pub fn to_text(&self) -> String {
        match self {
            Value::String(s) => s.clone(),
            Value::Int(i) => i.to_string(),
            Value::Float(x) => format_float(*x),
            Value::Bool(b) => b.to_string(),
            Value::Timestamp(t) => format_timestamp(*t),
            Value::Bytes(b) => to_hex(b),
        }
    }

    /// Parse text as a value of the given type (the inverse of [`Value::to_text`]).
    pub fn from_text(ty: ValueType, text: &str) -> Result<Value, String> {
        Ok(match ty {
            ValueType::String => Value::String(text.to_string()),
            ValueType::Int => Value::Int(text.trim().parse().map_err(|_| format!("`{text}` is not an int"))?),
            ValueType::Float => Value::Float(parse_float(text).ok_or_else(|| format!("`{text}` is not a float"))?),
            ValueType::Bool => match text.trim() {
                "true" => Value::Bool(true),
                "false" => Value::Bool(false),
                _ => return Err(format!("`{text}` is not a bool (true or false)")),
            },
            ValueType::Timestamp => {
                Value::Timestamp(parse_timestamp(text).ok_or_else(|| format!("`{text}` is not an RFC 3339 timestamp"))?)
            }
            ValueType::Bytes => Value::Bytes(from_hex(text).ok_or_else(|| format!("`{text}` is not hex bytes"))?),
        })
    }

    /// Compare two values of compatible types: numbers with numbers, strings
    /// with strings, timestamps with timestamps (or a string holding an RFC 3339
    /// timestamp), bools and bytes with their own kind. `None` when the values
    /// cannot be compared.
    pub fn compare(&self, other: &Value) -> Option<Ordering> {
        use Value::*;
        match (self, other) {
            (String(a), String(b)) => Some(a.cmp(b)),
            (Int(a), Int(b)) => Some(a.cmp(b)),
            (Int(a), Float(b)) => (*a as f64).partial_cmp(b),
            (Float(a), Int(b)) => a.partial_cmp(&(*b as f64)),
            (Float(a), Float(b)) => a.partial_cmp(b),
            (Bool(a), Bool(b)) => Some(a.cmp(b)),
            (Timestamp(a), Timestamp(b)) => Some(a.cmp(b)),
            (Timestamp(a), String(b)) => parse_timestamp(b).map(|b| a.cmp(&b)),
            (String(a), Timestamp(b)) => parse_timestamp(a).map(|a| a.cmp(b)),
            (Bytes(a), Bytes(b)) => Some(a.cmp(b)),
            _ => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::String(s) => write!(f, "{s:?}"),
            other => f.write_str(&other.to_text()),
        }
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::String(s.to_string())
    }
}
impl From<String> for Value {
    fn from(s: String) -> Self {
        Value::String(s)
    }
}
impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}
impl From<u64> for Value {
    fn from(i: u64) -> Self {
        Value::Int(i64::try_from(i).unwrap_or(i64::MAX))
    }
}
impl From<f64> for Value {
    fn from(x: f64) -> Self {
        Value::Float(x)
    }
}
impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Bool(b)
    }
}
impl From<OffsetDateTime> for Value {
    fn from(t: OffsetDateTime) -> Self {
        Value::timestamp(t)
    }
}
impl From<Vec<u8>> for Value {
    fn from(b: Vec<u8>) -> Self {
        Value::Bytes(b)
    }
}

pub(crate) fn format_float(x: f64) -> String {
    if x.is_nan() {
        "NaN".into()
    } else if x == f64::INFINITY {
        "inf".into()
    } else if x == f64::NEG_INFINITY {
        "-inf".into()
    } else {
        // `{:?}` prints the shortest text that parses back to the same bits
        // and always keeps a `.` or exponent, so it reads back as a float.
        format!("{x:?}")
    }
}

pub(crate) fn parse_float(s: &str) -> Option<f64> {
    match s.trim() {
        "NaN" => Some(f64::NAN),
        "inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        t => t.parse().ok(),
    }
}

pub(crate) fn format_timestamp(t: OffsetDateTime) -> String {
    // Rfc3339 formatting fails only for years outside 0..=9999.
    t.format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp_nanos().to_string())
}

pub(crate) fn parse_timestamp(s: &str) -> Option<OffsetDateTime> {
    if let Ok(t) = OffsetDateTime::parse(s.trim(), &Rfc3339) {
        return Some(t.to_offset(time::UtcOffset::UTC));
    }
    // Out-of-range years are stored as nanoseconds since the epoch.
    let nanos: i128 = s.trim().parse().ok()?;
    OffsetDateTime::from_unix_timestamp_nanos(nanos).ok()
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

pub(crate) fn from_hex(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().as_bytes();
    if !s.len().is_multiple_of(2) {
        return None;
    }
    let nibble = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    s.chunks(2)
        .map(|pair| Some(nibble(pair[0])? << 4 | nibble(pair[1])?))
        .collect()
}
