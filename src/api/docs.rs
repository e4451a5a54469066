//! The OpenAPI document (`GET /openapi.json`) and the interactive docs page
//! (`GET /docs/`), served from the binary with no network access (Swagger
//! UI is vendored into the build).

use actix_web::web;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};
use utoipa_swagger_ui::SwaggerUi;

use crate::api::{
    alerts, backtests, clock, deadletters, entities, error, events, health, instances, receivers,
    rules, silences, stats, ws,
};

/// The API description, generated from the handlers' annotations.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "cepheus",
        description = "Complex event processing: POST events about keyed entities, register temporal \
                       pattern rules, receive alerts over REST and WebSocket the moment a pattern completes.",
        license(name = "Apache-2.0")
    ),
    paths(
        events::post_events,
        deadletters::list_deadletters,
        rules::list_rules,
        rules::create_rule,
        rules::validate_rule,
        rules::get_rule,
        rules::replace_rule,
        rules::list_versions,
        backtests::start_backtest,
        backtests::get_backtest,
        rules::get_version,
        rules::delete_rule,
        rules::enable_rule,
        rules::disable_rule,
        alerts::list_alerts,
        alerts::get_alert,
        ws::alerts_ws,
        entities::get_entity,
        entities::put_entity,
        clock::advance_clock,
        instances::list_instances,
        receivers::list_receivers,
        receivers::create_receiver,
        receivers::get_receiver,
        receivers::replace_receiver,
        receivers::delete_receiver,
        receivers::list_failures,
        receivers::resend_failure,
        receivers::discard_failure,
        receivers::list_lost,
        receivers::list_versions,
        receivers::get_routes,
        receivers::put_routes,
        receivers::get_route_version,
        silences::list_silences,
        silences::create_silence,
        silences::get_silence,
        silences::expire_silence,
        health::healthz,
        health::readyz,
        health::metrics,
        stats::history,
    ),
    components(schemas(error::ErrorBody)),
    modifiers(&BearerToken),
    tags(
        (name = "events", description = "Ingest events; inspect dead letters"),
        (name = "rules", description = "Register and manage pattern rules"),
        (name = "alerts", description = "Alerts over REST and WebSocket"),
        (name = "entities", description = "Per-entity live state and static attributes"),
        (name = "clock", description = "Event-time control"),
        (name = "delivery", description = "Receivers, routes, failed deliveries and silences"),
        (name = "operations", description = "Health, readiness, metrics and the instances directory"),
    )
)]
pub struct ApiDoc;

/// Declares the bearer-token scheme used when tokens are configured.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "token",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token from the config file; scopes are `ingest`, `read` and `admin`. \
                         Not needed when no tokens are configured.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The document as pretty JSON, as `cepheus openapi` prints it and
/// `openapi/openapi.json` holds it.
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .expect("the OpenAPI document serializes")
}

/// Routes of the docs: `/openapi.json` and `/docs/`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(SwaggerUi::new("/docs/{_:.*}").url("/openapi.json", ApiDoc::openapi()))
        .route(
            "/docs",
            web::get().to(|| async {
                actix_web::HttpResponse::PermanentRedirect()
                    .insert_header(("Location", "/docs/"))
                    .finish()
            }),
        );
}
