//! Timers on `wasi:clocks/monotonic-clock`, driven by Spin's executor.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use wasi::clocks::monotonic_clock;

/// Resolves after `duration`.
pub struct Sleep {
    deadline: monotonic_clock::Instant,
}

pub fn sleep(duration: Duration) -> Sleep {
    Sleep {
        deadline: monotonic_clock::now().saturating_add(duration.as_nanos() as u64),
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if monotonic_clock::now() >= self.deadline {
            return Poll::Ready(());
        }
        spin_executor::push_waker(
            monotonic_clock::subscribe_instant(self.deadline),
            cx.waker().clone(),
        );
        Poll::Pending
    }
}

/// Elapsed time since an earlier [`now`].
pub fn since(start: monotonic_clock::Instant) -> Duration {
    Duration::from_nanos(monotonic_clock::now().saturating_sub(start))
}

pub fn now() -> monotonic_clock::Instant {
    monotonic_clock::now()
}

/// Runs `future`, giving up after `limit`.
pub async fn timeout<T>(limit: Duration, future: impl Future<Output = T>) -> Option<T> {
    use futures::future::{select, Either};
    let future = std::pin::pin!(future);
    match select(future, sleep(limit)).await {
        Either::Left((value, _)) => Some(value),
        Either::Right(((), _)) => None,
    }
}
