//! The crate plugin authors depend on. The plugin ABI, the `Filter` trait and the `export!`
//! macro arrive with the plugin work; this crate only reserves the name and the workspace slot.

/// The plugin ABI version this SDK speaks; the host refuses modules of another version.
pub const ABI_VERSION: u32 = 0;
