//! XCCDF 1.2 tailoring on the small data stream of `tables`: what each element does to the
//! rules evaluated and the values their checks get, and the errors naming file:line and id.

use crate::tables::{good, DS};
use std::collections::BTreeMap;
use vacsine_scap::system::MemSystem;
use vacsine_scap::{evaluate, Options, Outcome};

/// The data stream, with a second selector (`lax`: 027) on `v_umask`.
fn ds() -> vacsine_scap::DataStream {
    let text = DS.replace(
        r#"<x:value selector="strict">077</x:value>"#,
        r#"<x:value selector="strict">077</x:value><x:value selector="lax">027</x:value>"#,
    );
    vacsine_scap::parse(&text, "t.xml").unwrap()
}

/// A bare tailoring document with these profiles.
fn tailoring(profiles: &str) -> String {
    format!(
        "<?xml version=\"1.0\"?>\n<xccdf-1.2:Tailoring xmlns:xccdf-1.2=\"http://checklists.nist.gov/xccdf/1.2\" id=\"xccdf_t_tailoring_x\">\n<xccdf-1.2:version time=\"2026-01-01T00:00:00\">3</xccdf-1.2:version>\n{profiles}\n</xccdf-1.2:Tailoring>\n"
    )
}

fn outcomes(profiles: &str, sys: &MemSystem) -> BTreeMap<String, Outcome> {
    let mut ds = ds();
    let added = vacsine_scap::tailoring::apply(&mut ds, &tailoring(profiles), "tailor.xml")
        .expect("tailoring applies");
    let last = added.last().unwrap().clone();
    evaluate(&ds, &last, sys, &Options::default())
        .unwrap()
        .rules
        .into_iter()
        .map(|r| (r.id, r.outcome))
        .collect()
}

fn umask(m: &mut MemSystem, v: &str) -> MemSystem {
    m.file("/etc/profile.d/umask.sh", &format!("umask {v}\n"));
    m.clone()
}

/// (tailoring profiles, umask on the node, rule → outcome, None: not evaluated)
type Row = (String, &'static str, Vec<(&'static str, Option<Outcome>)>);

#[test]
fn select_refine_and_set_value_change_what_is_evaluated() {
    // (profiles, umask on the node, expected: rule → Some(outcome) | None (not evaluated))
    let p = |body: &str| {
        format!(
            "<xccdf-1.2:Profile id=\"xccdf_t_profile_tailored\" extends=\"xccdf_p_strict\"><xccdf-1.2:title>T</xccdf-1.2:title>{body}</xccdf-1.2:Profile>"
        )
    };
    let rows: Vec<Row> = vec![
        // Nothing tailored: strict as it is (umask 077 wanted).
        (p(""), "077", vec![("r_umask", Some(Outcome::Pass)), ("r_ssh", Some(Outcome::Pass))]),
        (p(""), "027", vec![("r_umask", Some(Outcome::Fail))]),
        // select false removes a rule; select true adds one the base leaves out.
        (
            p(r#"<xccdf-1.2:select idref="r_ssh" selected="false"/>"#),
            "077",
            vec![("r_ssh", None), ("r_shadow", Some(Outcome::Pass))],
        ),
        (
            p(r#"<xccdf-1.2:select idref="r_off" selected="true"/>"#),
            "077",
            vec![("r_off", Some(Outcome::NotChecked))],
        ),
        // A group deselected takes its rules with it.
        (
            p(r#"<xccdf-1.2:select idref="g_off" selected="false"/>"#),
            "077",
            vec![("r_in_group", None)],
        ),
        // refine-value picks another selector: the OVAL check gets 027 through its export.
        (
            p(r#"<xccdf-1.2:refine-value idref="v_umask" selector="lax"/>"#),
            "027",
            vec![("r_umask", Some(Outcome::Pass))],
        ),
        (
            p(r#"<xccdf-1.2:refine-value idref="v_umask" selector="lax"/>"#),
            "077",
            vec![("r_umask", Some(Outcome::Fail))],
        ),
        // set-value gives a literal, over the base's refine-value.
        (
            p(r#"<xccdf-1.2:set-value idref="v_umask">0022</xccdf-1.2:set-value>"#),
            "0022",
            vec![("r_umask", Some(Outcome::Pass))],
        ),
        // A tailored profile extending another tailored profile of the same file.
        (
            format!(
                "{}<xccdf-1.2:Profile id=\"xccdf_t_profile_two\" extends=\"xccdf_t_profile_tailored\"><xccdf-1.2:select idref=\"r_shadow\" selected=\"false\"/></xccdf-1.2:Profile>",
                p(r#"<xccdf-1.2:select idref="r_ssh" selected="false"/>"#)
            ),
            "077",
            vec![("r_ssh", None), ("r_shadow", None), ("r_umask", Some(Outcome::Pass))],
        ),
        // Extending the loose profile (which deselects g_off and sets 022).
        (
            "<xccdf-1.2:Profile id=\"xccdf_t_profile_l\" extends=\"xccdf_p_loose\"/>".into(),
            "022",
            vec![("r_umask", Some(Outcome::Pass)), ("r_in_group", None)],
        ),
    ];
    for (profiles, mask, want) in rows {
        let got = outcomes(&profiles, &umask(&mut good(), mask));
        for (rule, o) in want {
            assert_eq!(
                got.get(rule).copied(),
                o,
                "{rule} with umask {mask}: {profiles}"
            );
        }
    }
}

#[test]
fn wrapped_in_a_data_stream_collection_and_listed() {
    let wrapped = r#"<ds:data-stream-collection xmlns:ds="http://scap.nist.gov/schema/scap/source/1.2" xmlns:xccdf="http://checklists.nist.gov/xccdf/1.2">
 <ds:component id="scap_t_comp_tailoring"><xccdf:Tailoring id="xccdf_t_tailoring_w">
  <xccdf:benchmark href="t.xml" id="xccdf_b"/>
  <xccdf:version time="2026-01-01T00:00:00">1</xccdf:version>
  <xccdf:Profile id="xccdf_t_profile_w" extends="xccdf_p_strict"><xccdf:title>Wrapped</xccdf:title>
   <xccdf:select idref="r_telnet" selected="false"/></xccdf:Profile>
 </xccdf:Tailoring></ds:component></ds:data-stream-collection>"#;
    let mut ds = ds();
    let t = vacsine_scap::tailoring::parse(wrapped, "w.xml").unwrap();
    assert_eq!(
        (t.id.as_str(), t.version.as_str()),
        ("xccdf_t_tailoring_w", "1")
    );
    // The element kept for ARF declares the namespace its ancestors did.
    let start = &t.element[..t.element.find('>').unwrap()];
    assert!(start.starts_with("<xccdf:Tailoring "), "{start}");
    assert!(
        start.contains(" xmlns:xccdf=\"http://checklists.nist.gov/xccdf/1.2\""),
        "{start}"
    );
    roxmltree::Document::parse(&t.element).expect("self-contained");
    assert_eq!(t.apply_to(&mut ds).unwrap(), vec!["xccdf_t_profile_w"]);
    let p = vacsine_scap::xccdf::find_profile(&ds, "xccdf_t_profile_w").unwrap();
    assert_eq!(p.title, "Wrapped");
    let rules = vacsine_scap::xccdf::selected_rules(&ds, p);
    assert!(!rules.iter().any(|r| r.id == "r_telnet"));
    assert!(rules.iter().any(|r| r.id == "r_ssh"));
}

#[test]
fn unknown_ids_and_bad_shapes_are_located_errors() {
    let prof = |body: &str| {
        format!("<xccdf-1.2:Profile id=\"xccdf_t_profile_x\" extends=\"xccdf_p_strict\">\n{body}\n</xccdf-1.2:Profile>")
    };
    // (tailoring text, expected line, expected words)
    let rows: Vec<(String, u32, &[&str])> = vec![
        (tailoring(&prof(r#"<xccdf-1.2:select idref="r_nope" selected="false"/>"#)), 5, &["select", "`r_nope`", "not a rule or group", "xccdf_b"]),
        (tailoring(&prof(r#"<xccdf-1.2:select idref="ssh" selected="true"/>"#)), 5, &["`ssh`", "did you mean `r_ssh`"]),
        (tailoring(&prof(r#"<xccdf-1.2:refine-value idref="v_nope" selector="x"/>"#)), 5, &["refine-value", "`v_nope`", "not a value"]),
        (tailoring(&prof(r#"<xccdf-1.2:refine-value idref="v_umask" selector="nope"/>"#)), 5, &["no selector `nope`", "strict", "lax"]),
        (tailoring(&prof(r#"<xccdf-1.2:set-value idref="v_nope">1</xccdf-1.2:set-value>"#)), 5, &["set-value", "`v_nope`"]),
        (tailoring(&prof(r#"<xccdf-1.2:select idref="r_ssh" selected="maybe"/>"#)), 5, &["selected=\"true\" or \"false\""]),
        (tailoring(&prof(r#"<xccdf-1.2:refine-rule idref="r_ssh" severity="low"/>"#)), 5, &["refine-rule", "not supported"]),
        (tailoring("<xccdf-1.2:Profile id=\"xccdf_t_profile_x\" extends=\"xccdf_p_nope\"/>"), 4, &["extends `xccdf_p_nope`", "xccdf_p_strict"]),
        (tailoring("<xccdf-1.2:Profile id=\"xccdf_p_strict\"/>"), 4, &["`xccdf_p_strict` is already defined"]),
        (
            tailoring("<xccdf-1.2:Profile id=\"xccdf_t_a\" extends=\"xccdf_t_b\"/>\n<xccdf-1.2:Profile id=\"xccdf_t_b\" extends=\"xccdf_t_a\"/>"),
            4,
            &["extends itself"],
        ),
        (tailoring(""), 2, &["no <Profile>"]),
        ("<Tailoring xmlns=\"http://checklists.nist.gov/xccdf/1.1\" id=\"t\"><Profile id=\"p\"/></Tailoring>".into(), 1, &["only XCCDF 1.2"]),
        ("<?xml version=\"1.0\"?>\n<Benchmark/>".into(), 2, &["no <Tailoring>"]),
        (
            "<Tailoring xmlns=\"http://checklists.nist.gov/xccdf/1.2\" id=\"t\"><benchmark href=\"x\" id=\"xccdf_other\"/><Profile id=\"p\"/></Tailoring>".into(),
            1,
            &["for benchmark `xccdf_other`", "`xccdf_b`"],
        ),
    ];
    for (text, line, words) in rows {
        let mut ds = ds();
        let before = ds.benchmark.profiles.len();
        let e = vacsine_scap::tailoring::apply(&mut ds, &text, "tailor.xml")
            .expect_err(&text)
            .to_string();
        assert!(
            e.starts_with(&format!("tailor.xml:{line}: ")),
            "{e}\n{text}"
        );
        for w in words {
            assert!(e.contains(w), "`{w}` not in: {e}");
        }
        assert_eq!(
            ds.benchmark.profiles.len(),
            before,
            "nothing added on error"
        );
    }
    // Not XML: line and column.
    let e = vacsine_scap::tailoring::apply(&mut ds(), "<a>\n<b></a>", "tailor.xml")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("tailor.xml:2:"), "{e}");
}
