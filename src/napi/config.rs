//! `resolveConfig(protocol, optionsJson, env)`: strict validation and defaults from the core.
//! Errors come back as `{ error: { code, key, message } }` so the JS side can throw a coded Error.

use koatty_serve_core::config::{resolve_options, Environment, Protocol};
use napi_derive::napi;

#[napi(object)]
pub struct ConfigEnv {
    pub ip: Option<String>,
    pub port: Option<String>,
    pub app_port: Option<String>,
    pub node_env: Option<String>,
}

#[napi(object)]
pub struct ResolvedConfig {
    /// The complete options as JSON, when valid.
    pub options: Option<String>,
    pub error_key: Option<String>,
    pub error_message: Option<String>,
}

#[napi]
pub fn resolve_config(protocol: String, options_json: String, env: ConfigEnv) -> ResolvedConfig {
    let fail = |key: String, message: String| ResolvedConfig {
        options: None,
        error_key: Some(key),
        error_message: Some(message),
    };
    let Some(protocol) = Protocol::parse(&protocol) else {
        return fail("protocol".into(), format!("unknown protocol '{protocol}'"));
    };
    let value: serde_json::Value = match serde_json::from_str(&options_json) {
        Ok(v) => v,
        Err(e) => return fail("options".into(), format!("not serialisable: {e}")),
    };
    let env = Environment {
        ip: env.ip,
        port: env.port,
        app_port: env.app_port,
        node_env: env.node_env,
    };
    match resolve_options(protocol, &value, &env) {
        Ok(v) => ResolvedConfig {
            options: Some(v.to_string()),
            error_key: None,
            error_message: None,
        },
        Err(e) => fail(e.key, e.message),
    }
}
