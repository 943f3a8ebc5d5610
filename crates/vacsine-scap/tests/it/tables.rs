//! The evaluator on a small data stream over in-memory systems: XCCDF selection and values,
//! CPE applicability, OVAL criteria, tests, objects, states and variables.

use std::collections::BTreeMap;
use vacsine_scap::oval::{check_items, combine, OvalResult};
use vacsine_scap::system::MemSystem;
use vacsine_scap::{evaluate, Options, Outcome};

pub const DS: &str = r##"<?xml version="1.0"?>
<ds:data-stream-collection xmlns:ds="http://scap.nist.gov/schema/scap/source/1.2"
  xmlns:xlink="http://www.w3.org/1999/xlink" xmlns:cat="urn:oasis:names:tc:entity:xmlns:xml:catalog"
  xmlns:x="http://checklists.nist.gov/xccdf/1.2" xmlns:cpe-lang="http://cpe.mitre.org/language/2.0"
  xmlns:cpe-dict="http://cpe.mitre.org/dictionary/2.0"
  xmlns:o="http://oval.mitre.org/XMLSchema/oval-definitions-5"
  xmlns:ind="http://oval.mitre.org/XMLSchema/oval-definitions-5#independent"
  xmlns:unix="http://oval.mitre.org/XMLSchema/oval-definitions-5#unix"
  xmlns:linux="http://oval.mitre.org/XMLSchema/oval-definitions-5#linux"
  xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <ds:data-stream id="d">
  <ds:checklists><ds:component-ref id="cref-x" xlink:href="#comp-x">
   <cat:catalog><cat:uri name="t-oval.xml" uri="#cref-o"/></cat:catalog></ds:component-ref></ds:checklists>
  <ds:checks><ds:component-ref id="cref-o" xlink:href="#comp-o"/></ds:checks>
 </ds:data-stream>
 <ds:component id="comp-dict"><cpe-dict:cpe-list>
   <cpe-dict:cpe-item name="cpe:/a:machine"><cpe-dict:check href="t-oval.xml">def:machine</cpe-dict:check></cpe-dict:cpe-item>
 </cpe-dict:cpe-list></ds:component>
 <ds:component id="comp-x">
  <x:Benchmark id="xccdf_b">
   <x:title>T</x:title>
   <cpe-lang:platform-specification>
    <cpe-lang:platform id="machine"><cpe-lang:logical-test operator="AND" negate="false">
     <cpe-lang:fact-ref name="cpe:/a:machine"/></cpe-lang:logical-test></cpe-lang:platform>
   </cpe-lang:platform-specification>
   <x:Profile id="xccdf_p_strict"><x:title>Strict</x:title>
    <x:select idref="r_ssh" selected="true"/><x:select idref="r_shadow" selected="true"/>
    <x:select idref="r_telnet" selected="true"/><x:select idref="r_fwd" selected="true"/>
    <x:select idref="r_umask" selected="true"/><x:select idref="r_machine" selected="true"/>
    <x:select idref="r_part" selected="true"/><x:select idref="r_space" selected="true"/><x:select idref="r_shadowed" selected="true"/><x:select idref="r_ocil" selected="true"/>
    <x:select idref="r_off" selected="false"/>
    <x:refine-value idref="v_umask" selector="strict"/>
   </x:Profile>
   <x:Profile id="xccdf_p_loose" extends="xccdf_p_strict"><x:title>Loose</x:title>
    <x:select idref="g_off" selected="false"/>
    <x:set-value idref="v_umask">022</x:set-value>
   </x:Profile>
   <x:Value id="v_umask" type="string"><x:value>022</x:value><x:value selector="strict">077</x:value></x:Value>
   <x:Rule id="r_ssh" severity="high"><x:title>No root SSH</x:title>
    <x:reference href="http://www.ssi.gouv.fr/administration/bonnes-pratiques/">R19</x:reference>
    <x:reference href="https://www.pcisecuritystandards.org/documents/PCI_DSS_v3-2-1.pdf">Req-2.2.4</x:reference>
    <x:check system="http://oval.mitre.org/XMLSchema/oval-definitions-5"><x:check-content-ref href="t-oval.xml" name="def:ssh"/></x:check></x:Rule>
   <x:Rule id="r_shadow" severity="medium"><x:title>shadow 0640 root</x:title>
    <x:reference href="http://www.ssi.gouv.fr/administration/bonnes-pratiques/">R50</x:reference>
    <x:check system="http://oval.mitre.org/XMLSchema/oval-definitions-5"><x:check-content-ref href="t-oval.xml" name="def:shadow"/></x:check></x:Rule>
   <x:Rule id="r_telnet"><x:title>telnetd removed</x:title>
    <x:check system="http://oval.mitre.org/XMLSchema/oval-definitions-5"><x:check-content-ref href="t-oval.xml" name="def:telnet"/></x:check></x:Rule>
   <x:Rule id="r_fwd"><x:title>no forwarding</x:title>
    <x:check system="http://oval.mitre.org/XMLSchema/oval-definitions-5"><x:check-content-ref href="t-oval.xml" name="def:fwd"/></x:check></x:Rule>
   <x:Rule id="r_umask"><x:title>umask</x:title>
    <x:check system="http://oval.mitre.org/XMLSchema/oval-definitions-5">
     <x:check-export export-name="var:umask" value-id="v_umask"/>
     <x:check-content-ref href="t-oval.xml" name="def:umask"/></x:check></x:Rule>
   <x:Rule id="r_machine"><x:title>machine only</x:title><x:platform idref="#machine"/>
    <x:check system="http://oval.mitre.org/XMLSchema/oval-definitions-5"><x:check-content-ref href="t-oval.xml" name="def:ssh"/></x:check></x:Rule>
   <x:Rule id="r_part"><x:title>partition</x:title>
    <x:check system="http://oval.mitre.org/XMLSchema/oval-definitions-5"><x:check-content-ref href="t-oval.xml" name="def:part"/></x:check></x:Rule>
   <x:Rule id="r_shadowed"><x:title>hashes shadowed</x:title>
    <x:check system="http://oval.mitre.org/XMLSchema/oval-definitions-5"><x:check-content-ref href="t-oval.xml" name="def:shadowed"/></x:check></x:Rule>
   <x:Rule id="r_space"><x:title>space</x:title>
    <x:check system="http://oval.mitre.org/XMLSchema/oval-definitions-5"><x:check-content-ref href="t-oval.xml" name="def:space"/></x:check></x:Rule>
   <x:Rule id="r_ocil"><x:title>manual</x:title>
    <x:check system="http://scap.nist.gov/schema/ocil/2"><x:check-content-ref href="t-ocil.xml" name="q"/></x:check></x:Rule>
   <x:Rule id="r_off" selected="true"><x:title>deselected</x:title></x:Rule>
   <x:Group id="g_off"><x:title>group</x:title>
    <x:Rule id="r_in_group"><x:title>in group</x:title></x:Rule>
   </x:Group>
  </x:Benchmark>
 </ds:component>
 <ds:component id="comp-o">
  <o:oval_definitions>
   <o:definitions>
    <o:definition id="def:ssh" class="compliance"><o:criteria operator="OR">
      <o:extend_definition definition_ref="def:nossh"/>
      <o:criterion test_ref="tst:ssh_root"/></o:criteria></o:definition>
    <o:definition id="def:nossh" class="compliance"><o:criteria>
      <o:criterion test_ref="tst:pkg_ssh" negate="true"/></o:criteria></o:definition>
    <o:definition id="def:shadow" class="compliance"><o:criteria>
      <o:criterion test_ref="tst:shadow"/></o:criteria></o:definition>
    <o:definition id="def:telnet" class="compliance"><o:criteria>
      <o:criterion test_ref="tst:telnet_absent"/></o:criteria></o:definition>
    <o:definition id="def:fwd" class="compliance"><o:criteria>
      <o:criterion test_ref="tst:fwd"/></o:criteria></o:definition>
    <o:definition id="def:umask" class="compliance"><o:criteria>
      <o:criterion test_ref="tst:umask"/></o:criteria></o:definition>
    <o:definition id="def:machine" class="inventory"><o:criteria>
      <o:criterion test_ref="tst:dockerenv" /></o:criteria></o:definition>
    <o:definition id="def:part" class="compliance"><o:criteria>
      <o:criterion test_ref="tst:part"/></o:criteria></o:definition>
    <o:definition id="def:shadowed" class="compliance"><o:criteria>
      <o:criterion test_ref="tst:shadowed"/></o:criteria></o:definition>
    <o:definition id="def:space" class="compliance"><o:criteria>
      <o:criterion test_ref="tst:space"/></o:criteria></o:definition>
   </o:definitions>
   <o:tests>
    <linux:dpkginfo_test id="tst:pkg_ssh" check="all" check_existence="at_least_one_exists" comment="openssh-server installed">
     <linux:object object_ref="obj:pkg_ssh"/></linux:dpkginfo_test>
    <ind:textfilecontent54_test id="tst:ssh_root" check="all" check_existence="all_exist" comment="PermitRootLogin no">
     <ind:object object_ref="obj:ssh_root"/><ind:state state_ref="ste:no"/></ind:textfilecontent54_test>
    <unix:file_test id="tst:shadow" check="all" check_existence="all_exist" state_operator="AND">
     <unix:object object_ref="obj:shadow"/><unix:state state_ref="ste:root_owned"/><unix:state state_ref="ste:no_other"/></unix:file_test>
    <linux:dpkginfo_test id="tst:telnet_absent" check="all" check_existence="none_exist">
     <linux:object object_ref="obj:telnetd"/></linux:dpkginfo_test>
    <unix:sysctl_test id="tst:fwd" check="all" check_existence="all_exist">
     <unix:object object_ref="obj:fwd"/><unix:state state_ref="ste:zero"/></unix:sysctl_test>
    <ind:textfilecontent54_test id="tst:umask" check="all" check_existence="all_exist">
     <ind:object object_ref="obj:umask"/><ind:state state_ref="ste:umask"/></ind:textfilecontent54_test>
    <unix:file_test id="tst:dockerenv" check="all" check_existence="none_exist">
     <unix:object object_ref="obj:dockerenv"/></unix:file_test>
    <linux:partition_test id="tst:part" check="all" check_existence="all_exist">
     <linux:object object_ref="obj:part"/><linux:state state_ref="ste:nodev"/></linux:partition_test>
    <unix:password_test id="tst:shadowed" check="all">
     <unix:object object_ref="obj:users"/><unix:state state_ref="ste:xstar"/></unix:password_test>
    <linux:partition_test id="tst:space" check="all" check_existence="all_exist">
     <linux:object object_ref="obj:all_mounts"/><linux:state state_ref="ste:space"/></linux:partition_test>
   </o:tests>
   <o:objects>
    <linux:dpkginfo_object id="obj:pkg_ssh"><linux:name>openssh-server</linux:name></linux:dpkginfo_object>
    <linux:dpkginfo_object id="obj:telnetd"><linux:name operation="pattern match">^telnetd.*$</linux:name></linux:dpkginfo_object>
    <ind:textfilecontent54_object id="obj:ssh_root">
     <ind:path>/etc/ssh</ind:path><ind:filename operation="pattern match">^sshd_config.*$</ind:filename>
     <ind:pattern operation="pattern match">^[\s]*(?i)PermitRootLogin(?-i)[\s]+(.+?)[\s]*$</ind:pattern>
     <ind:instance datatype="int" operation="greater than or equal">1</ind:instance></ind:textfilecontent54_object>
    <unix:file_object id="obj:shadow"><unix:filepath>/etc/shadow</unix:filepath></unix:file_object>
    <unix:sysctl_object id="obj:fwd"><unix:name>net.ipv4.ip_forward</unix:name></unix:sysctl_object>
    <ind:textfilecontent54_object id="obj:umask">
     <ind:filepath operation="pattern match">^/etc/profile\.d/.*\.sh$</ind:filepath>
     <ind:pattern operation="pattern match">^\s*umask\s+(\d+)\s*$</ind:pattern>
     <ind:instance datatype="int">1</ind:instance></ind:textfilecontent54_object>
    <unix:file_object id="obj:dockerenv"><unix:path>/</unix:path><unix:filename>.dockerenv</unix:filename></unix:file_object>
    <linux:partition_object id="obj:part"><linux:mount_point>/tmp</linux:mount_point></linux:partition_object>
    <unix:password_object id="obj:users"><unix:username operation="pattern match">.*</unix:username></unix:password_object>
    <linux:partition_object id="obj:all_mounts"><linux:mount_point operation="pattern match">^/.*</linux:mount_point></linux:partition_object>
   </o:objects>
   <o:states>
    <ind:textfilecontent54_state id="ste:no"><ind:subexpression operation="equals">no</ind:subexpression></ind:textfilecontent54_state>
    <unix:file_state id="ste:root_owned"><unix:user_id datatype="int">0</unix:user_id></unix:file_state>
    <unix:file_state id="ste:no_other" operator="AND"><unix:oread datatype="boolean">false</unix:oread><unix:owrite datatype="boolean">false</unix:owrite></unix:file_state>
    <unix:sysctl_state id="ste:zero"><unix:value datatype="int" operation="equals">0</unix:value></unix:sysctl_state>
    <unix:password_state id="ste:xstar"><unix:password operation="pattern match">^[x*]$</unix:password></unix:password_state>
    <linux:partition_state id="ste:nodev"><linux:mount_options entity_check="at least one">nodev</linux:mount_options></linux:partition_state>
    <linux:partition_state id="ste:space"><linux:space_left datatype="int" operation="greater than">0</linux:space_left></linux:partition_state>
    <ind:textfilecontent54_state id="ste:umask"><ind:subexpression var_ref="var:umask_re" operation="pattern match"/></ind:textfilecontent54_state>
   </o:states>
   <o:variables>
    <o:external_variable id="var:umask" datatype="string"/>
    <o:local_variable id="var:umask_re" datatype="string"><o:concat>
     <o:literal_component>^</o:literal_component><o:variable_component var_ref="var:umask"/><o:literal_component>$</o:literal_component></o:concat></o:local_variable>
   </o:variables>
  </o:oval_definitions>
 </ds:component>
</ds:data-stream-collection>"##;

const DPKG: &str = "Package: openssh-server\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1:9.2p1-2\n\nPackage: telnetd\nStatus: deinstall ok config-files\nVersion: 0.17-44\n\n";

/// A compliant system for the strict profile.
pub fn good() -> MemSystem {
    let mut m = MemSystem::new();
    m.file("/var/lib/dpkg/status", DPKG)
        .file("/etc/ssh/sshd_config", "# comment\nPermitRootLogin no\n")
        // Matches the file name pattern but is a directory: not read.
        .dir("/etc/ssh/sshd_config.d", 0o755)
        .file_with("/etc/shadow", "root:*:1::::::\n", 0o640, 0, 42)
        .file("/etc/profile.d/umask.sh", "umask 077\n")
        .file(
            "/etc/passwd",
            "root:x:0:0:root:/root:/bin/bash\nnobody:*:65534:65534::/:/usr/sbin/nologin\n",
        )
        .file("/.dockerenv", "")
        .file(
            "/proc/1/mounts",
            "overlay / overlay rw,relatime 0 0\ntmpfs /tmp tmpfs rw,nosuid,nodev 0 0\n/dev/sdb1 /srv/my\\040data ext4 rw 0 0\n",
        )
        .sysctl_value("net.ipv4.ip_forward", "0");
    m
}

fn outcomes(sys: &MemSystem, profile: &str) -> BTreeMap<String, Outcome> {
    let ds = vacsine_scap::parse(DS, "t.xml").unwrap();
    evaluate(&ds, profile, sys, &Options::default())
        .unwrap()
        .rules
        .into_iter()
        .map(|r| (r.id, r.outcome))
        .collect()
}

#[test]
fn operators_follow_the_oval_truth_tables() {
    use OvalResult::*;
    let rows: &[(&str, &[OvalResult], OvalResult)] = &[
        ("AND", &[True, True], True),
        ("AND", &[True, False, Error], False),
        ("AND", &[True, Error], Error),
        ("AND", &[True, NotEvaluated], NotEvaluated),
        ("AND", &[NotApplicable, True], True),
        ("AND", &[NotApplicable], NotApplicable),
        ("OR", &[False, True, Error], True),
        ("OR", &[False, Unknown], Unknown),
        ("OR", &[False, False], False),
        ("ONE", &[True, False], True),
        ("ONE", &[True, True], False),
        ("XOR", &[True, True, True], True),
        ("XOR", &[True, True], False),
    ];
    for (op, rs, want) in rows {
        assert_eq!(combine(op, rs), *want, "{op} {rs:?}");
    }
    assert_eq!(check_items("none satisfy", &[False, False]), True);
    assert_eq!(check_items("none satisfy", &[False, True]), False);
    assert_eq!(check_items("at least one", &[False, True]), True);
    assert_eq!(check_items("only one", &[True, True]), False);
}

#[test]
fn compliant_system_passes_and_unsupported_is_notchecked() {
    let o = outcomes(&good(), "xccdf_p_strict");
    assert_eq!(o["r_ssh"], Outcome::Pass);
    assert_eq!(o["r_shadow"], Outcome::Pass);
    assert_eq!(
        o["r_telnet"],
        Outcome::Pass,
        "config-files only is not installed"
    );
    assert_eq!(o["r_fwd"], Outcome::Pass);
    assert_eq!(o["r_shadowed"], Outcome::Pass);
    assert_eq!(o["r_umask"], Outcome::Pass);
    assert_eq!(
        o["r_machine"],
        Outcome::NotApplicable,
        "/.dockerenv: not a machine"
    );
    assert_eq!(o["r_part"], Outcome::Pass, "/tmp mounted nodev");
    assert_eq!(
        o["r_space"],
        Outcome::Error,
        "space figures are not collected"
    );
    assert_eq!(o["r_ocil"], Outcome::NotChecked);
    assert!(!o.contains_key("r_off"), "deselected by the profile");
    assert!(o.contains_key("r_in_group"), "group selected by default");
}

#[test]
fn each_perturbation_fails_its_rule_only() {
    type Perturb = fn(&mut MemSystem);
    let rows: &[(&str, Perturb)] = &[
        ("r_ssh", |m| {
            m.file("/etc/ssh/sshd_config", "PermitRootLogin yes\n");
        }),
        ("r_ssh", |m| {
            // Every instance must satisfy the state (check="all").
            m.file(
                "/etc/ssh/sshd_config",
                "PermitRootLogin no\npermitrootlogin yes\n",
            );
        }),
        ("r_ssh", |m| {
            // Installed and no directive: all_exist not met.
            m.file("/etc/ssh/sshd_config", "Port 22\n");
        }),
        ("r_shadow", |m| {
            m.file_with("/etc/shadow", "", 0o644, 0, 42);
        }),
        ("r_shadow", |m| {
            m.file_with("/etc/shadow", "", 0o640, 1000, 42);
        }),
        ("r_telnet", |m| {
            m.file(
                "/var/lib/dpkg/status",
                &DPKG.replace("deinstall ok config-files", "hold ok unpacked"),
            );
        }),
        ("r_shadowed", |m| {
            m.file(
                "/etc/passwd",
                "root:x:0:0:root:/root:/bin/bash\nold:$1$salt$hash:1001:1001::/home/old:/bin/sh\n",
            );
        }),
        ("r_fwd", |m| {
            m.sysctl_value("net.ipv4.ip_forward", "1");
        }),
        ("r_umask", |m| {
            m.file("/etc/profile.d/umask.sh", "umask 022\n");
        }),
        ("r_umask", |m| {
            // A directory whose name matches the pattern is not a file to read; the file
            // next to it decides.
            m.dir("/etc/profile.d/old.sh", 0o755)
                .file("/etc/profile.d/z.sh", "umask 022\n");
        }),
        ("r_part", |m| {
            m.file(
                "/proc/1/mounts",
                "overlay / overlay rw 0 0\ntmpfs /tmp tmpfs rw,nosuid 0 0\n",
            );
        }),
        ("r_part", |m| {
            // No /tmp mount: all_exist not met.
            m.file("/proc/1/mounts", "overlay / overlay rw 0 0\n");
        }),
    ];
    for (rule, perturb) in rows {
        let mut m = good();
        perturb(&mut m);
        let o = outcomes(&m, "xccdf_p_strict");
        for (id, out) in &o {
            let want = if id == rule {
                Outcome::Fail
            } else {
                outcomes(&good(), "xccdf_p_strict")[id]
            };
            assert_eq!(*out, want, "perturbing for {rule}: {id}");
        }
    }
}

#[test]
fn removing_openssh_passes_the_ssh_rule_through_extend_definition() {
    let mut m = good();
    m.file(
        "/var/lib/dpkg/status",
        &DPKG.replace("install ok installed", "deinstall ok config-files"),
    )
    .file("/etc/ssh/sshd_config", "PermitRootLogin yes\n");
    assert_eq!(outcomes(&m, "xccdf_p_strict")["r_ssh"], Outcome::Pass);
}

#[test]
fn profile_values_and_extends() {
    // The loose profile extends strict, sets umask 022 and deselects the group.
    let mut m = good();
    m.file("/etc/profile.d/umask.sh", "umask 022\n");
    let o = outcomes(&m, "xccdf_p_loose");
    assert_eq!(o["r_umask"], Outcome::Pass);
    assert!(!o.contains_key("r_in_group"));
    assert_eq!(o["r_ssh"], Outcome::Pass, "selections inherited");
    assert_eq!(outcomes(&m, "xccdf_p_strict")["r_umask"], Outcome::Fail);
}

#[test]
fn machine_platform_and_the_container_switch() {
    let mut m = good();
    m.entries.remove("/.dockerenv");
    assert_eq!(outcomes(&m, "xccdf_p_strict")["r_machine"], Outcome::Pass);
    let ds = vacsine_scap::parse(DS, "t.xml").unwrap();
    let opts = Options {
        container_as_machine: true,
    };
    let r = evaluate(&ds, "xccdf_p_strict", &good(), &opts).unwrap();
    let rm = r.rules.iter().find(|r| r.id == "r_machine").unwrap();
    assert_eq!(rm.outcome, Outcome::Pass);
}

#[test]
fn evidence_and_rollup_name_what_was_seen() {
    let mut m = good();
    m.file("/etc/ssh/sshd_config", "PermitRootLogin yes\n");
    let ds = vacsine_scap::parse(DS, "t.xml").unwrap();
    let r = evaluate(&ds, "xccdf_p_strict", &m, &Options::default()).unwrap();
    let ssh = r.rules.iter().find(|r| r.id == "r_ssh").unwrap();
    let ev = ssh.evidence.join("\n");
    assert!(ev.contains("/etc/ssh/sshd_config"), "{ev}");
    assert!(ev.contains("0 of 1 item(s) match"), "{ev}");
    let anssi = &r.families["ANSSI"];
    assert_eq!((anssi.failed, anssi.satisfied), (1, 1));
    assert_eq!(r.families["PCI-DSS"].failed, 1);
    let part = r.rules.iter().find(|r| r.id == "r_part").unwrap();
    assert!(
        part.evidence.join(" ").contains("/tmp"),
        "{:?}",
        part.evidence
    );
    let space = r.rules.iter().find(|r| r.id == "r_space").unwrap();
    assert!(
        space.evidence.join(" ").contains("no `space_left`"),
        "{:?}",
        space.evidence
    );
    let ocil = r.rules.iter().find(|r| r.id == "r_ocil").unwrap();
    assert!(
        ocil.evidence.join(" ").contains("no OVAL check"),
        "{:?}",
        ocil.evidence
    );
    // A mount point with an escaped space is unescaped.
    let ev = vacsine_scap::oval::Evaluator::new(&ds.ovals["t-oval.xml"], &m, Default::default());
    let all = ev.object("obj:all_mounts");
    let vacsine_scap::oval::Collected::Items(items) = &*all else {
        panic!("{all:?}")
    };
    assert!(
        items.iter().any(|i| i["mount_point"] == ["/srv/my data"]),
        "{items:?}"
    );
}

#[test]
fn bad_files_give_located_errors() {
    let e = vacsine_scap::parse("<a>\n<b></a>", "bad.xml")
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("bad.xml:2:"), "{e}");
    let e = vacsine_scap::parse("<root/>", "x.xml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("x.xml:1:") && e.contains("no XCCDF 1.2 <Benchmark>"),
        "{e}"
    );
    let e = vacsine_scap::parse(
        "<Benchmark xmlns='http://checklists.nist.gov/xccdf/1.2' id='b'>\n<Rule/></Benchmark>",
        "r.xml",
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("r.xml:2:") && e.contains("`id`"), "{e}");
    let ds = vacsine_scap::parse(DS, "t.xml").unwrap();
    let e = evaluate(&ds, "nope", &good(), &Options::default()).unwrap_err();
    assert!(e.contains("xccdf_p_strict"), "{e}");
}

#[test]
fn datatypes_and_operations() {
    use vacsine_scap::ds::OvalDoc;
    let doc = OvalDoc::default();
    let sys = MemSystem::new();
    let ev = vacsine_scap::oval::Evaluator::new(&doc, &sys, Default::default());
    let rows: &[(&str, &str, &str, &str, bool)] = &[
        ("equals", "string", "no", "no", true),
        ("not equal", "string", "no", "yes", true),
        ("case insensitive equals", "string", "No", "nO", true),
        (
            "pattern match",
            "string",
            "PermitRootLogin no",
            "^(?i)permitrootlogin\\s+no$",
            true,
        ),
        (
            "pattern match",
            "string",
            "# x public",
            "^((?!#).)*(public|private).*",
            false,
        ),
        ("greater than or equal", "int", "10", "9", true),
        ("less than", "int", "0x10", "17", true),
        ("bitwise and", "int", "7", "5", true),
        ("equals", "boolean", "1", "true", true),
        ("greater than", "version", "1.10", "1.9", true),
        (
            "less than",
            "debian_evr_string",
            "1:9.2p1-2",
            "1:9.2p1-2+deb12u1",
            true,
        ),
        ("greater than", "debian_evr_string", "2.0~rc1", "1.9", true),
        ("less than", "debian_evr_string", "2.0~rc1", "2.0", true),
        (
            "greater than or equal",
            "evr_string",
            "1:9.2p1-2+deb12u10",
            "0:7.4",
            true,
        ),
        ("less than", "evr_string", "0:1.0~rc1-1", "0:1.0-1", true),
        ("greater than", "evr_string", "0:1.10-1", "0:1.9-1", true),
        ("greater than", "evr_string", "0:1.0a-1", "0:1.0-1", true),
    ];
    for (op, dt, a, e, want) in rows {
        assert_eq!(ev.compare(op, dt, a, e), Ok(*want), "{a} {op} {e} ({dt})");
    }
    assert!(matches!(
        ev.compare("equals", "ipv4_address", "1.2.3.4", "1.2.3.4"),
        Err(vacsine_scap::oval::Fault::NotChecked(_))
    ));
    assert!(matches!(
        ev.compare("equals", "int", "x", "1"),
        Err(vacsine_scap::oval::Fault::Error(_))
    ));
}

/// Content that refers to itself or overflows gives `error`, not a crash.
#[test]
fn cycles_and_overflows_are_errors() {
    let oval = r#"<oval_definitions xmlns="http://oval.mitre.org/XMLSchema/oval-definitions-5"
      xmlns:ind="http://oval.mitre.org/XMLSchema/oval-definitions-5#independent">
     <definitions>
      <definition id="d:loop"><criteria><extend_definition definition_ref="d:loop"/></criteria></definition>
      <definition id="d:var"><criteria><criterion test_ref="t:var"/></criteria></definition>
      <definition id="d:set"><criteria><criterion test_ref="t:set"/></criteria></definition>
      <definition id="d:big"><criteria><criterion test_ref="t:big"/></criteria></definition>
     </definitions>
     <tests>
      <ind:variable_test id="t:var" check="all"><ind:object object_ref="o:var"/></ind:variable_test>
      <ind:variable_test id="t:set" check="all"><ind:object object_ref="o:set"/></ind:variable_test>
      <ind:variable_test id="t:big" check="all"><ind:object object_ref="o:big"/></ind:variable_test>
     </tests>
     <objects>
      <ind:variable_object id="o:var"><ind:var_ref>v:self</ind:var_ref></ind:variable_object>
      <ind:variable_object id="o:set"><set><object_reference>o:set</object_reference></set></ind:variable_object>
      <ind:variable_object id="o:big"><ind:var_ref>v:big</ind:var_ref></ind:variable_object>
     </objects>
     <variables>
      <local_variable id="v:self" datatype="string"><concat><literal_component>x</literal_component><variable_component var_ref="v:self"/></concat></local_variable>
      <local_variable id="v:big" datatype="int"><arithmetic arithmetic_operation="multiply"><literal_component>9223372036854775807</literal_component><literal_component>2</literal_component></arithmetic></local_variable>
     </variables>
    </oval_definitions>"#;
    let xml = format!(
        "<ds:data-stream-collection xmlns:ds='http://scap.nist.gov/schema/scap/source/1.2'>\
         <ds:component id='c_comp_x.xml'><Benchmark xmlns='http://checklists.nist.gov/xccdf/1.2' id='b'/></ds:component>\
         <ds:component id='c_comp_o.xml'>{oval}</ds:component></ds:data-stream-collection>"
    );
    let ds = vacsine_scap::parse(&xml, "c.xml").unwrap();
    let sys = MemSystem::new();
    let ev = vacsine_scap::oval::Evaluator::new(&ds.ovals["o.xml"], &sys, Default::default());
    for d in ["d:loop", "d:var", "d:set", "d:big"] {
        assert_eq!(ev.definition(d), OvalResult::Error, "{d}");
    }
    let t = ev.test("t:big");
    assert!(t.detail.contains("overflow"), "{t:?}");
}
