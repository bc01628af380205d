//! The `webchat-profile` binary: settings, tracing, build, run until SIGINT/SIGTERM.

use anyhow::Context;
use clap::Parser;
use webchat::telemetry;
use webchat_profile::{Application, Settings};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    telemetry::init_tracing(&settings.log_format);
    let app = Application::build(settings)
        .await
        .context("starting webchat-profile")?;
    // Test harnesses and scripts read this one stdout line to learn the port.
    println!("webchat-profile listening on {}", app.local_addr());
    app.run_until_stopped(shutdown_signal()).await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}
