//! Software releases: what the node installs before any partition can use it.
//!
//! * [`release`]: the software manifest (`software.toml`: artifacts, build steps, instance
//!   profiles), pure;
//! * [`fetch`]: artifact downloads (`http(s)://`, `file://`, paths) checked against their
//!   SHA-256;
//! * [`install`]: the installer: a release built in a temporary directory as the software user,
//!   in its own jail, sealed and renamed into place last;
//! * [`profile`]: instance profiles, rendered into the instance manifest a partition pass
//!   applies, and linted at install.

pub mod fetch;
pub mod install;
pub mod profile;
pub mod release;
