//! The `webchat-profile` binary: settings, tracing, build, run until SIGINT/SIGTERM.

use anyhow::Context;
use clap::Parser;
use webchat_core::{shutdown, telemetry};
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
    app.run_until_stopped(shutdown::signal()).await?;
    Ok(())
}
