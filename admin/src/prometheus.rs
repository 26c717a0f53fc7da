//! The Prometheus exporter behind `/metrics`.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::error::AdminError;

/// The bucket bounds of drover's latency histograms (`*_seconds`): from a
/// millisecond to a minute.
const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Installs a Prometheus recorder as the process's `metrics` recorder and
/// returns the handle [`Admin::metrics`](crate::Admin::metrics) renders
/// `/metrics` with. Series ending in `_seconds` are histograms with
/// buckets from 1 ms to 60 s.
///
/// Call it before building the pool: the pool registers its series when
/// it is built, and series registered before any recorder is installed go
/// nowhere. The running endpoint does the recorder's upkeep.
///
/// # Errors
///
/// [`AdminError::Prometheus`] if a recorder is installed already (the
/// application's own: then build a `PrometheusHandle` from the recorder
/// it installed and pass that to `Admin::metrics`).
pub fn install_prometheus() -> Result<PrometheusHandle, AdminError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)?
        .install_recorder()?;
    Ok(handle)
}
