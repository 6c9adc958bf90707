//! Typed `cloudcore.yaml` and `edgecore.yaml`, compatible with upstream
//! KubeEdge: same field names (oddities included), same defaults, and the
//! same `--defaultconfig` / `--minconfig` output.
//!
//! # Entry points
//!
//! * [`HostInfo::detect`] — hostname and default-route IPv4, the only host
//!   facts upstream's defaults depend on. Everything else takes a
//!   [`HostInfo`] explicitly so defaults are deterministic in tests.
//! * [`CloudCoreConfig::default_for`], [`EdgeCoreConfig::default_for`].
//! * [`CloudCoreConfig::load`] / [`EdgeCoreConfig::load`] (and
//!   `from_yaml_str`) — read, merge onto defaults, type-check, validate.
//! * [`CloudCoreConfig::validate`] / [`EdgeCoreConfig::validate`] — the
//!   validation step alone, for configs built or changed in code (e.g. after
//!   CLI overrides). Returns every problem as a [`FieldError`] with its
//!   dotted field path.
//! * [`render_default_cloudcore`], [`render_min_cloudcore`],
//!   [`render_default_edgecore`], [`render_min_edgecore`] — upstream's flag
//!   output, byte for byte; [`to_yaml`] for writing any config back.
//!
//! ```
//! use ke_config::{EdgeCoreConfig, HostInfo};
//!
//! let host = HostInfo::new("edge-1", [10, 0, 0, 5]);
//! let cfg = EdgeCoreConfig::from_yaml_str("modules:\n  edgeHub:\n    heartbeat: 30\n", &host)?;
//! assert_eq!(cfg.modules.edge_hub.heartbeat, 30);
//! // Everything the file does not mention keeps its default.
//! assert_eq!(cfg.modules.edge_hub.websocket.server, "10.0.0.5:10000");
//!
//! let typo = EdgeCoreConfig::from_yaml_str("modules:\n  edgeHub:\n    heartbeet: 30\n", &host);
//! assert!(typo.is_err_and(|e| e.to_string().contains("modules.edgeHub.heartbeet")));
//! # Ok::<(), ke_config::ConfigError>(())
//! ```
//!
//! # Why a file is merged onto the defaults
//!
//! Upstream decodes the file into an already-defaulted struct, so a key the
//! file leaves out keeps its default — which is what makes the short
//! `--minconfig` file a working config. We reproduce that exactly: the YAML
//! is parsed to a value and deep-merged onto the serialized defaults
//! (mappings merge key by key, including map-typed fields such as
//! `evictionHard`, as Go's decoder does; sequences and scalars replace), and
//! only then deserialized into the typed struct.
//!
//! # Why unknown fields are errors
//!
//! Upstream silently ignores fields it does not know, so `heartbeet: 5` or a
//! key indented under the wrong module is dropped and the user runs on a
//! default they never meant to keep; such typos are among the most common
//! support problems. We reject them, and every error carries the dotted path
//! (`modules.edgeHub.heartbeet: unknown field ...`). Two leniencies keep
//! files that upstream accepts loading here too: field names match
//! case-insensitively when unambiguous (as encoding/json does), and fields
//! that only newer upstream releases have are accepted but not printed.
//!
//! # How fields are written
//!
//! A field Go tags `omitempty` is left out of rendered output only when its
//! default is the empty/zero value. Fields whose default is something else
//! are always written (an unset pointer as `null`), so that writing a config
//! and loading it back never turns a deliberate `false`/`0`/unset into the
//! default. For defaults this matches upstream's output exactly.

mod cloudcore;
mod duration;
mod edgecore;
mod error;
mod host;
mod kubelet;
mod load;
mod render;
mod validate;

pub use cloudcore::*;
pub use duration::{GoDuration, ParseDurationError, TimeOrMetaDuration};
pub use edgecore::*;
pub use error::{ConfigError, FieldError};
pub use host::{FALLBACK_HOSTNAME, HostInfo};
pub use kubelet::*;
pub use load::MAX_CONFIG_BYTES;
pub use render::{
    render_default_cloudcore, render_default_edgecore, render_min_cloudcore, render_min_edgecore,
    to_yaml,
};

/// `skip_serializing_if` predicates for Go's `omitempty` on zero defaults.
mod skip {
    pub fn is_false(b: &bool) -> bool {
        !*b
    }

    pub fn is_zero_i32(v: &i32) -> bool {
        *v == 0
    }
}

/// The names whose flag is set, in order: what `enabled_modules` reports for both daemons.
fn enabled_names<const N: usize>(modules: [(&'static str, bool); N]) -> Vec<&'static str> {
    modules
        .into_iter()
        .filter_map(|(name, enabled)| enabled.then_some(name))
        .collect()
}
