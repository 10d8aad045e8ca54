//! The operators' rows: users, API tokens (hashes only) and the audit log.

use rusqlite::{OptionalExtension, params};
use sluice_msgbox::*;

use super::Writer;
use crate::storage;

impl Writer {
    /// `NoSuchUser` unless the user exists (what a token or a session
    /// belongs to).
    fn require_user(&mut self, name: &str, doing: &str) -> Result<()> {
        let found: Option<i64> = self
            .conn
            .prepare_cached("SELECT 1 FROM users WHERE name = ?1")
            .and_then(|mut s| s.query_row([name], |r| r.get(0)).optional())
            .map_err(storage(doing))?;
        match found {
            Some(_) => Ok(()),
            None => Err(BoxError::NoSuchUser(name.to_string())),
        }
    }

    pub fn add_user(&mut self, user: UserRecord) -> Result<()> {
        let doing = format!("adding user `{}`", user.name);
        let n = self
            .conn
            .prepare_cached(
                "INSERT INTO users (name, role, password_hash, created_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (name) DO NOTHING",
            )
            .and_then(|mut s| {
                s.execute(params![
                    user.name,
                    user.role.as_str(),
                    user.password_hash,
                    user.created_at
                ])
            })
            .map_err(storage(&doing))?;
        if n == 0 {
            return Err(BoxError::UserExists(user.name));
        }
        Ok(())
    }

    pub fn remove_user(&mut self, name: &str) -> Result<u64> {
        let doing = format!("removing user `{name}`");
        let last_admin: bool = self
            .conn
            .prepare_cached(
                "SELECT role = 'admin' AND (SELECT count(*) FROM users WHERE role = 'admin') = 1
                 FROM users WHERE name = ?1",
            )
            .and_then(|mut s| s.query_row([name], |r| r.get(0)).optional())
            .map_err(storage(&doing))?
            .unwrap_or(false);
        if last_admin {
            return Err(BoxError::LastAdmin(name.to_string()));
        }
        let n = self
            .conn
            .prepare_cached("DELETE FROM users WHERE name = ?1")
            .and_then(|mut s| s.execute([name]))
            .map_err(storage(&doing))?;
        if n == 0 {
            return Err(BoxError::NoSuchUser(name.to_string()));
        }
        let tokens = self
            .conn
            .prepare_cached("DELETE FROM tokens WHERE user = ?1")
            .and_then(|mut s| s.execute([name]))
            .map_err(storage(&doing))?;
        self.conn
            .prepare_cached("DELETE FROM sessions WHERE user = ?1")
            .and_then(|mut s| s.execute([name]))
            .map_err(storage(&doing))?;
        Ok(tokens as u64)
    }

    pub fn add_token(&mut self, token: NewToken) -> Result<()> {
        let doing = format!("adding token `{}` of user `{}`", token.id, token.user);
        self.require_user(&token.user, &doing)?;
        let n = self
            .conn
            .prepare_cached(
                "INSERT INTO tokens (id, user, hash, created_at) VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
            )
            .and_then(|mut s| s.execute(params![token.id, token.user, token.hash, token.created_at]))
            .map_err(storage(&doing))?;
        if n == 0 {
            return Err(BoxError::TokenExists(token.id));
        }
        Ok(())
    }

    pub fn revoke_token(&mut self, id: &str) -> Result<bool> {
        let doing = format!("revoking token `{id}`");
        let n = self
            .conn
            .prepare_cached("DELETE FROM tokens WHERE id = ?1")
            .and_then(|mut s| s.execute([id]))
            .map_err(storage(&doing))?;
        Ok(n > 0)
    }

    pub fn record_audit(&mut self, e: NewAuditEntry) -> Result<i64> {
        let doing = format!("recording `{}` by `{}` in the audit log", e.action, e.actor);
        self.conn
            .prepare_cached(
                "INSERT INTO audit (at, actor, source, action, target, result, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .and_then(|mut s| s.execute(params![e.at, e.actor, e.source, e.action, e.target, e.result, e.detail]))
            .map_err(storage(&doing))?;
        Ok(self.conn.last_insert_rowid())
    }

    pub fn purge_audit(&mut self, before: Millis, limit: usize) -> Result<u64> {
        let doing = "purging old audit entries";
        // Ids grow with time: the oldest `limit`, up to the first one not old enough.
        let n = self
            .conn
            .prepare_cached(
                "DELETE FROM audit WHERE id IN (SELECT id FROM audit ORDER BY id LIMIT ?2)
                 AND id < coalesce(
                     (SELECT id FROM (SELECT id, at FROM audit ORDER BY id LIMIT ?2) WHERE at >= ?1 ORDER BY id LIMIT 1),
                     9223372036854775807)",
            )
            .and_then(|mut s| s.execute(params![before, limit as i64]))
            .map_err(storage(doing))?;
        if n > 0 {
            self.freed();
        }
        Ok(n as u64)
    }

    pub fn set_unit_stopped(&mut self, kind: UnitKind, name: &str, stopped: bool) -> Result<bool> {
        let doing = format!(
            "marking {} `{name}` {}",
            kind.as_str(),
            if stopped { "stopped" } else { "running" }
        );
        let sql = if stopped {
            "INSERT INTO stopped_units (kind, name) VALUES (?1, ?2) ON CONFLICT DO NOTHING"
        } else {
            "DELETE FROM stopped_units WHERE kind = ?1 AND name = ?2"
        };
        let n = self
            .conn
            .prepare_cached(sql)
            .and_then(|mut s| s.execute([kind.as_str(), name]))
            .map_err(storage(&doing))?;
        Ok(n > 0)
    }

    pub fn add_session(&mut self, session: NewSession) -> Result<()> {
        let doing = format!("starting a session for user `{}`", session.user);
        self.require_user(&session.user, &doing)?;
        self.conn
            .prepare_cached(
                "INSERT INTO sessions (hash, user, csrf, created_at, expires_at, seen_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?4)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    session.hash,
                    session.user,
                    session.csrf,
                    session.created_at,
                    session.expires_at
                ])
            })
            .map_err(storage(&doing))?;
        Ok(())
    }

    pub fn touch_session(&mut self, hash: [u8; 32], at: Millis) -> Result<()> {
        self.conn
            .prepare_cached("UPDATE sessions SET seen_at = max(seen_at, ?2) WHERE hash = ?1")
            .and_then(|mut s| s.execute(params![hash, at]))
            .map_err(storage("noting a session's use"))?;
        Ok(())
    }

    pub fn remove_session(&mut self, hash: [u8; 32]) -> Result<bool> {
        let n = self
            .conn
            .prepare_cached("DELETE FROM sessions WHERE hash = ?1")
            .and_then(|mut s| s.execute([hash]))
            .map_err(storage("ending a session"))?;
        Ok(n > 0)
    }

    pub fn purge_sessions(&mut self, now: Millis, idle_before: Millis, limit: usize) -> Result<u64> {
        let n = self
            .conn
            .prepare_cached(
                "DELETE FROM sessions WHERE hash IN
                 (SELECT hash FROM sessions WHERE expires_at <= ?1 OR seen_at < ?2 LIMIT ?3)",
            )
            .and_then(|mut s| s.execute(params![now, idle_before, limit as i64]))
            .map_err(storage("purging ended sessions"))?;
        Ok(n as u64)
    }
}
