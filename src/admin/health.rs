//! `modgate_mirror_up`: each mirror's health, read from the config in use
//! at every scrape (a demotion ends by itself when its time is up, so a
//! counter could not say it).

use std::sync::Arc;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// One mirror's health now.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MirrorLabels {
    /// `module` or `sumdb`.
    pub kind: &'static str,
    pub mirror: String,
}

/// Each mirror now, and whether it is up (not demoted).
pub type Mirrors = Arc<dyn Fn() -> Vec<(MirrorLabels, bool)> + Send + Sync>;

pub struct MirrorHealth(pub Mirrors);

impl std::fmt::Debug for MirrorHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MirrorHealth")
    }
}

impl Collector for MirrorHealth {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let family = Family::<MirrorLabels, Gauge>::default();
        for (labels, up) in (self.0)() {
            family.get_or_create(&labels).set(i64::from(up));
        }
        let metric = encoder.encode_descriptor(
            "mirror_up",
            "1 while a mirror is healthy, 0 while it is demoted",
            None,
            family.metric_type(),
        )?;
        family.encode(metric)
    }
}
