//! The compliance kit: fakes of what the host gives a source, and the
//! checks every receive adapter's tests run (`docs/adapters.md`).
//!
//! ```ignore
//! struct Harness { ... }                       // builds the source, offers a message
//! impl kit::SourceHarness for Harness { ... }
//! #[tokio::test] async fn compliance() { kit::check_source(&Harness::new()).await }
//! ```
//!
//! Compiled for this crate's tests and, with the `kit` feature, for others.

#[cfg(feature = "mail")]
pub mod dovecot;
#[cfg(feature = "smtp")]
pub mod smtpd;
#[cfg(feature = "sftp")]
pub mod sshd;
#[cfg(feature = "ftp")]
pub mod vsftpd;

/// A port of 127.0.0.1 free now (for a server a test starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port()
}

/// The last `n` lines of the file at `path` (or why it cannot be read),
/// for a fixture's panic message.
#[cfg(any(feature = "mail", feature = "ftp"))]
pub fn tail_of(path: &std::path::Path, n: usize) -> String {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("({}: {e})", path.display()),
    }
}

/// Open `dir` to other users (mode 0711) so that a server's sessions
/// running as another user (`nobody`, a throwaway user) reach what is
/// below it, and check that every folder above it lets them through; else
/// panic with `why` (who must reach what) and the folder that stops them.
#[cfg(any(feature = "mail", feature = "ftp"))]
pub fn open_to_others(dir: &std::path::Path, fixture: &str, why: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711))
        .unwrap_or_else(|e| panic!("{fixture}: chmod {}: {e}", dir.display()));
    for ancestor in dir.ancestors().skip(1) {
        let mode = std::fs::metadata(ancestor)
            .map(|m| m.permissions().mode())
            .unwrap_or(0o777);
        assert!(
            mode & 0o001 != 0,
            "{fixture}: {why}, and {} is not searchable by others: put the test's folder elsewhere (under /tmp)",
            ancestor.display()
        );
    }
}

/// Wait up to `limit` until a server a fixture started is up: `missing`
/// says what is not answering yet (`None`: all is). If `child` exits first
/// or the time runs out, panic naming `server`, what was missing, and the
/// last 30 lines of each of `logs` (label, file).
#[cfg(any(feature = "mail", feature = "ftp"))]
pub fn wait_until_up(
    child: &mut std::process::Child,
    server: &str,
    limit: std::time::Duration,
    mut missing: impl FnMut() -> Option<String>,
    logs: &[(&str, std::path::PathBuf)],
) {
    let deadline = std::time::Instant::now() + limit;
    loop {
        let Some(what) = missing() else { return };
        let exited = child.try_wait().ok().flatten();
        if exited.is_some() || std::time::Instant::now() >= deadline {
            let why = match exited {
                Some(status) => format!("exited ({status})"),
                None => format!("{what} within {} s", limit.as_secs()),
            };
            let shown: Vec<String> = logs
                .iter()
                .map(|(label, path)| format!("{label} ({}):\n{}", path.display(), tail_of(path, 30)))
                .collect();
            panic!("{server} {why}; {}", shown.join("\n"));
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A certificate for `localhost` and its key, as PEM files in `dir`.
#[cfg(test)]
pub(crate) fn certificate(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("a certificate");
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert.pem()).expect("cert.pem");
    std::fs::write(&k, key_pair.serialize_pem()).expect("key.pem");
    (c, k)
}

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sluice_model::{Context, MessageId};
use tokio::io::AsyncReadExt;

use crate::{Admission, Admitted, Body, Held, Publisher, Receipt, ReceiveContext, Source, SubmitError};

/// What a fake publisher does with a submission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Read the body and publish it.
    Publish,
    /// Read the body, then fail as a full disk would (retry later).
    Fail,
    /// Read the body, then wait until [`FakePublisher::set_mode`] changes
    /// the mode (to see what the source does before `submit` returned).
    Hold,
}

/// A submission the fake publisher took.
#[derive(Debug, Clone)]
pub struct Submission {
    pub id: MessageId,
    pub context: Context,
    pub body: Vec<u8>,
    /// Its other parts ([`Publisher::submit_parts`]), name and bytes, in
    /// the order they were stored.
    pub parts: Vec<(String, Vec<u8>)>,
}

/// A [`Publisher`] that records what it publishes and can be made to fail.
pub struct FakePublisher {
    mode: Mutex<Mode>,
    changed: tokio::sync::Notify,
    published: Mutex<Vec<Submission>>,
    settled: Mutex<Vec<MessageId>>,
    unheld: Mutex<Vec<MessageId>>,
    suspended: Mutex<Vec<(MessageId, String)>>,
    attempts: AtomicUsize,
}

impl FakePublisher {
    pub fn new() -> Arc<Self> {
        Arc::new(FakePublisher {
            mode: Mutex::new(Mode::Publish),
            changed: tokio::sync::Notify::new(),
            published: Mutex::new(Vec::new()),
            settled: Mutex::new(Vec::new()),
            unheld: Mutex::new(Vec::new()),
            suspended: Mutex::new(Vec::new()),
            attempts: AtomicUsize::new(0),
        })
    }

    pub fn set_mode(&self, mode: Mode) {
        if let Ok(mut m) = self.mode.lock() {
            *m = mode;
        }
        self.changed.notify_waiters();
    }

    fn mode(&self) -> Mode {
        self.mode.lock().map(|m| *m).unwrap_or(Mode::Fail)
    }

    /// Messages published (in order).
    pub fn published(&self) -> Vec<Submission> {
        self.published.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// Messages whose source said it had settled (its own copy gone).
    pub fn settled(&self) -> Vec<MessageId> {
        self.settled.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// Messages submitted [unheld](Publisher::submit_unheld): nothing to settle.
    pub fn unheld(&self) -> Vec<MessageId> {
        self.unheld.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// Messages stored suspended ([`Publisher::suspend`]: they are among
    /// the published too), with the reason.
    pub fn suspended(&self) -> Vec<(MessageId, String)> {
        self.suspended.lock().map(|p| p.clone()).unwrap_or_default()
    }

    /// Calls of `submit`, whatever they returned.
    pub fn attempts(&self) -> usize {
        self.attempts.load(Ordering::SeqCst)
    }

    /// Keep `s` as published, as the mode says (or fail, or wait).
    async fn record(&self, s: Submission) -> Result<Receipt, SubmitError> {
        loop {
            let notified = self.changed.notified();
            match self.mode() {
                Mode::Publish => break,
                Mode::Fail => return Err(SubmitError::new("the fake box is full")),
                Mode::Hold => notified.await,
            }
        }
        let id = s.id;
        if let Ok(mut p) = self.published.lock() {
            p.push(s);
        }
        Ok(Receipt {
            messages: vec![id],
            unrouted: false,
        })
    }
}

#[async_trait]
impl Publisher for FakePublisher {
    async fn submit(&self, id: MessageId, context: Context, mut body: Body) -> Result<Receipt, SubmitError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let mut bytes = Vec::new();
        body.read_to_end(&mut bytes)
            .await
            .map_err(|e| SubmitError::new(format!("reading the body: {e}")))?;
        self.record(Submission {
            id,
            context,
            body: bytes,
            parts: Vec::new(),
        })
        .await
    }

    async fn submit_parts(
        &self,
        id: MessageId,
        context: Context,
        parts: &mut dyn crate::PartSource,
    ) -> Result<Receipt, SubmitError> {
        self.attempts.fetch_add(1, Ordering::SeqCst);
        let failed = |e: std::io::Error| SubmitError::new(format!("reading the message's parts: {e}"));
        let (mut body, mut others) = (None, Vec::new());
        while let Some(mut part) = parts.next_part().await.map_err(failed)? {
            let mut bytes = Vec::new();
            part.body.read_to_end(&mut bytes).await.map_err(failed)?;
            if part.is_body && body.is_none() {
                body = Some(bytes);
            } else {
                others.push((part.name, bytes));
            }
        }
        self.record(Submission {
            id,
            context,
            body: body.unwrap_or_default(),
            parts: others,
        })
        .await
    }

    async fn held(&self, max: usize) -> Result<Vec<(MessageId, Context)>, SubmitError> {
        let settled = self.settled();
        Ok(self
            .published()
            .into_iter()
            .filter(|p| !settled.contains(&p.id) && !self.unheld().contains(&p.id))
            .take(max)
            .map(|p| (p.id, p.context))
            .collect())
    }

    async fn suspend(
        &self,
        id: MessageId,
        context: Context,
        body: Body,
        error: &SubmitError,
    ) -> Result<Receipt, SubmitError> {
        let receipt = self.submit(id, context, body).await?;
        if let Ok(mut s) = self.suspended.lock() {
            s.push((id, error.message.clone()));
        }
        Ok(receipt)
    }

    async fn submit_unheld(&self, id: MessageId, context: Context, body: Body) -> Result<Receipt, SubmitError> {
        let receipt = self.submit(id, context, body).await?;
        if let Ok(mut u) = self.unheld.lock() {
            u.push(id);
        }
        Ok(receipt)
    }

    async fn settled(&self, receipt: &Receipt) -> Result<(), SubmitError> {
        let published = self.published();
        if let Ok(mut s) = self.settled.lock() {
            for id in &receipt.messages {
                assert!(
                    published.iter().any(|p| p.id == *id),
                    "message {id} settled before it was published"
                );
                s.push(*id);
            }
        }
        Ok(())
    }

    async fn is_published(&self, id: MessageId) -> Result<bool, SubmitError> {
        Ok(self.published().iter().any(|p| p.id == id))
    }
}

/// An [`Admission`] that admits at once and counts what is in flight.
#[derive(Default)]
pub struct FakeAdmission {
    state: Arc<AdmissionState>,
}

#[derive(Default)]
struct AdmissionState {
    admitted: AtomicUsize,
    in_flight: AtomicUsize,
    bytes: AtomicU64,
}

struct Permit(Arc<AdmissionState>);

impl Held for Permit {
    fn charge(&self, bytes: u64) {
        self.0.bytes.fetch_add(bytes, Ordering::SeqCst);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

impl FakeAdmission {
    pub fn new() -> Arc<Self> {
        Arc::new(FakeAdmission::default())
    }
    /// Admissions given so far.
    pub fn admitted(&self) -> usize {
        self.state.admitted.load(Ordering::SeqCst)
    }
    /// Admissions not yet given back.
    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::SeqCst)
    }
    /// Bytes charged (declared at admission plus charged as they arrived).
    pub fn bytes(&self) -> u64 {
        self.state.bytes.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl Admission for FakeAdmission {
    async fn admit(&self, bytes: u64) -> Admitted {
        self.state.admitted.fetch_add(1, Ordering::SeqCst);
        self.state.in_flight.fetch_add(1, Ordering::SeqCst);
        self.state.bytes.fetch_add(bytes, Ordering::SeqCst);
        Admitted::new(Permit(self.state.clone()))
    }
}

/// A receive context over the fakes (port `kit`, location `kit-in`).
pub fn context(publisher: Arc<FakePublisher>, admission: Arc<FakeAdmission>) -> ReceiveContext {
    ReceiveContext {
        node: "kit-node".into(),
        port: "kit".into(),
        location: "kit-in".into(),
        publisher,
        admission,
        shutdown: crate::CancellationToken::new(),
    }
}

/// What a receive adapter's test gives the kit.
#[async_trait]
pub trait SourceHarness: Send + Sync {
    /// A new source over the same place (a file folder, an address):
    /// called again to play a restart.
    fn source(&self) -> Box<dyn Source>;
    /// Offer one message with `body` at the source, without waiting for
    /// it to be taken (write a file; start a request).
    async fn offer(&self, body: &[u8]);
    /// Whether the peer's copy of the last offer is acknowledged or gone
    /// (the file deleted; a 2xx answer). `false` while it waits, and
    /// after a refusal.
    async fn acknowledged(&self) -> bool;
    /// Whether the last offer was refused or put back, so that it will be
    /// tried again (the file back under its name; an error status).
    async fn kept(&self) -> bool;
    /// Whether the peer, not the source, tries again (a client resends
    /// after an error answer; a folder's file is retried by the source).
    fn peer_retries(&self) -> bool;
    /// Whether the source keeps no copy of its own that could outlive a
    /// crash (an HTTP request), and so may submit
    /// [unheld](Publisher::submit_unheld). A source that claims work in a
    /// way that survives a crash (a renamed file) must not: `false`.
    fn may_submit_unheld(&self) -> bool {
        false
    }
    /// The adapter's `PROMOTES` constant: every property it promotes
    /// besides those of every location.
    fn promotes(&self) -> &'static [(&'static str, &'static str)];
}

pub use crate::BASE_PROMOTES;

/// MUST: a published message promotes only properties its adapter lists
/// (`promotes`) or every location has ([`BASE_PROMOTES`]).
pub fn check_promotes_only_what_it_lists(context: &Context, promotes: &[(&str, &str)]) {
    for p in context.iter().filter(|p| p.promoted) {
        let listed = |list: &[(&str, &str)]| list.iter().any(|(ns, n)| *ns == p.namespace && *n == p.name);
        assert!(
            listed(promotes) || listed(BASE_PROMOTES),
            "promoted property {} is not in the adapter's PROMOTES",
            p.key()
        );
    }
    for (ns, n) in BASE_PROMOTES {
        assert!(context.promoted(ns, n).is_some(), "{ns}.{n} is not promoted");
    }
}

/// Wait up to `within` for `cond`.
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < within, "gave up waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A message on its way out, for a transmitter's tests: port `p`, first
/// attempt, `file.name` promoted as `name`.
pub fn outbound(name: &str) -> crate::Outbound {
    let mut context = Context::new();
    context.promote("file", "name", name);
    crate::Outbound {
        id: MessageId::new(),
        port: "p".into(),
        context,
        attempt: 1,
        progress: None,
    }
}

/// The names in folder `dir`, sorted: what a transmitter left there.
pub fn names_in(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .expect("read the folder")
        .map(|e| e.expect("read the folder").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// A source running under a fake publisher (see [`run_source`]).
pub struct Running {
    pub cx: ReceiveContext,
    pub task: tokio::task::JoinHandle<Result<(), crate::AdapterError>>,
}

async fn start(h: &dyn SourceHarness, publisher: &Arc<FakePublisher>, admission: &Arc<FakeAdmission>) -> Running {
    run_source(h.source(), publisher, admission).await
}

/// Bind `source`, let it recover, and run it under `publisher` and
/// `admission` until [`Running::stop`].
pub async fn run_source(
    mut source: Box<dyn Source>,
    publisher: &Arc<FakePublisher>,
    admission: &Arc<FakeAdmission>,
) -> Running {
    source.bind().await.expect("the source binds");
    let cx = context(publisher.clone(), admission.clone());
    source.recover(&cx).await;
    let task = tokio::spawn(source.run(cx.clone()));
    Running { cx, task }
}

impl Running {
    /// Stop it; it must return within 5 s, without an error.
    pub async fn stop(self) {
        stop(self).await
    }
}

/// Stop a running source; it must return within 5 s.
async fn stop(r: Running) {
    r.cx.shutdown.cancel();
    match tokio::time::timeout(Duration::from_secs(5), r.task).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => panic!("the source ended with an error: {e}"),
        Ok(Err(e)) => panic!("the source's task failed: {e}"),
        Err(_) => panic!("the source did not return within 5 s of shutdown"),
    }
}

const WAIT: Duration = Duration::from_secs(15);

/// MUST: a source acknowledges (deletes, answers 2xx) only after `submit`
/// returned `Ok`, and settles only what was published.
pub async fn check_acknowledges_only_after_publish(h: &dyn SourceHarness) {
    let (publisher, admission) = (FakePublisher::new(), FakeAdmission::new());
    publisher.set_mode(Mode::Hold);
    let r = start(h, &publisher, &admission).await;
    h.offer(b"held until published").await;
    eventually(WAIT, "the source to submit", || async { publisher.attempts() == 1 }).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!h.acknowledged().await, "acknowledged before the publish returned");
    assert!(publisher.settled().is_empty(), "settled before the publish returned");
    publisher.set_mode(Mode::Publish);
    eventually(WAIT, "the offer to be acknowledged", || h.acknowledged()).await;
    let published = publisher.published();
    assert_eq!(published.len(), 1);
    assert_eq!(published[0].body, b"held until published");
    check_promotes_only_what_it_lists(&published[0].context, h.promotes());
    // Settled once its copy is gone, or submitted with nothing to settle
    // (only a source that may).
    eventually(WAIT, "the source to settle", || async {
        publisher.settled() == vec![published[0].id] || publisher.unheld() == vec![published[0].id]
    })
    .await;
    if !h.may_submit_unheld() {
        assert!(
            publisher.unheld().is_empty(),
            "a source with a copy that outlives a crash submitted unheld: is_published cannot recover it"
        );
    }
    stop(r).await;
    assert_eq!(admission.in_flight(), 0, "every admission given back");
    assert!(admission.admitted() >= 1, "the source waits for admission");
}

/// MUST: a failed publish leaves the source in place (or restores it), and
/// it is tried again; nothing is settled for it.
pub async fn check_failed_publish_keeps_the_source(h: &dyn SourceHarness) {
    let (publisher, admission) = (FakePublisher::new(), FakeAdmission::new());
    publisher.set_mode(Mode::Fail);
    let r = start(h, &publisher, &admission).await;
    h.offer(b"kept on failure").await;
    eventually(WAIT, "a failed submission", || async { publisher.attempts() >= 1 }).await;
    eventually(WAIT, "the source to be kept", || h.kept()).await;
    assert!(!h.acknowledged().await, "acknowledged though the publish failed");
    assert!(publisher.settled().is_empty());
    assert!(h.may_submit_unheld() || publisher.unheld().is_empty());
    publisher.set_mode(Mode::Publish);
    if h.peer_retries() {
        h.offer(b"kept on failure").await;
    }
    eventually(WAIT, "the retry to be published", || async {
        publisher.published().len() == 1
    })
    .await;
    assert_eq!(publisher.published()[0].body, b"kept on failure");
    eventually(WAIT, "the retry to be acknowledged", || h.acknowledged()).await;
    stop(r).await;
    assert_eq!(admission.in_flight(), 0, "every admission given back");
}

/// SHOULD: shutdown with nothing in flight returns promptly.
pub async fn check_shutdown_is_prompt(h: &dyn SourceHarness) {
    let (publisher, admission) = (FakePublisher::new(), FakeAdmission::new());
    let r = start(h, &publisher, &admission).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop(r).await;
}

/// MUST: none of `secrets` shows in `debug` (a config or source printed
/// with `{:?}`).
pub fn check_secrets_not_in_debug(debug: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!debug.contains(s), "a secret shows in Debug output: {debug}");
    }
}

/// Every check of a receive adapter, one after the other.
pub async fn check_source(h: &dyn SourceHarness) {
    check_shutdown_is_prompt(h).await;
    check_acknowledges_only_after_publish(h).await;
    check_failed_publish_keeps_the_source(h).await;
}
