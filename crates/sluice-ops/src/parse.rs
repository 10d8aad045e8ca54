//! What operators write, parsed the same way by every front end: typed
//! properties (`KEY=TYPE:VALUE`), property keys, points in time, message
//! ids, context filters. Every error is [`OpsError::InvalidArgument`] (or
//! [`OpsError::InvalidFilter`]) and says what is wrong.

use base64::Engine as _;
use sluice_model::{Filter, Key, MessageId, Value, ValueType};
use sluice_msgbox::Millis;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::OpsError;

/// A point in time as an operator writes it: RFC 3339
/// (`2026-11-22T10:00:00Z`), or a duration ago (`90m`, `2h`, `7d`), counted
/// back from `now`.
pub fn parse_time(text: &str, now: Millis) -> Result<Millis, OpsError> {
    time_text(text, now).map_err(OpsError::InvalidArgument)
}

/// A property key: `namespace.name` or `name`.
pub fn parse_key(text: &str) -> Result<Key, OpsError> {
    key_text(text).map_err(OpsError::InvalidArgument)
}

/// A typed property, `KEY=TYPE:VALUE`: `order.id=string:A1`, `n=int:-5`,
/// `x=float:1.5`, `ok=bool:true`, `t=timestamp:2026-11-22T10:00:00Z`,
/// `b=bytes:hex:00ff` or `b=bytes:base64:AP8=`.
pub fn parse_property(arg: &str) -> Result<(Key, Value), OpsError> {
    property_text(arg).map_err(OpsError::InvalidArgument)
}

/// A message id (a ULID, as `sluice messages list` shows it).
pub fn parse_message_id(text: &str) -> Result<MessageId, OpsError> {
    text.parse()
        .map_err(|e: sluice_model::MessageIdError| OpsError::InvalidArgument(e.to_string()))
}

/// A filter on a message's context, as subscriptions write it.
pub fn parse_filter(text: &str) -> Result<Filter, OpsError> {
    Filter::parse(text).map_err(|e| OpsError::InvalidFilter(e.to_string()))
}

/// [`parse_time`], saying what is wrong in words.
fn time_text(text: &str, now: Millis) -> Result<Millis, String> {
    if let Ok(t) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok((t.unix_timestamp_nanos() / 1_000_000) as Millis);
    }
    match humantime::parse_duration(text.trim()) {
        Ok(d) => {
            let ms = i64::try_from(d.as_millis()).map_err(|_| format!("`{text}` is too long ago"))?;
            Ok(now.saturating_sub(ms))
        }
        Err(_) => Err(format!(
            "`{text}` is neither an RFC 3339 time (2026-11-22T10:00:00Z) nor a duration ago (90m, 2h, 7d)"
        )),
    }
}

/// What a typed property is written as, for error messages.
pub const PROPERTY_SYNTAX: &str = "KEY=TYPE:VALUE, TYPE one of string, int, float, bool, timestamp, bytes";

/// [`parse_key`], saying what is wrong in words.
fn key_text(text: &str) -> Result<Key, String> {
    Key::parse(text).ok_or_else(|| {
        format!("`{text}` is not a property key (`namespace.name` or `name`; a name starts with a letter or `_`)")
    })
}

/// [`parse_property`], saying what is wrong in words.
fn property_text(arg: &str) -> Result<(Key, Value), String> {
    let (key, typed) = arg
        .split_once('=')
        .ok_or_else(|| format!("no `=` (expected {PROPERTY_SYNTAX})"))?;
    let key = key_text(key)?;
    let (ty, text) = typed
        .split_once(':')
        .ok_or_else(|| format!("no `TYPE:` before the value (expected {PROPERTY_SYNTAX})"))?;
    let ty = ValueType::parse(ty).ok_or_else(|| format!("unknown type `{ty}` (expected {PROPERTY_SYNTAX})"))?;
    let value = match ty {
        // Strictly RFC 3339 (`Value::from_text` also takes stored nanoseconds).
        ValueType::Timestamp => OffsetDateTime::parse(text, &Rfc3339)
            .map(Value::timestamp)
            .map_err(|e| format!("`{text}` is not an RFC 3339 timestamp ({e})"))?,
        ValueType::Bytes => parse_bytes(text)?,
        other => Value::from_text(other, text)?,
    };
    Ok((key, value))
}

/// `hex:00ff` or `base64:AP8=`.
fn parse_bytes(text: &str) -> Result<Value, String> {
    match text.split_once(':') {
        Some(("hex", hex)) => Value::from_text(ValueType::Bytes, hex),
        Some(("base64", b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map(Value::Bytes)
            .map_err(|e| format!("`{b64}` is not base64 ({e})")),
        _ => Err(format!("`{text}`: write bytes as `hex:00ff` or `base64:AP8=`")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_or_a_duration_ago() {
        let now = 10 * 86_400_000;
        let t = |text| parse_time(text, now).unwrap();
        assert_eq!(t("90m"), now - 90 * 60_000);
        assert_eq!(t("2h"), now - 2 * 3_600_000);
        assert_eq!(t("7d"), now - 7 * 86_400_000);
        assert_eq!(t("1970-01-02T00:00:00.5Z"), 86_400_500);
        assert_eq!(t("1970-01-02T01:00:00+01:00"), 86_400_000);
        let e = parse_time("yesterday", now).unwrap_err().to_string();
        assert!(e.contains("neither an RFC 3339 time"), "{e}");
    }

    fn prop(arg: &str) -> (String, Value) {
        let (k, v) = parse_property(arg).unwrap();
        (k.to_string(), v)
    }

    #[test]
    fn every_type_parses() {
        assert_eq!(
            prop("order.id=string:A1"),
            ("order.id".into(), Value::String("A1".into()))
        );
        assert_eq!(prop("n=int:-5"), ("n".into(), Value::Int(-5)));
        assert_eq!(prop("a.b.c=float:1.5"), ("a.b.c".into(), Value::Float(1.5)));
        assert_eq!(prop("x.ok=bool:true"), ("x.ok".into(), Value::Bool(true)));
        assert_eq!(prop("s=string:a=b:c"), ("s".into(), Value::String("a=b:c".into())));
        assert_eq!(prop("b=bytes:hex:00ff"), ("b".into(), Value::Bytes(vec![0, 255])));
        assert_eq!(prop("b=bytes:base64:AP8="), ("b".into(), Value::Bytes(vec![0, 255])));
        let (_, t) = prop("t=timestamp:2026-11-22T11:00:00.123456+01:00");
        assert_eq!(t.to_text(), "2026-11-22T10:00:00.123456Z");
    }

    #[test]
    fn bad_props_say_what_is_wrong() {
        for (arg, says) in [
            ("n", "no `=`"),
            ("n=5", "no `TYPE:`"),
            ("n=integer:5", "unknown type `integer`"),
            ("n=int:five", "not an int"),
            ("n=bool:yes", "not a bool"),
            ("t=timestamp:123", "not an RFC 3339 timestamp"),
            ("b=bytes:00ff", "hex:00ff"),
            ("b=bytes:hex:0", "not hex"),
            ("b=bytes:base64:!!", "not base64"),
            (".n=int:1", "not a property key"),
            ("a.=int:1", "not a property key"),
            ("a.1=int:1", "not a property key"),
        ] {
            let e = parse_property(arg).unwrap_err();
            assert_eq!(e.code(), "invalid_argument");
            assert!(e.to_string().contains(says), "{arg}: {e}");
        }
    }

    #[test]
    fn ids_and_filters_say_what_is_wrong() {
        let e = parse_message_id("nope").unwrap_err();
        assert_eq!(e.code(), "invalid_argument");
        assert!(e.to_string().contains("`nope` is not a message id"), "{e}");
        let e = parse_filter("order.id ==").unwrap_err();
        assert_eq!((e.code(), e.http_status()), ("invalid_filter", 400));
    }
}
