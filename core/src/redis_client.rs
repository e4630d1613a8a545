//! How every component connects to Redis (feature `redis`): one policy, so
//! the rules that exactly-once depends on are written once.
//!
//! The rule that matters: a command that was in flight when its connection
//! closed is never sent again by the client library. Redis may have executed
//! it (the reply is what got lost), and several of the pipeline's commands
//! are not idempotent: an `XREADGROUP … >` sent twice moves the group past
//! entries nobody received; a claim sent twice hands out deadlines twice.
//! The caller gets the error and its own loop decides, from what Redis
//! holds, what to do next (every write of the pipeline is fenced).

use fred::prelude::*;
use std::time::Duration;

/// Timeouts and reconnect behaviour of one client.
#[derive(Debug, Clone)]
pub struct ClientPolicy {
    pub connect_timeout: Duration,
    /// Longest a command may wait for its reply before it fails.
    pub command_timeout: Duration,
    /// Reconnect delays grow exponentially from 100 ms up to this.
    pub max_reconnect_delay: Duration,
    /// Whether a command in flight when its connection closed may be sent
    /// again after the reconnect. Only for clients that never write.
    pub resend_in_flight: bool,
}

impl Default for ClientPolicy {
    fn default() -> Self {
        ClientPolicy {
            connect_timeout: Duration::from_secs(2),
            command_timeout: Duration::from_secs(30),
            max_reconnect_delay: Duration::from_secs(2),
            resend_in_flight: false,
        }
    }
}

impl ClientPolicy {
    /// For query paths (the API): short command timeout, reads resent
    /// after a reconnect.
    pub fn read_only() -> Self {
        ClientPolicy {
            command_timeout: Duration::from_secs(5),
            resend_in_flight: true,
            ..ClientPolicy::default()
        }
    }

    /// A builder for `url` with this policy; `build()` / `build_pool(n)` it.
    pub fn builder(&self, url: &str) -> Result<Builder, fred::error::Error> {
        let config = fred::types::config::Config::from_url(url)?;
        let mut builder = Builder::from_config(config);
        let (connect, command) = (self.connect_timeout, self.command_timeout);
        let attempts = if self.resend_in_flight { 3 } else { 1 };
        builder
            .with_connection_config(|c| {
                c.connection_timeout = connect;
                c.internal_command_timeout = connect.max(Duration::from_secs(5));
                c.max_command_attempts = attempts;
            })
            .with_performance_config(|p| p.default_command_timeout = command)
            .set_policy(ReconnectPolicy::new_exponential(
                0,
                100,
                self.max_reconnect_delay.as_millis().min(u32::MAX as u128) as u32,
                2,
            ));
        Ok(builder)
    }

    /// A connected client that reconnects by itself (forever).
    pub async fn connect(&self, url: &str) -> Result<Client, fred::error::Error> {
        let client = self.builder(url)?.build()?;
        client.init().await?;
        Ok(client)
    }
}

/// `XGROUP CREATE <stream> projector 0 MKSTREAM`: the projectors' consumer
/// group, created by whichever of the reader and the projector comes first
/// (the reader, so no entry is published before the group exists); an
/// existing group is fine.
pub async fn create_projector_group(
    client: &Client,
    stream: &str,
) -> Result<(), fred::error::Error> {
    match client
        .xgroup_create::<(), _, _, _>(stream, crate::keys::PROJECTOR_GROUP, "0", true)
        .await
    {
        Err(e) if e.details().contains("BUSYGROUP") => Ok(()),
        other => other,
    }
}
