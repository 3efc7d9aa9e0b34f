use std::io::Write as _;

use anyhow::Context as _;
use clap::Parser as _;
use helloworld::{Args, Config};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_args(&Args::parse())?;
    let bind = (config.address, config.port);
    let bound = helloworld::build(config)
        .await
        .with_context(|| format!("binding {}:{}", bind.0, bind.1))?;
    let stop = shutdown_signal()?;
    // The first stdout line is read by tests and `meshctl up` to learn the port.
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {}", bound.local_addr())?;
    stdout.flush()?;
    eprintln!(
        "helloworld version={} instance={} listening on {}",
        bound.version(),
        bound.instance(),
        bound.local_addr()
    );
    bound.run(stop).await;
    Ok(())
}

/// Ctrl-C or SIGTERM (what `meshctl down`, Docker and Kubernetes send). The handlers are
/// installed before the "listening" line is printed, so a stop sent by whoever read it
/// drains instead of killing.
fn shutdown_signal() -> anyhow::Result<impl Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {},
            _ = int.recv() => {},
        }
    })
}
