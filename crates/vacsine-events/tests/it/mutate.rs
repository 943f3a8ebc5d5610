//! Mutated inputs (deterministic pseudo-random): every parser on every mutation of every
//! sample, and the STIX pattern parser on mutated patterns, never panics, and every error it
//! reports is located inside the input.

use crate::common::sample;
use vacsine_events::{parse, Format, Pattern};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

const SPICE: &[&[u8]] = &[
    b"\"",
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b",",
    b":",
    b"\n",
    b"\r\n",
    b"\xff",
    b"\xc3",
    b"\0",
    b"<",
    b">",
    b"&",
    b"'",
    b"$(id)",
    b"`",
    b";",
    b"|",
    b"1e999",
    b"-1",
    b"99999999999999999999",
    b"null",
    b"true",
    b"\xe2\x80\xae",
    b"<!ENTITY a \"b\">",
    b"]]>",
    b"<!--",
];

fn mutate(rng: &mut Rng, input: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(5) {
            0 if !v.is_empty() => {
                let end = (at + 1 + rng.below(16)).min(v.len());
                v.drain(at.min(v.len())..end);
            }
            1 => {
                let s = SPICE[rng.below(SPICE.len())];
                v.splice(at..at, s.iter().copied());
            }
            2 if at < v.len() => v[at] = rng.next() as u8,
            3 => v.truncate(at),
            _ => {
                // Duplicate a slice (a repeated record, a doubled key).
                let end = (at + rng.below(200)).min(v.len());
                let dup = v[at..end].to_vec();
                v.splice(at..at, dup);
            }
        }
    }
    v
}

#[test]
fn mutated_samples_never_panic_and_errors_stay_located() {
    let names = [
        "eve.jsonl",
        "falco.jsonl",
        "opencanary.jsonl",
        "cowrie.jsonl",
        "stix-bundle.json",
        "crowdsec-alerts.json",
        "crowdsec-decisions.json",
        "crowdsec-stream.json",
        "nmap.xml",
    ];
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut located = 0;
    for name in names {
        let original = sample(name);
        for _ in 0..150 {
            let m = mutate(&mut rng, &original);
            let lines = m.iter().filter(|b| **b == b'\n').count() + 1;
            for format in Format::ALL {
                let p = parse(format, &m);
                for e in &p.errors {
                    assert!(
                        e.line >= 1 && e.line <= lines,
                        "{name} as {format}: {e} (input has {lines} lines)"
                    );
                    located += 1;
                }
                for ev in &p.events {
                    assert_eq!(ev.id, ev.content_id());
                }
            }
        }
    }
    assert!(located > 1000, "mutations produce errors: {located}");
}

#[test]
fn mutated_patterns_never_panic() {
    let patterns = [
        "[ipv4-addr:value = '203.0.113.5'] OR [ipv4-addr:value ISSUBSET '198.51.100.0/24']",
        "([domain-name:value = 'evil.example'] AND [url:value = 'https://evil.example/x']) OR [file:hashes.'SHA-256' = '9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08']",
        "[(ipv6-addr:value = '2001:db8::1' OR ipv6-addr:value = '2001:db8::2') AND ipv6-addr:value ISSUBSET '2001:db8::/64'] WITHIN 5 SECONDS",
    ];
    let mut rng = Rng(42);
    let mut evaluable = 0;
    for p in patterns {
        for _ in 0..2000 {
            let m = mutate(&mut rng, p.as_bytes());
            let Ok(text) = String::from_utf8(m) else {
                continue;
            };
            match Pattern::parse(&text) {
                Ok(pat) => {
                    evaluable += 1;
                    let _ = pat.matches(&[]);
                    let _ = pat.sufficient_observables();
                }
                Err(e) => assert!(e.column >= 1 && e.column <= text.len() + 1, "{text:?}: {e}"),
            }
        }
    }
    assert!(evaluable > 10, "some mutations stay valid: {evaluable}");
}
