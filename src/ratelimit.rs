//! Rate limits, behind a seam that a cross-node store can implement.
//!
//! Two limits protect users from floods: per recipient and type (a backend
//! loop cannot bury one user in one kind of notification) and per caller for
//! every write (one client cannot flood a conversation). Backends with the
//! `publish` scope are limited per recipient only. The in-process
//! implementation uses `governor`'s GCRA limiters; a Redis one can take its
//! place behind [`RateLimiter`] when several nodes must share counts.

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use governor::{DefaultKeyedRateLimiter, Quota, clock::{Clock, DefaultClock}};

use crate::domain::UserId;

/// The seam: answers whether one more action is allowed now, or how long to wait.
pub trait RateLimiter: Send + Sync + 'static {
    /// One more notification of `kind` for `recipient`.
    fn check_recipient(&self, recipient: &UserId, kind: &str) -> Result<(), Duration>;
    /// One more write request from `caller`.
    fn check_caller(&self, caller: &UserId) -> Result<(), Duration>;
}

/// The limits, configurable.
#[derive(Debug, Clone, Copy)]
pub struct RateLimitSettings {
    /// Notifications one recipient may get of one type per minute.
    pub recipient_per_minute: u32,
    /// Write requests a caller may make at once...
    pub caller_burst: u32,
    /// ...and per second after that.
    pub caller_per_second: u32,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        RateLimitSettings { recipient_per_minute: 120, caller_burst: 50, caller_per_second: 10 }
    }
}

/// Limits kept in this process.
pub struct LocalRateLimiter {
    recipients: DefaultKeyedRateLimiter<(UserId, String)>,
    callers: DefaultKeyedRateLimiter<UserId>,
    clock: DefaultClock,
}

impl LocalRateLimiter {
    /// Limiters with `settings`; zero values are raised to one.
    pub fn new(settings: RateLimitSettings) -> Self {
        let nonzero = |n: u32| NonZeroU32::new(n.max(1)).expect("at least one");
        LocalRateLimiter {
            recipients: DefaultKeyedRateLimiter::keyed(Quota::per_minute(nonzero(settings.recipient_per_minute))),
            callers: DefaultKeyedRateLimiter::keyed(
                Quota::per_second(nonzero(settings.caller_per_second)).allow_burst(nonzero(settings.caller_burst)),
            ),
            clock: DefaultClock::default(),
        }
    }

    /// Forgets keys whose limit has fully recovered, so memory follows the
    /// active users rather than every user ever seen. Run periodically.
    pub fn forget_idle(&self) {
        self.recipients.retain_recent();
        self.recipients.shrink_to_fit();
        self.callers.retain_recent();
        self.callers.shrink_to_fit();
    }

    /// Starts the periodic [`forget_idle`](Self::forget_idle).
    pub fn spawn_housekeeping(self: &Arc<Self>) {
        let limiter = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(60));
            loop {
                every.tick().await;
                match limiter.upgrade() {
                    Some(limiter) => limiter.forget_idle(),
                    None => break,
                }
            }
        });
    }
}

impl RateLimiter for LocalRateLimiter {
    fn check_recipient(&self, recipient: &UserId, kind: &str) -> Result<(), Duration> {
        self.recipients
            .check_key(&(recipient.clone(), kind.to_owned()))
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    fn check_caller(&self, caller: &UserId) -> Result<(), Duration> {
        self.callers.check_key(caller).map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

/// Whole seconds to put in `Retry-After`: rounded up, at least one.
pub fn retry_after_secs(wait: Duration) -> u64 {
    (wait.as_secs_f64().ceil() as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_gets_the_burst_then_is_told_how_long_to_wait() {
        let limiter = LocalRateLimiter::new(RateLimitSettings { recipient_per_minute: 1, caller_burst: 3, caller_per_second: 1 });
        let alice = UserId::parse("alice").unwrap();
        for _ in 0..3 {
            assert!(limiter.check_caller(&alice).is_ok());
        }
        let wait = limiter.check_caller(&alice).unwrap_err();
        assert!(wait <= Duration::from_secs(1));
        assert!(limiter.check_caller(&UserId::parse("bob").unwrap()).is_ok(), "limits are per caller");
    }

    #[test]
    fn recipient_limits_are_per_type() {
        let limiter = LocalRateLimiter::new(RateLimitSettings { recipient_per_minute: 1, caller_burst: 1, caller_per_second: 1 });
        let alice = UserId::parse("alice").unwrap();
        assert!(limiter.check_recipient(&alice, "a").is_ok());
        assert!(limiter.check_recipient(&alice, "a").is_err());
        assert!(limiter.check_recipient(&alice, "b").is_ok());
    }

    #[test]
    fn retry_after_rounds_up() {
        assert_eq!(retry_after_secs(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_secs(Duration::from_millis(1500)), 2);
        assert_eq!(retry_after_secs(Duration::from_secs(3)), 3);
        assert_eq!(retry_after_secs(Duration::ZERO), 1);
    }
}
