//! The POP3 receive location: each poll, one session takes up to
//! `max_per_poll` mails, one at a time, publishing each and marking it for
//! deletion (`DELE`); the server deletes them at the session's `QUIT`.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::client::{Connect, Pop3Error, Retr, Security, Session};
use crate::support::mailparts::{self, BodyPart, Choice, Parts, Received};
use crate::support::remote::RemoteUrl;
use crate::support::secret::Secret;
use crate::support::tls::StartTls;
use crate::{AdapterError, Receipt, ReceiveContext, Source};

/// `adapter = { type = "pop3", url = "pop3s://user@host", ... }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pop3ReceiveConfig {
    /// `pop3://user@host:port` (110; upgraded with `STLS` as `starttls`
    /// says) or `pop3s://user@host:port` (995; TLS from the first byte).
    pub url: String,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// `pop3://` only: `required` (default), `opportunistic` or `off`.
    #[serde(default)]
    pub starttls: StartTls,
    /// A PEM file of certificate authorities trusted besides the built-in roots.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// Which part is the message's body: `text` (default) or `attachment`.
    #[serde(default = "mailparts::defaults::body")]
    pub body: BodyPart,
    /// `all` (default): the mail's other parts follow the body in the
    /// message; `body`: they are dropped.
    #[serde(default = "mailparts::defaults::parts")]
    pub parts: Parts,
    #[serde(default = "mailparts::defaults::poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Mails taken in one session, at most; the next session starts at once
    /// when more are waiting.
    #[serde(default = "mailparts::defaults::max_per_poll")]
    pub max_per_poll: usize,
    /// Mails of one listing (`UIDL`) looked at, at most.
    #[serde(default = "crate::support::fetch::defaults::max_listing")]
    pub max_listing: usize,
    #[serde(
        default = "crate::support::remote::defaults::connect_timeout",
        with = "humantime_serde"
    )]
    pub connect_timeout: Duration,
    /// Each answer, and each read of a mail (an idle limit).
    #[serde(default = "crate::support::remote::defaults::timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// The properties a POP3 receive location promotes besides those of every
/// location: the mail's unique id in the mailbox (`UIDL`), where it was
/// taken from (`pop3.url`, the server; `pop3.mailbox`, `user@host:port`,
/// which crash recovery matches), and the mail's headers.
pub const PROMOTES: &[(&str, &str)] = mailparts::mail_promotes!(("pop3", "uidl"), ("pop3", "url"), ("pop3", "mailbox"));

impl Pop3ReceiveConfig {
    pub fn resolve_paths(&mut self, base: &Path) {
        for p in [&mut self.password_file, &mut self.tls_ca].into_iter().flatten() {
            crate::support::names::resolve_in_place(base, p);
        }
    }

    fn url(&self) -> Result<RemoteUrl, AdapterError> {
        let url = RemoteUrl::parse(
            "url",
            &self.url,
            &[("pop3", 110), ("pop3s", 995)],
            "pop3:// or pop3s://",
        )?;
        if url.user.is_empty() {
            return Err(AdapterError::Config(format!(
                "url {}: name the mailbox's user (pop3://user@host)",
                crate::support::secret::redact_url(&self.url)
            )));
        }
        if !url.folder.is_empty() {
            return Err(AdapterError::Config(format!(
                "url {}: a POP3 mailbox has no folders; remove the path",
                crate::support::secret::redact_url(&self.url)
            )));
        }
        Ok(url)
    }

    /// The mailbox, as a claim names it: `user@host:port`.
    pub fn mailbox(&self) -> String {
        match self.url() {
            Ok(u) => format!("{}@{}:{}", u.user, u.host.to_ascii_lowercase(), u.port),
            Err(_) => crate::support::secret::redact_url(&self.url),
        }
    }

    /// The server as logs and the `pop3.url` property show it (no user).
    pub fn shown(&self) -> String {
        match self.url() {
            Ok(u) => format!("{}://{}:{}", u.scheme, u.host, u.port),
            Err(_) => crate::support::secret::redact_url(&self.url),
        }
    }

    pub fn build(&self) -> Result<Pop3Receiver, AdapterError> {
        let url = self.url()?;
        let password = Secret::from_config("password", &self.password, &self.password_env, &self.password_file)?;
        if self.max_per_poll == 0 || self.max_listing == 0 {
            return Err(AdapterError::Config(
                "max_per_poll and max_listing must be at least 1".into(),
            ));
        }
        if self.poll_interval.is_zero() {
            return Err(AdapterError::Config("poll_interval must be more than 0".into()));
        }
        let security = if url.scheme == "pop3s" {
            Security::Implicit
        } else {
            Security::Plain(self.starttls)
        };
        let connect = Connect {
            host: url.host.clone(),
            port: url.port,
            security,
            tls: crate::support::tls::client_config(self.tls_ca.as_deref())?,
            user: url.user.clone(),
            password,
            connect_timeout: self.connect_timeout,
            timeout: self.timeout,
            shown: self.shown(),
        };
        Ok(Pop3Receiver {
            connect: Arc::new(connect),
            mailbox: self.mailbox(),
            choice: Choice {
                body: self.body,
                others: self.parts == Parts::All,
            },
            poll_interval: self.poll_interval,
            max_per_poll: self.max_per_poll,
            max_listing: self.max_listing,
            pending: HashMap::new(),
            refused: HashSet::new(),
            recovered: Mutex::new(HashMap::new()),
        })
    }
}

/// A running POP3 location.
pub struct Pop3Receiver {
    pub(super) connect: Arc<Connect>,
    /// `user@host:port` ([`Pop3ReceiveConfig::mailbox`]).
    mailbox: String,
    choice: Choice,
    poll_interval: Duration,
    max_per_poll: usize,
    max_listing: usize,
    /// Mails published and not yet deleted (by UIDL): deleted at the next
    /// session without being read again, then settled.
    pending: HashMap<String, Receipt>,
    /// Mails refused (broken MIME, rejected by the pipeline): left in the
    /// mailbox and skipped until the node restarts.
    refused: HashSet<String>,
    /// What [`Source::recover`] found held, for `run` to delete.
    recovered: Mutex<HashMap<String, Receipt>>,
}

/// What a session came to.
struct Polled {
    /// Mails are waiting beyond this session's share.
    more: bool,
}

/// Why a session ended early.
enum Stop {
    /// The session cannot go on (the connection, the server).
    Session(Pop3Error),
    /// The box failed: stop taking mails for this poll.
    Box(String),
}

impl From<Pop3Error> for Stop {
    fn from(e: Pop3Error) -> Self {
        Stop::Session(e)
    }
}

#[async_trait]
impl Source for Pop3Receiver {
    /// What a stop left published but not deleted: the location's held
    /// messages, by the UIDL they were promoted with. Nothing is asked of
    /// the server here (it may be unreachable): the first session deletes
    /// them.
    async fn recover(&self, cx: &ReceiveContext) {
        // Only this mailbox's: a UIDL held from another (the URL changed)
        // means nothing here.
        let here = sluice_model::Value::from(self.mailbox.as_str());
        let held = mailparts::held_mails(cx, mailparts::MAX_HELD, |ctx| {
            match (ctx.promoted("pop3", "mailbox"), ctx.promoted("pop3", "uidl")) {
                (Some(url), Some(sluice_model::Value::String(uid))) if *url == here => Some(uid.clone()),
                _ => None,
            }
        })
        .await;
        *self.recovered.lock().unwrap_or_else(PoisonError::into_inner) = held;
    }

    async fn run(mut self: Box<Self>, cx: ReceiveContext) -> Result<(), AdapterError> {
        let recovered = std::mem::take(&mut *self.recovered.lock().unwrap_or_else(PoisonError::into_inner));
        self.pending.extend(recovered);
        let mut failures = 0u32;
        loop {
            if cx.shutdown.is_cancelled() {
                return Ok(());
            }
            let wait = match self.poll(&cx).await {
                Ok(Polled { more: true }) => {
                    failures = 0;
                    Duration::ZERO
                }
                Ok(Polled { more: false }) => {
                    failures = 0;
                    self.poll_interval
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    match &e {
                        Stop::Session(Pop3Error::Login(m)) => tracing::error!(receive_location = %cx.location,
                            server = %self.connect.shown, error = %m, "cannot log in to the POP3 server; trying again later"),
                        Stop::Session(e) => tracing::warn!(receive_location = %cx.location,
                            server = %self.connect.shown, error = %e, "the POP3 session failed; trying again later"),
                        Stop::Box(m) => tracing::warn!(receive_location = %cx.location, error = %m,
                            "could not publish a mail; it stays in the mailbox and is tried again later"),
                    }
                    mailparts::backoff(self.poll_interval, failures)
                }
            };
            tokio::select! {
                _ = cx.shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

impl Pop3Receiver {
    /// One session: delete what is pending, take new mails, `QUIT`.
    async fn poll(&mut self, cx: &ReceiveContext) -> Result<Polled, Stop> {
        let mut session = Session::open(&self.connect).await?;
        let (listing, total) = session.uidl(self.max_listing).await?;
        let complete = total <= listing.len();
        // Published before, not yet deleted: delete now.
        let mut deleted = Vec::new();
        let listed: HashSet<&str> = listing.iter().map(|(_, uid)| uid.as_str()).collect();
        for (n, uid) in &listing {
            if self.pending.contains_key(uid) {
                session.delete(*n).await?;
                deleted.push(uid.clone());
            }
        }
        // Gone from the mailbox already (an earlier QUIT whose answer was lost).
        let gone: Vec<String> = if complete {
            self.pending
                .keys()
                .filter(|u| !listed.contains(u.as_str()))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        let mut taken = 0;
        let mut more = false;
        let mut stopped = None;
        for (n, uid) in &listing {
            if self.pending.contains_key(uid) || self.refused.contains(uid) {
                continue;
            }
            if cx.shutdown.is_cancelled() {
                break;
            }
            if taken >= self.max_per_poll {
                more = true;
                break;
            }
            taken += 1;
            match self.take(cx, &mut session, *n, uid).await {
                Ok(Some(receipt)) => {
                    // Pending first: a DELE that fails leaves it for the next session.
                    self.pending.insert(uid.clone(), receipt);
                    session.delete(*n).await?;
                    deleted.push(uid.clone());
                }
                Ok(None) => {}
                Err(Stop::Box(m)) => {
                    stopped = Some(Stop::Box(m));
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        session.quit().await?;
        // The server deleted them: release their messages.
        for uid in deleted.iter().chain(&gone) {
            if let Some(receipt) = self.pending.remove(uid)
                && let Err(e) = cx.publisher.settled(&receipt).await
            {
                tracing::warn!(receive_location = %cx.location, uidl = %uid, error = %e,
                    "releasing a received mail's message (it stays held until the next start)");
            }
        }
        match stopped {
            Some(stop) => Err(stop),
            None => Ok(Polled { more }),
        }
    }

    /// Read mail `n` and publish it (or, refused by its content, store it as
    /// received, suspended): its receipt, to delete it by. `Ok(None)` when
    /// it is gone, or cannot be read as received (then it is left where it
    /// is), or the node stops.
    async fn take(
        &mut self,
        cx: &ReceiveContext,
        session: &mut Session,
        n: u32,
        uid: &str,
    ) -> Result<Option<Receipt>, Stop> {
        let Some(size) = session.size(n).await? else {
            return Ok(None);
        };
        let Some(admitted) = mailparts::admit(cx).await else {
            return Ok(None);
        };
        let Some(mut retr) = session.retr(n, size).await? else {
            return Ok(None);
        };
        let promote = [
            ("pop3", "uidl", uid.to_string()),
            ("pop3", "url", self.connect.shown.clone()),
            ("pop3", "mailbox", self.mailbox.clone()),
        ];
        let received = mailparts::receive(chunks(&mut retr), self.choice, cx, &promote, &admitted).await;
        let mail = format!("mail {n} (UIDL {uid}) of {}", self.connect.shown);
        let lost = |why: String| Stop::Session(Pop3Error::Connect(format!("reading {mail}: {why}")));
        let refused = match received {
            Received::Published(receipt) => {
                // Read to its end already: the publish needs the whole mail.
                self.drain_or_refuse(cx, &mut retr, uid, &mail).await?;
                return Ok(Some(receipt));
            }
            Received::Broken(why) => return Err(lost(why)),
            Received::Unreadable(why) => {
                mailparts::refuse(&mut self.refused, uid.to_string(), cx, &mail, &why);
                // Not read to its end: the session is out of step.
                return Err(lost(why));
            }
            Received::Failed(why) => {
                // The session goes on only if the mail's end is read.
                self.drain_or_refuse(cx, &mut retr, uid, &mail).await?;
                return Err(Stop::Box(format!("{mail}: {why}")));
            }
            Received::Refused(why) => why,
        };
        // Refused by its content: read again and stored as received, suspended.
        self.drain_or_refuse(cx, &mut retr, uid, &mail).await?;
        // Charged afresh: the first read's bytes are no longer in flight.
        drop(admitted);
        let Some(admitted) = mailparts::admit(cx).await else {
            return Ok(None);
        };
        let Some(mut again) = session.retr(n, size).await? else {
            return Ok(None);
        };
        let stored = mailparts::suspend_raw(chunks(&mut again), cx, &promote, &admitted, &refused).await;
        self.drain_or_refuse(cx, &mut again, uid, &mail).await?;
        match stored {
            Received::Published(receipt) => {
                tracing::warn!(receive_location = %cx.location, mail = %mail, error = %refused,
                    "the mail was refused; it is stored as received, suspended, and deleted from the mailbox");
                Ok(Some(receipt))
            }
            Received::Unreadable(why) => {
                mailparts::refuse(&mut self.refused, uid.to_string(), cx, &mail, &why);
                Err(lost(why))
            }
            Received::Broken(why) => Err(lost(why)),
            Received::Failed(why) => Err(Stop::Box(format!("{mail}: {why}"))),
            Received::Refused(e) => Err(Stop::Box(format!("{mail}: {e}"))),
        }
    }

    /// Read the rest of mail `uid`, so that the session stays in step. One
    /// longer than `LIST` said (found only here when the splitter stopped
    /// early) is remembered as unreadable, so that it does not stop every
    /// later session at the same place; any error ends this session.
    async fn drain_or_refuse(
        &mut self,
        cx: &ReceiveContext,
        retr: &mut Retr<'_>,
        uid: &str,
        mail: &str,
    ) -> Result<(), Stop> {
        let Err(e) = drain(retr).await else {
            return Ok(());
        };
        if e.kind() == std::io::ErrorKind::InvalidData {
            mailparts::refuse(&mut self.refused, uid.to_string(), cx, mail, &e.to_string());
        }
        Err(Stop::Session(Pop3Error::Connect(format!("reading {mail}: {e}"))))
    }
}

/// The pieces of a mail being read, as a stream.
fn chunks<'a, 's>(retr: &'a mut Retr<'s>) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'a
where
    's: 'a,
{
    futures::stream::unfold(retr, |r| async move {
        match r.chunk().await {
            Ok(Some(piece)) => Some((Ok(piece), r)),
            Ok(None) => None,
            Err(e) => Some((Err(e), r)),
        }
    })
}

/// Read the rest of a mail, to its end.
async fn drain(retr: &mut Retr<'_>) -> std::io::Result<()> {
    while retr.chunk().await?.is_some() {}
    Ok(())
}
