//! Conditional requests (RFC 9110 §13): the entity-tag lists of `If-Match` and
//! `If-None-Match`, whichever transport carried them (an edge hands over the header's
//! values). A todo's entity tag is its version.

/// An `If-Match` or `If-None-Match` header.
#[derive(Debug, Clone, PartialEq, Eq)]
enum EntityTags {
    /// `*`
    Any,
    /// `"3", W/"4"`: (weak, opaque tag).
    List(Vec<(bool, String)>),
}

fn entity_tags<V: AsRef<[u8]>>(values: &[V]) -> Option<EntityTags> {
    if values.is_empty() {
        return None;
    }
    let mut tags = Vec::new();
    for value in values {
        let Ok(value) = std::str::from_utf8(value.as_ref()) else {
            continue;
        };
        for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            if item == "*" {
                return Some(EntityTags::Any);
            }
            let (weak, rest) = match item.strip_prefix("W/") {
                Some(rest) => (true, rest),
                None => (false, item),
            };
            if let Some(opaque) = rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
                tags.push((weak, opaque.to_owned()));
            }
        }
    }
    Some(EntityTags::List(tags))
}

/// The versions `If-Match` allows (`None`: no header, or `*`, which only asks that the
/// todo exists, as every change does anyway). Strong comparison: weak tags never match,
/// so a header with none usable allows no version at all (412).
pub fn if_match_versions<V: AsRef<[u8]>>(values: &[V]) -> Option<Vec<i64>> {
    match entity_tags(values)? {
        EntityTags::Any => None,
        EntityTags::List(tags) => Some(
            tags.into_iter()
                .filter(|(weak, _)| !weak)
                .filter_map(|(_, opaque)| opaque.parse().ok())
                .collect(),
        ),
    }
}

/// True when `If-None-Match` matches the version (weak comparison), so a read answers
/// "not modified".
pub fn not_modified<V: AsRef<[u8]>>(values: &[V], version: i64) -> bool {
    match entity_tags(values) {
        None => false,
        Some(EntityTags::Any) => true,
        Some(EntityTags::List(tags)) => {
            let current = version.to_string();
            tags.iter().any(|(_, opaque)| *opaque == current)
        }
    }
}

/// The entity tag of a version: `"3"`.
pub fn etag(version: i64) -> String {
    format!("\"{version}\"")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn if_match_uses_strong_comparison_and_star_means_exists() {
        let none: [&str; 0] = [];
        assert_eq!(if_match_versions(&none), None);
        assert_eq!(if_match_versions(&["*"]), None);
        assert_eq!(if_match_versions(&["\"3\""]), Some(vec![3]));
        assert_eq!(if_match_versions(&["\"3\", \"5\""]), Some(vec![3, 5]));
        assert_eq!(if_match_versions(&["\"3\"", "\"7\""]), Some(vec![3, 7]));
        assert_eq!(if_match_versions(&["W/\"3\""]), Some(vec![]));
        assert_eq!(if_match_versions(&["garbage"]), Some(vec![]));
    }

    #[test]
    fn if_none_match_uses_weak_comparison() {
        assert!(not_modified(&["W/\"3\""], 3));
        assert!(not_modified(&["*"], 3));
        assert!(!not_modified(&["\"2\""], 3));
        let none: [&str; 0] = [];
        assert!(!not_modified(&none, 3));
    }
}
