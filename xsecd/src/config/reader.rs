//! A strict reader over toml's spanned document tree ([`DeTable`]).
//!
//! Every value is fetched by key name; every failure carries the byte offset of its key (or
//! of its table's header when the key is missing) and the dotted field path, so the loader
//! can report `FILE:LINE: FIELD: message`. Keys nobody asked for are reported as unknown,
//! which is what `#[serde(deny_unknown_fields)]` would do, but with the path and line kept
//! for every one of them rather than for the first.
//!
//! Failure messages never quote a value unless the caller chooses to: key material passes
//! through here as plain strings.

use core::fmt::Display;
use core::str::FromStr;
use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};

use super::error::{ConfigError, Diagnostic};

/// One problem found while reading: where (byte offset), which field, what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fail {
    pub at: usize,
    pub field: String,
    pub msg: String,
}

pub type Res<T> = Result<T, Fail>;

/// Keep the value of `r`, or record its failure and return `None`.
pub fn keep<T>(fails: &mut Vec<Fail>, r: Res<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(f) => {
            fails.push(f);
            None
        }
    }
}

/// Wipe every string of `doc` the parser had to copy out of the text (those with escapes);
/// the rest borrow the text, which the caller wipes. Key material travels as strings.
pub fn wipe(doc: &mut DeTable<'_>) {
    use zeroize::Zeroize;
    fn string(s: &mut DeString<'_>) {
        if let std::borrow::Cow::Owned(o) = s {
            o.zeroize();
        }
    }
    fn value(v: &mut DeValue<'_>) {
        match v {
            DeValue::String(s) => string(s),
            DeValue::Array(a) => a.iter_mut().for_each(|e| value(e.get_mut())),
            DeValue::Table(t) => wipe(t),
            _ => {}
        }
    }
    for (_, v) in doc.iter_mut() {
        value(v.get_mut());
    }
}

/// The keys of `candidates` that `typed` probably meant: those it abbreviates or extends
/// (`encr`, `enc_key` for `enc_key_in`/`enc_key_out`), else those within a small edit
/// distance (`intergity`).
fn suggestions(typed: &str, candidates: &[&'static str]) -> Vec<&'static str> {
    let typed = typed.to_ascii_lowercase();
    // other tools' names (strongSwan, VPP, appliances) for xsec's keys
    const OTHER_NAMES: &[(&str, &[&str])] = &[
        ("src", &["local"]),
        ("dst", &["remote"]),
        ("source", &["local"]),
        ("destination", &["remote"]),
        ("local_ts", &["local"]),
        ("remote_ts", &["remote"]),
        ("auth", &["integrity"]),
        ("spi", &["spi_in", "spi_out"]),
        ("proto", &["protocol"]),
    ];
    if let Some((_, meant)) = OTHER_NAMES.iter().find(|(other, _)| *other == typed) {
        let found: Vec<&'static str> = candidates
            .iter()
            .copied()
            .filter(|c| meant.contains(c))
            .collect();
        if !found.is_empty() {
            return found;
        }
    }
    let affix: Vec<&'static str> = candidates
        .iter()
        .copied()
        .filter(|c| typed.len() >= 3 && (c.starts_with(&typed) || typed.starts_with(c)))
        .collect();
    if !affix.is_empty() {
        return affix;
    }
    let limit = (typed.len() / 3).clamp(1, 3);
    let best = candidates
        .iter()
        .map(|c| (edit_distance(&typed, c), *c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d);
    best.map(|(_, c)| vec![c]).unwrap_or_default()
}

/// Levenshtein distance over bytes (keys are ASCII).
fn edit_distance(a: &str, b: &str) -> usize {
    let b = b.as_bytes();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.bytes().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// A configuration file's text, in a buffer wiped when dropped (files hold keys).
pub fn read_text(path: &std::path::Path) -> Result<zeroize::Zeroizing<String>, ConfigError> {
    std::fs::read_to_string(path)
        .map(zeroize::Zeroizing::new)
        .map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })
}

/// Parse `text` (from `path`, named in messages) into a spanned document, let `build` read
/// it, wipe the strings the parser copied, and turn the failures and warnings `build`
/// recorded into located [`Diagnostic`]s. `build` returns `None`, or leaves failures in
/// its vector, when the document is not usable: then the whole load fails.
pub fn read_document<T>(
    text: &str,
    path: &std::path::Path,
    build: impl FnOnce(&Spanned<DeTable<'_>>, &mut Vec<Fail>) -> (Option<T>, Vec<Fail>),
) -> Result<(T, Vec<Diagnostic>), ConfigError> {
    let lines = Lines::new(text);
    let diag = |f: Fail| Diagnostic {
        path: path.to_owned(),
        line: lines.line(f.at),
        field: f.field,
        message: f.msg,
    };
    let mut doc = match DeTable::parse(text) {
        Ok(d) => d,
        Err(e) => {
            // The parser's message only: its Display would quote the line, which may be a key.
            return Err(ConfigError::Invalid(vec![diag(Fail {
                at: e.span().map_or(0, |s| s.start),
                field: "syntax".into(),
                msg: e.message().trim_end().to_owned(),
            })]));
        }
    };
    let mut fails = vec![];
    let (value, warnings) = build(&doc, &mut fails);
    wipe(doc.get_mut());
    match value {
        Some(v) if fails.is_empty() => Ok((v, warnings.into_iter().map(diag).collect())),
        _ => {
            let mut d: Vec<Diagnostic> = fails.into_iter().map(diag).collect();
            d.sort_by_key(|d| d.line);
            d.dedup();
            Err(ConfigError::Invalid(d))
        }
    }
}

/// 1-based line of a byte offset (for one lookup; many go through [`Lines`]).
pub fn line_of(text: &str, at: usize) -> usize {
    Lines::new(text).line(at)
}

/// The line starts of a text, for many offset-to-line lookups: a file of 10,000 SAs has
/// 10,000 of them, and counting newlines from the start each time was quadratic.
#[derive(Debug)]
pub struct Lines {
    /// Offsets of the newlines, in order.
    newlines: Vec<usize>,
}

impl Lines {
    pub fn new(text: &str) -> Self {
        let newlines = text
            .bytes()
            .enumerate()
            .filter_map(|(i, b)| (b == b'\n').then_some(i))
            .collect();
        Lines { newlines }
    }

    /// 1-based line of byte offset `at` (past the end: the last line).
    pub fn line(&self, at: usize) -> usize {
        1 + self.newlines.partition_point(|&n| n < at)
    }
}

/// A table being read.
pub struct Table<'t, 'i> {
    /// Dotted path of the table (`sa[1]`, `sa[1].lifetime`); empty for the document root.
    path: String,
    /// Offset of the table's header (or of its inline `{`).
    at: usize,
    entries: Vec<Entry<'t, 'i>>,
    /// Keys the schema asked for, in the order asked: the list shown for an unknown key.
    known: Vec<&'static str>,
}

struct Entry<'t, 'i> {
    key: &'t Spanned<DeString<'i>>,
    val: &'t Spanned<DeValue<'i>>,
    used: bool,
}

/// Byte offsets of a table's keys, kept after the table is consumed so that checks made
/// later (engine validation, cross-references) can point at the right line.
#[derive(Debug, Clone)]
pub struct Locs {
    pub path: String,
    pub header: usize,
    keys: Vec<(String, usize)>,
}

impl Locs {
    /// Offset of `key`, or of the table header when the key is absent.
    pub fn at(&self, key: &str) -> usize {
        self.keys
            .iter()
            .find(|(k, _)| k == key)
            .map_or(self.header, |(_, a)| *a)
    }

    pub fn field(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// A failure about `key` of this table.
    pub fn fail(&self, key: &str, msg: impl Into<String>) -> Fail {
        Fail {
            at: self.at(key),
            field: self.field(key),
            msg: msg.into(),
        }
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl<'t, 'i> Table<'t, 'i> {
    pub fn root(doc: &'t Spanned<DeTable<'i>>) -> Self {
        Self::new(String::new(), doc.span().start, doc.get_ref())
    }

    fn new(path: String, at: usize, t: &'t DeTable<'i>) -> Self {
        Table {
            path,
            at,
            entries: t
                .iter()
                .map(|(key, val)| Entry {
                    key,
                    val,
                    used: false,
                })
                .collect(),
            known: vec![],
        }
    }

    pub fn locs(&self) -> Locs {
        Locs {
            path: self.path.clone(),
            header: self.at,
            keys: self
                .entries
                .iter()
                .map(|e| (e.key.get_ref().to_string(), e.key.span().start))
                .collect(),
        }
    }

    /// An optional key.
    pub fn get(&mut self, key: &'static str) -> Option<Val<'t, 'i>> {
        self.known.push(key);
        let e = self
            .entries
            .iter_mut()
            .find(|e| e.key.get_ref().as_ref() == key)?;
        e.used = true;
        Some(Val {
            field: join(&self.path, key),
            at: e.key.span().start,
            v: e.val.get_ref(),
            span_start: e.val.span().start,
        })
    }

    /// A required key.
    pub fn req(&mut self, key: &'static str) -> Res<Val<'t, 'i>> {
        self.get(key)
            .ok_or_else(|| self.missing(key, "missing required key"))
    }

    /// Every key not asked for yet, marked as used: the entries of a table whose keys are
    /// names (`[connections.NAME]`), in file order.
    pub fn rest(&mut self) -> Vec<(String, Val<'t, 'i>)> {
        self.entries
            .iter_mut()
            .filter(|e| !e.used)
            .map(|e| {
                e.used = true;
                let key: &str = e.key.get_ref();
                (
                    key.to_owned(),
                    Val {
                        field: join(&self.path, key),
                        at: e.key.span().start,
                        v: e.val.get_ref(),
                        span_start: e.val.span().start,
                    },
                )
            })
            .collect()
    }

    /// A failure for a key that is absent, located at the table header.
    pub fn missing(&self, key: &str, msg: impl Into<String>) -> Fail {
        Fail {
            at: self.at,
            field: join(&self.path, key),
            msg: msg.into(),
        }
    }

    /// Report every key that no `get`/`req` asked for. An unknown key that looks like a
    /// misspelling of keys asked for and absent names them, and the "missing" failures of
    /// those keys are withdrawn: one typo, one message.
    pub fn finish(self, fails: &mut Vec<Fail>) {
        let absent: Vec<&'static str> = self
            .known
            .iter()
            .copied()
            .filter(|k| !self.entries.iter().any(|e| e.key.get_ref().as_ref() == *k))
            .collect();
        for e in self.entries.iter().filter(|e| !e.used) {
            let key: &str = e.key.get_ref();
            let meant = suggestions(key, &absent);
            let msg = if meant.is_empty() {
                format!("unknown key (expected one of: {})", self.known.join(", "))
            } else {
                let fields: Vec<String> = meant.iter().map(|k| join(&self.path, k)).collect();
                fails.retain(|f| !(f.at == self.at && fields.contains(&f.field)));
                let names: Vec<String> = meant.iter().map(|k| format!("\"{k}\"")).collect();
                format!("unknown key; did you mean {}?", names.join(" or "))
            };
            fails.push(Fail {
                at: e.key.span().start,
                field: join(&self.path, key),
                msg,
            });
        }
    }
}

// Debug shows where, never what: values may be key material.
impl core::fmt::Debug for Table<'_, '_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Table")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl core::fmt::Debug for Val<'_, '_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Val")
            .field("field", &self.field)
            .finish_non_exhaustive()
    }
}

/// A value with its field path and location.
#[derive(Clone)]
pub struct Val<'t, 'i> {
    pub field: String,
    /// Offset of the key (or, for an array element, of the element).
    pub at: usize,
    v: &'t DeValue<'i>,
    span_start: usize,
}

impl<'t, 'i> Val<'t, 'i> {
    pub fn fail(&self, msg: impl Into<String>) -> Fail {
        Fail {
            at: self.at,
            field: self.field.clone(),
            msg: msg.into(),
        }
    }

    fn expected(&self, what: &str) -> Fail {
        self.fail(format!("expected {what}, found {}", self.kind()))
    }

    fn kind(&self) -> &'static str {
        match self.v {
            DeValue::String(_) => "a string",
            DeValue::Integer(_) => "an integer",
            DeValue::Float(_) => "a float",
            DeValue::Boolean(_) => "a boolean",
            DeValue::Datetime(_) => "a date-time",
            DeValue::Array(_) => "an array",
            DeValue::Table(_) => "a table",
        }
    }

    pub fn is_str(&self) -> bool {
        matches!(self.v, DeValue::String(_))
    }

    pub fn is_int(&self) -> bool {
        matches!(self.v, DeValue::Integer(_))
    }

    pub fn string(&self) -> Res<&'t str> {
        match self.v {
            DeValue::String(s) => Ok(s.as_ref()),
            _ => Err(self.expected("a string")),
        }
    }

    pub fn boolean(&self) -> Res<bool> {
        match self.v {
            DeValue::Boolean(b) => Ok(*b),
            _ => Err(self.expected("true or false")),
        }
    }

    /// Any TOML integer (decimal, hex, octal, binary literals).
    pub fn int(&self) -> Res<i128> {
        match self.v {
            DeValue::Integer(i) => i128::from_str_radix(i.as_str(), i.radix())
                .map_err(|_| self.fail("integer out of range")),
            _ => Err(self.expected("an integer")),
        }
    }

    /// An integer in `lo..=hi`.
    pub fn uint<T>(&self, lo: T, hi: T) -> Res<T>
    where
        T: Copy + Display + TryFrom<i128>,
        i128: From<T>,
    {
        let n = self.int()?;
        if n < i128::from(lo) || n > i128::from(hi) {
            return Err(self.fail(format!("{n} is out of range {lo}..={hi}")));
        }
        T::try_from(n).map_err(|_| self.fail(format!("{n} is out of range {lo}..={hi}")))
    }

    /// A string naming one of `opts` (ASCII case-insensitive).
    pub fn choice<T: Copy>(&self, opts: &[(&'static str, T)]) -> Res<T> {
        let names = || {
            opts.iter()
                .map(|(n, _)| format!("{n:?}"))
                .collect::<Vec<_>>()
                .join(" | ")
        };
        let s = self.string().map_err(|f| Fail {
            msg: format!("{}; expected one of {}", f.msg, names()),
            ..f
        })?;
        opts.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(s.trim()))
            .map(|(_, v)| *v)
            .ok_or_else(|| self.fail(format!("unknown value {s:?}; expected one of {}", names())))
    }

    /// A string parsed with `FromStr`; the parser's error is the message.
    pub fn parse<T>(&self) -> Res<T>
    where
        T: FromStr,
        T::Err: Display,
    {
        let s = self.string()?;
        s.trim()
            .parse()
            .map_err(|e: T::Err| self.fail(e.to_string()))
    }

    /// Array elements, each with its own path (`queues[1]`) and location.
    pub fn array(&self) -> Res<Vec<Val<'t, 'i>>> {
        match self.v {
            DeValue::Array(a) => Ok(a
                .iter()
                .enumerate()
                .map(|(i, e)| Val {
                    field: format!("{}[{i}]", self.field),
                    at: e.span().start,
                    v: e.get_ref(),
                    span_start: e.span().start,
                })
                .collect()),
            _ => Err(self.expected("an array")),
        }
    }

    pub fn table(&self) -> Res<Table<'t, 'i>> {
        match self.v {
            DeValue::Table(t) => Ok(Table::new(self.field.clone(), self.span_start, t)),
            _ => Err(self.expected("a table")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misspelt_keys_find_what_was_meant() {
        let absent = [
            "encryption",
            "integrity",
            "enc_key_in",
            "enc_key_out",
            "local",
        ];
        assert_eq!(suggestions("encr", &absent), ["encryption"]);
        assert_eq!(
            suggestions("enc_key", &absent),
            ["enc_key_in", "enc_key_out"]
        );
        assert_eq!(suggestions("intergity", &absent), ["integrity"]);
        assert_eq!(suggestions("locl", &absent), ["local"]);
        assert_eq!(suggestions("src", &absent), ["local"]);
        assert!(suggestions("dst", &absent).is_empty());
        assert!(suggestions("banana", &absent).is_empty());
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    #[test]
    fn wipe_clears_the_strings_the_parser_copied() {
        // an escape makes the parser copy the string out of the text
        let text = "[[sa]]\nenc_key = \"0x\\u0030102\"\nname = \"plain\"\n";
        let mut doc = DeTable::parse(text).unwrap();
        let key = |doc: &Spanned<DeTable<'_>>| -> (bool, String) {
            let DeValue::Array(a) = doc.get_ref()["sa"].get_ref() else {
                panic!("sa is an array")
            };
            let DeValue::Table(t) = a[0].get_ref() else {
                panic!("an array of tables")
            };
            let DeValue::String(s) = t["enc_key"].get_ref() else {
                panic!("a string")
            };
            (matches!(s, std::borrow::Cow::Owned(_)), s.to_string())
        };
        assert_eq!(key(&doc), (true, "0x0102".to_string()));
        wipe(doc.get_mut());
        assert_eq!(key(&doc), (true, String::new()));
    }
}
