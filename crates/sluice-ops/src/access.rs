//! Who may do what: users with a role and an Argon2 password hash, API
//! tokens stored as their SHA-256 only, and the checks every front end
//! makes before it acts ([`Principal::require`]).
//!
//! Hashing a password costs Argon2id's default memory (19 MiB) and tens of
//! milliseconds, on purpose; at most one runs at a time in the process
//! ([`HASHING`]), so a flood of logins costs time, never memory. A login
//! for an unknown user hashes too, so the answer's time does not tell
//! whether the user exists.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use serde::Serialize;
use sha2::{Digest, Sha256};
use sluice_msgbox::{MessageBox, Millis, NewToken, Role, UserRecord};

use crate::error::read_error as read;
use crate::{OpsError, ms_to_text};

/// At most one password hashed at a time in the process.
static HASHING: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

/// Shortest and longest password accepted (bytes): a long one would only
/// make each hash slower.
pub const PASSWORD_LEN: std::ops::RangeInclusive<usize> = 8..=1024;

/// Longest user name (characters).
pub const NAME_MAX: usize = 64;

/// What an action needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    /// Status, ports, metadata, context, tracking, the audit log: every role.
    Read,
    /// A message's body: operator and admin.
    ReadBodies,
    /// Resume, resubmit, terminate, stop and start: operator and admin.
    Operate,
    /// Users and their tokens: admin.
    ManageUsers,
}

impl Permission {
    fn least(self) -> Role {
        match self {
            Permission::Read => Role::Viewer,
            Permission::ReadBodies | Permission::Operate => Role::Operator,
            Permission::ManageUsers => Role::Admin,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Permission::Read => "read the node's state",
            Permission::ReadBodies => "read message bodies",
            Permission::Operate => "change messages, ports or locations",
            Permission::ManageUsers => "manage users and tokens",
        }
    }
}

/// Whoever asks: a user with a role (through a token or a session).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    pub user: String,
    pub role: Role,
}

impl Principal {
    pub fn may(&self, p: Permission) -> bool {
        self.role >= p.least()
    }

    /// `forbidden` unless the role allows `p`.
    pub fn require(&self, p: Permission) -> Result<(), OpsError> {
        if self.may(p) {
            Ok(())
        } else {
            Err(OpsError::Forbidden(format!(
                "user `{}` ({}) may not {}: it needs the {} role",
                self.user,
                self.role,
                p.what(),
                p.least()
            )))
        }
    }
}

/// A user as shown: never the hash.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct UserInfo {
    pub name: String,
    pub role: Role,
    pub created_at: String,
}

impl From<UserRecord> for UserInfo {
    fn from(u: UserRecord) -> Self {
        UserInfo {
            name: u.name,
            role: u.role,
            created_at: ms_to_text(u.created_at),
        }
    }
}

/// A user name must be 1 to [`NAME_MAX`] letters, digits, `.`, `_`, `-` or
/// `@`, starting with a letter or digit (so it never reads as an option, a
/// path or a `cli:` actor).
pub fn check_name(name: &str) -> Result<(), OpsError> {
    let ok = !name.is_empty()
        && name.chars().count() <= NAME_MAX
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(OpsError::InvalidArgument(format!(
            "`{}` is not a user name: 1 to {NAME_MAX} letters, digits, `.`, `_`, `-` or `@`, starting with a letter or digit",
            name.escape_default()
        )))
    }
}

/// Hash a password (Argon2id, a random salt), one at a time in the process.
pub async fn hash_password(password: &str) -> Result<String, OpsError> {
    if !PASSWORD_LEN.contains(&password.len()) {
        return Err(OpsError::InvalidArgument(format!(
            "a password must be {} to {} bytes long",
            PASSWORD_LEN.start(),
            PASSWORD_LEN.end()
        )));
    }
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).map_err(|e| OpsError::Internal(format!("no random salt: {e}")))?;
    let password = password.to_string();
    hashing(move || {
        let salt = SaltString::encode_b64(&salt).map_err(|e| OpsError::Internal(format!("salt: {e}")))?;
        argon2::Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| OpsError::Internal(format!("hashing a password: {e}")))
    })
    .await
}

/// Run a hash on a blocking thread, holding the process's one hashing slot.
async fn hashing<T: Send + 'static>(f: impl FnOnce() -> Result<T, OpsError> + Send + 'static) -> Result<T, OpsError> {
    let _slot = HASHING
        .acquire()
        .await
        .map_err(|_| OpsError::Internal("the hashing slot is closed".into()))?;
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| OpsError::Internal(format!("hashing stopped: {e}")))?
}

/// A hash of nothing anyone knows, checked for unknown users.
fn decoy() -> &'static str {
    "$argon2id$v=19$m=19456,t=2,p=1$c2x1aWNlLWRlY295LXNhbHQ$qZ8tXHq/ZBlZf9X6vDzrnkvVDLHZ0pT3Qw7V2hYwq8E"
}

/// The user, if the name and password are theirs; `unauthenticated` (the
/// same answer whether the name or the password is wrong) otherwise.
pub async fn log_in(b: &dyn MessageBox, name: &str, password: &str) -> Result<Principal, OpsError> {
    let wrong = || OpsError::Unauthenticated("wrong user name or password".into());
    let user = if check_name(name).is_ok() {
        b.user(name).await.map_err(read(format!("reading user `{name}`")))?
    } else {
        None
    };
    let stored = user.as_ref().map_or(decoy(), |u| u.password_hash.as_str()).to_string();
    let password = password.to_string();
    let long = !PASSWORD_LEN.contains(&password.len());
    let matches = hashing(move || {
        let parsed = PasswordHash::new(&stored).map_err(|e| OpsError::Internal(format!("a stored hash: {e}")))?;
        Ok(!long
            && argon2::Argon2::default()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok())
    })
    .await?;
    match user {
        Some(u) if matches => Ok(Principal {
            user: u.name,
            role: u.role,
        }),
        _ => Err(wrong()),
    }
}

/// Add a user with a role and a password (hashed here).
pub async fn add_user(
    b: &dyn MessageBox,
    name: &str,
    role: Role,
    password: &str,
    now: Millis,
) -> Result<UserInfo, OpsError> {
    check_name(name)?;
    let password_hash = hash_password(password).await?;
    let user = UserRecord {
        name: name.to_string(),
        role,
        password_hash,
        created_at: now,
    };
    b.add_user(user.clone())
        .await
        .map_err(read(format!("adding user `{name}`")))?;
    Ok(user.into())
}

/// Remove a user and their tokens; how many tokens went.
pub async fn remove_user(b: &dyn MessageBox, name: &str) -> Result<u64, OpsError> {
    b.remove_user(name)
        .await
        .map_err(read(format!("removing user `{name}`")))
}

/// Users in name order after `after`.
pub async fn users(b: &dyn MessageBox, after: Option<&str>, limit: usize) -> Result<Vec<UserInfo>, OpsError> {
    let users = b.users(after, limit).await.map_err(read("listing users"))?;
    Ok(users.into_iter().map(UserInfo::from).collect())
}

/// A token just made: the only time its secret is seen (`Debug` leaves it out).
#[derive(Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CreatedToken {
    pub id: String,
    pub user: String,
    pub token: String,
}

impl std::fmt::Debug for CreatedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedToken")
            .field("id", &self.id)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// A token as listed: never the secret.
#[derive(Debug, Clone, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TokenInfo {
    pub id: String,
    pub user: String,
    pub role: Role,
    pub created_at: String,
}

/// Every token starts with this, so a secret scanner can find a leaked one.
pub const TOKEN_PREFIX: &str = "sluice_";

/// Make an API token for a user: `sluice_<id>_<secret>`, 32 random bytes of
/// secret; the box keeps its SHA-256 only.
pub async fn create_token(b: &dyn MessageBox, user: &str, now: Millis) -> Result<CreatedToken, OpsError> {
    use base64::Engine;
    let mut random = [0u8; 40];
    getrandom::fill(&mut random).map_err(|e| OpsError::Internal(format!("no random token: {e}")))?;
    let id: String = random[..8].iter().map(|b| format!("{b:02x}")).collect();
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&random[8..]);
    let token = format!("{TOKEN_PREFIX}{id}_{secret}");
    b.add_token(NewToken {
        id: id.clone(),
        user: user.to_string(),
        hash: token_hash(&token),
        created_at: now,
    })
    .await
    .map_err(read(format!("making a token for user `{user}`")))?;
    Ok(CreatedToken {
        id,
        user: user.to_string(),
        token,
    })
}

fn token_hash(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The user a token belongs to, with their role now; `unauthenticated` for
/// a token that is not (or no longer) valid. The token is never echoed.
pub async fn authenticate_token(b: &dyn MessageBox, token: &str) -> Result<Principal, OpsError> {
    // Tokens are short; anything longer is not one (and is not hashed).
    if token.len() > 256 || !token.starts_with(TOKEN_PREFIX) {
        return Err(OpsError::Unauthenticated("that is not a Sluice API token".into()));
    }
    match b
        .token(token_hash(token))
        .await
        .map_err(read("looking up an API token"))?
    {
        Some(t) => Ok(Principal {
            user: t.user,
            role: t.role,
        }),
        None => Err(OpsError::Unauthenticated(
            "the token is not valid (revoked, its user removed, or never made)".into(),
        )),
    }
}

/// Tokens, of one user or all.
pub async fn tokens(b: &dyn MessageBox, user: Option<&str>) -> Result<Vec<TokenInfo>, OpsError> {
    let tokens = b.tokens(user).await.map_err(read("listing API tokens"))?;
    Ok(tokens
        .into_iter()
        .map(|t| TokenInfo {
            id: t.id,
            user: t.user,
            role: t.role,
            created_at: ms_to_text(t.created_at),
        })
        .collect())
}

/// Revoke a token by its id (`not_found` if there is none).
pub async fn revoke_token(b: &dyn MessageBox, id: &str) -> Result<(), OpsError> {
    match b
        .revoke_token(id)
        .await
        .map_err(read(format!("revoking token `{id}`")))?
    {
        true => Ok(()),
        false => Err(OpsError::NotFound(format!("no token `{id}`"))),
    }
}

/// A browser session lasts at most this long (ms), however active.
pub const SESSION_TTL: Millis = 12 * 3600 * 1000;
/// A browser session unused this long (ms) has ended.
pub const SESSION_IDLE: Millis = 30 * 60 * 1000;
/// A session's use is noted at most this often (ms).
const SESSION_TOUCH: Millis = 60 * 1000;

/// A session just started: the cookie's value and the CSRF token, seen
/// here only (`Debug` leaves both out).
#[derive(Clone)]
pub struct StartedSession {
    pub id: String,
    pub csrf: String,
    pub expires_at: Millis,
}

impl std::fmt::Debug for StartedSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StartedSession")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Who a session belongs to, and the CSRF token its changes must carry.
#[derive(Clone)]
pub struct SessionCaller {
    pub principal: Principal,
    pub csrf: String,
    pub expires_at: Millis,
}

fn random_text(n: usize) -> Result<String, OpsError> {
    use base64::Engine;
    let mut random = vec![0u8; n];
    getrandom::fill(&mut random).map_err(|e| OpsError::Internal(format!("no randomness: {e}")))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random))
}

/// Start a browser session for a user who just logged in.
pub async fn start_session(b: &dyn MessageBox, who: &Principal, now: Millis) -> Result<StartedSession, OpsError> {
    let (id, csrf) = (random_text(32)?, random_text(32)?);
    let expires_at = now + SESSION_TTL;
    b.add_session(sluice_msgbox::NewSession {
        hash: token_hash(&id),
        user: who.user.clone(),
        csrf: csrf.clone(),
        created_at: now,
        expires_at,
    })
    .await
    .map_err(read(format!("starting a session for user `{}`", who.user)))?;
    Ok(StartedSession { id, csrf, expires_at })
}

/// The session a cookie names, if it is still going: `unauthenticated`
/// once it expired, idled out, was ended, or its user was removed.
pub async fn resume_session(b: &dyn MessageBox, id: &str, now: Millis) -> Result<SessionCaller, OpsError> {
    let ended = || OpsError::Unauthenticated("the session has ended; log in again".into());
    if id.is_empty() || id.len() > 100 {
        return Err(ended());
    }
    let hash = token_hash(id);
    let found = b.session(hash).await.map_err(read("looking up a session"))?;
    let Some(s) = found else { return Err(ended()) };
    if now >= s.expires_at || now.saturating_sub(s.seen_at) >= SESSION_IDLE {
        // Over: gone now, not at the next purge.
        b.remove_session(hash).await.map_err(read("ending a session"))?;
        return Err(ended());
    }
    if now.saturating_sub(s.seen_at) >= SESSION_TOUCH {
        b.touch_session(hash, now)
            .await
            .map_err(read("noting a session's use"))?;
    }
    Ok(SessionCaller {
        principal: Principal {
            user: s.user,
            role: s.role,
        },
        csrf: s.csrf,
        expires_at: s.expires_at,
    })
}

/// End the session a cookie names (logging out); nothing if it is gone.
pub async fn end_session(b: &dyn MessageBox, id: &str) -> Result<(), OpsError> {
    if id.is_empty() || id.len() > 100 {
        return Ok(());
    }
    b.remove_session(token_hash(id))
        .await
        .map_err(read("ending a session"))?;
    Ok(())
}

/// Whether two secrets are equal, in time that does not depend on where
/// they first differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_allow_what_they_should() {
        let p = |role| Principal { user: "u".into(), role };
        let viewer = p(Role::Viewer);
        assert!(viewer.may(Permission::Read));
        assert!(!viewer.may(Permission::ReadBodies));
        assert!(!viewer.may(Permission::Operate));
        let e = viewer.require(Permission::ReadBodies).unwrap_err();
        assert_eq!(e.code(), "forbidden");
        assert_eq!(e.http_status(), 403);
        let operator = p(Role::Operator);
        assert!(operator.may(Permission::ReadBodies) && operator.may(Permission::Operate));
        assert!(!operator.may(Permission::ManageUsers));
        assert!(p(Role::Admin).may(Permission::ManageUsers));
    }

    #[tokio::test]
    async fn sessions_end_when_they_expire_or_idle_and_are_never_echoed() {
        use sluice_msgbox::SystemClock;
        use sluice_msgbox_sqlite::{Options, SqliteBox};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBox::open(dir.path(), Arc::new(SystemClock), Options::default()).unwrap();
        let b: &dyn MessageBox = &b;
        let olga = add_user(b, "olga", Role::Operator, "s3cret-pass", 0).await.unwrap();
        let who = Principal {
            user: olga.name,
            role: olga.role,
        };
        let t0 = 1_000_000;
        let s = start_session(b, &who, t0).await.unwrap();
        assert!(!format!("{s:?}").contains(&s.id) && !format!("{s:?}").contains(&s.csrf));
        let back = resume_session(b, &s.id, t0 + 1000).await.unwrap();
        assert_eq!(back.principal, who);
        assert!(same_secret(&back.csrf, &s.csrf) && !same_secret(&back.csrf, "x"));
        // Used within the idle limit, again and again: it goes on.
        let mut t = t0;
        for _ in 0..3 {
            t += SESSION_IDLE - 1000;
            resume_session(b, &s.id, t).await.unwrap();
        }
        // Idle too long: ended, and stays ended.
        let e = resume_session(b, &s.id, t + SESSION_IDLE).await.err().unwrap();
        assert_eq!(e.code(), "unauthenticated");
        assert!(resume_session(b, &s.id, t + 1).await.is_err());
        // Past its lifetime, however active.
        let s = start_session(b, &who, t0).await.unwrap();
        let mut t = t0;
        while t + SESSION_IDLE / 2 < t0 + SESSION_TTL {
            t += SESSION_IDLE / 2;
            resume_session(b, &s.id, t).await.unwrap();
        }
        assert!(resume_session(b, &s.id, t0 + SESSION_TTL).await.is_err());
        // Logged out.
        let s = start_session(b, &who, t0).await.unwrap();
        end_session(b, &s.id).await.unwrap();
        assert!(resume_session(b, &s.id, t0 + 1).await.is_err());
        assert!(resume_session(b, "", t0).await.is_err());
    }

    #[test]
    fn user_names_are_plain() {
        for ok in ["olga", "a", "ops.team_1-x@site", &"x".repeat(NAME_MAX)] {
            check_name(ok).unwrap();
        }
        for bad in [
            "",
            "-rf",
            ".hidden",
            "a b",
            "cli:me",
            "a/b",
            "ü",
            &"x".repeat(NAME_MAX + 1),
        ] {
            assert_eq!(check_name(bad).unwrap_err().code(), "invalid_argument", "{bad}");
        }
    }

    #[tokio::test]
    async fn the_decoy_hash_parses_and_matches_nothing_short() {
        let parsed = PasswordHash::new(decoy()).unwrap();
        assert!(argon2::Argon2::default().verify_password(b"password", &parsed).is_err());
        let h = hash_password("correct horse").await.unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        let parsed = PasswordHash::new(&h).unwrap();
        assert!(
            argon2::Argon2::default()
                .verify_password(b"correct horse", &parsed)
                .is_ok()
        );
        assert!(
            argon2::Argon2::default()
                .verify_password(b"correct horsf", &parsed)
                .is_err()
        );
        assert_eq!(hash_password("short").await.unwrap_err().code(), "invalid_argument");
    }

    #[tokio::test]
    async fn passwords_and_tokens_let_in_exactly_their_user() {
        use sluice_msgbox::SystemClock;
        use sluice_msgbox_sqlite::{Options, SqliteBox};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let b = SqliteBox::open(dir.path(), Arc::new(SystemClock), Options::default()).unwrap();
        let b: &dyn MessageBox = &b;
        add_user(b, "olga", Role::Operator, "s3cret-pass", 1).await.unwrap();
        let dup = add_user(b, "olga", Role::Admin, "other-pass", 2).await.unwrap_err();
        assert_eq!(dup.code(), "conflict");
        let p = log_in(b, "olga", "s3cret-pass").await.unwrap();
        assert_eq!(
            p,
            Principal {
                user: "olga".into(),
                role: Role::Operator
            }
        );
        for (name, password) in [
            ("olga", "s3cret-pasS"),
            ("nobody", "s3cret-pass"),
            ("olga", ""),
            ("bad name", "x"),
        ] {
            let e = log_in(b, name, password).await.unwrap_err();
            assert_eq!(e.code(), "unauthenticated", "{name}");
            assert_eq!(
                e.to_string(),
                "wrong user name or password",
                "the same answer for every miss"
            );
        }
        let stored = b.user("olga").await.unwrap().unwrap().password_hash;
        assert!(!stored.contains("s3cret-pass") && stored.starts_with("$argon2id$"));

        let made = create_token(b, "olga", 3).await.unwrap();
        assert!(
            made.token.starts_with(&format!("{TOKEN_PREFIX}{}_", made.id)),
            "{}",
            made.token
        );
        assert_eq!(authenticate_token(b, &made.token).await.unwrap().user, "olga");
        let listed = tokens(b, None).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(!serde_json::to_string(&listed).unwrap().contains(&made.token[20..]));
        // One character off, another prefix, too long: not valid, and not echoed.
        let mut off = made.token.clone();
        off.pop();
        off.push('!');
        for bad in [
            off,
            made.token.replacen("sluice_", "sluicE_", 1),
            format!("{}{}", made.token, "x".repeat(300)),
        ] {
            let e = authenticate_token(b, &bad).await.unwrap_err();
            assert_eq!(e.code(), "unauthenticated");
            assert!(!e.to_string().contains(&made.token[20..]));
        }
        assert_eq!(create_token(b, "nobody", 4).await.unwrap_err().code(), "not_found");
        // The role is the user's now; a removed user's token is dead.
        assert_eq!(remove_user(b, "olga").await.unwrap(), 1);
        assert_eq!(
            authenticate_token(b, &made.token).await.unwrap_err().code(),
            "unauthenticated"
        );
        assert_eq!(remove_user(b, "olga").await.unwrap_err().code(), "not_found");
        assert_eq!(revoke_token(b, &made.id).await.unwrap_err().code(), "not_found");
    }
}
