//! The crate plugin authors depend on: one trait with a method per hook, the request types, and
//! `export!`, which turns a type implementing [`Filter`] into a walnut plugin.
//!
//! ```
//! use walnut_sdk::{Filter, MemcacheRequest, Verdict};
//!
//! #[derive(serde::Deserialize)]
//! struct DenyFlush {}
//!
//! impl Filter for DenyFlush {
//!     fn on_memcache_request(&mut self, req: &mut MemcacheRequest) -> Verdict {
//!         if req.command() == "flush_all" {
//!             return Verdict::reject("flush_all is disabled");
//!         }
//!         Verdict::Continue
//!     }
//! }
//!
//! walnut_sdk::export!(DenyFlush);
//! ```
//!
//! See `sdk/README.md` for the phases of a request, every hook, and how to build, load and test
//! a plugin.

pub mod abi;
mod filter;
mod http;
mod memcache;
#[doc(hidden)]
pub mod rt;

pub use abi::ABI_VERSION;
pub use filter::{Filter, Placement, Verdict};
pub use http::HttpRequest;
pub use memcache::MemcacheRequest;

/// Makes `$plugin` (a type implementing [`Filter`] and `serde::de::DeserializeOwned`) the
/// plugin this crate builds: its `config:` block from the walnut YAML is deserialized into it,
/// and walnut's calls reach its hooks. The ABI stays inside this macro.
#[macro_export]
macro_rules! export {
    ($plugin:ty) => {
        #[unsafe(no_mangle)]
        pub extern "C" fn walnut_abi_version() -> u32 {
            $crate::ABI_VERSION
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn walnut_buffer(len: u32) -> u32 {
            $crate::rt::buffer(len)
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn walnut_init(len: u32) -> u64 {
            $crate::rt::init::<$plugin>(len)
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn walnut_on_memcache(len: u32) -> u64 {
            $crate::rt::on_memcache::<$plugin>(len)
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn walnut_on_hash(len: u32) -> u64 {
            $crate::rt::on_hash::<$plugin>(len)
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn walnut_on_http(len: u32) -> u64 {
            $crate::rt::on_http::<$plugin>(len)
        }
    };
}
