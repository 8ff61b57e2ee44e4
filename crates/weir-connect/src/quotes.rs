//! A CSV file whose last record opens a quote and never closes it.
//!
//! DuckDB's reader has no good answer for such a file: its sniffer either fails on the
//! whole file or settles on a dialect without quotes and splits every quoted field that
//! holds a delimiter (rows rejected as "too many columns", or values loaded wrong). So
//! every CSV file a load reads is scanned here, alongside the engine, for the one thing the
//! engine gets wrong. By the CSV rules a quote left open runs to the end of the file, so
//! the broken record is everything from the start of its line on; the rows before it are
//! read as usual from a copy that stops where it starts.
//!
//! The scan only follows quotes: it does not split fields or count columns, which the
//! engine does. A quote opens a field only at the start of one (after a delimiter or a
//! line break), as the engine reads them; one inside an unquoted field is text.

use std::io::Read;
use std::path::Path;

/// The quote left open at the end of a file, and the record it breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unterminated {
    /// Byte offset where the broken record's line starts: the rows before it are sound.
    pub record_start: u64,
    /// 1-based line of that record.
    pub line: u64,
    /// 1-based line and byte column of the quote that opens and never closes.
    pub quote_line: u64,
    pub quote_column: u64,
}

/// How the file quotes: its quote and escape bytes, and which bytes may end a field before
/// a quote opens the next one (the delimiter when the load names it, else the usual ones).
#[derive(Debug, Clone, Copy)]
pub struct Dialect {
    pub quote: u8,
    pub escape: u8,
    delimiters: [u8; 4],
}

impl Dialect {
    /// The dialect of a load's options: `"` quotes and escapes unless they say otherwise;
    /// `None` when the options turn quoting off or use more than one byte for it.
    pub fn of(delimiter: Option<&str>, quote: Option<&str>, escape: Option<&str>) -> Option<Dialect> {
        let byte = |s: &str| (s.len() == 1).then(|| s.as_bytes()[0]);
        let quote = match quote {
            Some(q) => byte(q)?,
            None => b'"',
        };
        let escape = match escape {
            Some("") => quote,
            Some(e) => byte(e)?,
            None => quote,
        };
        let delimiters = match delimiter.map(|d| if d == "\\t" { "\t" } else { d }) {
            Some(d) => [byte(d)?; 4],
            None => [b',', b';', b'\t', b'|'],
        };
        Some(Dialect { quote, escape, delimiters })
    }

    fn starts_field(&self, prev: Option<u8>) -> bool {
        match prev {
            None | Some(b'\n' | b'\r') => true,
            Some(b) => self.delimiters.contains(&b),
        }
    }
}

/// Reads a file (decompressing `.gz` and `.zst`) and says where a quote is left open, if
/// one is. Files are read in pieces; memory stays flat whatever their size.
pub fn unterminated_quote(path: &Path, dialect: Dialect) -> Result<Option<Unterminated>, String> {
    let mut reader = crate::files::open(path)?;
    let mut scan = Scan::new(dialect);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf).map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        scan.feed(&buf[..n]);
    }
    scan.finish();
    if !scan.in_quote {
        return Ok(None);
    }
    // Only now, for a broken file, are lines counted: a second read up to the quote.
    let mut reader = crate::files::open(path)?;
    let (mut lines_before_record, mut lines_before_quote, mut quote_line_start) = (0u64, 0u64, 0u64);
    let mut at = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(|e| format!("{}: {e}", path.display()))?;
        if n == 0 || at > scan.open_at {
            break;
        }
        for i in memchr::memchr_iter(b'\n', &buf[..n]) {
            let pos = at + i as u64;
            if pos >= scan.open_at {
                break;
            }
            lines_before_quote += 1;
            quote_line_start = pos + 1;
            if pos < scan.record_start {
                lines_before_record += 1;
            }
        }
        at += n as u64;
    }
    Ok(Some(Unterminated {
        record_start: scan.record_start,
        line: lines_before_record + 1,
        quote_line: lines_before_quote + 1,
        quote_column: scan.open_at - quote_line_start + 1,
    }))
}

/// Splits a file where its broken record starts: a copy of the sound rows before it (as
/// plain CSV, decompressed), for the engine to read, and the broken record's text, kept as
/// the rejected row.
pub fn split(path: &Path, at: u64) -> Result<(tempfile::NamedTempFile, String), String> {
    let err = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut reader = crate::files::open(path)?;
    let mut clean = tempfile::Builder::new().prefix("weir-csv-").suffix(".csv").tempfile().map_err(err)?;
    let copied = std::io::copy(&mut (&mut reader).take(at), clean.as_file_mut()).map_err(err)?;
    if copied != at {
        return Err(format!("{}: the file ended at byte {copied} while it was read again", path.display()));
    }
    let mut rest = Vec::new();
    reader.read_to_end(&mut rest).map_err(err)?;
    let text = String::from_utf8_lossy(&rest);
    Ok((clean, text.trim_end_matches(['\n', '\r']).to_string()))
}

/// The scan's state between pieces of the file.
struct Scan {
    dialect: Dialect,
    /// Bytes seen before the current piece.
    offset: u64,
    in_quote: bool,
    /// Inside quotes: the escape byte was the last byte of the previous piece.
    escaped: bool,
    /// Inside quotes, with the escape byte being the quote: a quote ended the previous
    /// piece, and the next byte says whether it closed the field or was doubled.
    quote_pending: bool,
    prev: Option<u8>,
    /// Where the current record's line starts, and where its open quote is.
    record_start: u64,
    open_at: u64,
}

impl Scan {
    fn new(dialect: Dialect) -> Scan {
        Scan { dialect, offset: 0, in_quote: false, escaped: false, quote_pending: false, prev: None, record_start: 0, open_at: 0 }
    }

    fn feed(&mut self, buf: &[u8]) {
        let (q, e) = (self.dialect.quote, self.dialect.escape);
        let mut i = 0;
        while i < buf.len() {
            if self.escaped {
                self.escaped = false;
                i += 1;
                continue;
            }
            if self.quote_pending {
                self.quote_pending = false;
                if buf[i] == q {
                    // A doubled quote: one quote character inside the field.
                    i += 1;
                    continue;
                }
                self.in_quote = false;
            }
            if !self.in_quote {
                let rest = &buf[i..];
                match memchr::memchr(q, rest) {
                    None => {
                        if let Some(nl) = memchr::memrchr(b'\n', rest) {
                            self.record_start = self.offset + (i + nl + 1) as u64;
                        }
                        i = buf.len();
                    }
                    Some(k) => {
                        if let Some(nl) = memchr::memrchr(b'\n', &rest[..k]) {
                            self.record_start = self.offset + (i + nl + 1) as u64;
                        }
                        let prev = if i + k == 0 { self.prev } else { Some(buf[i + k - 1]) };
                        if self.dialect.starts_field(prev) {
                            self.in_quote = true;
                            self.open_at = self.offset + (i + k) as u64;
                        }
                        i += k + 1;
                    }
                }
            } else {
                let rest = &buf[i..];
                let found = if e == q { memchr::memchr(q, rest) } else { memchr::memchr2(q, e, rest) };
                match found {
                    None => i = buf.len(),
                    Some(k) => {
                        let b = rest[k];
                        i += k + 1;
                        if e != q && b == e {
                            self.escaped = true;
                        } else if e == q {
                            self.quote_pending = true;
                        } else {
                            self.in_quote = false;
                        }
                    }
                }
            }
        }
        if let Some(&last) = buf.last() {
            self.prev = Some(last);
        }
        self.offset += buf.len() as u64;
    }

    /// A quote that ended the file closed its field.
    fn finish(&mut self) {
        if self.quote_pending {
            self.quote_pending = false;
            self.in_quote = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(text: &str, piece: usize) -> Option<(u64, u64)> {
        let mut s = Scan::new(Dialect::of(None, None, None).unwrap());
        for chunk in text.as_bytes().chunks(piece.max(1)) {
            s.feed(chunk);
        }
        s.finish();
        s.in_quote.then_some((s.record_start, s.open_at))
    }

    #[test]
    fn balanced_files_have_no_open_quote() {
        for text in
            ["a,b\n1,\"x, y\"\n2,\"say \"\"hi\"\"\"\n", "a,b\n1,\"multi\nline\"\n", "a,b\n1,5\"inch\n2,\"\"\n", "a,b\n1,\"ends\"", ""]
        {
            for piece in [1, 2, 3, 7, 1000] {
                assert_eq!(scan(text, piece), None, "{text:?} in pieces of {piece}");
            }
        }
    }

    #[test]
    fn an_open_quote_breaks_its_record_to_the_end() {
        let text = "a,b\n1,\"x, y\"\n2,\"never closed\n3,z\n";
        for piece in [1, 2, 5, 1000] {
            // The record starts at "2," (offset 13); the quote is 2 bytes later.
            assert_eq!(scan(text, piece), Some((13, 15)), "pieces of {piece}");
        }
        // A doubled quote at the very end leaves the field open.
        assert_eq!(scan("a\n\"x\"\"", 1), Some((2, 2)));
    }

    #[test]
    fn a_backslash_escape_keeps_the_quote_inside() {
        let d = Dialect::of(Some(","), None, Some("\\")).unwrap();
        let mut s = Scan::new(d);
        s.feed(b"a,b\n1,\"say \\\"hi\\\"\"\n");
        s.finish();
        assert!(!s.in_quote);
        let mut s = Scan::new(d);
        s.feed(b"a,b\n1,\"open \\\"\n");
        s.finish();
        assert!(s.in_quote);
    }

    #[test]
    fn lines_and_columns_name_the_quote() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.csv");
        std::fs::write(&path, "a,b\n1,ok\n2,\"open\nmore\n").unwrap();
        let u = unterminated_quote(&path, Dialect::of(None, None, None).unwrap()).unwrap().unwrap();
        assert_eq!(u, Unterminated { record_start: 9, line: 3, quote_line: 3, quote_column: 3 });
    }
}
