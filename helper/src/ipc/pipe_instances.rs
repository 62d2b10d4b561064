//! How the Windows pipe server keeps an instance waiting for the next client: apart from
//! the pipe itself, so that its rule is unit-tested with a fake on every platform (wine
//! does not produce the failure it handles).

use std::future::Future;
use std::io;

/// ConnectNamedPipe's errors when the client has already closed its end (winerror.h).
const ERROR_BROKEN_PIPE: i32 = 109;
const ERROR_NO_DATA: i32 = 232;

/// A pipe instance that can wait for a client.
pub(crate) trait WaitingInstance: Sized {
    /// Waits until a client has opened this instance (ConnectNamedPipe). Cancel-safe.
    fn connect(&self) -> impl Future<Output = io::Result<()>> + Send + '_;
}

/// Waits for the next client on `waiting` and returns that connected instance, leaving a
/// fresh one from `create` waiting in its place. Cancel-safe: until it returns, `waiting`
/// is an instance that can still take a client.
///
/// An instance whose connection failed is broken for good (Windows answers every further
/// ConnectNamedPipe on it with the same error), so it is replaced too: when its client
/// simply left before being served (opened and closed the pipe), this carries on waiting;
/// on another error it returns the error. The fresh instance is created before the old
/// one is dropped, so the pipe never has no instance, which would free its name for
/// anyone to take and tell clients that the helper is not running. When no instance can
/// be created, `waiting` stays as it is.
pub(crate) async fn next_client<I: WaitingInstance>(
    waiting: &mut I,
    create: impl Fn() -> io::Result<I>,
) -> io::Result<I> {
    loop {
        let connected = waiting.connect().await;
        let fresh = create()?;
        let done = std::mem::replace(waiting, fresh);
        match connected {
            Ok(()) => return Ok(done),
            Err(e) if client_gone(&e) => tracing::debug!("a pipe client left before it was served: {e}"),
            Err(e) => return Err(e),
        }
    }
}

fn client_gone(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(ERROR_NO_DATA | ERROR_BROKEN_PIPE))
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    /// What happened to the fake instances, in order.
    type Log = Arc<Mutex<Vec<String>>>;

    /// An instance whose connect fails with `error` (an OS error code), or succeeds.
    #[derive(Debug)]
    struct Fake {
        id: u32,
        error: Option<i32>,
        log: Log,
    }

    impl WaitingInstance for Fake {
        fn connect(&self) -> impl Future<Output = io::Result<()>> + Send + '_ {
            std::future::ready(self.error.map_or(Ok(()), |code| Err(io::Error::from_raw_os_error(code))))
        }
    }

    impl Drop for Fake {
        fn drop(&mut self) {
            self.log.lock().unwrap().push(format!("dropped {}", self.id));
        }
    }

    /// Instances 1, 2, … (the first `failing` of them failing with `code`), and instance 0
    /// failing with `first`.
    fn pipe(first: Option<i32>, failing: u32, code: i32) -> (Fake, impl Fn() -> io::Result<Fake>, Log) {
        let log = Log::default();
        let next = Mutex::new(1);
        let factory_log = log.clone();
        let create = move || {
            let mut next = next.lock().unwrap();
            let id = *next;
            *next += 1;
            factory_log.lock().unwrap().push(format!("created {id}"));
            Ok(Fake { id, error: (id <= failing).then_some(code), log: factory_log.clone() })
        };
        (Fake { id: 0, error: first, log: log.clone() }, create, log)
    }

    fn run<T>(future: impl Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(future)
    }

    #[test]
    fn a_connected_instance_is_handed_over_and_a_fresh_one_waits() {
        let (mut waiting, create, log) = pipe(None, 0, 0);
        let connected = run(next_client(&mut waiting, &create)).unwrap();
        assert_eq!((connected.id, waiting.id), (0, 1));
        assert_eq!(*log.lock().unwrap(), ["created 1"]);
    }

    #[test]
    fn instances_whose_client_left_are_replaced_until_a_client_stays() {
        for code in [ERROR_NO_DATA, ERROR_BROKEN_PIPE] {
            let (mut waiting, create, log) = pipe(Some(code), 1, code);
            let connected = run(next_client(&mut waiting, &create)).unwrap();
            assert_eq!((connected.id, waiting.id), (2, 3));
            // Each broken instance goes only once its replacement exists.
            assert_eq!(
                *log.lock().unwrap(),
                ["created 1", "dropped 0", "created 2", "dropped 1", "created 3"]
            );
        }
    }

    #[test]
    fn another_failure_is_returned_and_the_broken_instance_is_replaced() {
        const ERROR_PIPE_BUSY: i32 = 231;
        let (mut waiting, create, log) = pipe(Some(ERROR_PIPE_BUSY), 0, 0);
        let error = run(next_client(&mut waiting, &create)).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(ERROR_PIPE_BUSY));
        assert_eq!(waiting.id, 1, "the next accept waits on a fresh instance");
        assert_eq!(*log.lock().unwrap(), ["created 1", "dropped 0"]);
        let connected = run(next_client(&mut waiting, &create)).unwrap();
        assert_eq!((connected.id, waiting.id), (1, 2));
    }

    #[test]
    fn when_no_fresh_instance_can_be_made_the_waiting_one_stays() {
        let log = Log::default();
        let mut waiting = Fake { id: 0, error: Some(ERROR_NO_DATA), log: log.clone() };
        let create = || -> io::Result<Fake> { Err(io::Error::other("out of instances")) };
        let error = run(next_client(&mut waiting, create)).unwrap_err();
        assert_eq!(error.to_string(), "out of instances");
        assert_eq!(waiting.id, 0);
        assert!(log.lock().unwrap().is_empty());
    }
}
