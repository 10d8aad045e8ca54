//! Who is asking: every request but the health answers and the login page
//! carries `Authorization: Bearer <token>` or a browser session's cookie
//! (`sluice_session`); the user and role come from the box on every
//! request (a revoked token, an ended session or a removed user is refused
//! at once). A request that changes anything with a session's cookie must
//! carry the session's CSRF token in `X-CSRF-Token` (a token request needs
//! none: nothing sends it on its own). Failed attempts are counted per
//! client address: past
//! [`FAILURES_ALLOWED`] in [`FAILURE_WINDOW`], what the address sends
//! without a valid token is answered 429 (not 401) until the window ends;
//! a valid token is still served (another client behind the same address).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, header};
use sluice_adapters::support::guard::RateLimited;
use sluice_ops::access::{self, Permission, Principal};
use sluice_ops::audit::Actor;
use sluice_ops::{ErrorCode, OpsError};

use crate::{ApiState, Problem};

/// Failed attempts an address may make in a window, by default
/// (`[api] auth_failures_per_minute`).
pub const FAILURES_ALLOWED: u32 = 20;
/// The window over which failures are counted.
pub const FAILURE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most; past it the oldest window is forgotten.
const ADDRESSES_KEPT: usize = 10_000;

/// The client's address, put on each request by the listener.
#[derive(Debug, Clone, Copy)]
pub struct Peer(pub SocketAddr);

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "sluice_session";

/// Failed attempts per key (a client address, or a user name for logins),
/// in a bounded table.
pub struct Failures<K = IpAddr> {
    allowed: u32,
    by_address: Mutex<HashMap<K, (Instant, u32)>>,
    /// The log line of a refusal: a few per 10 s, however many come.
    log: RateLimited,
}

impl<K: std::hash::Hash + Eq> Default for Failures<K> {
    fn default() -> Self {
        Failures::new(FAILURES_ALLOWED)
    }
}

/// The key failures are counted under: an IPv4 address, or an IPv6
/// address's /64 (one host usually has a whole /64 to pick from).
pub(crate) fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut o = v6.octets();
                o[8..].fill(0);
                IpAddr::from(o)
            }
        },
        v4 => v4,
    }
}

impl<K: std::hash::Hash + Eq> Failures<K> {
    /// At most `allowed` failures per key in [`FAILURE_WINDOW`].
    pub fn new(allowed: u32) -> Failures<K> {
        Failures {
            allowed,
            by_address: Mutex::default(),
            log: RateLimited::with_burst(Duration::from_secs(10), 5),
        }
    }

    /// `Some(wait)` while the key may not try again.
    pub(crate) fn blocked(&self, k: &K) -> Option<Duration> {
        let table = self.by_address.lock().unwrap_or_else(|p| p.into_inner());
        let (since, n) = *table.get(k)?;
        let elapsed = since.elapsed();
        (n >= self.allowed && elapsed < FAILURE_WINDOW).then(|| FAILURE_WINDOW - elapsed)
    }

    /// Take back one failure (an attempt counted before its verdict was
    /// known, which succeeded).
    pub(crate) fn forgive(&self, k: &K) {
        let mut table = self.by_address.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, n)) = table.get_mut(k) {
            *n = n.saturating_sub(1);
        }
    }

    pub(crate) fn failed(&self, ip: K) {
        let mut table = self.by_address.lock().unwrap_or_else(|p| p.into_inner());
        if table.len() >= ADDRESSES_KEPT && !table.contains_key(&ip) {
            // Full: forget the windows that are over; if every one is
            // live (a flood from many addresses), forget them all. Once
            // per `ADDRESSES_KEPT` new addresses at most: cheap on average.
            table.retain(|_, (since, _)| since.elapsed() < FAILURE_WINDOW);
            if table.len() >= ADDRESSES_KEPT {
                // The older half goes (their windows end soonest); blocks
                // in the newer half stand. Once per `ADDRESSES_KEPT / 2`
                // new keys at most.
                let mut ages: Vec<Instant> = table.values().map(|(since, _)| *since).collect();
                ages.sort_unstable();
                let cut = ages[ages.len() / 2];
                table.retain(|_, (since, _)| *since > cut);
            }
        }
        let entry = table.entry(ip).or_insert((Instant::now(), 0));
        if entry.0.elapsed() >= FAILURE_WINDOW {
            *entry = (Instant::now(), 0);
        }
        entry.1 += 1;
    }
}

/// An authenticated request: who, with which role, from where (`Debug`
/// leaves the CSRF token out).
#[derive(Clone)]
pub struct Caller {
    pub principal: Principal,
    pub actor: Actor,
    /// A browser session's CSRF token (`None`: an API token).
    pub csrf: Option<String>,
}

impl std::fmt::Debug for Caller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Caller")
            .field("principal", &self.principal)
            .field("actor", &self.actor)
            .finish_non_exhaustive()
    }
}

/// A cookie's value from the `Cookie` headers.
pub(crate) fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| c.trim().strip_prefix(name)?.strip_prefix('='))
}

impl Caller {
    pub fn require(&self, p: Permission) -> Result<(), Problem> {
        self.principal.require(p).map_err(Problem::from)
    }
}

fn bearer(headers: &HeaderMap) -> Result<&str, Problem> {
    let missing = || {
        Problem::new(
            ErrorCode::Unauthenticated,
            "this needs an API token: send `Authorization: Bearer <token>` (an admin makes one with `sluice tokens create USER`)",
        )
    };
    let value = headers.get(header::AUTHORIZATION).ok_or_else(missing)?;
    let value = value.to_str().map_err(|_| missing())?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(token.trim()),
        _ => Err(missing()),
    }
}

impl FromRequestParts<ApiState> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<Peer>()
            .map(|p| p.0)
            .ok_or_else(|| Problem::new(ErrorCode::Internal, "no client address on the request"))?;
        let refused = |e: Problem| {
            // An address that has failed too often is told to wait,
            // whatever it sends that is not valid; a valid token from the
            // same address (another client behind the same NAT) is still
            // served.
            let blocked = state.failures.blocked(&key(peer.ip()));
            state.failures.failed(key(peer.ip()));
            match blocked {
                Some(wait) => {
                    let secs = wait.as_secs() + 1;
                    Problem::from(OpsError::RateLimited(format!(
                        "too many failed attempts from {}; try again in {secs} s",
                        peer.ip()
                    )))
                    .retry_after(secs)
                }
                None => e,
            }
        };
        let actor = |p: &Principal| Actor {
            name: p.user.clone(),
            source: peer.ip().to_string(),
        };
        // A browser: its session's cookie, and for a change its CSRF token.
        if parts.headers.get(header::AUTHORIZATION).is_none()
            && let Some(id) = cookie(&parts.headers, SESSION_COOKIE)
        {
            let session = match access::resume_session(&*state.b, id, state.clock.now_ms()).await {
                Ok(s) => s,
                Err(e) if e.error_code() == ErrorCode::Unauthenticated => return Err(refused(e.into())),
                Err(e) => return Err(e.into()),
            };
            if !parts.method.is_safe() {
                let sent = parts.headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
                if !sent.is_some_and(|t| access::same_secret(t, &session.csrf)) {
                    return Err(Problem::from(OpsError::Forbidden(
                        "a change from a browser session needs its CSRF token in X-CSRF-Token".into(),
                    )));
                }
            }
            return Ok(Caller {
                actor: actor(&session.principal),
                principal: session.principal,
                csrf: Some(session.csrf),
            });
        }
        let token = bearer(&parts.headers).map_err(refused)?;
        match access::authenticate_token(&*state.b, token).await {
            Ok(principal) => Ok(Caller {
                actor: actor(&principal),
                principal,
                csrf: None,
            }),
            Err(e) if e.error_code() == ErrorCode::Unauthenticated => {
                if let Some(left_out) = state.failures.log.allow() {
                    tracing::info!(client = %peer.ip(), reason = %e, left_out, "API request refused: not authenticated");
                }
                Err(refused(e.into()))
            }
            Err(e) => Err(e.into()),
        }
    }
}

/// A caller whose role may operate (operator, admin): refused before the
/// request's body is read, so a viewer cannot make the node read one.
pub struct Operating(pub Caller);

/// A caller whose role may manage users (admin), refused before the body.
pub struct Administering(pub Caller);

impl FromRequestParts<ApiState> for Operating {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require(Permission::Operate)?;
        Ok(Operating(caller))
    }
}

impl FromRequestParts<ApiState> for Administering {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &ApiState) -> Result<Self, Self::Rejection> {
        let caller = Caller::from_request_parts(parts, state).await?;
        caller.require(Permission::ManageUsers)?;
        Ok(Administering(caller))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_is_blocked_after_its_failures_and_the_table_stays_bounded() {
        let f: Failures = Failures::default();
        let ip = |t: &str| key(t.parse().unwrap());
        for _ in 0..FAILURES_ALLOWED - 1 {
            f.failed(ip("192.0.2.1"));
        }
        assert!(f.blocked(&ip("192.0.2.1")).is_none());
        f.failed(ip("192.0.2.1"));
        let wait = f.blocked(&ip("192.0.2.1")).expect("blocked");
        assert!(wait <= FAILURE_WINDOW);
        assert!(f.blocked(&ip("192.0.2.2")).is_none(), "only that address");
        for n in 0..(ADDRESSES_KEPT as u32 + 50) {
            f.failed(IpAddr::from(n.to_be_bytes()));
        }
        assert!(f.by_address.lock().unwrap().len() <= ADDRESSES_KEPT);
        // An IPv6 host's whole /64 is one address.
        let f: Failures = Failures::new(2);
        f.failed(ip("2001:db8::1"));
        f.failed(ip("2001:db8::ffff:2"));
        assert!(f.blocked(&ip("2001:db8::3")).is_some());
        assert!(f.blocked(&ip("2001:db8:0:1::3")).is_none());
    }
}
