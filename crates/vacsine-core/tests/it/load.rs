use vacsine_core::doc::{load, Document, SourceFile};

/// Load `text`; on error return "line:column: message".
fn check(text: &str) -> Result<&'static str, String> {
    match load(&SourceFile::new("f.yaml", text)) {
        Ok(d) => Ok(d.kind()),
        Err(e) => Err(format!("{}:{}: {}", e.line, e.column, e.message)),
    }
}

fn err(text: &str) -> String {
    check(text).expect_err("should fail")
}

const POLICY: &str = "apiVersion: vacsine.io/v1
kind: Policy
metadata: {name: p}
spec:
  requirements:
    - id: r1
      title: T
      severity: high
      check:
        port: {port: 23, from: outside, expect: closed}
";

#[test]
fn loads_each_kind() {
    assert_eq!(check(POLICY), Ok("Policy"));
    assert_eq!(
        check("apiVersion: vacsine.io/v1\nkind: Target\nmetadata: {name: t}\nspec:\n  driver: docker\n  nodes: [{container: a}]\n"),
        Ok("Target")
    );
    assert_eq!(
        check("apiVersion: vacsine.io/v1\nkind: Workflow\nmetadata: {name: w}\nspec:\n  steps: [{id: a, uses: command, with: {argv: [true]}}]\n"),
        Ok("Workflow")
    );
}

#[test]
fn unknown_field_is_located() {
    let e = err(&POLICY.replace("      title: T", "      title: T\n      severty: low"));
    assert!(e.starts_with("8:7:"), "{e}");
    assert!(e.contains("severty"), "{e}");
}

#[test]
fn wrong_enum_value_is_located() {
    let e = err(&POLICY.replace("expect: closed", "expect: shut"));
    assert!(e.starts_with("10:"), "{e}");
    assert!(e.contains("shut"), "{e}");
}

#[test]
fn wrong_type_is_located() {
    let e = err(&POLICY.replace("port: 23", "port: twenty-three"));
    assert!(e.starts_with("10:"), "{e}");
}

#[test]
fn envelope_problems() {
    assert!(err("kind: Policy\n").contains("apiVersion"));
    assert!(err("apiVersion: v0\nkind: Policy\n").contains("unsupported apiVersion"));
    assert!(err("apiVersion: vacsine.io/v1\nkind: Polcy\n").contains("unknown kind"));
    assert!(err("apiVersion: vacsine.io/v1\n").contains("missing `kind`"));
    assert!(err("- just\n- a list\n").len() > 3);
    assert!(err(
        "apiVersion: vacsine.io/v1\nkind: Policy\nmetadata: {name: p}\nspec: {requirements: [}\n"
    )
    .starts_with("4:"));
}

#[test]
fn alias_bomb_is_refused_quickly() {
    let mut s = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..30 {
        let p = i - 1;
        s.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let t = std::time::Instant::now();
    assert!(check(&s).is_err());
    assert!(t.elapsed().as_secs() < 2, "took {:?}", t.elapsed());
}

#[test]
fn absurd_nesting_is_refused() {
    let s = format!(
        "apiVersion: vacsine.io/v1\nkind: Policy\nx: {}{}\n",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    assert!(check(&s).is_err());
}

#[test]
fn no_panic_on_garbage() {
    for g in [
        "",
        "\0\0",
        ":::",
        "{",
        "? ? ?",
        "apiVersion: [",
        "\u{feff}",
        "- - - -",
        "!!binary x",
        "&a *a",
    ] {
        let _ = check(g);
    }
}

#[test]
fn shipped_examples_and_catalog_load() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let mut n = 0;
    for dir in ["examples/edge-site", "catalog"] {
        for e in std::fs::read_dir(format!("{root}/{dir}")).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "yaml") {
                let text = std::fs::read_to_string(&p).unwrap();
                match load(&SourceFile::new(p.display().to_string(), text)) {
                    Ok(Document::Policy(p)) => assert!(p.spec.requirements.len() >= 8),
                    Ok(_) => {}
                    Err(e) => panic!("{e}"),
                }
                n += 1;
            }
        }
    }
    assert!(n >= 9);
}
