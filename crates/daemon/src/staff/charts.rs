//! Small per-day bar charts as inline SVG, rendered on the server (no chart library, no script):
//! one bar per day, scaled to the period's largest value, each with a `<title>` tooltip.

use maud::{html, Markup};

/// A bar chart of `values` (oldest first) labelled by `labels`.
pub fn bars(values: &[i64], labels: &[String]) -> Markup {
    let width = 300.0_f64;
    let height = 48.0_f64;
    let n = values.len().max(1) as f64;
    let max = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let slot = width / n;
    let bar = (slot * 0.8).max(1.0);
    html! {
        svg viewBox=(format!("0 0 {width} {height}")) preserveAspectRatio="none" role="img" {
            @for (i, value) in values.iter().enumerate() {
                @let h = if *value > 0 { ((*value as f64) / max * (height - 2.0)).max(2.0) } else { 2.0 };
                rect x=(format!("{:.1}", i as f64 * slot)) y=(format!("{:.1}", height - h))
                    width=(format!("{bar:.1}")) height=(format!("{h:.1}")) class=[(*value <= 0).then_some("zero")] {
                    title { (labels.get(i).map(String::as_str).unwrap_or("")) ": " (value) }
                }
            }
        }
    }
}
