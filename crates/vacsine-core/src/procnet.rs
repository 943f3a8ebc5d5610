//! Parser of the kernel's socket tables (`/proc/<pid>/net/{tcp,tcp6,udp,udp6}`): the sockets
//! listening in a network namespace. Pure: the driver reads the files, this turns their text
//! into [`Listener`]s.
//!
//! Each line after the header is `sl local_address rem_address st …`, addresses written as
//! hexadecimal `ADDR:PORT`. The port is big-endian hex; the address is the raw network-order
//! bytes printed as 32-bit words in the *host's* byte order (`0100007F` is 127.0.0.1 on a
//! little-endian host), which is why this parser must run on the host that produced the text.

use crate::node::Listener;
use crate::policy::Protocol;
use std::net::{Ipv4Addr, Ipv6Addr};

/// TCP state `LISTEN` (`include/net/tcp_states.h`).
const TCP_LISTEN: u8 = 0x0A;
/// `TCP_CLOSE`: the state of a UDP socket that is bound but not connected (what `ss -lu`
/// lists as listening).
const UDP_UNCONNECTED: u8 = 0x07;

/// Listening sockets of one table. `ipv6` tells whether the text is a `tcp6`/`udp6` table.
/// Malformed lines are errors naming the line (a kernel table is never malformed: an error
/// means the wrong file was read).
pub fn parse_table(text: &str, protocol: Protocol, ipv6: bool) -> Result<Vec<Listener>, String> {
    let table = format!("{}{}", protocol.as_str(), if ipv6 { "6" } else { "" });
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let bad = |what: &str| format!("/proc/net/{table} line {}: {what}: `{line}`", n + 1);
        let mut f = line.split_whitespace();
        let (_sl, local, remote, state) = match (f.next(), f.next(), f.next(), f.next()) {
            (Some(a), Some(b), Some(c), Some(d)) => (a, b, c, d),
            _ => return Err(bad("fewer than 4 fields")),
        };
        let state = u8::from_str_radix(state, 16).map_err(|_| bad("bad state"))?;
        let listening = match protocol {
            Protocol::Tcp => state == TCP_LISTEN,
            Protocol::Udp => {
                let (_, rport) = endpoint(remote, ipv6).ok_or_else(|| bad("bad remote address"))?;
                state == UDP_UNCONNECTED && rport == 0
            }
        };
        if !listening {
            continue;
        }
        let (address, port) = endpoint(local, ipv6).ok_or_else(|| bad("bad local address"))?;
        out.push(Listener {
            protocol,
            address,
            port,
        });
    }
    Ok(out)
}

/// `ADDR:PORT` in the kernel's hex notation → (printable address, port).
fn endpoint(s: &str, ipv6: bool) -> Option<(String, u16)> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words = |hex: &str| -> Option<Vec<[u8; 4]>> {
        if hex.len() % 8 != 0 || !hex.is_ascii() {
            return None;
        }
        (0..hex.len() / 8)
            .map(|i| {
                u32::from_str_radix(&hex[i * 8..i * 8 + 8], 16)
                    .ok()
                    .map(u32::to_ne_bytes)
            })
            .collect()
    };
    let address = if ipv6 {
        if addr.len() != 32 {
            return None;
        }
        let mut b = [0u8; 16];
        for (i, w) in words(addr)?.into_iter().enumerate() {
            b[i * 4..i * 4 + 4].copy_from_slice(&w);
        }
        let a = Ipv6Addr::from(b);
        match a.to_ipv4_mapped() {
            Some(v4) => v4.to_string(),
            None => a.to_string(),
        }
    } else {
        if addr.len() != 8 {
            return None;
        }
        Ipv4Addr::from(*words(addr)?.first()?).to_string()
    };
    Some((address, port))
}
