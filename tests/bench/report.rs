//! Results: samples per row and handler, their median and p90, the ratio to runc, the
//! machine they were taken on, and peapod's per-phase timings from the shim's log; written
//! as a markdown table and as JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::{json, Value};

/// The baseline every ratio is relative to.
pub const BASELINE: &str = "runc";

/// What a row's samples are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Milliseconds.
    Millis,
    /// Seconds.
    Seconds,
    /// MiB.
    Mib,
}

impl Unit {
    fn name(self) -> &'static str {
        match self {
            Unit::Millis => "ms",
            Unit::Seconds => "s",
            Unit::Mib => "MiB",
        }
    }

    fn format(self, v: f64) -> String {
        let digits = match self {
            Unit::Mib => 2,
            _ if v < 10.0 => 2,
            _ if v < 100.0 => 1,
            _ => 0,
        };
        format!("{v:.digits$} {}", self.name())
    }
}

/// One handler's result in one row: samples, or why there are none.
#[derive(Debug, Default, Clone)]
pub struct Cell {
    pub samples: Vec<f64>,
    /// First line of the error that stopped this handler in this row.
    pub error: Option<String>,
}

/// One measured quantity, across handlers.
#[derive(Debug, Clone)]
pub struct Row {
    pub key: &'static str,
    pub title: String,
    pub unit: Unit,
    /// Target ratio of peapod's median to runc's, for context.
    pub target: Option<f64>,
    /// Target ratio of `peapod-shim@<version>` to `runc@<version>` (containerd 2.x's
    /// `sandboxer = "shim"`), for context.
    pub shim_target: Option<f64>,
    /// By handler name.
    pub cells: BTreeMap<String, Cell>,
}

impl Row {
    pub fn new(key: &'static str, title: impl Into<String>, unit: Unit, target: Option<f64>) -> Self {
        Self {
            key,
            title: title.into(),
            unit,
            target,
            shim_target: None,
            cells: BTreeMap::new(),
        }
    }

    pub fn cell(&mut self, handler: &str) -> &mut Cell {
        self.cells.entry(handler.to_string()).or_default()
    }

    fn median_of(&self, handler: &str) -> Option<f64> {
        self.cells
            .get(handler)
            .filter(|c| c.error.is_none())
            .and_then(|c| median(&c.samples))
    }

    /// The target for `peapod-shim@<version>` (containerd 2.x's `sandboxer = "shim"`).
    pub fn with_shim_target(mut self, target: f64) -> Self {
        self.shim_target = Some(target);
        self
    }

    /// `handler`'s median over runc's on the same containerd (`runc@2.3.4` for
    /// `peapod@2.3.4`).
    pub fn ratio(&self, handler: &str) -> Option<f64> {
        let base = match handler.split_once('@') {
            Some((_, version)) => self.median_of(&format!("{BASELINE}@{version}"))?,
            None => self.median_of(BASELINE)?,
        };
        let v = self.median_of(handler)?;
        (base > 0.0).then(|| v / base)
    }
}

/// Median (mean of the middle two for an even count).
pub fn median(samples: &[f64]) -> Option<f64> {
    let s = sorted(samples);
    let n = s.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(s[n / 2]),
        _ => Some((s[n / 2 - 1] + s[n / 2]) / 2.0),
    }
}

/// 90th percentile, nearest rank: the smallest sample with at least 90 % at or below it.
pub fn p90(samples: &[f64]) -> Option<f64> {
    let s = sorted(samples);
    if s.is_empty() {
        return None;
    }
    let rank = (s.len() * 9).div_ceil(10).max(1);
    Some(s[rank - 1])
}

fn sorted(samples: &[f64]) -> Vec<f64> {
    let mut s = samples.to_vec();
    s.sort_by(f64::total_cmp);
    s
}

/// Per-field samples of the shim's `create timings` / `start timings` log lines, fields in
/// the order they first appear.
#[derive(Debug, Default)]
pub struct Phases {
    pub create: Vec<(String, Vec<u64>)>,
    pub start: Vec<(String, Vec<u64>)>,
    pub create_lines: usize,
    pub start_lines: usize,
    /// `served_us` of the shim's `call served` lines, by ttrpc method.
    pub served: Vec<(String, Vec<u64>)>,
    /// `startup_us` of the shim's `shim serving` lines: from `start`'s main to the socket
    /// served, per shim started.
    pub startup: Vec<u64>,
}

/// Collects every `<name>_us=<integer>` field of the lines holding `create timings` or
/// `start timings` (however the shim or containerd decorate the line: timestamps, level,
/// target, quotes).
pub fn parse_phases(log: &str) -> Phases {
    let mut phases = Phases::default();
    for line in log.lines() {
        if line.contains("shim serving") {
            if let Some((_, us)) = us_fields(line).into_iter().find(|(n, _)| n == "startup_us") {
                phases.startup.push(us);
            }
            continue;
        }
        if line.contains("call served") {
            let method = word_after(line, "method=");
            let us = us_fields(line).into_iter().find(|(n, _)| n == "served_us");
            if let (Some(method), Some((_, us))) = (method, us) {
                match phases.served.iter_mut().find(|(m, _)| *m == method) {
                    Some((_, values)) => values.push(us),
                    None => phases.served.push((method, vec![us])),
                }
            }
            continue;
        }
        let (fields, count) = if line.contains("create timings") {
            (&mut phases.create, &mut phases.create_lines)
        } else if line.contains("start timings") {
            (&mut phases.start, &mut phases.start_lines)
        } else {
            continue;
        };
        *count += 1;
        for (name, value) in us_fields(line) {
            match fields.iter_mut().find(|(n, _)| *n == name) {
                Some((_, values)) => values.push(value),
                None => fields.push((name, vec![value])),
            }
        }
    }
    phases
}

/// The ASCII letters right after the first `key` in `line` (`method=Create` → `Create`).
fn word_after(line: &str, key: &str) -> Option<String> {
    let at = line.find(key)? + key.len();
    let word: String = line[at..].chars().take_while(char::is_ascii_alphabetic).collect();
    (!word.is_empty()).then_some(word)
}

/// `(name, value)` of every `<name>_us=<digits>` in `line`, the name made of ASCII
/// letters, digits, `_`, `.` and `-`.
fn us_fields(line: &str) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let mut rest = line;
    let mut offset = 0;
    while let Some(i) = rest.find("_us=") {
        let at = offset + i;
        let before = &line[..at];
        let start = before
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-'))
            .map_or(0, |p| p + 1);
        let digits: String = line[at + 4..].chars().take_while(char::is_ascii_digit).collect();
        if start < at && !digits.is_empty() {
            if let Ok(v) = digits.parse() {
                out.push((format!("{}_us", &line[start..at]), v));
            }
        }
        offset = at + 4;
        rest = &line[offset..];
    }
    out
}

/// What the report says about the machine and the run.
pub struct Context {
    pub machine: Vec<(&'static str, String)>,
    pub config: Vec<(&'static str, String)>,
}

/// Everything the report holds.
pub struct Report<'a> {
    pub context: &'a Context,
    /// Handler columns in order (`peapod-embedded` among them when it ran).
    pub handlers: &'a [String],
    /// Handlers that could not run at all: name → first line of the error.
    pub unavailable: &'a BTreeMap<String, String>,
    pub rows: &'a [Row],
    pub phases: &'a Phases,
    /// Remarks under the table (resident processes per pod, ...).
    pub notes: &'a [String],
    /// Functional failures (the run exits non-zero when there are any).
    pub failures: &'a [String],
    pub run_seconds: f64,
}

fn cell_text(row: &Row, handler: &str) -> String {
    let Some(cell) = row.cells.get(handler) else {
        return "—".into();
    };
    if let Some(e) = &cell.error {
        return match e.strip_prefix("FAILED: ") {
            Some(e) => format!("**FAILED**: {}", escape(e)),
            None => format!("**n/a**: {}", escape(e)),
        };
    }
    let (Some(m), Some(p)) = (median(&cell.samples), p90(&cell.samples)) else {
        return "—".into();
    };
    let mut s = format!("{} · p90 {}", row.unit.format(m), row.unit.format(p));
    if handler.split('@').next() != Some(BASELINE) {
        if let Some(r) = row.ratio(handler) {
            let _ = write!(s, " · **{r:.2}×**");
        }
    }
    s
}

/// Escapes what would break a markdown table cell.
fn escape(s: &str) -> String {
    s.replace('|', "\\|")
}

impl Report<'_> {
    /// The results as markdown: the machine, the table, peapod's phases, notes.
    pub fn markdown(&self) -> String {
        let mut md = String::new();
        let _ = writeln!(
            md,
            "## peapod vs runc vs crun under containerd (CRI), and peapod's embedded mode\n"
        );
        for (k, v) in self.context.machine.iter().chain(&self.context.config) {
            let _ = writeln!(md, "- {k}: {v}");
        }
        let _ = writeln!(
            md,
            "\nCells: median · p90 · ratio of the median to runc's. Targets are for context, not pass/fail.\n"
        );
        let _ = write!(md, "| measure | n |");
        for h in self.handlers {
            let _ = write!(md, " {h} |");
        }
        let _ = writeln!(md, " target (peapod ÷ runc) |");
        let _ = write!(md, "| --- | ---: |");
        for _ in self.handlers {
            let _ = write!(md, " --- |");
        }
        let _ = writeln!(md, " --- |");
        for row in self.rows {
            let n = row.cells.values().map(|c| c.samples.len()).max().unwrap_or(0);
            let _ = write!(md, "| {} | {n} |", escape(&row.title));
            for h in self.handlers {
                let _ = write!(md, " {} |", cell_text(row, h));
            }
            let target = match (row.target, row.shim_target) {
                (Some(t), Some(s)) => format!("≤ {t}× (peapod-shim: ≤ {s}×)"),
                (Some(t), None) => format!("≤ {t}×"),
                _ => "—".to_string(),
            };
            let _ = writeln!(md, " {target} |");
        }
        let _ = writeln!(md);
        md.push_str(&self.phases_markdown());
        if !self.notes.is_empty() || !self.unavailable.is_empty() {
            let _ = writeln!(md, "\nNotes:\n");
            for (h, e) in self.unavailable {
                let _ = writeln!(md, "- {h} could not run a pod on this machine: {e}");
            }
            for n in self.notes {
                let _ = writeln!(md, "- {n}");
            }
        }
        if !self.failures.is_empty() {
            let _ = writeln!(md, "\nFAILURES:\n");
            for f in self.failures {
                let _ = writeln!(md, "- {f}");
            }
        }
        let _ = writeln!(md, "\nWhole run: {:.0} s.", self.run_seconds);
        md
    }

    /// peapod's per-phase table (or that the log has none).
    pub fn phases_markdown(&self) -> String {
        let p = self.phases;
        if p.create.is_empty() && p.start.is_empty() && p.served.is_empty() && p.startup.is_empty() {
            return "### peapod shim phases\n\nno phase timings in the shim log\n".into();
        }
        let mut md = format!(
            "### peapod shim phases\n\nFrom the shim's `create timings` ({} lines) and `start timings` ({} lines) in \
             containerd's log: every sandbox and container peapod created in this run, warm-ups included. \
             `served`: the shim's time per Task or Sandbox API call of a pod's life (`call served`), \
             from the request reaching its handler to the answer queued; the rest of a CRI call is \
             containerd's and the round trips'. `shim start-up`: from the `start` command's main \
             to the daemon's socket served (`shim serving`), per shim started.\n\n",
            p.create_lines, p.start_lines
        );
        md.push_str("| call | phase | median | p90 | n |\n| --- | --- | ---: | ---: | ---: |\n");
        let startup = [("start-up".to_string(), p.startup.clone())];
        let startup: &[(String, Vec<u64>)] = if p.startup.is_empty() { &[] } else { &startup };
        for (call, fields) in [
            ("shim", startup),
            ("create", &p.create[..]),
            ("start", &p.start[..]),
            ("served", &p.served[..]),
        ] {
            for (name, values) in fields {
                let v: Vec<f64> = values.iter().map(|&x| x as f64).collect();
                let _ = writeln!(
                    md,
                    "| {call} | {} | {} | {} | {} |",
                    name.trim_end_matches("_us"),
                    format_us(median(&v).unwrap_or(0.0)),
                    format_us(p90(&v).unwrap_or(0.0)),
                    values.len()
                );
            }
        }
        md
    }

    /// The results as JSON (samples included).
    pub fn json(&self) -> Value {
        let obj = |pairs: &[(&'static str, String)]| -> Value {
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_string(), Value::String(v.clone())))
                .collect::<serde_json::Map<_, _>>()
                .into()
        };
        let rows: Vec<Value> = self
            .rows
            .iter()
            .map(|row| {
                let mut results = serde_json::Map::new();
                for h in self.handlers {
                    let value = match row.cells.get(h) {
                        Some(Cell { error: Some(e), .. }) => json!({ "error": e }),
                        Some(c) => json!({
                            "n": c.samples.len(),
                            "median": median(&c.samples),
                            "p90": p90(&c.samples),
                            "ratio_to_runc": row.ratio(h),
                            "samples": c.samples,
                        }),
                        None => Value::Null,
                    };
                    results.insert(h.clone(), value);
                }
                json!({
                    "key": row.key,
                    "title": row.title,
                    "unit": row.unit.name(),
                    "target_ratio_peapod_to_runc": row.target,
                    "target_ratio_peapod_shim_to_runc": row.shim_target,
                    "results": results,
                })
            })
            .collect();
        let phase_list = |fields: &[(String, Vec<u64>)]| -> Vec<Value> {
            fields
                .iter()
                .map(|(name, values)| {
                    let v: Vec<f64> = values.iter().map(|&x| x as f64).collect();
                    json!({ "field": name, "n": values.len(), "median_us": median(&v), "p90_us": p90(&v) })
                })
                .collect()
        };
        json!({
            "machine": obj(&self.context.machine),
            "config": obj(&self.context.config),
            "handlers": self.handlers,
            "unavailable": self.unavailable,
            "rows": rows,
            "peapod_phases": {
                "create_lines": self.phases.create_lines,
                "start_lines": self.phases.start_lines,
                "create": phase_list(&self.phases.create),
                "start": phase_list(&self.phases.start),
                "served": phase_list(&self.phases.served),
            },
            "notes": self.notes,
            "failures": self.failures,
            "run_seconds": self.run_seconds,
        })
    }
}

fn format_us(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} ms", v / 1000.0)
    } else {
        format!("{v:.0} µs")
    }
}
