//! Package versions as the dbt Hub states them, and version ranges as `packages.yml` writes
//! them (`">=1.0.0"`, `["<2.0.0", ">=1.1.0"]`, `1.3.0`).
//!
//! dbt's rules differ from Cargo's and npm's in small ways that decide which version a project
//! gets, so they are kept here rather than borrowed: a bare version is exact, every package
//! that needs a package narrows one range, and `<2.0.0` keeps out `2.0.0-b1` (a pre-release of
//! the bound itself), which plain semver ordering would let in.

use std::cmp::Ordering;
use std::fmt;

/// A version: `major.minor.patch`, an optional pre-release and build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    pub major: u64,
    pub minor: u64,
    pub patch: u64,
    pub pre: Option<String>,
    pub build: Option<String>,
}

/// A requirement: a version with `>=`, `>`, `<`, `<=` or `=` (none means `=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub matcher: Matcher,
    pub version: Version,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Matcher {
    Exact,
    Greater,
    GreaterOrEqual,
    Less,
    LessOrEqual,
}

/// What every requirement on one package allows: a lower and an upper bound, either open.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Range {
    /// (version, inclusive)
    lower: Option<(Version, bool)>,
    upper: Option<(Version, bool)>,
}

impl Version {
    /// Reads `1.2.3`, `1.2.3-b1`, `1.2.3b1` or `1.2.3+build` (what dbt accepts).
    pub fn parse(text: &str) -> Option<Version> {
        let (core, build) = match text.split_once('+') {
            Some((c, b)) if !b.is_empty() && b.split('.').all(|p| p.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')) => {
                (c, Some(b.to_string()))
            }
            Some(_) => return None,
            None => (text, None),
        };
        let mut parts = core.splitn(3, '.');
        let major = number(parts.next()?)?;
        let minor = number(parts.next()?)?;
        let rest = parts.next()?;
        let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
        let patch = number(&rest[..digits])?;
        let pre = &rest[digits..];
        let pre = pre.strip_prefix('-').unwrap_or(pre);
        let pre = if pre.is_empty() {
            if rest[digits..].starts_with('-') {
                return None;
            }
            None
        } else if pre.split('.').all(valid_pre_part) {
            Some(pre.to_string())
        } else {
            return None;
        };
        Some(Version { major, minor, patch, pre, build })
    }

    pub fn is_prerelease(&self) -> bool {
        self.pre.is_some()
    }

    /// dbt's order: numbers first; a release above its pre-releases; pre-releases compared
    /// part by part, numbers below words.
    fn order(&self, other: &Version) -> Ordering {
        (self.major, self.minor, self.patch).cmp(&(other.major, other.minor, other.patch)).then_with(|| match (&self.pre, &other.pre) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(a), Some(b)) => compare_pre(a, b),
        })
    }

    fn same_release(&self, other: &Version) -> bool {
        (self.major, self.minor, self.patch) == (other.major, other.minor, other.patch)
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)?;
        if let Some(p) = &self.pre {
            write!(f, "-{p}")?;
        }
        if let Some(b) = &self.build {
            write!(f, "+{b}")?;
        }
        Ok(())
    }
}

impl Requirement {
    pub fn parse(text: &str) -> Option<Requirement> {
        let text = text.trim();
        let (matcher, rest) = [
            (">=", Matcher::GreaterOrEqual),
            ("<=", Matcher::LessOrEqual),
            (">", Matcher::Greater),
            ("<", Matcher::Less),
            ("=", Matcher::Exact),
        ]
        .iter()
        .find_map(|(p, m)| text.strip_prefix(p).map(|r| (*m, r)))
        .unwrap_or((Matcher::Exact, text));
        Some(Requirement { matcher, version: Version::parse(rest)? })
    }
}

impl fmt::Display for Requirement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = match self.matcher {
            Matcher::Exact => "",
            Matcher::Greater => ">",
            Matcher::GreaterOrEqual => ">=",
            Matcher::Less => "<",
            Matcher::LessOrEqual => "<=",
        };
        write!(f, "{m}{}", self.version)
    }
}

impl Range {
    /// The range every requirement allows, or `None` when no version could meet them all.
    pub fn of(requirements: &[Requirement]) -> Option<Range> {
        let mut range = Range::default();
        for r in requirements {
            let v = r.version.clone();
            match r.matcher {
                Matcher::Exact => {
                    range.narrow_lower(v.clone(), true);
                    range.narrow_upper(v, true);
                }
                Matcher::Greater => range.narrow_lower(v, false),
                Matcher::GreaterOrEqual => range.narrow_lower(v, true),
                Matcher::Less => range.narrow_upper(v, false),
                Matcher::LessOrEqual => range.narrow_upper(v, true),
            }
        }
        match (&range.lower, &range.upper) {
            (Some((lo, lo_in)), Some((hi, hi_in))) => match lo.order(hi) {
                Ordering::Greater => None,
                Ordering::Equal if !(*lo_in && *hi_in) => None,
                _ => Some(range),
            },
            _ => Some(range),
        }
    }

    /// Whether `v` lies in the range. A `<` bound on a release keeps out that release's own
    /// pre-releases, as dbt does.
    pub fn contains(&self, v: &Version) -> bool {
        let above = match &self.lower {
            None => true,
            Some((lo, inclusive)) => match v.order(lo) {
                Ordering::Greater => true,
                Ordering::Equal => *inclusive,
                Ordering::Less => false,
            },
        };
        let below = match &self.upper {
            None => true,
            Some((hi, inclusive)) => {
                if !inclusive && hi.pre.is_none() && v.pre.is_some() && v.same_release(hi) {
                    false
                } else {
                    match v.order(hi) {
                        Ordering::Less => true,
                        Ordering::Equal => *inclusive,
                        Ordering::Greater => false,
                    }
                }
            }
        };
        above && below
    }

    /// The highest of `available` in the range; pre-releases only when `prerelease`.
    pub fn best<'a>(&self, available: impl IntoIterator<Item = &'a str>, prerelease: bool) -> Option<&'a str> {
        available
            .into_iter()
            .filter_map(|text| Version::parse(text).map(|v| (text, v)))
            .filter(|(_, v)| (prerelease || !v.is_prerelease()) && self.contains(v))
            .max_by(|(_, a), (_, b)| a.order(b))
            .map(|(text, _)| text)
    }

    fn narrow_lower(&mut self, v: Version, inclusive: bool) {
        let tighter = match &self.lower {
            None => true,
            Some((cur, cur_in)) => match v.order(cur) {
                Ordering::Greater => true,
                Ordering::Equal => *cur_in && !inclusive,
                Ordering::Less => false,
            },
        };
        if tighter {
            self.lower = Some((v, inclusive));
        }
    }

    fn narrow_upper(&mut self, v: Version, inclusive: bool) {
        let tighter = match &self.upper {
            None => true,
            Some((cur, cur_in)) => match v.order(cur) {
                Ordering::Less => true,
                Ordering::Equal => *cur_in && !inclusive,
                Ordering::Greater => false,
            },
        };
        if tighter {
            self.upper = Some((v, inclusive));
        }
    }
}

impl fmt::Display for Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.lower, &self.upper) {
            (None, None) => write!(f, "any version"),
            (Some((lo, true)), Some((hi, true))) if lo == hi => write!(f, "{lo}"),
            (lo, hi) => {
                let mut parts = vec![];
                if let Some((v, inclusive)) = lo {
                    parts.push(format!("{}{v}", if *inclusive { ">=" } else { ">" }));
                }
                if let Some((v, inclusive)) = hi {
                    parts.push(format!("{}{v}", if *inclusive { "<=" } else { "<" }));
                }
                write!(f, "{}", parts.join(", "))
            }
        }
    }
}

fn number(text: &str) -> Option<u64> {
    if text.is_empty() || (text.len() > 1 && text.starts_with('0')) || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

fn valid_pre_part(part: &str) -> bool {
    !part.is_empty()
        && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        && (part.len() == 1 || !part.starts_with('0') || !part.bytes().all(|b| b.is_ascii_digit()))
}

fn compare_pre(a: &str, b: &str) -> Ordering {
    for (x, y) in a.split('.').zip(b.split('.')) {
        let o = match (x.parse::<u64>(), y.parse::<u64>()) {
            (Ok(m), Ok(n)) => m.cmp(&n),
            (Ok(_), Err(_)) => Ordering::Less,
            (Err(_), Ok(_)) => Ordering::Greater,
            (Err(_), Err(_)) => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
    a.len().cmp(&b.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(reqs: &[&str]) -> Option<Range> {
        Range::of(&reqs.iter().map(|r| Requirement::parse(r).unwrap()).collect::<Vec<_>>())
    }

    #[test]
    fn parses_what_dbt_parses() {
        assert_eq!(Version::parse("1.2.3").unwrap().to_string(), "1.2.3");
        assert_eq!(Version::parse("1.0.0b1").unwrap().pre.as_deref(), Some("b1"));
        assert_eq!(Version::parse("1.0.0-rc.2+meta").unwrap().to_string(), "1.0.0-rc.2+meta");
        for bad in ["1.2", "01.2.3", "1.2.3-", "v1.2.3", "1.2.3+", "x"] {
            assert!(Version::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(Requirement::parse(">=1.0.0").unwrap().matcher, Matcher::GreaterOrEqual);
        assert_eq!(Requirement::parse("1.3.0").unwrap().matcher, Matcher::Exact);
    }

    #[test]
    fn requirements_narrow_one_range() {
        let r = range(&[">=1.0.0", "<2.0.0", ">=1.1.0"]).unwrap();
        assert_eq!(r.to_string(), ">=1.1.0, <2.0.0");
        assert_eq!(r.best(["0.9.0", "1.0.0", "1.3.2", "1.10.0", "2.0.0"], false), Some("1.10.0"));
        assert!(range(&[">=1.0.0", "<1.0.0"]).is_none());
        assert!(range(&["1.0.0", "1.0.1"]).is_none());
        assert_eq!(range(&[">=1.0.0", "<=1.0.0"]).unwrap().to_string(), "1.0.0");
        assert_eq!(range(&["1.3.0", ">=1.0.0"]).unwrap().best(["1.2.0", "1.3.0", "1.4.0"], false), Some("1.3.0"));
        assert_eq!(range(&[">1.0.0"]).unwrap().best(["1.0.0"], false), None);
    }

    #[test]
    fn pre_releases_only_when_asked_and_never_of_an_upper_bound() {
        let r = range(&[">=1.0.0", "<2.0.0"]).unwrap();
        assert_eq!(r.best(["1.9.0", "1.10.0-b1"], false), Some("1.9.0"));
        assert_eq!(r.best(["1.9.0", "1.10.0-b1"], true), Some("1.10.0-b1"));
        assert_eq!(r.best(["1.9.0", "2.0.0-b1"], true), Some("1.9.0"), "<2.0.0 keeps out 2.0.0's pre-releases");
        assert_eq!(range(&["<=2.0.0"]).unwrap().best(["2.0.0-b1"], true), Some("2.0.0-b1"));
        let v = |s| Version::parse(s).unwrap();
        assert_eq!(v("1.0.0-alpha.1").order(&v("1.0.0-alpha.beta")), Ordering::Less);
        assert_eq!(v("1.0.0-rc.2").order(&v("1.0.0-rc.10")), Ordering::Less);
        assert_eq!(v("1.0.0").order(&v("1.0.0-rc.1")), Ordering::Greater);
    }
}
