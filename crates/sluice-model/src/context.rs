use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use crate::value::{Value, ValueType};

/// One context property: (namespace, name, type, value, promoted).
/// Only promoted properties are seen by subscription filters.
#[derive(Debug, Clone, PartialEq)]
pub struct Property {
    pub namespace: String,
    pub name: String,
    pub value: Value,
    pub promoted: bool,
}

impl Property {
    /// `namespace.name` (or the bare name in the empty namespace), the way
    /// filters and the CLI write a property.
    pub fn key(&self) -> String {
        if self.namespace.is_empty() {
            self.name.clone()
        } else {
            format!("{}.{}", self.namespace, self.name)
        }
    }
}

/// The context of a message: its properties, in the order they were first set.
/// A (namespace, name) pair appears at most once.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Context {
    props: Vec<Property>,
}

#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("context is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("context property {namespace}.{name}: unknown type `{ty}`")]
    UnknownType {
        namespace: String,
        name: String,
        ty: String,
    },
    #[error("context property {namespace}.{name}: {reason}")]
    BadValue {
        namespace: String,
        name: String,
        reason: String,
    },
}

/// The stored form of a property. Every value is kept as text in a form that
/// parses back to exactly the same value (see [`Value::to_text`]).
/// Borrowed from the context or the JSON where it can be (a string with
/// no escapes), to save the copies.
#[derive(Serialize, Deserialize)]
struct StoredProperty<'a> {
    #[serde(borrow)]
    ns: Cow<'a, str>,
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(rename = "type", borrow)]
    ty: Cow<'a, str>,
    #[serde(borrow)]
    value: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    promoted: bool,
}

impl Context {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.props.len()
    }

    pub fn is_empty(&self) -> bool {
        self.props.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Property> {
        self.props.iter()
    }

    pub fn get(&self, namespace: &str, name: &str) -> Option<&Property> {
        self.props.iter().find(|p| p.namespace == namespace && p.name == name)
    }

    /// The value of a promoted property (what filters see).
    pub fn promoted(&self, namespace: &str, name: &str) -> Option<&Value> {
        self.get(namespace, name).filter(|p| p.promoted).map(|p| &p.value)
    }

    /// Set a property, keeping its position if it already exists.
    pub fn set(&mut self, namespace: &str, name: &str, value: impl Into<Value>, promoted: bool) {
        self.put(Cow::Borrowed(namespace), Cow::Borrowed(name), value.into(), promoted);
    }

    /// [`set`](Self::set), the names owned when they are to be kept.
    fn put(&mut self, namespace: Cow<'_, str>, name: Cow<'_, str>, value: Value, promoted: bool) {
        match self
            .props
            .iter_mut()
            .find(|p| p.namespace == namespace && p.name == name)
        {
            Some(p) => {
                p.value = value;
                p.promoted = promoted;
            }
            None => self.props.push(Property {
                namespace: namespace.into_owned(),
                name: name.into_owned(),
                value,
                promoted,
            }),
        }
    }

    /// Set and promote a property (routable).
    pub fn promote(&mut self, namespace: &str, name: &str, value: impl Into<Value>) {
        self.set(namespace, name, value, true);
    }

    /// Set a property without promoting it (carried, not routable).
    pub fn write(&mut self, namespace: &str, name: &str, value: impl Into<Value>) {
        self.set(namespace, name, value, false);
    }

    pub fn remove(&mut self, namespace: &str, name: &str) -> Option<Property> {
        let at = self
            .props
            .iter()
            .position(|p| p.namespace == namespace && p.name == name)?;
        Some(self.props.remove(at))
    }

    /// The stored form: a JSON array of `{ns, name, type, value, promoted}`.
    pub fn to_json(&self) -> String {
        let stored: Vec<StoredProperty> = self
            .props
            .iter()
            .map(|p| StoredProperty {
                ns: Cow::Borrowed(&p.namespace),
                name: Cow::Borrowed(&p.name),
                ty: Cow::Borrowed(p.value.value_type().as_str()),
                value: Cow::Owned(p.value.to_text()),
                promoted: p.promoted,
            })
            .collect();
        // Serialising plain strings and bools cannot fail.
        serde_json::to_string(&stored).unwrap_or_else(|_| "[]".to_string())
    }

    pub fn from_json(json: &str) -> Result<Self, ContextError> {
        let stored: Vec<StoredProperty<'_>> = serde_json::from_str(json)?;
        let mut ctx = Context {
            props: Vec::with_capacity(stored.len()),
        };
        for p in stored {
            let ty = ValueType::parse(&p.ty).ok_or_else(|| ContextError::UnknownType {
                namespace: p.ns.to_string(),
                name: p.name.to_string(),
                ty: p.ty.to_string(),
            })?;
            let value = Value::from_text(ty, &p.value).map_err(|reason| ContextError::BadValue {
                namespace: p.ns.to_string(),
                name: p.name.to_string(),
                reason,
            })?;
            ctx.put(p.ns, p.name, value, p.promoted);
        }
        Ok(ctx)
    }

    /// The context as a JSON value for people and APIs:
    /// `[{"namespace", "name", "type", "value", "promoted"}]`, values typed where JSON can.
    pub fn to_display_json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.props
                .iter()
                .map(|p| {
                    let value = match &p.value {
                        Value::String(s) => serde_json::Value::String(s.clone()),
                        Value::Int(i) => serde_json::Value::from(*i),
                        Value::Bool(b) => serde_json::Value::Bool(*b),
                        Value::Float(x) if x.is_finite() => serde_json::Value::from(*x),
                        other => serde_json::Value::String(other.to_text()),
                    };
                    serde_json::json!({
                        "namespace": p.namespace,
                        "name": p.name,
                        "type": p.value.value_type().as_str(),
                        "value": value,
                        "promoted": p.promoted,
                    })
                })
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use time::OffsetDateTime;

    fn value() -> impl Strategy<Value = Value> {
        prop_oneof![
            any::<String>().prop_map(Value::String),
            any::<i64>().prop_map(Value::Int),
            any::<f64>().prop_map(Value::Float),
            any::<bool>().prop_map(Value::Bool),
            (-62_135_596_800i64..253_402_300_799i64, 0u32..1_000_000_000).prop_map(|(s, n)| {
                Value::Timestamp(
                    OffsetDateTime::from_unix_timestamp(s)
                        .unwrap()
                        .replace_nanosecond(n)
                        .unwrap(),
                )
            }),
            proptest::collection::vec(any::<u8>(), 0..64).prop_map(Value::Bytes),
        ]
    }

    fn same(a: &Value, b: &Value) -> bool {
        match (a, b) {
            // NaN != NaN, and 0.0 == -0.0: compare floats by their bits.
            (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits() || (x.is_nan() && y.is_nan()),
            _ => a == b,
        }
    }

    proptest! {
        #[test]
        fn context_round_trips_exactly(props in proptest::collection::vec(("[a-z.\"\\\\\né]{1,12}", "[A-Za-z_\"\\\\\t]{1,12}", value(), any::<bool>()), 0..12)) {
            let mut ctx = Context::new();
            for (ns, name, v, promoted) in props {
                ctx.set(&ns, &name, v, promoted);
            }
            let back = Context::from_json(&ctx.to_json()).unwrap();
            prop_assert_eq!(back.len(), ctx.len());
            for (a, b) in ctx.iter().zip(back.iter()) {
                prop_assert_eq!(&a.namespace, &b.namespace);
                prop_assert_eq!(&a.name, &b.name);
                prop_assert_eq!(a.promoted, b.promoted);
                prop_assert!(same(&a.value, &b.value), "{:?} became {:?}", a.value, b.value);
            }
        }
    }

    #[test]
    fn set_replaces_in_place() {
        let mut ctx = Context::new();
        ctx.promote("file", "name", "a.xml");
        ctx.write("file", "size", 3i64);
        ctx.write("file", "name", "b.xml");
        assert_eq!(ctx.len(), 2);
        assert_eq!(ctx.get("file", "name").unwrap().value, Value::from("b.xml"));
        assert_eq!(
            ctx.promoted("file", "name"),
            None,
            "rewriting unpromoted hides it from routing"
        );
    }

    #[test]
    fn unknown_type_is_named() {
        let err = Context::from_json(r#"[{"ns":"a","name":"b","type":"decimal","value":"1"}]"#).unwrap_err();
        assert_eq!(err.to_string(), "context property a.b: unknown type `decimal`");
    }
}
