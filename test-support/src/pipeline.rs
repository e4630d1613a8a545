//! Components of the pipeline run in the test's own process until stopped,
//! and the moment they are ready: every server's reader has stored its
//! checkpoint (its start position, before it streams) and the projector has
//! set the generation. test-support cannot depend on the component crates
//! (they depend on it for their tests), so the tests hand in the `run`
//! functions.

use rps_core::Config;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

pub struct InProcessPipeline {
    stop: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Default for InProcessPipeline {
    fn default() -> Self {
        Self::new()
    }
}

impl InProcessPipeline {
    pub fn new() -> InProcessPipeline {
        InProcessPipeline {
            stop: CancellationToken::new(),
            tasks: Vec::new(),
        }
    }

    /// Starts one component; its failure fails the test when it is stopped.
    pub fn spawn<F, Fut, E>(
        &mut self,
        name: &'static str,
        config: &Arc<Config>,
        run: F,
    ) -> &mut Self
    where
        F: FnOnce(Arc<Config>, CancellationToken) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let fut = run(config.clone(), self.stop.clone());
        self.tasks.push(tokio::spawn(async move {
            if let Err(e) = fut.await {
                panic!("{name} stopped: {e}");
            }
        }));
        self
    }

    /// Waits until the readers and the projector are ready.
    pub async fn ready(&mut self, config: &Config) {
        wait_until_streaming(config).await;
    }

    /// Stops every component and waits for it.
    pub async fn stop(self) {
        self.stop.cancel();
        for t in self.tasks {
            t.await.expect("pipeline task");
        }
    }
}

/// Waits until every reader has stored its starting checkpoint and the
/// read models have a generation, whoever runs the components (in process
/// or `rpsctl run`): from then on every row inserted is theirs to publish
/// and apply.
pub async fn wait_until_streaming(config: &Config) {
    use fred::interfaces::KeysInterface;
    let client = crate::redis_client(&config.redis.url).await;
    let keys = config.keys();
    let names: Vec<String> = config.servers.iter().map(|s| s.name.clone()).collect();
    crate::eventually(
        "reader checkpoints and the projector's generation",
        Duration::from_secs(30),
        || {
            let (client, keys, names) = (client.clone(), keys.clone(), names.clone());
            async move {
                for n in &names {
                    let v: Option<String> = client.get(keys.cdc_checkpoint(n)).await.ok()?;
                    rps_core::checkpoint::Checkpoint::decode(&v?).ok()?;
                }
                let g: Option<String> = client.get(keys.generation()).await.ok()?;
                g.map(|_| ())
            }
        },
    )
    .await;
}
