//! Summaries for the bench binaries: median, p99, min and max of measured durations.

use std::time::Duration;

/// Prints `what: median …, p99 …, min …, max … (n = …)` in milliseconds.
pub fn report(what: &str, samples: &mut [Duration]) {
    if samples.is_empty() {
        println!("{what}: no samples");
        return;
    }
    samples.sort();
    let pct =
        |p: f64| samples[((samples.len() as f64 * p).ceil() as usize).clamp(1, samples.len()) - 1];
    println!(
        "{what}: median {:.2} ms, p99 {:.2} ms, min {:.2} ms, max {:.2} ms (n = {})",
        ms(pct(0.5)),
        ms(pct(0.99)),
        ms(samples[0]),
        ms(samples[samples.len() - 1]),
        samples.len()
    );
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
