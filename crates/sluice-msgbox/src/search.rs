//! Finding messages and tracking events: the queries of
//! [`MessageBox::list_messages`](crate::MessageBox::list_messages) and
//! [`MessageBox::tracking`](crate::MessageBox::tracking), and the pages they
//! answer.
//!
//! A search reads at most [`SCAN_BUDGET`] candidates per call, whatever its
//! conditions: conditions few rows meet (a context filter the box has no
//! index for, a port nothing waits for) answer a short or empty page with a
//! cursor to go on from, never a request that reads the whole box. A client
//! pages with `after = next` until `next` is `None`.

use sluice_model::{Filter, Key, MessageId};

use crate::Millis;

/// Candidates (messages, index rows or events) one search call reads at
/// most: a window of the box after the cursor, every condition applied
/// inside it (a page may then be short, even empty, with `next` set).
pub const SCAN_BUDGET: usize = 20_000;

/// Which messages in the box to list. Every condition set must hold.
#[derive(Debug, Clone, Default)]
pub struct MessageQuery {
    /// A filter on the context, as subscriptions write it; unlike a
    /// subscription it sees every property, promoted or not. A top-level
    /// `key == "text"` on a key the box indexes is answered from the index
    /// (see [`indexed_equality`]).
    pub context: Option<Filter>,
    /// Published at or after (ms).
    pub since: Option<Millis>,
    /// Published before (ms).
    pub until: Option<Millis>,
    /// Queued for, leased by or suspended at this send port.
    pub port: Option<String>,
}

/// A page of a search, in id order.
#[derive(Debug, Clone, Default)]
pub struct Page<T, C> {
    pub items: Vec<T>,
    /// Where to go on from (`after`): `None` when the search reached the
    /// end. Set when the page is full, or when the search ran out of
    /// [`SCAN_BUDGET`] (the page may then be short, even empty).
    pub next: Option<C>,
}

/// Which tracking events to list. Every condition set must hold.
#[derive(Debug, Clone, Default)]
pub struct TrackingQuery {
    /// Only this message's events.
    pub message: Option<MessageId>,
    /// One kind of event (see [`crate::tracked`]).
    pub event: Option<String>,
    /// The send port where it happened.
    pub port: Option<String>,
    /// The receive location where it happened.
    pub location: Option<String>,
    /// At or after (ms).
    pub since: Option<Millis>,
    /// Before (ms).
    pub until: Option<Millis>,
    /// A filter on the message's context, which only `completed` events
    /// carry: with it, only `completed` events match.
    pub context: Option<Filter>,
}

impl TrackingQuery {
    /// Every event of one message: its whole path.
    pub fn of_message(id: MessageId) -> TrackingQuery {
        TrackingQuery {
            message: Some(id),
            ..TrackingQuery::default()
        }
    }
}

/// A string equality the box can answer from its index of promoted
/// properties: `key == "value"` at the top level of `filter` (alone or in
/// an `and`), on one of `indexed`.
pub fn indexed_equality<'a>(filter: &'a Filter, indexed: &[Key]) -> Option<(&'a Key, &'a str)> {
    use sluice_model::{CompareOp, Predicate, Value};
    let usable = |f: &'a Filter| match f {
        Filter::Pred(Predicate::Compare(k, CompareOp::Eq, Value::String(v))) if indexed.contains(k) => {
            Some((k, v.as_str()))
        }
        _ => None,
    };
    match filter {
        Filter::And(fs) => fs.iter().find_map(usable),
        f => usable(f),
    }
}

/// The first id of millisecond `ms` (ids are ULIDs: they sort by time), as
/// 16 bytes: `id >= since_bound(t)` is "made at or after `t`".
pub fn id_bound(ms: Millis) -> [u8; 16] {
    let ms = ms.clamp(0, (1 << 48) - 1) as u64;
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_bound_sorts_with_the_ids_of_its_time() {
        let id = MessageId::new();
        let t = id.timestamp_ms() as Millis;
        assert!(id_bound(t).as_slice() <= id.to_bytes().as_slice());
        assert!(id_bound(t + 1).as_slice() > id.to_bytes().as_slice());
        assert_eq!(id_bound(-5), [0; 16]);
    }

    #[test]
    fn only_a_top_level_string_equality_on_an_indexed_key_uses_the_index() {
        let keys = [Key::parse("order.id").unwrap()];
        let f = |t: &str| Filter::parse(t).unwrap();
        let hit = f(r#"order.id == "A1""#);
        assert_eq!(indexed_equality(&hit, &keys).map(|(_, v)| v), Some("A1"));
        let both = f(r#"x > 1 and order.id == "A2""#);
        assert_eq!(indexed_equality(&both, &keys).map(|(_, v)| v), Some("A2"));
        for miss in [
            r#"order.id == 5"#,
            r#"order.id != "A1""#,
            r#"other == "A1""#,
            r#"order.id == "A1" or x == 1"#,
            r#"not order.id == "A1""#,
        ] {
            assert_eq!(indexed_equality(&f(miss), &keys), None, "{miss}");
        }
    }
}
