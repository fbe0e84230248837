//! What a list request selects: label selectors (the full set-based grammar of
//! `labels.Parse`: `k=v`, `k==v`, `k!=v`, `k`, `!k`, `k in (a,b)`, `k notin (a,b)`, joined by
//! commas), field selectors (`path=value`, `path==value`, `path!=value` on any dotted path of
//! the object, which is more than the real server allows), and the decoding of a query string.

use serde_json::Value;

/// One requirement of a label selector.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Requirement {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl Requirement {
    fn matches(&self, labels: Option<&serde_json::Map<String, Value>>) -> bool {
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        match self {
            Self::Equals(k, v) => label(k) == Some(v.as_str()),
            // As in Kubernetes: `k!=v` and `k notin (...)` also select objects without `k`.
            Self::NotEquals(k, v) => label(k) != Some(v.as_str()),
            Self::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Self::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            Self::Exists(k) => label(k).is_some(),
            Self::NotExists(k) => label(k).is_none(),
        }
    }
}

/// A parsed `labelSelector`; the empty selector selects everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct LabelSelector(Vec<Requirement>);

impl LabelSelector {
    /// Parses a selector, or says what is wrong with it (a 400 for the client).
    pub(super) fn parse(text: &str) -> Result<Self, String> {
        split_terms(text)?
            .into_iter()
            .map(|term| parse_term(&term).map_err(|why| format!("unable to parse requirement {term:?}: {why}")))
            .collect::<Result<_, _>>()
            .map(Self)
    }

    /// Whether `object`'s `metadata.labels` satisfy every requirement.
    pub(super) fn matches(&self, object: &Value) -> bool {
        let labels = object.pointer("/metadata/labels").and_then(Value::as_object);
        self.0.iter().all(|r| r.matches(labels))
    }
}

/// The comma-separated terms of a selector; commas inside `( )` belong to a set.
fn split_terms(text: &str) -> Result<Vec<String>, String> {
    let mut terms = Vec::new();
    let mut current = String::new();
    let mut depth = 0_u32;
    for c in text.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth = depth.checked_sub(1).ok_or_else(|| format!("unbalanced ')' in {text:?}"))?,
            ',' if depth == 0 => {
                terms.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    if depth != 0 {
        return Err(format!("unbalanced '(' in {text:?}"));
    }
    terms.push(current);
    let terms: Vec<String> = terms.into_iter().map(|t| t.trim().to_owned()).collect();
    if terms.len() == 1 && terms[0].is_empty() {
        return Ok(Vec::new());
    }
    Ok(terms)
}

fn parse_term(term: &str) -> Result<Requirement, String> {
    if let Some(key) = term.strip_prefix('!') {
        return Ok(Requirement::NotExists(label_key(key)?));
    }
    for (word, set_op) in [(" notin ", true), (" in ", false)] {
        if let Some((key, set)) = term.split_once(word) {
            let values = parse_set(set)?;
            let key = label_key(key)?;
            return Ok(if set_op { Requirement::NotIn(key, values) } else { Requirement::In(key, values) });
        }
    }
    if let Some((key, value)) = term.split_once("!=") {
        return Ok(Requirement::NotEquals(label_key(key)?, label_value(value)?));
    }
    if let Some((key, value)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(Requirement::Equals(label_key(key)?, label_value(value)?));
    }
    Ok(Requirement::Exists(label_key(term)?))
}

fn parse_set(set: &str) -> Result<Vec<String>, String> {
    let inner = set
        .trim()
        .strip_prefix('(')
        .and_then(|s| s.strip_suffix(')'))
        .ok_or_else(|| format!("expected a set in parentheses, found {set:?}"))?;
    inner.split(',').map(label_value).collect()
}

fn label_key(key: &str) -> Result<String, String> {
    let key = key.trim();
    let valid = !key.is_empty()
        && key.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/'))
        && key.matches('/').count() <= 1;
    if valid { Ok(key.to_owned()) } else { Err(format!("invalid label key {key:?}")) }
}

fn label_value(value: &str) -> Result<String, String> {
    let value = value.trim();
    if value.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        Ok(value.to_owned())
    } else {
        Err(format!("invalid label value {value:?}"))
    }
}

/// A parsed `fieldSelector`: `(dotted path, value, equal?)` terms, all of which must hold. A
/// missing field compares as the empty string, as `spec.nodeName=` selects unscheduled pods.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct FieldSelector(Vec<(String, String, bool)>);

impl FieldSelector {
    /// Parses a selector, or says what is wrong with it (a 400 for the client).
    pub(super) fn parse(text: &str) -> Result<Self, String> {
        let mut terms = Vec::new();
        for term in text.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            let (path, value, equal) = if let Some((p, v)) = term.split_once("!=") {
                (p, v, false)
            } else if let Some((p, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
                (p, v, true)
            } else {
                return Err(format!("invalid field selector term {term:?}: expected path=value or path!=value"));
            };
            terms.push((path.trim().to_owned(), value.trim().to_owned(), equal));
        }
        Ok(Self(terms))
    }

    /// Whether every term holds for `object`.
    pub(super) fn matches(&self, object: &Value) -> bool {
        self.0.iter().all(|(path, value, equal)| {
            let pointer = format!("/{}", path.replace('.', "/"));
            let found = match object.pointer(&pointer) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            };
            (found == *value) == *equal
        })
    }
}

/// The `key=value` pairs of a query string, percent-decoded (`+` is a space), in order.
pub(super) fn decode_query(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key), percent_decode(value))
        })
        .collect()
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        i += 3;
                        continue;
                    }
                    None => out.push(b'%'),
                }
            }
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn labelled(labels: Value) -> Value {
        json!({"metadata": {"name": "x", "labels": labels}})
    }

    #[test]
    fn label_selectors_follow_the_kubernetes_grammar() {
        let pod = labelled(json!({"app": "pg", "role": "primary", "tier": "db"}));
        let cases = [
            ("", true),
            ("app=pg", true),
            ("app==pg", true),
            ("app=other", false),
            ("app!=other", true),
            ("missing!=x", true),
            ("app", true),
            ("missing", false),
            ("!missing", true),
            ("!app", false),
            ("role in (primary, replica)", true),
            ("role in (replica)", false),
            ("role notin (replica)", true),
            ("missing notin (a)", true),
            ("app=pg,role in (primary,replica),!missing", true),
            ("app=pg, tier=web", false),
        ];
        for (selector, expected) in cases {
            let parsed = LabelSelector::parse(selector).expect(selector);
            assert_eq!(parsed.matches(&pod), expected, "selector {selector:?}");
        }
        assert!(LabelSelector::parse("app=pg").expect("valid").matches(&labelled(json!({"app": "pg"}))));
        assert!(!LabelSelector::parse("app").expect("valid").matches(&json!({"metadata": {"name": "x"}})));
    }

    #[test]
    fn malformed_label_selectors_are_refused() {
        for selector in ["a in (b", "a)", "=v", "a=b c", "a in b", "a b"] {
            assert!(LabelSelector::parse(selector).is_err(), "{selector:?} was accepted");
        }
    }

    #[test]
    fn field_selectors_compare_dotted_paths() {
        let pod = json!({"metadata": {"name": "pg-1", "namespace": "db"}, "status": {"phase": "Running"}});
        let holds = |s: &str| FieldSelector::parse(s).expect(s).matches(&pod);
        assert!(holds("metadata.name=pg-1"));
        assert!(holds("metadata.name==pg-1,metadata.namespace=db"));
        assert!(!holds("metadata.name!=pg-1"));
        assert!(holds("status.phase=Running"));
        assert!(holds("spec.nodeName="));
        assert!(FieldSelector::parse("metadata.name").is_err());
    }

    #[test]
    fn queries_are_percent_decoded() {
        assert_eq!(
            decode_query("&labelSelector=pgwarden.io%2Fcluster%3Dpg%2Crole+in+%28a%29&force=true&x"),
            vec![
                ("labelSelector".to_owned(), "pgwarden.io/cluster=pg,role in (a)".to_owned()),
                ("force".to_owned(), "true".to_owned()),
                ("x".to_owned(), String::new()),
            ]
        );
        assert_eq!(decode_query("a=%zz%4"), vec![("a".to_owned(), "%zz%4".to_owned())]);
    }
}
