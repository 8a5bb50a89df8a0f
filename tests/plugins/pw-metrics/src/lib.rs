//! A proxy-wasm HTTP filter written as for Envoy, with the proxy-wasm Rust SDK unmodified: it
//! counts requests in a counter, the request paths' lengths in a histogram and the requests
//! under way in a gauge, and counts hits in shared data with compare-and-swap, telling the
//! client the count its request made.

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, LogLevel, MetricType, Status};

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root(None)) });
}}

/// The metrics' ids: requests, path lengths, in flight.
#[derive(Clone, Copy)]
struct Metrics {
    requests: u32,
    path_len: u32,
    in_flight: u32,
}

struct Root(Option<Metrics>);

impl Context for Root {}

impl RootContext for Root {
    fn on_vm_start(&mut self, _vm_configuration_size: usize) -> bool {
        let define = |kind, name| hostcalls::define_metric(kind, name).expect("define a metric");
        self.0 = Some(Metrics {
            requests: define(MetricType::Counter, "requests"),
            path_len: define(MetricType::Histogram, "path_length"),
            in_flight: define(MetricType::Gauge, "in_flight"),
        });
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Count {
            metrics: self.0.expect("metrics defined at VM start"),
            hits: 0,
        }))
    }
}

struct Count {
    metrics: Metrics,
    hits: u64,
}

impl Context for Count {
    fn on_done(&mut self) -> bool {
        hostcalls::increment_metric(self.metrics.in_flight, -1).expect("gauge down");
        true
    }
}

/// Adds one to the shared count, retrying when another worker wrote it first.
fn hit() -> u64 {
    loop {
        let (value, cas) = hostcalls::get_shared_data("pw-metrics.hits").expect("read hits");
        let n = value
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
            + 1;
        let written = hostcalls::set_shared_data(
            "pw-metrics.hits",
            Some(n.to_string().as_bytes()),
            Some(cas.unwrap_or(0)),
        );
        match written {
            Ok(()) => return n,
            Err(Status::CasMismatch) => continue,
            Err(e) => panic!("writing hits: {e:?}"),
        }
    }
}

impl HttpContext for Count {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let m = self.metrics;
        hostcalls::increment_metric(m.requests, 1).expect("count");
        hostcalls::increment_metric(m.in_flight, 1).expect("gauge up");
        let path = self.get_http_request_header(":path").unwrap_or_default();
        hostcalls::record_metric(m.path_len, path.len() as u64).expect("record");
        self.hits = hit();
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let requests = hostcalls::get_metric(self.metrics.requests).expect("read the counter");
        self.set_http_response_header("x-pw-hits", Some(&self.hits.to_string()));
        self.set_http_response_header("x-pw-requests-seen", Some(&requests.to_string()));
        Action::Continue
    }
}
