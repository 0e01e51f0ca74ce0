//! Rate limits, behind a seam that a cross-node store can implement.
//!
//! Two limits protect users from floods: per recipient and type (a backend
//! loop cannot bury one user in one kind of notification) and per caller for
//! every write (one client cannot flood a conversation). Backends with the
//! `publish` scope are limited per recipient only. Both limits are GCRA
//! (a burst, then a steady rate): [`LocalRateLimiter`] uses `governor` in
//! this process; [`RedisRateLimiter`] runs the same algorithm in Redis, so
//! that every node of a cluster counts against the same budget.

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use futures_util::future::BoxFuture;
use governor::{DefaultKeyedRateLimiter, Quota, clock::{Clock, DefaultClock}};

use crate::{domain::UserId, shared_redis};

/// The seam: answers whether one more action is allowed now, or how long to wait.
pub trait RateLimiter: Send + Sync + 'static {
    /// One more notification of `kind` for each recipient, answered in order.
    fn check_recipients<'a>(&'a self, recipients: &'a [UserId], kind: &'a str) -> BoxFuture<'a, Vec<Result<(), Duration>>>;
    /// One more write request from `caller`.
    fn check_caller<'a>(&'a self, caller: &'a UserId) -> BoxFuture<'a, Result<(), Duration>>;
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

impl LocalRateLimiter {
    fn check_recipient(&self, recipient: &UserId, kind: &str) -> Result<(), Duration> {
        self.recipients
            .check_key(&(recipient.clone(), kind.to_owned()))
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }

    fn check_one_caller(&self, caller: &UserId) -> Result<(), Duration> {
        self.callers.check_key(caller).map_err(|not_until| not_until.wait_time_from(self.clock.now()))
    }
}

impl RateLimiter for LocalRateLimiter {
    fn check_recipients<'a>(&'a self, recipients: &'a [UserId], kind: &'a str) -> BoxFuture<'a, Vec<Result<(), Duration>>> {
        Box::pin(std::future::ready(recipients.iter().map(|r| self.check_recipient(r, kind)).collect()))
    }

    fn check_caller<'a>(&'a self, caller: &'a UserId) -> BoxFuture<'a, Result<(), Duration>> {
        Box::pin(std::future::ready(self.check_one_caller(caller)))
    }
}

/// GCRA in one atomic Lua step: the key holds the theoretical arrival time
/// (ms); answers 0 when allowed, else the milliseconds to wait.
/// The GCRA script, hashed once for EVALSHA.
fn gcra_script() -> &'static redis::Script {
    static SCRIPT: std::sync::OnceLock<redis::Script> = std::sync::OnceLock::new();
    SCRIPT.get_or_init(|| redis::Script::new(GCRA))
}

const GCRA: &str = r#"
local now = tonumber(ARGV[1])
local interval = tonumber(ARGV[2])
local tolerance = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local allow_at = tat - tolerance
if now < allow_at then return math.ceil(allow_at - now) end
local next_tat = tat + interval
redis.call('SET', KEYS[1], next_tat, 'PX', math.ceil(next_tat - now) + 1000)
return 0
"#;

/// Limits shared by every node through Redis. If Redis cannot be reached the
/// request is allowed (and a warning logged): a limiter outage must not take
/// publishing down with it.
pub struct RedisRateLimiter {
    redis: redis::aio::ConnectionManager,
    namespace: String,
    /// (interval ms, tolerance ms) for recipients and callers.
    recipient: (f64, f64),
    caller: (f64, f64),
}

impl RedisRateLimiter {
    /// Limits in the Redis at `url` under `namespace`.
    pub fn new(url: &str, namespace: &str, settings: RateLimitSettings) -> anyhow::Result<Self> {
        let gcra = |per: f64, count: u32, burst: u32| {
            let interval = per / f64::from(count.max(1));
            (interval, interval * f64::from(burst.max(1) - 1))
        };
        Ok(RedisRateLimiter {
            redis: shared_redis::connect(url)?,
            namespace: namespace.to_owned(),
            recipient: gcra(60_000.0, settings.recipient_per_minute, settings.recipient_per_minute),
            caller: gcra(1_000.0, settings.caller_per_second, settings.caller_burst),
        })
    }

    async fn check(&self, keys: Vec<String>, (interval, tolerance): (f64, f64)) -> Vec<Result<(), Duration>> {
        let allowed = || keys.iter().map(|_| Ok(())).collect();
        let mut conn = self.redis.clone();
        let now = chrono::Utc::now().timestamp_millis();
        // EVALSHA: the script's text crosses the wire only when Redis does
        // not have it yet (first use, or after a restart emptied it).
        let script = gcra_script();
        let pipeline = || {
            let mut pipe = redis::pipe();
            for key in &keys {
                let mut invocation = script.key(key);
                invocation.arg(now).arg(interval).arg(tolerance);
                pipe.invoke_script(&invocation);
            }
            pipe
        };
        let mut answer = pipeline().query_async::<Vec<i64>>(&mut conn).await;
        if answer.as_ref().is_err_and(|e| e.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::NoScript)) {
            // A pipeline does not load a missing script by itself.
            answer = match script.prepare_invoke().load_async(&mut conn).await {
                Ok(_) => pipeline().query_async::<Vec<i64>>(&mut conn).await,
                Err(e) => Err(e),
            };
        }
        match answer {
            Ok(waits) => waits
                .into_iter()
                .map(|wait| if wait <= 0 { Ok(()) } else { Err(Duration::from_millis(wait as u64)) })
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "rate limits: Redis failed, allowing");
                allowed()
            }
        }
    }
}

impl RateLimiter for RedisRateLimiter {
    fn check_recipients<'a>(&'a self, recipients: &'a [UserId], kind: &'a str) -> BoxFuture<'a, Vec<Result<(), Duration>>> {
        let keys = recipients.iter().map(|r| format!("{}:rl:recipient:{kind}:{r}", self.namespace)).collect();
        Box::pin(self.check(keys, self.recipient))
    }

    fn check_caller<'a>(&'a self, caller: &'a UserId) -> BoxFuture<'a, Result<(), Duration>> {
        Box::pin(async move {
            let key = format!("{}:rl:caller:{caller}", self.namespace);
            self.check(vec![key], self.caller).await.pop().unwrap_or(Ok(()))
        })
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
            assert!(limiter.check_one_caller(&alice).is_ok());
        }
        let wait = limiter.check_one_caller(&alice).unwrap_err();
        assert!(wait <= Duration::from_secs(1));
        assert!(limiter.check_one_caller(&UserId::parse("bob").unwrap()).is_ok(), "limits are per caller");
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
