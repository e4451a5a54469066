//! `GET /`: the live page — the last hour's rates, alerts as they fire,
//! rules with an enable switch, the instances and their partitions,
//! receivers and silences, an entity timeline and counters. One self-contained HTML file
//! compiled into the binary: no CDN, no network at run time.

use actix_web::{web, HttpResponse};

/// The page.
const PAGE: &str = include_str!("index.html");

/// Routes of the page.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(index));
}

/// The live page.
pub async fn index() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/html; charset=utf-8")
        .insert_header(("Cache-Control", "no-cache"))
        .body(PAGE)
}
