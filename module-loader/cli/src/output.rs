//! Output helpers shared by the subcommands: a minimal JSON value with its own escaper (the
//! command line needs to *write* JSON only, so it carries no JSON dependency), aligned text
//! tables in kmod's style, and human-readable durations and percentiles.

use std::fmt::{self, Write as _};
use std::time::Duration;

/// A JSON value, written compactly by `Display`.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// An integer.
    Int(i128),
    /// A float (non-finite values are written as `null`).
    Float(f64),
    /// A string.
    Str(String),
    /// An array.
    Arr(Vec<Json>),
    /// An object, keys in insertion order.
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// An empty object.
    pub fn obj() -> Json {
        Json::Obj(Vec::new())
    }

    /// Add `key: value` to an object (no-op on other values).
    pub fn with(mut self, key: &str, value: impl Into<Json>) -> Json {
        if let Json::Obj(v) = &mut self {
            v.push((key.to_owned(), value.into()));
        }
        self
    }
}

impl From<bool> for Json {
    fn from(b: bool) -> Json {
        Json::Bool(b)
    }
}
impl From<u64> for Json {
    fn from(n: u64) -> Json {
        Json::Int(n.into())
    }
}
impl From<u32> for Json {
    fn from(n: u32) -> Json {
        Json::Int(n.into())
    }
}
impl From<usize> for Json {
    fn from(n: usize) -> Json {
        Json::Int(n as i128)
    }
}
impl From<f64> for Json {
    fn from(n: f64) -> Json {
        Json::Float(n)
    }
}
impl From<&str> for Json {
    fn from(s: &str) -> Json {
        Json::Str(s.to_owned())
    }
}
impl From<String> for Json {
    fn from(s: String) -> Json {
        Json::Str(s)
    }
}
impl<T: Into<Json>> From<Option<T>> for Json {
    fn from(o: Option<T>) -> Json {
        o.map_or(Json::Null, Into::into)
    }
}
impl<T: Into<Json>> From<Vec<T>> for Json {
    fn from(v: Vec<T>) -> Json {
        Json::Arr(v.into_iter().map(Into::into).collect())
    }
}

/// Write `s` as a JSON string literal (RFC 8259: quote, backslash and control characters
/// escaped; everything else, including non-ASCII, written as is in UTF-8).
pub fn json_string(out: &mut impl fmt::Write, s: &str) -> fmt::Result {
    out.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => out.write_str("\\\"")?,
            '\\' => out.write_str("\\\\")?,
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            '\u{8}' => out.write_str("\\b")?,
            '\u{c}' => out.write_str("\\f")?,
            c if (c as u32) < 0x20 || c == '\u{7f}' => write!(out, "\\u{:04x}", c as u32)?,
            // Line and paragraph separators are valid JSON but break JavaScript parsers.
            '\u{2028}' | '\u{2029}' => write!(out, "\\u{:04x}", c as u32)?,
            c => out.write_char(c)?,
        }
    }
    out.write_char('"')
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Json::Null => f.write_str("null"),
            Json::Bool(b) => write!(f, "{b}"),
            Json::Int(n) => write!(f, "{n}"),
            Json::Float(x) if x.is_finite() => {
                if x.fract() == 0.0 && x.abs() < 1e15 {
                    write!(f, "{x:.1}")
                } else {
                    write!(f, "{x}")
                }
            }
            Json::Float(_) => f.write_str("null"),
            Json::Str(s) => json_string(f, s),
            Json::Arr(v) => {
                f.write_char('[')?;
                for (i, x) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    write!(f, "{x}")?;
                }
                f.write_char(']')
            }
            Json::Obj(v) => {
                f.write_char('{')?;
                for (i, (k, x)) in v.iter().enumerate() {
                    if i > 0 {
                        f.write_char(',')?;
                    }
                    json_string(f, k)?;
                    write!(f, ":{x}")?;
                }
                f.write_char('}')
            }
        }
    }
}

/// Column alignment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Align {
    /// Pad on the right.
    Left,
    /// Pad on the left (numbers).
    Right,
}

/// A text table: a header row and rows, columns padded to their widest cell, two spaces
/// between columns, trailing spaces trimmed.
#[derive(Debug)]
pub struct Table {
    header: Vec<(String, Align)>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column headers.
    pub fn new(header: &[(&str, Align)]) -> Table {
        Table {
            header: header.iter().map(|(h, a)| ((*h).to_owned(), *a)).collect(),
            rows: Vec::new(),
        }
    }

    /// Add a row (missing cells are empty).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// Render with column minimum widths `min` (e.g. kmod's 19 for the module name).
    pub fn render(&self, min: &[usize]) -> String {
        let n = self.header.len();
        let mut w: Vec<usize> = (0..n)
            .map(|i| {
                min.get(i)
                    .copied()
                    .unwrap_or(0)
                    .max(self.header[i].0.chars().count())
            })
            .collect();
        for r in &self.rows {
            for (i, c) in r.iter().enumerate().take(n) {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let mut out = String::new();
        let mut line = |cells: &[String]| {
            let mut l = String::new();
            for (i, (width, (_, align))) in w.iter().zip(&self.header).enumerate() {
                let c = cells.get(i).map(String::as_str).unwrap_or("");
                let pad = width.saturating_sub(c.chars().count());
                if i > 0 {
                    l.push_str("  ");
                }
                match align {
                    Align::Left => {
                        l.push_str(c);
                        l.extend(std::iter::repeat_n(' ', pad));
                    }
                    Align::Right => {
                        l.extend(std::iter::repeat_n(' ', pad));
                        l.push_str(c);
                    }
                }
            }
            out.push_str(l.trim_end());
            out.push('\n');
        };
        let header: Vec<String> = self.header.iter().map(|(h, _)| h.clone()).collect();
        line(&header);
        for r in &self.rows {
            line(r);
        }
        out
    }
}

/// A duration for humans: `812ns`, `14.2µs`, `3.41ms`, `1.20s`.
pub fn human(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns < 1_000 {
        format!("{ns}ns")
    } else if ns < 1_000_000 {
        format!("{:.1}µs", ns as f64 / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2}ms", ns as f64 / 1e6)
    } else {
        format!("{:.2}s", ns as f64 / 1e9)
    }
}

/// The `p`-th percentile (0–100, nearest rank) of `sorted`, which must be sorted.
pub fn percentile(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_escapes() {
        let j = Json::obj()
            .with("s", "a\"b\\c\nd\u{1}é")
            .with("n", 3u64)
            .with("f", 1.5)
            .with("x", Json::Null)
            .with("a", vec!["x", "y"]);
        assert_eq!(
            j.to_string(),
            r#"{"s":"a\"b\\c\nd\u0001é","n":3,"f":1.5,"x":null,"a":["x","y"]}"#
        );
        assert_eq!(Json::Float(f64::NAN).to_string(), "null");
        assert_eq!(Json::Float(2.0).to_string(), "2.0");
    }

    #[test]
    fn table_aligns() {
        let mut t = Table::new(&[("Module", Align::Left), ("Size", Align::Right)]);
        t.row(vec!["a".into(), "12345".into()]);
        assert_eq!(t.render(&[6]), "Module   Size\na       12345\n");
    }

    #[test]
    fn percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&v, 99.0), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&[], 50.0), None);
        assert_eq!(human(Duration::from_micros(1500)), "1.50ms");
    }
}
