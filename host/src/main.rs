use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use clap::{Parser, Subcommand};

use host::config::{AppLocation, EngineSettings, ProductionMode, RuntimeSettings, ServerSettings};
use host::manifest::App;
use host::runtime::Runtime;
use host::variables::AppVariables;

#[derive(Parser)]
#[command(
    name = "host",
    version,
    about = "Serves the chatbot's components from spin.toml"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Serve HTTP (the default).
    Serve {
        #[command(flatten)]
        runtime: RuntimeSettings,
        #[command(flatten)]
        server: ServerSettings,
        #[command(flatten)]
        production: ProductionMode,
    },
    /// Index a Docusaurus docs folder into Qdrant (Cohere embeddings) or the embedded SQLite index.
    Ingest(host::ingest::IngestArgs),
    /// Ask labelled questions through /chat; print recall@k, MRR and the off-topic refusal rate.
    Eval(host::eval::EvalArgs),
    /// Validate spin.toml and the environment; print what is configured (names, never values).
    Check {
        #[command(flatten)]
        app: AppLocation,
        #[command(flatten)]
        production: ProductionMode,
    },
    /// Compile every component into the compile cache (used when building the image).
    Precompile {
        #[command(flatten)]
        app: AppLocation,
        #[command(flatten)]
        engine: EngineSettings,
    },
    /// Probe a running server's /health (for container HEALTHCHECK; no curl needed).
    Healthcheck {
        #[arg(long, env = "PORT", default_value_t = 7860)]
        port: u16,
        #[arg(long, env = "BASE_PATH", default_value = "")]
        base_path: String,
    },
}

fn main() -> ExitCode {
    host::init_logging();
    let cli = Cli::parse();
    let command = cli.command.unwrap_or_else(|| {
        // `host` alone serves with settings from the environment.
        match Cli::parse_from(["host", "serve"]).command {
            Some(c) => c,
            None => unreachable!("serve was given"),
        }
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(command)) {
        Ok(code) => code,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Serve {
            runtime,
            server,
            production,
        } => {
            let app = App::load(&runtime.app.manifest)?;
            let variables = AppVariables::from_process_env(&app.manifest)?;
            if production.enabled {
                host::check::require_production_services(&variables)?;
            }
            tokio::task::block_in_place(|| {
                host::ingest::ensure_keyless_index(
                    &app,
                    &variables,
                    &runtime.app.data_dir,
                    |name| std::env::var(name).ok(),
                )
            });
            let runtime = tokio::task::block_in_place(|| Runtime::load(runtime, variables, app))?;
            host::server::serve(Arc::new(runtime), &server).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Ingest(args) => host::ingest::run(args).await,
        Command::Eval(args) => host::eval::run(args).await,
        Command::Check { app, production } => Ok(host::check::run(&app, production.enabled)),
        Command::Precompile {
            app: location,
            engine: settings,
        } => {
            let app = App::load(&location.manifest)?;
            let engine = host::engine::build(&host::engine::EngineLimits {
                max_instances: settings.max_concurrent_requests,
                memory_limit_bytes: settings.memory_limit_bytes(),
            })?;
            let paths: Vec<_> = app
                .manifest
                .component
                .values()
                .map(|c| app.source_path(c))
                .collect();
            let cache_dir = settings.cache_dir(&location);
            host::engine::precompile(&engine, &paths, &cache_dir)?;
            println!(
                "compiled {} components into {}",
                paths.len(),
                cache_dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Healthcheck { port, base_path } => {
            Ok(host::check::probe_health(port, &base_path).await)
        }
    }
}
