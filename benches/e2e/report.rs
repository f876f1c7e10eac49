//! The figures against the targets of BENCHMARKS.md: a table and a summary line on standard
//! output, `e2e.json` and `e2e.svg` in `target/bench/`.

use std::collections::HashMap;

use serde_json::json;

use crate::chart::chart;
use crate::history::History;
use crate::latency::Latency;
use crate::saturation::Saturation;
use crate::PARTITIONS;

/// Everything a full run measured.
pub struct Figures {
    pub quick: bool,
    pub redis: HashMap<String, f64>,
    pub sat: Saturation,
    pub ceiling: f64,
    pub naive_rate: f64,
    pub lat: Latency,
    pub few: Saturation,
    pub lots: Saturation,
    /// Conversations of the "many" scale run.
    pub many: u64,
    pub hist: History,
}

/// A target: what it says, the measured ratio, the ratio needed, the figure as shown.
type Target = (&'static str, f64, f64, String);

impl Figures {
    fn peak_rss(&self) -> f64 {
        [
            self.sat.peak_rss_mib,
            self.lat.peak_rss_mib,
            self.few.peak_rss_mib,
            self.lots.peak_rss_mib,
        ]
        .into_iter()
        .fold(0.0, f64::max)
    }

    fn targets(&self) -> Vec<Target> {
        let (sat, lat, few, lots, hist) = (&self.sat, &self.lat, &self.few, &self.lots, &self.hist);
        let peak_rss = self.peak_rss();
        vec![
            (
                "throughput ≥ 70% of the passthrough ceiling",
                sat.rate / self.ceiling,
                0.70,
                format!("{:.0}%", 100.0 * sat.rate / self.ceiling),
            ),
            (
                "throughput ≥ 20× the naive baseline",
                sat.rate / self.naive_rate,
                20.0,
                format!("{:.1}×", sat.rate / self.naive_rate),
            ),
            (
                "p99 latency < 50 ms at half of saturation",
                50.0 / lat.p99_ms,
                1.0,
                format!("{:.1} ms", lat.p99_ms),
            ),
            (
                "1,000,000 conversations within 20% of 1,000",
                lots.rate / few.rate,
                0.8,
                format!(
                    "{:.0}% ({} conversations: {:.0}/s; 1,000: {:.0}/s)",
                    100.0 * lots.rate / few.rate,
                    self.many,
                    lots.rate,
                    few.rate
                ),
            ),
            (
                "a command on 100,000 messages within 20% of a fresh one",
                hist.fresh_us * 1.2 / hist.long_us,
                1.0,
                format!("{:.0} µs vs {:.0} µs", hist.long_us, hist.fresh_us),
            ),
            (
                "RSS < 256 MiB throughout",
                256.0 / peak_rss,
                1.0,
                format!("{peak_rss:.0} MiB"),
            ),
        ]
    }

    /// The targets table and the summary line, then the files.
    pub fn report(&self) {
        let targets = self.targets();
        println!();
        println!("| target | measured | met |");
        println!("|---|---|---|");
        for (name, ratio, need, shown) in &targets {
            println!(
                "| {name} | {shown} | {} |",
                if ratio >= need { "yes" } else { "**no**" }
            );
        }
        println!();
        println!(
            "Switchboard {:.0} msg/s · passthrough {:.0} msg/s · naive {:.0} msg/s · Redis SET {:.0}/s GET {:.0}/s (pipelined) · {:.1} CPU s per million messages",
            self.sat.rate,
            self.ceiling,
            self.naive_rate,
            self.redis.get("SET").copied().unwrap_or(f64::NAN),
            self.redis.get("GET").copied().unwrap_or(f64::NAN),
            self.sat.cpu_seconds_per_million
        );
        self.write(&targets);
    }

    fn write(&self, targets: &[Target]) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench");
        std::fs::create_dir_all(&dir).unwrap();
        let summary = json!({
            "mode": if self.quick { "quick" } else { "full" },
            "partitions": PARTITIONS,
            "saturation": self.sat,
            "passthrough_rate": self.ceiling,
            "naive_rate": self.naive_rate,
            "redis_benchmark": self.redis,
            "latency": self.lat,
            "scale": { "few": self.few, "many": self.lots },
            "history": self.hist,
            "peak_rss_mib": self.peak_rss(),
            "targets": targets.iter().map(|(n, r, need, shown)| json!({"target": n, "measured": shown, "met": r >= need})).collect::<Vec<_>>(),
        });
        std::fs::write(
            dir.join("e2e.json"),
            serde_json::to_string_pretty(&summary).unwrap(),
        )
        .unwrap();
        if let Err(e) = chart(&dir.join("e2e.svg"), &self.sat, &self.lat) {
            eprintln!("e2e: chart not written: {e}");
        }
        eprintln!("e2e: wrote {}/e2e.json and e2e.svg", dir.display());
    }
}
