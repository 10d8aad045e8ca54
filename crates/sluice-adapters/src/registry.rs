//! The adapter traits and the registration macro.
//!
//! An adapter is a config struct (serde, `deny_unknown_fields`) that
//! implements [`ReceiveAdapter`] or [`SendAdapter`]; it is registered by one
//! line in the `adapters!` invocation of `lib.rs`, which generates the
//! `type`-tagged [`ReceiveAdapterConfig`](crate::ReceiveAdapterConfig) and
//! [`SendAdapterConfig`](crate::SendAdapterConfig) the host deserializes
//! and talks to only through the traits. See `docs/adapters.md`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sluice_model::Key;

use crate::{AdapterError, Source, Transmitter};

/// How a location or port exchanges messages with its peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Exchange {
    /// Receive: take the message, acknowledge once published. Send: deliver.
    #[default]
    OneWay,
    /// Receive: the peer waits for the message routed back to the
    /// location (`reply.to` = [`reply_subscriber`](crate::reply_subscriber)).
    RequestResponse,
    /// Send: the peer's answer becomes a new message
    /// ([`Transmitter::solicit`]).
    SolicitResponse,
}

/// Something an adapter takes for itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// An address it listens on. Port 0 (any free port) never collides; an
    /// unspecified IP (`0.0.0.0`, `[::]`) collides with every IP of its family.
    Listen(SocketAddr),
    /// A folder it takes files from (claims, deletes), or writes to.
    Folder(PathBuf),
    /// The files of a folder whose names match a mask (a glob): two claims
    /// collide when they name the same folder and their masks may select
    /// the same files (equal masks, or one mask matching the other as a
    /// name: `*` and `*.xml`; not `*.xml` and `*.csv`). A claim of the
    /// whole folder collides with any.
    FolderFiles(PathBuf, String),
    /// A remote endpoint it talks to (URL, `host:port`).
    Endpoint(String),
    /// The files of a folder on a server (`ftp://user@host:port/folder`,
    /// the scheme left out: one folder is one folder however it is
    /// reached) whose names match a mask: collide as `FolderFiles` do.
    RemoteFiles(String, String),
}

impl Resource {
    /// What it is, for an error message: `address`, `folder`, `endpoint`.
    pub fn noun(&self) -> &'static str {
        match self {
            Resource::Listen(_) => "address",
            Resource::Folder(_) | Resource::FolderFiles(..) | Resource::RemoteFiles(..) => "folder",
            Resource::Endpoint(_) => "endpoint",
        }
    }

    fn same_as(&self, other: &Resource) -> bool {
        match (self, other) {
            (Resource::Listen(a), Resource::Listen(b)) => {
                a.port() != 0
                    && a.port() == b.port()
                    && a.is_ipv4() == b.is_ipv4()
                    && (a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified())
            }
            (Resource::Folder(a), Resource::Folder(b))
            | (Resource::Folder(a), Resource::FolderFiles(b, _))
            | (Resource::FolderFiles(a, _), Resource::Folder(b)) => same_folder(a, b),
            (Resource::FolderFiles(a, ma), Resource::FolderFiles(b, mb)) => same_folder(a, b) && masks_overlap(ma, mb),
            (Resource::Endpoint(a), Resource::Endpoint(b)) => a == b,
            (Resource::RemoteFiles(a, ma), Resource::RemoteFiles(b, mb)) => a == b && masks_overlap(ma, mb),
            _ => false,
        }
    }
}

fn same_folder(a: &std::path::Path, b: &std::path::Path) -> bool {
    crate::support::names::normalized(a) == crate::support::names::normalized(b)
}

/// Whether two file masks may select the same name: the intersection of the
/// two globs is not empty (`*.xml` and `a*` both select `a.xml`; `*.xml` and
/// `*.csv` select nothing in common). A mask that cannot be read this way
/// is assumed to overlap.
fn masks_overlap(a: &str, b: &str) -> bool {
    match (glob_alternatives(a), glob_alternatives(b)) {
        (Some(xs), Some(ys)) => xs.iter().any(|x| ys.iter().any(|y| globs_meet(x, y))),
        _ => true,
    }
}

/// One position of a glob on a name (no `/` in a mask).
#[derive(Debug, Clone, PartialEq)]
enum GlobTok {
    Lit(char),
    /// `?`
    One,
    /// `*` (or `**`): any run of characters.
    Star,
    /// `[...]`: one character of the ranges (`negated`: one not in them).
    Class {
        ranges: Vec<(char, char)>,
        negated: bool,
    },
}

/// A glob as the token sequences of its `{a,b}` alternatives (at most 64),
/// or `None` if it cannot be read.
fn glob_alternatives(glob: &str) -> Option<Vec<Vec<GlobTok>>> {
    const MAX: usize = 64;
    let chars: Vec<char> = glob.chars().collect();
    let mut alts: Vec<Vec<GlobTok>> = vec![Vec::new()];
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '*' => {
                while i < chars.len() && chars[i] == '*' {
                    i += 1;
                }
                alts.iter_mut().for_each(|a| a.push(GlobTok::Star));
                continue;
            }
            '?' => alts.iter_mut().for_each(|a| a.push(GlobTok::One)),
            '\\' => {
                i += 1;
                let c = *chars.get(i)?;
                alts.iter_mut().for_each(|a| a.push(GlobTok::Lit(c)));
            }
            '[' => {
                let mut j = i + 1;
                let negated = matches!(chars.get(j), Some('!') | Some('^'));
                if negated {
                    j += 1;
                }
                let mut ranges = Vec::new();
                let mut first = true;
                loop {
                    let c = *chars.get(j)?;
                    if c == ']' && !first {
                        break;
                    }
                    first = false;
                    if chars.get(j + 1) == Some(&'-') && chars.get(j + 2).is_some_and(|&e| e != ']') {
                        ranges.push((c, chars[j + 2]));
                        j += 3;
                    } else {
                        ranges.push((c, c));
                        j += 1;
                    }
                }
                i = j;
                let tok = GlobTok::Class { ranges, negated };
                alts.iter_mut().for_each(|a| a.push(tok.clone()));
            }
            '{' => {
                let close = i + chars[i..].iter().position(|&c| c == '}')?;
                let inner: String = chars[i + 1..close].iter().collect();
                if inner.contains(['{', '[', '\\']) {
                    return None;
                }
                let mut next = Vec::new();
                for a in &alts {
                    for option in inner.split(',') {
                        let mut b = a.clone();
                        for c in option.chars() {
                            b.push(match c {
                                '*' => GlobTok::Star,
                                '?' => GlobTok::One,
                                c => GlobTok::Lit(c),
                            });
                        }
                        next.push(b);
                        if next.len() > MAX {
                            return None;
                        }
                    }
                }
                alts = next;
                i = close;
            }
            c => alts.iter_mut().for_each(|a| a.push(GlobTok::Lit(c))),
        }
        i += 1;
    }
    Some(alts)
}

/// Whether one name matches both token sequences.
fn globs_meet(p: &[GlobTok], q: &[GlobTok]) -> bool {
    fn one_char_meets(a: &GlobTok, b: &GlobTok) -> bool {
        let in_class = |c: char, ranges: &[(char, char)], negated: bool| {
            ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != negated
        };
        match (a, b) {
            (GlobTok::Lit(x), GlobTok::Lit(y)) => x == y,
            (GlobTok::Lit(c), GlobTok::Class { ranges, negated })
            | (GlobTok::Class { ranges, negated }, GlobTok::Lit(c)) => in_class(*c, ranges, *negated),
            (
                GlobTok::Class {
                    ranges: ra,
                    negated: false,
                },
                GlobTok::Class {
                    ranges: rb,
                    negated: false,
                },
            ) => ra
                .iter()
                .any(|&(alo, ahi)| rb.iter().any(|&(blo, bhi)| alo <= bhi && blo <= ahi)),
            // `?`, or two classes one of which is negated: assume they meet.
            _ => true,
        }
    }
    // Memo over (rest of p, rest of q): O(len(p) * len(q)).
    let mut memo = vec![vec![None; q.len() + 1]; p.len() + 1];
    fn go(p: &[GlobTok], q: &[GlobTok], i: usize, j: usize, memo: &mut Vec<Vec<Option<bool>>>) -> bool {
        if let Some(known) = memo[i][j] {
            return known;
        }
        let meet = match (p.get(i), q.get(j)) {
            (None, None) => true,
            // A star matches nothing, or eats one character of the other.
            (Some(GlobTok::Star), _) => go(p, q, i + 1, j, memo) || (j < q.len() && go(p, q, i, j + 1, memo)),
            (_, Some(GlobTok::Star)) => go(p, q, i, j + 1, memo) || (i < p.len() && go(p, q, i + 1, j, memo)),
            (Some(a), Some(b)) => one_char_meets(a, b) && go(p, q, i + 1, j + 1, memo),
            _ => false,
        };
        memo[i][j] = Some(meet);
        meet
    }
    go(p, q, 0, 0, &mut memo)
}

#[cfg(test)]
mod mask_tests {
    use super::masks_overlap;

    #[test]
    fn masks_overlap_when_one_name_matches_both() {
        for (a, b) in [
            ("*", "*.xml"),
            ("*.xml", "*.xml"),
            ("*.xml", "a*"),
            ("orders-*.csv", "*-2026*"),
            ("{a,b}*.txt", "b1.txt"),
            ("[ab]*", "b?"),
            ("?.xml", "*.x?l"),
            ("*a*", "*b*"),
            ("[x", "*.csv"),
        ] {
            assert!(masks_overlap(a, b), "{a} and {b} may select the same file");
            assert!(masks_overlap(b, a), "{b} and {a} (either order)");
        }
        for (a, b) in [
            ("*.xml", "*.csv"),
            ("a*", "b*"),
            ("orders-??.csv", "orders-*.xml"),
            ("[ab]*", "c*"),
            ("[!a]*", "a*"),
            ("{a,b}.txt", "c.txt"),
            ("?", "??"),
            ("in-*.xml", "out-*"),
        ] {
            assert!(!masks_overlap(a, b), "{a} and {b} select different files");
            assert!(!masks_overlap(b, a), "{b} and {a} (either order)");
        }
    }
}

impl std::fmt::Display for Resource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resource::Listen(a) => write!(f, "{a}"),
            Resource::Folder(p) | Resource::FolderFiles(p, _) => write!(f, "{}", p.display()),
            Resource::Endpoint(e) | Resource::RemoteFiles(e, _) => f.write_str(e),
        }
    }
}

/// A resource an adapter claims, and the config key that names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub resource: Resource,
    /// The key of the adapter's table that configures it (`address`, `path`).
    pub key: &'static str,
    /// No other location or port may claim the same resource exclusively
    /// (two listeners on one port, two readers of one folder).
    pub exclusive: bool,
}

impl Claim {
    pub fn exclusive(key: &'static str, resource: Resource) -> Self {
        Claim {
            resource,
            key,
            exclusive: true,
        }
    }

    pub fn shared(key: &'static str, resource: Resource) -> Self {
        Claim {
            resource,
            key,
            exclusive: false,
        }
    }

    /// Whether the two cannot both be held: both exclusive, same resource.
    pub fn conflicts_with(&self, other: &Claim) -> bool {
        self.exclusive && other.exclusive && self.resource.same_as(&other.resource)
    }
}

/// A receive adapter's configuration (`adapter = { type = "...", ... }` of
/// a receive location). See `docs/adapters.md` for the contract.
pub trait ReceiveAdapter: std::fmt::Debug + Send + Sync + 'static {
    /// Resolve relative paths against the configuration file's folder `base`.
    fn resolve_paths(&mut self, base: &Path);
    /// Check the configuration and build the source. Called when the
    /// configuration is loaded (errors are configuration errors) and again
    /// when the node starts; it must not take resources (that is
    /// [`Source::bind`]).
    fn build(&self) -> Result<Box<dyn Source>, AdapterError>;
    /// What it takes for itself: the host refuses two locations or ports
    /// whose exclusive claims collide.
    fn resources(&self) -> Vec<Claim> {
        Vec::new()
    }
    /// [`Exchange::OneWay`] or [`Exchange::RequestResponse`].
    fn exchange(&self) -> Exchange {
        Exchange::OneWay
    }
    /// Request-response: how long a response abandoned by its client stays
    /// suspended before the node terminates it.
    fn abandoned_keep(&self) -> Option<Duration> {
        None
    }
    /// The properties every message of this location carries, promoted,
    /// whatever its peer sends (besides `receive.port`, `receive.location`
    /// and `received_at`, which every location sets): a send port whose
    /// filter confines it to the location may rely on them (see
    /// [`SendAdapter::needs`]). Only what is always there.
    fn always_promotes(&self) -> Vec<Key> {
        Vec::new()
    }
}

/// A property a send port cannot send a message without: a macro of its
/// configuration (`file_name`, `url`) that renders it.
#[derive(Debug, Clone, PartialEq)]
pub struct Need {
    /// The configuration key that uses it (`file_name`, `url`).
    pub key: &'static str,
    /// The macro as written: `%property:order.id%`, `%SourceFileName%`.
    pub macro_text: String,
    pub property: Key,
}

/// A send adapter's configuration (`adapter = { type = "...", ... }` of a
/// send port or its backup).
pub trait SendAdapter: std::fmt::Debug + Send + Sync + 'static {
    /// Resolve relative paths against the configuration file's folder `base`.
    fn resolve_paths(&mut self, base: &Path);
    /// Check the configuration and build the transmitter.
    fn build(&self) -> Result<Arc<dyn Transmitter>, AdapterError>;
    /// What it takes or talks to (usually shared: many ports may send to
    /// one folder or URL).
    fn resources(&self) -> Vec<Claim> {
        Vec::new()
    }
    /// [`Exchange::OneWay`] or [`Exchange::SolicitResponse`].
    fn exchange(&self) -> Exchange {
        Exchange::OneWay
    }
    /// How many messages a port of this adapter sends at once when its
    /// `concurrency` is not set: what suits the transport. Each delivery
    /// in flight is a round trip to the peer (a network peer: more of them
    /// keep a link busy) or work on the local machine (a folder: more of
    /// them contend for the same disk and directory, and cost more than
    /// they bring).
    fn default_concurrency(&self) -> usize {
        8
    }
    /// Whether it delivers a message in parts it keeps track of (a mail's
    /// recipients, [`TransmitError::progress`](crate::TransmitError::progress)):
    /// such a port cannot send batches (a batch is a new message each
    /// time, so what was done would be done again).
    fn delivers_in_parts(&self) -> bool {
        false
    }
    /// The properties it cannot send a message without (its macros): the
    /// host warns at load when the port's filter does not guarantee one,
    /// and a message without one fails with
    /// [`TransmitError::needs_edit`](crate::TransmitError::needs_edit).
    fn needs(&self) -> Vec<Need> {
        Vec::new()
    }
}

/// Generates `ReceiveAdapterConfig` and `SendAdapterConfig`: one variant
/// per registered adapter, chosen by `type` (the name before `=>`), each
/// boxed, with the trait object, the `type` name and a downcast.
macro_rules! adapters {
    (
        receive { $( $(#[$rm:meta])* $rname:ident => $rty:ty ),* $(,)? }
        send { $( $(#[$sm:meta])* $sname:ident => $sty:ty ),* $(,)? }
    ) => {
        $crate::registry::adapters!(@config
            /// A receive location's adapter, chosen by `type` (see
            /// [`ReceiveAdapter`]; registered in `lib.rs`). Dereferences to
            /// the trait: the host calls `config.build()`, `config.resources()`...
            ReceiveAdapterConfig: ReceiveAdapter { $( $(#[$rm])* $rname => $rty ),* }
        );
        $crate::registry::adapters!(@config
            /// A send port's adapter, chosen by `type` (see [`SendAdapter`];
            /// registered in `lib.rs`). Dereferences to the trait.
            SendAdapterConfig: SendAdapter { $( $(#[$sm])* $sname => $sty ),* }
        );
    };
    (@config $(#[$doc:meta])* $config:ident: $adapter:ident { $( $(#[$m:meta])* $name:ident => $ty:ty ),* }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, serde::Deserialize)]
        #[serde(tag = "type")]
        #[allow(non_camel_case_types)]
        pub enum $config {
            $( $(#[$m])* $name(Box<$ty>), )*
        }

        impl $config {
            /// Its `type`.
            pub fn kind(&self) -> &'static str {
                match *self { $( $(#[$m])* Self::$name(_) => stringify!($name), )* }
            }
            /// Every `type` compiled in.
            #[allow(clippy::vec_init_then_push)]
            pub fn kinds() -> Vec<&'static str> {
                #[allow(unused_mut)]
                let mut v = Vec::new();
                $( $(#[$m])* v.push(stringify!($name)); )*
                v
            }
            pub fn adapter(&self) -> &dyn $adapter {
                match *self { $( $(#[$m])* Self::$name(ref c) => &**c, )* }
            }
            pub fn adapter_mut(&mut self) -> &mut dyn $adapter {
                match *self { $( $(#[$m])* Self::$name(ref mut c) => &mut **c, )* }
            }
            /// The adapter's own config struct, if it is a `T`.
            pub fn downcast_ref<T: 'static>(&self) -> Option<&T> {
                match *self { $( $(#[$m])* Self::$name(ref c) => (&**c as &dyn std::any::Any).downcast_ref(), )* }
            }
        }

        impl std::ops::Deref for $config {
            type Target = dyn $adapter;
            fn deref(&self) -> &Self::Target {
                self.adapter()
            }
        }

        impl std::ops::DerefMut for $config {
            fn deref_mut(&mut self) -> &mut Self::Target {
                self.adapter_mut()
            }
        }
    };
}
pub(crate) use adapters;
