//! `xsec-lab plot`: SVG charts from the JSON that `capacity` and `ndr` write, for
//! BENCHMARKS.md — no plotting library, just lines, points, axes and a legend.

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::{Result, err};

/// One line of a chart: a label and (x label, y) points.
#[derive(Debug, Clone)]
pub struct Series {
    pub label: String,
    pub points: Vec<(String, f64)>,
}

const COLORS: [&str; 8] = [
    "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A "nice" axis top above `max`: 1, 2 or 5 times a power of ten.
fn nice_top(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let p = 10f64.powf(max.log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if m * p >= max {
            return m * p;
        }
    }
    10.0 * p
}

/// A line chart over categorical x values (in the order first seen).
pub fn line_chart(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let (w, h, left, right, top, bottom) = (760.0, 420.0, 70.0, 230.0, 40.0, 50.0);
    let mut xs: Vec<String> = vec![];
    for s in series {
        for (x, _) in &s.points {
            if !xs.contains(x) {
                xs.push(x.clone());
            }
        }
    }
    let ymax = nice_top(
        series
            .iter()
            .flat_map(|s| s.points.iter().map(|p| p.1))
            .fold(0.0, f64::max),
    );
    let pw = w - left - right;
    let ph = h - top - bottom;
    let xpos = |x: &str| {
        let i = xs.iter().position(|v| v == x).unwrap_or(0) as f64;
        left + if xs.len() > 1 {
            i * pw / (xs.len() - 1) as f64
        } else {
            pw / 2.0
        }
    };
    let ypos = |y: f64| top + ph - y / ymax * ph;
    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" font-size="15" text-anchor="middle">{}</text>"#,
        left + pw / 2.0,
        esc(title)
    );
    for i in 0..=5 {
        let y = ymax * f64::from(i) / 5.0;
        let py = ypos(y);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{py}" x2="{}" y2="{py}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            left + pw,
            left - 6.0,
            py + 4.0,
            if ymax < 10.0 {
                format!("{y:.1}")
            } else {
                format!("{y:.0}")
            }
        );
    }
    for x in &xs {
        let px = xpos(x);
        let _ = writeln!(
            s,
            r#"<text x="{px}" y="{}" text-anchor="middle">{}</text>"#,
            top + ph + 18.0,
            esc(x)
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        left + pw / 2.0,
        h - 10.0,
        esc(x_label)
    );
    let _ = writeln!(
        s,
        r#"<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">{}</text>"#,
        top + ph / 2.0,
        top + ph / 2.0,
        esc(y_label)
    );
    for (i, ser) in series.iter().enumerate() {
        let c = COLORS[i % COLORS.len()];
        let pts: Vec<String> = ser
            .points
            .iter()
            .map(|(x, y)| format!("{:.1},{:.1}", xpos(x), ypos(*y)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{c}" stroke-width="2" points="{}"/>"#,
            pts.join(" ")
        );
        for (x, y) in &ser.points {
            let _ = writeln!(
                s,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{c}"/>"#,
                xpos(x),
                ypos(*y)
            );
        }
        let ly = top + 10.0 + 18.0 * i as f64;
        let _ = writeln!(
            s,
            r#"<line x1="{}" y1="{ly}" x2="{}" y2="{ly}" stroke="{c}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
            w - right + 15.0,
            w - right + 35.0,
            w - right + 40.0,
            ly + 4.0,
            esc(&ser.label)
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Mpps against size, one line per algorithm and direction (one worker count), from
/// `xsec-lab capacity --json`.
pub fn capacity_chart(doc: &Value, workers: u64) -> Result<String> {
    let rows = doc["summary"]
        .as_array()
        .ok_or_else(|| err!("not a capacity JSON (no summary)"))?;
    let mut series: Vec<Series> = vec![];
    for r in rows
        .iter()
        .filter(|r| r["workers"].as_u64() == Some(workers))
    {
        let alg = r["alg"].as_str().unwrap_or("?");
        let size = r["size"].as_str().unwrap_or("?").to_owned();
        if size == "imix" {
            continue;
        }
        for dir in ["encrypt", "decrypt"] {
            let label = format!("{alg} {dir}");
            let y = r[format!("{dir}_mpps")].as_f64().unwrap_or(0.0);
            match series.iter_mut().find(|s| s.label == label) {
                Some(s) => s.points.push((format!("{size} B"), y)),
                None => series.push(Series {
                    label,
                    points: vec![(format!("{size} B"), y)],
                }),
            }
        }
    }
    if series.is_empty() {
        return Err(err!("no rows for {workers} worker(s)"));
    }
    Ok(line_chart(
        &format!("xsecd worker capacity, {workers} worker(s), replay backend"),
        "inner IP packet size",
        "Mpps",
        &series,
    ))
}

/// Latency percentiles at half the NDR, one line per test, from `xsec-lab ndr --json`.
pub fn latency_chart(doc: &Value) -> Result<String> {
    let rows = doc["results"]
        .as_array()
        .ok_or_else(|| err!("not an ndr JSON (no results)"))?;
    let mut series = vec![];
    for r in rows {
        let l = &r["latency_half_ndr_ns"];
        if l.is_null() {
            continue;
        }
        let points = ["p50", "p90", "p99", "p999"]
            .iter()
            .map(|k| (k.to_string(), l[*k].as_f64().unwrap_or(0.0) / 1e3))
            .collect();
        series.push(Series {
            label: format!(
                "{} {}",
                r["mode"].as_str().unwrap_or("?"),
                r["size"].as_str().unwrap_or("?")
            ),
            points,
        });
    }
    if series.is_empty() {
        return Err(err!("no latency in the results"));
    }
    Ok(line_chart(
        "one-way latency at half the NDR (hA -> hB, veth)",
        "percentile",
        "µs",
        &series,
    ))
}

/// Read a JSON file.
pub fn read_json(path: &Path) -> Result<Value> {
    let t = std::fs::read_to_string(path).map_err(|e| err!("{}: {e}", path.display()))?;
    serde_json::from_str(&t).map_err(|e| err!("{}: not JSON: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chart_has_every_point_and_label() {
        let s = line_chart(
            "t",
            "x",
            "y",
            &[
                Series {
                    label: "a<b".into(),
                    points: vec![("64".into(), 1.0), ("512".into(), 3.0)],
                },
                Series {
                    label: "c".into(),
                    points: vec![("64".into(), 2.5)],
                },
            ],
        );
        assert_eq!(s.matches("<circle").count(), 3);
        assert!(s.contains("a&lt;b"));
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        assert_eq!(nice_top(3.2), 5.0);
        assert_eq!(nice_top(0.0), 1.0);
    }
}
