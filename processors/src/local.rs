//! A local AWS for the demo and the integration tests: moto from the project's `.venv`, on
//! 127.0.0.1 and a free port, stopped when dropped. Clients built for it talk to loopback only.
//! moto is started through `scripts/moto_server.py`, which handles one request at a time so that
//! conditional writes are atomic, as they are in DynamoDB (moto's stock server races them).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::QueueAttributeName;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long moto may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error("{0} is missing: run ./scripts/setup-venv.sh")]
    MotoMissing(PathBuf),
    #[error("setting up .venv with {script} failed")]
    Setup {
        script: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("starting {server} failed")]
    Spawn {
        server: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("moto did not listen on {0} within {START_TIMEOUT:?}")]
    NotListening(SocketAddr),
    #[error("no free port on 127.0.0.1")]
    NoPort(#[source] std::io::Error),
}

/// The repository root this binary was built from (where `.venv` and `scripts/` live).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Installs the pinned emulator into `<root>/.venv` unless it is already there and current.
pub fn ensure_venv(root: &Path) -> Result<(), LocalError> {
    let script = root.join("scripts/setup-venv.sh");
    let status = Command::new(&script)
        .status()
        .map_err(|source| LocalError::Setup {
            script: script.clone(),
            source,
        })?;
    if status.success() {
        Ok(())
    } else {
        Err(LocalError::Setup {
            script,
            source: std::io::Error::other(format!("exited with {status}")),
        })
    }
}

/// A running moto server.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Moto {
    /// Starts moto with `<root>/.venv`'s Python on a free loopback port; waits until it listens.
    pub fn start(root: &Path) -> Result<Self, LocalError> {
        let server = root.join(".venv/bin/python");
        if !root.join(".venv/bin/moto_server").exists() {
            return Err(LocalError::MotoMissing(root.join(".venv/bin/moto_server")));
        }
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(LocalError::NoPort)?
            .port();
        let child = Command::new(&server)
            .arg(root.join("scripts/moto_server.py"))
            .args(["127.0.0.1", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| LocalError::Spawn {
                server: server.clone(),
                source,
            })?;
        let mut moto = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if Instant::now() > deadline || moto.child.try_wait().ok().flatten().is_some() {
                moto.stop();
                return Err(LocalError::NotListening(addr));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(moto)
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// SDK configuration for a local emulator: a fixed region and dummy credentials, loopback only,
/// so nothing can reach a real AWS account by accident.
pub async fn sdk_config(endpoint: &str) -> aws_config::SdkConfig {
    assert!(
        endpoint.starts_with("http://127.0.0.1:"),
        "local AWS is loopback only, got {endpoint}"
    );
    crate::settings::aws_config_builder(Some(endpoint))
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            "local",
            "local",
            None,
            None,
            "pipetel-local",
        ))
        .load()
        .await
}

/// The alert topic and an SQS queue subscribed to it with raw delivery (the body is the alert
/// JSON): what an operator's subscription looks like, for the demo and the tests.
pub async fn alert_topic_with_queue(
    config: &aws_config::SdkConfig,
    topic: &str,
    queue: &str,
) -> Result<(String, String), BoxError> {
    let sns = aws_sdk_sns::Client::new(config);
    let sqs = aws_sdk_sqs::Client::new(config);
    let topic_arn = sns
        .create_topic()
        .name(topic)
        .send()
        .await?
        .topic_arn
        .ok_or("CreateTopic returned no ARN")?;
    let queue_url = sqs
        .create_queue()
        .queue_name(queue)
        .send()
        .await?
        .queue_url
        .ok_or("CreateQueue returned no URL")?;
    let queue_arn = sqs
        .get_queue_attributes()
        .queue_url(&queue_url)
        .attribute_names(QueueAttributeName::QueueArn)
        .send()
        .await?
        .attributes
        .and_then(|mut a| a.remove(&QueueAttributeName::QueueArn))
        .ok_or("GetQueueAttributes returned no ARN")?;
    sns.subscribe()
        .topic_arn(&topic_arn)
        .protocol("sqs")
        .endpoint(queue_arn)
        .attributes("RawMessageDelivery", "true")
        .send()
        .await?;
    Ok((topic_arn, queue_url))
}
