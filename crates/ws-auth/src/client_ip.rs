//! Who is the client: [`SetClientIpLayer`] and [`SetClientIp`] insert [`ClientIp`], taking
//! `X-Forwarded-For` into account only when the peer is a trusted proxy.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Extensions, HeaderMap, HeaderName, Request};
use tower::{Layer, Service};

use crate::error::ConfigError;

/// The address of the client a request comes from, inserted into the request extensions by
/// [`SetClientIp`] and read by [`HandshakeRateLimit`](crate::HandshakeRateLimit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientIp(pub IpAddr);

/// The `X-Forwarded-For` header.
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Addresses and ranges of the reverse proxies whose `X-Forwarded-For` is believed.
///
/// Parsed from entries like `10.0.0.0/8`, `192.0.2.7`, `::1` or `fd00::/8`.
///
/// ```
/// use ws_auth::TrustedProxies;
///
/// let proxies = TrustedProxies::parse(["10.0.0.0/8", "::1"])?;
/// assert!(proxies.contains("10.1.2.3".parse()?));
/// assert!(!proxies.contains("11.0.0.1".parse()?));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    ranges: Vec<(IpAddr, u8)>,
}

impl TrustedProxies {
    /// No trusted proxy: `X-Forwarded-For` is never believed.
    pub fn none() -> Self {
        Self::default()
    }

    /// Parses addresses and CIDR ranges.
    ///
    /// # Errors
    ///
    /// [`ConfigError::TrustedProxy`] naming the first entry that is neither.
    pub fn parse<I>(entries: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let ranges = entries
            .into_iter()
            .map(|entry| {
                let entry = entry.as_ref();
                parse_range(entry.trim()).ok_or_else(|| ConfigError::TrustedProxy(entry.to_owned()))
            })
            .collect::<Result<_, _>>()?;
        Ok(Self { ranges })
    }

    /// Whether `ip` is a trusted proxy. IPv4-mapped IPv6 addresses count as IPv4.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.ranges
            .iter()
            .any(|&(net, bits)| in_range(ip, net, bits))
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

fn parse_range(entry: &str) -> Option<(IpAddr, u8)> {
    let (addr, bits) = match entry.split_once('/') {
        Some((addr, bits)) => (addr, Some(bits)),
        None => (entry, None),
    };
    let addr = canonical(addr.parse().ok()?);
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let bits = match bits {
        None => max,
        Some(bits) if !bits.is_empty() && bits.bytes().all(|b| b.is_ascii_digit()) => {
            bits.parse().ok().filter(|b| *b <= max)?
        }
        Some(_) => return None,
    };
    Some((addr, bits))
}

fn in_range(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, what a dual-stack socket reports) as IPv4.
pub(crate) fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// The client of a request that came from `peer`.
///
/// When `peer` is a trusted proxy, `X-Forwarded-For` (all its headers, in order) is read from
/// the right: each trusted proxy is skipped, and the first address that is not one is the
/// client. When every hop is trusted, the left-most is the client. An entry that is not an
/// address (`unknown`, garbage, bytes that are not ASCII) stops the walk: the hop that
/// forwarded it is the client, since nothing left of it can be believed. Entries are split
/// from the raw bytes, so garbage in one entry never hides the entries right of it. When `peer` is not trusted, the header is ignored and
/// `peer` is the client, so a client cannot choose its own address.
///
/// ```
/// use http::HeaderMap;
/// use ws_auth::{TrustedProxies, client_ip};
///
/// let proxies = TrustedProxies::parse(["10.0.0.0/8"])?;
/// let mut headers = HeaderMap::new();
/// headers.insert("x-forwarded-for", "198.51.100.1, 203.0.113.9, 10.0.0.2".parse()?);
/// // Through two proxies: the client is the address the first proxy saw.
/// assert_eq!(client_ip("10.0.0.1".parse()?, &headers, &proxies), "203.0.113.9".parse::<std::net::IpAddr>()?);
/// // Straight from the client: the header is its own claim, ignored.
/// assert_eq!(client_ip("192.0.2.4".parse()?, &headers, &proxies), "192.0.2.4".parse::<std::net::IpAddr>()?);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &TrustedProxies) -> IpAddr {
    let mut client = canonical(peer);
    if !trusted.contains(client) {
        return client;
    }
    // Split the raw bytes, not the value as text: a client may put any byte in the part of
    // the header it writes, and `to_str()` failing on it would drop the whole value, the
    // proxy's own entry on the right included, so the request would count against the proxy
    // and one client could spend the handshake budget of everyone behind it.
    let hops: Vec<&[u8]> = headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .flat_map(|value| value.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .collect();
    for hop in hops.iter().rev() {
        let Some(ip) = std::str::from_utf8(hop).ok().and_then(parse_hop) else {
            break;
        };
        client = ip;
        if !trusted.contains(ip) {
            break;
        }
    }
    client
}

/// One `X-Forwarded-For` entry: an address, maybe with a port (`192.0.2.1:4711`, `[::1]:80`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    hop.parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|s| s.ip()))
        .map(canonical)
}

/// Reads the address of the TCP peer from the request extensions; the transport decides where
/// it is (wshub's is `ws_transport::RemoteAddr`).
pub type PeerIpFn = fn(&Extensions) -> Option<IpAddr>;

/// Applies [`SetClientIp`]: inserts the [`ClientIp`] of each request.
///
/// `ws-auth` does not know the transport, so the layer is given a function that reads the TCP
/// peer's address from the request extensions. With trusted proxies, `X-Forwarded-For` is
/// followed as [`client_ip`] describes.
///
/// ```
/// use std::convert::Infallible;
/// use std::net::{IpAddr, SocketAddr};
/// use http::{Request, Response};
/// use tower::{ServiceBuilder, ServiceExt};
/// use ws_auth::{ClientIp, SetClientIpLayer, TrustedProxies};
///
/// /// What the transport inserts.
/// #[derive(Clone, Copy)]
/// struct Peer(SocketAddr);
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let layer = SetClientIpLayer::new(|ext| ext.get::<Peer>().map(|p| p.0.ip()))
///     .trusted_proxies(TrustedProxies::parse(["127.0.0.1"])?);
/// let svc = ServiceBuilder::new().layer(layer).service_fn(|req: Request<()>| async move {
///     Ok::<_, Infallible>(Response::new(req.extensions().get::<ClientIp>().map(|c| c.0)))
/// });
///
/// let mut req = Request::get("/").header("x-forwarded-for", "203.0.113.5").body(())?;
/// req.extensions_mut().insert(Peer("127.0.0.1:5000".parse()?));
/// let ip = svc.oneshot(req).await?.into_body();
/// assert_eq!(ip, Some("203.0.113.5".parse::<IpAddr>()?));
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SetClientIpLayer {
    peer_ip: PeerIpFn,
    trusted: Arc<TrustedProxies>,
}

impl SetClientIpLayer {
    /// A layer reading the peer's address with `peer_ip`, trusting no proxy.
    pub fn new(peer_ip: PeerIpFn) -> Self {
        Self {
            peer_ip,
            trusted: Arc::new(TrustedProxies::none()),
        }
    }

    /// The proxies whose `X-Forwarded-For` is believed.
    #[must_use]
    pub fn trusted_proxies(mut self, trusted: TrustedProxies) -> Self {
        self.trusted = Arc::new(trusted);
        self
    }
}

impl fmt::Debug for SetClientIpLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetClientIpLayer")
            .field("trusted", &self.trusted)
            .finish_non_exhaustive()
    }
}

impl<S> Layer<S> for SetClientIpLayer {
    type Service = SetClientIp<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SetClientIp {
            inner,
            peer_ip: self.peer_ip,
            trusted: Arc::clone(&self.trusted),
        }
    }
}

/// Inserts [`ClientIp`] into each request's extensions, then calls the inner service.
///
/// When the peer's address is unknown (the transport inserted none), nothing is inserted, and
/// the unspecified address `0.0.0.0` stands for every such request where one is needed.
#[derive(Clone)]
pub struct SetClientIp<S> {
    inner: S,
    peer_ip: PeerIpFn,
    trusted: Arc<TrustedProxies>,
}

impl<S> SetClientIp<S> {
    define_inner_service_accessors!();
}

impl<S: fmt::Debug> fmt::Debug for SetClientIp<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetClientIp")
            .field("inner", &self.inner)
            .field("trusted", &self.trusted)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for SetClientIp<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if let Some(peer) = (self.peer_ip)(req.extensions()) {
            let ip = client_ip(peer, req.headers(), &self.trusted);
            req.extensions_mut().insert(ClientIp(ip));
        }
        self.inner.call(req)
    }
}

/// The key of an address for per-client limits: IPv4 addresses as they are, IPv6 addresses by
/// their /64 prefix (one host usually has a whole /64 to pick addresses from).
pub(crate) fn limit_key(ip: IpAddr) -> IpAddr {
    match canonical(ip) {
        IpAddr::V6(v6) => {
            let prefix = u128::from(v6) & (u128::MAX << 64);
            IpAddr::V6(Ipv6Addr::from(prefix))
        }
        v4 => v4,
    }
}

/// The address that stands for requests whose client is unknown.
pub(crate) const UNKNOWN_CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::UNSPECIFIED);

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(&X_FORWARDED_FOR, HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    #[test]
    fn ranges() {
        let t = TrustedProxies::parse(["10.0.0.0/8", "192.0.2.7", "fd00::/8", "::1", "0.0.0.0/0"])
            .unwrap();
        assert!(t.contains(ip("10.255.0.1")));
        assert!(t.contains(ip("::ffff:10.0.0.1")));
        assert!(t.contains(ip("fd12::1")));
        assert!(t.contains(ip("::1")));
        assert!(!t.contains(ip("fe80::1")));
        // 0.0.0.0/0 trusts every IPv4 address (and no IPv6 one).
        assert!(t.contains(ip("8.8.8.8")));
        let t = TrustedProxies::parse(["192.0.2.7"]).unwrap();
        assert!(t.contains(ip("192.0.2.7")));
        assert!(!t.contains(ip("192.0.2.8")));
        for bad in [
            "",
            "10.0.0.0/33",
            "::/129",
            "10.0.0.0/",
            "10.0.0.0/x",
            "example.com",
            "10.0.0.0/8/8",
            "10.0.0.0/+8",
        ] {
            assert!(
                matches!(TrustedProxies::parse([bad]), Err(ConfigError::TrustedProxy(e)) if e == bad),
                "{bad}"
            );
        }
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let t = TrustedProxies::parse(["10.0.0.0/8"]).unwrap();
        let h = xff(&["203.0.113.1"]);
        assert_eq!(client_ip(ip("198.51.100.2"), &h, &t), ip("198.51.100.2"));
        assert_eq!(
            client_ip(ip("198.51.100.2"), &h, &TrustedProxies::none()),
            ip("198.51.100.2")
        );
    }

    #[test]
    fn trusted_chain_is_walked_from_the_right() {
        let t = TrustedProxies::parse(["10.0.0.0/8"]).unwrap();
        let peer = ip("10.0.0.1");
        assert_eq!(
            client_ip(peer, &xff(&["203.0.113.1"]), &t),
            ip("203.0.113.1")
        );
        // A client-supplied entry on the left is not believed.
        assert_eq!(
            client_ip(peer, &xff(&["1.1.1.1, 203.0.113.1, 10.0.0.9"]), &t),
            ip("203.0.113.1")
        );
        // Several header lines are one list.
        assert_eq!(
            client_ip(peer, &xff(&["1.1.1.1", "203.0.113.1", "10.0.0.9"]), &t),
            ip("203.0.113.1")
        );
        // All trusted: the left-most.
        assert_eq!(
            client_ip(peer, &xff(&["10.0.0.7, 10.0.0.9"]), &t),
            ip("10.0.0.7")
        );
        // Ports and IPv6.
        assert_eq!(
            client_ip(peer, &xff(&["203.0.113.1:4711"]), &t),
            ip("203.0.113.1")
        );
        assert_eq!(
            client_ip(peer, &xff(&["[2001:db8::1]:80"]), &t),
            ip("2001:db8::1")
        );
        // Garbage stops the walk at the proxy that forwarded it.
        assert_eq!(client_ip(peer, &xff(&["203.0.113.1, unknown"]), &t), peer);
        assert_eq!(
            client_ip(peer, &xff(&["203.0.113.1, unknown, 10.0.0.9"]), &t),
            ip("10.0.0.9")
        );
        // No header: the proxy itself.
        assert_eq!(client_ip(peer, &HeaderMap::new(), &t), peer);
        // Not UTF-8: ignored.
        let mut h = HeaderMap::new();
        h.insert(
            &X_FORWARDED_FOR,
            HeaderValue::from_bytes(b"\xff1.2.3.4").unwrap(),
        );
        assert_eq!(client_ip(peer, &h, &t), peer);
    }

    /// A client behind the proxy writes bytes that are not ASCII into its part of the
    /// header: the proxy's entry right of it still names the client, so that client's bucket
    /// pays, not the proxy's (which every client without a usable entry would share).
    #[test]
    fn bytes_that_are_not_ascii_do_not_hide_the_proxys_entry() {
        let t = TrustedProxies::parse(["10.0.0.0/8"]).unwrap();
        let peer = ip("10.0.0.1");
        let raw = |bytes: &[&[u8]]| {
            let mut h = HeaderMap::new();
            for b in bytes {
                h.append(&X_FORWARDED_FOR, HeaderValue::from_bytes(b).unwrap());
            }
            h
        };
        for (header, client) in [
            (raw(&[b"\xff, 203.0.113.7"]), "203.0.113.7"),
            (raw(&["caf\u{e9}, 203.0.113.7".as_bytes()]), "203.0.113.7"),
            (raw(&[b"1.1.1.1\x80, 203.0.113.7, 10.0.0.9"]), "203.0.113.7"),
            (raw(&[b"\xff", b"203.0.113.7"]), "203.0.113.7"),
            (raw(&[b"203.0.113.7\xff"]), "10.0.0.1"),
            // Garbage right of a trusted hop: that trusted hop forwarded it, and is the client.
            (raw(&[b"203.0.113.7, \xfe, 10.0.0.9"]), "10.0.0.9"),
        ] {
            assert_eq!(client_ip(peer, &header, &t), ip(client), "{header:?}");
        }
    }

    #[test]
    fn ipv6_limits_by_prefix() {
        assert_eq!(limit_key(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(limit_key(ip("2001:db8:1:2:bbbb::9")), ip("2001:db8:1:2::"));
        assert_eq!(limit_key(ip("::ffff:192.0.2.1")), ip("192.0.2.1"));
        assert_eq!(limit_key(ip("192.0.2.1")), ip("192.0.2.1"));
    }
}
