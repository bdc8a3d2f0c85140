//! mintproxy: an authenticating reverse proxy. Plain requests in; upstream requests out
//! with `Authorization: Bearer <token>`, the token minted from a ZITADEL service user's
//! key (RFC 7523 JWT profile), cached, and refreshed before it expires.
//!
//! The request path: [`server`] accepts, [`proxy`] cleans headers and forwards, the
//! [`token`] cache supplies the bearer, and one table in the proxy turns failures into
//! responses. Modules depend one way: `token` on nothing of the proxy, `proxy` on `token`,
//! `server` on `proxy`, and [`metrics`] and the [`access_log`] observe them from outside;
//! [`app`] wires them.
//!
//! For embedders:
//! - [`token`]: the [`token::TokenSource`] trait, the ZITADEL key, client-credentials and
//!   static-file sources, and [`token::TokenCache`] (single flight, refresh ahead);
//! - [`layer::BearerLayer`]: the bearer on any tower/hyper client's requests;
//! - [`config`] and [`app::run_proxy`] (or [`app::build`] and [`server::serve`]): the whole
//!   proxy on a listener of your own.
//!
//! [`demo`], [`cli`], [`check`], [`admin`], [`exec`], [`scripts`], [`app::reload`] and
//! [`key_expiry`] are public for the binary and the tests.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod access_log;
pub mod admin;
pub mod app;
mod chain;
pub mod check;
pub mod cli;
pub mod config;
pub mod demo;
pub mod exec;
pub mod key_expiry;
pub mod layer;
pub mod metrics;
pub mod proxy;
pub mod rfc3339;
pub mod scripts;
pub mod secret;
pub mod server;
pub mod tls;
pub mod token;
pub mod trace;
