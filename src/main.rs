//! The `webchat` binary: settings, tracing, build, run until SIGINT/SIGTERM.

use anyhow::Context;
use clap::Parser;
use webchat::{telemetry, Application, Settings};

/// mimalloc instead of glibc's malloc. A delivery allocates and frees a few small buffers,
/// and glibc's allocator took ~10 % of a receiving node's CPU in a group fan-out (`perf`);
/// with mimalloc the nodes spend about a fifth less CPU per fan-out, and memory freed after
/// a burst of sockets goes back to the system (glibc kept ~1 GB after 20,000 closed), for
/// ~3 KiB more per idle connection (BENCHMARKS.md, session 7).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    let transport_logs = if settings.unsafe_transport_logs {
        telemetry::TransportLogs::Unsafe
    } else {
        telemetry::TransportLogs::Capped
    };
    telemetry::init_tracing_with(&settings.log_format, "info", transport_logs);
    // One worker: the current-thread scheduler, which runs every task on this thread. The
    // multi-thread scheduler with one worker still hands work between this thread and the
    // worker, and pays for cross-thread wakeups on every event.
    let mut runtime = match settings.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread(),
        n => {
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            if n > 0 {
                runtime.worker_threads(n);
            }
            runtime
        }
    };
    runtime
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(serve(settings))
}

async fn serve(settings: Settings) -> anyhow::Result<()> {
    let app = Application::build(settings)
        .await
        .context("starting webchat")?;
    // Test harnesses and scripts read this one stdout line to learn the port.
    println!("webchat listening on {}", app.local_addr());
    app.run_until_stopped(webchat_core::shutdown::signal())
        .await?;
    Ok(())
}
