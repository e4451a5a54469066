//! `cepheus serve`: wire-up only — settings, logs, store, rules, actors, HTTP.

use std::path::PathBuf;
use std::sync::Arc;

use actix_web::{middleware, web, App, HttpServer};
use anyhow::Context as _;

use crate::actors::{checkpoint, Runtime, RuntimeConfig, Upkeep};
use crate::api::auth::{self, Auth};
use crate::api::{self, ApiLimits, AppState};
use crate::catalog::Catalog;
use crate::cluster::instances::{self, Identity, InstanceLog, InstanceLogConfig, Instances};
use crate::ingest::DecodeLimits;
use crate::journal::kafka::{KafkaConfig, KafkaJournal};
use crate::journal::segment::SegmentConfig;
use crate::journal::{DurableGroup, EmbeddedJournal, Journal, JournalConfig};
use crate::migrate;
use crate::settings::{or_cores, std_duration, LogFormat, Settings, TlsSettings};
use crate::store::{Store, StoreConfig};
use crate::telemetry;

/// Flags of `cepheus serve`; each also has an environment variable, and
/// both win over the config file.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080].
    #[arg(long, env = "CEPHEUS_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,
    /// Data directory [default: ./data].
    #[arg(long, env = "CEPHEUS_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Folder of rule files to load at start.
    #[arg(long, env = "CEPHEUS_RULES", value_name = "DIR")]
    pub rules: Option<PathBuf>,
    /// TOML config file (see docs/configuration.md).
    #[arg(long, env = "CEPHEUS_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Log format [default: human].
    #[arg(long, env = "CEPHEUS_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Log filter, e.g. `info` or `cepheus=debug` [default: info; RUST_LOG wins].
    #[arg(long, env = "CEPHEUS_LOG", value_name = "FILTER")]
    pub log: Option<String>,
    /// Serve TLS with this PEM certificate chain (with --tls-key).
    #[arg(
        long,
        env = "CEPHEUS_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key for --tls-cert.
    #[arg(
        long,
        env = "CEPHEUS_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// Allow listening on a non-loopback address with no API tokens configured.
    #[arg(long, env = "CEPHEUS_INSECURE")]
    pub insecure: bool,
    /// Scale out on a Kafka-API log: its bootstrap brokers, `host:port,...`
    /// (docs/scale-out.md) [default: the embedded journal].
    #[arg(long, env = "CEPHEUS_KAFKA", value_name = "BROKERS")]
    pub kafka: Option<String>,
}

impl ServeArgs {
    /// The settings: defaults, then the config file, then these flags.
    pub fn settings(&self) -> anyhow::Result<Settings> {
        let mut settings = match &self.config {
            Some(path) => Settings::from_file(path)?,
            None => Settings::default(),
        };
        if let Some(listen) = &self.listen {
            settings.listen = listen.clone();
        }
        if let Some(dir) = &self.data_dir {
            settings.data_dir = dir.clone();
        }
        if let Some(dir) = &self.rules {
            settings.rules_dir = Some(dir.clone());
        }
        if let Some(format) = self.log_format {
            settings.log_format = format;
        }
        if let Some(level) = &self.log {
            settings.log_level = level.clone();
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            settings.tls = Some(TlsSettings {
                cert: cert.clone(),
                key: key.clone(),
            });
        }
        settings.insecure |= self.insecure;
        if let Some(brokers) = &self.kafka {
            settings.kafka.brokers = brokers.clone();
        }
        Ok(settings)
    }
}

/// Runs the service until SIGTERM or SIGINT.
pub fn run(args: &ServeArgs) -> anyhow::Result<()> {
    let settings = args.settings()?;
    init_logs(&settings);
    let metrics = telemetry::install();
    actix_web::rt::System::new().block_on(serve(settings, metrics))
}

/// Closes the WebSocket subscribers when SIGTERM or SIGINT starts the
/// graceful shutdown (actix-web handles the signals too): an open
/// subscription never ends by itself, so it would hold the shutdown up for
/// the whole `shutdown_grace` and then be cut without a close frame.
#[cfg(unix)]
async fn close_subscribers_on_signal(runtime: Arc<Runtime>) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot listen for signals; WebSocket subscribers will hold up shutdown");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    runtime.alerts.close_subscribers();
}

fn init_logs(settings: &Settings) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&settings.log_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false);
    let _ = match settings.log_format {
        LogFormat::Human => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

async fn serve(
    settings: Settings,
    metrics: metrics_exporter_prometheus::PrometheusHandle,
) -> anyhow::Result<()> {
    let access = Auth::new(&settings.auth.tokens)?;
    refuse_open_exposure(&settings, &access)?;
    let tls = settings.tls.as_ref().map(tls_config).transpose()?;
    let store = Store::open(&StoreConfig {
        path: settings.data_dir.clone(),
        cache_bytes: settings.storage.cache_bytes,
        partitions: settings.partitions,
        compression: settings.storage.compression,
    })?;
    let journal_dir = settings.data_dir.join("journal");
    let segments = SegmentConfig {
        segment_bytes: settings.storage.segment_bytes.max(1 << 16),
        ..SegmentConfig::default()
    };
    if store.format() == 1 {
        tracing::info!(data_dir = %settings.data_dir.display(), "migrating the data directory to the journal layout");
        let migrated = migrate::from_format_1(&store, &journal_dir, segments, settings.timing.dedup_horizon)
            .context("migrating the data directory failed; it is unchanged up to the failed step and the next start retries")?;
        tracing::info!(
            frames = migrated.frames,
            ids = migrated.ids,
            snapshots = migrated.snapshots,
            "migrated the data directory"
        );
    }
    let (journal, durable_groups, kafka) = if settings.kafka.brokers.trim().is_empty() {
        let (journal, durable_groups, opened) = EmbeddedJournal::open(JournalConfig {
            dir: journal_dir,
            partitions: store.partitions(),
            segments,
            dedup_horizon: settings.timing.dedup_horizon,
            max_remembered_ids: settings.history.max_remembered_ids,
            durable_timeout: std::time::Duration::from_secs(10),
            first_lsn: checkpoint::last_checkpoint(&store)? + 1,
        })
        .context("cannot open the journal")?;
        tracing::debug!(
            first = opened.first,
            next = opened.next,
            "opened the journal"
        );
        (journal as Arc<dyn Journal>, durable_groups, None)
    } else {
        let (journal, durable_groups, config) = open_kafka(&settings, &store).await?;
        (journal, durable_groups, Some(config))
    };
    let identity = Identity {
        id: instances::instance_id(&settings.kafka.instance_id, &store)?,
        url: instances::advertised_url(
            &settings.kafka.advertised_url,
            &settings.listen,
            settings.tls.is_some(),
            kafka.is_some(),
        ),
        started_at: crate::time::wall_now(),
    };
    let beat = std_duration(settings.kafka.heartbeat).max(std::time::Duration::from_millis(100));
    let instances = Arc::new(Instances::new(
        identity,
        beat * settings.kafka.missed_heartbeats.max(1),
    ));
    let catalog = Arc::new(Catalog::open(store.clone(), settings.limits.rules.clone())?);
    let runtime = Runtime::new(
        store,
        Arc::clone(&journal),
        catalog.rule_set(),
        settings.engine.clone(),
        RuntimeConfig {
            arbiters: or_cores(settings.arbiters),
            passivate_after: std_duration(settings.timing.passivate_after),
            timer_tick: std_duration(settings.timing.timer_tick)
                .max(std::time::Duration::from_millis(1)),
            checkpoint_interval: std_duration(settings.timing.checkpoint_interval)
                .max(std::time::Duration::from_millis(10)),
            max_inflight_events: settings.limits.max_inflight_events,
            max_live_entities: settings.limits.max_live_entities,
            alert_backlog: settings.limits.subscriber_backlog,
            upkeep: Upkeep {
                every: std_duration(settings.history.compact_every)
                    .max(std::time::Duration::from_millis(10)),
                retention: settings.history.retention,
                max_log_bytes: settings.history.max_bytes,
                alert_retention: settings.history.alert_retention,
            },
        },
    );
    if let Some(dir) = &settings.rules_dir {
        let changed = catalog.load_dir(&runtime, dir).map_err(|problems| {
            anyhow::anyhow!(
                "the rules in {} are invalid:\n  {}",
                dir.display(),
                problems.join("\n  ")
            )
        })?;
        tracing::info!(dir = %dir.display(), changed, "loaded rule files");
    }
    runtime
        .start(durable_groups)
        .await
        .context("recovery failed")?;
    let rule_log = match &kafka {
        Some(config) => Some(
            crate::cluster::RuleLog::start(config, Arc::clone(&catalog), Arc::clone(&runtime))
                .context("cannot share rules through the rules topic")?,
        ),
        None => None,
    };
    // NB: after the start, so the alert log is caught up with the journal
    // before a receiver reads it.
    let delivery = crate::delivery::Delivery::open(Arc::clone(&runtime), settings.delivery.clone())
        .map_err(|e| anyhow::anyhow!("the [delivery] settings are invalid: {e}"))?;
    runtime.store.sync().await?;
    let delivery_log = match &kafka {
        Some(config) => Some(
            crate::cluster::delivery::DeliveryLog::start(
                config,
                &settings.kafka.topics.delivery,
                Arc::clone(&delivery),
            )
            .await
            .context("cannot share delivery through the delivery topic")?,
        ),
        None => None,
    };
    delivery.start();
    tracing::info!(
        listen = %settings.listen,
        data_dir = %settings.data_dir.display(),
        rules = catalog.list().len(),
        receivers = delivery.directory().receivers.len(),
        "cepheus is serving"
    );

    let state = web::Data::new(AppState {
        runtime: Arc::clone(&runtime),
        catalog,
        limits: ApiLimits {
            max_body_bytes: settings.limits.max_body_bytes,
            decode: DecodeLimits {
                max_events: settings.limits.max_events_per_request,
                event: settings.limits.event.clone(),
            },
            max_page: settings.limits.max_page,
            max_subscribers: settings.limits.max_subscribers,
            max_rule_bytes: settings.limits.rules.max_rule_bytes,
        },
        metrics,
        backtests: Default::default(),
        delivery,
        instances: Arc::clone(&instances),
    });
    #[cfg(unix)]
    actix_web::rt::spawn(close_subscribers_on_signal(Arc::clone(&runtime)));
    let workers = or_cores(settings.http_workers);
    let access = web::Data::new(access);
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .app_data(access.clone())
            .wrap(middleware::from_fn(auth::require_token))
            .wrap(middleware::from_fn(api::record_latency))
            .configure(api::configure)
            .default_service(web::to(api::not_found))
    })
    .workers(workers)
    // NB: without it, a WebSocket sending several alerts in a row waited
    // for the client's delayed ACK (Nagle's algorithm): p99 POST→alert was
    // 45 ms where the server's own path took 2.5 ms.
    .tcp_nodelay(true)
    .shutdown_timeout(
        std_duration(settings.timing.shutdown_grace)
            .as_secs()
            .max(1),
    );
    let server = match tls {
        Some(config) => server.bind_rustls_0_23(&settings.listen, config),
        None => server.bind(&settings.listen),
    }
    .with_context(|| format!("cannot listen on {}", settings.listen))?;
    // NB: once listening, so the others can reach what it advertises.
    let mut instance_log = match &kafka {
        Some(config) => Some(
            InstanceLog::start(
                config,
                InstanceLogConfig {
                    topic: settings.kafka.topics.instances.clone(),
                    heartbeat: beat,
                },
                Arc::clone(&instances),
                Arc::clone(&journal),
            )
            .await
            .context("cannot share this instance through the instances topic")?,
        ),
        None => None,
    };
    server.run().await?;

    // NB: first, so the others stop forwarding here before the partitions
    // move.
    if let Some(instance_log) = &mut instance_log {
        instance_log.stop();
    }
    tracing::info!("shutting down: persisting entity state");
    checkpoint::checkpoint(&runtime)
        .await
        .context("final checkpoint failed")?;
    if let Some(rule_log) = &rule_log {
        rule_log.stop();
    }
    if let Some(delivery_log) = &delivery_log {
        delivery_log.stop();
    }
    journal.close();
    runtime.store.flush_blocking()?;
    tracing::info!("stopped");
    Ok(())
}

/// Opens the Kafka journal of the scale-out mode (`docs/scale-out.md`).
async fn open_kafka(
    settings: &Settings,
    store: &Store,
) -> anyhow::Result<(
    Arc<dyn Journal>,
    std::sync::mpsc::Receiver<DurableGroup>,
    KafkaConfig,
)> {
    let kafka = &settings.kafka;
    let limits = DecodeLimits {
        max_events: 1,
        event: settings.limits.event.clone(),
    };
    let alerts = store.clone();
    let checkpoint = checkpoint::last_checkpoint(store)?;
    let views = store.meta_u64("views")?.unwrap_or(0);
    let config = KafkaConfig {
        brokers: kafka.brokers.clone(),
        events_topic: kafka.topics.events.clone(),
        alerts_topic: kafka.topics.alerts.clone(),
        rules_topic: kafka.topics.rules.clone(),
        letters_topic: kafka.topics.deadletters.clone(),
        letters_from: store.deadletters().last_seq()? as i64,
        changelog_topic: kafka.topics.changelog.clone(),
        repartition_topic: kafka.topics.repartition.clone(),
        group_id: kafka.group_id.clone(),
        client_id: kafka.client_id.clone(),
        partitions: store.partitions(),
        replication_factor: kafka.replication_factor,
        client: kafka.client.clone(),
        ack_timeout: std_duration(kafka.ack_timeout).max(std::time::Duration::from_millis(100)),
        session_timeout: std_duration(kafka.session_timeout),
        dedup_horizon: settings.timing.dedup_horizon,
        max_remembered_ids: settings.history.max_remembered_ids,
        first_position: checkpoint.max(views) + 1,
        last_alert_seq: store.alerts().last_seq()?,
        known_alert: Arc::new(move |id: &str| alerts.alerts().contains_id(id).unwrap_or(false)),
        decode: Arc::new(move |value: &[u8], received_at: crate::time::Timestamp| {
            crate::ingest::decode::decode_record(value, &limits, received_at)
        }),
    };
    let (journal, durable_groups) = KafkaJournal::open(config.clone())
        .await
        .with_context(|| format!("cannot open the Kafka journal at {}", kafka.brokers))?;
    tracing::info!(brokers = %kafka.brokers, group = %kafka.group_id, events = %kafka.topics.events, "scaling out on a Kafka-API log");
    Ok((journal as Arc<dyn Journal>, durable_groups, config))
}

/// Refuses to expose an open API: a non-loopback address needs tokens, or
/// `--insecure` to say the exposure is meant.
fn refuse_open_exposure(settings: &Settings, access: &Auth) -> anyhow::Result<()> {
    if access.enabled() || settings.insecure {
        return Ok(());
    }
    let addresses: Vec<std::net::SocketAddr> =
        std::net::ToSocketAddrs::to_socket_addrs(&settings.listen)
            .with_context(|| format!("cannot resolve the listen address {}", settings.listen))?
            .collect();
    if addresses.iter().all(|a| a.ip().is_loopback()) {
        return Ok(());
    }
    anyhow::bail!(
        "refusing to listen on {} with no API tokens: anyone who can reach it could read and change everything. \
         Configure tokens ([[auth.tokens]] in the config file; `cepheus token` makes one), \
         or pass --insecure if an open API is what you want",
        settings.listen
    )
}

/// The rustls configuration for a certificate chain and key in PEM files.
fn tls_config(tls: &TlsSettings) -> anyhow::Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&tls.cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read the TLS certificate {}", tls.cert.display()))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key)
        .with_context(|| format!("cannot read the TLS key {}", tls.key.display()))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not fit together")?;
    Ok(config)
}
