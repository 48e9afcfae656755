//! The guide writes `#` line comments inside `WITH (…)`. sqlparser's generic tokenizer does not
//! know them, so they are blanked out first — respecting strings, quoted identifiers and the
//! other comment forms — keeping every line and column where it was for error messages.

/// Replaces each `#` comment (up to the end of its line) with spaces. A `#` followed by `>` or
/// `-` is left alone (PostgreSQL JSON operators).
pub fn blank_hash_comments(sql: &str) -> String {
    let bytes = sql.as_bytes();
    let mut out = bytes.to_vec();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            q @ (b'\'' | b'"' | b'`') => {
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == q {
                        if bytes.get(i + 1) == Some(&q) {
                            i += 2; // doubled quote: an escaped quote
                            continue;
                        }
                        break;
                    }
                    if bytes[i] == b'\\' && q == b'\'' {
                        i += 1;
                    }
                    i += 1;
                }
                i += 1;
            }
            b'-' if bytes.get(i + 1) == Some(&b'-') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'/' if bytes.get(i + 1) == Some(&b'*') => {
                i += 2;
                while i < bytes.len() && !(bytes[i] == b'*' && bytes.get(i + 1) == Some(&b'/')) {
                    i += 1;
                }
                i += 2;
            }
            b'#' if !matches!(bytes.get(i + 1), Some(b'>' | b'-')) => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    out[i] = b' ';
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    // Blanking non-ASCII bytes with spaces keeps the text valid UTF-8 (every byte of a
    // multi-byte character becomes a space), so this cannot fail.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blanks_only_real_comments() {
        let sql = "WITH ('a' = '1', # a comment, don't mind\n 'b#c' = \"x#y\" -- # not this\n) # end";
        let out = blank_hash_comments(sql);
        assert_eq!(out.len(), sql.len());
        assert!(!out.contains("a comment"));
        assert!(out.contains("'b#c'"));
        assert!(out.contains("\"x#y\""));
        assert!(out.contains("-- # not this"));
        assert!(!out.contains("end"));
        assert_eq!(blank_hash_comments("x #> y"), "x #> y");
        assert_eq!(blank_hash_comments("a # é\nb"), "a     \nb");
    }
}
