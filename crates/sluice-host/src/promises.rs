//! What a send port's filter guarantees about the messages it takes,
//! against what its macros need. A port whose `file_name` or `url` uses a
//! property that a message it takes may lack can only fail on that message
//! (suspended, not resumable): a warning at load, with the fix
//! ([`Config::warnings`]).
//!
//! A filter guarantees a property when every message it matches has it
//! promoted ([`Filter::requires`]: `order.id exists`, or any comparison on
//! it, in a conjunction or on both sides of an `or`), or when it confines
//! the port to receive locations that always set it: `receive.location ==
//! "L"`, `receive.port == "P"` (every location of P) or, for fault
//! messages, `fault.location == "L"` (the failed message came in by L). A
//! location always sets every location's own properties, those its adapter
//! promises (`ReceiveAdapter::always_promotes`: a file's name...) and those
//! its pipeline's `validate` rule requires of each record.

use std::fmt;

use sluice_adapters::{BASE_PROMOTES, Need};
use sluice_model::{CompareOp, Filter, Key, Predicate, Value};

use crate::config::{Config, ReceiveLocationConfig};

/// Something in a configuration that loads and runs, but will fail on some
/// messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigWarning {
    /// The key it is about: `send_ports.out.adapter.file_name`.
    pub key: String,
    /// What will fail, and how to fix it.
    pub message: String,
}

impl fmt::Display for ConfigWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl Config {
    /// Warnings about a configuration that loaded: each macro of a send
    /// port (or its backup) that needs a property the port's filter does
    /// not guarantee (see the module doc).
    pub fn warnings(&self) -> Vec<ConfigWarning> {
        let mut out = Vec::new();
        for (name, sp) in &self.send_ports {
            let Some(filter) = &sp.parsed_filter else { continue };
            let adapters = std::iter::once(("adapter", &sp.adapter))
                .chain(sp.backup.iter().map(|b| ("backup.adapter", &b.adapter)));
            for (at, adapter) in adapters {
                for need in adapter.needs() {
                    if !self.guarantees(filter, &need.property) {
                        out.push(ConfigWarning {
                            key: format!("send_ports.{name}.{at}.{}", need.key),
                            message: self.unguaranteed(&sp.filter, filter, &need),
                        });
                    }
                }
            }
        }
        out
    }

    /// Log each of [`warnings`](Self::warnings), once (at start and at
    /// each reload).
    pub fn log_warnings(&self) {
        for w in self.warnings() {
            tracing::warn!(key = %w.key, warning = %w.message, "the configuration loads, but will fail on some messages");
        }
    }

    fn guarantees(&self, filter: &Filter, property: &Key) -> bool {
        filter.requires(property)
            || filter.ensures(&|p| match p {
                Predicate::Compare(k, CompareOp::Eq, Value::String(v)) => {
                    match (k.namespace.as_str(), k.name.as_str()) {
                        ("receive", "location") | ("fault", "location") => self.location_sets(v, property),
                        ("receive", "port") => self.receive_ports.get(v).is_some_and(|p| {
                            !p.locations.is_empty() && p.locations.values().all(|lc| sets(lc, property))
                        }),
                        _ => false,
                    }
                }
                _ => false,
            })
    }

    fn location_sets(&self, location: &str, property: &Key) -> bool {
        self.receive_ports
            .values()
            .find_map(|p| p.locations.get(location))
            .is_some_and(|lc| sets(lc, property))
    }

    /// The warning's text: what fails, and the fix.
    fn unguaranteed(&self, text: &str, filter: &Filter, need: &Need) -> String {
        let (m, p) = (&need.macro_text, &need.property);
        let fails = format!(
            "`{m}` needs property {p}, which the filter `{text}` does not guarantee: a message without it will be \
             suspended, not resumable (resubmit it with {p} set)"
        );
        let only_faults = filter.ensures(&|pred| pred.key().namespace == sluice_msgbox::FAULT_NS);
        if !only_faults || p.namespace == sluice_msgbox::FAULT_NS {
            return format!("{fails}; add `and {p} exists` to the filter");
        }
        // A fault's copy of the failed message's properties is demoted:
        // no filter can test it, but its location can vouch for it.
        let from = self
            .receive_ports
            .values()
            .flat_map(|port| port.locations.keys())
            .find(|l| self.location_sets(l, p));
        match from {
            Some(l) => format!(
                "{fails}; a fault message keeps the failed message's properties demoted, where a filter cannot \
                 test them: confine the filter to faults of a receive location that always sets it, e.g. \
                 `and fault.location == \"{l}\"`"
            ),
            None => format!(
                "{fails}; a fault message keeps the failed message's properties demoted, where a filter cannot \
                 test them, and no receive location always sets it: do without `{m}`"
            ),
        }
    }
}

/// Whether every message of location `lc` has `property`.
fn sets(lc: &ReceiveLocationConfig, property: &Key) -> bool {
    let is = |(ns, name): &(&str, &str)| property.namespace == *ns && property.name == *name;
    BASE_PROMOTES.iter().any(is)
        || lc.adapter.always_promotes().contains(property)
        || lc
            .pipeline
            .validate
            .as_ref()
            .and_then(|v| Filter::parse(&v.rule).ok())
            .is_some_and(|rule| rule.requires(property))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    const LOCATIONS: &str = r#"data_dir = "data"

[receive_ports.in.locations.in-folder]
adapter = { type = "file", path = "in" }

[receive_ports.web.locations.web-in]
adapter = { type = "http", address = "127.0.0.1:0" }

[receive_ports.orders.locations.orders-in]
adapter = { type = "file", path = "orders" }
[receive_ports.orders.locations.orders-in.pipeline.disassemble]
type = "xml"
record = "/Orders/Order"
promote = { "order.id" = "Order/@id" }
[receive_ports.orders.locations.orders-in.pipeline.validate]
rule = "order.id exists"
"#;

    /// The warnings' keys for one send port with this filter and file name.
    fn warned(filter: &str, file_name: &str) -> Vec<String> {
        let text = format!(
            "{LOCATIONS}\n[send_ports.out]\nfilter = '{filter}'\nadapter = {{ type = \"file\", path = \"out\", \
             file_name = \"{file_name}\" }}\n"
        );
        let config = Config::from_toml(&text, Path::new("sluice.toml"), Path::new("/tmp")).unwrap();
        config.warnings().into_iter().map(|w| w.key).collect()
    }

    #[test]
    fn a_macro_needs_a_property_the_filter_guarantees() {
        let order_id = "%property:order.id%.xml";
        for (filter, name) in [
            ("order.id exists", order_id),
            (r#"order.id == "A1""#, order_id),
            (r#"receive.port == "in" and order.id starts-with "A""#, order_id),
            (r#"(order.id exists and x == 1) or order.id > 5"#, order_id),
            // Vouched for by the locations: a file's name, a validate rule.
            (r#"receive.port == "in""#, "%SourceFileName%"),
            (
                r#"receive.location == "in-folder" or receive.port == "orders""#,
                "%SourceFileStem%",
            ),
            (r#"receive.port == "orders""#, order_id),
            (
                r#"fault.message_id exists and fault.location == "in-folder""#,
                "%SourceFileName%",
            ),
            // No property needed.
            ("all", "%MessageId%-%datetime%"),
        ] {
            assert_eq!(warned(filter, name), Vec::<String>::new(), "{filter} / {name}");
        }
        for (filter, name) in [
            (r#"receive.port == "in""#, order_id),
            ("all", order_id),
            ("order.id exists or x == 1", order_id),
            ("not order.id exists", order_id),
            (r#"receive.port == "web""#, "%SourceFileName%"),
            (r#"receive.port == "in" or receive.port == "web""#, "%SourceFileName%"),
            (r#"receive.location == "nosuch""#, "%SourceFileName%"),
            ("fault.message_id exists", "%SourceFileName%"),
        ] {
            assert_eq!(
                warned(filter, name),
                ["send_ports.out.adapter.file_name"],
                "{filter} / {name}"
            );
        }
    }

    #[test]
    fn the_warning_names_the_macro_and_the_fix() {
        let text = format!(
            "{LOCATIONS}
[send_ports.by-order]
filter = 'receive.port == \"in\"'
adapter = {{ type = \"http\", url = \"http://127.0.0.1:1/orders/%property:order.id%\" }}

[send_ports.faults]
filter = 'fault.message_id exists'
adapter = {{ type = \"file\", path = \"faults\", file_name = \"%MessageId%-%SourceFileName%\" }}
"
        );
        let config = Config::from_toml(&text, Path::new("sluice.toml"), Path::new("/tmp")).unwrap();
        let w = config.warnings();
        assert_eq!(w.len(), 2, "{w:?}");
        assert_eq!(w[0].key, "send_ports.by-order.adapter.url");
        assert!(
            w[0].message
                .starts_with("`%property:order.id%` needs property order.id")
                && w[0].message.contains("not resumable")
                && w[0].message.ends_with("add `and order.id exists` to the filter"),
            "{}",
            w[0].message
        );
        assert_eq!(w[1].key, "send_ports.faults.adapter.file_name");
        assert!(
            w[1].message.ends_with("`and fault.location == \"in-folder\"`"),
            "{}",
            w[1].message
        );
    }
}
