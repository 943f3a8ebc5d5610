use super::*;

const NOW: i64 = 1_700_000_000_000;

fn bind<'a>(method: &'a str, path: &'a str, agent: &'a str) -> Binding<'a> {
    Binding {
        method,
        path,
        agent,
    }
}

struct Parties {
    agent: KeyPair,
    other_agent: KeyPair,
    server: KeyPair,
}

fn parties() -> Parties {
    Parties {
        agent: KeyPair::generate(),
        other_agent: KeyPair::generate(),
        server: KeyPair::generate(),
    }
}

#[test]
fn a_sealed_request_opens_once_with_its_body() {
    let p = parties();
    let b = bind("POST", "/v1/poll", "agent-1");
    let env = seal(&p.agent, p.server.public(), b, None, NOW, b"{\"wait\":25}").unwrap();
    assert!(!env.ct.contains("wait"), "the body is not in clear");
    let o = Opener::default();
    let body = o
        .open(&p.server, p.agent.public(), b, None, &env, NOW + 5)
        .unwrap();
    assert_eq!(body, b"{\"wait\":25}");
    assert_eq!(o.remembered(), 1);
}

#[test]
fn a_response_is_bound_to_its_request() {
    let p = parties();
    let b = bind("POST", "/v1/poll", "agent-1");
    let req = seal(&p.agent, p.server.public(), b, None, NOW, b"q").unwrap();
    let resp = seal(&p.server, p.agent.public(), b, Some(&req.nonce), NOW, b"a").unwrap();
    let o = Opener::default();
    assert_eq!(
        o.open(&p.agent, p.server.public(), b, Some(&req.nonce), &resp, NOW)
            .unwrap(),
        b"a"
    );
    // The same response offered as the answer to another request.
    let other = seal(&p.agent, p.server.public(), b, None, NOW, b"q2").unwrap();
    let e = Opener::default()
        .open(
            &p.agent,
            p.server.public(),
            b,
            Some(&other.nonce),
            &resp,
            NOW,
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            WireError::Misbound {
                field: "request",
                ..
            }
        ),
        "{e}"
    );
}

/// Every refusal, each with its own error; the good envelope opens in a fresh opener, so each
/// row fails for its own reason only.
#[test]
fn refusals_table() {
    let p = parties();
    let b = bind("POST", "/v1/records", "agent-1");
    let good = seal(&p.agent, p.server.public(), b, None, NOW, b"records").unwrap();
    assert!(Opener::default()
        .open(&p.server, p.agent.public(), b, None, &good, NOW)
        .is_ok());

    type Mutate = Box<dyn Fn(&mut Envelope, &mut i64)>;
    type Row = (&'static str, Mutate, fn(&WireError) -> bool);
    let flip_ct: Mutate = Box::new(|e, _| {
        let mut ct = B64.decode(&e.ct).unwrap();
        ct[0] ^= 1;
        e.ct = B64.encode(ct);
    });
    let rows: Vec<Row> = vec![
        (
            "another method",
            Box::new(|e, _| e.method = "GET".into()),
            |e| {
                matches!(
                    e,
                    WireError::Misbound {
                        field: "method",
                        ..
                    }
                )
            },
        ),
        (
            "another path",
            Box::new(|e, _| e.path = "/v1/poll".into()),
            |e| matches!(e, WireError::Misbound { field: "path", .. }),
        ),
        (
            "another agent id",
            Box::new(|e, _| e.agent = "agent-2".into()),
            |e| matches!(e, WireError::Misbound { field: "agent", .. }),
        ),
        (
            "too old",
            Box::new(|_, now| *now += DEFAULT_WINDOW_MS + 1),
            |e| matches!(e, WireError::Stale { skew_ms, .. } if *skew_ms < 0),
        ),
        (
            "from the future",
            Box::new(|_, now| *now -= DEFAULT_WINDOW_MS + 1),
            |e| matches!(e, WireError::Stale { skew_ms, .. } if *skew_ms > 0),
        ),
        ("ciphertext altered", flip_ct, |e| {
            matches!(e, WireError::Tampered)
        }),
        (
            "timestamp altered (within the window)",
            Box::new(|e, _| e.ts += 1),
            |e| matches!(e, WireError::Tampered),
        ),
        (
            "nonce altered",
            Box::new(|e, _| e.nonce = B64.encode([7u8; 16])),
            |e| matches!(e, WireError::Tampered),
        ),
        (
            "encapsulated key altered",
            Box::new(|e, _| {
                let mut k = B64.decode(&e.enc).unwrap();
                k[3] ^= 0x40;
                e.enc = B64.encode(k);
            }),
            |e| matches!(e, WireError::Tampered),
        ),
        (
            "sender key id rewritten",
            Box::new(|e, _| e.sender = "0000000000000000".into()),
            |e| matches!(e, WireError::WrongSender { .. }),
        ),
        ("unknown version", Box::new(|e, _| e.v = 2), |e| {
            matches!(e, WireError::Version(2))
        }),
        (
            "ciphertext not base64",
            Box::new(|e, _| e.ct = "%%%".into()),
            |e| matches!(e, WireError::Malformed(_)),
        ),
    ];
    for (what, mutate, expected) in rows {
        let mut env = good.clone();
        let mut now = NOW;
        mutate(&mut env, &mut now);
        let o = Opener::default();
        let e = o
            .open(&p.server, p.agent.public(), b, None, &env, now)
            .expect_err(what);
        assert!(expected(&e), "{what}: unexpected error {e:?}");
        assert_eq!(
            o.remembered(),
            0,
            "{what}: a refused envelope's nonce is not kept"
        );
    }
}

#[test]
fn a_replay_is_refused_within_the_window() {
    let p = parties();
    let b = bind("POST", "/v1/poll", "agent-1");
    let env = seal(&p.agent, p.server.public(), b, None, NOW, b"x").unwrap();
    let o = Opener::default();
    o.open(&p.server, p.agent.public(), b, None, &env, NOW)
        .unwrap();
    let e = o
        .open(&p.server, p.agent.public(), b, None, &env, NOW + 1000)
        .unwrap_err();
    assert_eq!(e, WireError::Replay);
    // Later than the window, the same envelope is stale, not forgotten.
    let e = o
        .open(
            &p.server,
            p.agent.public(),
            b,
            None,
            &env,
            NOW + 3 * DEFAULT_WINDOW_MS,
        )
        .unwrap_err();
    assert!(matches!(e, WireError::Stale { .. }), "{e}");
}

#[test]
fn old_nonces_are_forgotten_past_twice_the_window() {
    let p = parties();
    let b = bind("POST", "/v1/poll", "agent-1");
    let o = Opener::new(1000);
    for i in 0..50 {
        let env = seal(&p.agent, p.server.public(), b, None, NOW + i * 100, b"x").unwrap();
        o.open(&p.server, p.agent.public(), b, None, &env, NOW + i * 100)
            .unwrap();
    }
    assert!(
        o.remembered() <= 21,
        "only ~2 windows of nonces: {}",
        o.remembered()
    );
}

#[test]
fn another_agents_keys_are_refused() {
    let p = parties();
    let b = bind("POST", "/v1/poll", "agent-1");
    // agent-2 seals a request claiming to be agent-1, with its own keys.
    let env = seal(&p.other_agent, p.server.public(), b, None, NOW, b"x").unwrap();
    let e = Opener::default()
        .open(&p.server, p.agent.public(), b, None, &env, NOW)
        .unwrap_err();
    assert!(matches!(e, WireError::WrongSender { .. }), "{e}");
    // ... and also claiming agent-1's key id: the authentication fails.
    let mut forged = env.clone();
    forged.sender = p.agent.public().key_id();
    let e = Opener::default()
        .open(&p.server, p.agent.public(), b, None, &forged, NOW)
        .unwrap_err();
    assert_eq!(e, WireError::Tampered);
    // A response sealed for agent-1 does not open with agent-2's keys.
    let resp = seal(&p.server, p.agent.public(), b, None, NOW, b"work").unwrap();
    let e = Opener::default()
        .open(&p.other_agent, p.server.public(), b, None, &resp, NOW)
        .unwrap_err();
    assert_eq!(e, WireError::Tampered);
}

#[test]
fn keys_round_trip_through_base64() {
    let k = KeyPair::generate();
    let k2 = KeyPair::from_secret_b64(&k.secret_b64()).unwrap();
    assert_eq!(k.public(), k2.public());
    assert_eq!(
        PublicKey::from_b64(&k.public().to_b64()).unwrap(),
        *k.public()
    );
    assert!(PublicKey::from_b64("AAAA").is_err());
    assert!(KeyPair::from_secret_b64("not base64!").is_err());
}

#[test]
fn bundle_signatures_table() {
    let s = BundleSigner::generate();
    let other = BundleSigner::generate();
    let bundle = b"kind: Bundle\nversion: 3\n";
    let sig = s.sign(bundle);
    assert_eq!(verify_bundle(&s.public_b64(), bundle, &sig), Ok(()));
    let s2 = BundleSigner::from_secret_b64(&s.secret_b64()).unwrap();
    assert_eq!(s2.sign(bundle), sig, "ed25519 is deterministic");
    let cases: Vec<(&str, String, Vec<u8>, String)> = vec![
        (
            "altered bundle",
            s.public_b64(),
            b"kind: Bundle\nversion: 4\n".to_vec(),
            sig.clone(),
        ),
        (
            "another signer's key",
            other.public_b64(),
            bundle.to_vec(),
            sig.clone(),
        ),
        (
            "another signer's signature",
            s.public_b64(),
            bundle.to_vec(),
            other.sign(bundle),
        ),
        (
            "truncated signature",
            s.public_b64(),
            bundle.to_vec(),
            sig[..20].to_string(),
        ),
    ];
    for (what, pk, b, sg) in cases {
        assert_eq!(
            verify_bundle(&pk, &b, &sg),
            Err(WireError::BadSignature),
            "{what}"
        );
    }
    assert!(matches!(
        verify_bundle("short", bundle, &sig),
        Err(WireError::Malformed(_))
    ));
}

#[test]
fn pins_and_token_comparison() {
    assert_eq!(
        sha256_pin(b"abc"),
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert!(constant_time_eq(b"tok", b"tok"));
    assert!(!constant_time_eq(b"tok", b"tak"));
    assert!(!constant_time_eq(b"tok", b"toke"));
}
