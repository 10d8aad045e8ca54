//! `POST /api/v1/suspended/resume` and `/terminate`: a bulk action over ids,
//! every entry (`"all": true`) or the CLI's filters, optionally a dry run.
//!
//! The answer is NDJSON, streamed as the run goes, one line per event:
//! `{"event": "matched", "total": N}`, then `{"event": "entry", "id", ...,
//! "outcome": ...}` for each entry (a failure with its `code` and
//! `reason`), `{"event": "taken", ...}` for entries another operation took
//! first, and last `{"event": "summary", ...}` (the run's counts). A dry
//! run answers `{"event": "entry", "id", "would": ACTION, "entry": ...}`
//! for each entry that matches, then the summary; nothing changes.
//!
//! The run goes at the pace the client reads its answer; a client that
//! goes away stops it after the entry in hand (what is left is as it was,
//! and running it again finds only that). Each entry acted on is recorded
//! in the audit log before the next is taken, and the run as a whole once
//! it ends.

use std::ops::ControlFlow;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use serde::Serialize;
use sluice_ops::suspended::{self, Action, Event, Progress, Selection};
use sluice_ops::{ErrorCode, OpsError};
use tokio::sync::mpsc;

use crate::auth::Operating;
use crate::routes::with_filters;
use crate::{ApiState, MAX_LIMIT, Problem};

with_filters!(BulkRequest {
    /// These entries (not with `all` or filters).
    #[serde(default)]
    ids: Vec<i64>,
    /// Every entry (not with ids or filters).
    #[serde(default)]
    all: bool,
    /// Say what would be done; change nothing.
    #[serde(default)]
    dry_run: bool,
});

#[utoipa::path(post, path = "/api/v1/suspended/resume", tag = "suspended", security(("token" = [])), request_body = BulkRequest,
    responses((status = 200, description = "One JSON object per line, as the run goes (see the module docs)", body = String, content_type = "application/x-ndjson"), crate::openapi::Errors))]
pub(crate) async fn resume(
    caller: Operating,
    state: State<ApiState>,
    body: Result<Json<BulkRequest>, JsonRejection>,
) -> Result<Response, Problem> {
    bulk(caller, state, body, Action::Resume).await
}

#[utoipa::path(post, path = "/api/v1/suspended/terminate", tag = "suspended", security(("token" = [])), request_body = BulkRequest,
    responses((status = 200, description = "One JSON object per line, as the run goes (see the module docs)", body = String, content_type = "application/x-ndjson"), crate::openapi::Errors))]
pub(crate) async fn terminate(
    caller: Operating,
    state: State<ApiState>,
    body: Result<Json<BulkRequest>, JsonRejection>,
) -> Result<Response, Problem> {
    bulk(caller, state, body, Action::Terminate).await
}

/// One line of the answer, or (first only) the error the whole answer is.
type Line = Result<Bytes, Problem>;

fn line(value: &impl Serialize) -> Bytes {
    let mut v = serde_json::to_vec(value).unwrap_or_else(|e| {
        serde_json::to_vec(&serde_json::json!({"event": "error", "code": "internal", "reason": e.to_string()}))
            .unwrap_or_default()
    });
    v.push(b'\n');
    Bytes::from(v)
}

async fn bulk(
    Operating(caller): Operating,
    State(state): State<ApiState>,
    body: Result<Json<BulkRequest>, JsonRejection>,
    action: Action,
) -> Result<Response, Problem> {
    let Json(req) = body?;
    let query = req.query(state.clock.now_ms())?;
    let conditions = suspended::has_conditions(&query);
    let selection = match (req.ids.is_empty(), req.all, conditions) {
        (false, false, false) => {
            if req.ids.len() > MAX_LIMIT {
                return Err(Problem::invalid(format!(
                    "{} ids: at most {MAX_LIMIT} at once (or select them by filters)",
                    req.ids.len()
                )));
            }
            Selection::Ids(req.ids.clone())
        }
        (true, true, false) => Selection::all(),
        (true, false, true) => Selection::Query(query),
        (true, false, false) => {
            return Err(Problem::invalid(
                "say which entries: `ids`, `\"all\": true`, or filters (port, location, stage, error, since, until, where, resumable)",
            ));
        }
        _ => {
            return Err(Problem::invalid(
                "use one of `ids`, `\"all\": true` or filters, not several",
            ));
        }
    };
    // One line ahead of the client at most: the run goes at its pace.
    let (tx, mut rx) = mpsc::channel::<Line>(1);
    let would = action.op().name();
    // The run is a task of its own: a client that goes away stops it
    // between entries (its next line cannot be sent), never in the middle
    // of one, and the run is recorded whatever happens.
    let (b, clock, actor) = (state.b.clone(), state.clock.clone(), caller.actor.clone());
    if req.dry_run {
        state.work.spawn(dry_run(
            b,
            selection,
            conditions,
            would,
            Lines {
                tx,
                started: false,
                stopping: state.stopping.clone(),
            },
        ));
    } else {
        let stopping = state.stopping.clone();
        state.work.spawn(async move {
            let mut lines = Lines {
                tx: tx.clone(),
                started: false,
                stopping,
            };
            let result = suspended::run_audited(&*b, &selection, &action, &actor, &*clock, &mut lines).await;
            let last = match result {
                Ok(summary) => Ok(line(&serde_json::json!({"event": "summary", "summary": summary}))),
                Err(e) if !lines.started => Err(Problem::from(e)),
                Err(e) => Ok(line(
                    &serde_json::json!({"event": "error", "code": e.code(), "reason": e.to_string()}),
                )),
            };
            lines.send(last).await;
        });
    }
    // The first line decides the status: an error before anything was
    // done (nothing matches, the box does not answer) is the answer.
    let first = match rx.recv().await {
        Some(Ok(first)) => first,
        Some(Err(problem)) => return Err(problem),
        None => return Err(Problem::new(ErrorCode::Internal, "the bulk run ended without a word")),
    };
    let rest = futures::stream::unfold(rx, |mut rx| async move {
        let item = rx.recv().await?;
        Some((item.map_err(|p| std::io::Error::other(p.message)), rx))
    });
    let stream = futures::StreamExt::chain(
        futures::stream::once(async move { Ok::<_, std::io::Error>(first) }),
        rest,
    );
    let mut response = Response::new(Body::from_stream(stream));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-ndjson"));
    Ok(response)
}

/// The run's events as lines (each entry acted on is recorded in the audit
/// log before it is told: `run_audited`).
struct Lines {
    tx: mpsc::Sender<Line>,
    started: bool,
    /// The API stops: the run stops after the entry in hand.
    stopping: tokio_util::sync::CancellationToken,
}

impl Lines {
    /// Send a line; `false` once the client is gone or the API stops (a
    /// client that reads slowly cannot hold the node's stop).
    async fn send(&mut self, item: Line) -> bool {
        self.started = true;
        tokio::select! {
            sent = self.tx.send(item) => sent.is_ok() && !self.stopping.is_cancelled(),
            _ = self.stopping.cancelled() => false,
        }
    }
}

impl Progress for &mut Lines {
    async fn event(&mut self, event: Event<'_>) -> ControlFlow<()> {
        match self.send(Ok(line(&event))).await {
            true => ControlFlow::Continue(()),
            false => ControlFlow::Break(()),
        }
    }
}

/// The entries a run would act on, one line each, then how many.
async fn dry_run(
    b: std::sync::Arc<dyn sluice_msgbox::MessageBox>,
    selection: Selection,
    conditions: bool,
    would: &'static str,
    mut out: Lines,
) {
    // Entries that would be acted on, and lines sent (those, and ids that
    // do not exist): once a line is sent, the status is given and an error
    // can only be a line of its own.
    let (mut matched, mut sent) = (0u64, 0u64);
    let entry = |info: &sluice_msgbox::SuspendedInfo| {
        line(&serde_json::json!({"event": "entry", "id": info.id, "would": would, "entry": info}))
    };
    let result: Result<(), OpsError> = async {
        match &selection {
            Selection::Ids(ids) => {
                let mut seen = std::collections::HashSet::new();
                for &id in ids.iter().filter(|id| seen.insert(**id)) {
                    let info = b.suspended(id).await.map_err(|error| OpsError::Read {
                        doing: format!("reading suspended entry {id}"),
                        error,
                    })?;
                    let next = match info {
                        Some(info) => {
                            matched += 1;
                            entry(&info)
                        }
                        None => line(&serde_json::json!({"event": "entry", "id": id, "outcome": "failed",
                            "code": "not_found", "reason": format!("suspended entry {id} does not exist")})),
                    };
                    sent += 1;
                    if !out.send(Ok(next)).await {
                        return Ok(());
                    }
                }
            }
            Selection::Query(q) => {
                let mut pages = suspended::Pages::new(&*b, q);
                while let Some(page) = pages.next().await? {
                    for info in &page {
                        matched += 1;
                        sent += 1;
                        if !out.send(Ok(entry(info))).await {
                            return Ok(());
                        }
                    }
                }
            }
        }
        Ok(())
    }
    .await;
    let summary = || line(&serde_json::json!({"event": "summary", "dry_run": true, "matched": matched}));
    let last = match (result, &selection) {
        (Ok(()), Selection::Query(q)) if matched == 0 && conditions => Err(Problem::from(OpsError::NothingMatches {
            conditions: suspended::describe(q),
        })),
        (Ok(()), _) => Ok(summary()),
        (Err(e), _) if sent == 0 => Err(Problem::from(e)),
        (Err(e), _) => Ok(line(
            &serde_json::json!({"event": "error", "code": e.code(), "reason": e.to_string()}),
        )),
    };
    out.send(last).await;
}
