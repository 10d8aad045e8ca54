//! The IMAP receive location: one session on one folder; each pass takes
//! up to `max_per_poll` mails that are not done yet, one at a time, reads
//! each in pieces, publishes it, then deletes, moves or flags it. Between
//! passes it waits in IDLE where the server offers it (new mail starts the
//! next pass at once), else it logs out and polls.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::session::{Connect, ImapError, Security, Selected, Session, Waited};
use crate::support::mailparts::{self, BodyPart, Choice, Parts, Received};
use crate::support::remote::RemoteUrl;
use crate::support::secret::Secret;
use crate::support::tls::StartTls;
use crate::{AdapterError, Receipt, ReceiveContext, Source};

/// `adapter = { type = "imap", url = "imaps://user@host/INBOX", ... }`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImapReceiveConfig {
    /// `imap://user@host:port/folder` (143; upgraded with `STARTTLS` as
    /// `starttls` says) or `imaps://user@host:port/folder` (993; TLS from
    /// the first byte). The folder defaults to `INBOX`.
    pub url: String,
    #[serde(default)]
    pub password: Option<Secret>,
    #[serde(default)]
    pub password_env: Option<String>,
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// `imap://` only: `required` (default), `opportunistic` or `off`.
    #[serde(default)]
    pub starttls: StartTls,
    /// A PEM file of certificate authorities trusted besides the built-in roots.
    #[serde(default)]
    pub tls_ca: Option<PathBuf>,
    /// What becomes of a mail once its message is published: `delete`
    /// (default), `move` (to `move_to`) or `flag` (add `flag`; mails with
    /// it are not taken again).
    #[serde(default = "default_after")]
    pub after: After,
    /// The folder `after = "move"` moves to.
    #[serde(default)]
    pub move_to: Option<String>,
    /// The flag `after = "flag"` adds: `\Seen`, `\Flagged` or a keyword.
    #[serde(default = "default_flag")]
    pub flag: String,
    /// Which part is the message's body: `text` (default) or `attachment`.
    #[serde(default = "mailparts::defaults::body")]
    pub body: BodyPart,
    /// `all` (default): the mail's other parts follow the body in the
    /// message; `body`: they are dropped.
    #[serde(default = "mailparts::defaults::parts")]
    pub parts: Parts,
    /// Wait in IDLE for new mail where the server offers it (default);
    /// else poll every `poll_interval`.
    #[serde(default = "default_idle")]
    pub idle: bool,
    /// Between polls without IDLE; also how long one IDLE lasts at most
    /// before the folder is searched again (at least every 25 minutes).
    #[serde(default = "mailparts::defaults::poll_interval", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Mails taken in one pass, at most.
    #[serde(default = "mailparts::defaults::max_per_poll")]
    pub max_per_poll: usize,
    #[serde(
        default = "crate::support::remote::defaults::connect_timeout",
        with = "humantime_serde"
    )]
    pub connect_timeout: Duration,
    /// Each command's whole answer (a piece of a mail included).
    #[serde(default = "crate::support::remote::defaults::timeout", with = "humantime_serde")]
    pub timeout: Duration,
}

/// What becomes of a mail once published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum After {
    Delete,
    Move,
    Flag,
}

fn default_after() -> After {
    After::Delete
}
fn default_flag() -> String {
    "$SluiceReceived".into()
}
fn default_idle() -> bool {
    true
}

/// The properties an IMAP receive location promotes besides those of every
/// location: the mail's UID and its folder's UIDVALIDITY (together, the
/// mail), where it was taken from (`imap.url`, `imaps://host:port/folder`;
/// `imap.mailbox`, `user@host:port/folder`, which crash recovery matches),
/// and the mail's headers.
pub const PROMOTES: &[(&str, &str)] = mailparts::mail_promotes!(
    ("imap", "uid"),
    ("imap", "uid_validity"),
    ("imap", "url"),
    ("imap", "mailbox")
);

/// Bytes of a mail fetched at a time.
const PIECE: u32 = 256 * 1024;

/// How much longer than its `RFC822.SIZE` a mail may come out, besides a
/// 32nd of its size (as POP3's `LIST`).
const SLACK: u64 = 64 * 1024;

/// The longest one IDLE lasts (RFC 2177: servers may drop a client idle
/// for 30 minutes).
const MAX_IDLE: Duration = Duration::from_secs(25 * 60);

impl ImapReceiveConfig {
    pub fn resolve_paths(&mut self, base: &Path) {
        for p in [&mut self.password_file, &mut self.tls_ca].into_iter().flatten() {
            crate::support::names::resolve_in_place(base, p);
        }
    }

    fn url(&self) -> Result<RemoteUrl, AdapterError> {
        let url = RemoteUrl::parse(
            "url",
            &self.url,
            &[("imap", 143), ("imaps", 993)],
            "imap:// or imaps://",
        )?;
        if url.user.is_empty() {
            return Err(AdapterError::Config(format!(
                "url {}: name the mailbox's user (imap://user@host/INBOX)",
                crate::support::secret::redact_url(&self.url)
            )));
        }
        Ok(url)
    }

    /// The folder the location reads (`INBOX` when the URL names none;
    /// the name `INBOX` in any case is the INBOX, RFC 3501 5.1).
    fn folder(url: &RemoteUrl) -> String {
        inbox_spelled(url.folder.trim_start_matches('/'))
    }

    /// The folder, as a claim and the `imap.url` property name it.
    pub fn shown(&self) -> String {
        match self.url() {
            Ok(u) => format!("{}://{}:{}/{}", u.scheme, u.host, u.port, Self::folder(&u)),
            Err(_) => crate::support::secret::redact_url(&self.url),
        }
    }

    /// The mailbox folder as a claim names it: `user@host:port/folder`.
    pub fn mailbox(&self) -> String {
        match self.url() {
            Ok(u) => format!(
                "{}@{}:{}/{}",
                u.user,
                u.host.to_ascii_lowercase(),
                u.port,
                Self::folder(&u)
            ),
            Err(_) => crate::support::secret::redact_url(&self.url),
        }
    }

    /// The search for mails not done yet.
    fn criteria(&self) -> Result<String, AdapterError> {
        Ok(match self.after {
            After::Delete | After::Move => "UNDELETED".into(),
            After::Flag => match self.flag.to_ascii_lowercase().as_str() {
                "\\seen" => "UNDELETED UNSEEN".into(),
                "\\flagged" => "UNDELETED UNFLAGGED".into(),
                _ if self.flag.starts_with('\\') => {
                    return Err(AdapterError::Config(format!(
                        "flag {:?}: a system flag other than \\Seen or \\Flagged cannot mark mails as done; use a \
                         keyword such as $SluiceReceived",
                        self.flag
                    )));
                }
                _ => {
                    let atom = !self.flag.is_empty()
                        && self.flag.len() <= 64
                        && self
                            .flag
                            .bytes()
                            .all(|b| b.is_ascii_graphic() && !b"(){%*\"\\]".contains(&b));
                    if !atom {
                        return Err(AdapterError::Config(format!(
                            "flag {:?}: a keyword is letters, digits and $-_. (at most 64), e.g. $SluiceReceived",
                            self.flag
                        )));
                    }
                    format!("UNDELETED UNKEYWORD {}", self.flag)
                }
            },
        })
    }

    pub fn build(&self) -> Result<ImapReceiver, AdapterError> {
        let url = self.url()?;
        let password = Secret::from_config("password", &self.password, &self.password_env, &self.password_file)?;
        if self.max_per_poll == 0 {
            return Err(AdapterError::Config("max_per_poll must be at least 1".into()));
        }
        if self.poll_interval.is_zero() {
            return Err(AdapterError::Config("poll_interval must be more than 0".into()));
        }
        let criteria = self.criteria()?;
        let folder = Self::folder(&url);
        let after = match (self.after, &self.move_to) {
            (After::Move, Some(to)) if !to.trim().is_empty() && inbox_spelled(to) != folder => Action::Move(to.clone()),
            (After::Move, _) => {
                return Err(AdapterError::Config(
                    "after = \"move\" needs move_to, a folder other than the one read".into(),
                ));
            }
            (_, Some(_)) => return Err(AdapterError::Config("move_to is for after = \"move\"".into())),
            (After::Delete, None) => Action::Delete,
            (After::Flag, None) => Action::Flag(self.flag.clone()),
        };
        let security = match (url.scheme, self.starttls) {
            ("imaps", _) => Security::Implicit,
            (_, StartTls::Required) => Security::StartTlsRequired,
            (_, StartTls::Opportunistic) => Security::StartTlsOpportunistic,
            (_, StartTls::Off) => Security::Off,
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
        };
        Ok(ImapReceiver {
            connect,
            shown: self.shown(),
            mailbox: self.mailbox(),
            folder,
            criteria,
            after,
            choice: Choice {
                body: self.body,
                others: self.parts == Parts::All,
            },
            idle: self.idle,
            poll_interval: self.poll_interval,
            max_per_poll: self.max_per_poll,
            pending: HashMap::new(),
            refused: HashSet::new(),
            recovered: Mutex::new(HashMap::new()),
            failures: 0,
        })
    }
}

/// `name`, with `INBOX` in any case (or no name) spelled `INBOX`.
fn inbox_spelled(name: &str) -> String {
    if name.is_empty() || name.eq_ignore_ascii_case("INBOX") {
        "INBOX".into()
    } else {
        name.into()
    }
}

/// What is done to a mail once published.
#[derive(Debug, Clone)]
enum Action {
    Delete,
    Move(String),
    Flag(String),
}

/// A mail of the folder: (UIDVALIDITY, UID).
type MailKey = (u32, u32);

/// A running IMAP location.
pub struct ImapReceiver {
    pub(super) connect: Connect,
    shown: String,
    /// `user@host:port/folder` ([`ImapReceiveConfig::mailbox`]).
    mailbox: String,
    folder: String,
    criteria: String,
    after: Action,
    choice: Choice,
    idle: bool,
    poll_interval: Duration,
    max_per_poll: usize,
    /// Mails published whose action (delete, move, flag) is not done yet.
    pending: HashMap<MailKey, Receipt>,
    /// Mails refused (broken MIME, rejected by the pipeline): left where
    /// they are and skipped until the node restarts.
    refused: HashSet<MailKey>,
    /// What [`Source::recover`] found held, for `run`.
    recovered: Mutex<HashMap<MailKey, Receipt>>,
    /// Sessions failed in a row (how long to wait before the next).
    failures: u32,
}

/// Why a session ended.
enum Stop {
    Session(ImapError),
    /// The box failed: the session may go on after a pause.
    Box(String),
}

impl From<ImapError> for Stop {
    fn from(e: ImapError) -> Self {
        Stop::Session(e)
    }
}

fn promoted_u32(ctx: &sluice_model::Context, name: &str) -> Option<u32> {
    match ctx.promoted("imap", name)? {
        sluice_model::Value::Int(n) => u32::try_from(*n).ok(),
        other => other.to_text().parse().ok(),
    }
}

#[async_trait]
impl Source for ImapReceiver {
    /// What a stop left published but not deleted, moved or flagged: the
    /// location's held messages, by the UID they were promoted with. The
    /// first session finishes them; nothing is asked of the server here.
    async fn recover(&self, cx: &ReceiveContext) {
        // Only this folder's: a mail held from another server or folder
        // (the URL changed) has a UID that means nothing here.
        let here = sluice_model::Value::from(self.mailbox.as_str());
        let held = mailparts::held_mails(cx, mailparts::MAX_HELD, |ctx| {
            if ctx.promoted("imap", "mailbox") != Some(&here) {
                return None;
            }
            Some((promoted_u32(ctx, "uid_validity")?, promoted_u32(ctx, "uid")?))
        })
        .await;
        *self.recovered.lock().unwrap_or_else(PoisonError::into_inner) = held;
    }

    async fn run(mut self: Box<Self>, cx: ReceiveContext) -> Result<(), AdapterError> {
        let recovered = std::mem::take(&mut *self.recovered.lock().unwrap_or_else(PoisonError::into_inner));
        self.pending.extend(recovered);
        loop {
            let ended = tokio::select! {
                _ = cx.shutdown.cancelled() => return Ok(()),
                ended = self.session(&cx) => ended,
            };
            let wait = match ended {
                Ok(()) => self.poll_interval,
                Err(e) => {
                    self.failures = self.failures.saturating_add(1);
                    match &e {
                        Stop::Session(ImapError::Login(m)) => tracing::error!(receive_location = %cx.location,
                            server = %self.shown, error = %m, "cannot log in to the IMAP server; trying again later"),
                        // Not the network: a setting or the server needs attention.
                        Stop::Session(e) if !e.is_transient() => tracing::error!(receive_location = %cx.location,
                            server = %self.shown, error = %e, "the IMAP server refused; trying again later"),
                        Stop::Session(e) => tracing::warn!(receive_location = %cx.location,
                            server = %self.shown, error = %e, "the IMAP session failed; trying again later"),
                        Stop::Box(m) => tracing::warn!(receive_location = %cx.location, error = %m,
                            "could not publish a mail; it stays in the folder and is tried again later"),
                    }
                    mailparts::backoff(self.poll_interval, self.failures)
                }
            };
            tokio::select! {
                _ = cx.shutdown.cancelled() => return Ok(()),
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }
}

impl ImapReceiver {
    /// One session: passes over the folder, with IDLE between them where
    /// the server offers it; without it, one pass. Shutdown drops it
    /// between any two awaits.
    async fn session(&mut self, cx: &ReceiveContext) -> Result<(), Stop> {
        let mut session = Session::open(&self.connect).await?;
        let selected = session.select(&self.folder).await?;
        if let Action::Flag(flag) = &self.after
            && !session.keeps_flag(flag)
        {
            // Kept for the session only, the flag would not mark the mail
            // done: every session would take every mail again.
            return Err(Stop::Session(ImapError::Protocol(format!(
                "{} does not keep the flag {flag} on its mails (it is not among the folder's PERMANENTFLAGS); \
                 use after = \"delete\" or \"move\", or a flag it keeps",
                self.shown
            ))));
        }
        tracing::debug!(receive_location = %cx.location, server = %self.shown, tls = session.is_encrypted(),
            idle = session.can_idle(), moves = session.can_move(), uidplus = session.has_uidplus(),
            uid_validity = selected.uid_validity, mails = selected.exists, "IMAP session open");
        loop {
            let more = self.pass(cx, &mut session, selected).await?;
            // A pass went through: the next failure waits from the start
            // again (a session in IDLE may last hours and end in an
            // ordinary disconnect).
            self.failures = 0;
            if more {
                continue;
            }
            if !(self.idle && session.can_idle()) {
                session.logout().await;
                return Ok(());
            }
            match session.idle(self.poll_interval.min(MAX_IDLE)).await? {
                Waited::Changed | Waited::TimedOut => {}
            }
        }
    }

    /// Finish what is pending, then take up to `max_per_poll` new mails;
    /// `true` when more are waiting.
    async fn pass(&mut self, cx: &ReceiveContext, session: &mut Session, selected: Selected) -> Result<bool, Stop> {
        let validity = selected.uid_validity;
        let pending: Vec<MailKey> = self.pending.keys().copied().collect();
        for key in pending {
            if key.0 == validity {
                if session.size(key.1).await?.is_some() {
                    self.act(session, key.1).await?;
                }
            } else {
                tracing::warn!(receive_location = %cx.location, server = %self.shown, uid = key.1,
                    "the folder was recreated (UIDVALIDITY changed) since a mail was published; it is left as it is");
            }
            self.settle(cx, key).await;
        }
        let wanted = self.max_per_poll.saturating_add(self.refused.len()).saturating_add(1);
        let uids = session.search(&self.criteria, wanted).await?;
        let mut taken = 0;
        for uid in uids {
            let key = (validity, uid);
            if self.refused.contains(&key) {
                continue;
            }
            if taken >= self.max_per_poll {
                return Ok(true);
            }
            if cx.shutdown.is_cancelled() {
                return Ok(false);
            }
            taken += 1;
            if let Some(receipt) = self.take(cx, session, key).await? {
                self.pending.insert(key, receipt);
                self.act(session, uid).await?;
                self.settle(cx, key).await;
            }
        }
        Ok(false)
    }

    /// Delete, move or flag mail `uid`.
    async fn act(&self, session: &mut Session, uid: u32) -> Result<(), ImapError> {
        match &self.after {
            Action::Delete => session.delete(uid).await,
            Action::Move(to) => session.move_to(uid, to).await,
            Action::Flag(flag) => session.add_flag(uid, flag).await,
        }
    }

    /// The mail is done at the server: release its message.
    async fn settle(&mut self, cx: &ReceiveContext, key: MailKey) {
        if let Some(receipt) = self.pending.remove(&key)
            && let Err(e) = cx.publisher.settled(&receipt).await
        {
            tracing::warn!(receive_location = %cx.location, uid = key.1, error = %e,
                "releasing a received mail's message (it stays held until the next start)");
        }
    }

    /// Read mail `key` in pieces and publish it (or, refused by its
    /// content, store it as received, suspended): its receipt, to act on it
    /// by. `Ok(None)` when it is gone, or cannot be read as received (then
    /// it is left where it is), or the node stops.
    async fn take(
        &mut self,
        cx: &ReceiveContext,
        session: &mut Session,
        key: MailKey,
    ) -> Result<Option<Receipt>, Stop> {
        let (validity, uid) = key;
        let Some(size) = session.size(uid).await? else {
            return Ok(None);
        };
        let mail = format!("mail UID {uid} of {}", self.shown);
        if size > u64::from(u32::MAX) {
            let why = format!("{size} bytes: past what a partial fetch can read (4 GiB)");
            mailparts::refuse(&mut self.refused, key, cx, &mail, &why);
            return Ok(None);
        }
        let Some(admitted) = mailparts::admit(cx).await else {
            return Ok(None);
        };
        let promote = [
            ("imap", "uid", uid.to_string()),
            ("imap", "uid_validity", validity.to_string()),
            ("imap", "url", self.shown.clone()),
            ("imap", "mailbox", self.mailbox.clone()),
        ];
        let received = mailparts::receive(pieces(session, uid, size), self.choice, cx, &promote, &admitted).await;
        let lost = |why: String| Stop::Session(ImapError::Connect(format!("reading {mail}: {why}")));
        let refused = match received {
            Received::Published(receipt) => return Ok(Some(receipt)),
            Received::Unreadable(why) => {
                mailparts::refuse(&mut self.refused, key, cx, &mail, &why);
                return Ok(None);
            }
            Received::Broken(why) => return Err(lost(why)),
            Received::Failed(why) => return Err(Stop::Box(format!("{mail}: {why}"))),
            Received::Refused(why) => why,
        };
        // Refused by its content: read again and stored as received,
        // suspended, charged afresh (the first read's bytes are no longer
        // in flight).
        drop(admitted);
        let Some(admitted) = mailparts::admit(cx).await else {
            return Ok(None);
        };
        let stored = mailparts::suspend_raw(pieces(session, uid, size), cx, &promote, &admitted, &refused).await;
        match stored {
            Received::Published(receipt) => {
                tracing::warn!(receive_location = %cx.location, mail = %mail, error = %refused,
                    "the mail was refused; it is stored as received, suspended, and taken from the folder");
                Ok(Some(receipt))
            }
            Received::Unreadable(why) => {
                // Found only on the second read (the splitter stopped early).
                mailparts::refuse(&mut self.refused, key, cx, &mail, &why);
                Ok(None)
            }
            Received::Broken(why) => Err(lost(why)),
            Received::Failed(why) => Err(Stop::Box(format!("{mail}: {why}"))),
            Received::Refused(e) => Err(Stop::Box(format!("{mail}: {e}"))),
        }
    }
}

/// Mail `uid` of `size` bytes (its `RFC822.SIZE`), read by partial fetches
/// of [`PIECE`] bytes, as a stream. A piece shorter than asked is the
/// mail's last; more than the size and a 32nd (plus [`SLACK`]), or a mail
/// past what a partial fetch can reach (4 GiB), is an error of kind
/// `InvalidData` (the mail cannot be read as it is); any other error is
/// the session's.
fn pieces(
    session: &mut Session,
    uid: u32,
    size: u64,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + '_ {
    let limit = size.saturating_add(size / 32).saturating_add(SLACK);
    let faulty = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
    futures::stream::unfold((session, Some(0u64)), move |(session, at)| async move {
        let offset = at?;
        let next = match session.fetch_piece(uid, offset, PIECE).await {
            Ok(Some(piece)) if piece.is_empty() && offset >= size => return None,
            Ok(Some(piece)) => {
                let end = offset + piece.len() as u64;
                let last = piece.len() < PIECE as usize;
                // Not refused when shorter: some servers (Exchange) say an
                // estimated size, and the short piece is the mail's end.
                if end > limit {
                    Err(faulty(format!(
                        "the mail is longer than the {size} bytes its RFC822.SIZE said"
                    )))
                } else {
                    return Some((Ok(piece), (session, (!last).then_some(end))));
                }
            }
            Ok(None) => Err(std::io::Error::other("the mail vanished while it was read")),
            Err(ImapError::Invalid(why)) => Err(faulty(why)),
            Err(e) => Err(std::io::Error::other(e.to_string())),
        };
        Some((next, (session, None)))
    })
}
