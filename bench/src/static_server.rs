//! The reference for `GET /v2/apps/{id}`: an actix-web server with the gateway's worker count
//! answering every request with one fixed JSON body (the bytes the gateway sent for that app), so
//! the difference is what the gateway does besides HTTP.

use std::path::Path;

use actix_web::{web, App, HttpResponse, HttpServer};

pub fn serve(listen: &str, body: &Path) -> std::io::Result<()> {
    let body = web::Bytes::from(std::fs::read(body)?);
    actix_web::rt::System::new().block_on(async move {
        HttpServer::new(move || {
            let body = body.clone();
            App::new().default_service(web::to(move || {
                let body = body.clone();
                async move {
                    HttpResponse::Ok()
                        .content_type("application/json")
                        .body(body)
                }
            }))
        })
        .bind(listen)?
        .run()
        .await
    })
}
