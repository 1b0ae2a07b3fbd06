//! The process's Prometheus recorder, installed once and shared by the kiosk and the hub (the demo runs both).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the recorder on first use; `None` when another recorder was installed
/// first (metrics then go there, and `/metrics` says so).
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| match PrometheusBuilder::new().install_recorder() {
            Ok(handle) => Some(handle),
            Err(e) => {
                tracing::warn!(error = %e, "metrics recorder not installed; /metrics stays empty");
                None
            }
        })
        .as_ref()
}

/// The text exposition of every metric so far.
pub fn render() -> String {
    match prometheus() {
        Some(h) => {
            // Without the exporter's own upkeep thread, histograms drain here.
            h.run_upkeep();
            h.render()
        }
        None => "# metrics recorder not installed\n".into(),
    }
}
