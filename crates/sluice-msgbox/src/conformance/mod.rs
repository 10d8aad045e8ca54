//! The conformance suite every message-box backend runs.
//!
//! A backend's tests call [`conformance_tests!`](crate::conformance_tests) with
//! an expression that makes a fresh [`Harness`]; each case opens the box
//! through it (and reopens it, to test restarts). The cases are grouped by
//! area, one module each; the model-based test is in `model`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use sluice_content::{WriteOptions, read_part, write_part};
use tokio::io::AsyncReadExt;

use crate::*;

mod faults;
mod interchange;
mod lease;
mod model;
mod operators;
mod ownership;
mod publish;
mod suspend;
mod tracking;

pub use faults::*;
pub use interchange::*;
pub use lease::*;
pub use model::*;
pub use operators::*;
pub use ownership::*;
pub use publish::*;
pub use suspend::*;
pub use tracking::*;

/// Opens the backend under test. Opening again after [`MessageBox::close`]
/// must see everything that was committed: it is a restart.
#[async_trait]
pub trait Harness: Send + Sync {
    async fn open(&self, clock: Arc<dyn Clock>) -> Arc<dyn MessageBox>;
    /// Open the same box for node `node`, beside handles already open (a
    /// group of nodes sharing one box). `None` (the default): the backend
    /// cannot, and the cases that need two nodes check nothing.
    async fn open_node(&self, _clock: Arc<dyn Clock>, _node: &str) -> Option<Arc<dyn MessageBox>> {
        None
    }
}

/// Generates one `#[tokio::test]` per conformance case, plus the model-based
/// property test, for the harness made by `$make`.
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@cases $make;
            publish_routes_and_round_trips,
            no_subscriber_suspends_and_resume_routes,
            lease_ack_nack_and_expiry,
            lease_with_bodies_hands_out_small_bodies_within_the_budget,
            ack_many_acks_each_and_names_lost_leases,
            progress_and_where_delivered_are_kept,
            stale_tokens_are_refused,
            release_leases_makes_entries_ready,
            renew_keeps_a_lease,
            references_from_holders,
            publish_holding_keeps_the_message,
            publish_suspended_is_not_routed,
            last_release_deletes_stored_content,
            unsubscribe_suspends_queued_entries,
            terminate_and_missing_ids,
            state_survives_restart,
            concurrent_publishes_all_land,
            interchange_is_invisible_until_commit,
            interchange_routes_suspends_and_holds,
            aborted_interchange_leaves_nothing,
            uncommitted_interchange_is_gone_after_restart,
            fault_message_carries_context_and_shares_parts,
            faults_nobody_takes_and_faults_of_faults_are_not_stored,
            unsubscribe_suspends_with_fault_messages,
            attempts_are_recorded_and_can_skip_forward,
            resubmit_publishes_again_with_shared_parts,
            resubmit_edits_and_refusals,
            a_suspension_needing_an_edit_is_resubmitted_not_resumed,
            suspended_query_filters,
            suspended_entries_are_counted_by_port_and_error,
            tracking_records_and_purges,
            tracking_says_where_messages_came_and_stopped,
            messages_are_found_by_context_time_and_port,
            a_search_examines_a_bounded_number_of_rows,
            tracking_is_found_by_event_port_time_and_context,
            recover_takes_back_the_nodes_leases,
            nodes_recover_only_their_own_leases,
            held_by_lists_only_the_nodes_holds,
            nodes_discard_only_their_own_interchanges,
            users_and_tokens_are_kept_and_removed_together,
            audit_entries_are_kept_newest_first_and_purged_by_age,
            stopped_units_are_kept_across_restarts,
            sessions_are_found_by_hash_and_end_with_their_user,
        );
        #[test]
        fn model_based_sequences() {
            $crate::conformance::model_based(|| $make);
        }
    };
    (@cases $make:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let harness = $make;
                $crate::conformance::$case(&harness).await;
            }
        )*
    };
}

const T0: Millis = 1_700_000_000_000;

/// A send-side failure with this error.
fn fail(error: &str) -> Failure {
    Failure::new(stage::TRANSMIT, "test", error)
}

fn sub(name: &str, filter: &str) -> Subscription {
    Subscription {
        subscriber: name.to_string(),
        filter: Filter::parse(filter).expect("test filter parses"),
    }
}

fn msg(kind: &str, n: i64) -> NewMessage {
    let mut context = Context::new();
    context.promote("t", "kind", kind);
    context.promote("t", "n", n);
    context.write("t", "note", format!("{kind}-{n}"));
    NewMessage {
        id: MessageId::new(),
        context,
        parts: vec![Part::inline("body", format!("body of {kind}-{n}"))],
    }
}

async fn read_all(b: &dyn MessageBox, id: MessageId) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for part in b.parts(id).await.expect("parts") {
        let mut buf = Vec::new();
        read_part(b.content(), &part)
            .read_to_end(&mut buf)
            .await
            .expect("read part");
        out.push(buf);
    }
    out
}

async fn stored_part(b: &dyn MessageBox, name: &str, size: usize, seed: u8) -> (Part, Vec<u8>) {
    let data: Vec<u8> = (0..size)
        .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed))
        .collect();
    let mut reader: &[u8] = &data;
    let opts = WriteOptions {
        chunk_size: 1000,
        inline_max: 64,
        max_size: None,
    };
    let part = write_part(&*b.content(), name, &mut reader, opts)
        .await
        .expect("write part");
    assert!(matches!(part.body, PartBody::Stored { .. }));
    (part, data)
}

fn time_of(ms: Millis) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).expect("valid time")
}

fn staged(m: NewMessage) -> StagedMessage {
    StagedMessage {
        message: m,
        holder: None,
        suspend: None,
    }
}

/// The fault subscription the fault cases use.
const FAULTS: &str = "fault.message_id exists";

/// Lease one entry of `subscriber` (panics if there is none).
async fn lease_one(b: &dyn MessageBox, subscriber: &str) -> Leased {
    let mut got = b.lease(subscriber, 1, 10_000).await.unwrap();
    assert_eq!(got.len(), 1, "one entry ready for `{subscriber}`");
    got.remove(0)
}
