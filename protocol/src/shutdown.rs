//! How the long-running programs (`trellisd`, `trellis-signal`) learn to stop: SIGTERM
//! (systemd, `kill`) or SIGINT (Ctrl-C).

use std::future::Future;

/// Registers for the stop signals now and returns a future that completes when one comes.
///
/// Registration must happen before the program says it is ready (a socket, an "is up" log
/// line): a SIGTERM that arrives before the handler exists takes the default action and
/// kills the process without its clean shutdown. Call it inside a tokio runtime.
pub fn stop_signal() -> std::io::Result<impl Future<Output = ()>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut term = signal(SignalKind::terminate())?;
        let mut interrupt = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = interrupt.recv() => {}
            }
        })
    }
    #[cfg(not(unix))]
    {
        // Windows: Ctrl-C registers when first polled, so poll it once now.
        let mut ctrl_c = Box::pin(tokio::signal::ctrl_c());
        let waker = std::task::Waker::noop();
        let _ = ctrl_c.as_mut().poll(&mut std::task::Context::from_waker(waker));
        Ok(async move {
            let _ = ctrl_c.await;
        })
    }
}
