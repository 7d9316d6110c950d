//! `modgate_mirror_up` and `modgate_parent_up`: each mirror's and each
//! parent proxy's health, read from the config in use at every scrape (a
//! demotion ends by itself when its time is up, so a counter could not
//! say it).

use std::fmt::Debug;
use std::hash::Hash;
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

/// One parent proxy's health now.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ParentLabels {
    /// `host:port`.
    pub parent: String,
}

/// A gauge per `L`, 1 while it is up: `read` says which are, at each scrape.
pub struct UpGauges<L> {
    pub name: &'static str,
    pub help: &'static str,
    pub read: Arc<dyn Fn() -> Vec<(L, bool)> + Send + Sync>,
}

impl<L> Debug for UpGauges<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UpGauges({})", self.name)
    }
}

impl<L> Collector for UpGauges<L>
where
    L: EncodeLabelSet + Clone + Debug + Hash + Eq + Send + Sync + 'static,
{
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let family = Family::<L, Gauge>::default();
        for (labels, up) in (self.read)() {
            family.get_or_create(&labels).set(i64::from(up));
        }
        let metric = encoder.encode_descriptor(self.name, self.help, None, family.metric_type())?;
        family.encode(metric)
    }
}
