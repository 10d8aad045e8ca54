//! The code printed with every error, `error[<code>]: <message>`: the
//! operations library's stable codes ([`sluice_ops::ErrorCode`]), and a few
//! of the CLI's own for what is not an operation (README, "Error codes").

use std::borrow::Cow;

use sluice_content::ContentError;
use sluice_host::HostError;
use sluice_host::config::ConfigError;
use sluice_msgbox::BoxError;
use sluice_ops::{ErrorCode, OpsError};

/// The configuration file cannot be read or is invalid.
pub const CONFIG: &str = "config";
/// `sluice serve` could not start or stopped with an error (data directory
/// taken, an address in use).
pub const NODE: &str = "node";
/// Flags that do not parse or do not go together (exit status 2).
pub const USAGE: &str = ErrorCode::InvalidArgument.as_str();
/// `--server`'s node cannot be reached (refused, timed out, TLS failed).
pub const UNREACHABLE: &str = "unreachable";
/// Anything else.
pub const INTERNAL: &str = "internal";

/// The code of the first error in the chain that has one (an error the
/// REST API answered has the API's).
pub fn code(e: &anyhow::Error) -> Cow<'static, str> {
    for cause in e.chain() {
        if let Some(e) = cause.downcast_ref::<crate::remote::ApiError>() {
            return Cow::Owned(e.code.clone());
        }
        if cause.is::<crate::remote::Unreachable>() {
            return UNREACHABLE.into();
        }
        if let Some(code) = local_code(cause) {
            return code.into();
        }
    }
    INTERNAL.into()
}

fn local_code(cause: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    if let Some(e) = cause.downcast_ref::<OpsError>() {
        return Some(e.code());
    }
    if let Some(e) = cause.downcast_ref::<BoxError>() {
        return Some(ErrorCode::of_box(e).as_str());
    }
    if let Some(e) = cause.downcast_ref::<ContentError>() {
        return Some(ErrorCode::of_content(e).as_str());
    }
    if cause.is::<ConfigError>() {
        return Some(CONFIG);
    }
    if let Some(e) = cause.downcast_ref::<crate::reload::ReloadFailed>() {
        return Some(match e {
            crate::reload::ReloadFailed::Refused(_) => CONFIG,
            crate::reload::ReloadFailed::Incomplete(_) => NODE,
        });
    }
    if cause.is::<sluice_host::control::ControlError>() {
        return Some(NODE);
    }
    if let Some(e) = cause.downcast_ref::<HostError>() {
        return Some(match e {
            HostError::Box(e) => ErrorCode::of_box(e).as_str(),
            _ => NODE,
        });
    }
    if cause.is::<std::io::Error>() {
        return Some(ErrorCode::Io.as_str());
    }
    None
}
