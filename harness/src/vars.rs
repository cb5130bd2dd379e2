//! Variables: the `$appid`, `$side:NAME` and `$NAME` syntax, the fresh random
//! values each run gets, captured values, and substitution into sent messages.

use rand::Rng;
use serde_json::Value;
use std::collections::BTreeMap;

/// What a string beginning with `$` refers to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VarRef {
    /// `$appid` (name `""`) or `$appid:NAME`: a fresh app id per run.
    AppId(String),
    /// `$side:NAME`: a fresh side per run.
    Side(String),
    /// `$NAME`: a value captured by an earlier `{"$capture": "NAME"}`.
    Capture(String),
}

impl std::fmt::Display for VarRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            VarRef::AppId(n) if n.is_empty() => write!(f, "$appid"),
            VarRef::AppId(n) => write!(f, "$appid:{n}"),
            VarRef::Side(n) => write!(f, "$side:{n}"),
            VarRef::Capture(n) => write!(f, "${n}"),
        }
    }
}

/// A string value in a vector, after interpreting the `$` syntax.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StrValue {
    /// A literal string (`"$$x"` has become `"$x"`).
    Literal(String),
    /// A variable reference.
    Var(VarRef),
}

/// True for names accepted after `$`, `$side:` and `$appid:`.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphanumeric() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Capture names that would be shadowed by the built-in variables.
pub fn reserved_capture(name: &str) -> bool {
    name == "appid" || name == "side"
}

/// Interprets a vector string: `$$…` is a literal `$…`, other `$…` strings
/// are variables, everything else is literal. Errors say what is wrong.
pub fn parse_str(s: &str) -> Result<StrValue, String> {
    let Some(rest) = s.strip_prefix('$') else {
        return Ok(StrValue::Literal(s.to_owned()));
    };
    if rest.starts_with('$') {
        return Ok(StrValue::Literal(rest.to_owned()));
    }
    if rest == "appid" {
        return Ok(StrValue::Var(VarRef::AppId(String::new())));
    }
    if let Some(name) = rest.strip_prefix("appid:") {
        return if valid_name(name) {
            Ok(StrValue::Var(VarRef::AppId(name.to_owned())))
        } else {
            Err(format!("invalid app name in {s:?} (use $appid:NAME)"))
        };
    }
    if rest == "side" {
        return Err("\"$side\" needs a name: \"$side:NAME\"".to_owned());
    }
    if let Some(name) = rest.strip_prefix("side:") {
        return if valid_name(name) {
            Ok(StrValue::Var(VarRef::Side(name.to_owned())))
        } else {
            Err(format!("invalid side name in {s:?} (use $side:NAME)"))
        };
    }
    if valid_name(rest) {
        Ok(StrValue::Var(VarRef::Capture(rest.to_owned())))
    } else {
        Err(format!(
            "{s:?} is not a variable ($appid, $appid:NAME, $side:NAME or $NAME); write \"$${rest}\" for a literal string starting with '$'"
        ))
    }
}

/// The values of one run: fresh app ids and sides, and captures bound so
/// far. Fresh per run so that vectors can share one server in parallel.
#[derive(Clone, Debug, Default)]
pub struct Variables {
    appids: BTreeMap<String, String>,
    sides: BTreeMap<String, String>,
    captures: BTreeMap<String, Value>,
    /// Values made by generators (`$hashcash` stamps), in the order made.
    generated: Vec<String>,
}

/// The generator object in a send template, if `v` is one: an object with
/// the single key `$hashcash`. Returns the generator's name and argument.
pub fn generator(v: &Value) -> Option<(&str, &Value)> {
    let map = v.as_object()?;
    if map.len() != 1 {
        return None;
    }
    let (k, arg) = map.iter().next()?;
    (k == "$hashcash").then_some((k.as_str(), arg))
}

impl Variables {
    /// Generates fresh values for the given app names (`""` is `$appid`) and
    /// side names.
    pub fn fresh<'a>(
        appids: impl IntoIterator<Item = &'a String>,
        sides: impl IntoIterator<Item = &'a String>,
    ) -> Self {
        let mut rng = rand::thread_rng();
        let mut vars = Variables::default();
        for name in appids {
            let id: u64 = rng.gen();
            vars.appids
                .insert(name.clone(), format!("conformance/{:012x}", id >> 16));
        }
        for name in sides {
            // Real clients use 5 random bytes as 10 lower-case hex chars.
            let side: u64 = rng.gen::<u64>() & 0xff_ffff_ffff;
            vars.sides.insert(name.clone(), format!("{side:010x}"));
        }
        vars
    }

    /// The current value of a variable, `None` if it is not bound (yet).
    pub fn get(&self, var: &VarRef) -> Option<Value> {
        match var {
            VarRef::AppId(n) => self.appids.get(n).cloned().map(Value::String),
            VarRef::Side(n) => self.sides.get(n).cloned().map(Value::String),
            VarRef::Capture(n) => self.captures.get(n).cloned(),
        }
    }

    /// Binds captures (from a successful match).
    pub fn bind(&mut self, captures: BTreeMap<String, Value>) {
        self.captures.extend(captures);
    }

    /// The fresh app ids by name (`""` for `$appid`).
    pub fn appids(&self) -> &BTreeMap<String, String> {
        &self.appids
    }

    /// The fresh sides by name.
    pub fn sides(&self) -> &BTreeMap<String, String> {
        &self.sides
    }

    /// The captured values by name.
    pub fn captures(&self) -> &BTreeMap<String, Value> {
        &self.captures
    }

    /// The values generators made in this run (`$hashcash` stamps), in
    /// order.
    pub fn generated(&self) -> &[String] {
        &self.generated
    }

    /// Renders a send template: [`Variables::substitute`], and generator
    /// objects (`{"$hashcash": {...}}`) replaced by what they make. A
    /// generator's `"as": NAME` binds the value as capture NAME.
    pub fn render(&mut self, template: &Value) -> Result<Value, String> {
        if let Some((_, arg)) = generator(template) {
            let arg = self.substitute(arg)?;
            let obj = arg
                .as_object()
                .ok_or("$hashcash takes an object: {\"resource\": …, \"bits\": …}")?;
            let stamp = crate::hashcash::spec_from_json(obj)?.mint()?;
            if let Some(name) = obj.get("as").and_then(Value::as_str) {
                self.captures
                    .insert(name.to_owned(), Value::String(stamp.clone()));
            }
            self.generated.push(stamp.clone());
            return Ok(Value::String(stamp));
        }
        Ok(match template {
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.render(v))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => {
                let mut out = serde_json::Map::new();
                for (k, v) in map {
                    out.insert(k.clone(), self.render(v)?);
                }
                Value::Object(out)
            }
            other => self.substitute(other)?,
        })
    }

    /// Replaces every `$…` string in a message template by its value
    /// (whole-value substitution); an unbound variable is an error.
    /// Generators are only evaluated by [`Variables::render`].
    pub fn substitute(&self, template: &Value) -> Result<Value, String> {
        Ok(match template {
            Value::String(s) => match parse_str(s)? {
                StrValue::Literal(l) => Value::String(l),
                StrValue::Var(v) => self
                    .get(&v)
                    .ok_or_else(|| format!("variable {v} is not bound"))?,
            },
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|v| self.substitute(v))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => {
                let mut out = serde_json::Map::new();
                for (k, v) in map {
                    out.insert(k.clone(), self.substitute(v)?);
                }
                Value::Object(out)
            }
            other => other.clone(),
        })
    }

    /// Substitutes a string template that must stay a string (paths, header
    /// values).
    pub fn substitute_str(&self, template: &str) -> Result<String, String> {
        match self.substitute(&Value::String(template.to_owned()))? {
            Value::String(s) => Ok(s),
            other => Ok(crate::json::inline(&other)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_dollar_syntax() {
        assert_eq!(parse_str("x"), Ok(StrValue::Literal("x".into())));
        assert_eq!(parse_str("$$x"), Ok(StrValue::Literal("$x".into())));
        assert_eq!(
            parse_str("$appid"),
            Ok(StrValue::Var(VarRef::AppId("".into())))
        );
        assert_eq!(
            parse_str("$appid:b"),
            Ok(StrValue::Var(VarRef::AppId("b".into())))
        );
        assert_eq!(
            parse_str("$side:one"),
            Ok(StrValue::Var(VarRef::Side("one".into())))
        );
        assert_eq!(
            parse_str("$np"),
            Ok(StrValue::Var(VarRef::Capture("np".into())))
        );
        assert!(parse_str("$side").is_err());
        assert!(parse_str("$").is_err());
        assert!(parse_str("$side:").is_err());
        assert!(parse_str("$a b").is_err());
    }

    #[test]
    fn fresh_values_look_like_real_ones() {
        let names = vec![String::new(), "x".to_owned()];
        let sides = vec!["a".to_owned(), "b".to_owned()];
        let v = Variables::fresh(&names, &sides);
        let a = v.sides()["a"].clone();
        assert_eq!(a.len(), 10);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(v.sides()["a"], v.sides()["b"]);
        assert!(v.appids()[""].starts_with("conformance/"));
        assert_ne!(v.appids()[""], v.appids()["x"]);
    }

    #[test]
    fn renders_hashcash_stamps() {
        let mut v = Variables::default();
        v.bind(
            [
                ("res".to_owned(), json!("abcdefgh")),
                ("bits".to_owned(), json!(9)),
            ]
            .into_iter()
            .collect(),
        );
        let out = v
            .render(&json!({"type": "submit-permissions", "stamp": {"$hashcash": {"resource": "$res", "bits": "$bits", "as": "st"}}, "n": ["$bits"]}))
            .expect("renders");
        let stamp = out["stamp"].as_str().expect("a string").to_owned();
        assert!(stamp.starts_with("1:9:"), "{stamp}");
        assert_eq!(stamp.split(':').nth(3), Some("abcdefgh"));
        assert!(crate::hashcash::stamp_work(&stamp) >= 9, "{stamp}");
        assert_eq!(out["n"], json!([9]));
        assert_eq!(v.captures()["st"], json!(stamp));
        assert_eq!(v.generated(), std::slice::from_ref(&stamp));
        // substitute (paths, headers) leaves generators alone; render
        // reports bad arguments
        assert!(v
            .render(&json!({"$hashcash": {"resource": "$bits", "bits": 1}}))
            .is_err());
        assert!(v
            .render(&json!({"$hashcash": {"resource": "r", "bits": "$res"}}))
            .is_err());
        assert!(v
            .render(&json!({"$hashcash": {"resource": "$unbound", "bits": 1}}))
            .is_err());
    }

    #[test]
    fn substitutes_whole_values() {
        let mut v = Variables::fresh(&[String::new()], &["a".to_owned()]);
        v.bind([("np".to_owned(), json!(7))].into_iter().collect());
        let out = v
            .substitute(&json!({"appid": "$appid", "n": ["$np", "$$lit"], "k": 1}))
            .expect("substitutes");
        assert_eq!(out["n"], json!([7, "$lit"]));
        assert_eq!(out["appid"], json!(v.appids()[""]));
        assert!(v.substitute(&json!("$missing")).is_err());
    }
}
