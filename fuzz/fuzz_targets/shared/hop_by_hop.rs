//! The hop-by-hop names the fuzz targets check against, written out again so that the
//! targets check the rule rather than repeat the code (src/proxy/headers.rs).

/// Fields of a connection that never cross the proxy, whatever `Connection` says (`te`
/// aside: a request's `te: trailers` crosses).
pub const HOP_BY_HOP: [&str; 7] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "transfer-encoding",
    "upgrade",
];
