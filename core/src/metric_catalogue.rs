//! The shape of a component's metric tables: every name it records, with
//! the help text and, for histograms, the bucket bounds `rpsctl` configures
//! the recorder with. Each component declares one [`MetricCatalogue`]; the
//! naming rules are in docs/operations.md, "Metrics".

use metrics::Unit;

/// One component's metrics.
#[derive(Debug, Clone, Copy)]
pub struct MetricCatalogue {
    /// Name and help text; a counter counts events, so its unit is
    /// [`Unit::Count`].
    pub counters: &'static [(&'static str, &'static str)],
    /// Name, unit and help text.
    pub gauges: &'static [(&'static str, Unit, &'static str)],
    /// Name, help text and bucket bounds; every histogram measures seconds.
    pub histograms: &'static [(&'static str, &'static str, &'static [f64])],
}

impl MetricCatalogue {
    /// Registers the help text and units with the installed recorder (once
    /// per process is enough; repeats are harmless).
    pub fn describe(&self) {
        for (name, help) in self.counters {
            metrics::describe_counter!(*name, Unit::Count, *help);
        }
        for (name, unit, help) in self.gauges {
            metrics::describe_gauge!(*name, *unit, *help);
        }
        for (name, help, _) in self.histograms {
            metrics::describe_histogram!(*name, Unit::Seconds, *help);
        }
    }

    /// Every metric name: counters, gauges, then histograms.
    pub fn names(&self) -> impl Iterator<Item = &'static str> {
        let counters = self.counters.iter().map(|m| m.0);
        let gauges = self.gauges.iter().map(|m| m.0);
        let histograms = self.histograms.iter().map(|m| m.0);
        counters.chain(gauges).chain(histograms)
    }

    /// Every histogram with its bucket bounds.
    pub fn histogram_buckets(&self) -> impl Iterator<Item = (&'static str, &'static [f64])> {
        self.histograms.iter().map(|h| (h.0, h.2))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CATALOGUE: MetricCatalogue = MetricCatalogue {
        counters: &[("rps_test_things_total", "Things")],
        gauges: &[("rps_test_lag_seconds", Unit::Seconds, "Lag")],
        histograms: &[("rps_test_step_seconds", "Step", &[0.1, 1.0])],
    };

    #[test]
    fn names_cover_every_table() {
        let names: Vec<_> = CATALOGUE.names().collect();
        assert_eq!(
            names,
            [
                "rps_test_things_total",
                "rps_test_lag_seconds",
                "rps_test_step_seconds"
            ]
        );
        let buckets: Vec<_> = CATALOGUE.histogram_buckets().collect();
        assert_eq!(buckets, [("rps_test_step_seconds", &[0.1, 1.0][..])]);
    }
}
