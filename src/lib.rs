//! mintproxy: an authenticating reverse proxy. Plain requests in; upstream requests out
//! with `Authorization: Bearer <token>`, the token minted from a ZITADEL service user's
//! key (RFC 7523 JWT profile), cached, and refreshed before it expires.
//!
//! The request path: [`server`] accepts, [`proxy`] cleans headers and forwards, the
//! [`token`] cache supplies the bearer, [`proxy::error`] turns failures into responses.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod admin;
pub mod app;
mod chain;
pub mod check;
pub mod cli;
pub mod config;
pub mod demo;
pub mod layer;
pub mod metrics;
pub mod proxy;
pub mod secret;
pub mod server;
pub mod tls;
pub mod token;
