//! walnut's `plugins:` and `routes:` pool keys: which `.wasm` filters run, with what config and
//! limits, and what happens to a request when one of them fails.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::{OnError, PluginSpec, RouteSpec};

const DEFAULT_TIME_BUDGET_MS: u64 = 10;
const DEFAULT_MEMORY_MAX_MB: u64 = 16;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PluginYaml {
    path: String,
    #[serde(default)]
    config: Option<serde_yaml::Value>,
    #[serde(default)]
    on_error: Option<String>,
    #[serde(default)]
    time_budget_ms: Option<u64>,
    #[serde(default)]
    memory_max_mb: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RouteYaml {
    prefix: String,
    plugins: serde_yaml::Value,
}

/// `plugins:` — a list of `{path, config, on_error, time_budget_ms, memory_max_mb}`.
pub(super) fn plugin_list(
    value: &serde_yaml::Value,
    line: usize,
    base: &Path,
) -> Result<Vec<PluginSpec>, String> {
    let serde_yaml::Value::Sequence(items) = value else {
        return Err("plugins must be a list of {path: FILE.wasm, config: {...}} entries".into());
    };
    items
        .iter()
        .enumerate()
        .map(|(i, item)| plugin(item, line, base).map_err(|e| format!("plugins[{i}]: {e}")))
        .collect()
}

fn plugin(value: &serde_yaml::Value, line: usize, base: &Path) -> Result<PluginSpec, String> {
    let y: PluginYaml = serde_yaml::from_value(value.clone()).map_err(|e| e.to_string())?;
    let on_error = match y.on_error.as_deref() {
        None | Some("fail_closed") => OnError::FailClosed,
        Some("fail_open") => OnError::FailOpen,
        Some(other) => {
            return Err(format!(
                "on_error {other:?} is not one of fail_closed, fail_open"
            ));
        }
    };
    let budget = y.time_budget_ms.unwrap_or(DEFAULT_TIME_BUDGET_MS);
    if !(1..=60_000).contains(&budget) {
        return Err(format!(
            "time_budget_ms {budget} is not between 1 and 60000"
        ));
    }
    let memory = y.memory_max_mb.unwrap_or(DEFAULT_MEMORY_MAX_MB);
    if !(1..=4096).contains(&memory) {
        return Err(format!("memory_max_mb {memory} is not between 1 and 4096"));
    }
    let config = y
        .config
        .unwrap_or(serde_yaml::Value::Mapping(Default::default()));
    let config_json = serde_json::to_string(&config)
        .map_err(|e| format!("config cannot be passed to the plugin: {e}"))?;
    let path = Path::new(&y.path);
    Ok(PluginSpec {
        path: if path.is_absolute() {
            path.to_path_buf()
        } else {
            base.join(path)
        },
        config_json,
        on_error,
        time_budget: Duration::from_millis(budget),
        memory_max: (memory as usize) << 20,
        line,
    })
}

/// `routes:` — a list of `{prefix, plugins}`; prefixes must differ.
pub(super) fn route_list(
    value: &serde_yaml::Value,
    line: usize,
    base: &Path,
) -> Result<Vec<RouteSpec>, String> {
    let serde_yaml::Value::Sequence(items) = value else {
        return Err("routes must be a list of {prefix: TEXT, plugins: [...]} entries".into());
    };
    let mut routes: Vec<RouteSpec> = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let y: RouteYaml =
            serde_yaml::from_value(item.clone()).map_err(|e| format!("routes[{i}]: {e}"))?;
        if routes.iter().any(|r| r.prefix == y.prefix) {
            return Err(format!("routes[{i}]: prefix {:?} is given twice", y.prefix));
        }
        let plugins = plugin_list(&y.plugins, line, base)
            .map_err(|e| format!("routes[{i}] ({:?}): {e}", y.prefix))?;
        routes.push(RouteSpec {
            prefix: y.prefix,
            plugins,
            line,
        });
    }
    Ok(routes)
}
