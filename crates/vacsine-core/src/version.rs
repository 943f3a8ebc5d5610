//! Debian version ordering (deb-version(7)) and version constraints such as `>= 1.2`.

use std::cmp::Ordering;

fn order(c: Option<char>) -> i32 {
    match c {
        None => 0,
        Some('~') => -1,
        Some(c) if c.is_ascii_alphabetic() => c as i32,
        Some(c) => c as i32 + 256,
    }
}

fn cmp_part(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a, b);
    loop {
        if a.is_empty() && b.is_empty() {
            return Ordering::Equal;
        }
        // Non-digit prefix, compared with the dpkg character order.
        let an = a.find(|c: char| c.is_ascii_digit()).unwrap_or(a.len());
        let bn = b.find(|c: char| c.is_ascii_digit()).unwrap_or(b.len());
        let (ap, ar) = a.split_at(an);
        let (bp, br) = b.split_at(bn);
        let mut ai = ap.chars();
        let mut bi = bp.chars();
        loop {
            let (x, y) = (ai.next(), bi.next());
            if x.is_none() && y.is_none() {
                break;
            }
            let (ox, oy) = (order(x), order(y));
            if ox != oy {
                return ox.cmp(&oy);
            }
        }
        // Digit run, compared numerically.
        let ad = ar.find(|c: char| !c.is_ascii_digit()).unwrap_or(ar.len());
        let bd = br.find(|c: char| !c.is_ascii_digit()).unwrap_or(br.len());
        let (anum, arest) = ar.split_at(ad);
        let (bnum, brest) = br.split_at(bd);
        let at = anum.trim_start_matches('0');
        let bt = bnum.trim_start_matches('0');
        let c = at.len().cmp(&bt.len()).then_with(|| at.cmp(bt));
        if c != Ordering::Equal {
            return c;
        }
        a = arest;
        b = brest;
    }
}

fn split(v: &str) -> (u64, &str, &str) {
    let (epoch, rest) = match v.split_once(':') {
        Some((e, r)) if e.chars().all(|c| c.is_ascii_digit()) => (e.parse().unwrap_or(0), r),
        _ => (0, v),
    };
    match rest.rsplit_once('-') {
        Some((up, rev)) => (epoch, up, rev),
        None => (epoch, rest, ""),
    }
}

/// Compare two Debian versions.
pub fn compare(a: &str, b: &str) -> Ordering {
    let (ea, ua, ra) = split(a.trim());
    let (eb, ub, rb) = split(b.trim());
    ea.cmp(&eb)
        .then_with(|| cmp_part(ua, ub))
        .then_with(|| cmp_part(ra, rb))
}

/// A constraint such as `>= 1.2`, `<< 2`, `= 1.0-1`, `!= 3`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Constraint {
    pub op: &'static str,
    pub version: String,
}

impl Constraint {
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        for op in [">=", "<=", ">>", "<<", "!=", "==", "=", ">", "<"] {
            if let Some(rest) = s.strip_prefix(op) {
                let v = rest.trim();
                if v.is_empty() || v.contains(char::is_whitespace) {
                    break;
                }
                return Ok(Constraint {
                    op,
                    version: v.to_string(),
                });
            }
        }
        Err(format!(
            "invalid version constraint `{s}`: expected an operator (>=, <=, >, <, =, !=) and a version, e.g. `>= 1.2.3`"
        ))
    }

    pub fn matches(&self, installed: &str) -> bool {
        let c = compare(installed, &self.version);
        match self.op {
            ">=" => c != Ordering::Less,
            "<=" => c != Ordering::Greater,
            ">>" | ">" => c == Ordering::Greater,
            "<<" | "<" => c == Ordering::Less,
            "!=" => c != Ordering::Equal,
            _ => c == Ordering::Equal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(a: &str, b: &str, want: Ordering) {
        assert_eq!(compare(a, b), want, "{a} vs {b}");
        assert_eq!(compare(b, a), want.reverse(), "{b} vs {a}");
    }

    #[test]
    fn debian_ordering() {
        check("1.0", "1.0", Ordering::Equal);
        check("1.0", "1.1", Ordering::Less);
        check("1.10", "1.9", Ordering::Greater);
        check("1.0~rc1", "1.0", Ordering::Less);
        check("1:0.1", "2.0", Ordering::Greater);
        check("1.0-1", "1.0-2", Ordering::Less);
        check("1.0a", "1.0", Ordering::Greater);
        check("0.17-6+deb12u1", "0.17-6", Ordering::Greater);
    }

    #[test]
    fn constraints() {
        let c = Constraint::parse(">= 1.2").unwrap();
        assert!(c.matches("1.2"));
        assert!(c.matches("1.10"));
        assert!(!c.matches("1.1"));
        assert!(Constraint::parse("<< 2").unwrap().matches("1.9"));
        assert!(Constraint::parse("nonsense").is_err());
        assert!(Constraint::parse(">=").is_err());
    }
}
