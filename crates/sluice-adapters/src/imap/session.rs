//! An IMAP client session, for the IMAP receive location: connect (TLS as
//! [`Security`] says), log in, select a folder, find mail with SEARCH, read
//! a mail in pieces of a bounded size, delete, move or flag it, and IDLE
//! until new mail comes.
//!
//! The dialogue is async-imap's: it writes the commands and its parser
//! (imap-proto) reads the answers. The commands after the login are sent
//! with its `run_command` and their answers read here with its
//! `read_response`, so that every wait has a limit, errors carry the
//! server's own words, and what the server sends is kept no longer than
//! one answer needs.
//!
//! Memory: async-imap reads each answer into one buffer, and grows it at
//! once, zero-filled, to the size a literal (`{n}`) announces, before the
//! bytes come; its only cap is 512 MiB per answer (`Buffer::MAX_CAPACITY`
//! in its `imap_stream.rs`). So every byte the server sends passes a
//! [`Scanner`] first, which ends the session on a literal over the
//! command's limit ([`SMALL_LITERAL`], or the piece [`Session::fetch_piece`]
//! asks for), on a literal where imap-proto might not read one as a literal
//! (where the two could disagree about where it ends), and on an answer of
//! more than [`MAX_LINE`] bytes outside its literals. One answer is then at
//! most [`MAX_LINE`] plus that limit.
//!
//! The password is never sent in clear unless `Security::Off` was chosen:
//! without TLS the session refuses to log in (as the SMTP port does).

use std::fmt::Display;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use async_imap::imap_proto::{AttributeValue, MailboxDatum, Outcome, RequestId, Response, ResponseCode, Status};
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls;

use crate::support::secret::Secret;

/// The most bytes of one answer outside its literals (a `SEARCH` of
/// [`SEARCH_WINDOW_MAX`] UIDs is about a sixth of it).
pub(crate) const MAX_LINE: usize = 1024 * 1024;

/// The most literal bytes one answer may carry, except the piece of mail
/// [`Session::fetch_piece`] asks for (folder names, IDs).
pub(crate) const SMALL_LITERAL: u32 = 64 * 1024;

/// The largest piece [`Session::fetch_piece`] asks for.
pub(crate) const MAX_PIECE: u32 = 16 * 1024 * 1024;

/// How many messages the first `UID SEARCH` of [`Session::search`] looks
/// at (at least; `max` if more); each next one twice as many, up to
/// [`SEARCH_WINDOW_MAX`].
pub(crate) const SEARCH_WINDOW_FIRST: u32 = 256;

/// The most messages one `UID SEARCH` of [`Session::search`] looks at,
/// hence the most UIDs its answer may hold.
pub(crate) const SEARCH_WINDOW_MAX: u32 = 16 * 1024;

/// The most bytes of the server's words in an error.
pub(crate) const SAID_MAX: usize = 512;

/// How the connection is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Security {
    /// TLS from the first byte (`imaps://`, port 993).
    Implicit,
    /// Upgrade with `STARTTLS`; refuse a server that does not offer it.
    StartTlsRequired,
    /// Upgrade with `STARTTLS` where the server offers it. Where it does
    /// not, the session still refuses to log in (the password never goes
    /// in clear), with an error that says so.
    StartTlsOpportunistic,
    /// Never upgrade: everything in clear, the password too.
    Off,
}

/// Where and how to connect and log in.
#[derive(Debug, Clone)]
pub(crate) struct Connect {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// The TLS client settings (`support::tls::client_config`); the
    /// certificate is checked against `host` (a name or an IP address).
    pub tls: Arc<rustls::ClientConfig>,
    pub user: String,
    pub password: Secret,
    /// The TCP connection, the server's greeting and the TLS handshake,
    /// each.
    pub connect_timeout: Duration,
    /// Each command's whole answer.
    pub timeout: Duration,
}

/// A folder just selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Selected {
    pub uid_validity: u32,
    pub exists: u32,
}

/// The most `PERMANENTFLAGS` of a folder kept (besides `\*`, noted
/// whatever comes before it; a server listing more is not believed
/// further).
const MAX_PERMANENT_FLAGS: usize = 64;

/// How [`Session::idle`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Waited {
    /// The server reported a change of the folder (new mail, mail gone,
    /// flags), or new mail had been reported before IDLE began.
    Changed,
    /// The wait passed without a change.
    TimedOut,
}

/// Why a session or a command failed. Each says what was being done, at
/// which server, then why.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ImapError {
    /// Reaching or talking to the server: the network, TLS (a certificate
    /// refused too), no answer in time, the connection closed, the server
    /// ending the session or saying it is busy (`[UNAVAILABLE]`,
    /// `[INUSE]`). The session, if any, is unusable: connect again later.
    #[error("{0}")]
    Connect(String),
    /// The login refused: the credentials, or no TLS where the password
    /// would have gone in clear. Trying again will not help until the
    /// configuration or the server changes.
    #[error("{0}")]
    Login(String),
    /// The server said NO or BAD to a command (its words, at most
    /// [`SAID_MAX`] bytes), or answered what this client refuses (a piece
    /// larger than asked, a literal over the limit). After a NO or BAD the
    /// session is still usable; after a refused answer it is not.
    #[error("{0}")]
    Protocol(String),
    /// An argument this client does not send: a folder name, a flag,
    /// search criteria, a piece's size.
    #[error("{0}")]
    Invalid(String),
}

impl ImapError {
    /// Whether trying again later (on a new session) may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self, ImapError::Connect(_))
    }
}

/// What the server offers, read after the login.
#[derive(Debug, Clone, Copy, Default)]
struct Extensions {
    idle: bool,
    moves: bool,
    uidplus: bool,
}

/// A logged-in IMAP session.
pub(crate) struct Session {
    imap: async_imap::Session<Guard>,
    /// `imap://user@host:port`, for messages.
    shown: String,
    timeout: Duration,
    extensions: Extensions,
    encrypted: bool,
    /// The folder selected, for messages.
    folder: Option<String>,
    /// How many messages the selected folder has, as the server last said.
    exists: u32,
    /// The server reported new mail since the last search.
    news: bool,
    /// The selected folder's `PERMANENTFLAGS` but `\*` (at most
    /// [`MAX_PERMANENT_FLAGS`]); `None` when it gave none (then every flag
    /// is kept, RFC 3501 7.1).
    permanent: Option<Vec<String>>,
    /// `\*` was among them: new keywords are kept.
    new_keywords: bool,
    /// Why the session cannot be used any more (its answers are out of
    /// step, or the connection is gone).
    broken: Option<String>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("server", &self.shown)
            .field("folder", &self.folder)
            .finish_non_exhaustive()
    }
}

/// The tagged answer to a command.
struct Answer {
    ok: bool,
    /// `NO`, `BAD`... for messages.
    word: &'static str,
    /// The server's words, cleaned and capped.
    said: String,
    /// `[TRYCREATE]`: the folder named does not exist.
    try_create: bool,
}

impl Session {
    /// Connect, protect the connection as `c.security` says, log in and
    /// read what the server offers.
    pub async fn open(c: &Connect) -> Result<Session, ImapError> {
        let implicit = c.security == Security::Implicit;
        let host = if c.host.contains(':') {
            format!("[{}]", c.host)
        } else {
            c.host.clone()
        };
        let shown = format!(
            "{}://{}@{host}:{}",
            if implicit { "imaps" } else { "imap" },
            c.user,
            c.port
        );
        let at = |doing: &str, why: &dyn Display| format!("{doing} at {shown}: {why}");
        let tcp = crate::support::remote::connect(&c.host, c.port, c.connect_timeout, c.timeout, &shown)
            .await
            .map_err(ImapError::Connect)?;
        let connector = tokio_rustls::TlsConnector::from(c.tls.clone());
        let (mut client, mut encrypted) = if implicit {
            let tls = handshake(&connector, &c.host, tcp, c.connect_timeout, &shown).await?;
            (async_imap::Client::new(Guard::new(Transport::Tls(Box::new(tls)))), true)
        } else {
            (async_imap::Client::new(Guard::new(Transport::Plain(tcp))), false)
        };
        let offered = match tokio::time::timeout(c.connect_timeout, greeting(&mut client)).await {
            Ok(Ok(offered)) => offered,
            Ok(Err(e)) => return Err(e.within(&shown)),
            Err(_) => {
                let why = format!("none within {:?}", c.connect_timeout);
                return Err(ImapError::Connect(at("waiting for the greeting", &why)));
            }
        };
        let has = |cap: &str| {
            offered
                .as_ref()
                .map(|caps| caps.iter().any(|o| o.eq_ignore_ascii_case(cap)))
        };
        if !implicit && c.security != Security::Off {
            // Without the greeting's list, STARTTLS is asked for all the
            // same: a server without it answers BAD.
            let upgraded = has("STARTTLS") != Some(false) && starttls(&mut client, c.timeout, &shown).await?;
            if !upgraded {
                return Err(ImapError::Login(match c.security {
                    Security::StartTlsRequired => at(
                        "STARTTLS",
                        &"the server does not offer STARTTLS; starttls = \"required\" (set \"off\" to log in \
                          in clear, password included)",
                    ),
                    _ => at(
                        &format!("logging in as {}", c.user),
                        &"the connection is not encrypted (the server does not offer STARTTLS); the password \
                          is not sent in clear unless starttls = \"off\"",
                    ),
                }));
            }
            let Transport::Plain(tcp) = client.into_inner().into_transport() else {
                return Err(ImapError::Connect(at(
                    "STARTTLS",
                    &"the connection was encrypted already",
                )));
            };
            let tls = handshake(&connector, &c.host, tcp, c.connect_timeout, &shown).await?;
            client = async_imap::Client::new(Guard::new(Transport::Tls(Box::new(tls))));
            encrypted = true;
        }
        if !encrypted && has("LOGINDISABLED") == Some(true) {
            return Err(ImapError::Login(at(
                &format!("logging in as {}", c.user),
                &"the server takes no login on a connection without TLS (LOGINDISABLED); use TLS (imaps, or \
                  starttls = \"required\")",
            )));
        }
        let login = tokio::time::timeout(c.timeout, client.login_with_capabilities(&c.user, c.password.expose()));
        let doing = format!("logging in as {}", c.user);
        let (imap, capabilities) = match login.await {
            Ok(Ok(done)) => done,
            Ok(Err((e, _))) => return Err(login_error(&format!("{doing} at {shown}"), &e, &c.password)),
            Err(_) => {
                let why = format!("no answer within {:?}", c.timeout);
                return Err(ImapError::Connect(at(&doing, &why)));
            }
        };
        let mut session = Session {
            imap,
            shown,
            timeout: c.timeout,
            extensions: Extensions::default(),
            encrypted,
            folder: None,
            exists: 0,
            news: false,
            permanent: None,
            new_keywords: false,
            broken: None,
        };
        let names: Vec<String> = match capabilities {
            Some(caps) => caps
                .iter()
                .filter_map(|cap| match cap {
                    async_imap::types::Capability::Atom(name) => Some(name.clone()),
                    _ => None,
                })
                .collect(),
            None => {
                let mut names = Vec::new();
                let answer = session
                    .exchange("reading what the server offers", "CAPABILITY", SMALL_LITERAL, |r| {
                        if let Response::Capabilities(caps) = r {
                            for cap in caps {
                                if let async_imap::imap_proto::Capability::Atom(name) = cap {
                                    names.push(name.to_string());
                                }
                            }
                        }
                        Ok(())
                    })
                    .await?;
                session.require("reading what the server offers", &answer)?;
                names
            }
        };
        let named = |cap: &str| names.iter().any(|n| n.eq_ignore_ascii_case(cap));
        session.extensions = Extensions {
            idle: named("IDLE"),
            moves: named("MOVE"),
            uidplus: named("UIDPLUS"),
        };
        Ok(session)
    }

    /// The server offers IDLE ([`Session::idle`]).
    pub fn can_idle(&self) -> bool {
        self.extensions.idle
    }

    /// The server offers MOVE ([`Session::move_to`] moves in one step).
    pub fn can_move(&self) -> bool {
        self.extensions.moves
    }

    /// The server offers UIDPLUS ([`Session::delete`] expunges only the
    /// mail it deletes).
    pub fn has_uidplus(&self) -> bool {
        self.extensions.uidplus
    }

    /// Whether the selected folder keeps `flag` on its mails (among its
    /// `PERMANENTFLAGS`, or a keyword where it keeps new ones), as a
    /// caseless match.
    pub fn keeps_flag(&self, flag: &str) -> bool {
        let Some(kept) = &self.permanent else {
            return true;
        };
        let keyword = !flag.starts_with('\\');
        (keyword && self.new_keywords) || kept.iter().any(|f| f.eq_ignore_ascii_case(flag))
    }

    /// The connection is TLS (implicit, or after STARTTLS).
    pub fn is_encrypted(&self) -> bool {
        self.encrypted
    }

    /// Select `folder` (`INBOX`, or a name as the server lists it: ASCII,
    /// its hierarchy separator included).
    pub async fn select(&mut self, folder: &str) -> Result<Selected, ImapError> {
        let doing = format!("selecting the folder {folder:?}");
        let name = folder_name(folder).map_err(|why| ImapError::Invalid(format!("{doing}: {why}")))?;
        // A SELECT that fails leaves no folder selected.
        self.folder = None;
        self.exists = 0;
        let mut uid_validity = None;
        let mut permanent: Option<Vec<String>> = None;
        let mut new_keywords = false;
        let answer = self
            .exchange(&doing, &format!("SELECT {name}"), SMALL_LITERAL, |r| {
                if let Response::Data {
                    status: Status::Ok,
                    outcome: Outcome { code: Some(code), .. },
                } = r
                {
                    match code {
                        ResponseCode::UidValidity(v) => uid_validity = Some(*v),
                        ResponseCode::PermanentFlags(flags) => {
                            let kept = permanent.get_or_insert_with(Vec::new);
                            for flag in flags {
                                if flag == "\\*" {
                                    new_keywords = true;
                                } else if kept.len() < MAX_PERMANENT_FLAGS {
                                    kept.push(flag.to_string());
                                }
                            }
                        }
                        _ => {}
                    }
                }
                Ok(())
            })
            .await?;
        self.require(&doing, &answer)?;
        let Some(uid_validity) = uid_validity else {
            return Err(ImapError::Protocol(self.at(&doing, "the server gave no UIDVALIDITY")));
        };
        self.folder = Some(folder.to_string());
        self.news = false;
        self.permanent = permanent;
        self.new_keywords = new_keywords;
        Ok(Selected {
            uid_validity,
            exists: self.exists,
        })
    }

    /// UIDs matching `criteria` (IMAP SEARCH syntax, e.g. `UNDELETED` or
    /// `UNDELETED UNKEYWORD $SluiceReceived`; printable ASCII), ascending,
    /// at most `max`, the smallest first.
    ///
    /// It searches windows of message sequence numbers (`UID SEARCH lo:hi
    /// criteria`), the first [`SEARCH_WINDOW_FIRST`] (or `max`) messages,
    /// then twice as many each time up to [`SEARCH_WINDOW_MAX`], until it
    /// has `max` or has seen the whole folder: an answer holds at most a
    /// window's UIDs, whatever the folder holds. Sequence numbers rather
    /// than UIDs: they have no gaps (UIDs may, after years of deletions, so
    /// UID windows could take thousands of empty searches), they are in
    /// the order of the UIDs, and a server sends no EXPUNGE during a
    /// SEARCH (RFC 3501, 7.4.1), so they do not shift between windows.
    pub async fn search(&mut self, criteria: &str, max: usize) -> Result<Vec<u32>, ImapError> {
        let doing = format!("searching {} for {criteria:?}", self.folder_shown());
        check_criteria(criteria).map_err(|why| ImapError::Invalid(format!("{doing}: {why}")))?;
        self.news = false;
        let mut found: Vec<u32> = Vec::new();
        if max == 0 {
            return Ok(found);
        }
        if self.exists == 0 {
            // New mail is reported with the answer to any command.
            let answer = self.exchange(&doing, "NOOP", SMALL_LITERAL, |_| Ok(())).await?;
            self.require(&doing, &answer)?;
        }
        let first = u32::try_from(max).unwrap_or(u32::MAX);
        let mut window = first.clamp(SEARCH_WINDOW_FIRST, SEARCH_WINDOW_MAX);
        let mut lo = 1u32;
        let shown = self.shown.clone();
        while found.len() < max && lo <= self.exists {
            let hi = lo.saturating_add(window - 1).min(self.exists);
            let room = (hi - lo + 1) as usize;
            let mut batch: Vec<u32> = Vec::new();
            let command = if criteria.trim().is_empty() {
                format!("UID SEARCH {lo}:{hi}")
            } else {
                format!("UID SEARCH {lo}:{hi} {criteria}")
            };
            let answer = self
                .exchange(&doing, &command, SMALL_LITERAL, |r| {
                    if let Response::MailboxData(MailboxDatum::Search(uids)) = r {
                        if batch.len() + uids.len() > room {
                            return Err(ImapError::Protocol(format!(
                                "{doing} at {shown}: the server answered more UIDs than the {room} messages searched"
                            )));
                        }
                        batch.extend_from_slice(uids);
                    }
                    Ok(())
                })
                .await?;
            self.require(&doing, &answer)?;
            batch.sort_unstable();
            for uid in batch {
                if found.last().is_none_or(|last| uid > *last) {
                    found.push(uid);
                    if found.len() == max {
                        break;
                    }
                }
            }
            let Some(next) = hi.checked_add(1) else { break };
            lo = next;
            window = window.saturating_mul(2).min(SEARCH_WINDOW_MAX);
        }
        if found.len() < max {
            // Mail reported meanwhile was in the windows searched.
            self.news = false;
        }
        Ok(found)
    }

    /// The size (RFC822.SIZE) of the mail `uid`; `None` if no mail has
    /// that UID (any more).
    pub async fn size(&mut self, uid: u32) -> Result<Option<u64>, ImapError> {
        let doing = format!("reading the size of mail UID {uid} of {}", self.folder_shown());
        let (mut seen, mut size) = (false, None);
        let answer = self
            .exchange(&doing, &format!("UID FETCH {uid} (RFC822.SIZE)"), SMALL_LITERAL, |r| {
                if let Some(attrs) = fetched(r, uid) {
                    seen = true;
                    for a in attrs {
                        if let AttributeValue::Rfc822Size(s) = a {
                            size = Some(u64::from(*s));
                        }
                    }
                }
                Ok(())
            })
            .await?;
        if !answer.ok && answer.said.contains("EXPUNGEISSUED") {
            return Ok(None);
        }
        self.require(&doing, &answer)?;
        match (seen, size) {
            (false, _) => Ok(None),
            (true, Some(size)) => Ok(Some(size)),
            (true, None) => Err(ImapError::Protocol(self.at(&doing, "the server gave no RFC822.SIZE"))),
        }
    }

    /// Bytes `[offset, offset + len)` of the whole raw mail `uid`
    /// (`BODY.PEEK[]<offset.len>`: the mail is not marked seen); empty
    /// past its end; `None` if no mail has that UID (any more). `len` is
    /// 1 to [`MAX_PIECE`]. A server that answers more than `len` bytes is
    /// refused, before the bytes are kept: the session ends.
    pub async fn fetch_piece(&mut self, uid: u32, offset: u64, len: u32) -> Result<Option<Bytes>, ImapError> {
        let doing = format!("reading bytes {offset}.. of mail UID {uid} of {}", self.folder_shown());
        if len == 0 || len > MAX_PIECE {
            return Err(ImapError::Invalid(format!(
                "{doing}: a piece is 1 to {MAX_PIECE} bytes, not {len}"
            )));
        }
        let Ok(start) = u32::try_from(offset) else {
            return Err(ImapError::Invalid(format!(
                "{doing}: IMAP reads a mail in pieces only up to 4 GiB"
            )));
        };
        let shown = self.shown.clone();
        let fail = |why: String| ImapError::Protocol(format!("{doing} at {shown}: {why}"));
        let (mut seen, mut piece) = (false, None);
        let command = format!("UID FETCH {uid} (BODY.PEEK[]<{start}.{len}>)");
        let answer = self
            .exchange(&doing, &command, len.max(SMALL_LITERAL), |r| {
                let Some(attrs) = fetched(r, uid) else { return Ok(()) };
                seen = true;
                for a in attrs {
                    if let AttributeValue::BodySection {
                        section: None,
                        index,
                        data,
                    } = a
                    {
                        if let Some(from) = index.filter(|from| *from != start) {
                            return Err(fail(format!("the server sent the bytes from {from}")));
                        }
                        let data = data.as_deref().unwrap_or_default();
                        if data.len() > len as usize {
                            return Err(fail(format!(
                                "the server sent {} bytes for a piece of at most {len}",
                                data.len()
                            )));
                        }
                        piece = Some(Bytes::copy_from_slice(data));
                    }
                }
                Ok(())
            })
            .await?;
        if !answer.ok && answer.said.contains("EXPUNGEISSUED") {
            return Ok(None);
        }
        self.require(&doing, &answer)?;
        match (seen, piece) {
            (false, _) => Ok(None),
            (true, Some(piece)) => Ok(Some(piece)),
            (true, None) => Err(ImapError::Protocol(self.at(&doing, "the server sent no body"))),
        }
    }

    /// Delete the mail `uid`: flag it `\Deleted`, then expunge it (`UID
    /// EXPUNGE` with UIDPLUS; without it `EXPUNGE`, which also removes any
    /// other mail of the folder flagged `\Deleted`).
    pub async fn delete(&mut self, uid: u32) -> Result<(), ImapError> {
        let doing = format!("deleting mail UID {uid} of {}", self.folder_shown());
        self.run(&doing, &format!("UID STORE {uid} +FLAGS.SILENT (\\Deleted)"))
            .await?;
        if self.extensions.uidplus {
            self.run(&doing, &format!("UID EXPUNGE {uid}")).await
        } else {
            self.run(&doing, "EXPUNGE").await
        }
    }

    /// Move the mail `uid` to `folder` (`UID MOVE` with MOVE; without it
    /// `UID COPY`, then [`Session::delete`]).
    pub async fn move_to(&mut self, uid: u32, folder: &str) -> Result<(), ImapError> {
        let doing = format!("moving mail UID {uid} of {} to {folder:?}", self.folder_shown());
        let name = folder_name(folder).map_err(|why| ImapError::Invalid(format!("{doing}: {why}")))?;
        let verb = if self.extensions.moves { "MOVE" } else { "COPY" };
        let answer = self
            .exchange(&doing, &format!("UID {verb} {uid} {name}"), SMALL_LITERAL, |_| Ok(()))
            .await?;
        if !answer.ok && answer.try_create {
            return Err(ImapError::Protocol(self.at(
                &doing,
                format!(
                    "the folder {folder:?} does not exist (the server said: {})",
                    answer.said
                ),
            )));
        }
        self.require(&doing, &answer)?;
        if self.extensions.moves {
            Ok(())
        } else {
            self.delete(uid).await
        }
    }

    /// Add `flag` to the mail `uid`: `\Seen`, `\Flagged`, `\Answered`,
    /// `\Draft`, or a keyword (an IMAP atom, e.g. `$SluiceReceived`).
    pub async fn add_flag(&mut self, uid: u32, flag: &str) -> Result<(), ImapError> {
        let doing = format!("flagging mail UID {uid} of {} {flag:?}", self.folder_shown());
        check_flag(flag).map_err(|why| ImapError::Invalid(format!("{doing}: {why}")))?;
        self.run(&doing, &format!("UID STORE {uid} +FLAGS.SILENT ({flag})"))
            .await
    }

    /// IDLE until the server reports a change of the folder (new mail,
    /// mail gone, flags) or `wait` passes; at once if new mail was reported
    /// since the last [`Session::search`] that went through the whole
    /// folder. The session is usable after.
    /// Only where [`Session::can_idle`].
    pub async fn idle(&mut self, wait: Duration) -> Result<Waited, ImapError> {
        let doing = format!("waiting for mail in {} (IDLE)", self.folder_shown());
        if !self.extensions.idle {
            return Err(ImapError::Invalid(self.at(&doing, "the server does not offer IDLE")));
        }
        self.usable(&doing)?;
        if std::mem::take(&mut self.news) {
            return Ok(Waited::Changed);
        }
        let limit = self.timeout;
        let started = tokio::time::timeout(limit, self.idle_start(&doing)).await;
        let (tag, mut changed) = match started {
            Ok(Ok(Ok(begun))) => begun,
            Ok(Ok(Err(answer))) => return Err(self.refused(&doing, &answer)),
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(self.no_answer(&doing, limit)),
        };
        let deadline = tokio::time::Instant::now() + wait;
        while !changed {
            let Ok(read) = tokio::time::timeout_at(deadline, self.imap.read_response()).await else {
                break;
            };
            let response = self.received(&doing, read)?;
            match response.parsed() {
                Response::Done {
                    tag: t,
                    status,
                    outcome,
                } if *t == tag => {
                    // The server ended the IDLE itself.
                    let answer = answer(status, outcome);
                    self.news = false;
                    return if answer.ok {
                        Ok(Waited::Changed)
                    } else {
                        Err(self.refused(&doing, &answer))
                    };
                }
                Response::Continue(_) | Response::Data { status: Status::Ok, .. } => {}
                other => {
                    self.note(&doing, other)?;
                    changed = changes(other);
                }
            }
        }
        let done = async {
            if let Err(e) = self.imap.run_command_untagged("DONE").await {
                return Err(self.lost(&doing, e));
            }
            self.until_done(&doing, &tag, &mut |r| {
                changed |= changes(r);
                Ok(())
            })
            .await
        };
        let answer = match tokio::time::timeout(limit, done).await {
            Ok(answer) => answer?,
            Err(_) => return Err(self.no_answer(&doing, limit)),
        };
        self.require(&doing, &answer)?;
        self.news = false;
        Ok(if changed { Waited::Changed } else { Waited::TimedOut })
    }

    /// Log out, as far as the server answers within the command timeout,
    /// and close the connection.
    pub async fn logout(mut self) {
        if self.broken.is_some() {
            return;
        }
        let bye = async {
            let Ok(tag) = self.imap.run_command("LOGOUT").await else {
                return;
            };
            while let Ok(Some(r)) = self.imap.read_response().await {
                if matches!(r.parsed(), Response::Done { tag: t, .. } if *t == tag) {
                    break;
                }
            }
            let _ = self.imap.get_mut().shutdown().await;
        };
        let _ = tokio::time::timeout(self.timeout, bye).await;
    }

    /// Without MOVE and UIDPLUS, to test what a server without them gets.
    #[cfg(test)]
    pub(crate) fn forget_extensions(&mut self) {
        self.extensions.moves = false;
        self.extensions.uidplus = false;
    }

    fn at(&self, doing: &str, why: impl Display) -> String {
        format!("{doing} at {}: {why}", self.shown)
    }

    fn folder_shown(&self) -> String {
        match &self.folder {
            Some(f) => format!("{f:?}"),
            None => "no folder".to_string(),
        }
    }

    fn usable(&self, doing: &str) -> Result<(), ImapError> {
        match &self.broken {
            Some(why) => Err(ImapError::Connect(self.at(
                doing,
                format!("the session cannot be used after an earlier error ({why})"),
            ))),
            None => Ok(()),
        }
    }

    /// The session is out of step or gone: every later command fails.
    fn broke(&mut self, doing: &str, why: String, protocol: bool) -> ImapError {
        let text = self.at(doing, &why);
        self.broken = Some(why);
        if protocol {
            ImapError::Protocol(text)
        } else {
            ImapError::Connect(text)
        }
    }

    fn lost(&mut self, doing: &str, e: async_imap::error::Error) -> ImapError {
        let (why, protocol) = imap_error_text(&e);
        self.broke(doing, why, protocol)
    }

    fn no_answer(&mut self, doing: &str, limit: Duration) -> ImapError {
        self.broke(doing, format!("no answer within {limit:?}"), false)
    }

    /// The response read, or the error that ends the session.
    fn received<R>(&mut self, doing: &str, read: io::Result<Option<R>>) -> Result<R, ImapError> {
        match read {
            Ok(Some(r)) => Ok(r),
            Ok(None) => Err(self.broke(doing, "the server closed the connection".into(), false)),
            Err(e) => {
                let (why, protocol) = io_error_text(&e);
                Err(self.broke(doing, why, protocol))
            }
        }
    }

    /// Keep track of what an untagged response says of the folder; the
    /// error if it ends the session.
    fn note(&mut self, doing: &str, r: &Response<'_>) -> Result<(), ImapError> {
        match r {
            Response::MailboxData(MailboxDatum::Exists(n)) => {
                self.news |= *n > self.exists;
                self.exists = *n;
            }
            Response::Expunge(_) => self.exists = self.exists.saturating_sub(1),
            Response::Data {
                status: Status::Bye,
                outcome,
            } => {
                let why = format!("the server ended the session: {}", said(outcome));
                return Err(self.broke(doing, why, false));
            }
            Response::Continue(_) => {
                let why = "the server asked for more of a command that was complete".to_string();
                return Err(self.broke(doing, why, true));
            }
            _ => {}
        }
        Ok(())
    }

    /// Send `command` and read its answer within the timeout, each
    /// untagged response shown to `each` (the first error it returns is
    /// returned once the answer is read), literals of at most
    /// `max_literal` bytes taken.
    async fn exchange<F>(
        &mut self,
        doing: &str,
        command: &str,
        max_literal: u32,
        mut each: F,
    ) -> Result<Answer, ImapError>
    where
        F: FnMut(&Response<'_>) -> Result<(), ImapError>,
    {
        self.usable(doing)?;
        self.imap.get_mut().scan.max_literal = max_literal.into();
        let limit = self.timeout;
        let result = tokio::time::timeout(limit, async {
            let tag = match self.imap.run_command(command).await {
                Ok(tag) => tag,
                Err(e) => return Err(self.lost(doing, e)),
            };
            self.until_done(doing, &tag, &mut each).await
        })
        .await;
        self.imap.get_mut().scan.max_literal = SMALL_LITERAL.into();
        match result {
            Ok(answer) => answer,
            Err(_) => Err(self.no_answer(doing, limit)),
        }
    }

    /// Read responses up to the tagged answer `tag`.
    async fn until_done<F>(&mut self, doing: &str, tag: &RequestId, each: &mut F) -> Result<Answer, ImapError>
    where
        F: FnMut(&Response<'_>) -> Result<(), ImapError>,
    {
        let mut first_error = None;
        loop {
            let read = self.imap.read_response().await;
            let response = self.received(doing, read)?;
            let parsed = response.parsed();
            if let Response::Done {
                tag: t,
                status,
                outcome,
            } = parsed
            {
                if t == tag {
                    return match first_error {
                        Some(e) => Err(e),
                        None => Ok(answer(status, outcome)),
                    };
                }
                continue;
            }
            self.note(doing, parsed)?;
            if first_error.is_none() {
                first_error = each(parsed).err();
            }
        }
    }

    /// The IDLE command sent and the server waiting: its tag, and whether
    /// the folder changed meanwhile; or the server's refusal.
    async fn idle_start(&mut self, doing: &str) -> Result<Result<(RequestId, bool), Answer>, ImapError> {
        let tag = match self.imap.run_command("IDLE").await {
            Ok(tag) => tag,
            Err(e) => return Err(self.lost(doing, e)),
        };
        let mut changed = false;
        loop {
            let read = self.imap.read_response().await;
            let response = self.received(doing, read)?;
            match response.parsed() {
                Response::Continue(_) => return Ok(Ok((tag, changed))),
                Response::Done {
                    tag: t,
                    status,
                    outcome,
                } if *t == tag => return Ok(Err(answer(status, outcome))),
                other => {
                    self.note(doing, other)?;
                    changed |= changes(other);
                }
            }
        }
    }

    /// A command whose answer must be OK.
    async fn run(&mut self, doing: &str, command: &str) -> Result<(), ImapError> {
        let answer = self.exchange(doing, command, SMALL_LITERAL, |_| Ok(())).await?;
        self.require(doing, &answer)
    }

    fn require(&self, doing: &str, answer: &Answer) -> Result<(), ImapError> {
        if answer.ok {
            Ok(())
        } else {
            Err(self.refused(doing, answer))
        }
    }

    fn refused(&self, doing: &str, answer: &Answer) -> ImapError {
        let text = self.at(doing, format!("the server said {}: {}", answer.word, answer.said));
        if busy(&answer.said) {
            ImapError::Connect(text)
        } else {
            ImapError::Protocol(text)
        }
    }
}

/// A change of the folder, reported during IDLE.
fn changes(r: &Response<'_>) -> bool {
    matches!(
        r,
        Response::MailboxData(MailboxDatum::Exists(_) | MailboxDatum::Recent(_))
            | Response::Expunge(_)
            | Response::Fetch(..)
            | Response::Vanished { .. }
    )
}

/// The attributes of a FETCH response for the mail `uid`.
fn fetched<'r>(r: &'r Response<'_>, uid: u32) -> Option<&'r [AttributeValue<'r>]> {
    match r {
        Response::Fetch(_, attrs) if attrs.iter().any(|a| matches!(a, AttributeValue::Uid(u) if *u == uid)) => {
            Some(attrs)
        }
        _ => None,
    }
}

fn answer(status: &Status, outcome: &Outcome<'_>) -> Answer {
    Answer {
        ok: matches!(status, Status::Ok),
        word: match status {
            Status::Ok => "OK",
            Status::No => "NO",
            Status::Bad => "BAD",
            Status::PreAuth => "PREAUTH",
            Status::Bye => "BYE",
        },
        said: said(outcome),
        try_create: matches!(outcome.code, Some(ResponseCode::TryCreate)),
    }
}

/// The server's words: `[CODE] text`, cleaned and capped.
fn said(outcome: &Outcome<'_>) -> String {
    let code = match &outcome.code {
        Some(ResponseCode::Alert) => "[ALERT] ",
        Some(ResponseCode::TryCreate) => "[TRYCREATE] ",
        Some(ResponseCode::ReadOnly) => "[READ-ONLY] ",
        Some(ResponseCode::Parse) => "[PARSE] ",
        Some(ResponseCode::BadCharset(_)) => "[BADCHARSET] ",
        _ => "",
    };
    let text = outcome.information.as_deref().unwrap_or("(no text)");
    clean(&format!("{code}{text}"), SAID_MAX)
}

/// Whether the server's words say it is busy, for now.
fn busy(said: &str) -> bool {
    said.contains("[UNAVAILABLE]") || said.contains("[INUSE]")
}

/// `text` as it may be shown: control characters replaced, at most `max`
/// bytes (cut at a character's boundary, `...` added).
fn clean(text: &str, max: usize) -> String {
    let mut out: String = text.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    if out.len() > max {
        let mut cut = max;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push_str("...");
    }
    out
}

/// The words of an async-imap error, and whether the server broke the
/// protocol (rather than the connection failing).
fn imap_error_text(e: &async_imap::error::Error) -> (String, bool) {
    use async_imap::error::Error;
    match e {
        Error::Io(io) => io_error_text(io),
        Error::No(s) => (format!("the server said NO: {}", server_words(s)), true),
        Error::Bad(s) => (format!("the server said BAD: {}", server_words(s)), true),
        Error::ConnectionLost => ("the server closed the connection".into(), false),
        other => (clean(&other.to_string(), SAID_MAX), true),
    }
}

fn io_error_text(e: &io::Error) -> (String, bool) {
    if let Some(refused) = e.get_ref().and_then(|inner| inner.downcast_ref::<Refused>()) {
        return (refused.0.clone(), true);
    }
    let text = e.to_string();
    // async-imap's parse errors hold the whole unparsed answer.
    match text.split_once(" during parsing of ") {
        Some((_, answer)) => (
            format!("an answer this client cannot read: {}", clean(answer, 120)),
            true,
        ),
        None => (clean(&text, SAID_MAX), false),
    }
}

/// The text of async-imap's NO or BAD error (`code: .., info: Some("..")`):
/// the server's words.
fn server_words(s: &str) -> String {
    let words = match s.split_once("info: Some(\"") {
        Some((_, rest)) => rest
            .strip_suffix("\")")
            .unwrap_or(rest)
            .replace("\\\"", "\"")
            .replace("\\\\", "\\"),
        None => s.to_string(),
    };
    clean(&words, SAID_MAX)
}

/// The error of a refused login, without the password.
fn login_error(doing: &str, e: &async_imap::error::Error, password: &Secret) -> ImapError {
    use async_imap::error::Error;
    let scrub = |text: String| {
        // In case a server repeats the command it refuses.
        let p = password.expose();
        if p.len() >= 4 { text.replace(p, "***") } else { text }
    };
    match e {
        Error::No(s) | Error::Bad(s) => {
            let words = scrub(server_words(s));
            let text = format!("{doing}: the server refused: {words}");
            if busy(&words) {
                ImapError::Connect(text)
            } else {
                ImapError::Login(text)
            }
        }
        Error::Validate(_) => ImapError::Invalid(format!(
            "{doing}: the user name or the password has a line break, which IMAP cannot send"
        )),
        other => {
            let (why, _) = imap_error_text(other);
            ImapError::Connect(format!("{doing}: {}", scrub(why)))
        }
    }
}

/// The server's greeting: the capabilities it lists, if it does.
async fn greeting(client: &mut async_imap::Client<Guard>) -> Result<Option<Vec<String>>, Unplaced> {
    let response = match client.read_response().await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return Err(Unplaced::connect(
                "the server closed the connection before its greeting",
            ));
        }
        Err(e) => {
            let (why, protocol) = io_error_text(&e);
            return Err(Unplaced(why, protocol));
        }
    };
    match response.parsed() {
        Response::Data {
            status: Status::Ok,
            outcome,
        } => Ok(match &outcome.code {
            Some(ResponseCode::Capabilities(caps)) => Some(
                caps.iter()
                    .filter_map(|c| match c {
                        async_imap::imap_proto::Capability::Atom(a) => Some(a.to_string()),
                        _ => None,
                    })
                    .collect(),
            ),
            _ => None,
        }),
        Response::Data {
            status: Status::Bye,
            outcome,
        } => Err(Unplaced::connect(&format!(
            "the server refused the connection: {}",
            said(outcome)
        ))),
        Response::Data {
            status: Status::PreAuth,
            ..
        } => Err(Unplaced(
            "the server greets as logged in already (PREAUTH), which this client does not take".into(),
            true,
        )),
        _ => Err(Unplaced("the server's greeting is not IMAP's".into(), true)),
    }
}

/// An error of the greeting, before the session has its name: the words,
/// and whether the server broke the protocol.
struct Unplaced(String, bool);

impl Unplaced {
    fn connect(why: &str) -> Unplaced {
        Unplaced(why.to_string(), false)
    }

    fn within(self, shown: &str) -> ImapError {
        let text = format!("waiting for the greeting at {shown}: {}", self.0);
        if self.1 {
            ImapError::Protocol(text)
        } else {
            ImapError::Connect(text)
        }
    }
}

/// Ask for STARTTLS: whether the server agreed.
async fn starttls(client: &mut async_imap::Client<Guard>, limit: Duration, shown: &str) -> Result<bool, ImapError> {
    use async_imap::error::Error;
    match tokio::time::timeout(limit, client.run_command_and_check_ok("STARTTLS", None)).await {
        Ok(Ok(())) => Ok(true),
        Ok(Err(Error::No(_) | Error::Bad(_))) => Ok(false),
        Ok(Err(e)) => Err(ImapError::Connect(format!(
            "STARTTLS at {shown}: {}",
            imap_error_text(&e).0
        ))),
        Err(_) => Err(ImapError::Connect(format!(
            "STARTTLS at {shown}: no answer within {limit:?}"
        ))),
    }
}

/// TLS on `tcp`, the certificate checked against `host`.
async fn handshake(
    connector: &tokio_rustls::TlsConnector,
    host: &str,
    tcp: TcpStream,
    limit: Duration,
    shown: &str,
) -> Result<tokio_rustls::client::TlsStream<TcpStream>, ImapError> {
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| ImapError::Invalid(format!("starting TLS with {shown}: {host:?} is no server name: {e}")))?;
    match tokio::time::timeout(limit, connector.connect(name, tcp)).await {
        Ok(Ok(tls)) => Ok(tls),
        Ok(Err(e)) => Err(ImapError::Connect(format!("the TLS handshake with {shown}: {e}"))),
        Err(_) => Err(ImapError::Connect(format!(
            "the TLS handshake with {shown}: no answer within {limit:?}"
        ))),
    }
}

/// `name` as an IMAP quoted string. ASCII only: other names need IMAP's
/// modified UTF-7, which this client does not write (its `&` is written
/// `&-`, as that encoding wants).
fn folder_name(name: &str) -> Result<String, String> {
    if name.is_empty() {
        return Err("the folder name is empty".into());
    }
    if !name.is_ascii() {
        return Err(
            "the folder name is not ASCII: such names are written in IMAP's modified UTF-7, which this client \
             does not do"
                .into(),
        );
    }
    if name.chars().any(|c| c.is_ascii_control()) {
        return Err("the folder name has a control character (a line break, a NUL...)".into());
    }
    let mut quoted = String::with_capacity(name.len() + 2);
    quoted.push('"');
    for c in name.chars() {
        match c {
            '"' | '\\' => {
                quoted.push('\\');
                quoted.push(c);
            }
            '&' => quoted.push_str("&-"),
            c => quoted.push(c),
        }
    }
    quoted.push('"');
    Ok(quoted)
}

/// Search criteria go as they are: printable ASCII, and no literal at the
/// end (the server would wait for it).
fn check_criteria(criteria: &str) -> Result<(), String> {
    if !criteria.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Err("search criteria are printable ASCII, without line breaks".into());
    }
    if criteria.trim_end().ends_with('}') {
        return Err("search criteria may not end in a literal (`{n}`)".into());
    }
    // The search goes `UID SEARCH lo:hi criteria`, and CHARSET must come
    // first; ASCII criteria need none.
    if criteria
        .trim_start()
        .get(..7)
        .is_some_and(|w| w.eq_ignore_ascii_case("CHARSET"))
    {
        return Err("search criteria are ASCII and need no CHARSET".into());
    }
    Ok(())
}

/// A flag this client sets: a system flag but `\Deleted` (see
/// [`Session::delete`]) and `\Recent`, or a keyword (an IMAP atom).
fn check_flag(flag: &str) -> Result<(), String> {
    const SYSTEM: [&str; 4] = ["\\Seen", "\\Flagged", "\\Answered", "\\Draft"];
    if SYSTEM.iter().any(|s| s.eq_ignore_ascii_case(flag)) {
        return Ok(());
    }
    let atom = |b: u8| (0x21..0x7f).contains(&b) && !b"(){%*\"\\]".contains(&b);
    if flag.is_empty() || flag.len() > 128 || !flag.bytes().all(atom) {
        return Err(
            "a flag is \\Seen, \\Flagged, \\Answered, \\Draft or a keyword of at most 128 printable ASCII \
             characters without spaces, parentheses, quotes, backslashes, `{`, `%`, `*` or `]`"
                .into(),
        );
    }
    Ok(())
}

/// The connection, in clear or TLS.
#[derive(Debug)]
enum Transport {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl AsyncRead for Transport {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Transport {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_write(cx, data),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_flush(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Transport::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Transport::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// What async-imap reads and writes through: the connection, writes
/// buffered (a command goes out whole at the flush), every byte read
/// passed by the [`Scanner`] first.
struct Guard {
    io: BufWriter<Transport>,
    scan: Scanner,
}

impl Guard {
    fn new(transport: Transport) -> Guard {
        Guard {
            io: BufWriter::new(transport),
            scan: Scanner::new(SMALL_LITERAL.into()),
        }
    }

    fn into_transport(self) -> Transport {
        self.io.into_inner()
    }
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").finish_non_exhaustive()
    }
}

/// An answer the [`Scanner`] refused, as the read's error.
#[derive(Debug)]
struct Refused(String);

impl Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

impl AsyncRead for Guard {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        ready!(Pin::new(&mut this.io).poll_read(cx, buf))?;
        // Refused before async-imap sees the bytes: it never reads the
        // announcement, so never grows its buffer for it.
        match this.scan.feed(&buf.filled()[before..]) {
            Ok(()) => Poll::Ready(Ok(())),
            Err(why) => Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, Refused(why)))),
        }
    }
}

impl AsyncWrite for Guard {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// What a response is, from its first words: where it may hold a literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// Its first words are still to come.
    Pending,
    /// `+ ...`: text to the line's end.
    Continue,
    /// `* OK ...`, `tag NO ...`: text to the line's end (imap-proto reads a
    /// `{n}` there as text).
    Status,
    /// `* n FETCH (...)`: imap-proto reads an attribute it does not know
    /// byte by byte to its `)` or space, so a `{n}` in one is no literal.
    Fetch,
    /// Any other: every string imap-proto reads there may be a literal,
    /// and nothing else has a line break.
    Data,
}

/// The first bytes of a word: enough to recognise `FETCH` or
/// `BODY[1.2]<123>`; longer words are marked as such.
#[derive(Debug, Clone, Copy, Default)]
struct Word {
    bytes: [u8; 32],
    len: usize,
}

impl Word {
    fn push(&mut self, b: u8) {
        if let Some(slot) = self.bytes.get_mut(self.len) {
            *slot = b;
        }
        self.len = self.len.saturating_add(1);
    }

    /// The whole word, if it fits.
    fn get(&self) -> Option<&[u8]> {
        self.bytes.get(..self.len)
    }

    fn is(&self, word: &str) -> bool {
        self.get().is_some_and(|w| w.eq_ignore_ascii_case(word.as_bytes()))
    }

    /// `BODY[section]` or `BODY[section]<origin>`, the section made of
    /// letters, digits and dots.
    fn is_body_section(&self) -> bool {
        let Some(w) = self.get() else { return false };
        let Some(rest) = w.get(..5).filter(|p| p.eq_ignore_ascii_case(b"BODY[")).map(|_| &w[5..]) else {
            return false;
        };
        let Some(close) = rest.iter().position(|&b| b == b']') else {
            return false;
        };
        if !rest[..close].iter().all(|b| b.is_ascii_alphanumeric() || *b == b'.') {
            return false;
        }
        match &rest[close + 1..] {
            [] => true,
            [b'<', digits @ .., b'>'] => !digits.is_empty() && digits.iter().all(u8::is_ascii_digit),
            _ => false,
        }
    }
}

/// Where a literal's announcement (`{n}` CRLF) stands.
#[derive(Debug, Clone, Copy)]
enum Announce {
    None,
    /// `{` read; whether a literal may start there.
    Open(bool),
    Digits(u64, bool),
    Closed(u64, bool),
    Cr(u64, bool),
}

/// Reads what the server sends, before async-imap does, and refuses (ends
/// the session on) what would make async-imap hold more than a limit: a
/// literal over [`Scanner::max_literal`] (all of one response's literals
/// together), a response over [`MAX_LINE`] outside its literals, and a
/// literal where imap-proto might not read it as one (then the two would
/// disagree about where it ends, and a literal announced inside could slip
/// by): in a status response or a continuation (text for imap-proto), in
/// the first words of a response, and in a FETCH response anywhere but
/// right after `BODY[section]<origin>`, one level into the attributes,
/// with no `"` before it (imap-proto reads an attribute it does not know
/// to its first `)` or space whatever it holds; this client asks for
/// nothing but `BODY[]` in a literal, and a legitimate answer has no
/// quotes before it).
#[derive(Debug)]
struct Scanner {
    /// The most literal bytes one response may carry.
    max_literal: u64,
    /// Bytes left of the literal being read.
    in_literal: u64,
    kind: Kind,
    /// Words of this response ended so far (up to three count).
    words: u8,
    word: Word,
    last_word: Word,
    /// Bytes of this response outside its literals.
    line: usize,
    literals: u64,
    /// Parentheses open, counted outside literals and quotes alike.
    depth: u32,
    quoted: bool,
    prev: u8,
    announce: Announce,
}

impl Scanner {
    fn new(max_literal: u64) -> Scanner {
        Scanner {
            max_literal,
            in_literal: 0,
            kind: Kind::Pending,
            words: 0,
            word: Word::default(),
            last_word: Word::default(),
            line: 0,
            literals: 0,
            depth: 0,
            quoted: false,
            prev: 0,
            announce: Announce::None,
        }
    }

    /// Take the next bytes the server sent, or say why not.
    fn feed(&mut self, mut data: &[u8]) -> Result<(), String> {
        while !data.is_empty() {
            if self.in_literal > 0 {
                let take = usize::try_from(self.in_literal).map_or(data.len(), |left| left.min(data.len()));
                self.in_literal -= take as u64;
                data = &data[take..];
                continue;
            }
            let Some((&b, rest)) = data.split_first() else { break };
            self.byte(b)?;
            data = rest;
        }
        Ok(())
    }

    /// One byte outside a literal.
    fn byte(&mut self, b: u8) -> Result<(), String> {
        self.line += 1;
        if self.line > MAX_LINE {
            return Err(format!(
                "the server sent an answer of more than {MAX_LINE} bytes outside its literals"
            ));
        }
        if self.line == 1 && b == b'+' {
            self.kind = Kind::Continue;
        }
        self.announce = match (self.announce, b) {
            (_, b'{') => Announce::Open(self.literal_allowed()),
            (Announce::Open(ok), b'0'..=b'9') => Announce::Digits(u64::from(b - b'0'), ok),
            (Announce::Digits(n, ok), b'0'..=b'9') => {
                Announce::Digits(n.saturating_mul(10).saturating_add(u64::from(b - b'0')), ok)
            }
            (Announce::Digits(n, ok), b'}') => Announce::Closed(n, ok),
            (Announce::Closed(n, ok), b'\r') => Announce::Cr(n, ok),
            (Announce::Cr(n, ok), b'\n') => return self.literal(n, ok),
            _ => Announce::None,
        };
        if b == b'\n' {
            self.end_response();
            return Ok(());
        }
        match b {
            b' ' | b'(' | b')' | b'\r' => self.end_word(),
            _ => self.word.push(b),
        }
        match b {
            b'(' => self.depth = self.depth.saturating_add(1),
            b')' => self.depth = self.depth.saturating_sub(1),
            b'"' => self.quoted = true,
            _ => {}
        }
        self.prev = b;
        Ok(())
    }

    /// Whether a `{` read now may start a literal.
    fn literal_allowed(&self) -> bool {
        match self.kind {
            Kind::Data => true,
            Kind::Fetch => self.depth == 1 && !self.quoted && self.prev == b' ' && self.last_word.is_body_section(),
            Kind::Pending | Kind::Continue | Kind::Status => false,
        }
    }

    /// A literal of `n` bytes announced.
    fn literal(&mut self, n: u64, allowed: bool) -> Result<(), String> {
        if !allowed {
            return Err(format!(
                "the server announced a literal ({{{n}}}) where this client takes none"
            ));
        }
        let total = self.literals.saturating_add(n);
        if total > self.max_literal {
            return Err(format!(
                "the server announced {n} bytes in one answer, more than the {} this command takes",
                self.max_literal
            ));
        }
        self.literals = total;
        self.in_literal = n;
        self.announce = Announce::None;
        self.word = Word::default();
        self.prev = 0;
        Ok(())
    }

    fn end_word(&mut self) {
        if self.word.len == 0 {
            return;
        }
        if self.kind == Kind::Pending {
            self.words = self.words.saturating_add(1);
            let word = &self.word;
            match self.words {
                2 if ["OK", "NO", "BAD", "BYE", "PREAUTH"].iter().any(|s| word.is(s)) => self.kind = Kind::Status,
                2 if word.get().is_some_and(|w| w.iter().all(u8::is_ascii_digit)) => {}
                2 => self.kind = Kind::Data,
                3 if word.is("FETCH") => self.kind = Kind::Fetch,
                3 => self.kind = Kind::Data,
                _ => {}
            }
        }
        self.last_word = std::mem::take(&mut self.word);
    }

    fn end_response(&mut self) {
        *self = Scanner::new(self.max_literal);
    }
}

#[cfg(test)]
#[path = "session_tests.rs"]
mod tests;
