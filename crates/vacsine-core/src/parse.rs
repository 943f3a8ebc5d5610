//! Pure parsers for what drivers read from nodes (`/etc/passwd`, `/etc/group`, the dpkg and
//! apk databases, `nft list ruleset`, sysctl keys), shared by every driver.

use crate::node::PasswdEntry;
use std::collections::BTreeMap;

/// Entries of an `/etc/passwd` file.
pub fn passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 7 || l.starts_with('#') {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
                shell: f[6].to_string(),
            })
        })
        .collect()
}

/// `gid → name` of an `/etc/group` file.
pub fn groups(text: &str) -> BTreeMap<u32, String> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 || l.starts_with('#') {
                return None;
            }
            Some((f[2].parse().ok()?, f[0].to_string()))
        })
        .collect()
}

/// `name` in a dpkg status file, classified as dpkg does by the third word of its `Status:`
/// line (the want flag `hold`/`install`/`deinstall` does not matter): `installed` (and the
/// configured `triggers-awaited`/`triggers-pending`) → `(version, None)`; `half-installed`,
/// `unpacked`, `half-configured` → present but broken, `(version, Some(state))`;
/// `not-installed`, `config-files`, an unknown state or no stanza → `None`.
pub fn dpkg_package(status: &str, name: &str) -> Option<(String, Option<String>)> {
    for stanza in status.split("\n\n") {
        let mut pkg = None;
        let mut st = None;
        let mut ver = None;
        for line in stanza.lines() {
            if let Some(v) = line.strip_prefix("Package:") {
                pkg = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("Status:") {
                st = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("Version:") {
                ver = Some(v.trim());
            }
        }
        if pkg != Some(name) {
            continue;
        }
        let state = st.and_then(|s| s.split_whitespace().nth(2)).unwrap_or("");
        let version = ver.unwrap_or("").to_string();
        return match state {
            "installed" | "triggers-awaited" | "triggers-pending" => Some((version, None)),
            "half-installed" | "unpacked" | "half-configured" => {
                Some((version, Some(state.to_string())))
            }
            _ => None,
        };
    }
    None
}

/// Version of `name` in an apk `installed` database (`P:`/`V:` lines).
pub fn apk_installed(db: &str, name: &str) -> Option<String> {
    for stanza in db.split("\n\n") {
        let mut pkg = None;
        let mut ver = None;
        for line in stanza.lines() {
            if let Some(v) = line.strip_prefix("P:") {
                pkg = Some(v.trim());
            } else if let Some(v) = line.strip_prefix("V:") {
                ver = Some(v.trim());
            }
        }
        if pkg == Some(name) {
            return ver.map(str::to_string);
        }
    }
    None
}

/// hook → policies of base chains, from `nft -j list chains` or `nft -j list ruleset`.
/// Tables Docker owns ([`nft_docker_tables`]) are left out.
pub fn nft_base_policies(json: &str) -> Result<BTreeMap<String, Vec<String>>, String> {
    let items = nft_items(json)?;
    let docker = docker_tables(&items);
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for item in &items {
        let Some(chain) = item.get("chain") else {
            continue;
        };
        if docker.contains(&table_of(chain)) {
            continue;
        }
        let (Some(hook), Some(policy)) = (
            chain.get("hook").and_then(|h| h.as_str()),
            chain.get("policy").and_then(|p| p.as_str()),
        ) else {
            continue;
        };
        out.entry(hook.to_string())
            .or_default()
            .push(policy.to_string());
    }
    Ok(out)
}

fn nft_items(json: &str) -> Result<Vec<serde_json::Value>, String> {
    let mut v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| format!("cannot parse nft's JSON output: {e}"))?;
    Ok(match v.get_mut("nftables").map(serde_json::Value::take) {
        Some(serde_json::Value::Array(a)) => a,
        _ => Vec::new(),
    })
}

/// (family, table) of a `chain` or `rule` object.
fn table_of(obj: &serde_json::Value) -> (String, String) {
    let s = |k: &str| {
        obj.get(k)
            .and_then(|x| x.as_str())
            .unwrap_or("")
            .to_string()
    };
    (s("family"), s("table"))
}

/// The address Docker's embedded DNS server listens on inside every container.
const DOCKER_DNS: &str = "127.0.0.11";

/// Chains Docker's embedded DNS installs in table `ip nat` of a container on a user-defined
/// network: two base chains that jump to two of its own.
const DOCKER_DNS_CHAINS: [&str; 4] = [
    "DOCKER_OUTPUT",
    "DOCKER_POSTROUTING",
    "OUTPUT",
    "POSTROUTING",
];

/// Whether one of an nft rule's expressions matches an address equal to Docker's DNS one.
fn matches_docker_dns(rule: &serde_json::Value) -> bool {
    rule.get("expr")
        .and_then(|e| e.as_array())
        .into_iter()
        .flatten()
        .filter_map(|x| x.get("match"))
        .any(|m| {
            m.get("op").and_then(|o| o.as_str()) == Some("==")
                && m.get("right").and_then(|r| r.as_str()) == Some(DOCKER_DNS)
        })
}

fn docker_tables(items: &[serde_json::Value]) -> Vec<(String, String)> {
    let key = ("ip".to_string(), "nat".to_string());
    let chains: Vec<&serde_json::Value> = items
        .iter()
        .filter_map(|i| i.get("chain"))
        .filter(|c| table_of(c) == key)
        .collect();
    let names: Vec<&str> = chains
        .iter()
        .filter_map(|c| c.get("name").and_then(|n| n.as_str()))
        .collect();
    let rules: Vec<&serde_json::Value> = items
        .iter()
        .filter_map(|i| i.get("rule"))
        .filter(|r| table_of(r) == key)
        .collect();
    // Other objects (sets, maps, flowtables) in the table: someone else put them there.
    let others = items.iter().any(|i| {
        i.as_object().is_some_and(|o| {
            o.iter().any(|(k, v)| {
                !matches!(k.as_str(), "table" | "chain" | "rule" | "metainfo") && table_of(v) == key
            })
        })
    });
    let docker = !others
        && names.contains(&"DOCKER_OUTPUT")
        && names.iter().all(|n| DOCKER_DNS_CHAINS.contains(n))
        && rules.iter().all(|r| matches_docker_dns(r));
    if docker {
        vec![key]
    } else {
        Vec::new()
    }
}

/// Tables Docker owns in a container's network namespace, from `nft -j list ruleset`: the
/// `ip nat` table of its embedded DNS server (chains DOCKER_OUTPUT, DOCKER_POSTROUTING and the
/// OUTPUT/POSTROUTING base chains jumping to them, every rule matching 127.0.0.11). The same
/// table with any other chain, rule or object in it is not Docker's alone and is kept.
pub fn nft_docker_tables(json: &str) -> Result<Vec<(String, String)>, String> {
    Ok(docker_tables(&nft_items(json)?))
}

/// `nft list ruleset` text without the given (family, table) blocks.
pub fn nft_without_tables(ruleset: &str, tables: &[(String, String)]) -> String {
    let mut out = String::with_capacity(ruleset.len());
    let mut skipping = false;
    for line in ruleset.split_inclusive('\n') {
        if let Some(head) = line.strip_prefix("table ") {
            let mut w = head.split_whitespace();
            let (fam, name) = (w.next().unwrap_or(""), w.next().unwrap_or(""));
            skipping = tables.iter().any(|(f, t)| f == fam && t == name);
        }
        if !skipping {
            out.push_str(line);
        } else if line.trim_end() == "}" {
            skipping = false;
        }
    }
    out
}

/// A sysctl key as a path under `/proc/sys`, or why it is refused.
pub fn sysctl_path(key: &str) -> Result<String, String> {
    let ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '.' | '-'))
        && !key.contains("..")
        && !key.starts_with('.')
        && !key.ends_with('.');
    if !ok {
        return Err(format!(
            "invalid sysctl key `{key}`: only [a-z0-9_.-] separated by single dots is allowed"
        ));
    }
    Ok(format!("/proc/sys/{}", key.replace('.', "/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_passwd_and_group() {
        let p = passwd(
            "root:x:0:0:root:/root:/bin/sh\n# c\nguest:x:1000:1000::/home/guest:/bin/sh\nbad\n",
        );
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].name, "guest");
        assert_eq!(p[1].uid, 1000);
        assert_eq!(p[1].shell, "/bin/sh");
        let g = groups("root:x:0:\nshadow:x:42:\n");
        assert_eq!(g.get(&42).map(String::as_str), Some("shadow"));
    }

    /// Each dpkg `Status:` as dpkg classifies it: `(status, expected)` where expected is
    /// `None` (not installed) or `Some(broken state)` (`Some("")`: installed and sound).
    #[test]
    fn classifies_dpkg_states() {
        let check = |status: &str, want: Option<&str>| {
            let db = format!(
                "Package: other\nStatus: install ok installed\nVersion: 9\n\nPackage: telnetd\nStatus: {status}\nArchitecture: amd64\nVersion: 0.17-44\nDescription: x\n\n"
            );
            let got = dpkg_package(&db, "telnetd");
            let want = want.map(|b| {
                (
                    "0.17-44".to_string(),
                    (!b.is_empty()).then(|| b.to_string()),
                )
            });
            assert_eq!(got, want, "{status}");
        };
        check("install ok installed", Some(""));
        check("hold ok installed", Some(""));
        check("install ok triggers-pending", Some(""));
        check("install ok triggers-awaited", Some(""));
        check("install reinstreq half-installed", Some("half-installed"));
        check("install ok unpacked", Some("unpacked"));
        check("install ok half-configured", Some("half-configured"));
        check("hold ok half-configured", Some("half-configured"));
        check("deinstall ok installed", Some(""));
        check("deinstall ok config-files", None);
        check("purge ok not-installed", None);
        check("unknown ok not-installed", None);
        check("garbage", None);
        assert_eq!(
            dpkg_package("Package: a\nStatus: install ok installed\n", "b"),
            None
        );
        assert_eq!(dpkg_package("", "b"), None);
    }

    #[test]
    fn parses_apk() {
        let a = "C:Q1\nP:musl\nV:1.2.4-r2\n\nP:busybox\nV:1.36.1-r5\n";
        assert_eq!(apk_installed(a, "busybox").as_deref(), Some("1.36.1-r5"));
        assert_eq!(apk_installed(a, "curl"), None);
    }

    #[test]
    fn parses_nft_chains() {
        let j = r#"{"nftables":[{"metainfo":{"version":"1.0.6"}},{"chain":{"family":"inet","table":"f","name":"in","handle":1,"type":"filter","hook":"input","prio":0,"policy":"drop"}},{"chain":{"family":"inet","table":"f","name":"x","handle":2}}]}"#;
        let p = nft_base_policies(j).unwrap();
        assert_eq!(p.get("input"), Some(&vec!["drop".to_string()]));
        assert_eq!(p.len(), 1);
        assert!(nft_base_policies("{").is_err());
        assert!(nft_base_policies(r#"{"nftables":[]}"#).unwrap().is_empty());
    }

    #[test]
    fn validates_sysctl_keys() {
        assert_eq!(
            sysctl_path("net.ipv4.ip_forward").unwrap(),
            "/proc/sys/net/ipv4/ip_forward"
        );
        for bad in [
            "",
            "net..ipv4",
            "../etc",
            "net/ipv4",
            "Net.x",
            ".net",
            "a b",
        ] {
            assert!(sysctl_path(bad).is_err(), "{bad}");
        }
    }
}
