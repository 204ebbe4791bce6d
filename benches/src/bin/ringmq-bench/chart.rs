//! `--chart out.svg`: a sweep as a chart. A size sweep draws MB/s by message size; a rate sweep
//! draws the latency percentiles against the offered rate, with the run it shows written under
//! the title. SVG through plotters: text is emitted as SVG text, so no system fonts are needed.

use std::path::Path;

use anyhow::Context;
use plotters::prelude::*;

use crate::report::Report;

/// Which series the reports are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Series {
    /// One run per message size.
    Sizes,
    /// One paced run per offered rate.
    Rates,
}

/// Draws the chart of `reports` (one per point of the series) into `path`.
pub(crate) fn draw(path: &Path, series: Series, reports: &[Report]) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|error| anyhow::anyhow!("{error}"))?;
    match series {
        Series::Sizes => throughput(&root, reports).context("drawing the throughput chart")?,
        Series::Rates => latency_by_rate(&root, reports).context("drawing the latency chart")?,
    }
    root.present().map_err(|error| anyhow::anyhow!("{error}"))?;
    Ok(())
}

/// What a rate sweep's runs share, in a line: size, clients, partitions, acks, batching, the
/// broker's extra flags and the bench's runtime threads (what tells a latency-first run from a
/// default one), commit.
fn run_description(report: &Report) -> String {
    let flags = report.broker.split_once(" with ").map_or("", |(_, flags)| flags);
    let mut threads = match report.client_threads {
        0 => String::new(),
        threads => format!(", client threads {threads}"),
    };
    if report.client_busy_poll_us > 0 {
        threads.push_str(&format!(", client busy-poll {} µs", report.client_busy_poll_us));
    }
    let broker = if flags.is_empty() { String::new() } else { format!("; broker {flags}") };
    format!(
        "{} B, {} producer(s) + {} consumer(s), {} partition(s), acks={}, linger {} ms, \
         batch {} B, {} over {}{broker}{threads}; commit {}",
        report.message_size,
        report.producers,
        report.consumers,
        report.partitions,
        report.acks,
        report.linger_ms,
        report.batch_bytes,
        report.protocol.name(),
        report.transport,
        report.commit,
    )
}

/// Reads one figure of a report.
type Pick = fn(&Report) -> f64;

fn latency_by_rate(
    area: &DrawingArea<SVGBackend<'_>, plotters::coord::Shift>,
    reports: &[Report],
) -> anyhow::Result<()> {
    let points: Vec<(u64, &Report)> = reports
        .iter()
        .filter(|report| report.latency_us.samples > 0)
        .filter_map(|report| report.target_rate.map(|rate| (rate, report)))
        .collect();
    anyhow::ensure!(!points.is_empty(), "a rate sweep with no latency samples has nothing to draw");
    let titled = area
        .titled("end-to-end latency (send to receive) against offered rate", ("sans-serif", 20))
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    titled
        .draw_text(
            &run_description(points[0].1),
            &("sans-serif", 12).into_text_style(&titled),
            (20, 0),
        )
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let area = titled.margin(20, 0, 0, 0);
    let low = points.iter().map(|(rate, _)| *rate).min().unwrap_or(1).max(1);
    let high = points.iter().map(|(rate, _)| *rate).max().unwrap_or(1).max(low * 2);
    let floor =
        points.iter().map(|(_, report)| report.latency_us.p50).fold(f64::MAX, f64::min).max(1.0)
            / 2.0;
    let ceiling = points.iter().map(|(_, report)| report.latency_us.p999).fold(1.0, f64::max) * 2.0;
    let mut chart = ChartBuilder::on(&area)
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            ((low as f64 / 1.3)..(high as f64 * 1.3)).log_scale(),
            (floor..ceiling.max(floor * 10.0)).log_scale(),
        )
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    chart
        .configure_mesh()
        .x_desc("offered rate, messages/s (all producers)")
        .y_desc("latency, microseconds")
        .x_label_formatter(&|rate| format!("{:.0}k", rate / 1000.0))
        .y_label_formatter(&|micros| format!("{micros:.0}"))
        .light_line_style(TRANSPARENT)
        .draw()
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let percentiles: [(&str, Pick, RGBColor); 3] = [
        ("p50", |report| report.latency_us.p50, BLUE),
        ("p99", |report| report.latency_us.p99, RGBColor(230, 120, 0)),
        ("p99.9", |report| report.latency_us.p999, RED),
    ];
    for (name, pick, color) in percentiles {
        let line: Vec<(f64, f64)> =
            points.iter().map(|(rate, report)| (*rate as f64, pick(report).max(floor))).collect();
        chart
            .draw_series(LineSeries::new(line.iter().copied(), color.stroke_width(2)))
            .map_err(|error| anyhow::anyhow!("{error}"))?
            .label(name)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
        chart
            .draw_series(line.iter().map(|&(x, y)| Circle::new((x, y), 3, color.filled())))
            .map_err(|error| anyhow::anyhow!("{error}"))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|error| anyhow::anyhow!("{error}"))?;
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
