//! A bounded pool of connections to one server (FTP control connections,
//! SSH sessions): at most `max` lent at once, idle ones kept for the next
//! user and checked before they are lent again.

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How to make a connection and tell whether an idle one still answers.
#[async_trait]
pub trait Connector: Send + Sync {
    type Conn: Send;
    /// A new connection, ready for use; the error says what failed, where.
    async fn dial(&self) -> Result<Self::Conn, String>;
    /// Whether an idle connection still answers (within a time limit).
    async fn alive(&self, conn: &mut Self::Conn) -> bool;
}

pub struct Pool<C> {
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<C>>,
}

/// A connection taken from the pool: given back with [`Pool::put`] when it
/// is in a known state, dropped (closed) otherwise; either way its slot is
/// free again.
pub struct Lent<C> {
    pub conn: C,
    _permit: OwnedSemaphorePermit,
}

impl<C: Send> Pool<C> {
    pub fn new(max: usize) -> Pool<C> {
        Pool {
            permits: Arc::new(Semaphore::new(max.max(1))),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// An idle connection that still answers, or a new one; waits while
    /// `max` are lent.
    pub async fn take<K: Connector<Conn = C>>(&self, connector: &K) -> Result<Lent<C>, String> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| "the connection pool is closed".to_string())?;
        loop {
            let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner).pop();
            let Some(mut conn) = idle else { break };
            if connector.alive(&mut conn).await {
                return Ok(Lent { conn, _permit: permit });
            }
        }
        let conn = connector.dial().await?;
        Ok(Lent { conn, _permit: permit })
    }

    pub fn put(&self, lent: Lent<C>) {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).push(lent.conn);
    }
}
