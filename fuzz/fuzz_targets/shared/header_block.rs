//! The input shape of the header fuzz targets: arbitrary bytes read as a header block.

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// One `name: value` per line (split at the first `:`, blanks around each part trimmed);
/// lines that make no valid header are skipped.
pub fn header_block(data: &[u8]) -> HeaderMap {
    let mut map = HeaderMap::new();
    for line in data.split(|&b| b == b'\n') {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = line[..colon].trim_ascii();
        let value = line[colon + 1..].trim_ascii();
        let (Ok(name), Ok(value)) = (HeaderName::from_bytes(name), HeaderValue::from_bytes(value)) else {
            continue;
        };
        map.append(name, value);
    }
    map
}
