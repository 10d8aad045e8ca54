//! A send port's acknowledgements, grouped: the acks of deliveries that end
//! together go to the box in one call ([`MessageBox::ack_many`]: one writer
//! job, one wake-up back), not one call each. Each delivery still waits for
//! its own outcome, and only an ack that committed counts as delivered.

use std::sync::{Arc, OnceLock};

use sluice_msgbox::{Ack, BoxError, LeaseToken, MessageBox};
use tokio::sync::{mpsc, oneshot};

/// Acks sent to the box in one call, at most.
const GROUP: usize = 256;
/// Acks waiting for the call before theirs, at most (the deliveries
/// settling are bounded before that).
const WAITING: usize = 1024;

type Reply = oneshot::Sender<Result<(), BoxError>>;
type Queued = (Ack, Reply);

pub(crate) struct Acks {
    mbox: Arc<dyn MessageBox>,
    /// Started at the first ack (within the runtime); ends with the port.
    tx: OnceLock<mpsc::Sender<Queued>>,
}

impl Acks {
    pub(crate) fn new(mbox: Arc<dyn MessageBox>) -> Acks {
        Acks {
            mbox,
            tx: OnceLock::new(),
        }
    }

    /// Acknowledge `token` with whatever other acks come at the same time;
    /// `delivered_to` is tracked ([`Ack::delivered_to`]).
    pub(crate) async fn ack(&self, token: LeaseToken, delivered_to: Option<String>) -> Result<(), BoxError> {
        let tx = self.tx.get_or_init(|| {
            let (tx, rx) = mpsc::channel(WAITING);
            tokio::spawn(run(self.mbox.clone(), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        tx.send((Ack { token, delivered_to }, reply))
            .await
            .map_err(|_| BoxError::Closed)?;
        answer.await.map_err(|_| BoxError::Closed)?
    }
}

async fn run(mbox: Arc<dyn MessageBox>, mut rx: mpsc::Receiver<Queued>) {
    let mut group: Vec<Queued> = Vec::with_capacity(GROUP);
    while rx.recv_many(&mut group, GROUP).await > 0 {
        // The acks move out of the group (no copy of their texts).
        let (acks, replies): (Vec<Ack>, Vec<Reply>) = group.drain(..).unzip();
        match mbox.ack_many(&acks).await {
            Ok(outcomes) => {
                // A reply without an outcome (none: a backend's bug) is
                // dropped, and its delivery sees the box as closed.
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(same(&e)));
                }
            }
        }
    }
}

/// The error of a failed group, for each of its acks.
fn same(e: &BoxError) -> BoxError {
    match e {
        BoxError::Storage { doing, detail } => BoxError::Storage {
            doing: doing.clone(),
            detail: detail.clone(),
        },
        BoxError::Closed => BoxError::Closed,
        other => BoxError::Storage {
            doing: "acknowledging deliveries".into(),
            detail: other.to_string(),
        },
    }
}
