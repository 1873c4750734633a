//! Event names and subscription patterns: dot-separated segments; `*` matches
//! exactly one segment, a trailing `>` one or more. A leaf: it imports nothing
//! of ours (channel documents and connections use it as well as events).

/// A parsed subscription pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    segments: Vec<Segment>,
    tail: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    Any,
}

impl Pattern {
    /// Parses `order.*`, `order.>`, `a.b.c`; refuses empty segments and a `>` that is not last.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() {
            return Err("an event pattern cannot be empty".into());
        }
        let parts: Vec<&str> = text.split('.').collect();
        let mut segments = Vec::with_capacity(parts.len());
        let mut tail = false;
        for (i, part) in parts.iter().enumerate() {
            match *part {
                "" => return Err(format!("{text:?} has an empty segment")),
                ">" if i + 1 == parts.len() => tail = true,
                ">" => return Err(format!("{text:?}: '>' may only be the last segment")),
                "*" => segments.push(Segment::Any),
                p if p.contains(['*', '>', ' ']) => {
                    return Err(format!("{text:?}: segment {p:?} mixes wildcards with text"))
                }
                p => segments.push(Segment::Literal(p.to_owned())),
            }
        }
        Ok(Self {
            text: text.to_owned(),
            segments,
            tail,
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// `true` when the event name `name` matches.
    pub fn matches(&self, name: &str) -> bool {
        let mut parts = name.split('.');
        for seg in &self.segments {
            match (seg, parts.next()) {
                (_, None) | (_, Some("")) => return false,
                (Segment::Any, Some(_)) => {}
                (Segment::Literal(l), Some(p)) if l == p => {}
                _ => return false,
            }
        }
        let mut rest = parts.peekable();
        if self.tail {
            rest.peek().is_some() && rest.all(|p| !p.is_empty())
        } else {
            rest.next().is_none()
        }
    }
}

impl Pattern {
    /// Every name `other` matches, this one matches too.
    pub fn covers(&self, other: &Pattern) -> bool {
        let (n, m) = (self.segments.len(), other.segments.len());
        let lengths_fit = if self.tail {
            // Names of `other` have at least m (+1 with its tail) segments.
            m + usize::from(other.tail) > n
        } else {
            !other.tail && m == n
        };
        lengths_fit
            && self
                .segments
                .iter()
                .enumerate()
                .all(|(i, seg)| match (seg, other.segments.get(i)) {
                    (Segment::Any, _) => true,
                    (Segment::Literal(a), Some(Segment::Literal(b))) => a == b,
                    _ => false,
                })
    }

    /// Some name matches both.
    pub fn overlaps(&self, other: &Pattern) -> bool {
        let (n, m) = (self.segments.len(), other.segments.len());
        let lengths_meet = match (self.tail, other.tail) {
            (false, false) => n == m,
            (true, false) => m > n,
            (false, true) => n > m,
            (true, true) => true,
        };
        lengths_meet
            && (0..n.max(m)).all(|i| match (self.segments.get(i), other.segments.get(i)) {
                (Some(Segment::Literal(a)), Some(Segment::Literal(b))) => a == b,
                _ => true,
            })
    }
}

/// The patterns of `patterns` that no other one covers, when those do not
/// overlap (a name matches at most one): what a NATS consumer accepts as its
/// subject filters. `None` when two of them overlap without either covering
/// the other.
pub fn disjoint(patterns: &[Pattern]) -> Option<Vec<&Pattern>> {
    let mut kept: Vec<&Pattern> = Vec::new();
    for (i, p) in patterns.iter().enumerate() {
        let covered = patterns
            .iter()
            .enumerate()
            .any(|(j, q)| j != i && q.covers(p) && (!p.covers(q) || j < i));
        if !covered {
            kept.push(p);
        }
    }
    for (i, a) in kept.iter().enumerate() {
        if kept[i + 1..].iter().any(|b| a.overlaps(b)) {
            return None;
        }
    }
    Some(kept)
}

/// `true` when `name` is a valid event name: non-empty dot-separated segments, no wildcards.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .split('.')
            .all(|p| !p.is_empty() && !p.contains(['*', '>']) && !p.contains(char::is_whitespace))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Pattern {
        Pattern::parse(text).unwrap()
    }

    #[test]
    fn covering_and_overlapping_patterns() {
        assert!(p("a.>").covers(&p("a.b")));
        assert!(p("a.>").covers(&p("a.*.c")));
        assert!(p("a.>").covers(&p("a.b.>")));
        assert!(p("a.*").covers(&p("a.b")));
        assert!(!p("a.*").covers(&p("a.>")));
        assert!(!p("*.>").covers(&p("a")));
        assert!(!p("a.*.>").covers(&p("a.>")));
        assert!(!p("a.b").covers(&p("a.c")));
        assert!(p("a.*.c").overlaps(&p("a.b.*")));
        assert!(p("a.>").overlaps(&p("*.b")));
        assert!(!p("a.*").overlaps(&p("b.*")));
        assert!(!p("a.*").overlaps(&p("a.*.c")));
        assert!(!p("a").overlaps(&p("a.>")));
        let texts = |v: Option<Vec<&Pattern>>| {
            v.map(|v| v.iter().map(|p| p.as_str().to_owned()).collect::<Vec<_>>())
        };
        let list = [
            p("order.*"),
            p("order.created"),
            p("invoice.>"),
            p("order.*"),
        ];
        assert_eq!(
            texts(disjoint(&list)),
            Some(vec!["order.*".into(), "invoice.>".into()])
        );
        assert_eq!(texts(disjoint(&[p("a.*.c"), p("a.b.*")])), None);
        assert_eq!(texts(disjoint(&[])), Some(vec![]));
    }

    fn m(p: &str, n: &str) -> bool {
        Pattern::parse(p).unwrap().matches(n)
    }

    #[test]
    fn literal_patterns_match_exactly() {
        assert!(m("order.created", "order.created"));
        assert!(!m("order.created", "order.created.late"));
        assert!(!m("order.created", "order"));
        assert!(!m("order", "orders"));
    }

    #[test]
    fn star_matches_exactly_one_segment() {
        assert!(m("order.*", "order.created"));
        assert!(!m("order.*", "order"));
        assert!(!m("order.*", "order.created.late"));
        assert!(m("*.created", "invoice.created"));
        assert!(m("*", "x"));
        assert!(!m("*", "x.y"));
        assert!(m("a.*.c", "a.b.c"));
    }

    #[test]
    fn trailing_gt_matches_one_or_more() {
        assert!(m("order.>", "order.created"));
        assert!(m("order.>", "order.created.late"));
        assert!(!m("order.>", "order"));
        assert!(m(">", "anything.at.all"));
        assert!(m("*.>", "a.b"));
        assert!(!m("*.>", "a"));
    }

    #[test]
    fn names_with_empty_segments_never_match() {
        assert!(!m("order.>", "order..x"));
        assert!(!m("*.x", ".x"));
        assert!(!m(">", ""));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for p in ["", "a..b", ".a", "a.", "a.>.b", "a*", "or>der", "> .x"] {
            assert!(Pattern::parse(p).is_err(), "{p}");
        }
        assert!(valid_name("order.created"));
        assert!(!valid_name("order.*"));
        assert!(!valid_name("order..x"));
    }
}
