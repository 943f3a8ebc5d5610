//! Issue 6: Docker's embedded-DNS nat table is not a finding; every other table is.
//!
//! `data/docker-dns-nat.{json,txt}` are `nft -j list ruleset` and `nft list ruleset` captured
//! in the network namespace of a busybox container on a user-defined Docker network.

use serde_json::{json, Value};
use vacsine_core::parse::{nft_base_policies, nft_docker_tables, nft_without_tables};

const SAMPLE_JSON: &str = include_str!("data/docker-dns-nat.json");
const SAMPLE_TEXT: &str = include_str!("data/docker-dns-nat.txt");

const VACSINE_TEXT: &str = "table inet vacsine {\n\tchain input {\n\t\ttype filter hook input priority filter; policy drop;\n\t\ttcp dport 22 accept\n\t}\n}\n";

fn sample() -> Value {
    serde_json::from_str(SAMPLE_JSON).unwrap()
}

fn push(v: &mut Value, item: Value) {
    v["nftables"].as_array_mut().unwrap().push(item);
}

/// The sample with every object of table `ip nat` moved to family `family`.
fn refamily(family: &str) -> Value {
    let mut v = sample();
    for item in v["nftables"].as_array_mut().unwrap() {
        for (_, o) in item.as_object_mut().unwrap().iter_mut() {
            if o.get("family").is_some() {
                o["family"] = family.into();
            }
        }
    }
    v
}

fn vacsine_table(v: &mut Value) {
    push(
        v,
        json!({"table": {"family": "inet", "name": "vacsine", "handle": 2}}),
    );
    push(
        v,
        json!({"chain": {"family": "inet", "table": "vacsine", "name": "input", "handle": 1,
            "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}}),
    );
}

fn check(case: &str, v: Value, docker: bool, policies: &[(&str, &str)]) {
    let j = v.to_string();
    let tables = nft_docker_tables(&j).unwrap();
    let want: Vec<(String, String)> = if docker {
        vec![("ip".into(), "nat".into())]
    } else {
        vec![]
    };
    assert_eq!(tables, want, "{case}");
    let got = nft_base_policies(&j).unwrap();
    let got: Vec<(String, String)> = got
        .into_iter()
        .flat_map(|(h, ps)| ps.into_iter().map(move |p| (h.clone(), p)))
        .collect();
    let want: Vec<(String, String)> = policies
        .iter()
        .map(|(h, p)| (h.to_string(), p.to_string()))
        .collect();
    assert_eq!(got, want, "{case}: base policies");
}

#[test]
fn issue6_docker_dns_nat_table_is_ignored_other_nat_tables_are_not() {
    check("as Docker installs it", sample(), true, &[]);

    let mut v = sample();
    vacsine_table(&mut v);
    check("next to a table of ours", v, true, &[("input", "drop")]);

    // A rule of someone else's in Docker's OUTPUT chain: the table is not Docker's alone.
    let mut v = sample();
    push(
        &mut v,
        json!({"rule": {"family": "ip", "table": "nat", "chain": "OUTPUT", "handle": 20,
            "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 80}},
                     {"jump": {"target": "DOCKER_OUTPUT"}}]}}),
    );
    check(
        "with a foreign rule",
        v,
        false,
        &[("output", "accept"), ("postrouting", "accept")],
    );

    // A chain Docker does not make (a port forward): reported, with its policy.
    let mut v = sample();
    push(
        &mut v,
        json!({"chain": {"family": "ip", "table": "nat", "name": "PREROUTING", "handle": 30,
            "type": "nat", "hook": "prerouting", "prio": -100, "policy": "accept"}}),
    );
    check(
        "with a foreign chain",
        v,
        false,
        &[
            ("output", "accept"),
            ("postrouting", "accept"),
            ("prerouting", "accept"),
        ],
    );

    // A set in the table is not Docker's either.
    let mut v = sample();
    push(
        &mut v,
        json!({"set": {"family": "ip", "table": "nat", "name": "s", "handle": 40, "type": "ipv4_addr"}}),
    );
    check(
        "with a set",
        v,
        false,
        &[("output", "accept"), ("postrouting", "accept")],
    );

    // The same chains in another family or with rules to elsewhere: a user's nat table.
    check(
        "in family inet",
        refamily("inet"),
        false,
        &[("output", "accept"), ("postrouting", "accept")],
    );
    let other = SAMPLE_JSON.replace("127.0.0.11", "192.0.2.11");
    check(
        "redirecting elsewhere",
        serde_json::from_str(&other).unwrap(),
        false,
        &[("output", "accept"), ("postrouting", "accept")],
    );
    // Only the base chains, no DOCKER_OUTPUT: not the DNS table.
    let mut v = sample();
    v["nftables"].as_array_mut().unwrap().retain(|i| {
        let name = i
            .get("chain")
            .or(i.get("rule"))
            .and_then(|o| o.get("name").or(o.get("chain")));
        !name
            .and_then(|n| n.as_str())
            .is_some_and(|n| n.starts_with("DOCKER_"))
    });
    check(
        "without Docker's chains",
        v,
        false,
        &[("output", "accept"), ("postrouting", "accept")],
    );
}

#[test]
fn issue6_ruleset_text_without_docker_tables() {
    assert!(SAMPLE_TEXT.contains("table ip nat"));
    let docker = nft_docker_tables(SAMPLE_JSON).unwrap();
    assert_eq!(nft_without_tables(SAMPLE_TEXT, &docker).trim(), "");
    let both = format!("{SAMPLE_TEXT}{VACSINE_TEXT}");
    assert_eq!(nft_without_tables(&both, &docker), VACSINE_TEXT);
    let both = format!("{VACSINE_TEXT}{SAMPLE_TEXT}");
    assert_eq!(nft_without_tables(&both, &docker), VACSINE_TEXT);
    // Nothing owned by Docker: the text is kept whole.
    assert_eq!(nft_without_tables(&both, &[]), both);
}
