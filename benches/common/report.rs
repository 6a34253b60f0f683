//! Prints ratios between criterion results measured in the same run (median estimates).

use std::path::PathBuf;

fn criterion_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("criterion")
}

/// Median time in ns of `group/bench`, from this run's estimates.
pub fn median_ns(group: &str, bench: &str) -> Option<f64> {
    let path = criterion_dir()
        .join(group)
        .join(bench)
        .join("new")
        .join("estimates.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}

/// Prints `subject` against `baseline` within `group`: both medians, the ratio and the difference.
pub fn compare(group: &str, subject: &str, baseline: &str) {
    match (median_ns(group, subject), median_ns(group, baseline)) {
        (Some(s), Some(b)) => println!(
            "{group}: {subject} {} vs {baseline} {} => ratio {:.2}x, difference {}",
            human(s),
            human(b),
            s / b,
            human(s - b)
        ),
        _ => println!("{group}: {subject} vs {baseline}: no estimates found (filtered out?)"),
    }
}

fn human(ns: f64) -> String {
    if ns.abs() >= 1e9 {
        format!("{:.3} s", ns / 1e9)
    } else if ns.abs() >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns.abs() >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.1} ns")
    }
}
