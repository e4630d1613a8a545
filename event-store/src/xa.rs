//! XA branches on a server, through SQL: the prepared ones (`XA RECOVER`)
//! and an operator's decision (`XA COMMIT` / `XA ROLLBACK`).
//!
//! Both flavors answer the plain `XA RECOVER` with the same four columns
//! (formatID, gtrid_length, bqual_length, data), so no flavor switch is
//! needed here; what differs is the privilege (docs/operations.md, "XA
//! branches"): MySQL needs XA_RECOVER_ADMIN to list other sessions'
//! branches, MariaDB lists them to any account.

use crate::Flavor;
use mysql_async::prelude::*;
use mysql_async::Conn;
use rps_core::Xid;

/// What an operator (or a sweep) decides for a prepared branch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XaDecision {
    Commit,
    Rollback,
}

impl XaDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            XaDecision::Commit => "commit",
            XaDecision::Rollback => "rollback",
        }
    }
}

/// MySQL/MariaDB `ER_XAER_NOTA`: no branch has this xid (already decided,
/// or never prepared).
pub const ER_XAER_NOTA: u16 = 1397;

/// `ER_XA_RBROLLBACK`: the branch was rolled back instead of decided as
/// asked. MariaDB answers it to `XA COMMIT` and `XA ROLLBACK` of a
/// prepared branch that changed nothing (measured on 10.11); the branch is
/// gone afterwards.
pub const ER_XA_RBROLLBACK: u16 = 1402;

/// `ER_XAER_RMERR`: what MySQL answers to `XA RECOVER` from an account
/// without XA_RECOVER_ADMIN (measured on 9.7: not an access-denied error).
pub const ER_XAER_RMERR: u16 = 1401;

/// `ER_SPECIFIC_ACCESS_DENIED_ERROR` ("you need (at least one of) the …
/// privilege(s)"), the form other MySQL versions may answer with.
pub const ER_SPECIFIC_ACCESS_DENIED: u16 = 1227;

/// Whether `e`, the answer to `XA RECOVER` on a server of `flavor`, means
/// the account lacks [`Flavor::xa_privileges`] rather than a real branch
/// failure. MariaDB needs no privilege, so nothing there is read this way.
pub fn is_missing_recover_privilege(flavor: &Flavor, e: &mysql_async::Error) -> bool {
    !flavor.xa_privileges().is_empty()
        && matches!(e, mysql_async::Error::Server(s)
            if s.code == ER_XAER_RMERR || s.code == ER_SPECIFIC_ACCESS_DENIED)
}

/// Every branch prepared and not yet decided on the server.
pub async fn recover(conn: &mut Conn) -> Result<Vec<Xid>, mysql_async::Error> {
    let rows: Vec<(i64, usize, usize, Vec<u8>)> = conn.query("XA RECOVER").await?;
    Ok(rows
        .into_iter()
        .filter_map(|(fmt, g, b, data)| Xid::from_parts(fmt, g, b, &data))
        .collect())
}

/// Decides a prepared branch from this session (any session may decide a
/// branch whose own session is gone). `Ok(false)`: no such branch.
pub async fn decide(
    conn: &mut Conn,
    xid: &Xid,
    decision: XaDecision,
) -> Result<bool, mysql_async::Error> {
    let verb = match decision {
        XaDecision::Commit => "XA COMMIT",
        XaDecision::Rollback => "XA ROLLBACK",
    };
    // The xid's Display is hex literals only, so it is safe to splice.
    match conn.query_drop(format!("{verb} {xid}")).await {
        Ok(()) => Ok(true),
        Err(mysql_async::Error::Server(e)) if e.code == ER_XAER_NOTA => Ok(false),
        Err(e) => Err(e),
    }
}
