//! A proxy-wasm HTTP filter written as for Envoy, with the proxy-wasm Rust SDK unmodified: it
//! reads its JSON plugin configuration when configured (refusing a bad one), then adds the
//! header it names to every request and refuses the method it names with a 405.

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel};
use serde::Deserialize;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
        Box::new(Root { config: Config::default() })
    });
}}

#[derive(Deserialize, Clone, Default)]
struct Config {
    header: String,
    value: String,
    #[serde(default)]
    deny_method: Option<String>,
}

struct Root {
    config: Config,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let Some(bytes) = self.get_plugin_configuration() else {
            proxy_wasm::hostcalls::log(LogLevel::Error, "pw-config: no configuration").ok();
            return false;
        };
        match serde_json::from_slice::<Config>(&bytes) {
            Ok(config) => {
                self.config = config;
                true
            }
            Err(e) => {
                proxy_wasm::hostcalls::log(
                    LogLevel::Error,
                    &format!("pw-config: bad configuration: {e}"),
                )
                .ok();
                false
            }
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Configured {
            config: self.config.clone(),
        }))
    }
}

struct Configured {
    config: Config,
}

impl Context for Configured {}

impl HttpContext for Configured {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let method = self.get_http_request_header(":method").unwrap_or_default();
        if self.config.deny_method.as_deref() == Some(method.as_str()) {
            self.send_http_response(
                405,
                vec![],
                Some(format!("{method} is not allowed here\n").as_bytes()),
            );
            return Action::Pause;
        }
        self.set_http_request_header(&self.config.header, Some(&self.config.value));
        Action::Continue
    }
}
