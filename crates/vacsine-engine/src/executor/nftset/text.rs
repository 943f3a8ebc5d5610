//! The pure half of `nftset`: addresses, networks and durations parsed from arguments; the
//! nft text written from parsed values only (skeleton, element statements); the table read
//! back from `nft list ruleset`; nft's refusals told apart. No I/O.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::Duration;

/// Longest decision a `timeout` may ask for.
pub(super) const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// An address or a network, parsed; rendered from the parsed value only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(super) struct Net {
    pub(super) addr: IpAddr,
    pub(super) prefix: u8,
}

impl Net {
    pub(super) fn max(addr: IpAddr) -> u8 {
        if addr.is_ipv4() {
            32
        } else {
            128
        }
    }
    pub(super) fn is_host(&self) -> bool {
        self.prefix == Net::max(self.addr)
    }
    pub(super) fn bits(&self) -> u128 {
        match self.addr {
            IpAddr::V4(a) => u32::from(a) as u128,
            IpAddr::V6(a) => u128::from(a),
        }
    }
    pub(super) fn mask(&self) -> u128 {
        let width = Net::max(self.addr) as u32;
        let all = if width == 32 {
            u32::MAX as u128
        } else {
            u128::MAX
        };
        if self.prefix == 0 {
            0
        } else {
            all & !((1u128 << (width - self.prefix as u32)).wrapping_sub(1)) & all
        }
    }
    /// Whether the two share an address (one contains the other: they are prefixes).
    pub(super) fn overlaps(&self, o: &Net) -> bool {
        if self.addr.is_ipv4() != o.addr.is_ipv4() {
            return false;
        }
        let shorter = if self.prefix <= o.prefix { self } else { o };
        (self.bits() & shorter.mask()) == (o.bits() & shorter.mask())
    }
    /// The set a ban of this lives in.
    pub(super) fn ban_set(&self) -> &'static str {
        match (self.addr.is_ipv4(), self.is_host()) {
            (true, true) => "ban4",
            (true, false) => "ban4net",
            (false, true) => "ban6",
            (false, false) => "ban6net",
        }
    }
    pub(super) fn allow_set(&self) -> &'static str {
        if self.addr.is_ipv4() {
            "allow4"
        } else {
            "allow6"
        }
    }
}

impl std::fmt::Display for Net {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

/// Parse an address (`203.0.113.7`, `2001:db8::7`) or a network (`198.51.100.0/24`). A network
/// with host bits set is refused (it names no network exactly).
pub(super) fn parse_net(s: &str) -> Result<Net, String> {
    let bad = || {
        format!(
            "`{}` is not an IP address or network (such as 203.0.113.7, 2001:db8::7 or \
             198.51.100.0/24)",
            s.escape_debug()
        )
    };
    if s.len() > 64 {
        return Err(format!(
            "`{}…` is not an IP address or network (longer than 64 characters)",
            s.chars().take(32).collect::<String>().escape_debug()
        ));
    }
    let (ip, prefix) = match s.split_once('/') {
        Some((ip, len)) => {
            let addr: IpAddr = ip.parse().map_err(|_| bad())?;
            if len.is_empty() || !len.bytes().all(|b| b.is_ascii_digit()) || len.len() > 3 {
                return Err(bad());
            }
            let p: u8 = len.parse().map_err(|_| bad())?;
            if p > Net::max(addr) {
                return Err(format!(
                    "`{s}`: prefix /{p} is longer than the address (at most /{})",
                    Net::max(addr)
                ));
            }
            (addr, p)
        }
        None => {
            let addr: IpAddr = s.parse().map_err(|_| bad())?;
            (addr, Net::max(addr))
        }
    };
    // An IPv4 client reaches an inet table as IPv4: `::ffff:203.0.113.7` bans 203.0.113.7.
    let (ip, prefix) = match ip {
        IpAddr::V6(v6) if prefix >= 96 && v6.to_ipv4_mapped().is_some() => (
            IpAddr::V4(
                v6.to_ipv4_mapped()
                    .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
            ),
            prefix - 96,
        ),
        _ => (ip, prefix),
    };
    let n = Net { addr: ip, prefix };
    if n.bits() & !n.mask() != 0 {
        let base = n.bits() & n.mask();
        let base = match ip {
            IpAddr::V4(_) => IpAddr::V4((base as u32).into()),
            IpAddr::V6(_) => IpAddr::V6(base.into()),
        };
        return Err(format!(
            "`{s}` has host bits set; the network is {base}/{prefix}"
        ));
    }
    Ok(n)
}

/// `30s`, `10m`, `4h`, `1d`, `1h30m` → a duration (whole seconds).
pub(super) fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "`{}` is not a duration: a number and a unit (s, m, h, d), such as 10m, 4h or 1h30m",
            s.escape_debug()
        )
    };
    if s.is_empty() || s.len() > 32 {
        return Err(bad());
    }
    let mut total: u64 = 0;
    let mut num = String::new();
    for c in s.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86400,
            _ => return Err(bad()),
        };
        if num.is_empty() {
            return Err(bad());
        }
        let n: u64 = num.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|x| total.checked_add(x))
            .ok_or_else(bad)?;
        num.clear();
    }
    if !num.is_empty() {
        return Err(bad());
    }
    let d = Duration::from_secs(total);
    if d.is_zero() {
        return Err(format!("`{s}`: a timeout must be longer than zero"));
    }
    if d > MAX_TIMEOUT {
        return Err(format!("`{s}`: a timeout is at most 365d"));
    }
    Ok(d)
}

/// What no ban may cover, whatever the allow-list says (this also refuses `/0`).
pub(super) const NEVER: [&str; 4] = ["127.0.0.0/8", "0.0.0.0/8", "::1", "::"];

pub(super) const SETS: [(&str, &str, &str); 6] = [
    ("allow4", "ipv4_addr", "interval"),
    ("allow6", "ipv6_addr", "interval"),
    ("ban4", "ipv4_addr", "timeout"),
    ("ban6", "ipv6_addr", "timeout"),
    ("ban4net", "ipv4_addr", "interval,timeout"),
    ("ban6net", "ipv6_addr", "interval,timeout"),
];

/// The rules of each chain, in order (as `nft list` prints them).
pub(super) const RULES: [&str; 6] = [
    "ip saddr @allow4 accept",
    "ip6 saddr @allow6 accept",
    "ip saddr @ban4 drop",
    "ip6 saddr @ban6 drop",
    "ip saddr @ban4net drop",
    "ip6 saddr @ban6net drop",
];

pub(super) const CHAINS: [&str; 2] = ["input", "forward"];

/// The mechanism, declared so that what exists is kept (elements included) and the rules are
/// exactly these once the transaction commits.
pub(super) fn skeleton(table: &str) -> String {
    let mut s = format!("add table inet {table}\n");
    for (name, ty, flags) in SETS {
        let _ = writeln!(
            s,
            "add set inet {table} {name} {{ type {ty}; flags {flags}; }}"
        );
    }
    for c in CHAINS {
        let _ = writeln!(
            s,
            "add chain inet {table} {c} {{ type filter hook {c} priority -10; policy accept; }}"
        );
        let _ = writeln!(s, "flush chain inet {table} {c}");
        for r in RULES {
            let _ = writeln!(s, "add rule inet {table} {c} {r}");
        }
    }
    s
}

/// One element statement per set: `VERB element inet T SET { e1, e2 }`.
pub(super) fn elements(
    verb: &str,
    table: &str,
    items: impl IntoIterator<Item = (&'static str, Net, Option<Duration>)>,
) -> String {
    let mut by_set: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for (set, n, t) in items {
        let e = match t {
            Some(t) => format!("{n} timeout {}s", t.as_secs().max(1)),
            None => n.to_string(),
        };
        by_set.entry(set).or_default().push(e);
    }
    let mut s = String::new();
    for (set, es) in by_set {
        let _ = writeln!(
            s,
            "{verb} element inet {table} {set} {{ {} }}",
            es.join(", ")
        );
    }
    s
}

/// What the table holds, read from `nft list ruleset`.
#[derive(Debug, Default)]
pub(super) struct Listing {
    pub(super) present: bool,
    /// (set, element, time left) of every element of the table's sets.
    pub(super) elements: Vec<(String, Net, Option<Duration>)>,
    /// The rules of each chain, as listed.
    pub(super) rules: Vec<(String, Vec<String>)>,
    pub(super) sets: Vec<String>,
}

impl Listing {
    pub(super) fn has(&self, set: &str, n: &Net) -> bool {
        self.elements.iter().any(|(s, e, _)| s == set && e == n)
    }
    pub(super) fn left(&self, set: &str, n: &Net) -> Option<Option<Duration>> {
        self.elements
            .iter()
            .find(|(s, e, _)| s == set && e == n)
            .map(|x| x.2)
    }
    /// Whether the mechanism is there exactly (sets and rules).
    pub(super) fn skeleton_complete(&self) -> bool {
        self.present
            && SETS
                .iter()
                .all(|(n, _, _)| self.sets.iter().any(|s| s == n))
            && CHAINS.iter().all(|c| {
                self.rules
                    .iter()
                    .any(|(name, rs)| name == c && rs.iter().map(String::as_str).eq(RULES))
            })
    }
}

/// `1d2h3m4s500ms` (as nft prints times) → duration.
pub(super) fn parse_nft_time(s: &str) -> Option<Duration> {
    let mut ms: u64 = 0;
    let mut num = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let n: u64 = num.parse().ok()?;
        num.clear();
        let unit = match c {
            'd' => 86_400_000,
            'h' => 3_600_000,
            'm' if chars.peek() == Some(&'s') => {
                chars.next();
                1
            }
            'm' => 60_000,
            's' => 1000,
            _ => return None,
        };
        ms = ms.checked_add(n.checked_mul(unit)?)?;
    }
    num.is_empty().then(|| Duration::from_millis(ms))
}

/// Parse the table out of `nft list ruleset` text.
pub(super) fn parse_listing(ruleset: &str, table: &str) -> Listing {
    let mut l = Listing::default();
    let head = format!("table inet {table} {{");
    let mut lines = ruleset.lines();
    for line in lines.by_ref() {
        if line.trim_end() == head {
            l.present = true;
            break;
        }
    }
    if !l.present {
        return l;
    }
    let mut set: Option<String> = None;
    let mut chain: Option<String> = None;
    let mut in_elements = false;
    let mut buf = String::new();
    for line in lines {
        let t = line.trim();
        if line == "}" {
            break;
        }
        if in_elements {
            buf.push(' ');
            buf.push_str(t);
            if t.ends_with('}') {
                in_elements = false;
                if let Some(s) = &set {
                    parse_elements(&buf, s, &mut l.elements);
                }
                buf.clear();
            }
            continue;
        }
        if let Some(name) = t.strip_prefix("set ").and_then(|r| r.strip_suffix(" {")) {
            set = Some(name.to_string());
            l.sets.push(name.to_string());
            continue;
        }
        if let Some(name) = t.strip_prefix("chain ").and_then(|r| r.strip_suffix(" {")) {
            chain = Some(name.to_string());
            l.rules.push((name.to_string(), Vec::new()));
            continue;
        }
        if t == "}" {
            set = None;
            chain = None;
            continue;
        }
        if let Some(rest) = t.strip_prefix("elements = {") {
            buf = rest.to_string();
            if t.ends_with('}') {
                if let Some(s) = &set {
                    parse_elements(&buf, s, &mut l.elements);
                }
                buf.clear();
            } else {
                in_elements = true;
            }
            continue;
        }
        if chain.is_some() && !t.starts_with("type ") && !t.is_empty() {
            if let Some((_, rs)) = l.rules.last_mut() {
                rs.push(t.to_string());
            }
        }
    }
    l
}

pub(super) fn parse_elements(
    body: &str,
    set: &str,
    out: &mut Vec<(String, Net, Option<Duration>)>,
) {
    let body = body.trim().trim_end_matches('}');
    for item in body.split(',') {
        let mut toks = item.split_whitespace();
        let Some(first) = toks.next() else { continue };
        let Ok(n) = parse_net(first) else { continue };
        let mut left = None;
        while let Some(k) = toks.next() {
            if k == "expires" {
                left = toks.next().and_then(parse_nft_time);
            }
        }
        out.push((set.to_string(), n, left));
    }
}

/// Whether nft's complaint is only that the elements to create exist already: every error
/// is `File exists` on a `create element` statement of a host set (`ban4`, `ban6`).
pub(super) fn only_already_present(err: &str) -> bool {
    let mut lines = err.lines();
    let mut errors = 0;
    while let Some(l) = lines.next() {
        let Some((_, kind)) = l.split_once("Error: ") else {
            continue;
        };
        errors += 1;
        let stmt = lines.next().unwrap_or_default();
        let host_set = stmt.starts_with("create element inet ")
            && (stmt.contains(" ban4 { ") || stmt.contains(" ban6 { "));
        if kind.trim() != "Could not process rule: File exists" || !host_set {
            return false;
        }
    }
    errors > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_addresses_and_networks() {
        for (s, want, set) in [
            ("203.0.113.1", "203.0.113.1", "ban4"),
            ("2001:db8::7", "2001:db8::7", "ban6"),
            ("2001:0db8:0::7", "2001:db8::7", "ban6"),
            ("198.51.100.0/24", "198.51.100.0/24", "ban4net"),
            ("203.0.113.9/32", "203.0.113.9", "ban4"),
            ("2001:db8::/32", "2001:db8::/32", "ban6net"),
            ("0.0.0.0/0", "0.0.0.0/0", "ban4net"),
            ("::ffff:203.0.113.7", "203.0.113.7", "ban4"),
            ("::ffff:198.51.100.0/120", "198.51.100.0/24", "ban4net"),
        ] {
            let n = parse_net(s).unwrap();
            assert_eq!(n.to_string(), want, "{s}");
            assert_eq!(n.ban_set(), set, "{s}");
        }
        for bad in [
            "1.2.3.4; flush ruleset",
            "1.2.3.4 }",
            "1.2.3.4 timeout 1s",
            "",
            "1.2.3",
            "10.0.0.1/8",
            "10.0.0.0/33",
            "10.0.0.0/+8",
            "10.0.0.0/",
            "example.org",
            "::1/129",
            "1.2.3.4\n",
        ] {
            assert!(parse_net(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_net("10.0.0.1/8").unwrap_err().contains("10.0.0.0/8"));
    }

    #[test]
    fn overlaps() {
        let n = |s| parse_net(s).unwrap();
        assert!(n("10.0.0.0/8").overlaps(&n("10.1.2.3")));
        assert!(n("10.1.2.3").overlaps(&n("10.0.0.0/8")));
        assert!(!n("10.0.0.0/8").overlaps(&n("11.0.0.1")));
        assert!(n("2001:db8::/32").overlaps(&n("2001:db8::7")));
        assert!(!n("2001:db8::/32").overlaps(&n("2001:db9::7")));
        assert!(!n("0.0.0.0/0").overlaps(&n("::1")));
        assert!(n("0.0.0.0/0").overlaps(&n("1.2.3.4")));
        assert!(n("::/0").overlaps(&n("::1")));
    }

    #[test]
    fn durations() {
        for (s, secs) in [
            ("30s", 30),
            ("10m", 600),
            ("4h", 14400),
            ("1d", 86400),
            ("1h30m", 5400),
        ] {
            assert_eq!(parse_duration(s).unwrap().as_secs(), secs, "{s}");
        }
        for bad in [
            "",
            "10",
            "m",
            "10x",
            "0s",
            "-5m",
            "400d",
            "1.5h",
            "10m; flush",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(parse_nft_time("9m58s230ms").unwrap().as_millis(), 598_230);
        assert_eq!(parse_nft_time("1d2h").unwrap().as_secs(), 93_600);
    }

    #[test]
    fn scripts_render_parsed_values_only() {
        let s = skeleton("vacsine_decisions");
        assert!(!s.contains("delete") && !s.contains("flush ruleset"));
        assert!(
            s.contains("add set inet vacsine_decisions ban4 { type ipv4_addr; flags timeout; }")
        );
        assert!(s.contains("flush chain inet vacsine_decisions input\n"));
        let n = |x| parse_net(x).unwrap();
        let e = elements(
            "create",
            "t",
            [
                ("ban4", n("203.0.113.1"), Some(Duration::from_secs(600))),
                ("ban6", n("2001:db8::7"), None),
                ("ban4", n("203.0.113.2"), Some(Duration::from_secs(600))),
            ],
        );
        assert_eq!(
            e,
            "create element inet t ban4 { 203.0.113.1 timeout 600s, 203.0.113.2 timeout 600s }\n\
             create element inet t ban6 { 2001:db8::7 }\n"
        );
    }

    #[test]
    fn reads_the_table_listing() {
        let rs = "table inet other {\n}\ntable inet vacsine_decisions {\n\tset allow4 {\n\t\ttype ipv4_addr\n\t\tflags interval\n\t\telements = { 192.0.2.0/24 }\n\t}\n\tset ban4 {\n\t\ttype ipv4_addr\n\t\tflags timeout\n\t\telements = { 203.0.113.1 timeout 10m expires 9m58s230ms,\n\t\t\t     203.0.113.2 }\n\t}\n\tset ban6 {\n\t\ttype ipv6_addr\n\t\tflags timeout\n\t\telements = { 2001:db8::7 }\n\t}\n\tchain input {\n\t\ttype filter hook input priority -10; policy accept;\n\t\tip saddr @allow4 accept\n\t}\n}\n";
        let l = parse_listing(rs, "vacsine_decisions");
        let n = |x| parse_net(x).unwrap();
        assert!(l.present);
        assert!(l.has("allow4", &n("192.0.2.0/24")));
        assert!(l.has("ban4", &n("203.0.113.2")));
        assert!(l.has("ban6", &n("2001:db8::7")));
        assert_eq!(
            l.left("ban4", &n("203.0.113.1")),
            Some(Some(Duration::from_millis(598_230)))
        );
        assert_eq!(l.left("ban4", &n("203.0.113.2")), Some(None));
        assert!(!l.skeleton_complete());
        assert!(!parse_listing(rs, "nope").present);
    }

    #[test]
    fn tells_an_element_already_present_from_other_refusals() {
        let present = "nft_apply on node `n` failed: nft -f - exited with Some(1): /dev/stdin:25:45-55: Error: Could not process rule: File exists\ncreate element inet vacsine_decisions ban4 { 203.0.113.1 timeout 600s }\n                                            ^^^^^^^^^^^";
        assert!(only_already_present(present));
        let set_clash = "exited with Some(1): /dev/stdin:3:1-9: Error: Could not process rule: File exists\nadd set inet vacsine_decisions ban4 { type ipv4_addr; flags timeout; }\n^^^";
        assert!(!only_already_present(set_clash));
        let interval = "/dev/stdin:25:49-63: Error: Could not process rule: File exists\ncreate element inet vacsine_decisions ban4net { 198.51.100.0/24 timeout 14400s }\n ^^^";
        assert!(!only_already_present(interval));
        let other = "/dev/stdin:25:49-63: Error: Could not process rule: No such file or directory\ncreate element inet vacsine_decisions ban4 { 1.2.3.4 }\n ^^^";
        assert!(!only_already_present(other));
        assert!(!only_already_present("nft: command not found"));
    }
}
