//! The user's guide's IoT example (four sensor streams, three joins `WITHIN INTERVAL '2'
//! MINUTES`, one of them LEFT, and LAG over the joined stream), with files standing in for the
//! Kafka topics: exact against DataFusion's batch answer on bounded files, and row by row on
//! tailed files that never end.

use std::path::{Path, PathBuf};

use datafusion::prelude::{JsonReadOptions, SessionContext};

use crate::common::*;
use crate::temporal_joins::run_until_rows;
use crate::windows::Lcg;

const SENSORS: [(&str, &str); 4] =
    [("temperature_sensors", "temperature"), ("humidity_sensors", "humidity"), ("pressure_sensors", "pressure"), ("vibration_sensors", "vibration_level")];

/// Readings every 3 minutes per device (±30 s), up to 20 s out of order; a third of the
/// vibration readings missing.
fn write_sensors(dir: &Path) -> Vec<(String, PathBuf)> {
    let base = 1_700_000_000_000i64;
    SENSORS
        .iter()
        .enumerate()
        .map(|(i, (name, field))| {
            let mut rng = Lcg::new(40 + i as u64);
            let mut rows = Vec::new();
            for k in 0..120i64 {
                for d in 0..4 {
                    if *name == "vibration_sensors" && rng.below(3) == 0 {
                        continue;
                    }
                    let ts = base + k * 180_000 + rng.below(60_000) as i64 - 30_000;
                    let value = match *field {
                        "temperature" => 15.0 + rng.below(300) as f64 / 10.0,
                        "humidity" => 40.0 + rng.below(600) as f64 / 10.0,
                        "pressure" => 940.0 + rng.below(1000) as f64 / 10.0,
                        _ => rng.below(100) as f64 / 10.0,
                    };
                    let arrival = ts + rng.below(20_000) as i64;
                    rows.push((arrival, format!("{{\"device_id\":\"d{d}\",\"location\":\"hall-{}\",\"timestamp\":{ts},\"{field}\":{value}}}\n", d % 2)));
                }
            }
            rows.sort_by_key(|(a, _)| *a);
            let path = dir.join(format!("{name}.jsonl"));
            std::fs::write(&path, rows.iter().map(|(_, l)| l.as_str()).collect::<String>()).unwrap();
            (name.to_string(), path)
        })
        .collect()
}

const SELECT: &str = "SELECT t.device_id, t.location, t.timestamp, t.temperature, h.humidity, p.pressure, v.vibration_level, \
    (t.temperature - 20) / 10.0 AS temp_deviation, (h.humidity - 50) / 20.0 AS humidity_deviation, (p.pressure - 1013.25) / 50.0 AS pressure_deviation, \
    CASE WHEN ABS(t.temperature - LAG(t.temperature, 1) OVER (PARTITION BY t.device_id ORDER BY t.timestamp)) > 10 THEN 'TEMP_SPIKE' \
         WHEN h.humidity > 90 AND t.temperature > 35 THEN 'HIGH_HEAT_HUMIDITY' WHEN v.vibration_level > 8.0 THEN 'EXCESSIVE_VIBRATION' \
         WHEN p.pressure < 950 THEN 'LOW_PRESSURE_ALARM' ELSE 'NORMAL' END AS anomaly_type";

fn streaming_sql(files: &[(String, PathBuf)], out: &Path, extra: &str) -> String {
    let sources: Vec<String> = files
        .iter()
        .map(|(n, p)| {
            format!(
                "'{n}.type' = 'file_source', '{n}.path' = '{}', '{n}.format' = 'jsonlines', '{n}.event_time' = 'timestamp', '{n}.watermark.delay' = '30s'{}",
                p.display(),
                extra.replace("{}", n)
            )
        })
        .collect();
    format!(
        "CREATE STREAM sensor_analysis AS {SELECT} \
         FROM temperature_sensors t INNER JOIN humidity_sensors h ON t.device_id = h.device_id \
         INNER JOIN pressure_sensors p ON t.device_id = p.device_id LEFT JOIN vibration_sensors v ON t.device_id = v.device_id \
         WITHIN INTERVAL '2' MINUTES \
         WHERE t.temperature IS NOT NULL AND h.humidity IS NOT NULL AND p.pressure IS NOT NULL \
         INTO monitoring_alerts WITH ({}, 'failure_strategy' = 'LogAndContinue', 'monitoring_alerts.type' = 'file_sink', 'monitoring_alerts.path' = '{}');",
        sources.join(", "),
        out.display()
    )
}

async fn batch_answer(files: &[(String, PathBuf)]) -> Vec<String> {
    let ctx = SessionContext::new();
    for (n, p) in files {
        ctx.register_json(n.as_str(), p.to_str().unwrap(), JsonReadOptions::default().file_extension(".jsonl")).await.unwrap();
    }
    let band = |x: &str| format!("{x}.timestamp BETWEEN t.timestamp - 120000 AND t.timestamp + 120000");
    batch_rows(
        &ctx,
        &format!(
            "{SELECT} FROM temperature_sensors t INNER JOIN humidity_sensors h ON t.device_id = h.device_id AND {} \
             INNER JOIN pressure_sensors p ON t.device_id = p.device_id AND {} LEFT JOIN vibration_sensors v ON t.device_id = v.device_id AND {} \
             WHERE t.temperature IS NOT NULL AND h.humidity IS NOT NULL AND p.pressure IS NOT NULL",
            band("h"),
            band("p"),
            band("v")
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_iot_pipeline_runs_on_bounded_files() {
    let tmp = tempfile::tempdir().unwrap();
    let files = write_sensors(tmp.path());
    let out = tmp.path().join("alerts.jsonl");
    let run = run_sql(tmp.path(), &streaming_sql(&files, &out, ""));
    assert_ok(&run);
    assert!(!run.stderr.contains("late rows"), "{}", run.stderr);
    let explain = ferris(tmp.path(), &["explain", "job.sql"]);
    assert_eq!(explain.stdout.lines().filter(|l| l.trim_start().starts_with("IntervalJoinExec")).count(), 3, "{}", explain.stdout);
    let want = batch_answer(&files).await;
    assert!(want.len() > 300 && want.iter().any(|r| r.contains("\"vibration_level\":null")), "{} rows", want.len());
    assert_same_rows("iot", &file_rows(&out), &want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_guides_iot_pipeline_streams_from_tailed_files() {
    let tmp = tempfile::tempdir().unwrap();
    let files = write_sensors(tmp.path());
    let out = tmp.path().join("alerts.jsonl");
    let schema = |n: &str| {
        let field = SENSORS.iter().find(|(s, _)| *s == n).unwrap().1;
        format!("device_id VARCHAR, location VARCHAR, timestamp BIGINT, {field} DOUBLE")
    };
    let mut sql = streaming_sql(&files, &out, ", '{}.watch' = 'true', '{}.batch.timeout' = '50ms'");
    for (n, _) in &files {
        sql = sql.replace(&format!("'{n}.watch' = 'true'"), &format!("'{n}.watch' = 'true', '{n}.schema' = '{}'", schema(n)));
    }
    let want = batch_answer(&files).await;
    // nothing ends and no source sets idle_timeout, so the rows within the join band (2 min)
    // and watermark delay (30 s) of the latest event time stay open: most must come out, each
    // exact. (With idle_timeout they close as the wall clock moves event time on — 2.5 minutes
    // here; temporal_joins::quiet_streams_close_their_last_join_bands_and_windows shows it on
    // a short band.)
    let stderr = run_until_rows(tmp.path(), &sql, &out, want.len() * 3 / 4);
    assert!(!stderr.contains("late rows"), "{stderr}");
    let got = file_rows(&out);
    assert!(got.len() >= want.len() * 3 / 4, "{} of {} rows", got.len(), want.len());
    for row in &got {
        assert!(want.contains(row), "a row the batch answer does not have: {row}");
    }
}
