//! Entry points for the cargo-fuzz targets in `fuzz/`: thin wrappers around crate-private
//! parsers, so the fuzzer reaches them without widening the public API. Not a stable interface.

/// The path as route rules see it: percent-decoded, dot segments resolved, repeated slashes
/// merged, query and fragment dropped; `None` when a proxy and an upstream could read it
/// differently. The same function `decide()` uses on the original request's path.
pub fn canonical_path(raw: &str) -> Option<String> {
    crate::decision::canonical_path(raw)
}
