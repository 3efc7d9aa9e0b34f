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
    bound.run(shutdown_signal()).await;
    Ok(())
}

/// Ctrl-C or SIGTERM (what `meshctl down`, Docker and Kubernetes send).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sig) => {
                sig.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
