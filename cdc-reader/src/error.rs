//! What can go wrong, split by what to do about it.
//!
//! [`Transient`] errors (I/O, connection drops, a server restarting, Redis
//! unavailable, a fenced checkpoint) end the current session; the server's
//! task reconnects with clamped exponential backoff and resumes from the
//! checkpoint. [`Definite`] errors (binlog purged past the checkpoint,
//! misconfigured server, missing grants, an unparseable event) stop that
//! server's reader with a message naming the fix; the others go on.

use crate::decode::DecodeError;
use std::fmt;

/// Server error codes the reader acts on, from the one list in
/// [`rps_core::retry::mysql`].
pub mod codes {
    pub use rps_core::retry::mysql::{
        ER_ACCESS_DENIED_ERROR, ER_DBACCESS_DENIED_ERROR, ER_MASTER_FATAL_ERROR_READING_BINLOG,
        ER_PARSE_ERROR, ER_SPECIFIC_ACCESS_DENIED_ERROR, ER_TABLEACCESS_DENIED_ERROR,
        ER_UNKNOWN_SYSTEM_VARIABLE,
    };
}

/// A server setting or grant that is not what the reader needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub setting: String,
    pub expected: String,
    pub actual: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: expected {}, actual {}",
            self.setting, self.expected, self.actual
        )
    }
}

/// Retrying later may succeed; resume from the checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum Transient {
    #[error("server `{server}`: {source}")]
    Mysql {
        server: String,
        #[source]
        source: mysql_async::Error,
    },
    #[error("server `{server}`: Redis: {source}")]
    Redis {
        server: String,
        #[source]
        source: fred::error::Error,
    },
    #[error("server `{server}`: the checkpoint was changed by another reader (fenced); resuming from it")]
    Fenced { server: String },
    #[error("server `{server}`: a bootstrap is committing ({value} in the checkpoint); waiting for it. \
             If no bootstrap runs (it died: the recovery supervisor starts another), delete the \
             checkpoint `{key}`")]
    Bootstrapping {
        server: String,
        key: String,
        value: String,
    },
    #[error("server `{server}`: no event or heartbeat for {secs} s")]
    Silent { server: String, secs: u64 },
    #[error("server `{server}`: the binlog stream ended")]
    StreamEnded { server: String },
}

/// Retrying will not help; an operator must act.
#[derive(Debug, thiserror::Error)]
pub enum Definite {
    #[error("server `{server}`: the binlog at the checkpoint is no longer available ({message}). \
             The reader cannot resume without losing rows. Delete the checkpoint key `{checkpoint_key}`: \
             under `rpsctl run` or `rpsctl cdc-reader` the supervisor then rebuilds the read models \
             from consistent snapshots and streams on from there; without it, restart the reader \
             and rebuild with `rpsctl replay`")]
    BinlogUnavailable {
        server: String,
        message: String,
        checkpoint_key: String,
    },
    #[error("server `{server}` is not configured for the reader: {}. Fix the server settings (sql/server.cnf) or grants (sql/grants.sql, `rpsctl init`) and restart",
            .mismatches.iter().map(|m| m.to_string()).collect::<Vec<_>>().join("; "))]
    Misconfigured {
        server: String,
        mismatches: Vec<Mismatch>,
    },
    #[error("server `{server}`: access denied ({message}). Check the pipeline account in rps.toml and its grants (`rpsctl init`)")]
    AccessDenied { server: String, message: String },
    #[error("server `{server}`: {source}. The binlog holds an event the reader cannot parse; report it with the coordinates")]
    Decode {
        server: String,
        #[source]
        source: DecodeError,
    },
    #[error("server `{server}`: checkpoint `{key}` is not valid ({message}); inspect it, delete it to start from the current position, and replay")]
    BadCheckpoint {
        server: String,
        key: String,
        message: String,
    },
    #[error("server `{server}`: the target checkpoint `{key}` is gone although the server checkpoint \
             `{server_key}` records steps written to it: Redis lost that slot's data (its stream with it). \
             Delete `{server_key}`: under `rpsctl run` or `rpsctl cdc-reader` the supervisor then rebuilds \
             the read models from consistent snapshots and streams on from there")]
    TargetCheckpointLost {
        server: String,
        key: String,
        server_key: String,
    },
    #[error("server `{server}` does not support a statement the reader needs (error {code}: {message}). \
             Check that its version is supported (docs/operations.md, \"Supported servers\")")]
    Unsupported {
        server: String,
        code: u16,
        message: String,
    },
    #[error("server `{server}`: invalid MySQL url: {message}")]
    Url { server: String, message: String },
    #[error("server `{server}`: the TLS handshake failed ({message}). Check `tls.mode`, `tls.ca_file` \
             and the client certificate of this server in rps.toml against the server's certificate")]
    Tls { server: String, message: String },
    #[error("server `{server}`: TLS to Redis at {redis} failed ({message}). Check `redis.tls` in rps.toml \
             against the Redis server's certificate")]
    RedisTls {
        server: String,
        redis: String,
        message: String,
    },
    #[error("server `{server}`: the Redis client cannot be set up for {redis} ({message}). Check `redis.url` \
             in rps.toml")]
    RedisConfig {
        server: String,
        redis: String,
        message: String,
    },
}

/// A session ended: reconnect, or stop.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error(transparent)]
    Transient(#[from] Transient),
    #[error(transparent)]
    Definite(#[from] Definite),
}

/// The reader as a whole stopped with servers that hit a definite error.
#[derive(Debug, thiserror::Error)]
pub enum CdcError {
    #[error("cdc-reader stopped on {}: {}", .0.len(), .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join(" | "))]
    Stopped(Vec<Definite>),
}

/// Sorts a MySQL error into transient or definite.
pub fn classify_mysql(server: &str, checkpoint_key: &str, e: mysql_async::Error) -> SessionError {
    use codes::*;
    if let mysql_async::Error::Server(s) = &e {
        match s.code {
            // MySQL also sends 1236 when another replica connected with
            // the same server_id (a twin, or this reader's own zombie
            // session): the binlog is there, and a new session may resume.
            ER_MASTER_FATAL_ERROR_READING_BINLOG if is_replica_id_clash(&s.message) => {}
            ER_MASTER_FATAL_ERROR_READING_BINLOG => {
                return Definite::BinlogUnavailable {
                    server: server.to_string(),
                    message: s.message.clone(),
                    checkpoint_key: checkpoint_key.to_string(),
                }
                .into()
            }
            ER_ACCESS_DENIED_ERROR
            | ER_DBACCESS_DENIED_ERROR
            | ER_SPECIFIC_ACCESS_DENIED_ERROR
            | ER_TABLEACCESS_DENIED_ERROR => {
                return Definite::AccessDenied {
                    server: server.to_string(),
                    message: s.message.clone(),
                }
                .into()
            }
            ER_UNKNOWN_SYSTEM_VARIABLE | ER_PARSE_ERROR => {
                return Definite::Unsupported {
                    server: server.to_string(),
                    code: s.code,
                    message: s.message.clone(),
                }
                .into()
            }
            _ => {}
        }
    }
    if rps_core::tls::is_certificate_rejection(&e) {
        return Definite::Tls {
            server: server.to_string(),
            message: e.to_string(),
        }
        .into();
    }
    if let mysql_async::Error::Url(u) = &e {
        return Definite::Url {
            server: server.to_string(),
            message: u.to_string(),
        }
        .into();
    }
    Transient::Mysql {
        server: server.to_string(),
        source: e,
    }
    .into()
}

/// The 1236 that means "another replica took this server_id", not "the
/// binlog is gone" (MySQL: `A replica with the same server_uuid/server_id`,
/// `A slave with the same …` before 8.0.26).
fn is_replica_id_clash(message: &str) -> bool {
    message.contains("with the same server_uuid/server_id")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server_error(code: u16, message: &str) -> mysql_async::Error {
        mysql_async::Error::Server(mysql_async::ServerError {
            code,
            message: message.to_string(),
            state: "HY000".to_string(),
        })
    }

    #[test]
    fn a_1236_is_definite_unless_it_is_a_replica_id_clash() {
        let purged = server_error(1236, "Cannot replicate because the source purged required binary logs. Replicate the missing transactions from elsewhere");
        assert!(matches!(
            classify_mysql("a", "k", purged),
            SessionError::Definite(Definite::BinlogUnavailable { .. })
        ));
        let twin = server_error(1236, "A replica with the same server_uuid/server_id as this replica has connected to the source; the first event '' at 4");
        assert!(matches!(
            classify_mysql("a", "k", twin),
            SessionError::Transient(_)
        ));
        let unknown = server_error(1193, "Unknown system variable 'gtid_binlog_pos'");
        assert!(matches!(
            classify_mysql("a", "k", unknown),
            SessionError::Definite(Definite::Unsupported { .. })
        ));
    }
}
