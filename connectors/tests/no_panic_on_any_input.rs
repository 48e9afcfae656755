//! No panic on any input: what the connectors parse from users and services — an HTTP API's
//! answer at a `json.path`, JSON arrays turned into lines, URLs and values shown masked,
//! durations, `schema` texts — answers or errs on arbitrary bytes and text, never panics.
//!
//! `PROPTEST_CASES=20000 cargo test --workspace --test no_panic_on_any_input` for a longer run.

use ferris_connectors::format::decode::json_array_to_lines;
use ferris_connectors::format::schema::parse_schema;
use ferris_connectors::http::display_url;
use ferris_connectors::http::source::records_as_lines;
use ferris_connectors::properties::{mask_credentials, parse_duration};
use proptest::prelude::*;

/// JSON-ish bytes: the characters a JSON reader branches on, and some others.
fn jsonish() -> impl Strategy<Value = Vec<u8>> {
    let pieces = prop::sample::select(vec![
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        "\"",
        "\\",
        "\"a\"",
        "\"data\"",
        "\"items\"",
        "1",
        "-2.5e3",
        "null",
        "true",
        " ",
        "\n",
        "\u{e9}",
        "\u{0}",
    ]);
    prop::collection::vec(pieces, 0..60).prop_map(|p| p.concat().into_bytes())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2000), ..ProptestConfig::default() })]

    #[test]
    fn http_answers(answer in prop_oneof![jsonish(), prop::collection::vec(any::<u8>(), 0..200)], lines in any::<bool>(), path in prop::sample::subsequence(vec!["data".to_string(), "items".into(), "0".into(), "a".into()], 0..3)) {
        if let Ok((text, n)) = records_as_lines(&answer, lines, &path) {
            // outside JSON lines, every record is one line of its own; lines of white space only
            // (what is left of an array's brackets, as in `[]`) hold none
            let filled = text.split(|b| *b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)).count();
            prop_assert!(lines || filled == n, "{} records, text {:?}", n, String::from_utf8_lossy(&text));
        }
        let _ = json_array_to_lines(&answer);
    }

    #[test]
    fn shown_values_and_keys(text in "\\PC{0,120}") {
        let _ = mask_credentials(&text);
        let _ = display_url(&text);
        let _ = parse_duration(&text);
        let _ = parse_schema(&text, "t.schema");
    }

    #[test]
    fn urls_with_secrets_never_show_them(user in "[a-z]{1,8}", secret in "[A-Za-z0-9]{12,20}", host in "[a-z]{1,10}", token in "[A-Za-z0-9]{12,20}") {
        let url = format!("https://{user}:{secret}@{host}.example.com/hooks/{token}?api_key={secret}");
        let shown = display_url(&url);
        prop_assert!(!shown.contains(&secret) && !shown.contains(&token), "{}", shown);
        prop_assert!(!mask_credentials(&url).contains(&secret));
    }
}

/// Inputs proptest has found before: an empty array is no records and no error.
#[test]
fn empty_arrays_are_no_records() {
    for answer in ["[]", " [ ] ", "[\n]\n"] {
        let (text, n) = records_as_lines(answer.as_bytes(), false, &[]).unwrap_or_else(|e| panic!("{answer:?}: {e}"));
        assert_eq!(n, 0, "{answer:?}");
        assert!(text.iter().all(u8::is_ascii_whitespace), "{answer:?} gave {:?}", String::from_utf8_lossy(&text));
    }
}
