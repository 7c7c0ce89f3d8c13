//! A value that only grows, which tasks can wait on.
//!
//! `tokio::sync::watch` would do, but it wakes its waiters in an order drawn from tokio's own
//! random generator, which the simulator cannot seed; a [`Watermark`] wakes them in a fixed
//! order (by target, then by arrival), so simulated runs replay exactly.

use std::collections::BTreeMap;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

/// A monotonically increasing `u64` with waiters. Cheap to clone; clones share the value.
#[derive(Clone, Debug, Default)]
pub struct Watermark {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Debug, Default)]
struct Inner {
    value: u64,
    closed: bool,
    waiters: BTreeMap<u64, Vec<oneshot::Sender<()>>>,
}

/// The watermark was closed before reaching the value waited for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("the watermark was closed")]
pub struct Closed;

impl Watermark {
    /// A watermark at 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current value.
    pub fn get(&self) -> u64 {
        self.inner.lock().value
    }

    /// Raises the value to `value` (a lower value is ignored) and wakes everyone waiting for it.
    pub fn advance(&self, value: u64) {
        let ready = {
            let mut inner = self.inner.lock();
            if value <= inner.value {
                return;
            }
            inner.value = value;
            let later = inner.waiters.split_off(&(value + 1));
            std::mem::replace(&mut inner.waiters, later)
        };
        for sender in ready.into_values().flatten() {
            let _ = sender.send(());
        }
    }

    /// Fails every present and future waiter whose target is not reached yet.
    pub fn close(&self) {
        let mut inner = self.inner.lock();
        inner.closed = true;
        inner.waiters.clear();
    }

    /// Completes once the value is at least `target`, or with [`Closed`].
    pub async fn wait_for(&self, target: u64) -> Result<(), Closed> {
        let receiver = {
            let mut inner = self.inner.lock();
            if inner.value >= target {
                return Ok(());
            }
            if inner.closed {
                return Err(Closed);
            }
            let (sender, receiver) = oneshot::channel();
            inner.waiters.entry(target).or_default().push(sender);
            receiver
        };
        receiver.await.map_err(|_| Closed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn waiters_wake_when_their_target_is_reached_and_fail_on_close() {
        let mark = Watermark::new();
        assert_eq!(mark.wait_for(0).await, Ok(()));
        let (a, b) = (mark.clone(), mark.clone());
        let first = tokio::spawn(async move { a.wait_for(3).await });
        let second = tokio::spawn(async move { b.wait_for(10).await });
        tokio::task::yield_now().await;
        mark.advance(2);
        mark.advance(5);
        mark.advance(4);
        assert_eq!(mark.get(), 5);
        assert_eq!(first.await.unwrap(), Ok(()));
        mark.close();
        assert_eq!(second.await.unwrap(), Err(Closed));
        assert_eq!(mark.wait_for(6).await, Err(Closed));
        assert_eq!(mark.wait_for(5).await, Ok(()));
    }
}
