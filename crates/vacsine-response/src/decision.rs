//! Decisions as data: what a site enforces (an address or network banned until a time, a node
//! quarantined), with where it came from. A decision's id is a content id over the response,
//! the event and the target, never over time or the decider, so an agent and the orchestrator
//! deciding on the same event produce the same id (the idempotency key).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use vacsine_events::{Cidr, InvalidValue, Observable};

/// An IPv4 or IPv6 network, host bits zero; a host is a /32 or a /128. Built only from parsed
/// types ([`IpAddr`], [`Cidr`]): its text form is always an address, `/` and a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct IpNet(Cidr);

impl IpNet {
    /// The host network of an address (/32 or /128). An IPv4-mapped IPv6 address
    /// (`::ffff:a.b.c.d`) is the IPv4 address (that is how it reaches the firewall).
    pub fn host(ip: IpAddr) -> IpNet {
        let ip = match ip {
            IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        let prefix = if ip.is_ipv4() { 32 } else { 128 };
        #[allow(clippy::expect_used)]
        IpNet(Cidr::new(ip, prefix).expect("a full-length prefix never has host bits set"))
    }

    pub fn new(network: IpAddr, prefix: u8) -> Result<IpNet, InvalidValue> {
        Cidr::new(network, prefix).map(IpNet::from_cidr)
    }

    /// A network; an IPv4-mapped IPv6 network of /96 or longer is the IPv4 network.
    pub fn from_cidr(c: Cidr) -> IpNet {
        if let IpAddr::V6(a) = c.network() {
            if let (Some(v4), true) = (a.to_ipv4_mapped(), c.prefix() >= 96) {
                if let Ok(m) = Cidr::new(IpAddr::V4(v4), c.prefix() - 96) {
                    return IpNet(m);
                }
            }
        }
        if c.prefix() == if c.network().is_ipv4() { 32 } else { 128 } {
            return IpNet::host(c.network());
        }
        IpNet(c)
    }

    /// The network an observable names, if it names one.
    pub fn from_observable(o: &Observable) -> Option<IpNet> {
        match o {
            Observable::Ipv4(a) => Some(IpNet::host(IpAddr::V4(*a))),
            Observable::Ipv6(a) => Some(IpNet::host(IpAddr::V6(*a))),
            Observable::Cidr(c) => Some(IpNet::from_cidr(*c)),
            _ => None,
        }
    }

    pub fn network(&self) -> IpAddr {
        self.0.network()
    }

    pub fn prefix(&self) -> u8 {
        self.0.prefix()
    }

    pub fn is_ipv4(&self) -> bool {
        self.0.network().is_ipv4()
    }

    /// A single address (/32 or /128).
    pub fn is_host(&self) -> bool {
        self.prefix() == if self.is_ipv4() { 32 } else { 128 }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.contains(ip)
    }

    /// The two networks share at least one address.
    pub fn overlaps(&self, other: &IpNet) -> bool {
        self.0.contains_cidr(&other.0) || other.0.contains_cidr(&self.0)
    }

    pub fn cidr(&self) -> Cidr {
        self.0
    }
}

/// `203.0.113.9` for a host, `198.51.100.0/24` for a network.
impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.network())
        } else {
            write!(f, "{}/{}", self.network(), self.prefix())
        }
    }
}

impl FromStr for IpNet {
    type Err = InvalidValue;
    fn from_str(s: &str) -> Result<IpNet, InvalidValue> {
        let o = Observable::parse_ip_or_cidr(s)?;
        IpNet::from_observable(&o).ok_or_else(|| InvalidValue(format!("{o} is not a network")))
    }
}

impl Serialize for IpNet {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<IpNet, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// What a decision does.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    /// Drop traffic from an address or network (an element of an nft set with a timeout).
    Ban { net: IpNet },
    /// Cut a node off (run by the site's quarantine mechanism).
    Quarantine { node: String },
}

impl Action {
    /// Canonical text of the target (part of the decision id).
    pub fn target_text(&self) -> String {
        match self {
            Action::Ban { net } => format!("ban:{net}"),
            Action::Quarantine { node } => format!("quarantine:{node}"),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Ban { net } => write!(f, "ban {net}"),
            Action::Quarantine { node } => write!(f, "quarantine node {node:?}"),
        }
    }
}

/// Where a decision came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DecisionOrigin {
    /// The site that decided (`None`: the orchestrator, or a decision added by hand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub site: Option<String>,
    /// The response (`metadata.name`).
    pub response: String,
    /// The event's content id.
    pub event_id: String,
}

/// One decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// [`decision_id`] of response, event and target.
    pub id: String,
    pub action: Action,
    /// When it stops (bans); `None`: until deleted (quarantine).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    pub origin: DecisionOrigin,
    pub created_at: DateTime<Utc>,
}

impl Decision {
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires_at.is_some_and(|t| t <= now)
    }
}

/// Deterministic id: hex SHA-256 of `["vacsine-decision/1", response, event_id, target]`.
/// The same response, event and target give the same id wherever and whenever decided.
pub fn decision_id(response: &str, event_id: &str, action: &Action) -> String {
    content_id(response, event_id, &action.target_text())
}

/// Deterministic id of anything a response asks for: hex SHA-256 of
/// `["vacsine-decision/1", response, event_id, target]`.
pub fn content_id(response: &str, event_id: &str, target: &str) -> String {
    let canon = ("vacsine-decision/1", response, event_id, target);
    let bytes = serde_json::to_vec(&canon).unwrap_or_default();
    hex(&Sha256::digest(&bytes))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const D: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(D[(b >> 4) as usize] as char);
        s.push(D[(b & 15) as usize] as char);
    }
    s
}
