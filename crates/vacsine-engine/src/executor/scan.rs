//! `scan`: an exposure scan with Debian's `nmap`, run on the step's node (the vantage point:
//! where the scan is made from). Argv only: the targets are IP addresses parsed as such (a
//! schedule resolves them from its target description's nodes), the ports a list of numbers
//! and ranges; nothing else reaches nmap's command line. The result is read from nmap's XML
//! (`-oX -`) by `vacsine_events`' nmap reader: one entry per open port.

use super::{check_typed, parse_args, ExecCtx, Executor, StepResult};
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::net::IpAddr;
use vacsine_core::record::Level;

/// Arguments of `scan`.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ScanArgs {
    /// IP addresses to scan (from the target description; names and options are refused).
    targets: Vec<String>,
    /// TCP ports: numbers and ranges separated by commas (`22,80,8000-8100`; default
    /// `1-1024`).
    #[serde(default = "default_ports")]
    ports: String,
    /// Probe the services for their product and version (`nmap -sV`; slower).
    #[serde(default)]
    service_version: bool,
}

fn default_ports() -> String {
    "1-1024".into()
}

/// One open port found by a scan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OpenPort {
    pub address: String,
    pub port: u16,
    pub protocol: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// A port list nmap is given: numbers (1–65535) and `a-b` ranges (a ≤ b) separated by
/// commas; anything else refused with the reason.
pub fn check_ports(s: &str) -> Result<(), String> {
    let bad = |why: String| Err(format!("`ports: {s}`: {why} (e.g. `22,80,8000-8100`)"));
    if s.is_empty() {
        return bad("empty".into());
    }
    for part in s.split(',') {
        let num = |t: &str| -> Result<u16, String> {
            match t.parse::<u16>() {
                Ok(n) if n > 0 && t.bytes().all(|b| b.is_ascii_digit()) => Ok(n),
                _ => Err(format!("`{t}` is not a port (1 to 65535)")),
            }
        };
        let r = match part.split_once('-') {
            Some((a, b)) => num(a).and_then(|a| {
                num(b).and_then(|b| {
                    if a <= b {
                        Ok(())
                    } else {
                        Err(format!("range `{part}` ends before it starts"))
                    }
                })
            }),
            None => num(part).map(|_| ()),
        };
        if let Err(e) = r {
            return bad(e);
        }
    }
    Ok(())
}

/// The targets as IP addresses (written back in canonical form), or the first that is not.
pub fn check_targets(targets: &[String]) -> Result<Vec<String>, String> {
    if targets.is_empty() {
        return Err("`targets` is empty: give the addresses to scan".into());
    }
    targets
        .iter()
        .map(|t| {
            t.parse::<IpAddr>().map(|a| a.to_string()).map_err(|_| {
                format!(
                    "target `{}` is not an IP address: a scan takes the addresses of the target description's nodes, never a name or an option",
                    t.escape_debug()
                )
            })
        })
        .collect()
}

/// nmap's argv for `targets` and `ports` (checked before).
pub fn nmap_argv(targets: &[String], ports: &str, service_version: bool) -> Vec<String> {
    let mut argv: Vec<String> = [
        "nmap", "-oX", "-", "-n", "-Pn", "-sT", "-T4", "--open", "-p", ports,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if service_version {
        argv.push("-sV".into());
    }
    argv.extend(targets.iter().cloned());
    argv
}

/// The open ports in nmap's XML (`-oX`), read by `vacsine_events`' nmap reader; its errors
/// as one text.
pub fn open_ports(xml: &[u8]) -> Result<Vec<OpenPort>, String> {
    let parsed = vacsine_events::parse(vacsine_events::Format::Nmap, xml);
    if let Some(e) = parsed.errors.first() {
        return Err(format!("nmap's XML output: {e}"));
    }
    let mut out: Vec<OpenPort> = parsed
        .events
        .iter()
        .filter_map(|e| {
            let address = e.observables.iter().find_map(|o| match o {
                vacsine_events::Observable::Ipv4(a) => Some(a.to_string()),
                vacsine_events::Observable::Ipv6(a) => Some(a.to_string()),
                _ => None,
            })?;
            let f = |k: &str| e.fields.get(k).cloned().filter(|v| !v.is_empty());
            Some(OpenPort {
                address,
                port: f("port")?.parse().ok()?,
                protocol: f("protocol").unwrap_or_else(|| "tcp".into()),
                service: f("service"),
                product: f("product"),
                version: f("version"),
            })
        })
        .collect();
    out.sort_by(|a, b| (&a.address, a.port, &a.protocol).cmp(&(&b.address, b.port, &b.protocol)));
    out.dedup();
    Ok(out)
}

pub struct ScanExecutor;

#[async_trait]
impl Executor for ScanExecutor {
    fn name(&self) -> &'static str {
        "scan"
    }
    fn summary(&self) -> &'static str {
        "Scan IP addresses for open TCP ports with nmap from the step's node (the vantage point); argv only."
    }
    fn args_schema(&self, g: &mut schemars::SchemaGenerator) -> schemars::Schema {
        g.subschema_for::<ScanArgs>()
    }
    fn outputs(&self) -> &'static [(&'static str, &'static str)] {
        &[(
            "open",
            "the open ports: address, port, protocol, service, product, version",
        )]
    }
    fn idempotent(&self) -> bool {
        true
    }
    fn supports_check_mode(&self) -> bool {
        true
    }
    fn check_args(&self, args: &Value) -> Result<(), String> {
        check_typed::<ScanArgs>("scan", args)?;
        if let Ok(a) = crate::template::from_rendered::<ScanArgs>(args.clone()) {
            check_ports(&a.ports)?;
            check_targets(&a.targets)?;
        }
        Ok(())
    }
    async fn run(&self, ctx: &ExecCtx, args: Value) -> StepResult {
        let a: ScanArgs = match parse_args("scan", args) {
            Ok(a) => a,
            Err(e) => return StepResult::failed(e),
        };
        if let Err(e) = check_ports(&a.ports) {
            return StepResult::failed(e);
        }
        let targets = match check_targets(&a.targets) {
            Ok(t) => t,
            Err(e) => return StepResult::failed(e),
        };
        let node = match ctx.node() {
            Ok(n) => n,
            Err(e) => return StepResult::failed(e),
        };
        let argv = nmap_argv(&targets, &a.ports, a.service_version);
        let out = match node.exec(&argv, &[], None, ctx.timeout).await {
            Ok(o) => o,
            Err(e) => {
                return StepResult::failed(format!(
                    "nmap on {}: {e} (is Debian's `nmap` installed there?)",
                    node.node().name
                ))
            }
        };
        if out.timed_out {
            return StepResult::timed_out(ctx.timeout).with_exec(out);
        }
        if out.exit_code != Some(0) {
            let err = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return StepResult::failed(format!("nmap exited with {:?}: {err}", out.exit_code))
                .with_exec(out);
        }
        match open_ports(&out.stdout) {
            Ok(open) => {
                let n = open.len();
                let v = serde_json::to_value(&open).unwrap_or(Value::Null);
                StepResult::ok(false)
                    .msg(
                        Level::Info,
                        format!(
                            "nmap from {}: {n} open port(s) on {} address(es), ports {}",
                            node.node().name,
                            targets.len(),
                            a.ports
                        ),
                    )
                    .output("open", v)
            }
            Err(e) => StepResult::failed(e).with_exec(out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_numbers_and_ranges_only() {
        for ok in ["22", "1-1024", "22,80,8000-8100", "65535"] {
            check_ports(ok).unwrap();
        }
        for bad in [
            "", "0", "65536", "22,", "-p", "80-22", "22 80", "+1", "1--2", "a",
        ] {
            assert!(check_ports(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn targets_are_addresses_never_names_or_options() {
        assert_eq!(
            check_targets(&["10.0.0.1".into(), "::1".into()]).unwrap(),
            vec!["10.0.0.1", "::1"]
        );
        for bad in [
            "-iL/etc/passwd",
            "example.org",
            "10.0.0.0/8",
            "10.0.0.1 -sV",
            "",
        ] {
            assert!(check_targets(&[bad.into()]).is_err(), "{bad}");
        }
        assert!(check_targets(&[]).is_err());
    }

    #[test]
    fn argv_ends_with_the_targets() {
        let a = nmap_argv(&["10.0.0.1".into()], "22", false);
        assert_eq!(a.first().map(String::as_str), Some("nmap"));
        assert_eq!(a.last().map(String::as_str), Some("10.0.0.1"));
        assert!(!a.iter().any(|x| x == "-sV"));
    }

    #[test]
    fn open_ports_are_read_from_nmap_xml() {
        let xml = br#"<?xml version="1.0"?>
<nmaprun scanner="nmap" start="1700000000">
<host starttime="1700000000"><status state="up"/>
<address addr="10.1.2.3" addrtype="ipv4"/>
<ports>
<port protocol="tcp" portid="8080"><state state="open"/><service name="http" product="SimpleHTTPServer" version="0.6"/></port>
<port protocol="tcp" portid="22"><state state="closed"/></port>
</ports></host></nmaprun>"#;
        let p = open_ports(xml).unwrap();
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].address, "10.1.2.3");
        assert_eq!(p[0].port, 8080);
        assert_eq!(p[0].product.as_deref(), Some("SimpleHTTPServer"));
        assert!(open_ports(b"<nope/>").is_err());
    }
}
