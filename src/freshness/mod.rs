//! What declared values (`store/`) and on-demand values (`on_demand/`) share: the two caches
//! differ in how they are driven (a snapshot swapped for every refresh; a bounded cache of names),
//! never in what a TTL, a maximum staleness, a failure or a seal means. Neither cache imports the
//! other; both stand on this module, as moka's `sync` and `future` caches stand on its `common`.
//!
//! | question | file |
//! |---|---|
//! | which settings both share, their defaults and validation | [`settings`] |
//! | when is a value due, how long to back off (pure functions) | `time/schedule.rs` |
//! | what states a value can be in, and the one way out of `Refreshing` | [`state`] |
//! | what a source said about a value's time (refresh by, expires at) | [`dates`] |
//! | how a source's answer becomes keyed values with a `ValueInfo` | [`bind`] |
//! | how items are fetched from their sources, within a budget | [`fetch`] |
//! | how values are dropped for a SnapStart snapshot | [`seal`] |
//! | where a background refresh runs, and how it shows it lives | [`spawn`] |
//!
//! The contract these give a user (the freshness bound, maximum staleness, what a failure does)
//! is written once, in the crate docs.

pub(crate) mod bind;
pub(crate) mod dates;
pub(crate) mod fetch;
pub(crate) mod seal;
pub(crate) mod settings;
pub(crate) mod spawn;
pub(crate) mod state;
