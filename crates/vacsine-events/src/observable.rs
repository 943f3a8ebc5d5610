//! Observables: the typed values an event is about. Every constructor validates; a value that
//! does not fit its type is refused with the reason, never kept as free text.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a value is not a valid observable of the type it claims to be.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidValue(pub String);

fn invalid(msg: impl Into<String>) -> InvalidValue {
    InvalidValue(msg.into())
}

/// Longest URL accepted as an observable.
pub const MAX_URL: usize = 8 * 1024;
/// Longest package name or version accepted.
pub const MAX_PACKAGE: usize = 256;

/// A network: address with the host bits zero, and a prefix length valid for its family.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn new(network: IpAddr, prefix: u8) -> Result<Cidr, InvalidValue> {
        let max = if network.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(invalid(format!(
                "prefix /{prefix} is longer than {max} bits for {network}"
            )));
        }
        let c = Cidr { network, prefix };
        let masked = c.mask(network);
        if masked != network {
            return Err(invalid(format!(
                "{network}/{prefix} has host bits set (expected the network address, {masked}/{prefix})"
            )));
        }
        Ok(c)
    }

    pub fn network(&self) -> IpAddr {
        self.network
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn mask(&self, ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V4(a) => {
                let bits = u32::from(a);
                let m = if self.prefix == 0 {
                    0
                } else {
                    u32::MAX << (32 - u32::from(self.prefix))
                };
                IpAddr::V4(Ipv4Addr::from(bits & m))
            }
            IpAddr::V6(a) => {
                let bits = u128::from(a);
                let m = if self.prefix == 0 {
                    0
                } else {
                    u128::MAX << (128 - u32::from(self.prefix))
                };
                IpAddr::V6(Ipv6Addr::from(bits & m))
            }
        }
    }

    /// Whether `ip` is inside this network (never across families).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv4() == self.network.is_ipv4() && self.mask(ip) == self.network
    }

    /// Whether `other` is a subnet of (or equal to) this network.
    pub fn contains_cidr(&self, other: &Cidr) -> bool {
        other.prefix >= self.prefix && self.contains(other.network)
    }
}

impl std::str::FromStr for Cidr {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<Cidr, InvalidValue> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| invalid(format!("{s:?} is not a network (expected ADDRESS/PREFIX)")))?;
        let network: IpAddr = a
            .parse()
            .map_err(|_| invalid(format!("{a:?} is not an IP address (in network {s:?})")))?;
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(format!(
                "{p:?} is not a prefix length (in network {s:?})"
            )));
        }
        let prefix: u8 = p
            .parse()
            .map_err(|_| invalid(format!("{p:?} is not a prefix length")))?;
        Cidr::new(network, prefix)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// A DNS name: ASCII (IDNs in their `xn--` form), labels of letters, digits, `-` and `_`,
/// 1–63 bytes each, 253 in all, lower-cased, trailing dot dropped, not an IP address.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Domain(String);

impl Domain {
    pub fn parse(s: &str) -> Result<Domain, InvalidValue> {
        let d = s.strip_suffix('.').unwrap_or(s);
        if d.is_empty() {
            return Err(invalid("empty domain name"));
        }
        if d.len() > 253 {
            return Err(invalid(format!(
                "domain name of {} bytes (at most 253)",
                d.len()
            )));
        }
        if d.parse::<IpAddr>().is_ok() {
            return Err(invalid(format!(
                "{d:?} is an IP address, not a domain name"
            )));
        }
        for label in d.split('.') {
            if label.is_empty() || label.len() > 63 {
                return Err(invalid(format!(
                    "{d:?}: label {label:?} must be 1 to 63 bytes"
                )));
            }
            if let Some(c) = label
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
            {
                return Err(invalid(format!(
                    "{d:?}: {c:?} is not allowed in a domain name (expected letters, digits, '-', '_'; IDNs as xn--)"
                )));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(invalid(format!(
                    "{d:?}: label {label:?} starts or ends with '-'"
                )));
            }
        }
        let tld = d.rsplit('.').next().unwrap_or(d);
        if tld.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(format!(
                "{d:?}: an all-numeric last label is not a domain name"
            )));
        }
        Ok(Domain(d.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An absolute URL: `scheme://host…`, no whitespace or control characters, at most 8 KiB.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Url(String);

impl Url {
    pub fn parse(s: &str) -> Result<Url, InvalidValue> {
        if s.len() > MAX_URL {
            return Err(invalid(format!(
                "URL of {} bytes (at most {MAX_URL})",
                s.len()
            )));
        }
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| invalid(format!("{s:?} is not a URL (expected scheme://host...)")))?;
        let scheme_ok = scheme
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
            && scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
        if !scheme_ok {
            return Err(invalid(format!("{s:?}: {scheme:?} is not a URL scheme")));
        }
        if let Some(c) = s.chars().find(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid(format!(
                "URL contains {c:?} (whitespace and control characters must be percent-encoded)"
            )));
        }
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        let host = authority.rsplit('@').next().unwrap_or("");
        if host.is_empty() || host.starts_with(':') {
            return Err(invalid(format!("{s:?}: no host")));
        }
        Ok(Url(format!("{}://{rest}", scheme.to_ascii_lowercase())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Hash algorithms an observable may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HashAlgo {
    Md5,
    Sha1,
    Sha256,
    Sha512,
}

impl HashAlgo {
    pub fn hex_len(self) -> usize {
        match self {
            HashAlgo::Md5 => 32,
            HashAlgo::Sha1 => 40,
            HashAlgo::Sha256 => 64,
            HashAlgo::Sha512 => 128,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            HashAlgo::Md5 => "md5",
            HashAlgo::Sha1 => "sha1",
            HashAlgo::Sha256 => "sha256",
            HashAlgo::Sha512 => "sha512",
        }
    }

    /// Reads `md5`, `SHA-1`, `sha256`, `SHA-512`… (case and `-` ignored).
    pub fn parse(s: &str) -> Option<HashAlgo> {
        let n: String = s
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect::<String>()
            .to_ascii_lowercase();
        match n.as_str() {
            "md5" => Some(HashAlgo::Md5),
            "sha1" => Some(HashAlgo::Sha1),
            "sha256" => Some(HashAlgo::Sha256),
            "sha512" => Some(HashAlgo::Sha512),
            _ => None,
        }
    }
}

/// A CVE identifier `CVE-YYYY-NNNN…` (4 to 19 digits), upper-cased.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cve(String);

impl Cve {
    pub fn parse(s: &str) -> Result<Cve, InvalidValue> {
        let up = s.to_ascii_uppercase();
        let ok = (|| {
            let rest = up.strip_prefix("CVE-")?;
            let (year, num) = rest.split_once('-')?;
            let y = year.len() == 4 && year.bytes().all(|b| b.is_ascii_digit());
            let n = (4..=19).contains(&num.len()) && num.bytes().all(|b| b.is_ascii_digit());
            let yv: u32 = year.parse().ok()?;
            (y && n && yv >= 1999).then_some(())
        })();
        match ok {
            Some(()) => Ok(Cve(up)),
            None => Err(invalid(format!(
                "{s:?} is not a CVE identifier (expected CVE-YYYY-NNNN with 4 or more digits)"
            ))),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The type of an observable, without its value (for conditions and reports).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ObservableType {
    Ipv4,
    Ipv6,
    Cidr,
    Domain,
    Url,
    Hash,
    Cve,
    Package,
}

impl ObservableType {
    pub fn as_str(self) -> &'static str {
        match self {
            ObservableType::Ipv4 => "ipv4",
            ObservableType::Ipv6 => "ipv6",
            ObservableType::Cidr => "cidr",
            ObservableType::Domain => "domain",
            ObservableType::Url => "url",
            ObservableType::Hash => "hash",
            ObservableType::Cve => "cve",
            ObservableType::Package => "package",
        }
    }
}

/// What an event is about, typed and validated.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Observable {
    Ipv4(Ipv4Addr),
    Ipv6(Ipv6Addr),
    Cidr(Cidr),
    Domain(Domain),
    Url(Url),
    Hash {
        algo: HashAlgo,
        hex: String,
    },
    Cve(Cve),
    Package {
        name: String,
        version: Option<String>,
    },
}

impl Observable {
    pub fn ip(ip: IpAddr) -> Observable {
        match ip {
            IpAddr::V4(a) => Observable::Ipv4(a),
            IpAddr::V6(a) => Observable::Ipv6(a),
        }
    }

    /// An IP address written as text; anything else is refused with the reason.
    pub fn parse_ip(s: &str) -> Result<Observable, InvalidValue> {
        s.parse::<IpAddr>()
            .map(Observable::ip)
            .map_err(|_| invalid(format!("{} is not an IP address", quote(s))))
    }

    /// An address or a network: `a.b.c.d`, `::1`, `10.0.0.0/8`; a /32 or /128 is the address.
    pub fn parse_ip_or_cidr(s: &str) -> Result<Observable, InvalidValue> {
        if s.contains('/') {
            let c: Cidr = s.parse()?;
            let host = if c.network.is_ipv4() { 32 } else { 128 };
            Ok(if c.prefix == host {
                Observable::ip(c.network)
            } else {
                Observable::Cidr(c)
            })
        } else {
            Observable::parse_ip(s)
        }
    }

    pub fn hash(algo: HashAlgo, hex: &str) -> Result<Observable, InvalidValue> {
        if hex.len() != algo.hex_len() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(format!(
                "{} is not a {} hash (expected {} hex digits)",
                quote(hex),
                algo.as_str(),
                algo.hex_len()
            )));
        }
        Ok(Observable::Hash {
            algo,
            hex: hex.to_ascii_lowercase(),
        })
    }

    pub fn package(name: &str, version: Option<&str>) -> Result<Observable, InvalidValue> {
        let bad =
            |s: &str| s.is_empty() || s.len() > MAX_PACKAGE || s.chars().any(char::is_control);
        if bad(name) {
            return Err(invalid(format!(
                "package name {} must be 1 to {MAX_PACKAGE} bytes without control characters",
                quote(name)
            )));
        }
        if let Some(v) = version {
            if bad(v) {
                return Err(invalid(format!(
                    "package version {} must be 1 to {MAX_PACKAGE} bytes without control characters",
                    quote(v)
                )));
            }
        }
        Ok(Observable::Package {
            name: name.to_string(),
            version: version.map(str::to_string),
        })
    }

    /// Builds an observable from its type name and text (the wire form).
    pub fn from_parts(
        ty: &str,
        value: &str,
        algo: Option<&str>,
        version: Option<&str>,
    ) -> Result<Observable, InvalidValue> {
        match ty.to_ascii_lowercase().as_str() {
            "ipv4" | "ipv4-addr" => match value.parse::<Ipv4Addr>() {
                Ok(a) => Ok(Observable::Ipv4(a)),
                Err(_) => Err(invalid(format!("{} is not an IPv4 address", quote(value)))),
            },
            "ipv6" | "ipv6-addr" => match value.parse::<Ipv6Addr>() {
                Ok(a) => Ok(Observable::Ipv6(a)),
                Err(_) => Err(invalid(format!("{} is not an IPv6 address", quote(value)))),
            },
            "ip" => Observable::parse_ip(value),
            "cidr" | "range" => Ok(Observable::Cidr(value.parse()?)),
            "domain" | "domain-name" => Ok(Observable::Domain(Domain::parse(value)?)),
            "url" => Ok(Observable::Url(Url::parse(value)?)),
            "hash" => {
                let a = algo.ok_or_else(|| invalid("a hash needs its algo (md5, sha1, sha256, sha512)"))?;
                let algo = HashAlgo::parse(a).ok_or_else(|| {
                    invalid(format!("{} is not a hash algorithm (expected md5, sha1, sha256, sha512)", quote(a)))
                })?;
                Observable::hash(algo, value)
            }
            "cve" => Ok(Observable::Cve(Cve::parse(value)?)),
            "package" => Observable::package(value, version),
            other => Err(invalid(format!(
                "{} is not an observable type (expected ipv4, ipv6, cidr, domain, url, hash, cve, package)",
                quote(other)
            ))),
        }
    }

    pub fn kind(&self) -> ObservableType {
        match self {
            Observable::Ipv4(_) => ObservableType::Ipv4,
            Observable::Ipv6(_) => ObservableType::Ipv6,
            Observable::Cidr(_) => ObservableType::Cidr,
            Observable::Domain(_) => ObservableType::Domain,
            Observable::Url(_) => ObservableType::Url,
            Observable::Hash { .. } => ObservableType::Hash,
            Observable::Cve(_) => ObservableType::Cve,
            Observable::Package { .. } => ObservableType::Package,
        }
    }

    /// The value as text (for a package, its name).
    pub fn value(&self) -> String {
        match self {
            Observable::Ipv4(a) => a.to_string(),
            Observable::Ipv6(a) => a.to_string(),
            Observable::Cidr(c) => c.to_string(),
            Observable::Domain(d) => d.0.clone(),
            Observable::Url(u) => u.0.clone(),
            Observable::Hash { hex, .. } => hex.clone(),
            Observable::Cve(c) => c.0.clone(),
            Observable::Package { name, .. } => name.clone(),
        }
    }
}

impl fmt::Display for Observable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Observable::Hash { algo, hex } => write!(f, "hash:{}:{hex}", algo.as_str()),
            Observable::Package {
                name,
                version: Some(v),
            } => write!(f, "package:{name}@{v}"),
            o => write!(f, "{}:{}", o.kind().as_str(), o.value()),
        }
    }
}

/// Quotes attacker-controlled text for an error message, cut to 80 characters.
pub(crate) fn quote(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        format!("{s:?}")
    } else {
        let head: String = s.chars().take(MAX).collect();
        format!("{head:?}… ({} bytes)", s.len())
    }
}

/// Wire form: `{"type": "ipv4", "value": "203.0.113.9"}`, `{"type": "hash", "algo": "sha256",
/// "value": "…"}`, `{"type": "package", "value": "openssl", "version": "3.0.11"}`. Unknown
/// fields are ignored; every value is validated on the way in.
#[derive(Serialize, Deserialize)]
struct Wire {
    #[serde(rename = "type")]
    ty: String,
    value: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    algo: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<String>,
}

impl Serialize for Observable {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (algo, version) = match self {
            Observable::Hash { algo, .. } => (Some(algo.as_str().to_string()), None),
            Observable::Package { version, .. } => (None, version.clone()),
            _ => (None, None),
        };
        Wire {
            ty: self.kind().as_str().to_string(),
            value: self.value(),
            algo,
            version,
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Observable {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Observable, D::Error> {
        let w = Wire::deserialize(d)?;
        Observable::from_parts(&w.ty, &w.value, w.algo.as_deref(), w.version.as_deref())
            .map_err(serde::de::Error::custom)
    }
}
