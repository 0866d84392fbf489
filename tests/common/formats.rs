//! The same execs seen by three daemons, one per format, and a checker that
//! a fact is in all three. Which journald field and text label carry a fact
//! is read from the one declaration of each field
//! (`execwatch::fields::FIELDS`), so the tests cannot drift from it.

use std::time::Duration;

use execwatch::fields::{Field, Journald, Text, FIELDS};
use serde_json::Value;

use super::{journal_bytes, journal_since_now, wait_journal_entries, Daemon, Stopped};

const WAIT: Duration = Duration::from_secs(30);

/// The three daemons, one per format, watching the same execs.
pub struct Formats {
    pub json: Daemon,
    pub text: Daemon,
    pub journald: Daemon,
    /// `--since` the journald daemon started: its `_PID` alone may match an
    /// earlier daemon's entries once the pid space wraps around.
    journal_since: String,
}

/// One exec as each format shows it.
pub struct Seen {
    pub json: Value,
    pub journal: Value,
    pub text: String,
}

impl Formats {
    /// Start the three daemons, each with `args`.
    pub fn start(args: &[&str]) -> Formats {
        let journal_since = journal_since_now();
        Formats {
            json: Daemon::start_format("json", args),
            text: Daemon::start_format("text", args),
            journald: Daemon::start_format("journald", args),
            journal_since,
        }
    }

    /// The successful exec whose argv[1] is `m`, in each format.
    pub fn exec_with(&self, m: &str) -> Seen {
        self.exec_at(m, 1)
    }

    /// The exit of the process whose argv[i] is `m`, in each format. Exit
    /// events carry no argv: each is found by its start's entity id.
    pub fn exit_at(&self, m: &str, i: usize) -> Seen {
        let started = self.exec_at(m, i);
        let text_id = text_label(&started.text, "entity").expect("the exec line's entity=");
        let journal_id = started.journal["EXECWATCH_ENTITY_ID"]
            .as_str()
            .expect("the exec entry's EXECWATCH_ENTITY_ID");
        self.exit_matching(
            "entity_id",
            &started.json["process"]["entity_id"],
            // ` entity=`: not `parent-entity=` or the leaders'.
            &format!(" entity={text_id} "),
            format!("EXECWATCH_ENTITY_ID={journal_id}"),
        )
    }

    /// The exit of process `pid`, in each format: for a process that
    /// started before the daemons (no exec event to find it by).
    #[allow(dead_code)] // not every test binary uses it
    pub fn exit_of_pid(&self, pid: u32) -> Seen {
        self.exit_matching(
            "pid",
            &pid.into(),
            &format!(" pid={pid} "),
            format!("EXECWATCH_PID={pid}"),
        )
    }

    /// The exit event whose JSON `process.<key>` is `value`, whose text line
    /// holds `needle`, and whose journal entry has the field `journal`.
    fn exit_matching(&self, key: &str, value: &Value, needle: &str, journal: String) -> Seen {
        let json = self
            .json
            .wait_for(1, WAIT, |v| {
                &v["process"][key] == value && v["event"]["action"] == "exit"
            })
            .remove(0);
        let text = self
            .text
            .wait_n(1, WAIT, &format!("text exit lines with {needle:?}"), || {
                let exit = |l: &String| l.split(' ').nth(1) == Some("exit");
                self.text
                    .lines_with(needle)
                    .into_iter()
                    .filter(exit)
                    .collect()
            })
            .remove(0);
        let journal = self.journal_entry(&[journal, "EXECWATCH_ACTION=exit".to_owned()]);
        Seen {
            json,
            journal,
            text,
        }
    }

    /// The successful exec whose argv[i] is `m`, in each format.
    pub fn exec_at(&self, m: &str, i: usize) -> Seen {
        let json = self
            .json
            .wait_for(1, WAIT, |v| {
                v["process"]["args"][i] == m
                    && v["event"]["action"] == "exec"
                    && v["event"]["outcome"] == "success"
            })
            .remove(0);
        let pid = &json["process"]["pid"];
        let quoted = format!("\"{m}\"");
        let pid_word = format!(" pid={pid} ");
        // argv[i] is the marker (no argument holds a quote in these tests).
        let ith_is_m = |l: &String| {
            l.split_once(" argv=[")
                .and_then(|(_, rest)| rest.split(' ').nth(i))
                .is_some_and(|a| a.trim_end_matches(']') == quoted)
        };
        // A successful exec's line: `<time> exec seq=...` (not `exit`, not
        // `exec failure`).
        let exec_ok = |l: &String| {
            let mut words = l.split(' ').skip(1);
            words.next() == Some("exec") && words.next().is_some_and(|w| w.starts_with("seq="))
        };
        let text = self
            .text
            .wait_n(
                1,
                WAIT,
                &format!("text exec lines for pid {pid} with argv[{i}] {m}"),
                || {
                    let ok = |l: &String| l.contains(&pid_word) && exec_ok(l) && ith_is_m(l);
                    self.text.lines_with(m).into_iter().filter(ok).collect()
                },
            )
            .remove(0);
        let journal = self.journal_entry(&[
            format!("EXECWATCH_ARGV_{i}={m}"),
            format!("EXECWATCH_PID={pid}"),
            "EXECWATCH_ACTION=exec".to_owned(),
            "EXECWATCH_OUTCOME=success".to_owned(),
        ]);
        Seen {
            json,
            journal,
            text,
        }
    }

    /// The journald daemon's entry with `matches`: other tests' journald
    /// daemons write the same execs to the same journal, so only this
    /// daemon's (journald's trusted _PID, since it started).
    fn journal_entry(&self, matches: &[String]) -> Value {
        let mut all = vec![
            format!("_PID={}", self.journald.pid()),
            self.journal_since.clone(),
        ];
        all.extend_from_slice(matches);
        wait_journal_entries(&all, 1, WAIT)
            .into_iter()
            .next()
            .unwrap_or_else(|| panic!("no journal entry {all:?} within {WAIT:?}"))
    }

    /// Stop all three; each must exit cleanly. The JSON daemon's output.
    pub fn stop(self) -> Stopped {
        let json = self.json.stop();
        for (name, stopped) in [
            ("text", self.text.stop()),
            ("journald", self.journald.stop()),
        ] {
            assert!(
                stopped.status.success(),
                "{name} daemon: {}",
                stopped.stderr
            );
        }
        assert!(json.status.success(), "json daemon: {}", json.stderr);
        json
    }
}

/// The bare value of `label=` on a text line (execwatch's own words, not
/// quoted).
fn text_label<'l>(line: &'l str, label: &str) -> Option<&'l str> {
    let key = format!("{label}=");
    line.split(' ').find_map(|w| w.strip_prefix(key.as_str()))
}

/// The value at a dotted JSON path.
pub fn json_at<'v>(v: &'v Value, path: &str) -> Option<&'v Value> {
    path.split('.').try_fold(v, |cur, seg| cur.get(seg))
}

fn field(path: &str) -> &'static Field {
    FIELDS
        .iter()
        .find(|f| f.json == path)
        .unwrap_or_else(|| panic!("{path} is not a declared field"))
}

impl Seen {
    /// `path` has `want` in JSON, and the same value in journald and on the
    /// text line under the field's declared name and label.
    pub fn has(&self, path: &str, want: Value) -> &Seen {
        let f = field(path);
        assert_eq!(
            json_at(&self.json, path),
            Some(&want),
            "JSON {path} in {}",
            self.json
        );
        if let Journald::Field(name) = f.journald {
            let journal = |n: &str| self.journal.get(n).map(journal_bytes);
            match &want {
                // A process image: NAME_EXE and NAME_ARGV_n.
                Value::Array(items) if items.iter().all(Value::is_object) => {
                    let image = &items[0];
                    assert_eq!(
                        journal(&format!("{name}_EXE")),
                        image["executable"].as_str().map(|e| e.as_bytes().to_vec()),
                        "journald {name}_EXE"
                    );
                    for (i, arg) in image["args"].as_array().unwrap().iter().enumerate() {
                        assert_eq!(
                            journal(&format!("{name}_ARGV_{i}")),
                            Some(arg.as_str().unwrap().as_bytes().to_vec()),
                            "journald {name}_ARGV_{i}"
                        );
                    }
                }
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        assert_eq!(
                            journal(&format!("{name}_{i}")),
                            Some(item.as_str().unwrap().as_bytes().to_vec()),
                            "journald {name}_{i}"
                        );
                    }
                    assert_eq!(
                        journal(&format!("{name}_{}", items.len())),
                        None,
                        "journald {name}: more than {} items",
                        items.len()
                    );
                }
                Value::Bool(b) => assert_eq!(
                    journal(name),
                    Some(if *b { b"1".to_vec() } else { b"0".to_vec() }),
                    "journald {name}"
                ),
                Value::String(s) => {
                    assert_eq!(
                        journal(name),
                        Some(s.as_bytes().to_vec()),
                        "journald {name}"
                    )
                }
                other => assert_eq!(
                    journal(name),
                    Some(other.to_string().into_bytes()),
                    "journald {name}"
                ),
            }
        }
        // A conditional label (shown only when it adds something) is checked
        // when it is on the line.
        let label = match f.text {
            Text::Label(l) => Some(l),
            Text::LabelIf(l, _) if self.text.contains(&format!(" {l}=")) => Some(l),
            _ => None,
        };
        if let Some(l) = label {
            let token = |t: &str| self.text.split(' ').any(|w| w == t);
            let ok = match &want {
                Value::Bool(true) => token(l),
                Value::Bool(false) => !token(l),
                // Quoted (untrusted bytes) or bare (execwatch's own words).
                Value::String(s) => {
                    self.text.contains(&format!(" {l}=\"{s}\"")) || token(&format!("{l}={s}"))
                }
                // A process image: the text shows its executable.
                Value::Array(items) if items.iter().all(Value::is_object) => {
                    let exe = items[0]["executable"].as_str().unwrap();
                    self.text.contains(&format!(" {l}=\"{exe}\""))
                }
                Value::Array(items) => {
                    let inner: Vec<String> = items
                        .iter()
                        .map(|i| format!("\"{}\"", i.as_str().unwrap()))
                        .collect();
                    self.text.contains(&format!(" {l}=[{}]", inner.join(" ")))
                }
                other => token(&format!("{l}={other}")),
            };
            assert!(ok, "text {l} = {want} in: {}", self.text);
        }
        self
    }

    /// `path` is absent from JSON and journald, and its label from the text.
    pub fn lacks(&self, path: &str) -> &Seen {
        let f = field(path);
        assert_eq!(
            json_at(&self.json, path),
            None,
            "JSON {path} in {}",
            self.json
        );
        if let Journald::Field(name) = f.journald {
            assert!(self.journal.get(name).is_none(), "journald {name}");
            assert!(
                self.journal.get(format!("{name}_0")).is_none(),
                "journald {name}_0"
            );
        }
        if let Text::Label(l) | Text::LabelIf(l, _) = f.text {
            assert!(
                !self.text.contains(&format!(" {l}=")) && !self.text.split(' ').any(|t| t == l),
                "text {l} in: {}",
                self.text
            );
        }
        self
    }

    pub fn pid(&self) -> u64 {
        self.json["process"]["pid"].as_u64().unwrap()
    }
}
