//! The crate plugin authors depend on: one trait with a method per hook, the types each hook
//! sees, logging and clocks, and `export!`, which turns a type implementing [`Filter`] into a
//! walnut plugin.
//!
//! ```
//! use walnut_sdk::{Command, Filter, McVerdict, MemcacheRequest};
//!
//! #[derive(serde::Deserialize)]
//! struct DenyFlush {}
//!
//! impl Filter for DenyFlush {
//!     fn on_memcache_request(&mut self, req: &mut MemcacheRequest) -> McVerdict {
//!         if req.command() == Command::FlushAll {
//!             return McVerdict::reject("flush_all is disabled");
//!         }
//!         McVerdict::Continue
//!     }
//! }
//!
//! walnut_sdk::export!(DenyFlush);
//! ```
//!
//! See `sdk/README.md` for the phases of a request, every hook and type, and how to build,
//! load and test a plugin.

pub mod abi;
mod command;
mod filter;
mod host;
mod http;
mod log;
mod memcache;
#[doc(hidden)]
pub mod rt;
pub mod time;
mod value;

pub use abi::ABI_VERSION;
pub use command::Command;
pub use filter::{Filter, HttpVerdict, McVerdict, Placement};
pub use http::{HttpRequest, HttpResponse};
pub use log::{Level, log};
pub use memcache::MemcacheRequest;
pub use value::{StoreMode, Value};

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
        pub extern "C" fn walnut_on_store(len: u32) -> u64 {
            $crate::rt::on_store::<$plugin>(len)
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn walnut_on_value(len: u32) -> u64 {
            $crate::rt::on_value::<$plugin>(len)
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn walnut_on_http(len: u32) -> u64 {
            $crate::rt::on_http::<$plugin>(len)
        }

        #[unsafe(no_mangle)]
        pub extern "C" fn walnut_on_http_response(len: u32) -> u64 {
            $crate::rt::on_http_response::<$plugin>(len)
        }
    };
}
