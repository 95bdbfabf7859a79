//! `host check` (is this deployment configured?) and `host healthcheck` (is it serving?).

use std::process::ExitCode;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::AppLocation;
use crate::manifest::App;
use crate::outbound_http::AllowedHosts;
use crate::variables::{AppVariables, Origin};

/// Services a production deployment must have; keyless mode runs without them.
const PRODUCTION_VARIABLES: &[&str] = &[
    "database_url",
    "qdrant_url",
    "cohere_api_key",
    "openai_api_key",
];

/// In production (`APP_ENV_PRODUCTION=true`), `serve` and `check` refuse to run without the
/// managed services, instead of quietly falling back to the keyless mode.
pub fn require_production_services(vars: &AppVariables) -> anyhow::Result<()> {
    let missing: Vec<String> = PRODUCTION_VARIABLES
        .iter()
        .filter(|name| vars.get(name).is_none_or(|r| r.value.trim().is_empty()))
        .map(|name| name.to_ascii_uppercase())
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("production mode needs: {}", missing.join(", "))
    }
}

pub fn run(settings: &AppLocation, production: bool) -> ExitCode {
    let mut errors = Vec::new();
    let app = match App::load(&settings.manifest) {
        Ok(app) => app,
        Err(err) => {
            eprintln!("error: {err:#}");
            return ExitCode::FAILURE;
        }
    };
    println!(
        "manifest: {} (application {:?})",
        settings.manifest.display(),
        app.manifest.application.name
    );
    let variables = match AppVariables::from_process_env(&app.manifest) {
        Ok(v) => Some(v),
        Err(err) => {
            errors.push(format!("{err:#}"));
            None
        }
    };

    for (id, component) in &app.manifest.component {
        let path = app.source_path(component);
        let status = if path.exists() {
            "built"
        } else {
            "MISSING (build the components)"
        };
        if !path.exists() {
            errors.push(format!(
                "component {id:?}: {} does not exist",
                path.display()
            ));
        }
        println!("component {id}: {} {status}", component.source);
        if let Some(vars) = &variables {
            if let Err(err) = AllowedHosts::resolve(&component.allowed_outbound_hosts, vars) {
                errors.push(format!("component {id:?}: {err:#}"));
            }
        }
    }

    if let Some(vars) = &variables {
        println!("variables:");
        for (name, resolved) in vars.iter() {
            let secret = app.manifest.variables[name].secret;
            let state = match (resolved.value.is_empty(), resolved.origin) {
                (true, _) => "unset".to_string(),
                (false, Origin::SpinEnvironment) => {
                    format!("set from SPIN_VARIABLE_{}", name.to_ascii_uppercase())
                }
                (false, Origin::Environment) => format!("set from {}", name.to_ascii_uppercase()),
                (false, Origin::Default) => "default".to_string(),
            };
            println!("  {name}{}: {state}", if secret { " (secret)" } else { "" });
        }
        let set = |name: &str| vars.get(name).is_some_and(|r| !r.value.trim().is_empty());
        let retrieval = if set("qdrant_url") && set("cohere_api_key") {
            "vector (Cohere + Qdrant)"
        } else {
            "keyword (embedded SQLite FTS5)"
        };
        let generation = if set("openai_api_key") {
            "generated (OpenAI-compatible LLM)"
        } else {
            "extractive (no LLM)"
        };
        let sessions = if set("database_url") {
            "PostgreSQL"
        } else {
            "embedded SQLite"
        };
        println!("mode: retrieval = {retrieval}; answers = {generation}; sessions = {sessions}");
        if production {
            if let Err(err) = require_production_services(vars) {
                errors.push(err.to_string());
            }
        }
    }

    if errors.is_empty() {
        println!("ok");
        ExitCode::SUCCESS
    } else {
        for err in &errors {
            eprintln!("error: {err}");
        }
        ExitCode::FAILURE
    }
}

/// GET /health on the local server; exit 0 on a 200.
pub async fn probe_health(port: u16, base_path: &str) -> ExitCode {
    let path = format!("{}/health", base_path.trim_end_matches('/'));
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut head = vec![0u8; 64];
        let n = stream.read(&mut head).await?;
        Ok::<_, std::io::Error>(String::from_utf8_lossy(&head[..n]).into_owned())
    };
    match tokio::time::timeout(std::time::Duration::from_secs(5), attempt).await {
        Ok(Ok(head)) if head.starts_with("HTTP/1.1 200") => ExitCode::SUCCESS,
        Ok(Ok(head)) => {
            eprintln!("unhealthy: {}", head.lines().next().unwrap_or(""));
            ExitCode::FAILURE
        }
        Ok(Err(err)) => {
            eprintln!("unhealthy: {err}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("unhealthy: timed out");
            ExitCode::FAILURE
        }
    }
}
