//! Latency against rate: Switchboard, the passthrough (`ceiling`) and the Kafka Streams peer at
//! `commit.interval.ms` 10 (`peer`), each at every rate of the sweep, in an order rotated from
//! one rate to the next. Prints p50 and p99 per processor and rate with the ratios the targets
//! of issue 13 name (Switchboard's p99 against the passthrough's and the peer's), and writes
//! `sweep.json` and the chart `latency-rate.svg` to `target/bench/`.

use plotters::prelude::*;
use serde_json::json;

use crate::ceiling::PassthroughApp;
use crate::latency::{latency_of, start_switchboard, Latency, Processor};
use crate::peer::app::PeerApp;
use crate::run::Run;

/// Messages per second of each step; the full sweep goes past half of Switchboard's saturation
/// on this machine (about 27,000: BENCHMARKS.md).
const RATES_QUICK: [f64; 5] = [1_000.0, 5_000.0, 10_000.0, 20_000.0, 30_000.0];
const RATES: [f64; 8] = [
    1_000.0, 2_000.0, 5_000.0, 10_000.0, 15_000.0, 20_000.0, 27_000.0, 35_000.0,
];

/// Records the passthrough produces per input: Switchboard's outputs per message on loadgen
/// traffic (1.97 in the saturation runs of BENCHMARKS.md), so that it moves as many bytes.
const PASSTHROUGH_PER_INPUT: f64 = 1.97;

/// The peer's `commit.interval.ms` in the sweep: the setting its lowest latency needs.
const PEER_COMMIT_MS: u32 = 10;

const PROCESSORS: [&str; 3] = ["switchboard", "passthrough", "peer"];

struct Point {
    processor: &'static str,
    latency: Latency,
}

pub fn sweep(io: &tokio::runtime::Runtime, quick: bool, seconds: f64) {
    let rates: &[f64] = if quick { &RATES_QUICK } else { &RATES };
    eprintln!(
        "sweep: {} rates × {PROCESSORS:?}, {seconds} s each",
        rates.len()
    );
    let mut points = Vec::new();
    for (i, &rate) in rates.iter().enumerate() {
        for k in 0..PROCESSORS.len() {
            let processor = PROCESSORS[(i + k) % PROCESSORS.len()];
            let what = format!("sweep-{processor}-{rate:.0}");
            let start: &dyn Fn(&Run) -> Box<dyn Processor> = match processor {
                "switchboard" => &start_switchboard,
                "passthrough" => &|run| Box::new(PassthroughApp::start(run, PASSTHROUGH_PER_INPUT)),
                _ => &|run| Box::new(PeerApp::start(run, PEER_COMMIT_MS)),
            };
            let latency = latency_of(io, &what, rate, seconds, start);
            points.push(Point { processor, latency });
        }
    }
    report(rates, &points);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
    std::fs::create_dir_all(&dir).unwrap();
    let summary: Vec<_> = points
        .iter()
        .map(|p| json!({ "processor": p.processor, "latency": p.latency }))
        .collect();
    std::fs::write(
        dir.join("sweep.json"),
        serde_json::to_string_pretty(&summary).unwrap(),
    )
    .unwrap();
    match chart(&dir.join("latency-rate.svg"), &points) {
        Ok(()) => eprintln!(
            "sweep: wrote {0}/sweep.json and {0}/latency-rate.svg",
            dir.display()
        ),
        Err(e) => eprintln!("sweep: no chart: {e}"),
    }
}

fn at<'a>(points: &'a [Point], processor: &str, rate: f64) -> &'a Latency {
    &points
        .iter()
        .find(|p| p.processor == processor && p.latency.rate == rate)
        .expect("measured")
        .latency
}

/// One row per rate: each processor's p50/p99 (and results seen after the warm-up, of those
/// produced after it), then Switchboard's p99 over the passthrough's and over the peer's.
fn report(rates: &[f64], points: &[Point]) {
    println!(
        "| rate/s | Switchboard p50 / p99 ms | passthrough p50 / p99 ms | peer (commit {PEER_COMMIT_MS} ms) p50 / p99 ms | p99 Switchboard/passthrough | p99 Switchboard/peer |"
    );
    println!("|---|---|---|---|---|---|");
    for &rate in rates {
        let cell = |p: &str| {
            let l = at(points, p, rate);
            let expected = (l.rate * (l.seconds - 3.0)).max(1.0);
            let behind = if (l.results as f64) < 0.95 * expected {
                format!(" (only {} of {expected:.0} results)", l.results)
            } else {
                String::new()
            };
            format!("{:.1} / {:.1}{behind}", l.p50_ms, l.p99_ms)
        };
        let p99 = |p: &str| at(points, p, rate).p99_ms;
        println!(
            "| {rate:.0} | {} | {} | {} | {:.2} | {:.2} |",
            cell("switchboard"),
            cell("passthrough"),
            cell("peer"),
            p99("switchboard") / p99("passthrough"),
            p99("switchboard") / p99("peer"),
        );
    }
}

/// p99 (solid) and p50 (thin) latency against rate, one colour per processor, log scale.
fn chart(path: &std::path::Path, points: &[Point]) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (900, 560)).into_drawing_area();
    root.fill(&WHITE)?;
    let max_rate = points.iter().map(|p| p.latency.rate).fold(1.0, f64::max);
    let finite = |v: f64| if v.is_finite() { v } else { 1.0 };
    let max_ms = points
        .iter()
        .map(|p| finite(p.latency.p99_ms))
        .fold(10.0, f64::max);
    let mut c = ChartBuilder::on(&root)
        .caption(
            "Latency against rate: createdAt to read_committed result",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..max_rate * 1.05, (1.0..max_ms * 1.5).log_scale())?;
    c.configure_mesh()
        .x_desc("messages/s")
        .y_desc("ms (p99 thick, p50 thin)")
        .draw()?;
    for (processor, colour) in PROCESSORS.iter().zip([BLUE, GREEN, RED]) {
        let mut mine: Vec<&Latency> = points
            .iter()
            .filter(|p| p.processor == *processor)
            .map(|p| &p.latency)
            .collect();
        mine.sort_by(|a, b| a.rate.total_cmp(&b.rate));
        let line = |f: fn(&Latency) -> f64| -> Vec<(f64, f64)> {
            mine.iter()
                .map(|l| (l.rate, finite(f(l)).max(1.0)))
                .collect()
        };
        c.draw_series(LineSeries::new(line(|l| l.p99_ms), colour.stroke_width(3)))?
            .label(*processor)
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(3)));
        c.draw_series(LineSeries::new(line(|l| l.p50_ms), colour.stroke_width(1)))?;
    }
    c.configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperLeft)
        .draw()?;
    root.present()?;
    Ok(())
}
