//! A match's trace identity, computed from its match id alone.
//!
//! The reader, the projector and the compensator never tell each other
//! which trace a match belongs to (the event table is fixed, and a stream
//! entry carries no trace context), so each derives it: the trace id and
//! the span id of the match's root from the match id, and whether the
//! match is sampled from that trace id, exactly as the SDK's
//! `TraceIdRatioBased` sampler decides. Every process with the same
//! `sample_ratio` therefore traces the same matches, and a match traced at
//! 10 % is also traced at 20 %.
//!
//! The derivation is part of the operator interface (a trace is looked up
//! by the id computed here), so its constants never change.

use opentelemetry::trace::{SpanId, TraceId};

/// Salts of the three derived values, so that they are unrelated.
const TRACE_HIGH: u64 = 0x5250_535f_7472_6163; // "RPS_trac"
const TRACE_LOW: u64 = 0x655f_6964_5f6d_6174; // "e_id_mat"
const ROOT_SPAN: u64 = 0x6368_5f72_6f6f_7421; // "ch_root!"

/// The splitmix64 finalizer: a bijection on `u64` that spreads sequential
/// match ids over the whole range, which the ratio sampler needs (it reads
/// the low 64 bits as a uniform number). It maps only 0 to 0.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The trace of a match. Never the invalid all-zero id: each half is zero
/// for one match id only, and not for the same one.
pub fn trace_id(match_id: i64) -> TraceId {
    let m = match_id as u64;
    let high = mix(m ^ TRACE_HIGH);
    let low = mix(m ^ TRACE_LOW);
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&high.to_be_bytes());
    bytes[8..].copy_from_slice(&low.to_be_bytes());
    TraceId::from_bytes(bytes)
}

/// The span id of the match's root, the parent of every span of the match.
pub fn root_span_id(match_id: i64) -> SpanId {
    let id = mix(match_id as u64 ^ ROOT_SPAN);
    // Zero (invalid) for exactly one match id; any other constant will do.
    SpanId::from_bytes(if id == 0 { 1 } else { id }.to_be_bytes())
}

/// The sampling threshold of a ratio, compared with [`sample_value`]; the
/// SDK's `TraceIdRatioBased` arithmetic. `u64::MAX` samples everything.
pub fn threshold(ratio: f64) -> u64 {
    if ratio >= 1.0 {
        u64::MAX
    } else {
        (ratio.max(0.0) * (1u64 << 63) as f64) as u64
    }
}

/// The number the ratio sampler reads from a trace id: its low 64 bits,
/// shifted to 63.
pub fn sample_value(trace_id: TraceId) -> u64 {
    let bytes = trace_id.to_bytes();
    let mut low = [0u8; 8];
    low.copy_from_slice(&bytes[8..]);
    u64::from_be_bytes(low) >> 1
}

/// Whether a match is sampled at `threshold` (see [`threshold`]).
pub fn is_sampled(match_id: i64, threshold: u64) -> bool {
    threshold == u64::MAX || sample_value(trace_id(match_id)) < threshold
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{
        SamplingDecision, SpanKind, TraceContextExt, TraceFlags, TraceState,
    };
    use opentelemetry::Context;
    use opentelemetry_sdk::trace::{Sampler, ShouldSample};

    /// Pinned values: a changed derivation would split the traces of a
    /// deployment whose components run different versions, and break every
    /// trace link an operator saved.
    #[test]
    fn derivation_is_stable() {
        // Computed apart from this code (splitmix64 of the salted id).
        assert_eq!(trace_id(1).to_string(), "6d3f3c71ffcd26197317363be0840eec");
        assert_eq!(root_span_id(1).to_string(), "2e2c94e39e4e8efc");
        let m = 7_340_032_000_000_123;
        assert_eq!(trace_id(m).to_string(), "84c2e28a1b2f63ae3ecad0dc2eb76bfd");
        assert_eq!(root_span_id(m).to_string(), "f74e5768eb54235c");
        assert_eq!(trace_id(1), trace_id(1));
        assert_ne!(trace_id(1), trace_id(2));
        assert_ne!(root_span_id(1), root_span_id(2));
        for m in [
            0,
            -1,
            i64::MIN,
            i64::MAX,
            TRACE_HIGH as i64,
            TRACE_LOW as i64,
        ] {
            assert_ne!(trace_id(m), TraceId::INVALID, "{m}");
        }
        assert_ne!(root_span_id(ROOT_SPAN as i64), SpanId::INVALID);
    }

    /// Our decision is the SDK sampler's, for root spans (ratio-based) and
    /// for children of the derived remote parent (parent-based), so the
    /// helpers' cheap check and the exporter never disagree.
    #[test]
    fn sampling_agrees_with_the_sdk_and_across_components() {
        for ratio in [0.0, 0.1, 0.5, 0.9, 1.0] {
            let t = threshold(ratio);
            let sdk = Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(ratio)));
            let mut sampled = 0;
            // Sequential ids, as the match id generator hands them out.
            let base = 7_340_032_000_000_000i64;
            for m in base..base + 20_000 {
                let ours = is_sampled(m, t);
                let root =
                    sdk.should_sample(None, trace_id(m), "match", &SpanKind::Internal, &[], &[]);
                assert_eq!(
                    ours,
                    root.decision == SamplingDecision::RecordAndSample,
                    "match {m} at {ratio}"
                );
                let flags = if ours {
                    TraceFlags::SAMPLED
                } else {
                    TraceFlags::default()
                };
                let parent = Context::new().with_remote_span_context(
                    opentelemetry::trace::SpanContext::new(
                        trace_id(m),
                        root_span_id(m),
                        flags,
                        true,
                        TraceState::NONE,
                    ),
                );
                let child = sdk.should_sample(
                    Some(&parent),
                    trace_id(m),
                    "apply",
                    &SpanKind::Internal,
                    &[],
                    &[],
                );
                assert_eq!(ours, child.decision == SamplingDecision::RecordAndSample);
                // Another component computes the same from the id alone.
                assert_eq!(ours, is_sampled(m, threshold(ratio)));
                sampled += usize::from(ours);
            }
            let share = sampled as f64 / 20_000.0;
            assert!((share - ratio).abs() < 0.02, "{share} sampled at {ratio}");
        }
        // A match sampled at a lower ratio is sampled at every higher one.
        for m in 0..5_000 {
            if is_sampled(m, threshold(0.1)) {
                assert!(is_sampled(m, threshold(0.2)));
            }
        }
    }
}
