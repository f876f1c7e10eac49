//! `e2e.svg`: throughput over the saturation run, and p99 latency per second of the latency run.

use plotters::prelude::*;

use crate::latency::Latency;
use crate::saturation::Saturation;

pub fn chart(
    path: &std::path::Path,
    sat: &Saturation,
    lat: &Latency,
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1000, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(350);
    // Throughput: messages processed per second, between samples.
    let rates: Vec<(f64, f64)> = sat
        .samples
        .windows(2)
        .map(|w| {
            let dt = (w[1].t - w[0].t).max(1e-3);
            (w[1].t, (w[1].processed - w[0].processed) / dt)
        })
        .collect();
    let max_rate = rates.iter().map(|r| r.1).fold(1.0, f64::max);
    let max_t = rates.last().map_or(1.0, |r| r.0);
    let mut c = ChartBuilder::on(&top)
        .caption(
            format!(
                "Saturation: {} messages, {} conversations",
                sat.messages, sat.conversations
            ),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..max_t, 0.0..max_rate * 1.1)?;
    c.configure_mesh()
        .x_desc("seconds")
        .y_desc("messages/s")
        .draw()?;
    c.draw_series(LineSeries::new(rates, &BLUE))?;
    let max_lat = lat.series.iter().map(|s| s.1).fold(1.0, f64::max);
    let max_s = lat.series.last().map_or(1, |s| s.0) as f64 + 1.0;
    let mut c = ChartBuilder::on(&bottom)
        .caption(
            format!("p99 latency per second at {:.0} messages/s", lat.rate),
            ("sans-serif", 18),
        )
        .margin(10)
        .x_label_area_size(30)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..max_s, 0.0..max_lat * 1.1)?;
    c.configure_mesh().x_desc("seconds").y_desc("ms").draw()?;
    c.draw_series(LineSeries::new(
        lat.series.iter().map(|s| (s.0 as f64, s.1)),
        &RED,
    ))?;
    root.present()?;
    Ok(())
}
