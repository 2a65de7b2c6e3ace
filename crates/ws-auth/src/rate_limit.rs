//! The handshake rate limit per client address: [`HandshakeRateLimitLayer`],
//! [`HandshakeRateLimit`], and the [`RateLimiter`] they share.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use tower::Layer;

use crate::admit::Admit;
use crate::client_ip::{ClientIp, UNKNOWN_CLIENT, limit_key};
use crate::error::AuthError;
use crate::rejection::error_response;

/// Buckets are kept in this many independently locked shards.
const SHARDS: usize = 16;

/// What a [`RateLimiter`] says about one more request from an address.
#[derive(Debug, Clone, Copy, PartialEq)]
#[must_use]
pub enum Decision {
    /// Under the limit: go ahead.
    Allow,
    /// Over the limit. The request counted against the address all the same, so a client that
    /// keeps trying digs itself deeper; `retry_after` is when the next request would pass.
    Limited {
        /// How long until a request from this address would be allowed.
        retry_after: Duration,
    },
    /// So far over the limit (another full burst beyond it) that the request is refused at
    /// once, before any further work, and not counted.
    Shed {
        /// How long until a request from this address would be allowed.
        retry_after: Duration,
    },
}

/// Token buckets per client address: `rate` requests a second, bursts of up to `burst`.
///
/// Each address starts with a full bucket of `burst` tokens that refills at `rate` a second; a
/// request takes one. An empty bucket goes into debt, down to `-burst`: those requests are
/// [`Decision::Limited`]; beyond that they are [`Decision::Shed`] and no longer counted, so
/// the bucket refills and a client that waits `retry_after` always gets through.
///
/// IPv6 addresses count by their /64 prefix. Memory is bounded: at most `max_tracked`
/// addresses are remembered; a full shard first forgets addresses whose bucket has refilled
/// (they are as good as new), then the least recently seen half.
///
/// The limiter never reads the clock: every call takes `now`.
///
/// ```
/// use std::time::{Duration, Instant};
/// use ws_auth::{Decision, RateLimiter};
///
/// let limiter = RateLimiter::new(2, 2);
/// let ip = "192.0.2.1".parse()?;
/// let now = Instant::now();
/// assert_eq!(limiter.check(ip, now), Decision::Allow);
/// assert_eq!(limiter.check(ip, now), Decision::Allow);
/// assert!(matches!(limiter.check(ip, now), Decision::Limited { .. }));
/// // Another address has its own bucket.
/// assert_eq!(limiter.check("192.0.2.2".parse()?, now), Decision::Allow);
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    max_per_shard: usize,
    hasher: RandomState,
    shards: Box<[Mutex<HashMap<IpAddr, Bucket>>]>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl RateLimiter {
    /// How many addresses are remembered at most, by default.
    pub const DEFAULT_MAX_TRACKED: usize = 65_536;

    /// A limiter allowing `rate` requests a second per address with bursts of `burst` (both at
    /// least 1).
    pub fn new(rate: u32, burst: u32) -> Self {
        Self::with_max_tracked(rate, burst, Self::DEFAULT_MAX_TRACKED)
    }

    /// Like [`RateLimiter::new`], remembering at most `max_tracked` addresses.
    pub fn with_max_tracked(rate: u32, burst: u32, max_tracked: usize) -> Self {
        Self {
            rate: f64::from(rate.max(1)),
            burst: f64::from(burst.max(1)),
            max_per_shard: max_tracked.div_ceil(SHARDS).max(1),
            hasher: RandomState::new(),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    /// Counts one request from `ip` at `now` and says whether it may go ahead.
    pub fn check(&self, ip: IpAddr, now: Instant) -> Decision {
        let key = limit_key(ip);
        let shard = &self.shards[self.hasher.hash_one(key) as usize % SHARDS];
        let mut buckets = shard.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() >= self.max_per_shard && !buckets.contains_key(&key) {
            self.evict(&mut buckets, now);
        }
        let bucket = buckets.entry(key).or_insert(Bucket {
            tokens: self.burst,
            last: now,
        });
        let elapsed = now.saturating_duration_since(bucket.last).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * self.rate).min(self.burst);
        bucket.last = bucket.last.max(now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Decision::Allow;
        }
        if bucket.tokens > -self.burst {
            bucket.tokens -= 1.0;
            return Decision::Limited {
                retry_after: self.wait(bucket.tokens),
            };
        }
        Decision::Shed {
            retry_after: self.wait(bucket.tokens),
        }
    }

    /// How long until `tokens` refills to one whole token.
    fn wait(&self, tokens: f64) -> Duration {
        Duration::from_secs_f64(((1.0 - tokens) / self.rate).max(0.0))
    }

    fn evict(&self, buckets: &mut HashMap<IpAddr, Bucket>, now: Instant) {
        let (rate, burst) = (self.rate, self.burst);
        buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
            b.tokens + elapsed * rate < burst
        });
        if buckets.len() >= self.max_per_shard {
            // Still full of active addresses: forget the least recently seen half.
            let mut seen: Vec<Instant> = buckets.values().map(|b| b.last).collect();
            let middle = seen.len() / 2;
            let (_, cutoff, _) = seen.select_nth_unstable(middle);
            let cutoff = *cutoff;
            buckets.retain(|_, b| b.last > cutoff);
        }
    }

    /// How many addresses are remembered now.
    pub fn tracked(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("rate", &self.rate)
            .field("burst", &self.burst)
            .field("max_tracked", &(self.max_per_shard * SHARDS))
            .finish_non_exhaustive()
    }
}

/// Marks a request that is over the rate limit but was let through to be refused later, after
/// authentication (see [`HandshakeRateLimitLayer::defer_rejection`]).
///
/// The endpoint must refuse a request carrying it with [`RateLimited::response`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimited {
    /// How long until a request from this address would be allowed.
    pub retry_after: Duration,
}

impl RateLimited {
    /// `429 rate_limited` with `Retry-After`.
    pub fn response<B: From<Bytes>>(&self) -> Response<B> {
        error_response(&AuthError::RateLimited {
            retry_after: self.retry_after,
        })
    }
}

/// Applies [`HandshakeRateLimit`]: at most `rate` requests a second per client address.
///
/// The client address is the [`ClientIp`] extension, so put [`SetClientIpLayer`] outside this
/// layer; requests without one share the bucket of `0.0.0.0`.
///
/// By default a request over the limit is refused at once with `429 rate_limited` and
/// `Retry-After`. With [`defer_rejection`](HandshakeRateLimitLayer::defer_rejection), it is
/// only marked with [`RateLimited`] and passed on, so that checks which come first in the
/// public contract (wshub's authentication, SPEC §3) still answer first; the endpoint then
/// refuses it. Requests a whole burst beyond the limit ([`Decision::Shed`]) are refused at once
/// either way: a flood never reaches the CPU-heavy checks behind this layer.
///
/// [`SetClientIpLayer`]: crate::SetClientIpLayer
///
/// ```
/// use std::convert::Infallible;
/// use std::net::IpAddr;
/// use bytes::Bytes;
/// use http::{Request, Response, StatusCode};
/// use http_body_util::Full;
/// use tower::{ServiceBuilder, ServiceExt};
/// use ws_auth::{ClientIp, HandshakeRateLimitLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let svc = ServiceBuilder::new()
///     .layer(HandshakeRateLimitLayer::new(1).burst(2))
///     .service_fn(|_req: Request<()>| async {
///         Ok::<_, Infallible>(Response::new(Full::<Bytes>::from("upgraded")))
///     });
/// let from = |ip: &str| -> Result<Request<()>, Box<dyn std::error::Error>> {
///     let mut req = Request::get("/ws").body(())?;
///     req.extensions_mut().insert(ClientIp(ip.parse::<IpAddr>()?));
///     Ok(req)
/// };
/// assert_eq!(svc.clone().oneshot(from("192.0.2.1")?).await?.status(), StatusCode::OK);
/// assert_eq!(svc.clone().oneshot(from("192.0.2.1")?).await?.status(), StatusCode::OK);
/// let res = svc.clone().oneshot(from("192.0.2.1")?).await?;
/// assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
/// // This request counted too: two tokens to wait for.
/// assert_eq!(res.headers()["retry-after"], "2");
/// assert_eq!(svc.oneshot(from("192.0.2.2")?).await?.status(), StatusCode::OK);
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct HandshakeRateLimitLayer {
    rate: u32,
    burst: u32,
    max_tracked: usize,
    defer: bool,
    limiter: Arc<RateLimiter>,
}

impl HandshakeRateLimitLayer {
    /// At most `rate` requests a second per address (at least 1), in bursts of as many.
    pub fn new(rate: u32) -> Self {
        Self::build(rate, rate, RateLimiter::DEFAULT_MAX_TRACKED, false)
    }

    fn build(rate: u32, burst: u32, max_tracked: usize, defer: bool) -> Self {
        Self {
            rate,
            burst,
            max_tracked,
            defer,
            limiter: Arc::new(RateLimiter::with_max_tracked(rate, burst, max_tracked)),
        }
    }

    /// Bursts of up to `burst` requests (default: `rate`).
    #[must_use]
    pub fn burst(self, burst: u32) -> Self {
        Self::build(self.rate, burst, self.max_tracked, self.defer)
    }

    /// How many addresses are remembered at most (default
    /// [`RateLimiter::DEFAULT_MAX_TRACKED`]).
    #[must_use]
    pub fn max_tracked(self, max_tracked: usize) -> Self {
        Self::build(self.rate, self.burst, max_tracked, self.defer)
    }

    /// Whether a request over the limit is passed on marked with [`RateLimited`] instead of
    /// refused at once (default `false`). Shed requests are refused at once either way.
    #[must_use]
    pub fn defer_rejection(mut self, defer: bool) -> Self {
        self.defer = defer;
        self
    }

    /// The limiter every service of this layer shares.
    pub fn limiter(&self) -> &Arc<RateLimiter> {
        &self.limiter
    }
}

impl<S> Layer<S> for HandshakeRateLimitLayer {
    type Service = HandshakeRateLimit<S>;

    fn layer(&self, inner: S) -> Self::Service {
        HandshakeRateLimit {
            inner,
            limiter: Arc::clone(&self.limiter),
            defer: self.defer,
        }
    }
}

/// Counts each request against its client's bucket; see [`HandshakeRateLimitLayer`].
#[derive(Clone, Debug)]
pub struct HandshakeRateLimit<S> {
    inner: S,
    limiter: Arc<RateLimiter>,
    defer: bool,
}

impl<S> HandshakeRateLimit<S> {
    define_inner_service_accessors!();
}

impl_admitting_service!(HandshakeRateLimit);

impl<S> Admit for HandshakeRateLimit<S> {
    fn admit<B>(&self, req: &mut Request<B>) -> Result<(), AuthError> {
        let retry_after = match self.limiter.check(client_of(req), Instant::now()) {
            Decision::Allow => return Ok(()),
            Decision::Limited { retry_after } if self.defer => {
                req.extensions_mut().insert(RateLimited { retry_after });
                return Ok(());
            }
            Decision::Limited { retry_after } | Decision::Shed { retry_after } => retry_after,
        };
        Err(AuthError::RateLimited { retry_after })
    }

    fn log_refusal<B>(&self, err: &AuthError, req: &Request<B>) {
        if let AuthError::RateLimited { retry_after } = err {
            tracing::debug!(client = %client_of(req), retry_after = ?retry_after, path = req.uri().path(), "rate limited");
        }
    }
}

/// The address a request counts against: its [`ClientIp`], or [`UNKNOWN_CLIENT`].
fn client_of<B>(req: &Request<B>) -> IpAddr {
    req.extensions()
        .get::<ClientIp>()
        .map_or(UNKNOWN_CLIENT, |c| c.0)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http::StatusCode;
    use http::header::RETRY_AFTER;
    use http_body_util::Full;
    use tower::{ServiceBuilder, ServiceExt};

    use super::*;
    use crate::rejection::tests::read;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bucket_refills_at_the_rate() {
        let limiter = RateLimiter::new(10, 5);
        let a = ip("192.0.2.1");
        let t0 = Instant::now();
        for _ in 0..5 {
            assert_eq!(limiter.check(a, t0), Decision::Allow);
        }
        let Decision::Limited { retry_after } = limiter.check(a, t0) else {
            panic!("over the burst")
        };
        // One token of debt: two tokens to refill at 10/s.
        assert_eq!(retry_after, Duration::from_millis(200));
        // Waiting as told is enough.
        assert_eq!(limiter.check(a, t0 + retry_after), Decision::Allow);
        // A full refill after a long pause, never more than the burst.
        let later = t0 + Duration::from_secs(60);
        for _ in 0..5 {
            assert_eq!(limiter.check(a, later), Decision::Allow);
        }
        assert!(matches!(limiter.check(a, later), Decision::Limited { .. }));
    }

    #[test]
    fn a_whole_burst_of_debt_is_shed_and_not_counted() {
        let limiter = RateLimiter::new(1, 3);
        let a = ip("192.0.2.1");
        let t0 = Instant::now();
        let decisions: Vec<Decision> = (0..9).map(|_| limiter.check(a, t0)).collect();
        let allowed = decisions.iter().filter(|d| **d == Decision::Allow).count();
        let limited = decisions
            .iter()
            .filter(|d| matches!(d, Decision::Limited { .. }))
            .count();
        let shed = decisions
            .iter()
            .filter(|d| matches!(d, Decision::Shed { .. }))
            .count();
        assert_eq!((allowed, limited, shed), (3, 3, 3), "{decisions:?}");
        let Decision::Shed { retry_after } = decisions[8] else {
            panic!()
        };
        // Debt of 3: four seconds to one token, and shed requests did not add to it.
        assert_eq!(retry_after, Duration::from_secs(4));
        assert_eq!(limiter.check(a, t0 + retry_after), Decision::Allow);
    }

    #[test]
    fn addresses_are_independent_and_ipv6_counts_per_64() {
        let limiter = RateLimiter::new(1, 1);
        let t0 = Instant::now();
        assert_eq!(limiter.check(ip("192.0.2.1"), t0), Decision::Allow);
        assert_ne!(limiter.check(ip("192.0.2.1"), t0), Decision::Allow);
        assert_eq!(limiter.check(ip("192.0.2.2"), t0), Decision::Allow);
        assert_eq!(limiter.check(ip("2001:db8::1"), t0), Decision::Allow);
        assert_ne!(limiter.check(ip("2001:db8::2"), t0), Decision::Allow);
        assert_eq!(limiter.check(ip("2001:db8:0:1::1"), t0), Decision::Allow);
        // A mapped IPv4 address is that address.
        assert_ne!(limiter.check(ip("::ffff:192.0.2.2"), t0), Decision::Allow);
    }

    #[test]
    fn memory_is_bounded() {
        let limiter = RateLimiter::with_max_tracked(1, 1, 64);
        let t0 = Instant::now();
        for i in 0..10_000u32 {
            let a = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            let _ = limiter.check(a, t0 + Duration::from_micros(u64::from(i)));
        }
        assert!(limiter.tracked() <= 64 + SHARDS, "{}", limiter.tracked());
        // Full buckets are forgotten first, and forgetting one is harmless.
        let later = t0 + Duration::from_secs(10);
        for i in 0..100u32 {
            assert_eq!(
                limiter.check(
                    IpAddr::from(std::net::Ipv4Addr::from(0x0b00_0000 + i)),
                    later
                ),
                Decision::Allow
            );
        }
    }

    #[test]
    fn time_going_backwards_is_harmless() {
        let limiter = RateLimiter::new(1, 1);
        let a = ip("192.0.2.1");
        let t0 = Instant::now() + Duration::from_secs(5);
        assert_eq!(limiter.check(a, t0), Decision::Allow);
        assert!(matches!(
            limiter.check(a, t0 - Duration::from_secs(5)),
            Decision::Limited { .. }
        ));
    }

    type Body = Full<Bytes>;

    fn from(ip: &str) -> Request<()> {
        let mut req = Request::get("/ws").body(()).unwrap();
        req.extensions_mut().insert(ClientIp(ip.parse().unwrap()));
        req
    }

    async fn echo(req: Request<()>) -> Result<Response<Body>, Infallible> {
        let body = match req.extensions().get::<RateLimited>() {
            Some(_) => "marked",
            None => "clean",
        };
        Ok(Response::new(Body::from(body)))
    }

    async fn text(res: Response<Body>) -> String {
        use http_body_util::BodyExt;
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn refuses_over_the_limit_with_retry_after() {
        let svc = ServiceBuilder::new()
            .layer(HandshakeRateLimitLayer::new(1))
            .service_fn(echo);
        assert_eq!(
            text(svc.clone().oneshot(from("192.0.2.1")).await.unwrap()).await,
            "clean"
        );
        let res = svc.clone().oneshot(from("192.0.2.1")).await.unwrap();
        assert_eq!(res.headers()[RETRY_AFTER], "2");
        let (status, _, json) = read(res).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(json["error"], "rate_limited");
        // Requests without a client address share one bucket.
        let anonymous = || Request::get("/ws").body(()).unwrap();
        assert_eq!(
            svc.clone().oneshot(anonymous()).await.unwrap().status(),
            StatusCode::OK
        );
        assert_eq!(
            svc.oneshot(anonymous()).await.unwrap().status(),
            StatusCode::TOO_MANY_REQUESTS
        );
    }

    #[tokio::test]
    async fn deferred_rejection_marks_then_sheds() {
        let svc = ServiceBuilder::new()
            .layer(
                HandshakeRateLimitLayer::new(1)
                    .burst(2)
                    .defer_rejection(true),
            )
            .service_fn(echo);
        let mut seen = Vec::new();
        for _ in 0..8 {
            let res = svc.clone().oneshot(from("192.0.2.1")).await.unwrap();
            if res.status() == StatusCode::OK {
                seen.push(text(res).await);
            } else {
                assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
                seen.push("429".to_owned());
            }
        }
        // Two in the burst, then a burst's worth marked (one more when the clock moved on while
        // the test ran), then shed.
        assert_eq!(
            seen[..4],
            ["clean", "clean", "marked", "marked"],
            "{seen:?}"
        );
        assert_eq!(seen[6..], ["429", "429"], "{seen:?}");
        let marked = RateLimited {
            retry_after: Duration::from_millis(10),
        };
        let (status, _, json) = read(marked.response::<Body>()).await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(json["error"], "rate_limited");
    }
}
