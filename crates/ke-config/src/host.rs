//! The host facts that upstream bakes into some defaults.
//!
//! Upstream reads the hostname and "the" host IP deep inside its default
//! constructors, which makes defaults untestable. We pass a [`HostInfo`]
//! explicitly; only [`HostInfo::detect`] touches the machine, and it only
//! reads `/proc` (no sockets, no packets).

use std::net::{IpAddr, Ipv4Addr};

/// Hostname used when the kernel reports none (same fallback as upstream).
pub const FALLBACK_HOSTNAME: &str = "default-edge-node";

/// Hostname and primary IP used for host-dependent defaults
/// (`advertiseAddress`, `hostnameOverride`, edgeHub server addresses).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostInfo {
    pub hostname: String,
    pub ip: IpAddr,
}

impl HostInfo {
    pub fn new(hostname: impl Into<String>, ip: impl Into<IpAddr>) -> Self {
        HostInfo {
            hostname: hostname.into(),
            ip: ip.into(),
        }
    }

    /// Reads `/proc/sys/kernel/hostname` and the IPv4 address of the
    /// interface carrying the default route. Falls back to
    /// [`FALLBACK_HOSTNAME`] and `127.0.0.1`; never fails.
    pub fn detect() -> Self {
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| normalize_hostname(&h))
            .unwrap_or_else(|_| FALLBACK_HOSTNAME.to_owned());
        let ip = match (
            std::fs::read_to_string("/proc/net/route"),
            std::fs::read_to_string("/proc/net/fib_trie"),
        ) {
            (Ok(route), Ok(trie)) => default_route_ipv4(&route, &trie),
            _ => None,
        };
        HostInfo {
            hostname,
            ip: IpAddr::V4(ip.unwrap_or(Ipv4Addr::LOCALHOST)),
        }
    }
}

/// Node names must be lowercase; upstream lowercases the hostname too.
fn normalize_hostname(raw: &str) -> String {
    let h = raw.trim().to_lowercase();
    if h.is_empty() {
        FALLBACK_HOSTNAME.to_owned()
    } else {
        h
    }
}

/// One row of `/proc/net/route` (addresses are little-endian hex there).
struct Route<'a> {
    iface: &'a str,
    dest: u32,
    mask: u32,
}

fn parse_routes(table: &str) -> Vec<Route<'_>> {
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let hex = |i: usize| {
                cols.get(i)
                    .and_then(|c| u32::from_str_radix(c, 16).ok())
                    // The kernel prints the in-memory (network order)
                    // bytes as a native integer.
                    .map(|v| u32::from_be_bytes(v.to_ne_bytes()))
            };
            Some(Route {
                iface: cols.first()?,
                dest: hex(1)?,
                mask: hex(7)?,
            })
        })
        .collect()
}

/// Local (`/32 host LOCAL`) addresses listed in `/proc/net/fib_trie`.
fn local_addrs(trie: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in trie.lines() {
        let t = line.trim_start();
        if let Some(addr) = t.strip_prefix("|-- ") {
            last = addr.trim().parse().ok();
        } else if t.starts_with("/32 host LOCAL") {
            // Written without let-chains to keep the workspace MSRV (1.85).
            match last {
                Some(a) if !a.is_loopback() && !out.contains(&a) => out.push(a),
                _ => {}
            }
        }
    }
    out
}

/// The address of the default-route interface: a local address that lies in
/// one of the subnets routed through that interface. The kernel has no
/// direct "address of interface" file in /proc, so we join the two tables.
fn default_route_ipv4(route_table: &str, fib_trie: &str) -> Option<Ipv4Addr> {
    let routes = parse_routes(route_table);
    let iface = routes.iter().find(|r| r.dest == 0 && r.mask == 0)?.iface;
    let locals = local_addrs(fib_trie);
    let in_route = |a: Ipv4Addr, r: &Route<'_>| u32::from(a) & r.mask == r.dest & r.mask;
    let on_default_subnet = routes
        .iter()
        .filter(|r| r.iface == iface && r.mask != 0)
        .find_map(|r| locals.iter().copied().find(|a| in_route(*a, r)));
    // Cloud VMs often have only a /32 route to the gateway, so no subnet
    // contains their address; then take an address that at least does not
    // belong to another interface (docker0, cni0, ...).
    on_default_subnet.or_else(|| {
        locals.iter().copied().find(|a| {
            !routes
                .iter()
                .any(|r| r.iface != iface && r.mask != 0 && in_route(*a, r))
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
";

    const TRIE: &str = "\
Main:
  +-- 0.0.0.0/0 3 0 5
     |-- 0.0.0.0
        /0 universe UNICAST
     +-- 127.0.0.0/8 2 0 2
        |-- 127.0.0.1
           /32 host LOCAL
     +-- 172.17.0.0/16 2 0 2
        |-- 172.17.0.1
           /32 host LOCAL
     +-- 192.0.2.0/24 2 0 2
        |-- 192.0.2.2
           /32 host LOCAL
Local:
  +-- 0.0.0.0/0 3 0 5
";

    #[test]
    fn picks_address_of_default_route_interface() {
        assert_eq!(
            default_route_ipv4(ROUTE, TRIE),
            Some(Ipv4Addr::new(192, 0, 2, 2))
        );
    }

    #[test]
    fn gateway_only_route_still_finds_the_address() {
        // GCE style: 10.128.0.5/32 on ens4, default via 10.128.0.1, which is
        // reached through a /32 route; docker0 must not be chosen.
        let route = "\
Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
docker0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0
ens4\t00000000\t0100800A\t0003\t0\t0\t0\t00000000\t0\t0\t0
ens4\t0100800A\t00000000\t0005\t0\t0\t0\tFFFFFFFF\t0\t0\t0
";
        let trie = "\
Main:
     +-- 10.128.0.5/32
        |-- 172.17.0.1
           /32 host LOCAL
        |-- 10.128.0.5
           /32 host LOCAL
";
        assert_eq!(
            default_route_ipv4(route, trie),
            Some(Ipv4Addr::new(10, 128, 0, 5))
        );
    }

    #[test]
    fn no_default_route_means_none() {
        let no_default: String = ROUTE
            .lines()
            .filter(|l| !l.contains("010200C0"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert_eq!(default_route_ipv4(&no_default, TRIE), None);
        assert_eq!(default_route_ipv4("", ""), None);
        assert_eq!(default_route_ipv4("garbage\n\u{0}\u{0}", "|-- x"), None);
    }

    #[test]
    fn hostname_is_trimmed_and_lowercased() {
        assert_eq!(normalize_hostname("MyHost\n"), "myhost");
        assert_eq!(normalize_hostname("  \n"), FALLBACK_HOSTNAME);
    }

    #[test]
    fn detect_never_panics() {
        let h = HostInfo::detect();
        assert!(!h.hostname.is_empty());
    }
}
