//! XCCDF results and ARF documents of an evaluation of the small data stream of `tables`:
//! well-formed whatever the node holds, faithful to the report, with the node's identity,
//! the default score, and the source data stream (and tailoring) embedded as written.
//! (`oscap` reads and validates them in the `vacsine` CLI tests.)

use crate::tables::{good, DS};
use std::collections::HashMap;
use vacsine_scap::results::{
    arf_document, default_score, target_info, xccdf_document, Run, Source, TargetInfo,
};
use vacsine_scap::system::MemSystem;
use vacsine_scap::{evaluate, Options, Outcome};

const XCCDF: &str = "http://checklists.nist.gov/xccdf/1.2";
const FIB_TRIE: &str = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 127.0.0.0/8 2 0 2\n           |-- 127.0.0.1\n              /32 host LOCAL\n     +-- 172.17.0.0/16 2 0 2\n        |-- 172.17.0.0\n           /16 link UNICAST\n        |-- 172.17.0.2\n           /32 host LOCAL\nLocal:\n        |-- 172.17.0.2\n           /32 host LOCAL\n";
const IF_INET6: &str = "00000000000000000000000000000001 01 80 10 80       lo\nfe800000000000000042acfffe110002 02 40 20 80     eth0\n";
/// What an attacker who controls the node's files could put in evidence.
const NASTY: &str = "/etc/profile.d/x<&\"']]>\u{1}.sh";

fn node() -> MemSystem {
    let mut m = good();
    m.file("/proc/1/net/fib_trie", FIB_TRIE)
        .file("/proc/1/net/if_inet6", IF_INET6)
        .file("/sys/class/net/eth0/address", "02:42:ac:11:00:02\n")
        .file("/sys/class/net/lo/address", "00:00:00:00:00:00\n")
        .sysctl_value("kernel.hostname", "web-1")
        // Fails r_umask (077 wanted) with the file's name in the evidence.
        .file(NASTY, "umask 022\n");
    m
}

fn times() -> (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) {
    let s = chrono::DateTime::parse_from_rfc3339("2026-03-01T10:00:00Z").unwrap();
    let e = chrono::DateTime::parse_from_rfc3339("2026-03-01T10:00:02Z").unwrap();
    (s.into(), e.into())
}

#[test]
fn target_info_reads_the_nodes_identity() {
    let t = target_info("web", &node());
    assert_eq!(
        t,
        TargetInfo {
            name: "web".into(),
            hostname: Some("web-1".into()),
            addresses: vec![
                "172.17.0.2".parse().unwrap(),
                "fe80::42:acff:fe11:2".parse().unwrap()
            ],
            macs: vec!["02:42:ac:11:00:02".into()],
        }
    );
    // Nothing readable: only the name.
    assert_eq!(
        target_info("x", &MemSystem::new()),
        TargetInfo {
            name: "x".into(),
            ..Default::default()
        }
    );
}

#[test]
fn xccdf_results_document_holds_the_benchmark_and_the_test_result() {
    let ds = vacsine_scap::parse(DS, "t.xml").unwrap();
    let sys = node();
    let rep = evaluate(&ds, "xccdf_p_strict", &sys, &Options::default()).unwrap();
    let umask = rep.rules.iter().find(|r| r.id == "r_umask").unwrap();
    assert_eq!(umask.outcome, Outcome::Fail);
    assert!(
        umask.evidence.iter().any(|e| e.contains("]]>")),
        "{:?}",
        umask.evidence
    );
    let (start, end) = times();
    let run = Run {
        report: &rep,
        target: target_info("web <1>", &sys),
        start,
        end,
    };
    let src = Source::new(DS, "t.xml").unwrap();
    let text = xccdf_document(&src, &ds, &run, None);
    let doc = roxmltree::Document::parse(&text).expect("well-formed");
    let root = doc.root_element();
    assert!(root.has_tag_name((XCCDF, "Benchmark")));
    assert_eq!(root.attribute("id"), Some("xccdf_b"));
    // The benchmark as written: its profiles and rules are there.
    let again = vacsine_scap::parse(&text, "again.xml")
        .expect("the results document parses as a benchmark");
    assert_eq!(again.benchmark.rules.len(), ds.benchmark.rules.len());
    let tr = root
        .children()
        .find(|n| n.has_tag_name((XCCDF, "TestResult")))
        .expect("TestResult in the Benchmark");
    assert_eq!(
        tr.attribute("id"),
        Some("xccdf_io.vacsine_testresult_xccdf_p_strict_web__1_")
    );
    assert_eq!(
        tr.attribute("start-time"),
        Some("2026-03-01T10:00:00+00:00")
    );
    assert_eq!(tr.attribute("end-time"), Some("2026-03-01T10:00:02+00:00"));
    let kids = |name: &str| -> Vec<roxmltree::Node> {
        tr.children()
            .filter(|n| n.has_tag_name((XCCDF, name)))
            .collect()
    };
    assert_eq!(
        kids("profile")[0].attribute("idref"),
        Some("xccdf_p_strict")
    );
    assert_eq!(kids("benchmark")[0].attribute("href"), Some("t.xml"));
    assert_eq!(kids("target")[0].text(), Some("web <1>"));
    let addrs: Vec<&str> = kids("target-address")
        .iter()
        .filter_map(|n| n.text())
        .collect();
    assert_eq!(
        addrs,
        ["172.17.0.2", "fe80::42:acff:fe11:2", "02:42:ac:11:00:02"]
    );
    let facts: HashMap<&str, &str> = tr
        .descendants()
        .filter(|n| n.has_tag_name((XCCDF, "fact")))
        .map(|n| (n.attribute("name").unwrap(), n.text().unwrap()))
        .collect();
    assert_eq!(facts["urn:xccdf:fact:asset:identifier:host_name"], "web-1");
    assert_eq!(facts["urn:xccdf:fact:scanner:name"], "Vacsine");
    // The value the umask check was given, from the profile's refine-value.
    let sv: Vec<(&str, &str)> = kids("set-value")
        .iter()
        .map(|n| (n.attribute("idref").unwrap(), n.text().unwrap()))
        .collect();
    assert_eq!(sv, [("v_umask", "077")]);
    // One rule-result per rule of the report, in its order, with its outcome.
    let rr: Vec<(&str, &str)> = kids("rule-result")
        .iter()
        .map(|n| {
            let res = n
                .children()
                .find(|c| c.has_tag_name((XCCDF, "result")))
                .unwrap();
            (n.attribute("idref").unwrap(), res.text().unwrap())
        })
        .collect();
    let want: Vec<(&str, &str)> = rep
        .rules
        .iter()
        .map(|r| (r.id.as_str(), r.outcome.as_str()))
        .collect();
    assert_eq!(rr, want);
    // The umask rule: its check with the export and content ref, and the evidence as messages
    // (the control character made visible, the rest escaped and read back as it was).
    let um = kids("rule-result")
        .into_iter()
        .find(|n| n.attribute("idref") == Some("r_umask"))
        .unwrap();
    let check = um
        .children()
        .find(|c| c.has_tag_name((XCCDF, "check")))
        .unwrap();
    let export = check
        .children()
        .find(|c| c.has_tag_name((XCCDF, "check-export")))
        .unwrap();
    assert_eq!(
        (
            export.attribute("export-name"),
            export.attribute("value-id")
        ),
        (Some("var:umask"), Some("v_umask"))
    );
    let cref = check
        .children()
        .find(|c| c.has_tag_name((XCCDF, "check-content-ref")))
        .unwrap();
    assert_eq!(
        (cref.attribute("href"), cref.attribute("name")),
        (Some("t-oval.xml"), Some("def:umask"))
    );
    let messages: String = um
        .children()
        .filter(|c| c.has_tag_name((XCCDF, "message")))
        .filter_map(|c| c.text())
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        messages.contains("/etc/profile.d/x<&\"']]>\\u{1}.sh"),
        "{messages}"
    );
    assert!(!text.contains('\u{1}'));
    // Default score: every rule here is at the benchmark's top level with weight 1, so it is
    // the share of passes among the rules that count.
    let counted: Vec<Outcome> = rep
        .rules
        .iter()
        .map(|r| r.outcome)
        .filter(|o| !matches!(o, Outcome::NotApplicable | Outcome::NotChecked))
        .collect();
    let pass = counted.iter().filter(|o| **o == Outcome::Pass).count();
    let score: f64 = kids("score")[0].text().unwrap().parse().unwrap();
    assert!(pass > 0 && pass < counted.len(), "{counted:?}");
    assert!(
        (score - 100.0 * pass as f64 / counted.len() as f64).abs() < 1e-5,
        "{score}"
    );
}

#[test]
fn default_score_weights_groups_then_rules() {
    // Groups g1 (weight 1: r1 pass, r2 fail) and g2 (weight 3: r3 pass, nested g3: r4 pass with
    // weight 2, r5 notapplicable) and a top-level rule r6 (fail, weight 1).
    let text = r#"<Benchmark xmlns="http://checklists.nist.gov/xccdf/1.2" id="xccdf_b">
 <Group id="g1"><Rule id="r1"/><Rule id="r2"/></Group>
 <Group id="g2" weight="3"><Rule id="r3"/><Group id="g3"><Rule id="r4" weight="2"/><Rule id="r5"/></Group></Group>
 <Group id="g4"><Rule id="r7"/></Group>
 <Rule id="r6"/></Benchmark>"#;
    let ds = vacsine_scap::parse(text, "s.xml").unwrap();
    let src = Source::new(text, "s.xml").unwrap();
    use Outcome::*;
    let rows: &[(&[(&str, Outcome)], f64)] = &[
        // g1 = 50, g3 = 100, g2 = 100, top = (50×1 + 100×3 + 0×1) / 5 = 70; g4 does not count.
        (
            &[
                ("r1", Pass),
                ("r2", Fail),
                ("r3", Pass),
                ("r4", Pass),
                ("r5", NotApplicable),
                ("r6", Fail),
                ("r7", NotChecked),
            ],
            70.0,
        ),
        // g3 = (0×2 + 100)/3 with r5 passing: 33.3; g2 = (100 + 33.3)/2 = 66.7; top = (50 + 200 + 0)/5.
        (
            &[
                ("r1", Pass),
                ("r2", Error),
                ("r3", Pass),
                ("r4", Fail),
                ("r5", Pass),
                ("r6", Unknown),
            ],
            50.0,
        ),
        (&[("r6", Pass)], 100.0),
        (&[("r5", NotApplicable)], 0.0),
        (&[], 0.0),
    ];
    for (outcomes, want) in rows {
        let o: HashMap<&str, Outcome> = outcomes.iter().copied().collect();
        let got = default_score(&ds, &src.weights, &o);
        assert!((got - want).abs() < 1e-9, "{outcomes:?}: {got} != {want}");
    }
}

#[test]
fn arf_document_embeds_the_stream_the_node_and_the_result() {
    let mut ds = vacsine_scap::parse(DS, "t.xml").unwrap();
    let tailoring = r#"<?xml version="1.0"?>
<xccdf-1.2:Tailoring xmlns:xccdf-1.2="http://checklists.nist.gov/xccdf/1.2" id="xccdf_t_tailoring_a">
<xccdf-1.2:version time="2026-01-01T00:00:00">2</xccdf-1.2:version>
<xccdf-1.2:Profile id="xccdf_t_profile_a" extends="xccdf_p_strict"><xccdf-1.2:select idref="r_ssh" selected="false"/></xccdf-1.2:Profile>
</xccdf-1.2:Tailoring>"#;
    let t = vacsine_scap::tailoring::parse(tailoring, "tailor.xml").unwrap();
    t.apply_to(&mut ds).unwrap();
    let sys = node();
    let rep = evaluate(&ds, "xccdf_t_profile_a", &sys, &Options::default()).unwrap();
    let (start, end) = times();
    let run = Run {
        report: &rep,
        target: target_info("web", &sys),
        start,
        end,
    };
    let src = Source::new(DS, "t.xml").unwrap();
    let text = arf_document(&src, &ds, &run, Some(&t));
    let doc = roxmltree::Document::parse(&text).expect("well-formed");
    const ARF: &str = "http://scap.nist.gov/schema/asset-reporting-format/1.1";
    const AI: &str = "http://scap.nist.gov/schema/asset-identification/1.1";
    const CORE: &str = "http://scap.nist.gov/schema/reporting-core/1.1";
    let root = doc.root_element();
    assert!(root.has_tag_name((ARF, "asset-report-collection")));
    let rels: Vec<(&str, &str, &str)> = root
        .descendants()
        .filter(|n| n.has_tag_name((CORE, "relationship")))
        .map(|n| {
            let r = n
                .children()
                .find(|c| c.has_tag_name((CORE, "ref")))
                .unwrap();
            (
                n.attribute("type").unwrap(),
                n.attribute("subject").unwrap(),
                r.text().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        rels,
        [
            ("arfvocab:createdFor", "xccdf1", "collection1"),
            ("arfvocab:isAbout", "xccdf1", "asset0")
        ]
    );
    // The report request: the source data stream, with the tailoring spliced in as a
    // checklist component; it still parses as the same stream.
    let req = root
        .descendants()
        .find(|n| n.has_tag_name((ARF, "report-request")))
        .unwrap();
    assert_eq!(req.attribute("id"), Some("collection1"));
    let content = req
        .first_element_child()
        .unwrap()
        .first_element_child()
        .unwrap();
    assert_eq!(content.tag_name().name(), "data-stream-collection");
    let embedded = &text[content.range()];
    let again = vacsine_scap::parse(embedded, "embedded").unwrap();
    let orig_ds = vacsine_scap::parse(DS, "t.xml").unwrap();
    let orig = &orig_ds.benchmark;
    assert_eq!(
        (
            &again.benchmark.profiles,
            &again.benchmark.values,
            again.benchmark.rules.len()
        ),
        (&orig.profiles, &orig.values, orig.rules.len())
    );
    let keys = |d: &vacsine_scap::DataStream| {
        let mut k: Vec<(String, usize)> = d
            .ovals
            .iter()
            .map(|(n, o)| (n.clone(), o.tests.len()))
            .collect();
        k.sort();
        k
    };
    assert_eq!(keys(&again), keys(&orig_ds));
    let cref = content
        .descendants()
        .find(|n| n.attribute("id") == Some("scap_io.vacsine_cref_tailoring"))
        .expect("tailoring component-ref");
    assert_eq!(cref.parent().unwrap().tag_name().name(), "checklists");
    let comp = content
        .descendants()
        .find(|n| {
            n.tag_name().name() == "component"
                && n.attribute("id") == Some("scap_io.vacsine_comp_tailoring")
        })
        .expect("tailoring component");
    let tl = comp.first_element_child().unwrap();
    assert!(tl.has_tag_name((XCCDF, "Tailoring")));
    assert_eq!(tl.attribute("id"), Some("xccdf_t_tailoring_a"));
    // The asset: host name, addresses, MAC.
    let asset = root
        .descendants()
        .find(|n| n.has_tag_name((ARF, "asset")))
        .unwrap();
    assert_eq!(asset.attribute("id"), Some("asset0"));
    let texts = |name: &str| -> Vec<&str> {
        asset
            .descendants()
            .filter(|n| n.has_tag_name((AI, name)))
            .filter_map(|n| n.text())
            .collect()
    };
    assert_eq!(texts("hostname"), ["web-1"]);
    assert_eq!(texts("ip-v4"), ["172.17.0.2"]);
    assert_eq!(texts("ip-v6"), ["fe80::42:acff:fe11:2"]);
    assert_eq!(texts("mac-address"), ["02:42:ac:11:00:02"]);
    // The report: the TestResult, naming the tailoring and the tailored profile.
    let report = root
        .descendants()
        .find(|n| n.has_tag_name((ARF, "report")))
        .unwrap();
    assert_eq!(report.attribute("id"), Some("xccdf1"));
    let tr = report
        .descendants()
        .find(|n| n.has_tag_name((XCCDF, "TestResult")))
        .unwrap();
    let tf = tr
        .children()
        .find(|n| n.has_tag_name((XCCDF, "tailoring-file")))
        .unwrap();
    assert_eq!(
        (
            tf.attribute("href"),
            tf.attribute("id"),
            tf.attribute("version"),
            tf.attribute("time")
        ),
        (
            Some("tailor.xml"),
            Some("xccdf_t_tailoring_a"),
            Some("2"),
            Some("2026-01-01T00:00:00")
        )
    );
    let prof = tr
        .children()
        .find(|n| n.has_tag_name((XCCDF, "profile")))
        .unwrap();
    assert_eq!(prof.attribute("idref"), Some("xccdf_t_profile_a"));
    // The benchmark: the report request's component holding it (as oscap names it).
    let bench = tr
        .children()
        .find(|n| n.has_tag_name((XCCDF, "benchmark")))
        .unwrap();
    assert_eq!(
        (bench.attribute("href"), bench.attribute("id")),
        (Some("#comp-x"), Some("xccdf_b"))
    );
    let ids: Vec<&str> = tr
        .children()
        .filter(|n| n.has_tag_name((XCCDF, "rule-result")))
        .filter_map(|n| n.attribute("idref"))
        .collect();
    assert!(
        !ids.contains(&"r_ssh") && ids.contains(&"r_umask"),
        "{ids:?}"
    );
    // A host name outside ARF's pattern is left out of the asset (kept as a fact).
    let mut odd = node();
    odd.sysctl_value("kernel.hostname", "a b<c>");
    let run = Run {
        report: &rep,
        target: target_info("web", &odd),
        start,
        end,
    };
    let text = arf_document(&src, &ds, &run, None);
    let doc = roxmltree::Document::parse(&text).expect("well-formed");
    assert!(!doc.descendants().any(|n| n.has_tag_name((AI, "hostname"))));
    assert!(text.contains("a b&lt;c&gt;"));
    assert!(!text.contains("scap_io.vacsine_comp_tailoring"));
}
