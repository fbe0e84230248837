//! The JSON merges the fake API server performs: RFC 7386 merge patch, and the approximation
//! of server-side apply described in [`super`] (maps merge, everything else is replaced, and
//! what a manager applied before and no longer applies is removed).

use serde_json::{Map, Value};

/// Applies an RFC 7386 JSON merge patch to `target`: a `null` removes the key, a map merges
/// recursively, anything else replaces.
pub(super) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

/// Merges an applied configuration into the stored object: maps merge recursively, lists and
/// scalars of `applied` replace the stored ones. `applied` must have no `null`s
/// ([`without_nulls`]).
pub(super) fn apply(target: &mut Value, applied: &Value) {
    match (target, applied) {
        (Value::Object(target), Value::Object(applied)) => {
            for (key, value) in applied {
                match target.get_mut(key) {
                    Some(existing) if existing.is_object() && value.is_object() => apply(existing, value),
                    _ => {
                        target.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (target, applied) => *target = applied.clone(),
    }
}

/// Removes from `target` what `previous` (what the same manager applied last time) set and
/// `current` (what it applies now) does not: the manager gave those fields up, and
/// server-side apply removes the fields a manager stops applying. Only the manager's own
/// leaves go: a map it stops applying keeps the keys others wrote (and goes if none are
/// left). Lists are atomic, so the recursion stops at them.
pub(super) fn prune(target: &mut Value, previous: &Value, current: &Value) {
    let (Value::Object(target), Value::Object(previous)) = (target, previous) else { return };
    let nothing = Value::Object(Map::new());
    for (key, before) in previous {
        let now = current.get(key);
        if before.is_object() && now.is_none_or(Value::is_object) {
            let Some(stored) = target.get_mut(key) else { continue };
            prune(stored, before, now.unwrap_or(&nothing));
            if now.is_none() && stored.as_object().is_some_and(Map::is_empty) {
                target.remove(key);
            }
        } else if now.is_none() {
            target.remove(key);
        }
    }
}

/// `value` with every `null` map entry removed, recursively (in an applied configuration a
/// `null` says "not mine", as if the field were absent).
pub(super) fn without_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), without_nulls(v))).collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(without_nulls).collect()),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        // The example of RFC 7386 §3.
        let mut target = json!({"title": "Goodbye!", "author": {"givenName": "John", "familyName": "Doe"},
            "tags": ["example", "sample"], "content": "This will be unchanged"});
        let patch = json!({"title": "Hello!", "phoneNumber": "+01-123-456-7890",
            "author": {"familyName": null}, "tags": ["example"]});
        merge_patch(&mut target, &patch);
        assert_eq!(
            target,
            json!({"title": "Hello!", "author": {"givenName": "John"}, "tags": ["example"],
                "content": "This will be unchanged", "phoneNumber": "+01-123-456-7890"})
        );
        let mut scalar = json!("a");
        merge_patch(&mut scalar, &json!({"a": {"b": null, "c": 1}}));
        assert_eq!(scalar, json!({"a": {"c": 1}}));
    }

    #[test]
    fn apply_merges_maps_and_replaces_lists_and_scalars() {
        let mut target =
            json!({"metadata": {"labels": {"a": "1", "role": "primary"}}, "spec": {"ports": [1, 2], "x": 1}});
        apply(&mut target, &json!({"metadata": {"labels": {"a": "2"}}, "spec": {"ports": [3], "y": {"z": 1}}}));
        assert_eq!(
            target,
            json!({"metadata": {"labels": {"a": "2", "role": "primary"}}, "spec": {"ports": [3], "x": 1, "y": {"z": 1}}})
        );
    }

    #[test]
    fn prune_removes_only_what_the_manager_gave_up() {
        let mut target = json!({"metadata": {"labels": {"a": "1", "b": "2", "theirs": "x"}}, "spec": {"k": [1]}});
        let previous = json!({"metadata": {"labels": {"a": "1", "b": "2"}}, "spec": {"k": [1]}});
        let current = json!({"metadata": {"labels": {"a": "1"}}});
        prune(&mut target, &previous, &current);
        assert_eq!(target, json!({"metadata": {"labels": {"a": "1", "theirs": "x"}}}));
        // A map the manager stops applying altogether keeps what others wrote in it...
        let mut target = json!({"metadata": {"labels": {"a": "1", "theirs": "x"}, "annotations": {"h": "1"}}});
        prune(&mut target, &json!({"metadata": {"labels": {"a": "1"}, "annotations": {"h": "1"}}}), &json!({}));
        // ...and goes when nothing is left in it.
        assert_eq!(target, json!({"metadata": {"labels": {"theirs": "x"}}}));
    }

    #[test]
    fn nulls_are_dropped_from_maps_at_any_depth() {
        let value = json!({"a": null, "b": {"c": null, "d": [{"e": null, "f": 1}]}});
        assert_eq!(without_nulls(&value), json!({"b": {"d": [{"f": 1}]}}));
    }
}
