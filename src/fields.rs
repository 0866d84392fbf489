//! The one list of event fields. Each field is declared once: its ECS JSON
//! path, its journald name, its text label, its type, when it is present,
//! and how its value comes from the [`ExecEvent`]. JSON, journald and text
//! render every event from this list (src/output/*), and docs/schema.md's
//! field table is generated from it, so a field cannot reach one format and
//! miss another without a declared reason (the tests below enforce it).

use std::borrow::Cow;

use crate::event::ExecEvent;

/// A field's value for one event, borrowed from it where possible.
#[derive(Debug, Clone)]
pub enum Value<'a> {
    /// Untrusted bytes (argv, paths, names): escaped by every format.
    Bytes(&'a [u8]),
    /// Text execwatch made itself (errno names, constants): never escaped
    /// into quotes by the text format.
    Text(Cow<'a, str>),
    /// A number (JSON number).
    Num(u64),
    /// A signed number (JSON number).
    Int(i64),
    /// A numeric id that ECS types as keyword: a JSON string.
    Id(u64),
    Bool(bool),
    /// CLOCK_BOOTTIME nanoseconds, rendered as RFC 3339 UTC wall-clock time.
    BootTime(u64),
    /// A list of strings (JSON array, journald `NAME_0`, `NAME_1`, ...).
    List(List<'a>),
    /// A list joined by single spaces, cut at this many bytes (JSON only).
    Joined(List<'a>, usize),
    /// Exact bytes as standard base64 (JSON only: journald keeps bytes).
    Base64(&'a [u8]),
    /// A list, each element as base64.
    Base64List(List<'a>),
    /// A device number, rendered `major:minor`.
    Dev(u32, u32),
    /// A file mode, rendered in octal: `100755`.
    Octal(u32),
    /// Seconds and nanoseconds since the Unix epoch, rendered RFC 3339 UTC.
    UnixTime(i64, u32),
    /// A process image: JSON `[{"executable":..,"args":[..]}]`, journald
    /// `NAME_EXE` and `NAME_ARGV_n`, text the executable.
    Image(&'a crate::process_table::Image),
}

impl Value<'_> {
    /// The text of a value that is a string made by execwatch (device
    /// numbers, modes), shared by every format.
    pub fn write_formatted(&self, out: &mut Vec<u8>) -> bool {
        let mut n = itoa::Buffer::new();
        match self {
            Value::Dev(major, minor) => {
                out.extend_from_slice(n.format(*major).as_bytes());
                out.push(b':');
                out.extend_from_slice(n.format(*minor).as_bytes());
            }
            Value::Octal(mode) => {
                let mut digits = [0u8; 11];
                let mut i = digits.len();
                let mut m = *mode;
                loop {
                    i -= 1;
                    digits[i] = b'0' + (m & 7) as u8;
                    m >>= 3;
                    if m == 0 {
                        break;
                    }
                }
                out.extend_from_slice(&digits[i..]);
            }
            Value::UnixTime(sec, nsec) => crate::output::clock::write_rfc3339(
                out,
                i128::from(*sec) * 1_000_000_000 + i128::from(*nsec),
            ),
            _ => return false,
        }
        true
    }
}

/// Where a list's elements come from.
#[derive(Debug, Clone, Copy)]
pub enum List<'a> {
    One(&'a [u8]),
    Args(&'a ExecEvent),
    Env(&'a ExecEvent),
    Privileges(crate::event::Privileges),
    Image(&'a crate::process_table::Image),
    Static(&'static [&'static str]),
}

impl List<'_> {
    /// Call `f` on each element, in order.
    pub fn for_each(&self, mut f: impl FnMut(&[u8])) {
        match self {
            List::One(b) => f(b),
            List::Args(ev) => ev.args().for_each(f),
            List::Env(ev) => ev.env_vars.iter().for_each(|v| f(v)),
            List::Privileges(p) => p.iter().for_each(|p| f(p.name().as_bytes())),
            List::Image(i) => i.args().for_each(f),
            List::Static(items) => items.iter().for_each(|s| f(s.as_bytes())),
        }
    }
}

/// The JSON type a field has, for the docs and the type check in the tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    String,
    Number,
    Bool,
    StringArray,
    /// An array of objects.
    ObjectArray,
}

impl Type {
    pub fn name(self) -> &'static str {
        match self {
            Type::String => "string",
            Type::Number => "number",
            Type::Bool => "bool",
            Type::StringArray => "array of strings",
            Type::ObjectArray => "array of objects",
        }
    }
}

/// How journald carries a field.
#[derive(Debug, Clone, Copy)]
pub enum Journald {
    /// This field name (lists: `NAME_0`, `NAME_1`, ...).
    Field(&'static str),
    /// Not carried, and why.
    Absent(&'static str),
}

/// How the text line (and journald's MESSAGE) shows a field.
#[derive(Debug, Clone, Copy)]
pub enum Text {
    /// `label=value`; booleans appear as the bare label when true.
    Label(&'static str),
    /// Like `Label`, only when the condition holds (to keep lines short).
    LabelIf(&'static str, fn(&ExecEvent) -> bool),
    /// The value alone, unlabelled.
    Bare,
    /// Like `Bare`, only when the condition holds.
    BareIf(fn(&ExecEvent) -> bool),
    /// Leads the text line; not part of journald's MESSAGE.
    Prefix,
    /// Not shown, and why.
    Absent(&'static str),
}

/// Which events carry a field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum On {
    Exec,
    Exit,
    Both,
}

impl On {
    pub fn carries(self, ev: &ExecEvent) -> bool {
        use crate::event::Action;
        matches!(
            (self, ev.action),
            (On::Both, _) | (On::Exec, Action::Exec) | (On::Exit, Action::Exit)
        )
    }

    fn name(self) -> &'static str {
        match self {
            On::Exec => "exec",
            On::Exit => "exit",
            On::Both => "exec, exit",
        }
    }
}

/// One event field.
#[derive(Clone, Copy)]
pub struct Field {
    /// ECS path, dotted: `process.parent.pid`.
    pub json: &'static str,
    /// Which events carry it.
    pub on: On,
    pub journald: Journald,
    pub text: Text,
    pub ty: Type,
    /// When it is present, for the docs: `always`, `failure`, `when true`...
    pub present: &'static str,
    /// What it means, for the docs (Markdown).
    pub doc: &'static str,
    /// The value, `None` when the field is absent from this event.
    pub value: fn(&ExecEvent) -> Option<Value<'_>>,
}

impl std::fmt::Debug for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.json)
    }
}

/// The fields of [`FIELDS`] that `keep` selects, in list order, for each
/// kind of event: a renderer walks only its own, made once (walking the
/// whole list per event, with its tests, cost journald mode's event loop
/// about 5%).
pub struct PerKind {
    exec: Vec<&'static Field>,
    exit: Vec<&'static Field>,
}

impl PerKind {
    pub fn new(keep: impl Fn(&Field) -> bool) -> PerKind {
        let of = |on: On| -> Vec<&'static Field> {
            FIELDS
                .iter()
                .filter(|f| (f.on == On::Both || f.on == on) && keep(f))
                .collect()
        };
        PerKind {
            exec: of(On::Exec),
            exit: of(On::Exit),
        }
    }

    /// Those `ev` carries.
    pub fn of(&self, ev: &ExecEvent) -> &[&'static Field] {
        match ev.action {
            crate::event::Action::Exec => &self.exec,
            crate::event::Action::Exit => &self.exit,
        }
    }
}

/// Fields no `--exclude-field` may drop: what identifies an event, its
/// process and its place in the stream (readers count gaps in
/// `event.sequence`; deploy/shipping's Vector config labels by
/// `event.outcome`).
pub const REQUIRED: &[&str] = &[
    "@timestamp",
    "ecs.version",
    "event.kind",
    "event.category",
    "event.type",
    "event.action",
    "event.outcome",
    "event.sequence",
    "process.pid",
    "process.entity_id",
];

/// Why an `--exclude-field` value is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExcludeError {
    #[error("no field is {0:?} or under it: the fields are listed in docs/schema.md (JSON paths, such as process.command_line)")]
    Unknown(String),
    #[error("{0} identifies every event and cannot be left out")]
    Required(&'static str),
    #[error("{excluded:?} would drop {required}, which identifies every event: name the fields under it to leave out instead")]
    Covers {
        excluded: String,
        required: &'static str,
    },
}

/// Fields left out of every format (`--exclude-field`): each given path
/// drops the field of that JSON path and every field under it
/// (`process.parent` drops `process.parent.args` ...), and with each field
/// its `execwatch.raw.*` copy of exact bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Exclusions(Vec<String>);

/// `path` is `prefix` or under it, at a dot.
fn covers(prefix: &str, path: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
}

/// The field whose exact bytes an `execwatch.raw.*` field carries: the
/// first path its doc names.
pub fn raw_of(f: &Field) -> Option<&'static str> {
    f.json.strip_prefix("execwatch.raw.")?;
    f.doc.split('`').nth(1)
}

impl Exclusions {
    /// Check one `--exclude-field` value: it names a field, or the start of
    /// some, and drops none of [`REQUIRED`].
    pub fn check(path: &str) -> Result<(), ExcludeError> {
        if !FIELDS.iter().any(|f| covers(path, f.json)) {
            return Err(ExcludeError::Unknown(path.to_string()));
        }
        match REQUIRED.iter().find(|r| covers(path, r)) {
            Some(required) if *required == path => Err(ExcludeError::Required(required)),
            Some(required) => Err(ExcludeError::Covers {
                excluded: path.to_string(),
                required,
            }),
            None => Ok(()),
        }
    }

    /// Exclusions of `paths`, each checked.
    pub fn new<S: AsRef<str>>(paths: &[S]) -> Result<Exclusions, ExcludeError> {
        let mut kept = Vec::with_capacity(paths.len());
        for p in paths {
            let p = p.as_ref();
            Exclusions::check(p)?;
            kept.push(p.to_string());
        }
        Ok(Exclusions(kept))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// True when the field at `path` is left out by its own path.
    fn drops(&self, path: &str) -> bool {
        self.0.iter().any(|p| covers(p, path))
    }

    /// True when every field of `paths` is left out.
    pub fn drops_all(&self, paths: &[&str]) -> bool {
        paths.iter().all(|path| self.drops(path))
    }

    /// True when `f` is left out: by its path, or as the raw copy of one.
    pub fn excludes(&self, f: &Field) -> bool {
        self.drops(f.json) || raw_of(f).is_some_and(|of| self.drops(of))
    }
}

fn bytes(b: &[u8]) -> Option<Value<'_>> {
    Some(Value::Bytes(b))
}

fn non_empty(b: &[u8]) -> Option<Value<'_>> {
    (!b.is_empty()).then_some(Value::Bytes(b))
}

fn num(n: impl Into<u64>) -> Option<Value<'static>> {
    Some(Value::Num(n.into()))
}

fn id(n: impl Into<u64>) -> Option<Value<'static>> {
    Some(Value::Id(n.into()))
}

/// A boolean that is always present.
fn flag(b: bool) -> Option<Value<'static>> {
    Some(Value::Bool(b))
}

/// A boolean present only when true.
fn only_true(b: bool) -> Option<Value<'static>> {
    b.then_some(Value::Bool(true))
}

fn constant(s: &'static str) -> Option<Value<'static>> {
    Some(Value::Text(Cow::Borrowed(s)))
}

fn text_str(s: &str) -> Option<Value<'_>> {
    Some(Value::Bytes(s.as_bytes()))
}

fn is_utf8(b: &[u8]) -> bool {
    std::str::from_utf8(b).is_ok()
}

/// Base64 of `b` when it is not valid UTF-8 (the readable field then holds
/// U+FFFD in place of the bad bytes).
fn raw(b: &[u8]) -> Option<Value<'_>> {
    (!is_utf8(b)).then_some(Value::Base64(b))
}

const NO_CONSTANT: &str = "a constant of the JSON schema";
const TEXT_DETAIL: &str = "a detail for machines; JSON and journald carry it";
const JSON_RAW: &str = "JSON strings are Unicode; journald and text keep or escape the exact bytes";

/// Every event field, in output order. Fields that share a JSON object are
/// listed together (a test checks it), so the JSON writer opens each object
/// once.
pub static FIELDS: &[Field] = &[
    Field {
        json: "@timestamp",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_TIMESTAMP"),
        text: Text::Prefix,
        ty: Type::String,
        present: "always",
        doc: "When the exec happened (kernel boot clock converted to wall clock), RFC 3339 UTC with nanoseconds: `2026-11-25T16:43:54.123456789Z`.",
        value: |ev| Some(Value::BootTime(ev.boot_ns)),
    },
    Field {
        json: "event.kind",
        on: On::Both,
        journald: Journald::Absent(NO_CONSTANT),
        text: Text::Absent(NO_CONSTANT),
        ty: Type::String,
        present: "always",
        doc: "`event`.",
        value: |_| constant("event"),
    },
    Field {
        json: "event.category",
        on: On::Both,
        journald: Journald::Absent(NO_CONSTANT),
        text: Text::Absent(NO_CONSTANT),
        ty: Type::StringArray,
        present: "always",
        doc: "`[\"process\"]`.",
        value: |_| Some(Value::List(List::Static(&["process"]))),
    },
    Field {
        json: "event.type",
        on: On::Both,
        journald: Journald::Absent("follows from EXECWATCH_ACTION"),
        text: Text::Absent("follows from the action that leads the line"),
        ty: Type::StringArray,
        present: "always",
        doc: "`[\"start\"]` for an exec, `[\"end\"]` for an exit.",
        value: |ev| Some(Value::List(List::Static(ev.event_type()))),
    },
    Field {
        json: "event.action",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_ACTION"),
        text: Text::Bare,
        ty: Type::String,
        present: "always",
        doc: "`exec` or `exit`.",
        value: |ev| constant(ev.action_name()),
    },
    Field {
        json: "event.outcome",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_OUTCOME"),
        text: Text::BareIf(|ev| !ev.succeeded()),
        ty: Type::String,
        present: "always",
        doc: "`success` (a new program runs) or `failure` (exec returned an error; nothing ran).",
        value: |ev| constant(ev.outcome()),
    },
    Field {
        json: "event.sequence",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_SEQUENCE"),
        text: Text::Label("seq"),
        ty: Type::Number,
        present: "always",
        doc: "Global sequence number, from 0 at start. A missing number is a lost event (see [Loss](#loss)).",
        value: |ev| num(ev.seq),
    },
    Field {
        json: "event.duration",
        on: On::Exit,
        journald: Journald::Field("EXECWATCH_DURATION"),
        text: Text::Label("duration"),
        ty: Type::Number,
        present: "exit",
        doc: "Nanoseconds from the process start (its fork) to its end.",
        value: |ev| ev.duration_ns().map(Value::Num),
    },
    Field {
        json: "error.code",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_ERRNO"),
        text: Text::Label("error"),
        ty: Type::String,
        present: "failure",
        doc: "errno name, e.g. `ENOENT`, `EACCES` (the number if the name is unknown).",
        value: |ev| ev.error_code().map(Value::Text),
    },
    Field {
        json: "error.message",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_ERROR_MESSAGE"),
        text: Text::Absent("the errno name says it"),
        ty: Type::String,
        present: "failure",
        doc: "errno description, e.g. `No such file or directory`.",
        value: |ev| ev.error_message().map(|m| Value::Text(Cow::Borrowed(m))),
    },
    Field {
        json: "process.pid",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_PID"),
        text: Text::Label("pid"),
        ty: Type::Number,
        present: "always",
        doc: "Process id (tgid), in the initial pid namespace.",
        value: |ev| num(ev.pid),
    },
    Field {
        json: "process.entity_id",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_ENTITY_ID"),
        text: Text::Label("entity"),
        ty: Type::String,
        present: "when known",
        doc: "A short id unique to this process on this host, across reboots: derived from the boot id, the pid and the start time. The same on the process's exec events (a second exec keeps it) and its exit.",
        value: |ev| ev.entity_id().map(|e| Value::Text(Cow::Borrowed(e.as_str()))),
    },
    Field {
        json: "process.thread.id",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_TID"),
        text: Text::LabelIf("tid", |ev| ev.tid != ev.pid),
        ty: Type::Number,
        present: "always",
        doc: "Thread that called exec. After a successful exec from a non-main thread this is the old thread id; `process.pid` is the process.",
        value: |ev| num(ev.tid),
    },
    Field {
        json: "process.parent.pid",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_PPID"),
        text: Text::Label("ppid"),
        ty: Type::Number,
        present: "always",
        doc: "Process id of the real parent.",
        value: |ev| num(ev.ppid),
    },
    Field {
        json: "process.parent.entity_id",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_PARENT_ENTITY_ID"),
        text: Text::Label("parent-entity"),
        ty: Type::String,
        present: "when known",
        doc: "The parent's `process.entity_id`.",
        value: |ev| ev.parent_entity_id().map(|e| Value::Text(Cow::Borrowed(e.as_str()))),
    },
    Field {
        json: "process.parent.executable",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_PARENT_EXE"),
        text: Text::Label("parent-exe"),
        ty: Type::String,
        present: "parent known",
        doc: "What the parent runs (a forked child that never exec'd: its parent's image).",
        value: |ev| ev.parent_image().map(|i| i.executable()).and_then(non_empty),
    },
    Field {
        json: "process.parent.args",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_PARENT_ARGV"),
        text: Text::Label("parent-argv"),
        ty: Type::StringArray,
        present: "parent known",
        doc: "The parent's argv (at most 64 arguments and 1 KiB).",
        value: |ev| ev.parent_image().map(|i| Value::List(List::Image(i))),
    },
    Field {
        json: "process.parent.name",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_PARENT_COMM"),
        text: Text::Label("parent-comm"),
        ty: Type::String,
        present: "parent known",
        doc: "The parent's task name.",
        value: |ev| ev.parent_image().map(|i| i.name()).and_then(non_empty),
    },
    Field {
        json: "process.parent.start",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_PARENT_START"),
        text: Text::Label("parent-start"),
        ty: Type::String,
        present: "parent known",
        doc: "When the parent started, RFC 3339 UTC.",
        value: |ev| ev.parent().map(|p| Value::BootTime(p.start_boot_ns)),
    },
    Field {
        json: "process.session_leader.pid",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_SID"),
        text: Text::Label("sid"),
        ty: Type::Number,
        present: "in a session",
        doc: "Session id (the session leader's pid), in the initial pid namespace.",
        value: |ev| (ev.sid != 0).then_some(Value::Num(ev.sid.into())),
    },
    Field {
        json: "process.session_leader.entity_id",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_SID_ENTITY_ID"),
        text: Text::Label("sid-entity"),
        ty: Type::String,
        present: "leader known",
        doc: "The session leader's `process.entity_id`.",
        value: |ev| ev.session_leader().map(|r| Value::Text(Cow::Borrowed(r.entity_id.as_str()))),
    },
    Field {
        json: "process.group_leader.pid",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_PGID"),
        text: Text::Label("pgid"),
        ty: Type::Number,
        present: "in a group",
        doc: "Process group id (the group leader's pid), in the initial pid namespace.",
        value: |ev| (ev.pgid != 0).then_some(Value::Num(ev.pgid.into())),
    },
    Field {
        json: "process.group_leader.entity_id",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_PGID_ENTITY_ID"),
        text: Text::Label("pgid-entity"),
        ty: Type::String,
        present: "leader known",
        doc: "The process group leader's `process.entity_id`.",
        value: |ev| ev.group_leader().map(|r| Value::Text(Cow::Borrowed(r.entity_id.as_str()))),
    },
    Field {
        json: "process.start",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_PROCESS_START"),
        text: Text::Label("start"),
        ty: Type::String,
        present: "always",
        doc: "When the process started (its fork, not this exec), RFC 3339 UTC.",
        value: |ev| Some(Value::BootTime(ev.start_ns)),
    },
    Field {
        json: "process.end",
        on: On::Exit,
        journald: Journald::Field("EXECWATCH_PROCESS_END"),
        text: Text::Label("end"),
        ty: Type::String,
        present: "exit",
        doc: "When the process ended, RFC 3339 UTC.",
        value: |ev| (!ev.is_exec()).then_some(Value::BootTime(ev.boot_ns)),
    },
    Field {
        json: "process.name",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_COMM"),
        text: Text::Label("comm"),
        ty: Type::String,
        present: "always",
        doc: "Task name (comm, at most 15 bytes) after exec; on failure, the unchanged caller's.",
        value: |ev| bytes(&ev.comm),
    },
    Field {
        json: "process.executable",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_EXE"),
        text: Text::Label("exe"),
        ty: Type::String,
        present: "success",
        doc: "Absolute path of the file that runs, resolved by the kernel (symlinks followed, `/dev/fd/N` resolved). For a script, the interpreter. Path as the process sees it: from its root directory, which is the root of its mount namespace (a container's own view) or its chroot (`execwatch.executable_outside_root` when the file lies outside it). On an exit event, the path its exec event gave (that event carries its `execwatch.executable_*` flags); for a process already running when execwatch started, the path from execwatch's own root (read from `/proc`).",
        value: |ev| non_empty(&ev.executable),
    },
    Field {
        json: "process.args",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_ARGV"),
        text: Text::Label("argv"),
        ty: Type::StringArray,
        present: "always",
        doc: "argv, one element per argument, empty arguments kept. Up to `--max-args-bytes` (see `execwatch.args_truncated`). Exec events only: an exit event names what ended by `process.entity_id`, `process.name` and `process.executable`; its argv is in the start event with the same entity id. journald: one field per argument, `EXECWATCH_ARGV_0`, `_1`, ... (at most 512, and fewer when the entry would pass 900 fields; `EXECWATCH_ARGV_OMITTED` counts the rest).",
        value: |ev| Some(Value::List(List::Args(ev))),
    },
    Field {
        json: "process.args_count",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_ARGC"),
        text: Text::LabelIf("argc", ExecEvent::args_incomplete),
        ty: Type::Number,
        present: "always",
        doc: "Total argc, including arguments not captured.",
        value: |ev| num(ev.argc),
    },
    Field {
        json: "process.command_line",
        on: On::Exec,
        journald: Journald::Absent("EXECWATCH_ARGV_n carry the arguments and MESSAGE shows them"),
        text: Text::Absent("argv= shows the arguments"),
        ty: Type::String,
        present: "always",
        doc: "`process.args` joined with single spaces, at most 4 KiB (for display and search; lossy: use `process.args`).",
        value: |ev| {
            Some(Value::Joined(
                List::Args(ev),
                crate::event::COMMAND_LINE_MAX,
            ))
        },
    },
    Field {
        json: "process.working_directory",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_CWD"),
        text: Text::Label("cwd"),
        ty: Type::String,
        present: "always",
        doc: "Working directory at exec, from the process's root directory (as `process.executable`).",
        value: |ev| non_empty(&ev.cwd),
    },
    Field {
        json: "process.interactive",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_INTERACTIVE"),
        text: Text::Label("interactive"),
        ty: Type::Bool,
        present: "always",
        doc: "`true` when the process has a controlling terminal.",
        value: |ev| flag(ev.interactive()),
    },
    Field {
        json: "process.tty.char_device.major",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_TTY_MAJOR"),
        text: Text::Label("tty-major"),
        ty: Type::Number,
        present: "with a terminal",
        doc: "Major device number of the controlling terminal (136 and up: a pseudo-terminal, 4: a virtual console or serial line).",
        value: |ev| ev.tty.map(|(major, _)| Value::Num(major.into())),
    },
    Field {
        json: "process.tty.char_device.minor",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_TTY_MINOR"),
        text: Text::Label("tty-minor"),
        ty: Type::Number,
        present: "with a terminal",
        doc: "Minor device number of the controlling terminal (`/dev/pts/0` is 136:0).",
        value: |ev| ev.tty.map(|(_, minor)| Value::Num(minor.into())),
    },
    Field {
        json: "process.env_vars",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_ENV"),
        text: Text::Label("env"),
        ty: Type::StringArray,
        present: "`--env`, when set",
        doc: "The variables named by `--env`, as `NAME=VALUE`, in the process's order (successful execs; each value at most 4096 bytes).",
        value: |ev| (!ev.env_vars.is_empty()).then_some(Value::List(List::Env(ev))),
    },
    Field {
        json: "process.exit_code",
        on: On::Exit,
        journald: Journald::Field("EXECWATCH_EXIT_CODE"),
        text: Text::Label("exit-code"),
        ty: Type::Number,
        present: "exit",
        doc: "The code the process passed to `exit()`, or 128 + the signal that killed it (as a shell reports it; `execwatch.exit.signal` names the signal).",
        value: |ev| ev.exit_code().map(|c| Value::Num(c.into())),
    },
    Field {
        json: "process.previous",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_PREVIOUS"),
        text: Text::Label("previous"),
        ty: Type::ObjectArray,
        present: "second exec",
        doc: "When the process exec'd before (same `process.entity_id`): the image it ran until this exec, as an ECS array of one `{executable, args}` (its args at most 64 arguments and 1 KiB, as `process.parent.args`). journald: `EXECWATCH_PREVIOUS_EXE`, `EXECWATCH_PREVIOUS_ARGV_0`, ...",
        value: |ev| ev.previous_image().map(Value::Image),
    },
    Field {
        json: "process.hash.sha256",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_SHA256"),
        text: Text::Label("sha256"),
        ty: Type::String,
        present: "hashed",
        doc: "SHA-256 of the executable, computed by the daemon from a file whose identity (device, inode, size, mtime, ctime) it checked equals the one that ran; cached by that identity.",
        value: |ev| match ev.hash { Some(crate::exe_hash::HashOutcome::Hash(d)) => Some(Value::Text(Cow::Owned(String::from_utf8_lossy(&d.hex()).into_owned()))), _ => None },
    },
    Field {
        json: "user.id",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_UID"),
        text: Text::Label("uid"),
        ty: Type::String,
        present: "always",
        doc: "Real uid.",
        value: |ev| id(ev.uid),
    },
    Field {
        json: "user.effective.id",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_EUID"),
        text: Text::LabelIf("euid", |ev| ev.euid != ev.uid),
        ty: Type::String,
        present: "always",
        doc: "Effective uid after exec (setuid applied).",
        value: |ev| id(ev.euid),
    },
    Field {
        json: "user.effective.group.id",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_EGID"),
        text: Text::LabelIf("egid", |ev| ev.egid != ev.gid),
        ty: Type::String,
        present: "always",
        doc: "Effective gid after exec.",
        value: |ev| id(ev.egid),
    },
    Field {
        json: "user.audit.id",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_AUID"),
        text: Text::Label("auid"),
        ty: Type::String,
        present: "when set",
        doc: "Login uid (audit `auid`); absent when the process has none.",
        value: |ev| ev.auid.and_then(id),
    },
    Field {
        json: "group.id",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_GID"),
        text: Text::Label("gid"),
        ty: Type::String,
        present: "always",
        doc: "Real gid.",
        value: |ev| id(ev.gid),
    },
    Field {
        json: "container.id",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_CONTAINER_ID"),
        text: Text::Label("container"),
        ty: Type::String,
        present: "container",
        doc: "Container id (see [Containers](#containers-and-units)).",
        value: |ev| ev.container_id().and_then(text_str),
    },
    Field {
        json: "container.runtime",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_CONTAINER_RUNTIME"),
        text: Text::Label("runtime"),
        ty: Type::String,
        present: "when known",
        doc: "`docker`, `containerd`, `cri-o`, `podman`, `runc`, `crun`.",
        value: |ev| ev.container_runtime().and_then(constant),
    },
    Field {
        json: "container.name",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_CONTAINER_NAME"),
        text: Text::Label("container-name"),
        ty: Type::String,
        present: "named container",
        doc: "The runtime's name for the container (podman, docker), or the Kubernetes container name, from the runtime's own state.",
        value: |ev| ev.container_name().and_then(text_str),
    },
    Field {
        json: "container.image.name",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_CONTAINER_IMAGE"),
        text: Text::Label("image"),
        ty: Type::String,
        present: "when known",
        doc: "Image name without tag or digest: `docker.io/library/nginx`, `localhost:5000/app`.",
        value: |ev| ev.container_image().and_then(|i| text_str(&i.name)),
    },
    Field {
        json: "container.image.tag",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_CONTAINER_IMAGE_TAG"),
        text: Text::Label("image-tag"),
        ty: Type::StringArray,
        present: "when known",
        doc: "Image tag, as an ECS array of one: `[\"1.25\"]`.",
        value: |ev| {
            ev.container_image()
                .and_then(|i| i.tag.as_deref())
                .map(|t| Value::List(List::One(t.as_bytes())))
        },
    },
    Field {
        json: "container.image.hash.all",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_CONTAINER_IMAGE_DIGEST"),
        text: Text::Label("image-digest"),
        ty: Type::StringArray,
        present: "when known",
        doc: "Image digest (`sha256:...`), when the reference has one.",
        value: |ev| {
            ev.container_image()
                .and_then(|i| i.digest.as_deref())
                .map(|d| Value::List(List::One(d.as_bytes())))
        },
    },
    Field {
        json: "orchestrator.type",
        on: On::Both,
        journald: Journald::Absent("EXECWATCH_POD_UID says it"),
        text: Text::Absent("pod= says it"),
        ty: Type::String,
        present: "Kubernetes pod",
        doc: "`kubernetes`.",
        value: |ev| ev.pod_uid().and(constant("kubernetes")),
    },
    Field {
        json: "kubernetes.pod.uid",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_POD_UID"),
        text: Text::Label("pod"),
        ty: Type::String,
        present: "Kubernetes pod",
        doc: "Pod UID of a confirmed system container: from the CRI annotations \
              (`io.kubernetes.cri.sandbox-uid`, `io.kubernetes.pod.uid`) first, else from its \
              cgroup path (`kubepods-<qos>-pod<uid>.slice`, `pod<uid>`).",
        value: |ev| ev.pod_uid().and_then(text_str),
    },
    Field {
        json: "kubernetes.pod.name",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_POD_NAME"),
        text: Text::Label("pod-name"),
        ty: Type::String,
        present: "Kubernetes pod",
        doc: "Pod name, from the CRI annotations containerd or CRI-O wrote into the container's bundle.",
        value: |ev| ev.kubernetes().and_then(|k| k.pod_name.as_deref()).and_then(text_str),
    },
    Field {
        json: "kubernetes.namespace",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_POD_NAMESPACE"),
        text: Text::Label("namespace"),
        ty: Type::String,
        present: "Kubernetes pod",
        doc: "The pod's namespace, from the same annotations.",
        value: |ev| ev.kubernetes().and_then(|k| k.namespace.as_deref()).and_then(text_str),
    },
    Field {
        json: "kubernetes.container.name",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_K8S_CONTAINER_NAME"),
        text: Text::Label("k8s-container"),
        ty: Type::String,
        present: "Kubernetes pod",
        doc: "The container's name in the pod spec (absent for the pod's sandbox).",
        value: |ev| {
            ev.kubernetes()
                .and_then(|k| k.container_name.as_deref())
                .and_then(text_str)
        },
    },
    Field {
        json: "execwatch.caller.name",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_CALLER_COMM"),
        text: Text::LabelIf("caller", |ev| ev.caller_comm != ev.comm),
        ty: Type::String,
        present: "when known",
        doc: "Task name before exec (the program that called exec).",
        value: |ev| non_empty(&ev.caller_comm),
    },
    Field {
        json: "execwatch.filename",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_FILENAME"),
        text: Text::LabelIf("filename", |ev| ev.filename != ev.executable),
        ty: Type::String,
        present: "always",
        doc: "The file name as passed to exec, unresolved (may be relative, or `/dev/fd/N` for fexecve / `execveat(fd, \"\", AT_EMPTY_PATH)`, `/dev/fd/N/name` for `execveat(dirfd, \"name\")`).",
        value: |ev| bytes(&ev.filename),
    },
    Field {
        json: "execwatch.syscall",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_SYSCALL"),
        text: Text::Label("syscall"),
        ty: Type::String,
        present: "failure",
        doc: "`execve` or `execveat`. Successful records do not say (the kernel hook after exec does not know).",
        value: |ev| ev.syscall.map(|s| Value::Text(Cow::Borrowed(s.name()))),
    },
    Field {
        json: "execwatch.errno",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_ERRNO_NUMBER"),
        text: Text::Absent("error= names it"),
        ty: Type::Number,
        present: "failure",
        doc: "errno number of a failed exec.",
        value: |ev| ev.errno.map(|e| Value::Num(e.unsigned_abs().into())),
    },
    Field {
        json: "execwatch.dirfd",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_DIRFD"),
        text: Text::Label("dirfd"),
        ty: Type::Number,
        present: "failed execveat",
        doc: "dirfd argument of execveat (`-100` is `AT_FDCWD`).",
        value: |ev| {
            ev.has_execveat_args()
                .then_some(Value::Int(i64::from(ev.dirfd)))
        },
    },
    Field {
        json: "execwatch.at_flags",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_AT_FLAGS"),
        text: Text::Label("at_flags"),
        ty: Type::Number,
        present: "failed execveat",
        doc: "flags argument of execveat (`AT_EMPTY_PATH` = 4096, `AT_SYMLINK_NOFOLLOW` = 256).",
        value: |ev| ev.has_execveat_args().then_some(Value::Num(ev.at_flags.into())),
    },
    Field {
        json: "execwatch.exit.signal",
        on: On::Exit,
        journald: Journald::Field("EXECWATCH_EXIT_SIGNAL"),
        text: Text::Label("signal"),
        ty: Type::String,
        present: "killed by a signal",
        doc: "The signal that ended the process: `SIGKILL`, `SIGSEGV`.",
        value: |ev| ev.exit_signal().map(Value::Text),
    },
    Field {
        json: "execwatch.exit.core_dumped",
        on: On::Exit,
        journald: Journald::Field("EXECWATCH_EXIT_CORE_DUMPED"),
        text: Text::Label("core-dumped"),
        ty: Type::Bool,
        present: "exit",
        doc: "A core dump was written.",
        value: |ev| (!ev.is_exec()).then_some(Value::Bool(ev.core_dumped())),
    },
    Field {
        json: "execwatch.hash.skipped",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_HASH_SKIPPED"),
        text: Text::Label("hash-skipped"),
        ty: Type::String,
        present: "success, not hashed",
        doc: "Why `process.hash.sha256` is absent: `too_large` (over `--hash-max-size`), `gone` (no file to open), `changed` (the file opened is not the one that ran), `unreadable`, `busy` (not hashed within 1 s; the next exec of the file gets it), or `fuse` (a FUSE server gives the file, see `execwatch.executable.fuse`: it could answer the daemon's read with other bytes than the exec's, or never answer, so the file is not read).",
        value: |ev| match ev.hash { Some(crate::exe_hash::HashOutcome::Skipped(r)) => Some(Value::Text(Cow::Borrowed(r.as_str()))), _ => None },
    },
    Field {
        json: "execwatch.audit.session_id",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_SESSION_ID"),
        text: Text::Label("ses"),
        ty: Type::Number,
        present: "when set",
        doc: "Audit session id; absent when unset.",
        value: |ev| ev.session_id.and_then(num),
    },
    Field {
        json: "execwatch.args_bytes",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_ARGS_BYTES"),
        text: Text::Absent(TEXT_DETAIL),
        ty: Type::Number,
        present: "always",
        doc: "Total bytes of argv, NULs included (what the kernel copied). On failure: bytes read.",
        value: |ev| num(ev.args_size),
    },
    Field {
        json: "execwatch.args_incomplete",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_ARGS_INCOMPLETE"),
        text: Text::Label("args-incomplete"),
        ty: Type::Bool,
        present: "always",
        doc: "`true` when `process.args` lacks an argument or holds one cut short: argv was longer than `--max-args-bytes` (`execwatch.args_truncated`), or its memory could not be read (`execwatch.args_read_failed`).",
        value: |ev| flag(ev.args_incomplete()),
    },
    Field {
        json: "execwatch.args_truncated",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_ARGS_TRUNCATED"),
        text: Text::Absent("args-incomplete says it"),
        ty: Type::Bool,
        present: "always",
        doc: "`true` when argv was longer than `--max-args-bytes`: `process.args` holds the first arguments, the last one possibly cut.",
        value: |ev| flag(ev.args_truncated),
    },
    Field {
        json: "execwatch.args_read_failed",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_ARGS_READ_FAILED"),
        text: Text::Absent("args-incomplete says it"),
        ty: Type::Bool,
        present: "when true",
        doc: "The kernel could not read the argument memory (the event is kept, `process.args` may be empty).",
        value: |ev| only_true(ev.args_read_failed),
    },
    Field {
        json: "execwatch.command_line_truncated",
        on: On::Exec,
        journald: Journald::Absent("journald has no command line field"),
        text: Text::Absent("text has no command line field"),
        ty: Type::Bool,
        present: "when true",
        doc: "`process.command_line` was cut at 4 KiB; `process.args` is complete (up to `--max-args-bytes`).",
        value: |ev| only_true(ev.command_line_truncated()),
    },
    Field {
        json: "execwatch.filename_truncated",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_FILENAME_TRUNCATED"),
        text: Text::Label("filename-truncated"),
        ty: Type::Bool,
        present: "when true",
        doc: "The file name was longer than 4095 bytes.",
        value: |ev| only_true(ev.filename_truncated),
    },
    Field {
        json: "execwatch.executable_truncated",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_EXE_TRUNCATED"),
        text: Text::Label("exe-truncated"),
        ty: Type::Bool,
        present: "when true",
        doc: "The path was deeper than 64 components or longer than 4 KiB; `process.executable` is then the path's tail with no leading `/`.",
        value: |ev| only_true(ev.exe_truncated),
    },
    Field {
        json: "execwatch.executable_outside_root",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_EXE_OUTSIDE_ROOT"),
        text: Text::Label("exe-outside-root"),
        ty: Type::Bool,
        present: "when true",
        doc: "The file lies outside the process's root directory (run through a descriptor opened before a chroot): `process.executable` is then its path from the root of the mount namespace.",
        value: |ev| only_true(ev.exe_outside_root),
    },
    Field {
        json: "execwatch.executable_read_failed",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_EXE_READ_FAILED"),
        text: Text::Label("exe-unreadable"),
        ty: Type::Bool,
        present: "when true",
        doc: "The kernel could not read part of the path.",
        value: |ev| only_true(ev.exe_read_failed),
    },
    Field {
        json: "execwatch.working_directory_truncated",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_CWD_TRUNCATED"),
        text: Text::Label("cwd-truncated"),
        ty: Type::Bool,
        present: "when true",
        doc: "The working directory was too deep or unreadable: `process.working_directory` is its tail, with no leading `/`.",
        value: |ev| only_true(ev.cwd_truncated),
    },
    Field {
        json: "execwatch.working_directory_outside_root",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_CWD_OUTSIDE_ROOT"),
        text: Text::Label("cwd-outside-root"),
        ty: Type::Bool,
        present: "when true",
        doc: "The working directory lies outside the process's root directory (a chroot without a chdir): `process.working_directory` is then its path from the root of the mount namespace.",
        value: |ev| only_true(ev.cwd_outside_root),
    },
    Field {
        json: "execwatch.script",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_SCRIPT"),
        text: Text::Label("script"),
        ty: Type::String,
        present: "script",
        doc: "For a `#!` script (or a binfmt_misc file), its path; `process.executable` is then the interpreter. A binfmt_misc file opened for its interpreter (the `O` flag) has the path the kernel resolved. A `#!` script's file is closed by the time of the exec's record, so its path is the name it was run by, made absolute against `process.working_directory`: `.` and repeated `/` dropped, a leading `..` taken off the working directory, links not followed, and a `..` after one of the name's own directories kept as it is (that directory may be a link, so `d/../x` need not be the `x` beside `d`).",
        value: |ev| non_empty(&ev.script),
    },
    Field {
        json: "execwatch.script_truncated",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_SCRIPT_TRUNCATED"),
        text: Text::Label("script-truncated"),
        ty: Type::Bool,
        present: "when true",
        doc: "The script's path is its tail only.",
        value: |ev| only_true(ev.script_truncated),
    },
    Field {
        json: "execwatch.script_outside_root",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_SCRIPT_OUTSIDE_ROOT"),
        text: Text::Label("script-outside-root"),
        ty: Type::Bool,
        present: "when true",
        doc: "The script lies outside the process's root directory: `execwatch.script` is then its path from the root of the mount namespace.",
        value: |ev| only_true(ev.script_outside_root),
    },
    Field {
        json: "execwatch.executable.device",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_EXE_DEVICE"),
        text: Text::Label("exe-dev"),
        ty: Type::String,
        present: "success",
        doc: "`major:minor` of the file system the executable is on.",
        value: |ev| ev.exe_identity.map(|i| Value::Dev(i.dev_major(), i.dev_minor())),
    },
    Field {
        json: "execwatch.executable.inode",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_EXE_INODE"),
        text: Text::Label("exe-inode"),
        ty: Type::Number,
        present: "success",
        doc: "The executable's inode number.",
        value: |ev| ev.exe_identity.map(|i| Value::Num(i.ino)),
    },
    Field {
        json: "execwatch.executable.size",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_EXE_SIZE"),
        text: Text::Label("exe-size"),
        ty: Type::Number,
        present: "success",
        doc: "The executable's size in bytes.",
        value: |ev| ev.exe_identity.map(|i| Value::Num(i.size)),
    },
    Field {
        json: "execwatch.executable.nlink",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_EXE_NLINK"),
        text: Text::Label("exe-nlink"),
        ty: Type::Number,
        present: "success",
        doc: "Hard links to the executable (0: deleted, or never had a name).",
        value: |ev| ev.exe_identity.map(|i| Value::Num(i.nlink.into())),
    },
    Field {
        json: "execwatch.executable.uid",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_EXE_UID"),
        text: Text::Label("exe-uid"),
        ty: Type::String,
        present: "success",
        doc: "The executable's owner.",
        value: |ev| ev.exe_identity.map(|i| Value::Id(i.uid.into())),
    },
    Field {
        json: "execwatch.executable.gid",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_EXE_GID"),
        text: Text::Label("exe-gid"),
        ty: Type::String,
        present: "success",
        doc: "The executable's group.",
        value: |ev| ev.exe_identity.map(|i| Value::Id(i.gid.into())),
    },
    Field {
        json: "execwatch.executable.mode",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_EXE_MODE"),
        text: Text::Label("exe-mode"),
        ty: Type::String,
        present: "success",
        doc: "The executable's type and mode in octal, as `stat` shows them: `100755`, `104755` for set-user-id.",
        value: |ev| ev.exe_identity.map(|i| Value::Octal(i.mode)),
    },
    Field {
        json: "execwatch.executable.mtime",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_EXE_MTIME"),
        text: Text::Label("exe-mtime"),
        ty: Type::String,
        present: "success",
        doc: "When the executable's content last changed, RFC 3339 UTC.",
        value: |ev| ev.exe_identity.map(|i| Value::UnixTime(i.mtime.0, i.mtime.1)),
    },
    Field {
        json: "execwatch.executable.ctime",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_EXE_CTIME"),
        text: Text::Label("exe-ctime"),
        ty: Type::String,
        present: "success",
        doc: "When the executable's inode last changed (content, mode, owner, links), RFC 3339 UTC.",
        value: |ev| ev.exe_identity.map(|i| Value::UnixTime(i.ctime.0, i.ctime.1)),
    },
    Field {
        json: "execwatch.executable.memfd",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_EXE_MEMFD"),
        text: Text::Label("memfd"),
        ty: Type::Bool,
        present: "when true",
        doc: "The exec ran a memfd (`memfd_create`): a file on no disk. `process.executable` is then `memfd:NAME`, as `/proc/PID/exe` shows it.",
        value: |ev| only_true(ev.exe_memfd()),
    },
    Field {
        json: "execwatch.executable.deleted",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_EXE_DELETED"),
        text: Text::Label("deleted"),
        ty: Type::Bool,
        present: "when true",
        doc: "The file had no name left when it ran (deleted, or an `O_TMPFILE`).",
        value: |ev| only_true(ev.exe_deleted()),
    },
    Field {
        json: "execwatch.executable.upper_layer",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_EXE_UPPER_LAYER"),
        text: Text::Label("upper-layer"),
        ty: Type::Bool,
        present: "when true",
        doc: "The file is on the writable upper layer of an overlayfs: written (or copied up) into the container after its image was built.",
        value: |ev| only_true(ev.exe_upper_layer),
    },
    Field {
        json: "execwatch.executable.fuse",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_EXE_FUSE"),
        text: Text::Label("fuse"),
        ty: Type::Bool,
        present: "when true",
        doc: "A FUSE server, a user-space process, may give the file's bytes: the file is on a FUSE mount (an AppImage, sshfs, virtiofs), or on an overlayfs any of whose layers is on FUSE (or has more than 128 layers), or on another stacked file system (ecryptfs), or on an overlayfs while overlayfs's types were unknown to execwatch (its module loaded after execwatch started; a warning says so at start). Such a file is not hashed (`execwatch.hash.skipped` `fuse`).",
        value: |ev| only_true(ev.exe_fuse),
    },
    Field {
        json: "execwatch.privileges_raised",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_PRIVILEGES_RAISED"),
        text: Text::Label("privileges-raised"),
        ty: Type::StringArray,
        present: "when raised",
        doc: "How the exec raised privileges above the caller's: `setuid` (a new effective uid from a set-user-id file), `setgid`, `file_caps` (permitted capabilities the caller lacked, from file capabilities). Compared with the caller's credentials at exec.",
        value: |ev| {
            let p = ev.privileges_raised();
            (!p.is_empty()).then_some(Value::List(List::Privileges(p)))
        },
    },
    Field {
        json: "execwatch.env_truncated",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_ENV_TRUNCATED"),
        text: Text::Label("env-truncated"),
        ty: Type::Bool,
        present: "when true",
        doc: "With `--env`: the environment is larger than the 32 KiB execwatch reads; variables past it are not seen.",
        value: |ev| only_true(ev.env_truncated),
    },
    Field {
        json: "execwatch.env_value_truncated",
        on: On::Exec,
        journald: Journald::Field("EXECWATCH_ENV_VALUE_TRUNCATED"),
        text: Text::Label("env-value-truncated"),
        ty: Type::Bool,
        present: "when true",
        doc: "A value in `process.env_vars` was longer than 4096 bytes and is cut.",
        value: |ev| only_true(ev.env_value_truncated),
    },
    Field {
        json: "execwatch.cgroup.id",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_CGROUP_ID"),
        text: Text::LabelIf("cgroup-id", ExecEvent::cgroup_unresolved),
        ty: Type::Number,
        present: "always",
        doc: "cgroup v2 id of the process (the inode number of its cgroup directory).",
        value: |ev| num(ev.cgroup_id),
    },
    Field {
        json: "execwatch.cgroup.path",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_CGROUP_PATH"),
        text: Text::Label("cgroup"),
        ty: Type::String,
        present: "when resolved",
        doc: "cgroup v2 path from the hierarchy's root, as the kernel had it at exec time: `/system.slice/docker-<id>.scope`.",
        value: |ev| ev.cgroup_path().and_then(bytes),
    },
    Field {
        json: "execwatch.cgroup.unresolved",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_CGROUP_UNRESOLVED"),
        text: Text::Label("cgroup-unresolved"),
        ty: Type::Bool,
        present: "when true",
        doc: "The path is not known (see below); no attribution is guessed.",
        value: |ev| only_true(ev.cgroup_unresolved()),
    },
    Field {
        json: "execwatch.cgroup.path_truncated",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_CGROUP_PATH_TRUNCATED"),
        text: Text::Label("cgroup-truncated"),
        ty: Type::Bool,
        present: "when true",
        doc: "Deeper than 32 levels or longer than 2 KiB: the path is its tail, with no leading `/`.",
        value: |ev| only_true(ev.cgroup_truncated()),
    },
    Field {
        json: "execwatch.container.unconfirmed_id",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_CONTAINER_UNCONFIRMED_ID"),
        text: Text::Label("unconfirmed-container"),
        ty: Type::String,
        present: "unconfirmed claim",
        doc: "A container id the cgroup's name claims but no root-owned runtime state confirms: a forged name, a container gone before its state was read, or a rootless container (then with `rootless_uid`). Never in `container.id`.",
        value: |ev| ev.unconfirmed_container_id().and_then(text_str),
    },
    Field {
        json: "execwatch.container.rootless_uid",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_CONTAINER_ROOTLESS_UID"),
        text: Text::Label("rootless-uid"),
        ty: Type::Number,
        present: "rootless container",
        doc: "The user whose own runtime state (under `/run/user/UID`) names the container: a rootless container, as that user says.",
        value: |ev| ev.rootless_uid().map(|u| Value::Num(u.into())),
    },
    Field {
        json: "execwatch.systemd.unit",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_SYSTEMD_UNIT"),
        text: Text::Label("unit"),
        ty: Type::String,
        present: "host unit",
        doc: "Innermost systemd unit (`*.service`, `*.scope`) of a process that is not in a container.",
        value: |ev| ev.systemd_unit().and_then(text_str),
    },
    Field {
        json: "execwatch.systemd.slice",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_SYSTEMD_SLICE"),
        text: Text::Label("slice"),
        ty: Type::String,
        present: "when present",
        doc: "Innermost systemd slice.",
        value: |ev| ev.systemd_slice().and_then(text_str),
    },
    Field {
        json: "execwatch.pid_ns.inode",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_PIDNS_INODE"),
        text: Text::Absent(TEXT_DETAIL),
        ty: Type::Number,
        present: "always",
        doc: "Inode of the process's pid namespace (as in `/proc/PID/ns/pid`).",
        value: |ev| num(ev.pidns_ino),
    },
    Field {
        json: "execwatch.pid_ns.pid",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_PIDNS_PID"),
        text: Text::LabelIf("nspid", ExecEvent::in_other_pid_ns),
        ty: Type::Number,
        present: "always",
        doc: "Process id inside that namespace (equals `process.pid` on the host).",
        value: |ev| num(ev.ns_pid),
    },
    Field {
        json: "execwatch.pid_ns.host",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_PIDNS_HOST"),
        text: Text::Absent("nspid= marks a process in another pid namespace"),
        ty: Type::Bool,
        present: "always",
        doc: "Whether the pid namespace is execwatch's own (the host's, when execwatch runs on the host or with `hostPID`).",
        value: |ev| ev.host_pid_ns.map(Value::Bool),
    },
    Field {
        json: "execwatch.mnt_ns.inode",
        on: On::Both,
        journald: Journald::Field("EXECWATCH_MNTNS_INODE"),
        text: Text::Absent(TEXT_DETAIL),
        ty: Type::Number,
        present: "always",
        doc: "Inode of the mount namespace.",
        value: |ev| num(ev.mntns_ino),
    },
    Field {
        json: "execwatch.raw.args",
        on: On::Exec,
        journald: Journald::Absent(JSON_RAW),
        text: Text::Absent(JSON_RAW),
        ty: Type::StringArray,
        present: "not UTF-8",
        doc: "When an argument is not valid UTF-8: base64 of every argument's exact bytes, index for index with `process.args`.",
        // args_utf8 is set with the arguments; an event built without them
        // (Default) checks the slow way.
        value: |ev| {
            (!ev.args_utf8() && !ev.args().all(is_utf8))
                .then_some(Value::Base64List(List::Args(ev)))
        },
    },
    Field {
        json: "execwatch.raw.name",
        on: On::Both,
        journald: Journald::Absent(JSON_RAW),
        text: Text::Absent(JSON_RAW),
        ty: Type::String,
        present: "not UTF-8",
        doc: "base64 of `process.name`'s exact bytes.",
        value: |ev| raw(&ev.comm),
    },
    Field {
        json: "execwatch.raw.executable",
        on: On::Both,
        journald: Journald::Absent(JSON_RAW),
        text: Text::Absent(JSON_RAW),
        ty: Type::String,
        present: "not UTF-8",
        doc: "base64 of `process.executable`'s exact bytes.",
        value: |ev| raw(&ev.executable),
    },
    Field {
        json: "execwatch.raw.filename",
        on: On::Exec,
        journald: Journald::Absent(JSON_RAW),
        text: Text::Absent(JSON_RAW),
        ty: Type::String,
        present: "not UTF-8",
        doc: "base64 of `execwatch.filename`'s exact bytes.",
        value: |ev| raw(&ev.filename),
    },
    Field {
        json: "execwatch.raw.caller_name",
        on: On::Exec,
        journald: Journald::Absent(JSON_RAW),
        text: Text::Absent(JSON_RAW),
        ty: Type::String,
        present: "not UTF-8",
        doc: "base64 of `execwatch.caller.name`'s exact bytes.",
        value: |ev| raw(&ev.caller_comm),
    },
    Field {
        json: "execwatch.raw.cgroup_path",
        on: On::Both,
        journald: Journald::Absent(JSON_RAW),
        text: Text::Absent(JSON_RAW),
        ty: Type::String,
        present: "not UTF-8",
        doc: "base64 of `execwatch.cgroup.path`'s exact bytes.",
        value: |ev| ev.cgroup_path().and_then(raw),
    },
    Field {
        json: "execwatch.raw.working_directory",
        on: On::Exec,
        journald: Journald::Absent(JSON_RAW),
        text: Text::Absent(JSON_RAW),
        ty: Type::String,
        present: "not UTF-8",
        doc: "base64 of `process.working_directory`'s exact bytes.",
        value: |ev| raw(&ev.cwd),
    },
    Field {
        json: "execwatch.raw.script",
        on: On::Exec,
        journald: Journald::Absent(JSON_RAW),
        text: Text::Absent(JSON_RAW),
        ty: Type::String,
        present: "not UTF-8",
        doc: "base64 of `execwatch.script`'s exact bytes.",
        value: |ev| raw(&ev.script),
    },
    Field {
        json: "execwatch.raw.env_vars",
        on: On::Exec,
        journald: Journald::Absent(JSON_RAW),
        text: Text::Absent(JSON_RAW),
        ty: Type::StringArray,
        present: "not UTF-8",
        doc: "When a picked variable is not valid UTF-8: base64 of each, index for index with `process.env_vars`.",
        value: |ev| {
            (!ev.env_vars.iter().all(|v| is_utf8(v)))
                .then_some(Value::Base64List(List::Env(ev)))
        },
    },
    Field {
        json: "ecs.version",
        on: On::Both,
        journald: Journald::Absent(NO_CONSTANT),
        text: Text::Absent(NO_CONSTANT),
        ty: Type::String,
        present: "always",
        doc: "`8.11.0`.",
        value: |_| constant(ECS_VERSION),
    },
];

/// ECS version the field names follow.
pub const ECS_VERSION: &str = "8.11.0";

/// The field table of docs/schema.md, generated from [`FIELDS`].
pub fn markdown_table() -> String {
    let mut s = String::from(
        "| field | type | events | present | journald | text | meaning |\n|---|---|---|---|---|---|---|\n",
    );
    for f in FIELDS {
        let journald = match f.journald {
            Journald::Field(n) if f.ty == Type::StringArray => format!("`{n}_0`, `_1`, ..."),
            Journald::Field(n) => format!("`{n}`"),
            Journald::Absent(_) => "-".into(),
        };
        let text = match f.text {
            Text::Label(l) | Text::LabelIf(l, _) => format!("`{l}`"),
            Text::Bare | Text::BareIf(_) => "(unlabelled)".into(),
            Text::Prefix => "(leads the line)".into(),
            Text::Absent(_) => "-".into(),
        };
        s.push_str(&format!(
            "| `{}` | {} | {} | {} | {} | {} | {} |\n",
            f.json,
            f.ty.name(),
            f.on.name(),
            f.present,
            journald,
            text,
            f.doc
        ));
    }
    s
}

/// Drift tests: every declared field reaches every format that declares it,
/// no format carries an undeclared field, and docs/schema.md lists exactly
/// the declared fields.
#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::cgroups::CgroupInfo;
    use crate::event::Syscall;
    use crate::output::clock::Clock;
    use crate::output::{journald, json, text};
    use std::collections::BTreeSet;
    use std::sync::Arc;

    fn field_at(json: &str) -> &'static Field {
        FIELDS.iter().find(|f| f.json == json).expect(json)
    }

    #[test]
    fn exclusions_drop_a_field_or_a_subtree_and_its_raw_bytes_never_a_required_one() {
        let ex = Exclusions::new(&["process.args", "process.parent"]).unwrap();
        for dropped in [
            "process.args",
            "execwatch.raw.args",
            "process.parent.args",
            "process.parent.pid",
        ] {
            assert!(ex.excludes(field_at(dropped)), "{dropped}");
        }
        // At a dot only: `process.args` is not `process.args_count`.
        for kept in ["process.args_count", "process.command_line", "process.pid"] {
            assert!(!ex.excludes(field_at(kept)), "{kept}");
        }
        assert!(!Exclusions::default().excludes(field_at("process.args")));
        let hash = ["process.hash.sha256", "execwatch.hash.skipped"];
        assert!(!Exclusions::new(&["process.hash"]).unwrap().drops_all(&hash));
        assert!(Exclusions::new(&["process.hash", "execwatch.hash"])
            .unwrap()
            .drops_all(&hash));
        assert_eq!(
            Exclusions::check("process.arg"),
            Err(ExcludeError::Unknown("process.arg".into()))
        );
        assert_eq!(
            Exclusions::check("process.args.0"),
            Err(ExcludeError::Unknown("process.args.0".into()))
        );
        assert_eq!(
            Exclusions::check("process"),
            Err(ExcludeError::Covers {
                excluded: "process".into(),
                required: "process.pid"
            })
        );
        for r in REQUIRED {
            assert_eq!(Exclusions::check(r), Err(ExcludeError::Required(r)));
            assert!(FIELDS.iter().any(|f| f.json == *r), "{r} is no field");
        }
        assert!(Exclusions::check("execwatch").is_ok());
        let msg = Exclusions::check("event.sequence").unwrap_err().to_string();
        assert!(!msg.contains('\n'), "{msg}");
    }

    #[test]
    fn every_raw_field_names_the_field_it_copies() {
        let raw: Vec<&Field> = FIELDS
            .iter()
            .filter(|f| f.json.starts_with("execwatch.raw."))
            .collect();
        assert!(raw.len() >= 9);
        for f in raw {
            let of = raw_of(f).unwrap_or_else(|| panic!("{} names no field", f.json));
            assert!(
                FIELDS
                    .iter()
                    .any(|g| g.json == of && !g.json.starts_with("execwatch.raw.")),
                "{}: {of} is no field",
                f.json
            );
        }
        assert_eq!(raw_of(field_at("process.args")), None);
    }

    #[test]
    fn per_kind_lists_are_the_fields_each_kind_carries_in_order() {
        let all = PerKind::new(|_| true);
        let no_journald = PerKind::new(|f| matches!(f.journald, Journald::Absent(_)));
        for action in [crate::event::Action::Exec, crate::event::Action::Exit] {
            let ev = ExecEvent {
                action,
                ..Default::default()
            };
            let want: Vec<&str> = FIELDS
                .iter()
                .filter(|f| f.on.carries(&ev))
                .map(|f| f.json)
                .collect();
            let got: Vec<&str> = all.of(&ev).iter().map(|f| f.json).collect();
            assert_eq!(got, want, "{action:?}");
            assert!(no_journald
                .of(&ev)
                .iter()
                .all(|f| f.on.carries(&ev) && matches!(f.journald, Journald::Absent(_))));
        }
    }

    #[test]
    fn modes_render_in_octal() {
        for (mode, want) in [
            (0o100755, "100755"),
            (0, "0"),
            (0o7, "7"),
            (u32::MAX, "37777777777"),
        ] {
            let mut out = Vec::new();
            assert!(Value::Octal(mode).write_formatted(&mut out));
            assert_eq!(out, want.as_bytes());
        }
    }

    /// Events that together give every field a value: hostile bytes
    /// everywhere, every flag set, each kind of attribution.
    pub(crate) fn samples() -> Vec<ExecEvent> {
        let mut a = ExecEvent {
            seq: 9,
            boot_ns: 5,
            pid: 100,
            tid: 101,
            ppid: 1,
            uid: 1000,
            gid: 1000,
            euid: 0,
            egid: 0,
            auid: Some(1000),
            session_id: Some(4),
            pidns_ino: 77,
            ns_pid: 3,
            mntns_ino: 78,
            argc: 5,
            args_size: 999,
            args_truncated: true,
            args_read_failed: true,
            filename_truncated: true,
            exe_truncated: true,
            exe_read_failed: true,
            comm: b"n\xffme".to_vec(),
            caller_comm: b"c\xfeller".to_vec(),
            filename: b"f\xfdile".to_vec(),
            executable: b"memfd:e\xfcxe".to_vec(),
            host_pid_ns: Some(false),
            start_ns: 3,
            sid: 100,
            pgid: 100,
            tty: Some((136, 0)),
            cwd: b"/w\xfbd".to_vec(),
            cwd_truncated: true,
            script: b"/s\xfacript".to_vec(),
            script_truncated: true,
            exe_outside_root: true,
            cwd_outside_root: true,
            script_outside_root: true,
            exe_pseudo: true,
            exe_upper_layer: true,
            exe_fuse: true,
            exe_identity: Some(crate::event::ExeIdentity {
                dev: 8 << 20 | 1,
                ino: 12,
                size: 13,
                nlink: 0,
                uid: 0,
                gid: 0,
                mode: 0o104755,
                mtime: (1_700_000_000, 5),
                ctime: (1_700_000_001, 6),
            }),
            env_truncated: true,
            env_value_truncated: true,
            env_vars: vec![b"LD_PRELOAD=/x\xff.so".to_vec()],
            cgroup: Some(Arc::new(CgroupInfo {
                path: b"/kubepods/pod\xff/abc".to_vec(),
                container_id: Some("abc".into()),
                runtime: Some("containerd"),
                pod_uid: Some("8a3b2c1d-1234-4abc-9def-0123456789ab".into()),
                path_truncated: true,
                container: Some(Arc::new(crate::containers::ContainerInfo {
                    id: Some("abc".into()),
                    runtime: Some("containerd"),
                    name: Some("web".into()),
                    image: Some(crate::containers::ImageRef {
                        name: "docker.io/library/nginx".into(),
                        tag: Some("1.25".into()),
                        digest: Some("sha256:00".into()),
                    }),
                    kubernetes: Some(crate::containers::Kubernetes {
                        pod_name: Some("web-0".into()),
                        namespace: Some("prod".into()),
                        pod_uid: Some("8a3b2c1d-1234-4abc-9def-0123456789ab".into()),
                        container_name: Some("web".into()),
                    }),
                    ..Default::default()
                })),
                ..Default::default()
            })),
            ..Default::default()
        };
        let long = vec![b'x'; crate::event::COMMAND_LINE_MAX];
        a.set_args([&b"a\xff"[..], b"", &long]);
        let mut b = ExecEvent {
            errno: Some(2),
            syscall: Some(Syscall::Execveat),
            dirfd: -100,
            at_flags: 4096,
            argc: 1,
            comm: b"sh".to_vec(),
            filename: b"nope".to_vec(),
            cgroup: Some(Arc::new(CgroupInfo {
                path: b"/system.slice/x.service".to_vec(),
                unit: Some("x.service".into()),
                slice: Some("system.slice".into()),
                ..Default::default()
            })),
            ..Default::default()
        };
        b.set_args([&b"nope"[..]]);
        let mut c = ExecEvent::default(); // unresolved cgroup
        let rootless = ExecEvent {
            cgroup: Some(Arc::new(CgroupInfo {
                path: b"/user.slice/user-1000.slice/user@1000.service/x".to_vec(),
                container: Some(Arc::new(crate::containers::ContainerInfo {
                    id: Some("def".into()),
                    rootless_uid: Some(1000),
                    ..Default::default()
                })),
                ..Default::default()
            })),
            ..Default::default()
        };
        c.argc = 0;
        // A deleted (not pseudo) file.
        let d = ExecEvent {
            executable: b"/tmp/gone".to_vec(),
            exe_identity: Some(crate::event::ExeIdentity::default()),
            ..Default::default()
        };
        // Lineage and a hash on the exec, and an exit killed by a signal.
        let ids = crate::entity_id::EntityIds::new(crate::entity_id::BootId([7; 16]));
        let limits = crate::process_table::Limits::default();
        let image = |exe: &[u8], args: &[&[u8]]| {
            Arc::new(crate::process_table::Image::new(
                exe,
                args.iter().copied(),
                b"bash",
                &limits,
            ))
        };
        let related = crate::process_table::Related {
            pid: 1,
            entity_id: ids.from_ticks(1, 5),
            start_ticks: 5,
            start_boot_ns: 50_000_000,
            image: Some(image(b"/bin/bash", &[b"bash", b"-c", b"x\xff"])),
        };
        a.lineage = Some(crate::event::Lineage {
            entity_id: ids.from_ticks(100, 9),
            parent_entity_id: Some(related.entity_id),
            parent: Some(related.clone()),
            session_leader: Some(related.clone()),
            group_leader: Some(related.clone()),
            previous: Some(image(b"/bin/sh", &[b"sh", b"-c", b"exec x"])),
        });
        a.hash = Some(crate::exe_hash::HashOutcome::Hash(
            crate::exe_hash::Sha256Digest([0xab; 32]),
        ));
        let mut d = d;
        d.hash = Some(crate::exe_hash::HashOutcome::Skipped(
            crate::exe_hash::SkipReason::TooLarge,
        ));
        let exit = ExecEvent {
            action: crate::event::Action::Exit,
            pid: 100,
            start_ns: 1,
            boot_ns: 9,
            exit_status: 9 | 0x80,
            executable: b"/bin/sleep".to_vec(),
            lineage: a.lineage.clone(),
            ..Default::default()
        };
        vec![a, b, c, d, rootless, exit]
    }

    fn json_get<'v>(v: &'v serde_json::Value, path: &str) -> Option<&'v serde_json::Value> {
        let mut cur = v;
        for seg in path.split('.') {
            cur = cur.get(seg)?;
        }
        Some(cur)
    }

    fn json_leaves(v: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
        if let serde_json::Value::Object(m) = v {
            for (k, child) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                json_leaves(child, &p, out);
            }
        } else {
            out.insert(prefix.to_string());
        }
    }

    fn type_matches(ty: Type, v: &serde_json::Value) -> bool {
        match ty {
            Type::String => v.is_string(),
            Type::Number => v.is_number(),
            Type::Bool => v.is_boolean(),
            Type::StringArray => v
                .as_array()
                .is_some_and(|a| a.iter().all(serde_json::Value::is_string)),
            Type::ObjectArray => v
                .as_array()
                .is_some_and(|a| a.iter().all(serde_json::Value::is_object)),
        }
    }

    #[test]
    fn every_field_reaches_every_format_that_declares_it() {
        let clock = Clock::with_offset(0);
        let mut covered = BTreeSet::new();
        for ev in samples() {
            let mut out = Vec::new();
            json::write_event(&mut out, &ev, &clock);
            let j: serde_json::Value = serde_json::from_slice(&out).unwrap();
            out.clear();
            journald::write_event(&mut out, &ev, &clock);
            let entry = journald::parse(&out);
            let has = |n: &str| entry.iter().any(|(k, _)| k == n);
            out.clear();
            text::write_event(&mut out, &ev, &clock);
            let line = String::from_utf8(out.clone()).unwrap();

            for f in FIELDS {
                let value = if f.on.carries(&ev) {
                    (f.value)(&ev)
                } else {
                    None
                };
                let Some(v) = value else {
                    assert!(
                        json_get(&j, f.json).is_none(),
                        "{} absent but in JSON",
                        f.json
                    );
                    continue;
                };
                covered.insert(f.json);
                let jv = json_get(&j, f.json)
                    .unwrap_or_else(|| panic!("{} has a value but is not in JSON", f.json));
                assert!(
                    type_matches(f.ty, jv),
                    "{}: {jv} is not a {:?}",
                    f.json,
                    f.ty
                );
                match f.journald {
                    Journald::Field(n) if f.ty == Type::ObjectArray => {
                        assert!(has(&format!("{n}_EXE")), "{} missing from journald", f.json)
                    }
                    Journald::Field(n) if f.ty == Type::StringArray => {
                        let empty = jv.as_array().is_some_and(Vec::is_empty);
                        assert!(
                            empty || has(&format!("{n}_0")),
                            "{} missing from journald",
                            f.json
                        )
                    }
                    Journald::Field(n) => assert!(has(n), "{} missing from journald", f.json),
                    Journald::Absent(why) => assert!(!why.is_empty()),
                }
                let shown = match f.text {
                    Text::Label(l) => Some(l),
                    Text::LabelIf(l, cond) => cond(&ev).then_some(l),
                    Text::Bare | Text::BareIf(_) | Text::Prefix => None,
                    Text::Absent(why) => {
                        assert!(!why.is_empty());
                        None
                    }
                };
                if let Some(l) = shown {
                    let want = match v {
                        Value::Bool(false) => continue,
                        Value::Bool(true) => format!(" {l}"),
                        _ => format!(" {l}="),
                    };
                    assert!(line.contains(&want), "{} missing from text: {line}", f.json);
                }
            }

            // Nothing undeclared in JSON or journald.
            let mut leaves = BTreeSet::new();
            json_leaves(&j, "", &mut leaves);
            for leaf in leaves {
                assert!(
                    FIELDS.iter().any(|f| f.json == leaf),
                    "undeclared JSON field {leaf}"
                );
            }
            for (k, _) in &entry {
                if !k.starts_with("EXECWATCH_") {
                    continue;
                }
                let declared = FIELDS.iter().any(|f| match f.journald {
                    Journald::Field(n) => {
                        k == n
                            || (f.ty == Type::ObjectArray
                                && k.strip_prefix(n).is_some_and(|r| {
                                    r == "_EXE"
                                        || r.strip_prefix("_ARGV_").is_some_and(|r| {
                                            r == "OMITTED" || r.bytes().all(|b| b.is_ascii_digit())
                                        })
                                }))
                            || (f.ty == Type::StringArray
                                && k.strip_prefix(n)
                                    .and_then(|r| r.strip_prefix('_'))
                                    .is_some_and(|r| {
                                        r == "OMITTED" || r.bytes().all(|b| b.is_ascii_digit())
                                    }))
                    }
                    Journald::Absent(_) => false,
                });
                assert!(declared, "undeclared journald field {k}");
            }
        }
        let missing: Vec<_> = FIELDS
            .iter()
            .map(|f| f.json)
            .filter(|p| !covered.contains(p))
            .collect();
        assert!(
            missing.is_empty(),
            "no sample event gives these fields a value: {missing:?}"
        );
    }

    #[test]
    fn excluded_fields_reach_no_format_and_the_rest_are_unchanged() {
        let clock = Clock::with_offset(0);
        let ex =
            Exclusions::new(&["process.args", "process.command_line", "process.parent"]).unwrap();
        let keep = |f: &Field| !ex.excludes(f);
        let (json_l, journald_l, text_l) = (
            json::Layout::new(keep),
            journald::JournaldLayout::new(keep),
            text::TextLayout::new(keep),
        );
        let mut dropped = 0;
        for ev in samples() {
            let mut out = Vec::new();
            json::write_event(&mut out, &ev, &clock);
            let mut full: serde_json::Value = serde_json::from_slice(&out).unwrap();
            out.clear();
            json::write_fields(&mut out, &ev, &clock, &json_l);
            let less: serde_json::Value = serde_json::from_slice(&out).unwrap();
            out.clear();
            journald::write_event(&mut out, &ev, &clock);
            let full_entry = journald::parse(&out);
            out.clear();
            journald::write_entry(&mut out, &ev, &clock, &journald_l);
            let entry = journald::parse(&out);
            out.clear();
            text::write_line(&mut out, &ev, &clock, &text_l);
            let line = String::from_utf8(out.clone()).unwrap();

            let mut names = Vec::new();
            for f in FIELDS.iter().filter(|f| ex.excludes(f)) {
                if let Some(obj) = f
                    .json
                    .rsplit_once('.')
                    .and_then(|(parent, _)| json_get_mut(&mut full, parent))
                {
                    dropped += usize::from(
                        obj.as_object_mut()
                            .unwrap()
                            .remove(f.json.rsplit('.').next().unwrap())
                            .is_some(),
                    );
                }
                if let Journald::Field(n) = f.journald {
                    names.push(n);
                }
                if let Text::Label(l) | Text::LabelIf(l, _) = f.text {
                    assert!(
                        !line.contains(&format!(" {l}=")),
                        "{} in text: {line}",
                        f.json
                    );
                }
            }
            prune_empty(&mut full);
            assert_eq!(less, full, "JSON without the excluded fields");
            let carried = |k: &str| {
                !names
                    .iter()
                    .any(|n| k == *n || k.strip_prefix(n).is_some_and(|r| r.starts_with('_')))
            };
            let want: Vec<_> = full_entry
                .iter()
                .filter(|(k, _)| k != "MESSAGE" && carried(k))
                .collect();
            let got: Vec<_> = entry.iter().filter(|(k, _)| k != "MESSAGE").collect();
            assert_eq!(got, want, "journald without the excluded fields");
        }
        assert!(dropped > 0, "no sample had an excluded field");
    }

    fn json_get_mut<'v>(
        v: &'v mut serde_json::Value,
        path: &str,
    ) -> Option<&'v mut serde_json::Value> {
        path.split('.').try_fold(v, |cur, seg| cur.get_mut(seg))
    }

    /// Objects left empty by removing fields go too (the renderer opens no
    /// object it has nothing for).
    fn prune_empty(v: &mut serde_json::Value) {
        if let Some(obj) = v.as_object_mut() {
            for child in obj.values_mut() {
                prune_empty(child);
            }
            obj.retain(|_, c| !c.as_object().is_some_and(|o| o.is_empty()));
        }
    }

    #[test]
    fn fields_are_unique_and_objects_contiguous() {
        let mut seen = BTreeSet::new();
        for f in FIELDS {
            assert!(seen.insert(f.json), "{} declared twice", f.json);
            if let Journald::Field(n) = f.journald {
                assert!(
                    n.bytes()
                        .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'),
                    "{n} is not a journald field name"
                );
            }
        }
        // An object, once closed, is never opened again.
        let mut closed: BTreeSet<String> = BTreeSet::new();
        let mut open: Vec<String> = Vec::new();
        for f in FIELDS {
            let segs: Vec<&str> = f.json.split('.').collect();
            let prefixes: Vec<String> = (1..segs.len()).map(|i| segs[..i].join(".")).collect();
            while open.last().is_some_and(|o| !prefixes.contains(o)) {
                closed.insert(open.pop().unwrap());
            }
            for p in prefixes {
                assert!(
                    !closed.contains(&p),
                    "{}: object {p} is split in FIELDS",
                    f.json
                );
                if !open.contains(&p) {
                    open.push(p);
                }
            }
        }
    }

    const SCHEMA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/schema.md");
    const BEGIN: &str = "<!-- fields:begin (generated from src/fields.rs) -->\n";
    const END: &str = "<!-- fields:end -->";

    /// docs/schema.md's field table is the generated one. Run with
    /// EXECWATCH_UPDATE_SCHEMA=1 to rewrite it.
    #[test]
    fn schema_doc_lists_exactly_the_declared_fields() {
        let doc = std::fs::read_to_string(SCHEMA).unwrap();
        let (Some(a), Some(b)) = (doc.find(BEGIN), doc.find(END)) else {
            panic!("docs/schema.md lacks the {BEGIN:?} ... {END:?} markers");
        };
        let table = markdown_table();
        let current = &doc[a + BEGIN.len()..b];
        if current != table {
            if std::env::var_os("EXECWATCH_UPDATE_SCHEMA").is_some() {
                let new = format!("{}{BEGIN}{table}{}", &doc[..a], &doc[b..]);
                std::fs::write(SCHEMA, new).unwrap();
            } else {
                panic!(
                    "docs/schema.md's field table is out of date: run \
                     `EXECWATCH_UPDATE_SCHEMA=1 cargo test --lib fields` and commit it"
                );
            }
        }
        // The example event has every field that is always present, and no
        // field that does not exist.
        let example = doc
            .split("```json\n")
            .nth(1)
            .and_then(|rest| rest.split("\n```").next())
            .expect("docs/schema.md has a ```json example");
        let v: serde_json::Value = serde_json::from_str(example).expect("the example is JSON");
        for f in FIELDS.iter().filter(|f| f.present == "always") {
            assert!(
                json_get(&v, f.json).is_some(),
                "the example lacks {}",
                f.json
            );
        }
        let mut leaves = BTreeSet::new();
        json_leaves(&v, "", &mut leaves);
        for leaf in leaves {
            assert!(
                FIELDS.iter().any(|f| f.json == leaf),
                "the example has undeclared {leaf}"
            );
        }
        // Every field named in backticks in the table rows is declared.
        for row in current.lines().skip(2) {
            let name = row.split('`').nth(1).unwrap_or_default();
            assert!(
                FIELDS.iter().any(|f| f.json == name),
                "docs/schema.md documents {name}, which does not exist"
            );
        }
    }
}
