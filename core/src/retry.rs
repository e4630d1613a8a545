//! The retry vocabulary every component shares: whether an error may go
//! away by itself ([`ErrorClass`], with the one list of MySQL server codes
//! that do, and with the `redis` feature the one reading of a fred error),
//! and how long to wait before trying again ([`Backoff`], with the
//! `backoff` feature).
//!
//! Only the classification lives here, not the decision: each caller keeps
//! its own typed errors and says which of them an operator must act on.
//! A persisted retry schedule (the compensator's per-deadline attempts) is
//! state, not a wait, and does not belong here either.

use std::fmt;

/// What to do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// May go away by itself: retry after a [`Backoff`] step.
    Transient,
    /// Retrying cannot help; an operator has to act.
    Definite,
}

impl ErrorClass {
    pub fn is_transient(self) -> bool {
        self == ErrorClass::Transient
    }

    /// `Transient` when `transient`, else `Definite`.
    pub fn from_transient(transient: bool) -> Self {
        if transient {
            ErrorClass::Transient
        } else {
            ErrorClass::Definite
        }
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ErrorClass::Transient => "transient",
            ErrorClass::Definite => "definite",
        })
    }
}

/// MySQL and MariaDB error codes the pipeline acts on, as plain numbers so
/// this crate needs no client library: the server's own (1xxx) and the
/// client's (2xxx).
/// <https://dev.mysql.com/doc/mysql-errors/9.0/en/server-error-reference.html>,
/// <https://mariadb.com/kb/en/mariadb-error-code-reference/>
pub mod mysql {
    use super::ErrorClass;

    /// ER_CON_COUNT_ERROR: too many connections.
    pub const ER_CON_COUNT_ERROR: u16 = 1040;
    /// ER_SERVER_SHUTDOWN: shutdown in progress.
    pub const ER_SERVER_SHUTDOWN: u16 = 1053;
    /// ER_LOCK_WAIT_TIMEOUT.
    pub const ER_LOCK_WAIT_TIMEOUT: u16 = 1205;
    /// ER_LOCK_DEADLOCK: the transaction was rolled back; run it again.
    pub const ER_LOCK_DEADLOCK: u16 = 1213;
    /// ER_OPTION_PREVENTS_STATEMENT: in practice `--read-only` (or
    /// `super_read_only`) while a failover promotes another server.
    pub const ER_OPTION_PREVENTS_STATEMENT: u16 = 1290;
    /// ER_TABLE_DEF_CHANGED: a table's definition changed after a
    /// consistent snapshot began, e.g. a season table created meanwhile.
    pub const ER_TABLE_DEF_CHANGED: u16 = 1412;
    /// ER_CONNECTION_KILLED (MariaDB).
    pub const ER_CONNECTION_KILLED: u16 = 1927;
    /// CR_SERVER_GONE_ERROR: the server went away.
    pub const CR_SERVER_GONE_ERROR: u16 = 2006;
    /// CR_SERVER_LOST: the connection was lost during a query.
    pub const CR_SERVER_LOST: u16 = 2013;

    /// ER_MASTER_FATAL_ERROR_READING_BINLOG: the requested position or GTID
    /// is not in the server's binlogs any more (purged), or never was.
    pub const ER_MASTER_FATAL_ERROR_READING_BINLOG: u16 = 1236;
    /// ER_ACCESS_DENIED_ERROR: wrong user or password.
    pub const ER_ACCESS_DENIED_ERROR: u16 = 1045;
    /// ER_DBACCESS_DENIED_ERROR: no privilege on a database.
    pub const ER_DBACCESS_DENIED_ERROR: u16 = 1044;
    /// ER_SPECIFIC_ACCESS_DENIED_ERROR: e.g. REPLICATION SLAVE missing.
    pub const ER_SPECIFIC_ACCESS_DENIED_ERROR: u16 = 1227;
    /// ER_TABLEACCESS_DENIED_ERROR.
    pub const ER_TABLEACCESS_DENIED_ERROR: u16 = 1142;
    /// ER_UNKNOWN_SYSTEM_VARIABLE: the server is not the version or flavor
    /// a statement was written for; asking again will not change that.
    pub const ER_UNKNOWN_SYSTEM_VARIABLE: u16 = 1193;
    /// ER_PARSE_ERROR, for the same reason.
    pub const ER_PARSE_ERROR: u16 = 1064;

    /// The server errors that go away by themselves. The one list every
    /// component retries on; any other server error is definite.
    pub const TRANSIENT: &[u16] = &[
        ER_CON_COUNT_ERROR,
        ER_SERVER_SHUTDOWN,
        ER_LOCK_WAIT_TIMEOUT,
        ER_LOCK_DEADLOCK,
        ER_OPTION_PREVENTS_STATEMENT,
        ER_TABLE_DEF_CHANGED,
        ER_CONNECTION_KILLED,
        CR_SERVER_GONE_ERROR,
        CR_SERVER_LOST,
    ];

    /// Access denied in any of its forms: the account or its grants.
    pub fn is_access_denied(code: u16) -> bool {
        matches!(
            code,
            ER_ACCESS_DENIED_ERROR
                | ER_DBACCESS_DENIED_ERROR
                | ER_SPECIFIC_ACCESS_DENIED_ERROR
                | ER_TABLEACCESS_DENIED_ERROR
        )
    }

    /// Whether a server error code is one of [`TRANSIENT`].
    pub fn classify_code(code: u16) -> ErrorClass {
        ErrorClass::from_transient(TRANSIENT.contains(&code))
    }
}

/// How a fred error is to be taken (feature `redis`): definite when no
/// retry can connect (a refused certificate or TLS setting, a malformed
/// URL or client configuration: the errors fred itself does not reconnect
/// on), transient otherwise. Redis down, a timeout, a connection closed
/// with a command in flight and a server answering `LOADING` while it
/// reads its AOF all pass.
#[cfg(feature = "redis")]
pub fn classify_redis(e: &fred::error::Error) -> ErrorClass {
    use fred::error::ErrorKind;
    let definite = crate::redis_client::is_certificate_rejection(e)
        || matches!(e.kind(), ErrorKind::Config | ErrorKind::Url);
    ErrorClass::from_transient(!definite)
}

#[cfg(feature = "backoff")]
pub use self::backoff::{sleep, Backoff};

#[cfg(feature = "backoff")]
mod backoff {
    use backon::BackoffBuilder;
    use std::time::Duration;
    use tokio_util::sync::CancellationToken;

    /// The wait between two attempts: exponential from `min`, jittered so
    /// that processes which failed together do not retry together, capped at
    /// `max`, and [`reset`](Backoff::reset) after a success so the next
    /// outage starts small again.
    ///
    /// ```ignore
    /// let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
    /// loop {
    ///     match attempt().await {
    ///         Ok(v) => { backoff.reset(); /* … */ }
    ///         Err(e) if e.is_transient() => {
    ///             if !backoff.wait(&shutdown).await {
    ///                 return Ok(()); // shut down while waiting
    ///             }
    ///         }
    ///         Err(e) => return Err(e),
    ///     }
    /// }
    /// ```
    ///
    /// It is also an iterator of delays, so it can drive backon's
    /// `Retryable::retry` where a closure is retried as a whole.
    #[derive(Debug)]
    pub struct Backoff {
        builder: backon::ExponentialBuilder,
        delays: backon::ExponentialBackoff,
        max: Duration,
    }

    impl Backoff {
        /// Unlimited attempts from `min` to `max`.
        pub fn new(min: Duration, max: Duration) -> Self {
            let builder = backon::ExponentialBuilder::default()
                .with_min_delay(min)
                .with_max_delay(max)
                .with_jitter()
                .without_max_times();
            Self::from_builder(builder, max)
        }

        /// At most `times` waits; after them [`wait`](Backoff::wait) returns
        /// false and the iterator ends, so the caller gives up with its last
        /// error.
        pub fn with_max_times(self, times: usize) -> Self {
            let builder = self.builder.with_max_times(times);
            Self::from_builder(builder, self.max)
        }

        fn from_builder(builder: backon::ExponentialBuilder, max: Duration) -> Self {
            Backoff {
                delays: builder.build(),
                builder,
                max,
            }
        }

        /// The cap of a single wait.
        pub fn max_delay(&self) -> Duration {
            self.max
        }

        /// Starts over from the smallest step: call after a success, or
        /// after a session that ran long enough to count as healthy.
        pub fn reset(&mut self) {
            self.delays = self.builder.build();
        }

        /// The next step, for a caller that logs it before waiting; `None`
        /// once a [`with_max_times`](Backoff::with_max_times) limit is used
        /// up.
        pub fn next_delay(&mut self) -> Option<Duration> {
            self.delays.next()
        }

        /// Waits for the next step; false if `cancel` fired first (or the
        /// attempts are used up), true when it is time to try again.
        pub async fn wait(&mut self, cancel: &CancellationToken) -> bool {
            match self.next_delay() {
                Some(d) => sleep(d, cancel).await,
                None => false,
            }
        }
    }

    impl Iterator for Backoff {
        type Item = Duration;

        fn next(&mut self) -> Option<Duration> {
            self.next_delay()
        }
    }

    /// Sleeps for `d`; false if `cancel` fired first. For a delay taken
    /// from [`Backoff::next_delay`].
    pub async fn sleep(d: Duration, cancel: &CancellationToken) -> bool {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => false,
            _ = tokio::time::sleep(d) => true,
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn steps_grow_stay_capped_and_restart_small_after_a_reset() {
            let min = Duration::from_millis(100);
            let max = Duration::from_secs(1);
            let mut b = Backoff::new(min, max);
            let first = b.next_delay().unwrap();
            // Jitter adds at most one step's worth.
            assert!(first >= min && first <= 2 * min, "{first:?}");
            for _ in 0..20 {
                let d = b.next_delay().unwrap();
                assert!(d <= 2 * max, "{d:?}");
            }
            b.reset();
            assert!(b.next_delay().unwrap() <= 2 * min);
        }

        #[test]
        fn a_limit_ends_the_steps() {
            let mut b =
                Backoff::new(Duration::from_millis(1), Duration::from_millis(2)).with_max_times(2);
            assert_eq!(b.by_ref().count(), 2);
            b.reset();
            assert!(b.next_delay().is_some());
        }

        #[tokio::test(start_paused = true)]
        async fn a_wait_ends_early_when_cancelled() {
            let cancel = CancellationToken::new();
            let mut b = Backoff::new(Duration::from_secs(60), Duration::from_secs(60));
            assert!(b.wait(&cancel).await, "an uncancelled wait runs out");
            cancel.cancel();
            let started = tokio::time::Instant::now();
            assert!(!b.wait(&cancel).await);
            assert_eq!(started.elapsed(), Duration::ZERO);
        }

        #[tokio::test(start_paused = true)]
        async fn a_used_up_limit_does_not_wait() {
            let cancel = CancellationToken::new();
            let mut b =
                Backoff::new(Duration::from_secs(1), Duration::from_secs(1)).with_max_times(1);
            assert!(b.wait(&cancel).await);
            assert!(!b.wait(&cancel).await);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_only_during_a_failover_is_transient() {
        assert_eq!(
            mysql::classify_code(mysql::ER_OPTION_PREVENTS_STATEMENT),
            ErrorClass::Transient
        );
        for code in [1040, 1053, 1205, 1213, 1290, 1412, 1927, 2006, 2013] {
            assert!(mysql::classify_code(code).is_transient(), "{code}");
        }
    }

    #[test]
    fn other_server_errors_are_definite() {
        for code in [1236, 1045, 1044, 1227, 1142, 1193, 1064, 1062, 1146] {
            assert_eq!(mysql::classify_code(code), ErrorClass::Definite, "{code}");
        }
    }

    #[cfg(feature = "redis")]
    #[test]
    fn redis_errors_are_definite_only_when_no_retry_can_connect() {
        use fred::error::{Error, ErrorKind};
        let e = |kind, details: &'static str| classify_redis(&Error::new(kind, details));
        assert_eq!(
            e(ErrorKind::IO, "connection refused"),
            ErrorClass::Transient
        );
        assert_eq!(e(ErrorKind::Timeout, "timed out"), ErrorClass::Transient);
        assert_eq!(e(ErrorKind::Canceled, "closed"), ErrorClass::Transient);
        assert_eq!(e(ErrorKind::Unknown, "LOADING"), ErrorClass::Transient);
        assert_eq!(e(ErrorKind::Tls, "redis TLS: no CA"), ErrorClass::Definite);
        assert_eq!(
            e(ErrorKind::IO, "invalid peer certificate: UnknownIssuer"),
            ErrorClass::Definite
        );
        assert_eq!(e(ErrorKind::Url, "bad scheme"), ErrorClass::Definite);
        assert_eq!(
            e(ErrorKind::Config, "Invalid or missing host."),
            ErrorClass::Definite
        );
    }
}
