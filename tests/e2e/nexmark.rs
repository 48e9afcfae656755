//! Every Nexmark query of `benches/nexmark/` (q0–q22; q12 reads the clock and is left out)
//! run by `ferris-sql` on generated Parquet files, its rows checked one by one against DuckDB's
//! answer to the same query over the same files (`benches/compare/nexmark_duckdb.py --answer`).
//! Then the top-N queries (q18 deduplication, q19 top 10 per auction) on a stream: their
//! changelog, applied as a keyed sink applies it, ends at the same answer.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::common::*;
use crate::temporal_joins::run_until;

/// Events generated: 200 000 (about 20 s of event time: q5's and q7's windows, q11's sessions).
const EVENTS: usize = 200_000;

/// The generated files, written once per test run.
fn generated() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = repo().join("target/tmp/nexmark-e2e");
        let _ = std::fs::remove_dir_all(&dir);
        let counts = ferris_bench::nexmark_files::write_nexmark(EVENTS, &dir);
        assert_eq!(counts.person + counts.auction + counts.bid, EVENTS);
        dir
    })
}

/// DuckDB's rows for query `q` over the generated files, written to `out`.
fn duckdb(args: &[&str], out: &Path) -> Vec<String> {
    let script = repo().join("benches/compare/nexmark_duckdb.py");
    let run = crate::common::output_within(Command::new("python3").arg(&script).args(args).arg("--out").arg(out));
    assert!(run.status.success(), "{} {args:?}: {}", script.display(), String::from_utf8_lossy(&run.stderr));
    file_rows(out)
}

/// The JSON rows of `text` without NULL values (DuckDB's answer leaves them out) and, when
/// `columns` is given, with only those columns (ties the queries order arbitrarily).
pub(crate) fn comparable(rows: &[String], columns: Option<&[&str]>) -> Vec<String> {
    let mut out: Vec<String> = rows
        .iter()
        .map(|r| {
            let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(r).unwrap();
            let kept: serde_json::Map<String, serde_json::Value> =
                v.into_iter().filter(|(k, v)| !v.is_null() && columns.is_none_or(|c| c.contains(&k.as_str()))).collect();
            serde_json::Value::Object(kept).to_string()
        })
        .collect();
    out.sort();
    out
}

/// Runs `benches/nexmark/{q}.sql` on the generated Parquet files into a JSON-lines file (the
/// blackhole sink swapped for a file sink) and compares its rows with DuckDB's.
fn check(q: &str, columns: Option<&[&str]>) {
    check_with(q, columns, None);
}

/// [`check`], with `delay` (a watermark delay) added to every source with an event time when
/// given: windows then close as the input goes by, and the answer must not change. Returns
/// the plan `explain` shows.
fn check_with(q: &str, columns: Option<&[&str]>, delay: Option<&str>) -> String {
    check_format(q, columns, delay, "parquet")
}

/// [`check_with`] over the generated files of `format` (`parquet` or `jsonl`, whose schema is
/// inferred: its times are text).
fn check_format(q: &str, columns: Option<&[&str]>, delay: Option<&str>, format: &str) -> String {
    let ran = run_format(q, delay, format);
    let want = duckdb(&["--answer", q, "--dir", generated().to_str().unwrap()], &ran.dir.path().join("want.jsonl"));
    assert!(!want.is_empty() || q == "q7", "{q}: DuckDB's answer is empty; the check would prove nothing");
    assert_same_rows(q, &comparable(&ran.rows, columns), &comparable(&want, columns));
    ran.explain
}

/// A query run over the generated files: its plan as `explain` shows it, the run's report,
/// the rows it wrote, and the directory they are in.
struct Ran {
    explain: String,
    report: String,
    rows: Vec<String>,
    dir: tempfile::TempDir,
}

/// Runs `benches/nexmark/{q}.sql` over the generated files of `format` into a JSON-lines file
/// (the blackhole sink swapped for a file sink), with a watermark `delay` when given.
fn run_format(q: &str, delay: Option<&str>, format: &str) -> Ran {
    let input = generated();
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join(format!("{q}.jsonl"));
    let mut sql = std::fs::read_to_string(repo().join(format!("benches/nexmark/{q}.sql"))).unwrap();
    if let Some(delay) = delay {
        for source in ["bid", "auction", "person"] {
            let timed = format!("'{source}.event_time' = 'date_time'");
            sql = sql.replace(&timed, &format!("{timed}, '{source}.watermark.delay' = '{delay}'"));
        }
        assert!(sql.contains(".watermark.delay"), "{sql}");
    }
    let sql = sql.replace("'nowhere.type' = 'blackhole'", &format!("'nowhere.type' = 'file_sink', 'nowhere.path' = '{}'", out.display()));
    let job = tmp.path().join(format!("{q}.sql"));
    std::fs::write(&job, sql).unwrap();
    let env = [("NEXMARK_DIR", input.to_str().unwrap()), ("NEXMARK_OUT", tmp.path().to_str().unwrap()), ("NEXMARK_FORMAT", format)];
    let explain = ferris_in_env(tmp.path(), &["explain".into(), job.display().to_string()], &env);
    assert_ok(&explain);
    let run = ferris_in_env(tmp.path(), &["run".into(), job.display().to_string(), "--no-progress".into()], &env);
    assert_ok(&run);
    let rows = if q == "q10" {
        // Hive directories by day and minute, CSV files in them
        let dirs: Vec<_> = walk(&tmp.path().join("q10")).into_iter().filter(|p| p.extension().is_some_and(|e| e == "csv")).collect();
        assert!(dirs.iter().all(|p| p.to_string_lossy().contains("/dt=") && p.to_string_lossy().contains("/hm=")), "{dirs:?}");
        duckdb(&["--read-hive", tmp.path().join("q10").to_str().unwrap()], &tmp.path().join("got.jsonl"))
    } else {
        file_rows(&out)
    };
    Ran { explain: explain.stdout, report: format!("{}{}", run.stdout, run.stderr), rows, dir: tmp }
}

/// q5 and q7 with a watermark delay: their windows close as the bids go by and reach the join
/// at once. No exchange stands between the window aggregates and the join: DataFusion's would
/// hold each window's result back for a full batch, so the join would wait for the end of
/// the input with the bids in memory (their peak memory grew with the input). Nor between the
/// join and the output (it hashed every joined row again).
#[test]
fn q5_and_q7_with_a_delay_pass_their_windows_straight_to_the_join() {
    for q in ["q5", "q7"] {
        let plan = check_with(q, None, Some("1s"));
        let tree = plan.split("\n  Plan:").nth(1).unwrap_or_else(|| panic!("{q}: no plan: {plan}"));
        let below_join = tree.split("IntervalJoinExec").nth(1).unwrap_or_else(|| panic!("{q}: no interval join: {plan}"));
        assert!(below_join.contains("WindowAggregateExec"), "{q}: {plan}");
        assert!(!below_join.contains("RepartitionExec") && !below_join.contains("CoalesceBatchesExec"), "{q}: an exchange below the join: {plan}");
        // nor between the join and the output, which reads every partition into one stream
        assert!(!tree.contains("RepartitionExec"), "{q}: an exchange over the join: {plan}");
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

macro_rules! nexmark {
    ($($name:ident: $q:literal $(, $cols:expr)?;)*) => {$(
        #[test]
        fn $name() {
            #[allow(unused_mut, unused_assignments)]
            let mut columns: Option<&[&str]> = None;
            $(columns = Some($cols);)?
            check($q, columns);
        }
    )*};
}

// q18 and q19 order by a value that ties (bids of one millisecond, equal prices): the rows
// kept among equals may differ, their keys and order values may not
nexmark! {
    nexmark_q0_matches_duckdb: "q0";
    nexmark_q1_matches_duckdb: "q1";
    nexmark_q2_matches_duckdb: "q2";
    nexmark_q3_matches_duckdb: "q3";
    nexmark_q4_matches_duckdb: "q4";
    nexmark_q5_matches_duckdb: "q5";
    nexmark_q6_matches_duckdb: "q6";
    nexmark_q7_matches_duckdb: "q7";
    nexmark_q8_matches_duckdb: "q8";
    nexmark_q9_matches_duckdb: "q9";
    nexmark_q10_matches_duckdb: "q10";
    nexmark_q11_matches_duckdb: "q11";
    nexmark_q13_matches_duckdb: "q13";
    nexmark_q14_matches_duckdb: "q14";
    nexmark_q15_matches_duckdb: "q15";
    nexmark_q16_matches_duckdb: "q16";
    nexmark_q17_matches_duckdb: "q17";
    nexmark_q18_matches_duckdb: "q18", &["bidder", "auction", "date_time"];
    nexmark_q19_matches_duckdb: "q19", &["auction", "rank_number", "price"];
    nexmark_q20_matches_duckdb: "q20";
    nexmark_q21_matches_duckdb: "q21";
    nexmark_q22_matches_duckdb: "q22";
}

/// q9 keeps one bid per auction out of the join of the auctions with their bids: the planned
/// job holds the auctions' text aside under the join and gathers it for the kept rows only
/// (`top_n::late_payload`); `nexmark_q9_matches_duckdb` checks the rows, text included.
#[test]
fn q9_holds_the_auctions_text_aside_until_the_top_n() {
    let plan = &planned("q9");
    assert!(plan.contains("PayloadStashExec: holds [item_name, description, extra]") && plan.contains("PayloadGatherExec"), "{plan}");
}

/// q9, q18 and q19 over JSON Lines, whose `date_time` is inferred as text: the top N per key
/// is still the one-pass operator, ordered by the text (q9, q18) as row-format bytes, not
/// DataFusion's sort of every row, and its rows are DuckDB's answer over the Parquet files.
#[test]
fn top_n_over_json_lines_orders_by_text_in_one_pass() {
    for (q, columns) in [("q9", None), ("q18", Some(&["bidder", "auction", "date_time"][..])), ("q19", Some(&["auction", "rank_number", "price"][..]))] {
        let plan = check_format(q, columns, None, "jsonl");
        assert!(plan.contains("BoundedTopNExec") && !plan.contains("SortExec"), "{q}: {plan}");
        assert!(plan.contains("jsonlines"), "{q} reads JSON Lines: {plan}");
    }
}

/// q10 and q14–q17 over JSON Lines, whose `date_time` is inferred as text: the cast to a
/// timestamp that `DATE_FORMAT` and `HOUR` put in reads the text directly (no arrow cast in
/// the plan: `text_times`), and the rows are DuckDB's answer over the Parquet files.
#[test]
fn times_as_text_over_json_lines_match_duckdb() {
    for q in ["q10", "q14", "q15", "q16", "q17"] {
        let plan = check_format(q, None, None, "jsonl");
        assert!(plan.contains("jsonlines"), "{q} reads JSON Lines: {plan}");
        assert!(plan.contains("cast_text_to_timestamp(date_time@") && !plan.contains("CAST(date_time"), "{q}: the text read, not cast: {plan}");
    }
}

/// q18 and q19 over Parquet and over JSON Lines keep half the bids, every column of them: the
/// bids are read twice, the keys and order first, then the kept rows only
/// (`top_n::read_twice`), no text held meanwhile. The key columns must be DuckDB's answer and,
/// since those cannot tell one kept row's text from another's, every row written a bid of the
/// input with all its columns, each bid written once at most; the source counts each bid once
/// though it reads them twice.
#[test]
fn top_n_over_files_reads_its_kept_rows_again() {
    let input = generated();
    // the bids by every column but the time (text in JSON Lines, a timestamp written out)
    let without_time = |line: &str| {
        let mut v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line).unwrap();
        v.remove("date_time");
        v.remove("rank_number");
        serde_json::Value::Object(v).to_string()
    };
    let text = std::fs::read_to_string(input.join("bid.jsonl")).unwrap();
    let bids: std::collections::HashSet<String> = text.lines().map(without_time).collect();
    let count = text.lines().count();
    let queries = [("q18", &["bidder", "auction", "date_time"][..]), ("q19", &["auction", "rank_number", "price"][..])];
    for ((q, keys), format) in queries.into_iter().flat_map(|q| [(q, "parquet"), (q, "jsonl")]) {
        let ran = run_format(q, None, format);
        let plan = ran.explain.split("\n  Plan:").nth(1).unwrap_or_else(|| panic!("{q}: no plan: {}", ran.explain));
        assert!(plan.contains("ReadKeptRowsExec") && plan.contains("RowPositionsExec") && plan.contains("BoundedTopNExec"), "{q} {format}: {plan}");
        let written: Vec<String> = ran.rows.iter().map(|r| without_time(r)).collect();
        let unknown: Vec<&String> = written.iter().filter(|r| !bids.contains(*r)).take(3).collect();
        assert!(unknown.is_empty(), "{q}: rows that are no bid of the input: {unknown:#?}");
        let distinct: std::collections::HashSet<&String> = written.iter().collect();
        assert_eq!(distinct.len(), written.len(), "{q}: a bid written twice");
        let want = duckdb(&["--answer", q, "--dir", input.to_str().unwrap()], &ran.dir.path().join("want.jsonl"));
        assert_same_rows(q, &comparable(&ran.rows, Some(keys)), &comparable(&want, Some(keys)));
        assert!(ran.report.contains(&format!("read [bid {count} rows]")), "{q}: {}", ran.report);
    }
}

/// q4 groups the join of the auctions with their bids by the auctions' columns: the planned
/// job aggregates in the join (`join::group_join`), the bids read as they come, without a
/// repartition; `nexmark_q4_matches_duckdb` checks the rows.
#[test]
fn q4_aggregates_each_auctions_bids_in_the_join() {
    let plan = &planned("q4");
    assert!(plan.contains("GroupJoinExec: on=[(id, auction)], filter=") && plan.contains("gby=[id, category], aggr=[max(b.price)]"), "{plan}");
    assert!(!plan.contains("HashJoinExec") && !plan.contains("Hash([auction"), "{plan}");
}

/// What `ferris-sql explain` says of `benches/nexmark/{q}.sql` over the generated files.
fn planned(q: &str) -> String {
    let input = generated();
    let tmp = tempfile::tempdir().unwrap();
    let job = repo().join(format!("benches/nexmark/{q}.sql")).display().to_string();
    let explain = ferris_in_env(tmp.path(), &["explain".into(), job], &[("NEXMARK_DIR", input.to_str().unwrap())]);
    assert_ok(&explain);
    explain.stdout
}

/// Applies a changelog as a sink keyed by `key` applies it: `DELETE` removes the row written
/// for its key (which must be the row deleted), `UPSERT` writes it. Keyless (`key` empty): a
/// multiset of whole rows. Returns the rows left, without `_op`, or what went wrong.
pub(crate) fn apply_changelog(text: &str, key: &[&str]) -> Result<Vec<String>, String> {
    let mut keyed: HashMap<String, String> = HashMap::new();
    let mut bag: HashMap<String, usize> = HashMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(mut v) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(line) else {
            return Err(format!("a line still being written: {line}"));
        };
        let op = v.remove("_op").and_then(|o| o.as_str().map(str::to_string)).ok_or_else(|| format!("no _op in {line}"))?;
        let row = serde_json::Value::Object(v.clone()).to_string();
        if key.is_empty() {
            let n = bag.entry(row.clone()).or_default();
            match op.as_str() {
                "DELETE" if *n == 0 => return Err(format!("DELETE of a row not written: {row}")),
                "DELETE" => *n -= 1,
                _ => *n += 1,
            }
            continue;
        }
        let k: Vec<String> = key.iter().map(|c| v.get(*c).map(|x| x.to_string()).unwrap_or_default()).collect();
        let k = k.join("|");
        match op.as_str() {
            "DELETE" => {
                if keyed.remove(&k).as_ref() != Some(&row) {
                    return Err(format!("DELETE of {row}, which is not what key {k} holds"));
                }
            }
            _ => {
                if let Some(old) = keyed.insert(k.clone(), row.clone()) {
                    return Err(format!("UPSERT of {row} over {old} without its DELETE (key {k})"));
                }
            }
        }
    }
    let mut rows: Vec<String> =
        if key.is_empty() { bag.into_iter().flat_map(|(r, n)| std::iter::repeat_n(r, n)).collect() } else { keyed.into_values().collect() };
    rows.sort();
    Ok(rows)
}

/// q18 and q19 reading the bids as a stream (a tailed JSON-lines file): the operator keeps
/// each key's top rows and writes changes; applied, they end at DuckDB's answer.
#[test]
fn top_n_on_a_stream_ends_at_the_batch_answer() {
    let input = generated();
    let tmp = tempfile::tempdir().unwrap();
    let bids = input.join("bid.jsonl");
    let schema = "auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, date_time TIMESTAMP, extra VARCHAR";
    for (q, key, columns) in
        [("q19", vec!["auction", "rank_number"], vec!["auction", "rank_number", "price"]), ("q18", vec![], vec!["bidder", "auction", "date_time"])]
    {
        let want = comparable(&duckdb(&["--answer", q, "--dir", input.to_str().unwrap()], &tmp.path().join(format!("{q}.want"))), Some(&columns));
        let out = tmp.path().join(format!("{q}.jsonl"));
        let sql = std::fs::read_to_string(repo().join(format!("benches/nexmark/{q}.sql"))).unwrap();
        let sql = sql.replace("'nowhere.type' = 'blackhole'", &format!("'nowhere.type' = 'file_sink', 'nowhere.path' = '{}'", out.display())).replace(
            "'bid.path' = '${NEXMARK_DIR:-target/nexmark}/bid.${NEXMARK_FORMAT:-parquet}'",
            &format!("'bid.path' = '{}', 'bid.watch' = 'true', 'bid.schema' = '{schema}'", bids.display()),
        );
        assert!(sql.contains("'bid.watch' = 'true'"), "{sql}");
        let state = |text: &str| apply_changelog(text, &key).map(|rows| comparable(&rows, Some(&columns)));
        let stderr = run_until(tmp.path(), &sql, &out, |text| state(text).is_ok_and(|rows| rows == want));
        let text = std::fs::read_to_string(&out).unwrap();
        let got = state(&text).unwrap_or_else(|e| panic!("{q}: {e}\n{stderr}"));
        assert_same_rows(&format!("{q} on a stream"), &got, &want);
        // a changelog, not a snapshot: rows were replaced on the way
        assert!(text.contains("\"_op\":\"DELETE\""), "{q}: no row was ever retracted");
        if q == "q18" {
            // the rank is not selected: a row whose rank alone changed is no change
            assert!(!text.contains("rank_number"));
        }
    }
}

/// Nexmark q5 as written, on a stream (the bids a tailed JSON-lines file, a last bid a day
/// later to close the windows): the maximum per window is a window aggregate over the
/// windows of the `HOP` below, and the join on the window a semi join in event time. Its
/// rows are DuckDB's answer over the same bids, each once.
#[test]
fn q5_as_written_runs_on_a_stream() {
    let input = generated();
    let tmp = tempfile::tempdir().unwrap();
    let bids = tmp.path().join("bid.jsonl");
    let mut text = std::fs::read_to_string(input.join("bid.jsonl")).unwrap();
    let last = text.lines().last().unwrap().to_string();
    let mut sentinel: serde_json::Map<String, serde_json::Value> = serde_json::from_str(&last).unwrap();
    sentinel.insert("date_time".into(), serde_json::Value::String("2099-01-01T00:00:00.000".into()));
    text.push_str(&serde_json::Value::Object(sentinel).to_string());
    text.push('\n');
    std::fs::write(&bids, text).unwrap();
    let want = comparable(&duckdb(&["--answer", "q5", "--dir", input.to_str().unwrap()], &tmp.path().join("q5.want")), None);
    assert!(want.len() > 5, "{want:?}");
    let out = tmp.path().join("q5.jsonl");
    let schema = "auction BIGINT, bidder BIGINT, price BIGINT, channel VARCHAR, url VARCHAR, date_time TIMESTAMP, extra VARCHAR";
    let sql = std::fs::read_to_string(repo().join("benches/nexmark/q5.sql")).unwrap();
    let sql = sql.replace("'nowhere.type' = 'blackhole'", &format!("'nowhere.type' = 'file_sink', 'nowhere.path' = '{}'", out.display())).replace(
        "'bid.path' = '${NEXMARK_DIR:-target/nexmark}/bid.${NEXMARK_FORMAT:-parquet}'",
        &format!("'bid.path' = '{}', 'bid.watch' = 'true', 'bid.schema' = '{schema}', 'bid.batch.size' = '1000', 'bid.idle_timeout' = '5s', 'bid.watermark.delay' = '1ms'", bids.display()),
    );
    assert!(sql.contains("'bid.watch' = 'true'"), "{sql}");
    std::fs::write(tmp.path().join("explain.sql"), &sql).unwrap();
    let explain = ferris(tmp.path(), &["explain", "explain.sql"]);
    assert_ok(&explain);
    let line = |what: &str| explain.stdout.lines().find(|l| l.contains(what)).unwrap_or_else(|| panic!("no {what}: {}", explain.stdout)).to_string();
    // the bids' event time goes on with the clock once they are quiet (idle_timeout named);
    // the window of windows and the join's sides move with the windows below alone
    assert!(line("window=HOP").contains("(then advancing with processing time)"), "{}", explain.stdout);
    assert!(line("window=the input's windows, time=window_start").contains("watermark=delay=0ms, emit=final"), "{}", explain.stdout);
    let join = line("IntervalJoinExec: join_type=LeftSemi");
    assert!(join.contains("idle_timeout=5000ms") && !join.contains("advancing"), "{}", explain.stdout);
    let stderr = run_until(tmp.path(), &sql, &out, |text| comparable(&text.lines().map(str::to_string).collect::<Vec<_>>(), None).len() >= want.len());
    let got = comparable(&file_rows(&out), None);
    assert!(!got.is_empty(), "{stderr}");
    assert_same_rows("q5 on a stream", &got, &want);
}

#[test]
fn explain_shows_the_top_n_operator_on_a_stream() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("bids.jsonl"), "{\"auction\":1,\"price\":5}\n").unwrap();
    let sql = "SELECT auction, price FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY auction ORDER BY price DESC) AS rn FROM bids) WHERE rn <= 3 \
               WITH ('bids.type' = 'file_source', 'bids.path' = 'bids.jsonl', 'bids.watch' = 'true', 'bids.schema' = 'auction BIGINT, price BIGINT');";
    std::fs::write(tmp.path().join("q.sql"), sql).unwrap();
    let run = ferris(tmp.path(), &["explain", "q.sql"]);
    assert_ok(&run);
    assert!(run.stdout.contains("StreamTopNExec: partition_by=[auction@0], order_by=[price@1 DESC"), "{}", run.stdout);
    assert!(run.stdout.contains("n=3, emits=changes"), "{}", run.stdout);
}
