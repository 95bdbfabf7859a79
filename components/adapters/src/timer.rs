//! Timers on `wasi:clocks/monotonic-clock`, driven by Spin's executor.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use spin_executor::CancelOnDropToken;
use wasi::clocks::monotonic_clock;

/// Resolves after `duration`.
///
/// Subscribes to the clock once, on its first pending poll, and withdraws that subscription
/// when dropped. Spin's executor keeps a subscription registered until it is ready, and hands
/// every registered one to `wasi:io/poll` on each turn of its loop: a `Sleep` that subscribed
/// again on every poll, as the stream idle timeout around each token does, left one pending
/// subscription behind per token, until a long answer made every token cost a poll over all of
/// them.
pub struct Sleep {
    deadline: monotonic_clock::Instant,
    subscription: Option<Subscription>,
}

/// A clock subscription registered with the executor, withdrawn when dropped.
struct Subscription {
    wake: Arc<WakeOnce>,
    _registration: CancelOnDropToken,
}

/// The waker a subscription is registered with: records that the executor woke it, which it
/// does once, when the subscription is ready, and then forgets the subscription.
struct WakeOnce {
    woken: AtomicBool,
    waker: Waker,
}

impl Wake for WakeOnce {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Relaxed);
        self.waker.wake_by_ref();
    }
}

pub fn sleep(duration: Duration) -> Sleep {
    Sleep {
        deadline: monotonic_clock::now().saturating_add(duration.as_nanos() as u64),
        subscription: None,
    }
}

impl Future for Sleep {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if monotonic_clock::now() >= self.deadline {
            self.subscription = None;
            return Poll::Ready(());
        }
        let registered = self.subscription.as_ref().is_some_and(|subscription| {
            !subscription.wake.woken.load(Ordering::Relaxed)
                && subscription.wake.waker.will_wake(cx.waker())
        });
        if !registered {
            let wake = Arc::new(WakeOnce {
                woken: AtomicBool::new(false),
                waker: cx.waker().clone(),
            });
            let registration = spin_executor::push_waker_and_get_token(
                monotonic_clock::subscribe_instant(self.deadline),
                Waker::from(wake.clone()),
            );
            self.subscription = Some(Subscription {
                wake,
                _registration: registration.into(),
            });
        }
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
