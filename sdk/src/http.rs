//! An HTTP request, and an upstream's response head, as a plugin sees them.

/// The head of an HTTP request: method, path, query and headers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpRequest {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) edits: Edits,
}

/// What a plugin changed, sent back to walnut in the hook's answer.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Edits {
    pub(crate) path: bool,
    pub(crate) query: bool,
    /// Header changes in order: `(name, Some(value))` sets, `(name, None)` removes.
    pub(crate) headers: Vec<(String, Option<String>)>,
    pub(crate) hash_key: Option<Vec<u8>>,
}

impl Edits {
    pub(crate) fn any(&self) -> bool {
        self.path || self.query || !self.headers.is_empty() || self.hash_key.is_some()
    }
}

impl HttpRequest {
    /// A request for tests.
    pub fn new(method: &str, path: &str) -> HttpRequest {
        let (path, query) = path.split_once('?').unwrap_or((path, ""));
        HttpRequest {
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            headers: Vec::new(),
            edits: Edits::default(),
        }
    }

    /// With a header, for tests.
    pub fn with_header(mut self, name: &str, value: &str) -> HttpRequest {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// `GET`, `PUT`, ...
    pub fn method(&self) -> &str {
        &self.method
    }

    /// The path, without the query.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The query string after `?`, or empty.
    pub fn query(&self) -> &str {
        &self.query
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Sends the request upstream with this path instead; a `?` in it also sets the query.
    pub fn set_path(&mut self, path: &str) {
        match path.split_once('?') {
            Some((p, q)) => {
                self.path = p.to_owned();
                self.set_query(q);
            }
            None => self.path = path.to_owned(),
        }
        self.edits.path = true;
    }

    /// Sends the request upstream with this query string (without the `?`; empty for none).
    pub fn set_query(&mut self, query: &str) {
        self.query = query.to_owned();
        self.edits.query = true;
    }

    /// Replaces every header `name` (case-insensitive) with one holding `value`.
    pub fn set_header(&mut self, name: &str, value: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_owned(), value.to_owned()));
        self.edits
            .headers
            .push((name.to_owned(), Some(value.to_owned())));
    }

    /// Removes every header `name` (case-insensitive).
    pub fn remove_header(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.edits.headers.push((name.to_owned(), None));
    }

    /// Chooses the upstream server by these bytes on the upstream's consistent-hash ring
    /// (instead of its `hash:` key, or of round robin when it has none).
    pub fn set_hash_key(&mut self, key: impl Into<Vec<u8>>) {
        self.edits.hash_key = Some(key.into());
    }

    /// The hash key set by [`HttpRequest::set_hash_key`], if any.
    pub fn hash_key(&self) -> Option<&[u8]> {
        self.edits.hash_key.as_deref()
    }
}

/// What a plugin does to one response header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderOp {
    Remove = 0,
    Set = 1,
    Add = 2,
}

/// An upstream's response head: status and headers. Headers may be added, set or removed; the
/// client gets the changed head.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HttpResponse {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    /// Header changes in order.
    pub(crate) edits: Vec<(HeaderOp, String, String)>,
}

impl HttpResponse {
    /// A response head for tests.
    pub fn new(status: u16) -> HttpResponse {
        HttpResponse {
            status,
            ..HttpResponse::default()
        }
    }

    /// With a header, for tests.
    pub fn with_header(mut self, name: &str, value: &str) -> HttpResponse {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The upstream's status code.
    pub fn status(&self) -> u16 {
        self.status
    }

    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header, in order (with the changes made so far).
    pub fn headers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.headers.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }

    /// Adds a header line, keeping any others of that name.
    pub fn add_header(&mut self, name: &str, value: &str) {
        self.headers.push((name.to_owned(), value.to_owned()));
        self.edits
            .push((HeaderOp::Add, name.to_owned(), value.to_owned()));
    }

    /// Replaces every header `name` (case-insensitive) with one holding `value`.
    pub fn set_header(&mut self, name: &str, value: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name.to_owned(), value.to_owned()));
        self.edits
            .push((HeaderOp::Set, name.to_owned(), value.to_owned()));
    }

    /// Removes every header `name` (case-insensitive).
    pub fn remove_header(&mut self, name: &str) {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.edits
            .push((HeaderOp::Remove, name.to_owned(), String::new()));
    }
}
