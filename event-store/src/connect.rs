//! How every component reaches a MySQL server: the URL of the account, the
//! password from the environment or a secret file when one is configured,
//! and TLS per [`TlsMode`]. The one place a [`ServerConfig`] becomes
//! connection options.

use crate::StoreError;
use mysql_async::{ClientIdentity, Opts, OptsBuilder, SslOpts};
use rps_core::config::{ServerConfig, TlsMode};

/// Which of a server's accounts to connect as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Account {
    /// The least-privilege account every component uses (`url`).
    Pipeline,
    /// The account that creates databases and users (`admin_url`).
    Admin,
}

/// Connection options for `account` on `server`. Errors name the server and
/// never the URL, which may carry a password.
pub fn server_opts(server: &ServerConfig, account: Account) -> Result<OptsBuilder, StoreError> {
    let (url, password) = match account {
        Account::Pipeline => (server.url.as_str(), server.password.as_ref()),
        Account::Admin => (
            server
                .admin_url
                .as_deref()
                .ok_or_else(|| StoreError::NoAdminUrl {
                    server: server.name.clone(),
                })?,
            server.admin_password.as_ref(),
        ),
    };
    let opts = Opts::from_url(url).map_err(|e| StoreError::Url {
        server: server.name.clone(),
        message: e
            .to_string()
            .replace(url, &rps_core::config::redact_url(url)),
    })?;
    let mut builder = OptsBuilder::from_opts(opts);
    if let Some(password) = password {
        builder = builder.pass(Some(password.expose()));
    }
    if let Some(ssl) = ssl_opts(server) {
        builder = builder.ssl_opts(ssl);
    }
    Ok(builder)
}

/// `mysql_async`'s TLS options for the server's settings; `None` for plain
/// text, unless the URL itself asks for TLS (`require_ssl=true`).
fn ssl_opts(server: &ServerConfig) -> Option<SslOpts> {
    let tls = &server.tls;
    let mode = server.tls_mode();
    if !mode.is_enabled() {
        return None;
    }
    let mut ssl = SslOpts::default();
    if let Some(ca) = &tls.ca_file {
        ssl = ssl
            .with_root_certs(vec![ca.to_path_buf().into()])
            .with_disable_built_in_roots(true);
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        ssl = ssl.with_client_identity(Some(ClientIdentity::new(
            cert.to_path_buf().into(),
            key.to_path_buf().into(),
        )));
    }
    Some(match mode {
        TlsMode::Required => ssl.with_danger_accept_invalid_certs(true),
        TlsMode::VerifyCa => ssl.with_danger_skip_domain_validation(true),
        TlsMode::VerifyIdentity | TlsMode::Disabled => ssl,
    })
}
