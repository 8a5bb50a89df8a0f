//! curl as the client: runs it on one request and parses what it printed.

#[allow(unused_imports)]
use super::*;

/// What curl got: status, header lines (names lowercased), body.
#[derive(Debug)]
pub struct Got {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Got {
    /// The first value of header `name` (lowercase).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers_named(name).into_iter().next()
    }

    /// Every value of header `name` (lowercase), in order.
    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Runs curl with `args` on `url` (`-s -i`), and parses its answer (past any 1xx interim
/// answer, such as `100 Continue`).
pub fn curl(url: &str, args: &[&str]) -> Got {
    let curl = require("curl", "curl");
    let out = Command::new(curl)
        .args(["-s", "-i", "--max-time", "10"])
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let mut rest = text.as_str();
    loop {
        let (head, body) = rest.split_once("\r\n\r\n").unwrap_or_else(|| {
            panic!(
                "curl {url} {args:?} got no answer: {:?} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let mut lines = head.split("\r\n");
        let status = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("a status line in {head:?}"));
        if (100..200).contains(&status) {
            rest = body;
            continue;
        }
        let headers = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        return Got {
            status,
            headers,
            body: body.to_owned(),
        };
    }
}
