//! What the box keeps about the people who operate it: users (with a role
//! and a password hash), API tokens (only their hash) and the audit log of
//! what they did. The box stores and finds; hashing, checking and deciding
//! who may do what is the operations library's (`sluice-ops`), so every
//! backend keeps exactly the same rules.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Millis;

/// What a user may do. Each role may do everything the ones before it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Role {
    /// Sees status, metadata, context and tracking; never a body; changes nothing.
    Viewer,
    /// Also reads bodies, and resumes, resubmits, terminates, stops and starts.
    Operator,
    /// Also manages users.
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Viewer, Role::Operator, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("`{s}` is not a role (viewer, operator or admin)"))
    }
}

/// A user as the box keeps it (`Debug` leaves the hash out).
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub name: String,
    pub role: Role,
    /// The password's hash in PHC string form (`$argon2id$...`); never the password.
    pub password_hash: String,
    pub created_at: Millis,
}

/// An API token as the box keeps it: never the token, only its SHA-256
/// (`Debug` leaves the hash out).
#[derive(Clone, PartialEq, Eq)]
pub struct NewToken {
    /// The token's public id (shown in lists, used to revoke it).
    pub id: String,
    pub user: String,
    pub hash: [u8; 32],
    pub created_at: Millis,
}

impl fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRecord")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

impl fmt::Debug for NewToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewToken")
            .field("id", &self.id)
            .field("user", &self.user)
            .field("created_at", &self.created_at)
            .finish_non_exhaustive()
    }
}

/// A token found by its hash or listed, with its user's role now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: String,
    pub user: String,
    pub role: Role,
    pub created_at: Millis,
}

/// A browser session as the box keeps it: its id's SHA-256 only.
#[derive(Clone, PartialEq, Eq)]
pub struct NewSession {
    pub hash: [u8; 32],
    pub user: String,
    /// The token its forms and requests must carry (CSRF).
    pub csrf: String,
    pub created_at: Millis,
    /// It ends then, however active.
    pub expires_at: Millis,
}

impl fmt::Debug for NewSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewSession")
            .field("user", &self.user)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// A session found by its id's hash, with its user's role now.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub user: String,
    pub role: Role,
    pub csrf: String,
    pub expires_at: Millis,
    /// When it was last used (touched at most once a minute).
    pub seen_at: Millis,
}

impl fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionRecord")
            .field("user", &self.user)
            .field("role", &self.role)
            .field("expires_at", &self.expires_at)
            .field("seen_at", &self.seen_at)
            .finish_non_exhaustive()
    }
}

/// One operator action, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEntry {
    pub at: Millis,
    /// Who: a user name (`cli` for a command run on the node's machine).
    pub actor: String,
    /// From where: the client's address, or `cli`.
    pub source: String,
    /// What, e.g. `suspended.resume`, `users.add`, `login`.
    pub action: String,
    /// On what: a suspended entry id, a message id, a user name, a query.
    pub target: String,
    /// `ok`, or the error code of the failure.
    pub result: String,
    /// More, where there is more to say (the edit, the error's message).
    pub detail: Option<String>,
}

/// A recorded action with its id (ids grow with time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    pub entry: NewAuditEntry,
}

/// What an operator can stop or disable by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum UnitKind {
    SendPort,
    ReceiveLocation,
}

impl UnitKind {
    pub fn as_str(self) -> &'static str {
        match self {
            UnitKind::SendPort => "send_port",
            UnitKind::ReceiveLocation => "receive_location",
        }
    }
}

impl FromStr for UnitKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "send_port" => Ok(UnitKind::SendPort),
            "receive_location" => Ok(UnitKind::ReceiveLocation),
            other => Err(format!("`{other}` is not a kind of unit (send_port, receive_location)")),
        }
    }
}
