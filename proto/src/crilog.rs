//! Kubernetes' CRI container log format, written as containerd's CRI plugin writes it and
//! read as kubelet's `kubectl logs` backend does (`pkg/kubelet/kuberuntime/logs`): each
//! record is
//! `<RFC 3339 time> <stdout|stderr> <F|P> <text>`; `P` (partial) records continue in
//! the next record of the same stream until an `F` one ends the line.
//!
//! containerd's CRI plugin writes these logs under CRI; peapod's shim writes them too for
//! the CLI's embedded mode (stdio URI `file://…?format=cri`), with [`record`].

use std::io::{self, BufRead, Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

/// A malformed record.
#[derive(Debug, thiserror::Error)]
#[error("CRI log record {record:?}: {reason}")]
pub struct ParseError {
    /// The record as read.
    pub record: String,
    /// What is wrong.
    pub reason: &'static str,
}

/// One parsed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    /// The time as written (RFC 3339, up to nanoseconds).
    pub time: &'a str,
    /// `stdout` or `stderr`.
    pub stream: &'a str,
    /// False for a partial (`P`) record.
    pub full: bool,
    /// The text, without the newline.
    pub text: &'a str,
}

/// Parses one record (kubelet's `parseCRILog` checks the same fields).
///
/// Errors: fewer than three fields, a time that is not RFC 3339, another stream than
/// stdout/stderr, a tag other than F/P.
pub fn parse(line: &str) -> Result<Record<'_>, ParseError> {
    let err = |reason| ParseError {
        record: line.to_string(),
        reason,
    };
    let mut fields = line.splitn(4, ' ');
    let (Some(time), Some(stream), Some(tag)) = (fields.next(), fields.next(), fields.next()) else {
        return Err(err("fewer than 3 fields"));
    };
    if time.parse::<jiff::Timestamp>().is_err() {
        return Err(err("the time is not RFC 3339"));
    }
    if stream != "stdout" && stream != "stderr" {
        return Err(err("the stream is neither stdout nor stderr"));
    }
    let full = match tag {
        "F" => true,
        "P" => false,
        _ => return Err(err("the tag is neither F nor P")),
    };
    Ok(Record {
        time,
        stream,
        full,
        text: fields.next().unwrap_or_default(),
    })
}

/// One record: `<RFC 3339 time, now> <stream> <F|P> <text>\n`, to be written in one
/// `write` so that records of a container's two streams never interleave. `text` is one
/// line without its newline; `full` is false for a partial (`P`) record, whose line goes
/// on in the stream's next record.
pub fn record(stream: &str, full: bool, text: &[u8]) -> Vec<u8> {
    let tag = if full { 'F' } else { 'P' };
    let mut record = format!("{} {stream} {tag} ", jiff::Timestamp::now()).into_bytes();
    record.extend_from_slice(text);
    record.push(b'\n');
    record
}

/// How to print a log.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// Prefix each line with its time (`--timestamps`).
    pub timestamps: bool,
    /// Only lines written at or after this time (one run of a restarted container).
    pub since: Option<jiff::Timestamp>,
    /// Only lines written at or before this time.
    pub until: Option<jiff::Timestamp>,
}

/// Turns CRI records into lines, joining partials; keeps unfinished lines between calls
/// so a followed log can be fed as it grows.
#[derive(Debug, Default)]
pub struct Lines {
    opts: Options,
    /// Per stream: the text of its unfinished line.
    pending: Vec<(String, String)>,
}

impl Lines {
    /// A reader printing with `opts`.
    pub fn new(opts: Options) -> Self {
        Self {
            opts,
            pending: Vec::new(),
        }
    }

    /// Copies the complete records of `reader` to `out` as lines; returns how many bytes
    /// were consumed (an unterminated last record is left to be read again once whole).
    /// Malformed records are skipped with a warning on stderr, as kubelet skips them.
    pub fn feed(&mut self, reader: impl Read, out: &mut impl Write) -> io::Result<u64> {
        let mut reader = io::BufReader::new(reader);
        let mut consumed = 0u64;
        let mut line = String::new();
        loop {
            line.clear();
            let n = reader.read_line(&mut line)?;
            if n == 0 || !line.ends_with('\n') {
                return Ok(consumed);
            }
            consumed += n as u64;
            let record = match parse(line.trim_end_matches('\n')) {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("peapod: warning: {e}");
                    continue;
                }
            };
            if self.opts.since.is_some() || self.opts.until.is_some() {
                let t: Option<jiff::Timestamp> = record.time.parse().ok();
                if t.zip(self.opts.since).is_some_and(|(t, s)| t < s)
                    || t.zip(self.opts.until).is_some_and(|(t, u)| t > u)
                {
                    continue;
                }
            }
            let slot = match self.pending.iter().position(|(s, _)| s == record.stream) {
                Some(i) => i,
                None => {
                    self.pending.push((record.stream.to_string(), String::new()));
                    self.pending.len() - 1
                }
            };
            let text = &mut self.pending[slot].1;
            if text.is_empty() && self.opts.timestamps {
                text.push_str(record.time);
                text.push(' ');
            }
            text.push_str(record.text);
            if record.full {
                let mut done = std::mem::take(text);
                done.push('\n');
                out.write_all(done.as_bytes())?;
            }
        }
    }
}

/// Prints the log at `path`; with `follow`, keeps printing what is appended until
/// `running()` turns false and nothing more arrives (`logs -f`).
///
/// Errors: the file cannot be opened or read, or `out` cannot be written.
pub fn print(
    path: &Path,
    out: &mut impl Write,
    opts: Options,
    follow: bool,
    running: &dyn Fn() -> bool,
) -> io::Result<()> {
    let mut file = std::fs::File::open(path)?;
    let mut lines = Lines::new(opts);
    let mut offset = 0u64;
    loop {
        // Checked before reading: whatever a stopped container wrote is in the file.
        let alive = follow && running();
        file.seek(SeekFrom::Start(offset))?;
        offset += lines.feed(&mut file, out)?;
        out.flush()?;
        if !alive {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_parse_and_bad_ones_are_refused() {
        let r = parse("2016-10-06T00:17:09.669794202Z stdout F hello world").unwrap();
        assert_eq!((r.stream, r.full, r.text), ("stdout", true, "hello world"));
        assert!(parse("2016-10-06T00:17:09+02:00 stderr P").is_ok());
        assert!(parse("yesterday stdout F x").is_err());
        assert!(parse("2016-10-06T00:17:09Z stdin F x").is_err());
        assert!(parse("2016-10-06T00:17:09Z stdout X x").is_err());
    }

    #[test]
    fn written_records_parse_back() {
        let rec = record("stderr", false, b"half a line");
        let line = std::str::from_utf8(&rec).unwrap();
        assert!(line.ends_with('\n'), "{line:?}");
        let r = parse(line.trim_end_matches('\n')).unwrap();
        assert_eq!((r.stream, r.full, r.text), ("stderr", false, "half a line"));
    }

    #[test]
    fn partials_join_and_timestamps_prefix_lines() {
        let log = "2024-01-01T00:00:00Z stdout P hel\n\
                   2024-01-01T00:00:01Z stderr F oops\n\
                   2024-01-01T00:00:02Z stdout F lo\n\
                   2024-01-01T00:00:03Z stdout F unterminated";
        let mut out = Vec::new();
        let n = Lines::default().feed(log.as_bytes(), &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "oops\nhello\n");
        assert_eq!(usize::try_from(n).unwrap(), log.rfind('\n').unwrap() + 1);
        let mut out = Vec::new();
        let stamped = Options {
            timestamps: true,
            ..Default::default()
        };
        Lines::new(stamped).feed(log.as_bytes(), &mut out).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2024-01-01T00:00:01Z oops\n2024-01-01T00:00:00Z hello\n"
        );
        // Fed in pieces (a followed log): the partial waits for its end.
        let mut lines = Lines::default();
        let mut out = Vec::new();
        let (first, rest) = log.split_at(log.find("2024-01-01T00:00:01Z").unwrap());
        lines.feed(first.as_bytes(), &mut out).unwrap();
        assert!(out.is_empty());
        lines.feed(rest.as_bytes(), &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "oops\nhello\n");
        // A time window (one run of a restarted container).
        let window = Options {
            since: Some("2024-01-01T00:00:01Z".parse().unwrap()),
            until: Some("2024-01-01T00:00:01.5Z".parse().unwrap()),
            ..Default::default()
        };
        let mut out = Vec::new();
        Lines::new(window).feed(log.as_bytes(), &mut out).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "oops\n");
    }
}
