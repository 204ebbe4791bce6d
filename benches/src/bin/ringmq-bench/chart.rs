//! `--chart out.svg`: throughput by message size (from a sweep) and the latency percentile curve.
//! SVG through plotters: text is emitted as SVG text, so no system fonts are needed.

use std::path::Path;

use anyhow::Context;
use hdrhistogram::Histogram;
use plotters::prelude::*;

use crate::report::Report;

/// Draws the chart: left, MB/s against message size; right, latency against percentile.
pub(crate) fn draw(
    path: &Path,
    reports: &[Report],
    latency: &Histogram<u64>,
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (1200, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(|error| anyhow::anyhow!("{error}"))?;
    let (left, right) = root.split_horizontally(600);
    throughput(&left, reports).context("drawing the throughput chart")?;
    percentiles(&right, latency).context("drawing the latency chart")?;
    root.present().map_err(|error| anyhow::anyhow!("{error}"))?;
    Ok(())
}

fn throughput(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    reports: &[Report],
) -> anyhow::Result<()> {
    let sizes: Vec<u32> = reports.iter().map(|report| report.message_size as u32).collect();
    let min = sizes.iter().copied().min().unwrap_or(16).max(1);
    let max = sizes.iter().copied().max().unwrap_or(16_384).max(min * 2);
    let series = |pick: fn(&Report) -> Option<f64>| -> Vec<(u32, f64)> {
        reports
            .iter()
            .filter_map(|report| pick(report).map(|value| (report.message_size as u32, value)))
            .collect()
    };
    let produce = series(|report| report.produce_mb_per_s);
    let consume = series(|report| report.consume_mb_per_s);
    let baseline = series(|report| report.baseline_mb_per_s);
    let top = produce
        .iter()
        .chain(&consume)
        .chain(&baseline)
        .map(|(_, value)| *value)
        .fold(1.0, f64::max)
        * 1.15;
    let mut chart = ChartBuilder::on(area)
        .caption("throughput by message size", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((min..max).log_scale(), 0f64..top)
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    chart
        .configure_mesh()
        .x_desc("message size, bytes")
        .y_desc("MB/s")
        .draw()
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    for (points, color, name) in
        [(&produce, RED, "produce"), (&consume, BLUE, "consume"), (&baseline, BLACK, "raw TCP")]
    {
        if points.is_empty() {
            continue;
        }
        chart
            .draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))
            .map_err(|error| anyhow::anyhow!("{error}"))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(points.iter().map(|&(x, y)| Circle::new((x, y), 3, color.filled())))
            .map_err(|error| anyhow::anyhow!("{error}"))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    Ok(())
}

fn percentiles(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    latency: &Histogram<u64>,
) -> anyhow::Result<()> {
    // x: "nines" = -log10(1 - q), so 90% is 1, 99% is 2, 99.9% is 3.
    let points: Vec<(f64, f64)> = [0.5, 0.75, 0.9, 0.95, 0.99, 0.995, 0.999, 0.9995, 0.9999]
        .iter()
        .filter(|_| !latency.is_empty())
        .map(|&q: &f64| (-(1.0 - q).log10(), latency.value_at_quantile(q) as f64 / 1000.0))
        .collect();
    let top = points.iter().map(|(_, y)| *y).fold(1.0, f64::max) * 1.2;
    let mut chart = ChartBuilder::on(area)
        .caption("latency by percentile (last run)", ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.2f64..4.2f64, (1f64..top.max(10.0)).log_scale())
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    chart
        .configure_mesh()
        .x_desc("percentile (1 = p90, 2 = p99, 3 = p99.9, 4 = p99.99)")
        .y_desc("latency, us")
        .draw()
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    chart
        .draw_series(LineSeries::new(points.iter().copied(), BLUE.stroke_width(2)))
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    chart
        .draw_series(points.iter().map(|&(x, y)| Circle::new((x, y), 3, BLUE.filled())))
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    Ok(())
}
