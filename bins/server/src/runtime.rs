//! The tokio runtime `server.worker_threads` asks for.

use anyhow::Context;

/// The runtime for `worker_threads`: 0 is the multi-threaded runtime with one worker per
/// CPU the process may use, 1 the single-threaded runtime, N the multi-threaded one with N.
///
/// The single-threaded runtime's run queue is one unbounded FIFO: fair under overload, where
/// the multi-threaded runtime's bounded local queue spills into a global queue polled only
/// now and then (`fanout-many` p99 0.4 s against 0.8–0.9 s), but slower to get a message's
/// 10 000 writes done (`fanout-10k-20hz` p99 0.3–0.4 s against 0.2–0.25 s): see
/// docs/decisions.md.
pub fn build(worker_threads: usize) -> anyhow::Result<tokio::runtime::Runtime> {
    let threads = match worker_threads {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let mut builder = if worker_threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut builder = tokio::runtime::Builder::new_multi_thread();
        builder.worker_threads(threads);
        builder
    };
    let runtime = builder
        .enable_all()
        .build()
        .context("starting the runtime")?;
    tracing::info!(
        threads,
        flavor = if worker_threads == 1 {
            "single-threaded"
        } else {
            "multi-threaded"
        },
        "runtime started"
    );
    Ok(runtime)
}
