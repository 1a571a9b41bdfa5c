//! Prometheus metrics. This module owns the registry; other modules call the recording methods.
//! Label values are bounded (route names, status codes, region and upstream names from config,
//! error codes from a fixed table), so cardinality cannot be driven by clients.

use std::collections::BTreeMap;

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

/// All of sluice's metrics, registered in one registry.
pub struct Metrics {
    registry: Registry,
    /// `sluice_requests_total{route,status,region}`
    pub requests: IntCounterVec,
    /// `sluice_request_duration_seconds{route}`: first byte in to last byte out.
    pub request_duration: HistogramVec,
    /// `sluice_upstream_duration_seconds{upstream}`: upstream connect to response headers.
    pub upstream_duration: HistogramVec,
    /// `sluice_request_bytes_total`: request body bytes received from clients.
    pub bytes_in: IntCounter,
    /// `sluice_response_bytes_total`: response body bytes sent to clients.
    pub bytes_out: IntCounter,
    /// `sluice_in_flight_requests`
    pub in_flight: IntGauge,
    /// `sluice_errors_total{code}`: errors sluice produced, by stable error code.
    pub errors: IntCounterVec,
    /// `sluice_stream_interruptions_total{reason}`: responses cut after headers were sent.
    pub stream_interruptions: IntCounterVec,
    /// `sluice_added_latency_seconds`: time spent in sluice before the upstream request started.
    pub added_latency: Histogram,
    /// `sluice_auth_failures_total{reason}`: requests refused with `invalid_api_key`, by reason
    /// (missing, malformed, ambiguous, misplaced, unknown, revoked, expired).
    pub auth_failures: IntCounterVec,
    /// `sluice_redactions_total{entity}`: PII values replaced in request bodies.
    pub redactions: IntCounterVec,
    /// `sluice_response_redactions_total{entity}`: values replaced in responses.
    pub response_redactions: IntCounterVec,
    /// `sluice_mcp_requests_total{server,method,outcome}`: MCP JSON-RPC calls.
    pub mcp_requests: IntCounterVec,
    /// `sluice_mcp_upstream_messages_rejected_total{server,action}`: messages from MCP servers
    /// that were not passed on: `replaced` by a JSON-RPC error (invalid, ambiguous, too large,
    /// unscannable) or `dropped` (an answer to no request in flight).
    pub mcp_rejected: IntCounterVec,
    /// `sluice_background_restarts_total{task}`: background tasks restarted after a panic (set
    /// at scrape time, see `supervise`).
    pub background_restarts: IntCounterVec,
    /// `sluice_store_size_bytes`: the database file and its write-ahead log (set at scrape
    /// time).
    pub store_size: IntGauge,
    /// `sluice_store_max_bytes`: `[store] max_size_mb` in bytes, 0 when unbounded.
    pub store_max: IntGauge,
    /// The audit writer's queue, batch write time, records written and failed writes.
    pub audit: crate::audit::WriterStats,
    /// `sluice_admin_requests_total{method,status}`: admin API calls.
    pub admin_requests: IntCounterVec,
    /// `sluice_snapshot_age_seconds`: since the key snapshot was last confirmed current (set
    /// at scrape time).
    pub snapshot_age: prometheus::Gauge,
    /// `sluice_snapshot_reloads_total`: key snapshots rebuilt (set at scrape time).
    pub snapshot_reloads: IntCounter,
    /// `sluice_admin_logins_total{outcome}`: `success`, `throttled`, or the failure reason
    /// (unknown_user, wrong_password, second_factor_missing, wrong_second_factor,
    /// replayed_totp_code, internal).
    pub admin_logins: IntCounterVec,
    /// `sluice_credential_expiry_timestamp_seconds{credential}`: when each credential in the
    /// snapshot expires (an OAuth credential: its current access token); set at scrape time.
    pub credential_expiry: prometheus::GaugeVec,
    /// `sluice_oauth_refresh_failures_total{credential}`: failed OAuth token requests.
    pub oauth_refresh_failures: IntCounterVec,
    /// `sluice_oauth_needs_reconnect{credential}`: 1 while the server refuses the credential's
    /// refresh token (set at scrape time).
    pub oauth_needs_reconnect: prometheus::IntGaugeVec,
    /// `sluice_oauth_connects_total{outcome}`: authorization code connects that ended.
    pub oauth_connects: IntCounterVec,
    /// `sluice_oauth_revocations_total{outcome}`: RFC 7009 revocations on delete and reconnect.
    pub oauth_revocations: IntCounterVec,
    /// `gen_ai_client_token_usage{gen_ai_operation_name,gen_ai_request_model,gen_ai_token_type,
    /// org,key}`: tokens per answer (OpenTelemetry GenAI semantic conventions).
    pub token_usage: HistogramVec,
    /// `gen_ai_server_time_to_first_token_seconds{gen_ai_operation_name,gen_ai_request_model,
    /// org,key}`: request start to the first byte of a streamed answer.
    pub time_to_first_token: HistogramVec,
    /// `sluice_usage_unknown_total{gen_ai_operation_name}`: successful answers whose usage
    /// could not be read.
    pub usage_unknown: IntCounterVec,
    /// `sluice_fleet_*`: the shared counters in Redis.
    pub fleet: crate::limits::fleet::FleetMetrics,
    /// `sluice_bundle_applies_total{outcome}`: `[fleet] bundle` convergences (ok, error).
    pub bundle_applies: IntCounterVec,
    /// `sluice_bundle_last_success_timestamp_seconds`: when the bundle last converged.
    pub bundle_last_success: IntGauge,
    /// `sluice_upstream_tls_failures_total{upstream,reason}`: TLS connections refused before
    /// anything was sent (`tls_handshake`: the certificate did not verify; `tls_version`;
    /// `tls_pin`). `upstream` is an upstream's or MCP server's configured name.
    pub upstream_tls_failures: IntCounterVec,
    /// `sluice_config_reloads_total{outcome}`: config reloads (SIGHUP, `sluice reload`):
    /// `applied`, `unchanged`, `invalid`, `failed` (the last two keep the running config).
    pub config_reloads: IntCounterVec,
    /// `sluice_config_last_reload_success_timestamp_seconds`: when the config file was last
    /// read and applied (its load at start included).
    pub config_last_reload: IntGauge,
    /// The model label values handed out so far (bounded: see [`Metrics::model_label`]).
    models: std::sync::RwLock<std::collections::HashSet<String>>,
}

/// How many distinct model label values are kept; later ones are `other`.
pub const MAX_MODEL_LABELS: usize = 200;

const TOKEN_BUCKETS: &[f64] = &[
    1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0,
    16777216.0, 67108864.0,
];

const TTFT_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 120.0,
];

const OVERHEAD_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
];

impl Metrics {
    /// Create and register every metric.
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let registry = Registry::new();
        // The process: CPU seconds, resident and virtual memory, open and maximum file
        // descriptors, threads, start time (`process_*`, from /proc).
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        let build_info = prometheus::IntGaugeVec::new(
            Opts::new(
                "sluice_build_info",
                "Always 1; the running build's version in its label",
            ),
            &["version"],
        )?;
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION")])
            .set(1);
        registry.register(Box::new(build_info))?;
        let requests = IntCounterVec::new(
            Opts::new(
                "sluice_requests_total",
                "Data-plane requests by route, status and region",
            ),
            &["route", "status", "region"],
        )?;
        let request_duration = HistogramVec::new(
            HistogramOpts::new(
                "sluice_request_duration_seconds",
                "Data-plane request duration, first byte in to last byte out",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["route"],
        )?;
        let upstream_duration = HistogramVec::new(
            HistogramOpts::new(
                "sluice_upstream_duration_seconds",
                "Time from sending the request upstream to receiving its response headers",
            )
            .buckets(LATENCY_BUCKETS.to_vec()),
            &["upstream"],
        )?;
        let bytes_in = IntCounter::new(
            "sluice_request_bytes_total",
            "Request body bytes received from clients",
        )?;
        let bytes_out = IntCounter::new(
            "sluice_response_bytes_total",
            "Response body bytes sent to clients",
        )?;
        let in_flight = IntGauge::new("sluice_in_flight_requests", "Requests being processed")?;
        let errors = IntCounterVec::new(
            Opts::new(
                "sluice_errors_total",
                "Errors produced by sluice, by error code",
            ),
            &["code"],
        )?;
        let stream_interruptions = IntCounterVec::new(
            Opts::new(
                "sluice_stream_interruptions_total",
                "Responses cut after their headers were sent (upstream stall or failure)",
            ),
            &["reason"],
        )?;
        let added_latency = Histogram::with_opts(
            HistogramOpts::new(
                "sluice_added_latency_seconds",
                "Time spent in sluice between the request's arrival and the upstream request",
            )
            .buckets(OVERHEAD_BUCKETS.to_vec()),
        )?;
        let auth_failures = IntCounterVec::new(
            Opts::new(
                "sluice_auth_failures_total",
                "Requests refused with invalid_api_key, by reason",
            ),
            &["reason"],
        )?;
        registry.register(Box::new(auth_failures.clone()))?;
        let redactions = IntCounterVec::new(
            Opts::new(
                "sluice_redactions_total",
                "PII and secrets replaced in request bodies, by entity (email, ssn, phone, card, secret)",
            ),
            &["entity"],
        )?;
        registry.register(Box::new(redactions.clone()))?;
        let response_redactions = IntCounterVec::new(
            Opts::new(
                "sluice_response_redactions_total",
                "Values replaced in responses (response redaction on), by entity (email, ssn, phone, card, secret)",
            ),
            &["entity"],
        )?;
        registry.register(Box::new(response_redactions.clone()))?;
        let mcp_requests = IntCounterVec::new(
            Opts::new(
                "sluice_mcp_requests_total",
                "MCP JSON-RPC calls by server, method and outcome (success, error, refused, batch_refused, sent, no_response, failure)",
            ),
            &["server", "method", "outcome"],
        )?;
        registry.register(Box::new(mcp_requests.clone()))?;
        let mcp_rejected = IntCounterVec::new(
            Opts::new(
                "sluice_mcp_upstream_messages_rejected_total",
                "Messages from MCP servers not passed on: replaced by a JSON-RPC error, or dropped (an answer to no request in flight)",
            ),
            &["server", "action"],
        )?;
        registry.register(Box::new(mcp_rejected.clone()))?;
        let background_restarts = IntCounterVec::new(
            Opts::new(
                "sluice_background_restarts_total",
                "Background tasks (snapshot, oauth, bundle, audit, fleet) restarted after a panic",
            ),
            &["task"],
        )?;
        registry.register(Box::new(background_restarts.clone()))?;
        let store_size = IntGauge::new(
            "sluice_store_size_bytes",
            "Size of the SQLite store (database file and write-ahead log), bytes",
        )?;
        registry.register(Box::new(store_size.clone()))?;
        let store_max = IntGauge::new(
            "sluice_store_max_bytes",
            "[store] max_size_mb in bytes (0: only the disk bounds the store)",
        )?;
        registry.register(Box::new(store_max.clone()))?;
        let audit = crate::audit::WriterStats {
            depth: IntGauge::new(
                "sluice_audit_queue_depth",
                "Request audit records queued, not yet written",
            )?,
            write_seconds: Histogram::with_opts(
                HistogramOpts::new(
                    "sluice_audit_write_seconds",
                    "Time to write one batch of audit records (one transaction)",
                )
                .buckets(OVERHEAD_BUCKETS.to_vec()),
            )?,
            written: IntCounter::new(
                "sluice_audit_records_total",
                "Request audit records written",
            )?,
            errors: IntCounter::new(
                "sluice_audit_write_errors_total",
                "Failed audit batch writes (retried until written)",
            )?,
            failing: IntGauge::new(
                "sluice_audit_writer_failing",
                "1 while audit records cannot be written (disk full, store broken): new requests get 503 audit_unavailable",
            )?,
        };
        let admin_requests = IntCounterVec::new(
            Opts::new(
                "sluice_admin_requests_total",
                "Admin API calls by method and status",
            ),
            &["method", "status"],
        )?;
        registry.register(Box::new(admin_requests.clone()))?;
        let admin_logins = IntCounterVec::new(
            Opts::new(
                "sluice_admin_logins_total",
                "Admin API logins by outcome (success, throttled, or the failure reason)",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(admin_logins.clone()))?;
        let snapshot_age = prometheus::Gauge::new(
            "sluice_snapshot_age_seconds",
            "Seconds since the in-memory key snapshot was last confirmed current; past [store] max_stale_secs requests get 503 store_unavailable",
        )?;
        registry.register(Box::new(snapshot_age.clone()))?;
        let snapshot_reloads = IntCounter::new(
            "sluice_snapshot_reloads_total",
            "Key snapshots rebuilt from the store (only changes to keys, orgs, credentials or users rebuild it)",
        )?;
        registry.register(Box::new(snapshot_reloads.clone()))?;
        let credential_expiry = prometheus::GaugeVec::new(
            Opts::new(
                "sluice_credential_expiry_timestamp_seconds",
                "Unix time at which each credential expires (an OAuth credential: its current access token); absent when it never expires",
            ),
            &["credential"],
        )?;
        registry.register(Box::new(credential_expiry.clone()))?;
        let oauth_refresh_failures = IntCounterVec::new(
            Opts::new(
                "sluice_oauth_refresh_failures_total",
                "Failed OAuth token requests by credential (retried with backoff, 1 s to 30 s)",
            ),
            &["credential"],
        )?;
        registry.register(Box::new(oauth_refresh_failures.clone()))?;
        let oauth_needs_reconnect = prometheus::IntGaugeVec::new(
            Opts::new(
                "sluice_oauth_needs_reconnect",
                "1 for each OAuth credential whose refresh token the authorization server refused (invalid_grant): run sluice credentials connect again",
            ),
            &["credential"],
        )?;
        registry.register(Box::new(oauth_needs_reconnect.clone()))?;
        let oauth_connects = IntCounterVec::new(
            Opts::new(
                "sluice_oauth_connects_total",
                "OAuth authorization code connects that ended, by outcome (connected, or the error code)",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(oauth_connects.clone()))?;
        let oauth_revocations = IntCounterVec::new(
            Opts::new(
                "sluice_oauth_revocations_total",
                "RFC 7009 token revocations on credential delete and reconnect, by outcome (revoked, failed)",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(oauth_revocations.clone()))?;
        let token_usage = HistogramVec::new(
            HistogramOpts::new(
                "gen_ai_client_token_usage",
                "Tokens per LLM answer, as the provider reported them (input and output)",
            )
            .buckets(TOKEN_BUCKETS.to_vec()),
            &[
                "gen_ai_operation_name",
                "gen_ai_request_model",
                "gen_ai_token_type",
                "org",
                "key",
            ],
        )?;
        registry.register(Box::new(token_usage.clone()))?;
        let time_to_first_token = HistogramVec::new(
            HistogramOpts::new(
                "gen_ai_server_time_to_first_token_seconds",
                "Request start to the first byte of a streamed answer",
            )
            .buckets(TTFT_BUCKETS.to_vec()),
            &[
                "gen_ai_operation_name",
                "gen_ai_request_model",
                "org",
                "key",
            ],
        )?;
        registry.register(Box::new(time_to_first_token.clone()))?;
        let usage_unknown = IntCounterVec::new(
            Opts::new(
                "sluice_usage_unknown_total",
                "Successful LLM answers whose token usage could not be read (an encoded body, or none reported)",
            ),
            &["gen_ai_operation_name"],
        )?;
        registry.register(Box::new(usage_unknown.clone()))?;
        let fleet = crate::limits::fleet::FleetMetrics {
            up: IntGauge::new(
                "sluice_fleet_redis_up",
                "1 while the fleet's Redis ([fleet] redis_url) answers; 0 while limits use the fallback",
            )?,
            errors: IntCounter::new(
                "sluice_fleet_redis_errors_total",
                "Redis calls that failed or timed out",
            )?,
            fallbacks: IntCounter::new(
                "sluice_fleet_local_fallback_total",
                "Limit checks made without Redis (on_redis_error decides: refused, or counted by this process)",
            )?,
        };
        let bundle_applies = IntCounterVec::new(
            Opts::new(
                "sluice_bundle_applies_total",
                "Convergences of the store to [fleet] bundle (outcome: ok, error)",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(bundle_applies.clone()))?;
        let bundle_last_success = IntGauge::new(
            "sluice_bundle_last_success_timestamp_seconds",
            "When the store last matched [fleet] bundle (unix seconds; 0: never)",
        )?;
        registry.register(Box::new(bundle_last_success.clone()))?;
        let upstream_tls_failures = IntCounterVec::new(
            Opts::new(
                "sluice_upstream_tls_failures_total",
                "TLS connections to upstreams and MCP servers refused before anything was sent (reason: tls_handshake, tls_version, tls_pin)",
            ),
            &["upstream", "reason"],
        )?;
        registry.register(Box::new(upstream_tls_failures.clone()))?;
        let config_reloads = IntCounterVec::new(
            Opts::new(
                "sluice_config_reloads_total",
                "Config reloads (outcome: applied, unchanged, invalid, failed; the last two keep the running config)",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(config_reloads.clone()))?;
        for outcome in ["applied", "unchanged", "invalid", "failed"] {
            config_reloads.with_label_values(&[outcome]);
        }
        let config_last_reload = IntGauge::new(
            "sluice_config_last_reload_success_timestamp_seconds",
            "When the config was last loaded and applied (unix seconds)",
        )?;
        registry.register(Box::new(config_last_reload.clone()))?;
        config_last_reload.set(time::OffsetDateTime::now_utc().unix_timestamp());
        registry.register(Box::new(fleet.up.clone()))?;
        registry.register(Box::new(fleet.errors.clone()))?;
        registry.register(Box::new(fleet.fallbacks.clone()))?;
        registry.register(Box::new(audit.depth.clone()))?;
        registry.register(Box::new(audit.write_seconds.clone()))?;
        registry.register(Box::new(audit.written.clone()))?;
        registry.register(Box::new(audit.errors.clone()))?;
        registry.register(Box::new(audit.failing.clone()))?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(request_duration.clone()))?;
        registry.register(Box::new(upstream_duration.clone()))?;
        registry.register(Box::new(bytes_in.clone()))?;
        registry.register(Box::new(bytes_out.clone()))?;
        registry.register(Box::new(in_flight.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(stream_interruptions.clone()))?;
        registry.register(Box::new(added_latency.clone()))?;
        Ok(Metrics {
            registry,
            requests,
            request_duration,
            upstream_duration,
            bytes_in,
            bytes_out,
            in_flight,
            errors,
            stream_interruptions,
            added_latency,
            auth_failures,
            redactions,
            response_redactions,
            mcp_requests,
            mcp_rejected,
            background_restarts,
            store_size,
            store_max,
            audit,
            admin_requests,
            admin_logins,
            snapshot_age,
            snapshot_reloads,
            credential_expiry,
            oauth_refresh_failures,
            oauth_needs_reconnect,
            oauth_connects,
            oauth_revocations,
            token_usage,
            time_to_first_token,
            usage_unknown,
            fleet,
            bundle_applies,
            bundle_last_success,
            upstream_tls_failures,
            config_reloads,
            config_last_reload,
            models: Default::default(),
        })
    }

    /// The counters the console's overview reads ([`Traffic::totals`]).
    pub fn traffic(&self) -> Traffic {
        Traffic {
            requests: self.requests.clone(),
            errors: self.errors.clone(),
            redactions: self.redactions.clone(),
            response_redactions: self.response_redactions.clone(),
            token_usage: self.token_usage.clone(),
        }
    }

    /// The label value for a client-named model: bounded in form
    /// ([`crate::usage::model_label`]) and in number ([`MAX_MODEL_LABELS`] distinct values,
    /// then `other`), so clients cannot grow the metrics without bound.
    pub fn model_label(&self, model: Option<&str>) -> String {
        let m = crate::usage::model_label(model);
        if matches!(m, "other" | "unknown") {
            return m.to_string();
        }
        let known = self.models.read().unwrap_or_else(|p| p.into_inner());
        if known.contains(m) {
            return m.to_string();
        }
        let full = known.len() >= MAX_MODEL_LABELS;
        drop(known);
        if full {
            return "other".into();
        }
        let mut known = self.models.write().unwrap_or_else(|p| p.into_inner());
        if known.len() >= MAX_MODEL_LABELS {
            return "other".into();
        }
        known.insert(m.to_string());
        m.to_string()
    }

    /// Encode every metric in the Prometheus text format.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 * 1024);
        // Encoding into a Vec cannot fail for well-formed metric families.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_registered_metrics() {
        let m = Metrics::new().unwrap();
        m.requests
            .with_label_values(&["chat_completions", "200", "us"])
            .inc();
        m.errors.with_label_values(&["request_too_large"]).inc();
        let text = String::from_utf8(m.encode()).unwrap();
        assert!(text.contains(
            "sluice_requests_total{region=\"us\",route=\"chat_completions\",status=\"200\"} 1"
        ));
        assert!(text.contains("sluice_errors_total{code=\"request_too_large\"} 1"));
        assert!(text.contains("# TYPE sluice_in_flight_requests gauge"));
    }
}

/// The traffic counters of the console's overview ([`crate::overview`]).
#[derive(Clone)]
pub struct Traffic {
    requests: IntCounterVec,
    errors: IntCounterVec,
    redactions: IntCounterVec,
    response_redactions: IntCounterVec,
    token_usage: HistogramVec,
}

impl Traffic {
    /// The traffic counters now.
    pub fn totals(&self) -> crate::overview::Totals {
        use prometheus::core::Collector;
        fn by_label(c: &impl Collector, label: &str, into: &mut BTreeMap<String, u64>) {
            for f in c.collect() {
                for m in f.get_metric() {
                    let v = m.get_counter().get_value().max(0.0) as u64;
                    let name = m
                        .get_label()
                        .iter()
                        .find(|l| l.name() == label)
                        .map_or("-", |l| l.value());
                    if v > 0 {
                        let e = into.entry(name.to_string()).or_default();
                        *e = e.saturating_add(v);
                    }
                }
            }
        }
        let mut requests = BTreeMap::new();
        by_label(&self.requests, "route", &mut requests);
        let mut refusals = BTreeMap::new();
        by_label(&self.errors, "code", &mut refusals);
        let mut redactions = BTreeMap::new();
        by_label(&self.redactions, "entity", &mut redactions);
        by_label(&self.response_redactions, "entity", &mut redactions);
        let tokens = self
            .token_usage
            .collect()
            .iter()
            .flat_map(|f| f.get_metric())
            .map(|m| m.get_histogram().get_sample_sum().max(0.0) as u64)
            .fold(0u64, u64::saturating_add);
        crate::overview::Totals {
            at: time::OffsetDateTime::now_utc().unix_timestamp(),
            requests: requests.values().fold(0, |a, n| a.saturating_add(*n)),
            refusals,
            redactions,
            tokens,
        }
    }
}
