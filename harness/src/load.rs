//! Loading vectors: walking a directory (or the bundled copy), JSON Schema
//! validation against `vectors/schema.json`, and the semantic checks the
//! schema cannot express. Every problem names the file and a JSON pointer.

use crate::hashcash;
use crate::pattern::{CompileError, Pattern};
use crate::vars::{generator, parse_str, reserved_capture, valid_name, StrValue, VarRef};
use crate::vector::*;
use serde_json::{Map, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The vector JSON Schema, compiled into the harness so that every runner
/// checks the same format.
pub const SCHEMA: &str = include_str!("../../vectors/schema.json");

static BUNDLED: include_dir::Dir<'static> =
    include_dir::include_dir!("$CARGO_MANIFEST_DIR/../vectors");

/// One problem in a vector file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Problem {
    /// JSON pointer to the offending value (`""` for the whole document).
    pub pointer: String,
    /// What is wrong.
    pub message: String,
}

/// Everything wrong with one vector file.
#[derive(Clone, Debug)]
pub struct LoadError {
    /// The file (or `bundled:ID`).
    pub file: String,
    /// The problems found (at least one).
    pub problems: Vec<Problem>,
}

impl LoadError {
    fn one(file: &str, pointer: &str, message: impl Into<String>) -> Self {
        LoadError {
            file: file.to_owned(),
            problems: vec![Problem {
                pointer: pointer.to_owned(),
                message: message.into(),
            }],
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let at = if p.pointer.is_empty() {
                "(document)"
            } else {
                &p.pointer
            };
            write!(f, "{}: {}: {}", self.file, at, p.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadError {}

/// All malformed vectors of a load (the run does not start if any).
#[derive(Clone, Debug)]
pub struct LoadErrors(pub Vec<LoadError>);

impl fmt::Display for LoadErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} malformed vector file(s):", self.0.len())?;
        for e in &self.0 {
            writeln!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for LoadErrors {}

/// Loads every vector under `dir` (recursively; `*.json` except the
/// top-level `schema.json`; hidden entries skipped), sorted by id. Any
/// malformed file fails the whole load, listing every problem.
pub fn load(dir: impl AsRef<Path>) -> Result<Vec<Vector>, LoadErrors> {
    let dir = dir.as_ref();
    let mut files = Vec::new();
    let mut errors = Vec::new();
    if let Err(e) = walk_fs(dir, dir, &mut files) {
        return Err(LoadErrors(vec![LoadError::one(
            &dir.display().to_string(),
            "",
            format!("cannot read vectors directory: {e}"),
        )]));
    }
    files.sort();
    let mut vectors = Vec::new();
    for (id, path) in files {
        let shown = path.display().to_string();
        match std::fs::read_to_string(&path) {
            Ok(text) => match parse_vector(&id, &shown, &text) {
                Ok(v) => vectors.push(v),
                Err(e) => errors.push(e),
            },
            Err(e) => errors.push(LoadError::one(&shown, "", format!("cannot read: {e}"))),
        }
    }
    if errors.is_empty() {
        Ok(vectors)
    } else {
        Err(LoadErrors(errors))
    }
}

/// Loads the copy of `vectors/` compiled into the harness, so the binary
/// runs with no files around.
pub fn load_bundled() -> Result<Vec<Vector>, LoadErrors> {
    let mut files = Vec::new();
    walk_bundled(&BUNDLED, &mut files);
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut vectors = Vec::new();
    let mut errors = Vec::new();
    for (id, text) in files {
        let shown = format!("bundled:vectors/{id}.json");
        match text {
            Some(text) => match parse_vector(&id, &shown, text) {
                Ok(v) => vectors.push(v),
                Err(e) => errors.push(e),
            },
            None => errors.push(LoadError::one(&shown, "", "not UTF-8")),
        }
    }
    if errors.is_empty() {
        Ok(vectors)
    } else {
        Err(LoadErrors(errors))
    }
}

fn is_vector_file(rel: &Path) -> bool {
    let hidden = rel
        .components()
        .any(|c| c.as_os_str().to_string_lossy().starts_with('.'));
    !hidden && rel.extension().is_some_and(|e| e == "json") && rel != Path::new("schema.json")
}

fn id_of(rel: &Path) -> String {
    let no_ext = rel.with_extension("");
    no_ext
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

fn walk_fs(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if entry.file_type()?.is_dir() {
            walk_fs(root, &path, out)?;
        } else if is_vector_file(&rel) {
            out.push((id_of(&rel), path));
        }
    }
    Ok(())
}

fn walk_bundled(
    dir: &'static include_dir::Dir<'static>,
    out: &mut Vec<(String, Option<&'static str>)>,
) {
    for entry in dir.entries() {
        match entry {
            include_dir::DirEntry::Dir(d) => {
                if !d.path().to_string_lossy().starts_with('.') {
                    walk_bundled(d, out);
                }
            }
            include_dir::DirEntry::File(f) => {
                if is_vector_file(f.path()) {
                    out.push((id_of(f.path()), f.contents_utf8()));
                }
            }
        }
    }
}

fn schema() -> Result<&'static jsonschema::Validator, String> {
    static VALIDATOR: OnceLock<Result<jsonschema::Validator, String>> = OnceLock::new();
    VALIDATOR
        .get_or_init(|| {
            let value: Value = serde_json::from_str(SCHEMA)
                .map_err(|e| format!("schema.json is not JSON: {e}"))?;
            jsonschema::validator_for(&value)
                .map_err(|e| format!("schema.json is not a valid schema: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// Checks an id: lower-case kebab-case path segments, at least
/// `category/name`.
pub fn valid_id(id: &str) -> bool {
    let segments: Vec<&str> = id.split('/').collect();
    segments.len() >= 2
        && segments.iter().all(|s| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !s.starts_with('-')
                && !s.ends_with('-')
        })
}

/// Parses and checks one vector from its text. `source` is only used in
/// messages. This is what `load` does per file; tests use it directly.
pub fn parse_vector(id: &str, source: &str, text: &str) -> Result<Vector, LoadError> {
    if !valid_id(id) {
        return Err(LoadError::one(
            source,
            "",
            format!("id {id:?} must be category/kebab-name (lower-case letters, digits, '-'), from vectors/<category>/<name>.json"),
        ));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| {
        LoadError::one(
            source,
            "",
            format!(
                "invalid JSON at line {} column {}: {e}",
                e.line(),
                e.column()
            ),
        )
    })?;
    let validator = schema().map_err(|e| LoadError::one(source, "", e))?;
    let problems: Vec<Problem> = validator
        .iter_errors(&value)
        .map(|e| {
            let pointer = e.instance_path().to_string();
            let mut message = e.to_string();
            if message.contains("'oneOf'") {
                if let Some(hint) = one_of_hint(value.pointer(&pointer)) {
                    message = format!("{hint} ({message})");
                }
            }
            if message.contains(r#"{"pattern":"^\\$"} is not allowed for"#) {
                message = format!(
                    "an object mixes '$' keys with plain keys: a '$' object is a whole value (a matcher in patterns, a generator such as {{\"$hashcash\": …}} in sent messages) ({message})"
                );
            }
            Problem { pointer, message }
        })
        .collect();
    if !problems.is_empty() {
        return Err(LoadError {
            file: source.to_owned(),
            problems,
        });
    }
    let mut p = Parser::default();
    let vector = p.vector(id, source, &value);
    if p.problems.is_empty() {
        if let Some(v) = vector {
            return Ok(v);
        }
    }
    if p.problems.is_empty() {
        p.problem("", "malformed vector");
    }
    Err(LoadError {
        file: source.to_owned(),
        problems: p.problems,
    })
}

/// A plain-words explanation for the schema's `oneOf` failures.
fn one_of_hint(instance: Option<&Value>) -> Option<&'static str> {
    let obj = instance?.as_object()?;
    if obj.contains_key("send") {
        Some("a send step needs exactly one of message, text, binary, binary_message")
    } else if obj.contains_key("expect") {
        Some("an expect step needs exactly one of message, ack, any_of, closed")
    } else if ["message", "ack", "closed"]
        .iter()
        .any(|k| obj.contains_key(*k))
    {
        Some("an any_of alternative is exactly one of {\"message\": …}, {\"ack\": …}, {\"closed\": true}")
    } else {
        None
    }
}

/// What the static connection check knows about a connection name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ConnState {
    Open,
    /// Maybe closed by the server (after `expect closed` or an `any_of`
    /// with a closed alternative): may be connected again.
    MaybeClosed,
    /// Closed by the vector (`disconnect`/`drop`) at this step.
    ClientClosed(usize),
    /// Gone with a `restart` at this step.
    Restarted(usize),
}

#[derive(Default)]
struct Parser {
    problems: Vec<Problem>,
    appids: BTreeSet<String>,
    sides: BTreeSet<String>,
    /// Capture names bound by earlier steps.
    bound: BTreeSet<String>,
    conns: BTreeMap<String, ConnState>,
    /// Captures bound by the `as` of generators in the current step
    /// (usable from the next step on).
    generated: BTreeSet<String>,
}

fn s<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key).and_then(Value::as_str)
}

fn escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

impl Parser {
    fn problem(&mut self, pointer: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            pointer: pointer.to_owned(),
            message: message.into(),
        });
    }

    fn vector(&mut self, id: &str, source: &str, value: &Value) -> Option<Vector> {
        let obj = value.as_object()?;
        let class: Class = s(obj, "class")?.parse().ok()?;
        let mut requires = BTreeSet::new();
        for (i, r) in obj
            .get("requires")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            match r.as_str().map(str::parse::<Capability>) {
                Some(Ok(c)) => {
                    requires.insert(c);
                }
                _ => self.problem(&format!("/requires/{i}"), "unknown capability"),
            }
        }
        let server_obj = obj.get("server").and_then(Value::as_object);
        let server = server_obj
            .map(|o| self.server(o, &requires))
            .unwrap_or_default();
        let notes = match obj.get("notes") {
            Some(Value::String(n)) => vec![n.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        let mut steps = Vec::new();
        let mut restart_steps = Vec::new();
        for (i, step) in obj
            .get("steps")
            .and_then(Value::as_array)?
            .iter()
            .enumerate()
        {
            if let Some(st) = self.step(i, step) {
                if matches!(st.action, Action::Restart(_)) {
                    restart_steps.push(i);
                }
                steps.push(st);
            }
        }
        if !requires.contains(&Capability::Restart) {
            for i in restart_steps {
                self.problem(
                    &format!("/steps/{i}/restart"),
                    "a restart step needs \"restart\" in \"requires\"",
                );
            }
        }
        Some(Vector {
            id: id.to_owned(),
            source: source.to_owned(),
            description: s(obj, "description")?.to_owned(),
            spec: obj
                .get("spec")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            class,
            requires,
            has_server_options: server_obj.is_some_and(|o| !o.is_empty()),
            server,
            notes,
            steps,
            appid_names: std::mem::take(&mut self.appids),
            side_names: std::mem::take(&mut self.sides),
        })
    }

    fn server(&mut self, o: &Map<String, Value>, requires: &BTreeSet<Capability>) -> ServerOptions {
        let opts = ServerOptions {
            motd: s(o, "motd").map(str::to_owned),
            advertise_version: s(o, "advertise_version").map(str::to_owned),
            signal_error: s(o, "signal_error").map(str::to_owned),
            disallow_list: o
                .get("disallow_list")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            prune_interval: o.get("prune_interval").and_then(Value::as_u64),
            channel_expiration: o.get("channel_expiration").and_then(Value::as_u64),
            permissions: o
                .get("permissions")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|m| m.as_str().and_then(|m| m.parse().ok()))
                .collect(),
            hashcash_bits: o
                .get("hashcash_bits")
                .and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok()),
        };
        if !requires.contains(&Capability::Prune) {
            for key in ["prune_interval", "channel_expiration"] {
                if o.contains_key(key) {
                    self.problem(
                        &format!("/server/{key}"),
                        format!("{key} needs \"prune\" in \"requires\" (a server without prune support cannot take it)"),
                    );
                }
            }
        }
        if !requires.contains(&Capability::Permissions) {
            for key in ["permissions", "hashcash_bits"] {
                if o.contains_key(key) {
                    self.problem(
                        &format!("/server/{key}"),
                        format!("{key} needs \"permissions\" in \"requires\" (a server without the permissions extension cannot take it)"),
                    );
                }
            }
        }
        if opts.hashcash_bits.is_some() && !opts.permissions.contains(&PermissionMethod::Hashcash) {
            self.problem(
                "/server/hashcash_bits",
                "hashcash_bits has no effect unless \"permissions\" includes \"hashcash\"",
            );
        }
        opts
    }

    /// Checks a send-side template: variable syntax and capture order.
    fn template(&mut self, v: &Value, ptr: &str) {
        if let Some((name, arg)) = generator(v) {
            self.generator(name, arg, &format!("{ptr}/{}", escape(name)));
            return;
        }
        match v {
            Value::String(text) => match parse_str(text) {
                Ok(StrValue::Literal(_)) => {}
                Ok(StrValue::Var(var)) => self.reference(&var, ptr, &BTreeSet::new()),
                Err(e) => self.problem(ptr, e),
            },
            Value::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    self.template(item, &format!("{ptr}/{i}"));
                }
            }
            Value::Object(map) => {
                for (k, item) in map {
                    let p = format!("{ptr}/{}", escape(k));
                    if k.starts_with('$') {
                        self.problem(
                            &p,
                            format!("{k:?}: keys starting with '$' are reserved for generators, and the only generator is a whole-value {{\"$hashcash\": {{...}}}} object (send a raw \"text\" frame for such a key)"),
                        );
                    }
                    self.template(item, &p);
                }
            }
            _ => {}
        }
    }

    /// Checks a `{"$hashcash": {...}}` generator: known keys, literal
    /// types and ranges, variables bound earlier; `as` binds a capture for
    /// later steps.
    fn generator(&mut self, name: &str, arg: &Value, ptr: &str) {
        let Some(obj) = arg.as_object() else {
            self.problem(ptr, format!("{name} takes an object"));
            return;
        };
        for k in obj.keys() {
            if !hashcash::KEYS.contains(&k.as_str()) {
                self.problem(
                    &format!("{ptr}/{}", escape(k)),
                    format!(
                        "unknown {name} key {k:?} (use {})",
                        hashcash::KEYS.join(", ")
                    ),
                );
            }
        }
        for key in ["resource", "bits"] {
            if !obj.contains_key(key) {
                self.problem(ptr, format!("{name} needs \"{key}\""));
            }
        }
        let mut literal_bits = None;
        let mut literal_work = None;
        for (k, v) in obj {
            let p = format!("{ptr}/{}", escape(k));
            let var = v.as_str().and_then(|t| match parse_str(t) {
                Ok(StrValue::Var(var)) => Some(var),
                _ => None,
            });
            match k.as_str() {
                "as" => match v.as_str() {
                    Some(n) if valid_name(n) && !reserved_capture(n) => {
                        self.generated.insert(n.to_owned());
                    }
                    _ => self.problem(
                        &p,
                        "\"as\" is a capture name (letters, digits, _ . -; not appid or side)",
                    ),
                },
                "bits" | "work" => match (v.as_u64(), var) {
                    (Some(n), _) => {
                        let max = if k == "work" {
                            hashcash::MAX_WORK
                        } else {
                            hashcash::MAX_BITS
                        };
                        if n > u64::from(max) {
                            self.problem(&p, format!("{k} is at most {max}"));
                        } else if k == "bits" {
                            literal_bits = Some(n);
                        } else {
                            literal_work = Some(n);
                        }
                    }
                    (None, Some(_)) => self.template(v, &p),
                    (None, None) => {
                        self.problem(&p, format!("{k} is an integer or a \"$NAME\" variable"))
                    }
                },
                _ => {
                    if v.is_string() {
                        self.template(v, &p);
                    } else {
                        self.problem(&p, format!("{k} is a string (or a \"$NAME\" variable)"));
                    }
                }
            }
        }
        if let (Some(bits), None) = (literal_bits, literal_work) {
            if !obj.contains_key("work") && bits > u64::from(hashcash::MAX_WORK) {
                self.problem(
                    &format!("{ptr}/bits"),
                    format!("minting {bits} bits of work would take too long (at most {}); add \"work\" to claim more than is done", hashcash::MAX_WORK),
                );
            }
        }
    }

    /// Records a variable use; a capture must be bound by an earlier step
    /// (or by `same_step`).
    fn reference(&mut self, var: &VarRef, ptr: &str, same_step: &BTreeSet<String>) {
        match var {
            VarRef::AppId(n) => {
                self.appids.insert(n.clone());
            }
            VarRef::Side(n) => {
                self.sides.insert(n.clone());
            }
            VarRef::Capture(n) => {
                if !self.bound.contains(n) && !same_step.contains(n) {
                    self.problem(
                        ptr,
                        format!("${n} is used before any step captures it (add {{\"$capture\": \"{n}\"}} to an earlier expectation)"),
                    );
                }
            }
        }
    }

    fn pattern(
        &mut self,
        v: &Value,
        ptr: &str,
        new_caps: &mut BTreeSet<String>,
    ) -> Option<Pattern> {
        match Pattern::compile(v) {
            Ok(p) => {
                new_caps.extend(p.capture_names());
                Some(p)
            }
            Err(errs) => {
                for CompileError { pointer, message } in errs {
                    self.problem(&format!("{ptr}{pointer}"), message);
                }
                None
            }
        }
    }

    fn headers(&mut self, obj: &Map<String, Value>, key: &str, ptr: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        if let Some(map) = obj.get(key).and_then(Value::as_object) {
            for (name, v) in map {
                let p = format!("{ptr}/{key}/{}", escape(name));
                if let Some(text) = v.as_str() {
                    self.template(v, &p);
                    out.push((name.clone(), text.to_owned()));
                }
            }
        }
        out
    }

    fn header_patterns(
        &mut self,
        obj: &Map<String, Value>,
        ptr: &str,
        caps: &mut BTreeSet<String>,
    ) -> Vec<(String, Pattern)> {
        let mut out = Vec::new();
        if let Some(map) = obj.get("expect_headers").and_then(Value::as_object) {
            for (name, v) in map {
                let p = format!("{ptr}/expect_headers/{}", escape(name));
                if let Some(pat) = self.pattern(v, &p, caps) {
                    out.push((name.clone(), pat));
                }
            }
        }
        out
    }

    fn use_conn(&mut self, conn: &str, ptr: &str, allow_after_restart: bool) {
        match self.conns.get(conn).copied() {
            None => self.problem(ptr, format!("connection {conn:?} is used before it is connected (add {{\"connect\": \"{conn}\"}} first)")),
            Some(ConnState::ClientClosed(at)) => self.problem(
                ptr,
                format!("connection {conn:?} is used after it was closed by step {at}; connect it again first"),
            ),
            Some(ConnState::Restarted(at)) if !allow_after_restart => self.problem(
                ptr,
                format!("connection {conn:?} was lost in the restart at step {at}; connect it again first"),
            ),
            _ => {}
        }
    }

    fn step(&mut self, i: usize, v: &Value) -> Option<Step> {
        let obj = v.as_object()?;
        let ptr = format!("/steps/{i}");
        let actions = [
            "connect",
            "http",
            "send",
            "expect",
            "expect_silence",
            "sync",
            "disconnect",
            "drop",
            "sleep_ms",
            "restart",
        ];
        let present: Vec<&str> = actions
            .iter()
            .copied()
            .filter(|k| obj.contains_key(*k))
            .collect();
        if present.len() != 1 {
            self.problem(
                &ptr,
                format!(
                    "a step has exactly one action key ({}); found {:?}",
                    actions.join(", "),
                    present
                ),
            );
            return None;
        }
        let mut caps = BTreeSet::new();
        let action = match present[0] {
            "connect" => {
                let conn = s(obj, "connect")?.to_owned();
                if self.conns.get(&conn) == Some(&ConnState::Open) {
                    self.problem(
                        &format!("{ptr}/connect"),
                        format!("connection {conn:?} is already open; disconnect or drop it first"),
                    );
                }
                self.conns.insert(conn.clone(), ConnState::Open);
                if let Some(path) = obj.get("path") {
                    self.template(path, &format!("{ptr}/path"));
                }
                let headers = self.headers(obj, "headers", &ptr);
                let expect_headers = self.header_patterns(obj, &ptr, &mut caps);
                let bind = s(obj, "bind").map(str::to_owned);
                if let Some(side) = &bind {
                    self.sides.insert(side.clone());
                }
                let appid = s(obj, "appid").map(str::to_owned);
                match &appid {
                    Some(a) => self.template(&Value::String(a.clone()), &format!("{ptr}/appid")),
                    None if bind.is_some() => {
                        self.appids.insert(String::new());
                    }
                    None => {}
                }
                Action::Connect(ConnectStep {
                    conn,
                    path: s(obj, "path").map(str::to_owned),
                    headers,
                    expect_headers,
                    bind,
                    appid,
                })
            }
            "http" => {
                let headers = self.headers(obj, "headers", &ptr);
                let expect_status = match obj.get("expect_status") {
                    Some(v) => Some(self.pattern(v, &format!("{ptr}/expect_status"), &mut caps)?),
                    None => None,
                };
                let expect_body = match obj.get("expect_body") {
                    Some(v) => Some(self.pattern(v, &format!("{ptr}/expect_body"), &mut caps)?),
                    None => None,
                };
                let expect_headers = self.header_patterns(obj, &ptr, &mut caps);
                Action::Http(HttpStep {
                    method: s(obj, "http")?.to_owned(),
                    path: s(obj, "path")?.to_owned(),
                    headers,
                    expect_status,
                    expect_body,
                    expect_headers,
                })
            }
            "send" => {
                let conn = s(obj, "send")?.to_owned();
                self.use_conn(&conn, &format!("{ptr}/send"), false);
                let payload = if let Some(m) = obj.get("message") {
                    self.template(m, &format!("{ptr}/message"));
                    Payload::Message(m.clone())
                } else if let Some(m) = obj.get("binary_message") {
                    self.template(m, &format!("{ptr}/binary_message"));
                    Payload::BinaryMessage(m.clone())
                } else if let Some(t) = s(obj, "text") {
                    Payload::Text(t.to_owned())
                } else if let Some(h) = s(obj, "binary") {
                    match crate::json::from_hex(h) {
                        Some(bytes) => Payload::Binary(bytes),
                        None => {
                            self.problem(&format!("{ptr}/binary"), "not hex");
                            return None;
                        }
                    }
                } else {
                    self.problem(
                        &ptr,
                        "send needs one of message, text, binary, binary_message",
                    );
                    return None;
                };
                Action::Send { conn, payload }
            }
            "expect" => {
                let conn = s(obj, "expect")?.to_owned();
                self.use_conn(&conn, &format!("{ptr}/expect"), true);
                let within_ms = obj.get("within_ms").and_then(Value::as_u64);
                let expectation = if let Some(m) = obj.get("message") {
                    let count = obj.get("count").and_then(Value::as_u64).unwrap_or(1);
                    Expectation::Message {
                        pattern: self.pattern(m, &format!("{ptr}/message"), &mut caps)?,
                        count: u32::try_from(count).unwrap_or(u32::MAX),
                    }
                } else if let Some(id) = obj.get("ack") {
                    Expectation::Message {
                        pattern: self.ack_pattern(id, &format!("{ptr}/ack"), &mut caps)?,
                        count: 1,
                    }
                } else if let Some(alts) = obj.get("any_of").and_then(Value::as_array) {
                    let mut out = Vec::new();
                    for (j, alt) in alts.iter().enumerate() {
                        let ap = format!("{ptr}/any_of/{j}");
                        let alt = alt.as_object()?;
                        if let Some(m) = alt.get("message") {
                            out.push(Alternative::Message(self.pattern(
                                m,
                                &format!("{ap}/message"),
                                &mut caps,
                            )?));
                        } else if let Some(id) = alt.get("ack") {
                            out.push(Alternative::Message(self.ack_pattern(
                                id,
                                &format!("{ap}/ack"),
                                &mut caps,
                            )?));
                        } else {
                            out.push(Alternative::Closed);
                        }
                    }
                    if out.iter().any(|a| matches!(a, Alternative::Closed)) {
                        self.conns.insert(conn.clone(), ConnState::MaybeClosed);
                    }
                    Expectation::AnyOf(out)
                } else {
                    self.conns.insert(conn.clone(), ConnState::MaybeClosed);
                    Expectation::Closed
                };
                Action::Expect {
                    conn,
                    expectation,
                    within_ms,
                }
            }
            "expect_silence" => {
                let conn = s(obj, "expect_silence")?.to_owned();
                self.use_conn(&conn, &format!("{ptr}/expect_silence"), true);
                Action::ExpectSilence {
                    conn,
                    ms: obj.get("ms").and_then(Value::as_u64)?,
                }
            }
            "sync" => {
                let conn = s(obj, "sync")?.to_owned();
                self.use_conn(&conn, &format!("{ptr}/sync"), false);
                Action::Sync { conn }
            }
            "disconnect" | "drop" => {
                let key = present[0];
                let conn = s(obj, key)?.to_owned();
                self.use_conn(&conn, &format!("{ptr}/{key}"), true);
                self.conns.insert(conn.clone(), ConnState::ClientClosed(i));
                if key == "drop" {
                    Action::Drop { conn }
                } else {
                    Action::Disconnect { conn }
                }
            }
            "sleep_ms" => Action::Sleep {
                ms: obj.get("sleep_ms").and_then(Value::as_u64)?,
            },
            "restart" => {
                for state in self.conns.values_mut() {
                    if matches!(state, ConnState::Open | ConnState::MaybeClosed) {
                        *state = ConnState::Restarted(i);
                    }
                }
                Action::Restart(match s(obj, "restart")? {
                    "kill" => RestartKind::Kill,
                    _ => RestartKind::Graceful,
                })
            }
            _ => return None,
        };
        // Variables referenced by this step's patterns: captures may come
        // from earlier steps or from this very step.
        let refs: Vec<VarRef> = match &action {
            Action::Connect(c) => c
                .expect_headers
                .iter()
                .flat_map(|(_, p)| p.references())
                .collect(),
            Action::Http(h) => h
                .expect_status
                .iter()
                .chain(h.expect_body.iter())
                .chain(h.expect_headers.iter().map(|(_, p)| p))
                .flat_map(Pattern::references)
                .collect(),
            Action::Expect { expectation, .. } => match expectation {
                Expectation::Message { pattern, .. } => pattern.references(),
                Expectation::AnyOf(alts) => alts
                    .iter()
                    .flat_map(|a| match a {
                        Alternative::Message(p) => p.references(),
                        Alternative::Closed => Vec::new(),
                    })
                    .collect(),
                Expectation::Closed => Vec::new(),
            },
            _ => Vec::new(),
        };
        for r in refs {
            self.reference(&r, &ptr, &caps);
        }
        self.bound.extend(caps);
        self.bound.append(&mut self.generated);
        Some(Step {
            index: i,
            action,
            source: v.clone(),
        })
    }

    fn ack_pattern(
        &mut self,
        id: &Value,
        ptr: &str,
        caps: &mut BTreeSet<String>,
    ) -> Option<Pattern> {
        // Compile the id alone first so errors point into "ack".
        self.pattern(id, ptr, caps)?;
        let full = serde_json::json!({"type": "ack", "id": id});
        self.pattern(&full, ptr, caps)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Vector, LoadError> {
        parse_vector("test/case", "test/case.json", text)
    }

    fn problems(text: &str) -> Vec<(String, String)> {
        match parse(text) {
            Ok(_) => panic!("expected the vector to be rejected"),
            Err(e) => e
                .problems
                .into_iter()
                .map(|p| (p.pointer, p.message))
                .collect(),
        }
    }

    const GOOD: &str = r#"{
      "description": "allocate then claim",
      "spec": ["protocol.md §2.4"],
      "class": "required",
      "steps": [
        {"connect": "a", "bind": "one"},
        {"send": "a", "message": {"type": "allocate"}},
        {"expect": "a", "message": {"type": "ack"}},
        {"expect": "a", "message": {"type": "allocated", "nameplate": {"$capture": "np", "$regex": "^[0-9]+$"}}},
        {"send": "a", "message": {"type": "claim", "nameplate": "$np", "id": "c"}},
        {"expect": "a", "ack": "c"},
        {"expect": "a", "any_of": [{"message": {"type": "claimed"}}, {"closed": true}]},
        {"connect": "b", "path": "/v1/", "headers": {"X-Real-IP": "1.2.3.4"}, "expect_headers": {"Server": {"$regex": "Magic"}}},
        {"expect": "b", "message": {"type": "welcome", "welcome": {"your-address": {"$type": "object"}}}},
        {"send": "b", "message": {"type": "bind", "appid": "$appid:other", "side": "$side:two"}},
        {"sync": "b", "comment": "processed"},
        {"expect_silence": "b", "ms": 50},
        {"send": "b", "text": "not json"},
        {"send": "b", "binary": "00ff"},
        {"expect": "b", "closed": true, "within_ms": 500},
        {"http": "GET", "path": "/", "expect_status": 200, "expect_body": "Wormhole Relay\n"},
        {"disconnect": "a"},
        {"sleep_ms": 0}
      ]
    }"#;

    #[test]
    fn good_vector_loads() {
        let v = parse(GOOD).expect("valid vector");
        assert_eq!(v.class, Class::Required);
        assert_eq!(v.steps.len(), 18);
        assert!(!v.needs_own_server());
        assert_eq!(
            v.appid_names.iter().map(String::as_str).collect::<Vec<_>>(),
            vec!["", "other"]
        );
        assert_eq!(
            v.side_names.iter().map(String::as_str).collect::<Vec<_>>(),
            vec!["one", "two"]
        );
        assert!(
            matches!(&v.steps[13].action, Action::Send { payload: Payload::Binary(b), .. } if b == &[0, 255])
        );
    }

    #[test]
    fn requirements_imply_launch() {
        let v = parse(
            r#"{"description": "d", "spec": [], "class": "reference", "server": {"motd": "hi"},
                "steps": [{"connect": "a"}]}"#,
        )
        .expect("valid");
        assert!(v.needs().contains(&Capability::Launch));
        assert_eq!(v.server.cli_args(), vec!["--motd=hi"]);
        let v = parse(
            r#"{"description": "d", "spec": [], "class": "reference", "requires": ["restart"],
                "steps": [{"connect": "a"}, {"restart": "kill"}, {"expect": "a", "closed": true}, {"connect": "a"}]}"#,
        )
        .expect("valid");
        assert_eq!(
            v.needs().into_iter().collect::<Vec<_>>(),
            vec![Capability::Launch, Capability::Restart]
        );
    }

    #[test]
    fn json_errors_name_line_and_column() {
        let p = problems("{\n \"description\": }");
        assert!(p[0].1.contains("line 2"), "{p:?}");
    }

    #[test]
    fn schema_errors_name_the_field() {
        let p = problems(
            r#"{"description": "d", "spec": [], "class": "required",
                "steps": [{"connect": "a"}, {"expect": "a", "message": {}, "count": 0}]}"#,
        );
        assert!(p.iter().any(|(ptr, _)| ptr == "/steps/1/count"), "{p:?}");

        let p = problems(
            r#"{"description": "d", "spec": [], "class": "mandatory", "steps": [{"sleep_ms": 1}]}"#,
        );
        assert!(p.iter().any(|(ptr, _)| ptr == "/class"), "{p:?}");

        let p = problems(
            r#"{"description": "d", "spec": [], "class": "required", "steps": [{"connect": "a", "sned": 1}]}"#,
        );
        assert!(
            p.iter()
                .any(|(ptr, m)| ptr == "/steps/0" && m.contains("sned")),
            "{p:?}"
        );

        let p = problems(
            r#"{"description": "d", "spec": [], "class": "required", "steps": [{"sned": "a"}]}"#,
        );
        assert!(
            p.iter()
                .any(|(ptr, m)| ptr.starts_with("/steps/0") && m.contains("sned")),
            "{p:?}"
        );

        let p = problems(
            r#"{"description": "d", "spec": [], "class": "required",
                "steps": [{"connect": "a"}, {"expect": "a", "message": {"a": {"$regx": "x"}}}]}"#,
        );
        assert!(
            p.iter()
                .any(|(ptr, m)| ptr.starts_with("/steps/1/message/a") && m.contains("$regx")),
            "{p:?}"
        );

        let p =
            problems(r#"{"description": "d", "class": "required", "steps": [{"sleep_ms": 1}]}"#);
        assert!(p.iter().any(|(_, m)| m.contains("spec")), "{p:?}");
    }

    #[test]
    fn exact_objects_load_and_bad_ones_are_located() {
        let with = |pattern: &str| {
            format!(
                r#"{{"description": "d", "spec": [], "class": "required",
                    "steps": [{{"connect": "a"}}, {{"expect": "a", "message": {pattern}}}]}}"#
            )
        };
        parse(&with(
            r#"{"welcome": {"h": {"$exact": {"bits": 8, "r": {"$capture": "r"}}}, "none": {"$exact": {}}}}"#,
        ))
        .expect("valid");
        for bad in [
            r#"{"h": {"$exact": [1]}}"#,
            r#"{"h": {"$exact": {"$any": true}}}"#,
            r#"{"h": {"$exact": {"a": {"$regx": 1}}}}"#,
        ] {
            let p = problems(&with(bad));
            assert!(
                p.iter()
                    .any(|(ptr, _)| ptr.starts_with("/steps/1/message/h/$exact")),
                "{bad}: {p:?}"
            );
        }
    }

    #[test]
    fn restart_needs_requirement() {
        let p = problems(
            r#"{"description": "d", "spec": [], "class": "required", "steps": [{"connect": "a"}, {"restart": "kill"}]}"#,
        );
        assert_eq!(p[0].0, "/steps/1/restart");
        assert!(p[0].1.contains("requires"));
    }

    #[test]
    fn prune_options_need_requirement() {
        let p = problems(
            r#"{"description": "d", "spec": [], "class": "required", "server": {"prune_interval": 1}, "steps": [{"sleep_ms": 1}]}"#,
        );
        assert_eq!(p[0].0, "/server/prune_interval");
    }

    #[test]
    fn permission_options_need_requirement() {
        let p = problems(
            r#"{"description": "d", "spec": [], "class": "required", "server": {"permissions": ["hashcash"], "hashcash_bits": 8}, "steps": [{"sleep_ms": 1}]}"#,
        );
        let pointers: Vec<&str> = p.iter().map(|(ptr, _)| ptr.as_str()).collect();
        assert_eq!(
            pointers,
            vec!["/server/permissions", "/server/hashcash_bits"],
            "{p:?}"
        );
        assert!(p[0].1.contains("\"permissions\" in \"requires\""), "{p:?}");

        // bits without hashcash among the methods
        let p = problems(
            r#"{"description": "d", "spec": [], "class": "required", "requires": ["permissions"],
                "server": {"permissions": ["none"], "hashcash_bits": 8}, "steps": [{"sleep_ms": 1}]}"#,
        );
        assert_eq!(p[0].0, "/server/hashcash_bits");

        // schema: unknown method, empty list, bits out of range
        for server in [
            r#"{"permissions": ["password"]}"#,
            r#"{"permissions": []}"#,
            r#"{"permissions": ["none", "none"]}"#,
            r#"{"permissions": ["hashcash"], "hashcash_bits": 0}"#,
            r#"{"permissions": ["hashcash"], "hashcash_bits": 65}"#,
        ] {
            let p = problems(&format!(
                r#"{{"description": "d", "spec": [], "class": "required", "requires": ["permissions"], "server": {server}, "steps": [{{"sleep_ms": 1}}]}}"#
            ));
            assert!(p[0].0.starts_with("/server/"), "{server}: {p:?}");
        }

        let v = parse(
            r#"{"description": "d", "spec": [], "class": "required", "requires": ["permissions"],
                "server": {"permissions": ["none", "hashcash"], "hashcash_bits": 10}, "steps": [{"connect": "a"}]}"#,
        )
        .expect("valid");
        assert_eq!(
            v.needs().into_iter().collect::<Vec<_>>(),
            vec![Capability::Launch, Capability::Permissions]
        );
        assert_eq!(
            v.server.cli_args(),
            vec![
                "--permissions=none",
                "--permissions=hashcash",
                "--hashcash-bits=10"
            ]
        );
    }

    fn with_send(message: &str) -> String {
        format!(
            r#"{{"description": "d", "spec": [], "class": "required", "steps": [
                {{"connect": "a"}},
                {{"expect": "a", "message": {{"welcome": {{"permission-required": {{"hashcash": {{"bits": {{"$capture": "bits"}}, "resource": {{"$capture": "res"}}}}}}}}}}}},
                {{"send": "a", "message": {message}}},
                {{"send": "a", "message": {{"stamp": "$st"}}}}
            ]}}"#
        )
    }

    #[test]
    fn hashcash_generator_loads() {
        parse(&with_send(
            r#"{"type": "submit-permissions", "stamp": {"$hashcash": {"resource": "$res", "bits": "$bits", "work": 2, "version": "2", "date": "260101", "ext": "a:b", "rand": "x", "as": "st"}}}"#,
        ))
        .expect("valid generator; `as` binds st for the next step");
        parse(&with_send(
            r#"[{"$hashcash": {"resource": "lit", "bits": 100, "work": 8, "as": "st"}}]"#,
        ))
        .expect("a generator anywhere in the message, a claim above the work limit");
    }

    #[test]
    fn hashcash_generator_errors() {
        let cases = [
            // missing resource (schema)
            (
                r#"{"stamp": {"$hashcash": {"bits": 8, "as": "st"}}}"#,
                "/steps/2/message/stamp",
            ),
            // unknown key (schema)
            (
                r#"{"stamp": {"$hashcash": {"resource": "r", "bits": 8, "colour": 1, "as": "st"}}}"#,
                "/steps/2/message/stamp",
            ),
            // bits not an integer or variable (schema)
            (
                r#"{"stamp": {"$hashcash": {"resource": "r", "bits": "8", "as": "st"}}}"#,
                "/steps/2/message/stamp",
            ),
            // work above the limit (schema)
            (
                r#"{"stamp": {"$hashcash": {"resource": "r", "bits": 8, "work": 30, "as": "st"}}}"#,
                "/steps/2/message/stamp",
            ),
            // a generator mixed with other keys, another $ key (schema)
            (
                r#"{"stamp": {"$hashcash": {"resource": "r", "bits": 8, "as": "st"}, "x": 1}}"#,
                "/steps/2/message/stamp",
            ),
            (
                r#"{"stamp": {"$sha1": "x"}, "x": {"$hashcash": {"resource": "r", "bits": 8, "as": "st"}}}"#,
                "/steps/2/message/stamp",
            ),
            // bits above the work limit without work (semantic)
            (
                r#"{"stamp": {"$hashcash": {"resource": "r", "bits": 30, "as": "st"}}}"#,
                "/steps/2/message/stamp/$hashcash/bits",
            ),
            // a variable that nothing captured (semantic)
            (
                r#"{"stamp": {"$hashcash": {"resource": "$nope", "bits": 8, "as": "st"}}}"#,
                "/steps/2/message/stamp/$hashcash/resource",
            ),
            // reserved capture name (semantic)
            (
                r#"{"stamp": {"$hashcash": {"resource": "r", "bits": 8, "as": "side"}}}"#,
                "/steps/2/message/stamp/$hashcash/as",
            ),
        ];
        for (message, pointer) in cases {
            let p = problems(&with_send(message));
            assert!(
                p.iter().any(|(ptr, _)| ptr.starts_with(pointer)),
                "{message}: expected a problem at {pointer}, got {p:?}"
            );
        }
        // without `as`, $st is unbound in the next step
        let p = problems(&with_send(
            r#"{"stamp": {"$hashcash": {"resource": "$res", "bits": 8}}}"#,
        ));
        assert_eq!(p[0].0, "/steps/3/message/stamp", "{p:?}");
        assert!(p[0].1.contains("$st"), "{p:?}");
    }

    #[test]
    fn connections_must_be_connected_first() {
        let p = problems(
            r#"{"description": "d", "spec": [], "class": "required", "steps": [{"send": "a", "text": "x"}]}"#,
        );
        assert_eq!(p[0].0, "/steps/0/send");
        assert!(p[0].1.contains("before it is connected"));

        let p = problems(
            r#"{"description": "d", "spec": [], "class": "required",
                "steps": [{"connect": "a"}, {"drop": "a"}, {"send": "a", "text": "x"}]}"#,
        );
        assert!(p[0].1.contains("closed by step 1"), "{p:?}");

        let p = problems(
            r#"{"description": "d", "spec": [], "class": "required", "steps": [{"connect": "a"}, {"connect": "a"}]}"#,
        );
        assert!(p[0].1.contains("already open"), "{p:?}");

        // After the server closed it, the name may be connected again.
        parse(
            r#"{"description": "d", "spec": [], "class": "required",
                "steps": [{"connect": "a"}, {"expect": "a", "closed": true}, {"connect": "a"}]}"#,
        )
        .expect("reconnect after close is fine");
    }

    #[test]
    fn captures_must_come_first() {
        let p = problems(
            r#"{"description": "d", "spec": [], "class": "required",
                "steps": [{"connect": "a"}, {"send": "a", "message": {"type": "claim", "nameplate": "$np"}}]}"#,
        );
        assert_eq!(p[0].0, "/steps/1/message/nameplate");
        assert!(p[0].1.contains("$np"));
        let p = problems(
            r#"{"description": "d", "spec": [], "class": "required",
                "steps": [{"connect": "a"}, {"send": "a", "message": {"type": "x", "side": "$side"}}]}"#,
        );
        assert!(p[0].1.contains("$side:NAME"), "{p:?}");
    }

    #[test]
    fn step_needs_exactly_one_action() {
        // Two action keys: the schema rejects the extra key.
        let p = problems(
            r#"{"description": "d", "spec": [], "class": "required",
                "steps": [{"connect": "a"}, {"send": "a", "expect": "a", "text": "x"}]}"#,
        );
        assert!(
            p.iter()
                .any(|(ptr, m)| ptr == "/steps/1" && m.contains("expect")),
            "{p:?}"
        );
    }

    #[test]
    fn ids_are_kebab_paths() {
        assert!(valid_id("nameplate/claim-twice"));
        assert!(valid_id("a/b/c-01"));
        assert!(!valid_id("claim"));
        assert!(!valid_id("nameplate/Claim"));
        assert!(!valid_id("nameplate/claim_twice"));
        assert!(parse_vector("Bad", "x.json", GOOD).is_err());
    }

    #[test]
    fn load_walks_a_directory() {
        let dir = std::env::temp_dir().join(format!("wmh-load-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("cat/sub")).expect("mkdir");
        std::fs::create_dir_all(dir.join(".hidden")).expect("mkdir");
        std::fs::write(dir.join("cat/one.json"), GOOD).expect("write");
        std::fs::write(dir.join("cat/sub/two.json"), GOOD).expect("write");
        std::fs::write(dir.join(".hidden/x.json"), "junk").expect("write");
        std::fs::write(dir.join("schema.json"), "{}").expect("write");
        std::fs::write(dir.join("README.md"), "# x").expect("write");
        let ids: Vec<String> = load(&dir)
            .expect("loads")
            .into_iter()
            .map(|v| v.id)
            .collect();
        assert_eq!(ids, vec!["cat/one", "cat/sub/two"]);
        std::fs::write(dir.join("cat/bad.json"), r#"{"class": "required"}"#).expect("write");
        let err = load(&dir).expect_err("bad vector");
        let text = err.to_string();
        assert!(text.contains("cat/bad.json"), "{text}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bundled_vectors_load() {
        load_bundled().expect("the bundled vectors are valid");
    }

    #[test]
    fn schema_compiles() {
        schema().expect("schema.json compiles");
    }
}
