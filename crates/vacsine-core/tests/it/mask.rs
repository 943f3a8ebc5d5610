//! Masking secrets in records: tables of (text, secrets, expected).

use serde_json::json;
use vacsine_core::record::{mask, Masker};

fn check(text: &str, secrets: &[&str], want: &str) {
    let secrets: Vec<String> = secrets.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        mask(text, &secrets),
        want,
        "text {text:?}, secrets {secrets:?}"
    );
    // The reusable masker gives the same answer.
    assert_eq!(Masker::new(&secrets).mask(text), want);
}

/// Issue 7, fault 3: one secret at a time in name order left `***word-L0NGsecretTail`.
#[test]
fn issue_7_overlapping_secrets_leave_no_tail() {
    let long = "Pa55word-L0NGsecretTail";
    check(&format!("pw={long}"), &["Pa55", long], "pw=***");
    check(&format!("pw={long}"), &[long, "Pa55"], "pw=***");
    check(&format!("{long} Pa55 x"), &["Pa55", long], "*** *** x");
}

#[test]
fn no_secrets() {
    check("nothing to hide", &[], "nothing to hide");
    check("nothing to hide", &[""], "nothing to hide");
    check("", &["hunter22"], "");
    assert!(Masker::new::<String>(&[]).is_empty());
}

#[test]
fn every_occurrence() {
    check("pw=hunter2 again hunter2", &["hunter2"], "pw=*** again ***");
    check("hunter2hunter2", &["hunter2"], "******");
}

#[test]
fn secrets_that_are_substrings_of_each_other() {
    check("abc abcdef def", &["abcdef", "abc", "def"], "*** *** ***");
    check("xxabcdefxx", &["bcd", "abcdef"], "xx***xx");
    // Partial overlap: `abcXYZ` and `XYZdef` both visible in `abcXYZdef`: nothing of either
    // may remain (leftmost matching alone would leave `def`).
    check("[abcXYZdef]", &["abcXYZ", "XYZdef"], "[***]");
}

#[test]
fn short_secrets_are_masked_but_not_their_encodings() {
    // The secret itself, however short.
    check("a=ab b=6162", &["ab"], "a=*** b=6162");
}

#[test]
fn encodings() {
    let s = "Pa55word-L0NGsecretTail";
    for (text, want) in [
        // base64 (standard = URL-safe here), padded and not
        ("b64=UGE1NXdvcmQtTDBOR3NlY3JldFRhaWw=", "b64=***"),
        ("b64=UGE1NXdvcmQtTDBOR3NlY3JldFRhaWw.", "b64=***."),
        // hex, both cases
        (
            "hex=50613535776f72642d4c304e477365637265745461696c",
            "hex=***",
        ),
        (
            "hex=50613535776F72642D4C304E477365637265745461696C",
            "hex=***",
        ),
        // HTTP Basic `admin:<secret>` (secret aligned) and `x:<secret>` (shifted by 2 bytes)
        (
            "Basic YWRtaW46UGE1NXdvcmQtTDBOR3NlY3JldFRhaWw=",
            "Basic YWRtaW46***",
        ),
        (
            "Basic eDpQYTU1d29yZC1MME5Hc2VjcmV0VGFpbA==",
            "Basic eDp***A==",
        ),
        // followed by more data
        (
            "UGE1NXdvcmQtTDBOR3NlY3JldFRhaWwgYW5kIG1vcmU=",
            "***gYW5kIG1vcmU=",
        ),
    ] {
        check(text, &[s], want);
    }
    // URL-safe base64 differs from standard when the bytes give `+` or `/`.
    check(
        "std=fn5+Pj4+Pw== url=fn5-Pj4-Pw",
        &["~~~>>>?"],
        "std=*** url=***",
    );
    // percent-encoding (and `+` for a space, as in forms), JSON escaping
    let s = "s3cr3t?&/ x\"";
    check(
        "u=s3cr3t%3F%26%2F%20x%22 f=s3cr3t%3F%26%2F+x%22 j={\"p\":\"s3cr3t?&/ x\\\"\"}",
        &[s],
        "u=*** f=*** j={\"p\":\"***\"}",
    );
}

#[test]
fn unicode() {
    let s = "pässwörd-ü";
    check("pw=pässwörd-ü!", &[s], "pw=***!");
    check("b64=cMOkc3N3w7ZyZC3DvA==", &[s], "b64=***");
    check("url=p%C3%A4ssw%C3%B6rd-%C3%BC", &[s], "url=***");
    check("hex=70c3a4737377c3b672642dc3bc", &[s], "hex=***");
    // Python's json.dumps writes non-ASCII as \uXXXX.
    check(
        r#"{"pw": "p\u00e4ssw\u00f6rd-\u00fc"}"#,
        &[s],
        r#"{"pw": "***"}"#,
    );
    // Masks cut on character boundaries: text around multi-byte characters survives.
    check("ü€pässwörd-üé", &[s], "ü€***é");
    check("日本語の秘密です", &["秘密"], "日本語の***です");
}

#[test]
fn multi_line_secrets() {
    let key = "-----BEGIN KEY-----\nMIIBVQIBADANBgkq\r\nhkiG9w0BAQEFAASC\nab\n-----END KEY-----";
    // The whole secret, and each line of it on its own (a log that re-wraps or prefixes
    // lines); lines under four characters are not masked on their own.
    check(key, &[key], "***");
    check(
        "line 1: MIIBVQIBADANBgkq\nline 2:   hkiG9w0BAQEFAASC\nab cd",
        &[key],
        "line 1: ***\nline 2:   ***\nab cd",
    );
    // As JSON writes it, newlines escaped.
    let json = serde_json::to_string(key).unwrap();
    check(&json, &[key], "\"***\"");
}

#[test]
fn base64_fragments_at_every_offset() {
    // Whatever comes before and after the secret, its base64 leaks nothing longer than two
    // characters on either side.
    use base64::Engine as _;
    let s = "correct-horse-battery";
    for pre in ["", "u", "us", "usr", "user:"] {
        for post in ["", "!", "!!", "!!!"] {
            let text = base64::engine::general_purpose::STANDARD.encode(format!("{pre}{s}{post}"));
            let masked = mask(&text, &[s.to_string()]);
            let (a, b) = masked.split_once("***").unwrap_or_else(|| panic!("{text}"));
            assert!(
                a.len() <= 3 + pre.len() * 2 && b.len() <= 3 + post.len() * 2,
                "{text} → {masked}"
            );
        }
    }
}

#[test]
fn masker_is_reusable_and_masks_json() {
    let m = Masker::new(&["hunter22".to_string()]);
    assert_eq!(m.mask("a hunter22"), "a ***");
    assert_eq!(m.mask("b"), "b");
    assert_eq!(
        m.mask_json(&json!({"k": ["hunter22", 1, {"x": "aHVudGVyMjI= hunter22"}]})),
        json!({"k": ["***", 1, {"x": "*** ***"}]})
    );
    // Debug never shows a secret.
    assert!(!format!("{m:?}").contains("hunter"));
}
