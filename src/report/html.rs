//! The HTML report (`--report run.html`, or `report show run.json --html out.html`): one
//! self-contained file — no script, no style sheet or font fetched from anywhere, the plots
//! inline SVG — that opens in any browser: the summary, the latency percentile distribution
//! (HdrHistogram style, log-scaled percentile axis), rate, latency and connections over time
//! with the drain shaded, and the errors by cause.

use std::fmt::Write as _;

use hdrhistogram::Histogram;

use super::{Report, merge, summary};

const W: f64 = 760.0;
const H: f64 = 260.0;
const PAD_L: f64 = 64.0;
const PAD_B: f64 = 36.0;
const PAD_T: f64 = 28.0;
const PAD_R: f64 = 16.0;
const COLORS: [&str; 4] = ["#1f6fb4", "#d9531e", "#2f9e44", "#7b3fbf"];

/// The whole page.
pub fn render(r: &Report) -> String {
    let mut out = String::new();
    let title = format!(
        "freezer-fleet report: {} device(s), {:.1} s",
        r.settings.devices, r.duration_s
    );
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\n<style>{CSS}</style></head><body>\n<h1>{}</h1>\n",
        esc(&title),
        esc(&title)
    );
    if let Some(why) = r.generator.as_ref().and_then(|g| g.why.as_ref()) {
        let _ = writeln!(
            out,
            "<div class=\"broken\"><h2>The generator was saturated</h2><p>{}: its latency figures describe itself, not the endpoint.</p></div>",
            esc(why)
        );
    }
    if !r.broken_thresholds.is_empty() {
        out.push_str("<div class=\"broken\"><h2>Thresholds broken</h2><ul>");
        for b in &r.broken_thresholds {
            let _ = write!(
                out,
                "<li>{} — measured {}</li>",
                esc(&b.threshold),
                esc(&b.measured)
            );
        }
        out.push_str("</ul></div>\n");
    }
    let _ = write!(out, "<h2>Summary</h2>\n<pre>{}</pre>\n", esc(&summary(r)));
    out.push_str("<h2>Latency distribution</h2>\n");
    let histograms = merge::decode_all("report", &r.figures).unwrap_or_default();
    let curves: Vec<(&str, &Histogram<u64>)> = [("PUBACK", "puback"), ("lag", "lag"), ("connect", "connect")]
        .iter()
        .filter_map(|(label, key)| {
            histograms
                .get(*key)
                .filter(|h| !h.is_empty())
                .map(|h| (*label, h))
        })
        .collect();
    out.push_str(&percentile_chart(&curves));
    let t = &r.timeline;
    if !t.is_empty() {
        let x: Vec<f64> = t.iter().map(|row| row.elapsed_s).collect();
        let drain = (r.running_s > 0.0 && r.duration_s > r.running_s).then_some((r.running_s, r.duration_s));
        let col = |f: fn(&super::timeseries::Row) -> f64| t.iter().map(f).collect::<Vec<f64>>();
        out.push_str("<h2>Rate over time</h2>\n");
        out.push_str(&line_chart(
            "events per second",
            &x,
            &[
                ("published", col(|r| r.published as f64)),
                ("acknowledged", col(|r| r.acknowledged as f64)),
                ("failed + dropped", col(|r| (r.failed + r.dropped) as f64)),
            ],
            drain,
        ));
        out.push_str("<h2>Latency over time</h2>\n");
        out.push_str(&line_chart(
            "ms (each second's own percentiles)",
            &x,
            &[
                ("PUBACK p50", col(|r| r.puback_p50_ms)),
                ("PUBACK p99", col(|r| r.puback_p99_ms)),
                ("lag p99", col(|r| r.lag_p99_ms)),
            ],
            drain,
        ));
        out.push_str("<h2>Connections over time</h2>\n");
        out.push_str(&line_chart(
            "devices / attempts per second",
            &x,
            &[
                ("connected", col(|r| r.devices_connected as f64)),
                ("attempts", col(|r| r.attempts as f64)),
            ],
            drain,
        ));
    }
    out.push_str("<h2>Errors by cause</h2>\n");
    if r.errors.is_empty() && r.refusals.is_empty() {
        out.push_str("<p>none</p>\n");
    } else {
        out.push_str("<table><tr><th>cause</th><th>count</th></tr>");
        for (cause, n) in r.errors.iter().chain(r.refusals.iter()) {
            let _ = write!(out, "<tr><td>{}</td><td>{n}</td></tr>", esc(cause));
        }
        out.push_str("</table>\n");
    }
    out.push_str("</body></html>\n");
    out
}

const CSS: &str = "body{font-family:system-ui,sans-serif;margin:2em;max-width:820px;color:#222}\
pre{background:#f5f5f5;padding:1em;overflow-x:auto}svg{background:#fff;border:1px solid #ddd}\
table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}\
.broken{background:#fde8e8;border:1px solid #d33;padding:.5em 1em}";

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A "nice" upper bound for an axis.
fn nice(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let mag = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|v| *v >= max)
        .unwrap_or(10.0 * mag)
}

fn svg_open(out: &mut String, label: &str) {
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{H}\" viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{}\">",
        esc(label)
    );
}

fn axes(out: &mut String, y_max: f64, y_label: &str) {
    let (x0, y0, x1, y1) = (PAD_L, H - PAD_B, W - PAD_R, PAD_T);
    let _ = write!(
        out,
        "<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x1}\" y2=\"{y0}\" stroke=\"#444\"/>"
    );
    let _ = write!(
        out,
        "<line x1=\"{x0}\" y1=\"{y0}\" x2=\"{x0}\" y2=\"{y1}\" stroke=\"#444\"/>"
    );
    for i in 0..=4 {
        let v = y_max * i as f64 / 4.0;
        let y = y0 - (y0 - y1) * i as f64 / 4.0;
        let _ = write!(
            out,
            "<line x1=\"{x0}\" y1=\"{y:.1}\" x2=\"{x1}\" y2=\"{y:.1}\" stroke=\"#eee\"/><text x=\"{}\" y=\"{:.1}\" font-size=\"11\" text-anchor=\"end\">{}</text>",
            x0 - 4.0,
            y + 4.0,
            short(v)
        );
    }
    let _ = write!(
        out,
        "<text x=\"{x0}\" y=\"16\" font-size=\"12\">{}</text>",
        esc(y_label)
    );
}

fn short(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.1}k", v / 1000.0)
    } else if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn legend(out: &mut String, names: &[&str]) {
    for (i, name) in names.iter().enumerate() {
        let x = PAD_L + 10.0 + i as f64 * 150.0;
        let _ = write!(
            out,
            "<rect x=\"{x}\" y=\"{}\" width=\"12\" height=\"3\" fill=\"{}\"/><text x=\"{}\" y=\"{}\" font-size=\"11\">{}</text>",
            PAD_T + 4.0,
            COLORS[i % COLORS.len()],
            x + 16.0,
            PAD_T + 8.0,
            esc(name)
        );
    }
}

/// Lines over time (x in seconds); the drain, when given, shaded.
fn line_chart(y_label: &str, x: &[f64], series: &[(&str, Vec<f64>)], drain: Option<(f64, f64)>) -> String {
    let mut out = String::new();
    svg_open(&mut out, y_label);
    let x_max = x
        .iter()
        .copied()
        .chain(drain.map(|(_, end)| end))
        .fold(1.0, f64::max);
    let y_max = nice(
        series
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .fold(0.0, f64::max),
    );
    let px = |t: f64| PAD_L + (W - PAD_L - PAD_R) * t / x_max;
    let py = |v: f64| H - PAD_B - (H - PAD_B - PAD_T) * v / y_max;
    if let Some((start, end)) = drain {
        let from = px(start);
        let _ = write!(
            out,
            "<rect x=\"{from:.1}\" y=\"{PAD_T}\" width=\"{:.1}\" height=\"{}\" fill=\"#f3f0e0\"/><text x=\"{:.1}\" y=\"{}\" font-size=\"10\">drain</text>",
            (px(end) - from).max(2.0),
            H - PAD_B - PAD_T,
            from + 2.0,
            H - PAD_B - 4.0
        );
    }
    axes(&mut out, y_max, y_label);
    for i in 0..=4 {
        let t = x_max * i as f64 / 4.0;
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{} s</text>",
            px(t),
            H - PAD_B + 16.0,
            short(t)
        );
    }
    for (i, (_, values)) in series.iter().enumerate() {
        let points: Vec<String> = x
            .iter()
            .zip(values)
            .map(|(t, v)| format!("{:.1},{:.1}", px(*t), py(*v)))
            .collect();
        let _ = write!(
            out,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.6\" points=\"{}\"/>",
            COLORS[i % COLORS.len()],
            points.join(" ")
        );
    }
    legend(&mut out, &series.iter().map(|(n, _)| *n).collect::<Vec<_>>());
    out.push_str("</svg>\n");
    out
}

/// Latency by percentile, the percentile axis log-scaled as HdrHistogram plots it (50 %, 90 %,
/// 99 %, 99.9 % … equally spaced).
fn percentile_chart(curves: &[(&str, &Histogram<u64>)]) -> String {
    let mut out = String::new();
    svg_open(&mut out, "latency by percentile");
    if curves.is_empty() {
        out.push_str("<text x=\"20\" y=\"40\">no latency samples</text></svg>\n");
        return out;
    }
    // x = log10(1 / (1 - q)): 0 at 0 %, 1 at 90 %, 2 at 99 %, …
    let nines = curves
        .iter()
        .map(|(_, h)| ((h.len() as f64).log10()).ceil().clamp(2.0, 6.0))
        .fold(2.0, f64::max);
    let y_max = nice(
        curves
            .iter()
            .map(|(_, h)| h.max() as f64 / 1000.0)
            .fold(0.0, f64::max),
    );
    let px = |x: f64| PAD_L + (W - PAD_L - PAD_R) * x / nines;
    let py = |v: f64| H - PAD_B - (H - PAD_B - PAD_T) * v / y_max;
    axes(&mut out, y_max, "ms");
    for n in 0..=nines as usize {
        let label = match n {
            0 => "0%".to_string(),
            1 => "90%".to_string(),
            n => format!("{}%", 100.0 - 100.0 / 10f64.powi(n as i32)),
        };
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{}\" font-size=\"11\" text-anchor=\"middle\">{label}</text>",
            px(n as f64),
            H - PAD_B + 16.0
        );
    }
    for (i, (_, h)) in curves.iter().enumerate() {
        let mut points = Vec::new();
        for v in h.iter_quantiles(4) {
            let q = v.quantile_iterated_to();
            if q >= 1.0 {
                break;
            }
            let x = (1.0 / (1.0 - q)).log10().min(nines);
            let ms = h.highest_equivalent(v.value_iterated_to()) as f64 / 1000.0;
            points.push(format!("{:.1},{:.1}", px(x), py(ms)));
        }
        points.push(format!("{:.1},{:.1}", px(nines), py(h.max() as f64 / 1000.0)));
        let _ = write!(
            out,
            "<polyline fill=\"none\" stroke=\"{}\" stroke-width=\"1.6\" points=\"{}\"/>",
            COLORS[i % COLORS.len()],
            points.join(" ")
        );
    }
    legend(&mut out, &curves.iter().map(|(n, _)| *n).collect::<Vec<_>>());
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_bounds_round_up() {
        assert_eq!(nice(0.0), 1.0);
        assert_eq!(nice(7.3), 10.0);
        assert_eq!(nice(212.0), 250.0);
        assert_eq!(nice(0.034), 0.05);
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(esc("a<b>&\"c\""), "a&lt;b&gt;&amp;&quot;c&quot;");
    }
}
