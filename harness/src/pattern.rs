//! The structural matcher: compiles vector patterns (literals, variables,
//! `$`-matchers) and matches them against received JSON, producing captures
//! on success and a located, readable mismatch on failure.

use crate::json::{json_eq, short};
use crate::vars::{parse_str, reserved_capture, StrValue, VarRef, Variables};
use regex::Regex;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;

/// A compiled pattern. Keeps its JSON source so diffs can show what the
/// vector said.
#[derive(Clone, Debug)]
pub struct Pattern {
    node: Node,
}

#[derive(Clone, Debug)]
struct Node {
    kind: Kind,
    src: Value,
}

#[derive(Clone, Debug)]
enum Kind {
    Literal(Value),
    Var(VarRef),
    Object(Vec<(String, Node)>),
    Array(Vec<Node>),
    Matchers(Vec<Matcher>),
}

#[derive(Clone, Debug)]
enum Matcher {
    Any,
    Type(JsonType),
    Regex(Regex),
    Capture(String),
    Not(Box<Node>),
    OneOf(Vec<Node>),
    Contains(Vec<Node>),
    /// An object matching the plain object pattern, with no other keys.
    Exact(Box<Node>),
    Absent,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum JsonType {
    String,
    Number,
    Integer,
    Boolean,
    Null,
    Object,
    Array,
}

impl JsonType {
    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "string" => JsonType::String,
            "number" => JsonType::Number,
            "integer" => JsonType::Integer,
            "boolean" => JsonType::Boolean,
            "null" => JsonType::Null,
            "object" => JsonType::Object,
            "array" => JsonType::Array,
            _ => return None,
        })
    }

    fn holds(self, v: &Value) -> bool {
        match self {
            JsonType::String => v.is_string(),
            JsonType::Number => v.is_number(),
            JsonType::Integer => match v {
                Value::Number(n) => {
                    n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
                }
                _ => false,
            },
            JsonType::Boolean => v.is_boolean(),
            JsonType::Null => v.is_null(),
            JsonType::Object => v.is_object(),
            JsonType::Array => v.is_array(),
        }
    }
}

/// A problem found while compiling a pattern: a JSON pointer relative to
/// the pattern, and a message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CompileError {
    /// JSON pointer inside the pattern (`""` for the pattern itself).
    pub pointer: String,
    /// What is wrong.
    pub message: String,
}

/// Why a value did not match: where, what was expected and what was there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// Location inside the actual value, e.g. `.nameplates[0].id` (empty
    /// for the value itself).
    pub path: String,
    /// The expectation, rendered from the vector (variables resolved).
    pub expected: String,
    /// What was found (`<missing>` for an absent key).
    pub actual: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = if self.path.is_empty() {
            "the value".to_owned()
        } else {
            self.path.clone()
        };
        write!(
            f,
            "at {at}: expected {}, got {}",
            self.expected, self.actual
        )
    }
}

fn pointer_escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

impl Pattern {
    /// Compiles a pattern, reporting every problem (bad variable syntax,
    /// unknown `$`-matcher, invalid regex, mixed matcher/plain keys).
    pub fn compile(src: &Value) -> Result<Pattern, Vec<CompileError>> {
        let mut errors = Vec::new();
        let node = compile_node(src, "", &mut errors);
        if errors.is_empty() {
            Ok(Pattern { node })
        } else {
            Err(errors)
        }
    }

    /// A pattern built from a value without interpreting any `$` syntax:
    /// objects still match by subset, arrays element by element, scalars
    /// by equality. Used for the harness's own expectations (sync, bind).
    pub fn literal(value: Value) -> Pattern {
        fn node(v: &Value) -> Node {
            let kind = match v {
                Value::Object(map) => {
                    Kind::Object(map.iter().map(|(k, v)| (k.clone(), node(v))).collect())
                }
                Value::Array(items) => Kind::Array(items.iter().map(node).collect()),
                other => Kind::Literal(other.clone()),
            };
            Node {
                kind,
                src: v.clone(),
            }
        }
        Pattern { node: node(&value) }
    }

    /// The JSON the pattern was compiled from.
    pub fn source(&self) -> &Value {
        &self.node.src
    }

    /// Matches a value (`None` = an absent object key). On success returns
    /// the captures the match binds; `vars` is not modified.
    pub fn matches(
        &self,
        actual: Option<&Value>,
        vars: &Variables,
    ) -> Result<BTreeMap<String, Value>, Mismatch> {
        let mut caps = BTreeMap::new();
        match_node(&self.node, actual, vars, &mut caps, "")?;
        Ok(caps)
    }

    /// Names this pattern can capture (for the loader's order checks).
    pub fn capture_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        walk(&self.node, &mut |k| {
            if let Kind::Matchers(ms) = k {
                for m in ms {
                    if let Matcher::Capture(n) = m {
                        out.push(n.clone());
                    }
                }
            }
        });
        out
    }

    /// Variables this pattern refers to (for the loader's order checks).
    pub fn references(&self) -> Vec<VarRef> {
        let mut out = Vec::new();
        walk(&self.node, &mut |k| {
            if let Kind::Var(v) = k {
                out.push(v.clone());
            }
        });
        out
    }
}

fn walk(node: &Node, f: &mut dyn FnMut(&Kind)) {
    f(&node.kind);
    match &node.kind {
        Kind::Literal(_) | Kind::Var(_) => {}
        Kind::Object(fields) => fields.iter().for_each(|(_, n)| walk(n, f)),
        Kind::Array(items) => items.iter().for_each(|n| walk(n, f)),
        Kind::Matchers(ms) => {
            for m in ms {
                match m {
                    Matcher::Not(n) | Matcher::Exact(n) => walk(n, f),
                    Matcher::OneOf(ns) | Matcher::Contains(ns) => {
                        ns.iter().for_each(|n| walk(n, f))
                    }
                    _ => {}
                }
            }
        }
    }
}

fn is_matcher_object(map: &serde_json::Map<String, Value>) -> bool {
    !map.is_empty() && map.keys().all(|k| k.starts_with('$'))
}

fn compile_node(src: &Value, ptr: &str, errors: &mut Vec<CompileError>) -> Node {
    let mut err = |pointer: String, message: String| errors.push(CompileError { pointer, message });
    let kind = match src {
        Value::String(s) => match parse_str(s) {
            Ok(StrValue::Literal(l)) => Kind::Literal(Value::String(l)),
            Ok(StrValue::Var(v)) => Kind::Var(v),
            Err(e) => {
                err(ptr.to_owned(), e);
                Kind::Literal(Value::Null)
            }
        },
        Value::Array(items) => Kind::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| compile_node(v, &format!("{ptr}/{i}"), errors))
                .collect(),
        ),
        Value::Object(map) if is_matcher_object(map) => {
            let mut ms = Vec::new();
            for (key, val) in map {
                let p = format!("{ptr}/{}", pointer_escape(key));
                match compile_matcher(key, val, &p, errors) {
                    Ok(m) => ms.push(m),
                    Err(message) => errors.push(CompileError {
                        pointer: p,
                        message,
                    }),
                }
            }
            if ms.iter().any(|m| matches!(m, Matcher::Absent)) && ms.len() > 1 {
                errors.push(CompileError {
                    pointer: ptr.to_owned(),
                    message: "\"$absent\" cannot be combined with other matchers".to_owned(),
                });
            }
            Kind::Matchers(ms)
        }
        Value::Object(map) => {
            let mut fields = Vec::new();
            for (key, val) in map {
                let p = format!("{ptr}/{}", pointer_escape(key));
                if key.starts_with('$') {
                    errors.push(CompileError {
                        pointer: p.clone(),
                        message: format!(
                            "{key:?}: an object is either a matcher (all keys start with '$') or a plain object pattern (no key starts with '$')"
                        ),
                    });
                }
                fields.push((key.clone(), compile_node(val, &p, errors)));
            }
            Kind::Object(fields)
        }
        other => Kind::Literal(other.clone()),
    };
    Node {
        kind,
        src: src.clone(),
    }
}

fn compile_matcher(
    key: &str,
    val: &Value,
    ptr: &str,
    errors: &mut Vec<CompileError>,
) -> Result<Matcher, String> {
    let list = |v: &Value, errors: &mut Vec<CompileError>| -> Result<Vec<Node>, String> {
        let items = v
            .as_array()
            .ok_or_else(|| format!("{key} takes an array of patterns"))?;
        Ok(items
            .iter()
            .enumerate()
            .map(|(i, v)| compile_node(v, &format!("{ptr}/{i}"), errors))
            .collect())
    };
    match key {
        "$any" if val == &Value::Bool(true) => Ok(Matcher::Any),
        "$any" => Err("\"$any\" takes true".to_owned()),
        "$absent" if val == &Value::Bool(true) => Ok(Matcher::Absent),
        "$absent" => Err("\"$absent\" takes true".to_owned()),
        "$type" => val
            .as_str()
            .and_then(JsonType::parse)
            .map(Matcher::Type)
            .ok_or_else(|| {
                "\"$type\" takes one of string, number, integer, boolean, null, object, array"
                    .to_owned()
            }),
        "$regex" => {
            let text = val.as_str().ok_or("\"$regex\" takes a string")?;
            Regex::new(text)
                .map(Matcher::Regex)
                .map_err(|e| format!("invalid regex: {e}"))
        }
        "$capture" => {
            let name = val.as_str().ok_or("\"$capture\" takes a name")?;
            if !crate::vars::valid_name(name) {
                Err(format!("invalid capture name {name:?}"))
            } else if reserved_capture(name) {
                Err(format!("{name:?} is reserved (it would shadow ${name})"))
            } else {
                Ok(Matcher::Capture(name.to_owned()))
            }
        }
        "$not" => Ok(Matcher::Not(Box::new(compile_node(val, ptr, errors)))),
        "$one_of" => {
            let nodes = list(val, errors)?;
            if nodes.is_empty() {
                Err("\"$one_of\" needs at least one pattern".to_owned())
            } else {
                Ok(Matcher::OneOf(nodes))
            }
        }
        "$contains" => Ok(Matcher::Contains(list(val, errors)?)),
        "$exact" => match val {
            Value::Object(map) if !is_matcher_object(map) => {
                Ok(Matcher::Exact(Box::new(compile_node(val, ptr, errors))))
            }
            _ => Err(
                "\"$exact\" takes an object pattern with plain keys (e.g. {\"$exact\": {\"bits\": 8}}; {} for an empty object)"
                    .to_owned(),
            ),
        },
        other => Err(format!(
            "unknown matcher {other:?} (known: $any, $type, $regex, $capture, $not, $one_of, $contains, $exact, $absent; write \"$${}\" as a key? keys are not interpolated)",
            other.trim_start_matches('$')
        )),
    }
}

fn describe_actual(actual: Option<&Value>) -> String {
    match actual {
        None => "<missing>".to_owned(),
        Some(v) => short(v, 200),
    }
}

fn describe_expected(node: &Node, vars: &Variables) -> String {
    match &node.kind {
        Kind::Var(v) => match vars.get(v) {
            Some(val) => format!("{} (= {})", v, short(&val, 120)),
            None => format!("{v} (unbound)"),
        },
        _ => short(&node.src, 200),
    }
}

fn child(path: &str, key: &str) -> String {
    if key
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        && !key.is_empty()
    {
        format!("{path}.{key}")
    } else {
        format!("{path}[{key:?}]")
    }
}

fn match_node(
    node: &Node,
    actual: Option<&Value>,
    vars: &Variables,
    caps: &mut BTreeMap<String, Value>,
    path: &str,
) -> Result<(), Mismatch> {
    let fail = |expected: String| Mismatch {
        path: path.to_owned(),
        expected,
        actual: describe_actual(actual),
    };
    match &node.kind {
        Kind::Matchers(ms) => {
            for m in ms {
                match_matcher(m, node, actual, vars, caps, path)?;
            }
            Ok(())
        }
        _ if actual.is_none() => Err(fail(describe_expected(node, vars))),
        Kind::Literal(lit) => match actual {
            Some(v) if json_eq(lit, v) => Ok(()),
            _ => Err(fail(describe_expected(node, vars))),
        },
        Kind::Var(var) => {
            let value = match var {
                VarRef::Capture(n) => caps.get(n).cloned().or_else(|| vars.get(var)),
                _ => vars.get(var),
            };
            match (value, actual) {
                (Some(want), Some(v)) if json_eq(&want, v) => Ok(()),
                _ => Err(fail(describe_expected(node, vars))),
            }
        }
        Kind::Object(fields) => {
            let Some(Value::Object(map)) = actual else {
                return Err(fail("an object".to_owned()));
            };
            for (key, sub) in fields {
                match_node(sub, map.get(key), vars, caps, &child(path, key))?;
            }
            Ok(())
        }
        Kind::Array(items) => {
            let Some(Value::Array(arr)) = actual else {
                return Err(fail(format!("an array of {} element(s)", items.len())));
            };
            if arr.len() != items.len() {
                return Err(fail(format!(
                    "an array of {} element(s) ({})",
                    items.len(),
                    short(&node.src, 160)
                )));
            }
            for (i, (sub, v)) in items.iter().zip(arr).enumerate() {
                match_node(sub, Some(v), vars, caps, &format!("{path}[{i}]"))?;
            }
            Ok(())
        }
    }
}

fn match_matcher(
    m: &Matcher,
    node: &Node,
    actual: Option<&Value>,
    vars: &Variables,
    caps: &mut BTreeMap<String, Value>,
    path: &str,
) -> Result<(), Mismatch> {
    let fail = |expected: String| Mismatch {
        path: path.to_owned(),
        expected,
        actual: describe_actual(actual),
    };
    // These three also apply to an absent key.
    match m {
        Matcher::Absent => {
            return match actual {
                None => Ok(()),
                Some(_) => Err(fail("the key to be absent".to_owned())),
            }
        }
        Matcher::Not(sub) => {
            let mut scratch = caps.clone();
            return match match_node(sub, actual, vars, &mut scratch, path) {
                Ok(()) => Err(fail(format!(
                    "anything but {}",
                    describe_expected(sub, vars)
                ))),
                Err(_) => Ok(()),
            };
        }
        Matcher::OneOf(alts) => {
            let mut reasons = Vec::new();
            for alt in alts {
                let mut trial = caps.clone();
                match match_node(alt, actual, vars, &mut trial, path) {
                    Ok(()) => {
                        *caps = trial;
                        return Ok(());
                    }
                    Err(e) => reasons.push(describe_expected(alt, vars) + &format!(" [{e}]")),
                }
            }
            return Err(fail(format!("one of: {}", reasons.join(" | "))));
        }
        _ => {}
    }
    let Some(value) = actual else {
        return Err(fail(short(&node.src, 200)));
    };
    match m {
        Matcher::Absent | Matcher::Not(_) | Matcher::OneOf(_) | Matcher::Any => Ok(()),
        Matcher::Exact(sub) => {
            let (Value::Object(map), Kind::Object(fields)) = (value, &sub.kind) else {
                return Err(fail("an object".to_owned()));
            };
            match_node(sub, actual, vars, caps, path)?;
            match map
                .keys()
                .find(|k| !fields.iter().any(|(name, _)| name == *k))
            {
                None => Ok(()),
                Some(extra) => {
                    let allowed: Vec<&str> = fields.iter().map(|(k, _)| k.as_str()).collect();
                    Err(Mismatch {
                        path: child(path, extra),
                        expected: if allowed.is_empty() {
                            "no key ($exact: an empty object)".to_owned()
                        } else {
                            format!("no such key ($exact: only {})", allowed.join(", "))
                        },
                        actual: describe_actual(map.get(extra)),
                    })
                }
            }
        }
        Matcher::Type(t) => {
            if t.holds(value) {
                Ok(())
            } else {
                Err(fail(format!("a value of type {t:?}").to_lowercase()))
            }
        }
        Matcher::Regex(re) => match value {
            Value::String(s) if re.is_match(s) => Ok(()),
            _ => Err(fail(format!("a string matching /{}/", re.as_str()))),
        },
        Matcher::Capture(name) => {
            let bound = caps
                .get(name)
                .cloned()
                .or_else(|| vars.get(&VarRef::Capture(name.clone())));
            match bound {
                Some(prev) if !json_eq(&prev, value) => Err(fail(format!(
                    "the value captured earlier as {name} ({})",
                    short(&prev, 120)
                ))),
                Some(_) => Ok(()),
                None => {
                    caps.insert(name.clone(), value.clone());
                    Ok(())
                }
            }
        }
        Matcher::Contains(wanted) => {
            let Value::Array(arr) = value else {
                return Err(fail("an array".to_owned()));
            };
            let mut used = vec![false; arr.len()];
            let mut trial = caps.clone();
            if assign(wanted, arr, &mut used, vars, &mut trial, path) {
                *caps = trial;
                Ok(())
            } else {
                Err(fail(format!(
                    "an array containing distinct elements matching {}",
                    short(&node.src, 200)
                )))
            }
        }
    }
}

/// Backtracking assignment of `$contains` patterns to distinct elements.
fn assign(
    wanted: &[Node],
    arr: &[Value],
    used: &mut [bool],
    vars: &Variables,
    caps: &mut BTreeMap<String, Value>,
    path: &str,
) -> bool {
    let Some((first, rest)) = wanted.split_first() else {
        return true;
    };
    for i in 0..arr.len() {
        if used[i] {
            continue;
        }
        let mut trial = caps.clone();
        if match_node(
            first,
            Some(&arr[i]),
            vars,
            &mut trial,
            &format!("{path}[{i}]"),
        )
        .is_ok()
        {
            used[i] = true;
            if assign(rest, arr, used, vars, &mut trial, path) {
                *caps = trial;
                return true;
            }
            used[i] = false;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn pat(v: Value) -> Pattern {
        Pattern::compile(&v).expect("pattern compiles")
    }

    fn vars() -> Variables {
        Variables::fresh(&[String::new()], &["a".to_owned()])
    }

    #[test]
    fn objects_match_by_subset_and_ignore_extra_keys() {
        let p = pat(json!({"type": "ack", "id": null}));
        let v = vars();
        assert!(p
            .matches(
                Some(&json!({"id": null, "type": "ack", "server_tx": 1.5})),
                &v
            )
            .is_ok());
        let e = p
            .matches(Some(&json!({"type": "ack"})), &v)
            .expect_err("id missing");
        assert_eq!(e.path, ".id");
        assert_eq!(e.actual, "<missing>");
        let e = p
            .matches(Some(&json!({"type": "error", "id": null})), &v)
            .expect_err("type differs");
        assert_eq!(e.to_string(), "at .type: expected \"ack\", got \"error\"");
    }

    #[test]
    fn numbers_compare_by_value_and_arrays_by_length() {
        let v = vars();
        assert!(pat(json!({"pong": 1}))
            .matches(Some(&json!({"pong": 1.0})), &v)
            .is_ok());
        assert!(pat(json!([1, 2]))
            .matches(Some(&json!([1, 2, 3])), &v)
            .is_err());
        assert!(pat(json!([1, {"a": "b"}]))
            .matches(Some(&json!([1, {"a": "b", "c": 1}])), &v)
            .is_ok());
    }

    #[test]
    fn matchers() {
        let v = vars();
        let ok = |p: Value, a: Value| pat(p).matches(Some(&a), &v).is_ok();
        assert!(ok(json!({"$any": true}), json!(null)));
        assert!(ok(json!({"$type": "integer"}), json!(3.0)));
        assert!(!ok(json!({"$type": "integer"}), json!(3.5)));
        assert!(ok(json!({"$type": "number"}), json!(3.5)));
        assert!(ok(json!({"$regex": "^[0-9]+$"}), json!("123")));
        assert!(!ok(json!({"$regex": "^[0-9]+$"}), json!(123)));
        assert!(ok(json!({"$type": "string", "$regex": "^a"}), json!("ab")));
        assert!(ok(json!({"$not": "x"}), json!("y")));
        assert!(!ok(json!({"$not": "x"}), json!("x")));
        assert!(ok(json!({"$one_of": ["a", "b"]}), json!("b")));
        assert!(!ok(json!({"$one_of": ["a", "b"]}), json!("c")));
        assert!(ok(
            json!({"$contains": [{"id": "2"}, {"id": "1"}]}),
            json!([{"id": "1"}, {"id": "3"}, {"id": "2"}])
        ));
        // Distinct elements: one element cannot satisfy two patterns.
        assert!(!ok(
            json!({"$contains": [{"id": "1"}, {"id": "1"}]}),
            json!([{"id": "1"}])
        ));
    }

    #[test]
    fn exact_objects_have_no_other_keys() {
        let v = vars();
        let p = pat(
            json!({"hashcash": {"$exact": {"bits": 8, "resource": {"$capture": "res", "$type": "string"}}}}),
        );
        let caps = p
            .matches(
                Some(&json!({"hashcash": {"resource": "r", "bits": 8}, "none": {}})),
                &v,
            )
            .expect("same keys in another order; other keys outside $exact");
        assert_eq!(caps.get("res"), Some(&json!("r")));
        let e = p
            .matches(
                Some(&json!({"hashcash": {"bits": 8, "resource": "r", "x": 1}})),
                &v,
            )
            .expect_err("an extra key");
        assert_eq!(
            e.to_string(),
            "at .hashcash.x: expected no such key ($exact: only bits, resource), got 1"
        );
        let e = p
            .matches(Some(&json!({"hashcash": {"bits": 8}})), &v)
            .expect_err("a missing key");
        assert_eq!(e.path, ".hashcash.resource");
        assert!(p
            .matches(Some(&json!({"hashcash": {"bits": 9, "resource": "r"}})), &v)
            .is_err());
        assert!(p.matches(Some(&json!({"hashcash": [8]})), &v).is_err());
        assert!(p.matches(Some(&json!({})), &v).is_err());
        // the empty object; only the top level is exact
        let empty = pat(json!({"$exact": {}}));
        assert!(empty.matches(Some(&json!({})), &v).is_ok());
        assert!(empty.matches(Some(&json!({"a": 1})), &v).is_err());
        let outer = pat(json!({"$exact": {"a": {"b": 1}}}));
        assert!(outer
            .matches(Some(&json!({"a": {"b": 1, "c": 2}})), &v)
            .is_ok());
        // keys the pattern names as absent are allowed to be missing
        let p = pat(json!({"$exact": {"id": "7", "name": {"$absent": true}}}));
        assert!(p.matches(Some(&json!({"id": "7"})), &v).is_ok());
        assert!(p
            .matches(Some(&json!({"id": "7", "name": "x"})), &v)
            .is_err());
        // combines with other matchers, and inside arrays
        let p = pat(json!({"$exact": {"id": "7"}, "$capture": "entry"}));
        let caps = p.matches(Some(&json!({"id": "7"})), &v).expect("match");
        assert_eq!(caps.get("entry"), Some(&json!({"id": "7"})));
        let p = pat(json!([{"$exact": {"id": "7"}}]));
        assert!(p.matches(Some(&json!([{"id": "7", "x": 0}])), &v).is_err());
        assert_eq!(
            pat(json!({"$exact": {"a": "$x"}})).references(),
            vec![VarRef::Capture("x".into())]
        );
        for bad in [
            json!({"$exact": true}),
            json!({"$exact": {"$any": true}}),
            json!({"$exact": [1]}),
        ] {
            let errs = Pattern::compile(&bad).expect_err("not an object pattern");
            assert_eq!(errs[0].pointer, "/$exact");
        }
    }

    #[test]
    fn absent_and_present_keys() {
        let v = vars();
        let p = pat(json!({"id": {"$absent": true}}));
        assert!(p.matches(Some(&json!({"type": "x"})), &v).is_ok());
        assert!(p.matches(Some(&json!({"id": null})), &v).is_err());
        let p = pat(json!({"id": {"$any": true}}));
        assert!(p.matches(Some(&json!({"type": "x"})), &v).is_err());
        let p = pat(json!({"id": {"$one_of": [{"$absent": true}, null]}}));
        assert!(p.matches(Some(&json!({})), &v).is_ok());
        assert!(p.matches(Some(&json!({"id": null})), &v).is_ok());
        assert!(p.matches(Some(&json!({"id": 1})), &v).is_err());
    }

    #[test]
    fn captures_bind_and_must_agree() {
        let mut v = vars();
        let p = pat(json!({"nameplate": {"$capture": "np", "$regex": "^[0-9]+$"}}));
        let caps = p
            .matches(Some(&json!({"nameplate": "7"})), &v)
            .expect("match");
        assert_eq!(caps.get("np"), Some(&json!("7")));
        v.bind(caps);
        // Already bound: must equal.
        assert!(p.matches(Some(&json!({"nameplate": "7"})), &v).is_ok());
        assert!(p.matches(Some(&json!({"nameplate": "8"})), &v).is_err());
        // Reference.
        let r = pat(json!({"nameplate": "$np"}));
        assert!(r.matches(Some(&json!({"nameplate": "7"})), &v).is_ok());
        let e = r
            .matches(Some(&json!({"nameplate": "8"})), &v)
            .expect_err("differs");
        assert_eq!(e.expected, "$np (= \"7\")");
        // Same pattern: a capture then a reference to it.
        let p = pat(json!({"a": {"$capture": "x"}, "b": "$x"}));
        assert!(p.matches(Some(&json!({"a": 1, "b": 1})), &v).is_ok());
        assert!(p.matches(Some(&json!({"a": 1, "b": 2})), &v).is_err());
        // Captures in a failed branch are not kept.
        let p = pat(json!({"$one_of": [[{"$capture": "y"}, 1], [{"$capture": "z"}, 2]]}));
        let caps = p.matches(Some(&json!([5, 2])), &v).expect("second branch");
        assert_eq!(caps.keys().collect::<Vec<_>>(), vec!["z"]);
    }

    #[test]
    fn variables_match_their_values() {
        let v = vars();
        let side = v.sides()["a"].clone();
        let p = pat(json!({"side": "$side:a", "lit": "$$x"}));
        assert!(p
            .matches(Some(&json!({"side": side, "lit": "$x"})), &v)
            .is_ok());
        assert!(p
            .matches(Some(&json!({"side": "other", "lit": "$x"})), &v)
            .is_err());
    }

    #[test]
    fn compile_errors_are_located() {
        let errs =
            Pattern::compile(&json!({"a": {"$regex": "("}, "b": [{"$nope": 1}], "c": "$side"}))
                .expect_err("bad pattern");
        let ptrs: Vec<_> = errs.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(ptrs, vec!["/a/$regex", "/b/0/$nope", "/c"]);
        let errs = Pattern::compile(&json!({"type": "x", "$any": true})).expect_err("mixed");
        assert_eq!(errs[0].pointer, "/$any");
        assert!(Pattern::compile(&json!({"$capture": "side"})).is_err());
        assert!(Pattern::compile(&json!({"$absent": true, "$any": true})).is_err());
    }

    #[test]
    fn literal_patterns_ignore_dollars_but_match_structurally() {
        let v = vars();
        let p = Pattern::literal(json!({"type": "welcome", "x": "$np"}));
        assert!(p
            .matches(Some(&json!({"type": "welcome", "x": "$np", "y": 1})), &v)
            .is_ok());
        assert!(p
            .matches(Some(&json!({"type": "welcome", "x": "7"})), &v)
            .is_err());
    }

    #[test]
    fn static_analysis_helpers() {
        let p = pat(json!({"a": {"$capture": "x"}, "b": ["$y", {"$not": "$side:q"}]}));
        assert_eq!(p.capture_names(), vec!["x"]);
        assert_eq!(
            p.references(),
            vec![VarRef::Capture("y".into()), VarRef::Side("q".into())]
        );
    }
}
