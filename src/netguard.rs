//! The outbound address guard: every connection freshet opens to a URL that
//! someone else chose (a page, a search result, a redirect hop) goes through
//! here, so internal networks cannot be reached through the pipeline.
//!
//! - [`classify`] names the rule that refuses an address: loopback,
//!   link-local (the cloud metadata address 169.254.169.254 included),
//!   private, CGNAT, unspecified, multicast, broadcast, reserved, benchmark,
//!   documentation, and the IPv6 equivalents (ULA, link-local, site-local);
//!   IPv4 addresses inside IPv6 (mapped `::ffff:a.b.c.d`, compatible
//!   `::a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4 `2002::/16`) are judged as the
//!   IPv4 address they carry.
//! - [`NetGuard`] adds the operator's exceptions: `[extract] allow_private`
//!   (CIDRs or host names) and the fixed addresses of `[extract.resolve]`,
//!   which the operator wrote and so are trusted as they are.
//! - [`NetGuard::resolver`] is a `reqwest` DNS resolver that resolves once
//!   and hands the connector only addresses that passed: the connection goes
//!   to the address that was checked, with no second lookup, so DNS
//!   rebinding cannot slip a different address in between. Every redirect
//!   hop to a host name goes through it too.
//! - URLs with a literal IP never reach a resolver; [`NetGuard::check_url`]
//!   judges them (and the scheme) before the request and on every redirect
//!   hop. The `url` crate normalises odd IPv4 spellings (`2130706433`,
//!   `0x7f.1`, `0177.0.0.1`) into the address they mean before we look.
//!
//! A refusal is a [`Blocked`] error naming the host, the address and the
//! rule; the fetch path turns it into the `blocked` error class (a dead
//! letter, never retried) and counts it in `freshet_fetch_blocked_total`.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// Why an address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Rule {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// 169.254.0.0/16 (cloud metadata services live here), fe80::/10.
    LinkLocal,
    /// 10/8, 172.16/12, 192.168/16.
    Private,
    /// 100.64.0.0/10, carrier-grade NAT.
    Cgnat,
    /// 0.0.0.0/8 ("this network"), ::.
    Unspecified,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// 240.0.0.0/4, 192.0.0.0/24 (protocol assignments), 192.88.99.0/24
    /// (6to4 relays), 100::/64 (discard).
    Reserved,
    /// 198.18.0.0/15, 2001:2::/48.
    Benchmark,
    /// 192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32.
    Documentation,
    /// fc00::/7, IPv6 unique local addresses.
    UniqueLocal,
    /// fec0::/10, deprecated IPv6 site-local addresses.
    SiteLocal,
}

impl Rule {
    /// The rule's name, as the metric label and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Loopback => "loopback",
            Rule::LinkLocal => "link_local",
            Rule::Private => "private",
            Rule::Cgnat => "cgnat",
            Rule::Unspecified => "unspecified",
            Rule::Multicast => "multicast",
            Rule::Broadcast => "broadcast",
            Rule::Reserved => "reserved",
            Rule::Benchmark => "benchmark",
            Rule::Documentation => "documentation",
            Rule::UniqueLocal => "unique_local",
            Rule::SiteLocal => "site_local",
        }
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn classify_v4(ip: Ipv4Addr) -> Option<Rule> {
    let [a, b, c, _] = ip.octets();
    Some(match (a, b, c) {
        (127, ..) => Rule::Loopback,
        (0, ..) => Rule::Unspecified,
        (10, ..) | (172, 16..=31, _) | (192, 168, _) => Rule::Private,
        (169, 254, _) => Rule::LinkLocal,
        (100, 64..=127, _) => Rule::Cgnat,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => Rule::Documentation,
        (198, 18..=19, _) => Rule::Benchmark,
        (192, 0, 0) | (192, 88, 99) => Rule::Reserved,
        (224..=239, ..) => Rule::Multicast,
        _ if ip == Ipv4Addr::BROADCAST => Rule::Broadcast,
        (240..=255, ..) => Rule::Reserved,
        _ => return None,
    })
}

/// The IPv4 address an IPv6 address carries, for the forms that reach it.
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        // ::ffff:a.b.c.d (mapped)
        [0, 0, 0, 0, 0, 0xffff, _, _] => Some(tail),
        // ::a.b.c.d (compatible, deprecated); :: and ::1 are judged as IPv6
        [0, 0, 0, 0, 0, 0, _, _] if !(s[6] == 0 && s[7] <= 1) => Some(tail),
        // 64:ff9b::a.b.c.d (NAT64 well-known prefix)
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(tail),
        // 2002:aabb:ccdd::/48 (6to4)
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

fn classify_v6(ip: Ipv6Addr) -> Option<Rule> {
    if let Some(v4) = embedded_v4(ip) {
        return classify_v4(v4);
    }
    let s = ip.segments();
    Some(match s {
        _ if ip.is_loopback() => Rule::Loopback,
        _ if ip.is_unspecified() => Rule::Unspecified,
        [x, ..] if x & 0xff00 == 0xff00 => Rule::Multicast,
        [x, ..] if x & 0xffc0 == 0xfe80 => Rule::LinkLocal,
        [x, ..] if x & 0xffc0 == 0xfec0 => Rule::SiteLocal,
        [x, ..] if x & 0xfe00 == 0xfc00 => Rule::UniqueLocal,
        [0x2001, 0x0db8, ..] => Rule::Documentation,
        [0x2001, 0x0002, 0, ..] => Rule::Benchmark,
        [0x0100, 0, 0, 0, ..] => Rule::Reserved,
        _ => return None,
    })
}

/// The rule that refuses `ip`, or `None` for a public address.
pub fn classify(ip: IpAddr) -> Option<Rule> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

/// A refused outbound address (or scheme).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Blocked {
    /// The address falls under a refusing rule.
    #[error("refused to connect to {host} ({addr}): {rule} address; if this host is meant to be fetched, allow it with [extract] allow_private = [\"{addr}\"] (or a CIDR, or the host name)")]
    Address {
        /// Host as written in the URL.
        host: String,
        /// The address it is or resolved to.
        addr: IpAddr,
        /// The rule.
        rule: Rule,
    },
    /// Only http and https are fetched.
    #[error("refused scheme `{0}`: only http and https URLs are fetched")]
    Scheme(String),
    /// The URL has no host.
    #[error("refused URL without a host")]
    NoHost,
}

impl Blocked {
    /// The rule's metric label (`scheme` / `no_host` for the other refusals).
    pub fn rule_label(&self) -> &'static str {
        match self {
            Blocked::Address { rule, .. } => rule.as_str(),
            Blocked::Scheme(_) => "scheme",
            Blocked::NoHost => "no_host",
        }
    }

    /// Counts the refusal and logs it (one outcome, one event).
    pub fn emit(&self) {
        metrics::counter!(crate::metrics::FETCH_BLOCKED_TOTAL, "stage" => "extract", "rule" => self.rule_label())
            .increment(1);
        tracing::warn!(error = %self, "outbound fetch refused by the address guard");
    }

    /// Finds a `Blocked` in an error's source chain (reqwest wraps what the
    /// resolver or the redirect policy returned).
    pub fn find_in<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Blocked> {
        let mut cur: Option<&'a (dyn std::error::Error + 'static)> = Some(err);
        while let Some(e) = cur {
            if let Some(b) = e.downcast_ref::<Blocked>() {
                return Some(b);
            }
            cur = e.source();
        }
        None
    }
}

/// Why `allow_private` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is neither a CIDR (\"10.1.0.0/16\"), an IP address nor a lowercase host name")]
pub struct AllowError(pub String);

/// The operator's exceptions, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allow {
    nets: Vec<IpNet>,
    hosts: Vec<String>,
}

impl Allow {
    /// Parses `[extract] allow_private` entries: CIDRs, bare IP addresses
    /// (a /32 or /128) or host names (the host and its subdomains).
    pub fn parse(entries: &[String]) -> Result<Allow, AllowError> {
        let mut allow = Allow::default();
        for e in entries {
            let t = e.trim();
            if let Ok(net) = t.parse::<IpNet>() {
                allow.nets.push(net.trunc());
            } else if let Ok(ip) = t.parse::<IpAddr>() {
                allow.nets.push(IpNet::from(ip));
            } else if crate::knobs::valid_domain(t) {
                allow.hosts.push(t.to_string());
            } else {
                return Err(AllowError(e.clone()));
            }
        }
        Ok(allow)
    }

    fn host(&self, host: &str) -> bool {
        self.hosts.iter().any(|h| suffix_match(host, h))
    }

    fn addr(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.nets.iter().any(|n| n.contains(&ip))
    }
}

/// Mapped IPv6 addresses compare as the IPv4 address they carry.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn suffix_match(host: &str, suffix: &str) -> bool {
    host == suffix
        || (host.len() > suffix.len()
            && host.ends_with(suffix)
            && host.as_bytes()[host.len() - suffix.len() - 1] == b'.')
}

fn normalise_host(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// The guard: the classifier plus the operator's exceptions.
#[derive(Debug, Clone, Default)]
pub struct NetGuard {
    allow: Allow,
    /// `[extract.resolve]`: host suffix -> fixed address, trusted.
    fixed: Vec<(String, IpAddr)>,
}

impl NetGuard {
    /// A guard with `allow` exceptions and `fixed` resolutions (trusted).
    pub fn new(allow: Allow, fixed: &[(String, IpAddr)]) -> NetGuard {
        NetGuard {
            allow,
            fixed: fixed.to_vec(),
        }
    }

    /// Judges one address reached through `host`.
    pub fn check_addr(&self, host: &str, ip: IpAddr) -> Result<(), Blocked> {
        match classify(ip) {
            None => Ok(()),
            Some(_) if self.allow.host(&normalise_host(host)) || self.allow.addr(ip) => Ok(()),
            Some(rule) => Err(Blocked::Address {
                host: host.to_string(),
                addr: ip,
                rule,
            }),
        }
    }

    /// Judges a URL without resolving it: the scheme, and the address when
    /// the host is a literal IP (those never reach the resolver). Host names
    /// are judged by [`resolve`](Self::resolve) when connecting.
    pub fn check_url(&self, url: &url::Url) -> Result<(), Blocked> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Blocked::Scheme(url.scheme().to_string()));
        }
        match url.host() {
            None => Err(Blocked::NoHost),
            Some(url::Host::Ipv4(ip)) => self.check_addr(&ip.to_string(), IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check_addr(&format!("[{ip}]"), IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => Ok(()),
        }
    }

    /// The fixed address of `host` from `[extract.resolve]`, if any.
    fn fixed_for(&self, host: &str) -> Option<IpAddr> {
        self.fixed
            .iter()
            .find(|(suffix, _)| suffix_match(host, suffix))
            .map(|(_, ip)| *ip)
    }

    /// Resolves `host` once and returns only the addresses that pass. All
    /// refused: the refusal of the first one. Fixed addresses of
    /// `[extract.resolve]` are returned as they are (the operator set them).
    pub async fn resolve(&self, host: &str) -> Result<Vec<SocketAddr>, ResolveError> {
        let host = normalise_host(host);
        if let Some(ip) = self.fixed_for(&host) {
            return Ok(vec![SocketAddr::new(ip, 0)]);
        }
        let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0))
            .await
            .map_err(|e| ResolveError::Lookup(host.clone(), e.to_string()))?
            .collect();
        let mut refused = None;
        let passed: Vec<SocketAddr> = found
            .into_iter()
            .filter(|a| match self.check_addr(&host, a.ip()) {
                Ok(()) => true,
                Err(b) => {
                    refused.get_or_insert(b);
                    false
                }
            })
            .collect();
        match (passed.is_empty(), refused) {
            (true, Some(b)) => Err(ResolveError::Blocked(b)),
            (true, None) => Err(ResolveError::Lookup(host, "no addresses".into())),
            _ => Ok(passed),
        }
    }

    /// A reqwest resolver over this guard (see the module docs).
    pub fn resolver(self: &Arc<Self>) -> Arc<GuardedResolver> {
        Arc::new(GuardedResolver(self.clone()))
    }
}

/// A failed guarded resolution.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    /// Every address the name resolved to was refused.
    #[error(transparent)]
    Blocked(Blocked),
    /// The name did not resolve.
    #[error("cannot resolve {0}: {1}")]
    Lookup(String, String),
}

/// [`reqwest::dns::Resolve`] through a [`NetGuard`].
#[derive(Debug, Clone)]
pub struct GuardedResolver(Arc<NetGuard>);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let guard = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            match guard.resolve(&host).await {
                Ok(addrs) => {
                    let addrs: reqwest::dns::Addrs = Box::new(addrs.into_iter());
                    Ok(addrs)
                }
                // The Blocked itself, so the fetch path can find it in the
                // error's source chain.
                Err(ResolveError::Blocked(b)) => {
                    Err(Box::new(b) as Box<dyn std::error::Error + Send + Sync>)
                }
                Err(e) => Err(Box::new(e) as Box<dyn std::error::Error + Send + Sync>),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(s: &str) -> Option<Rule> {
        classify(s.parse().unwrap())
    }

    #[test]
    fn every_refused_range_is_named() {
        for (addr, want) in [
            ("127.0.0.1", Rule::Loopback),
            ("127.255.255.254", Rule::Loopback),
            ("::1", Rule::Loopback),
            ("169.254.169.254", Rule::LinkLocal),
            ("fe80::1", Rule::LinkLocal),
            ("10.0.0.1", Rule::Private),
            ("172.16.0.1", Rule::Private),
            ("172.31.255.255", Rule::Private),
            ("192.168.1.1", Rule::Private),
            ("100.64.0.1", Rule::Cgnat),
            ("100.127.255.255", Rule::Cgnat),
            ("0.0.0.0", Rule::Unspecified),
            ("0.1.2.3", Rule::Unspecified),
            ("::", Rule::Unspecified),
            ("224.0.0.1", Rule::Multicast),
            ("239.255.255.250", Rule::Multicast),
            ("ff02::1", Rule::Multicast),
            ("255.255.255.255", Rule::Broadcast),
            ("240.0.0.1", Rule::Reserved),
            ("192.0.0.8", Rule::Reserved),
            ("192.88.99.1", Rule::Reserved),
            ("100::1", Rule::Reserved),
            ("198.18.0.1", Rule::Benchmark),
            ("198.19.255.255", Rule::Benchmark),
            ("2001:2::1", Rule::Benchmark),
            ("192.0.2.1", Rule::Documentation),
            ("198.51.100.7", Rule::Documentation),
            ("203.0.113.9", Rule::Documentation),
            ("2001:db8::1", Rule::Documentation),
            ("fc00::1", Rule::UniqueLocal),
            ("fd12:3456::1", Rule::UniqueLocal),
            ("fec0::1", Rule::SiteLocal),
            // IPv4 inside IPv6 is judged as the IPv4 address.
            ("::ffff:127.0.0.1", Rule::Loopback),
            ("::ffff:169.254.169.254", Rule::LinkLocal),
            ("::ffff:10.1.2.3", Rule::Private),
            ("::127.0.0.1", Rule::Loopback),
            ("::10.0.0.1", Rule::Private),
            ("64:ff9b::7f00:1", Rule::Loopback),
            ("2002:7f00:1::", Rule::Loopback),
            ("2002:c0a8:101::1", Rule::Private),
        ] {
            assert_eq!(rule(addr), Some(want), "{addr}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for addr in [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "192.169.0.1",
            "198.20.0.1",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "2002:808:808::1",
        ] {
            assert_eq!(rule(addr), None, "{addr}");
        }
    }

    #[test]
    fn odd_ipv4_spellings_in_urls_are_the_address_they_mean() {
        let guard = NetGuard::default();
        for u in [
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0x7f000001/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[::1]:8080/",
            "http://169.254.169.254/latest/meta-data/",
            "https://0xa9fea9fe/",
            "http://0/",
        ] {
            let url = url::Url::parse(u).unwrap();
            let err = guard.check_url(&url).unwrap_err();
            assert!(matches!(err, Blocked::Address { .. }), "{u}: {err}");
        }
        assert_eq!(
            guard
                .check_url(&url::Url::parse("file:///etc/passwd").unwrap())
                .unwrap_err(),
            Blocked::Scheme("file".into())
        );
        assert!(guard
            .check_url(&url::Url::parse("http://example.com/").unwrap())
            .is_ok());
        assert!(guard
            .check_url(&url::Url::parse("http://8.8.8.8/").unwrap())
            .is_ok());
    }

    #[test]
    fn allow_private_opens_nets_and_hosts_only() {
        let allow = Allow::parse(&[
            "10.1.0.0/16".to_string(),
            "127.0.0.1".to_string(),
            "wiki.internal".to_string(),
        ])
        .unwrap();
        let guard = NetGuard::new(allow, &[]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert!(guard.check_addr("x", ip("10.1.200.3")).is_ok());
        assert!(guard.check_addr("x", ip("10.2.0.1")).is_err());
        assert!(guard.check_addr("x", ip("127.0.0.1")).is_ok());
        assert!(guard.check_addr("x", ip("::ffff:127.0.0.1")).is_ok());
        assert!(guard.check_addr("x", ip("127.0.0.2")).is_err());
        assert!(guard.check_addr("wiki.internal", ip("10.9.9.9")).is_ok());
        assert!(guard
            .check_addr("docs.wiki.internal", ip("10.9.9.9"))
            .is_ok());
        assert!(guard
            .check_addr("evilwiki.internal", ip("10.9.9.9"))
            .is_err());
        let err = guard.check_addr("evil.test", ip("169.254.169.254"));
        let msg = err.unwrap_err().to_string();
        assert!(
            msg.contains("169.254.169.254") && msg.contains("link_local"),
            "{msg}"
        );
        assert!(Allow::parse(&["not a net".to_string()]).is_err());
        assert!(Allow::parse(&["10.0.0.0/33".to_string()]).is_err());
    }

    #[tokio::test]
    async fn the_resolver_drops_refused_addresses_and_trusts_fixed_ones() {
        let guard = NetGuard::new(
            Allow::default(),
            &[("sim.test".to_string(), IpAddr::from([127, 0, 0, 1]))],
        );
        assert_eq!(
            guard.resolve("a.sim.test").await.unwrap(),
            vec![SocketAddr::from(([127, 0, 0, 1], 0))]
        );
        match guard.resolve("localhost").await {
            Err(ResolveError::Blocked(Blocked::Address { rule, .. })) => {
                assert_eq!(rule, Rule::Loopback)
            }
            other => panic!("localhost must be refused, got {other:?}"),
        }
    }
}
