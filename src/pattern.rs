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
