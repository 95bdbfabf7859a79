//! `spin.toml`: the one place routes, components, variables and outbound hosts are declared.
//!
//! We read the subset of Spin's manifest v2 schema that this application uses, and, like
//! Spin, reject unknown keys so that a typo fails here instead of being silently ignored
//! (and so that whatever loads here also loads under `spin up`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub spin_manifest_version: u32,
    pub application: Application,
    #[serde(default)]
    pub variables: BTreeMap<String, Variable>,
    #[serde(default)]
    pub trigger: Triggers,
    #[serde(default)]
    pub component: BTreeMap<String, Component>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Application {
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub authors: Vec<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    #[serde(default)]
    pub default: Option<String>,
    #[serde(default)]
    pub required: bool,
    #[serde(default)]
    pub secret: bool,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Triggers {
    #[serde(default)]
    pub http: Vec<HttpTrigger>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpTrigger {
    pub route: String,
    pub component: String,
    #[serde(default)]
    pub id: Option<String>,
    #[serde(default)]
    pub executor: Option<toml::Table>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    pub source: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default)]
    pub allowed_outbound_hosts: Vec<String>,
    /// Component variable name -> template over application variables (`"{{ app_var }}"`).
    #[serde(default)]
    pub variables: BTreeMap<String, String>,
    #[serde(default)]
    pub sqlite_databases: Vec<String>,
    #[serde(default)]
    pub environment: BTreeMap<String, String>,
    #[serde(default)]
    pub build: Option<Build>,
    /// Settings for tools and plugins, by tool name (`[component.<id>.tool.<name>]`); Spin
    /// ignores the whole table. `runner` is ours; any other tool's settings are kept unread.
    #[serde(default)]
    pub tool: Tools,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Tools {
    #[serde(default)]
    pub runner: RunnerTool,
    #[serde(flatten)]
    pub other: BTreeMap<String, toml::Table>,
}

/// `[component.<id>.tool.runner]`: how this runner (and only it) treats the component.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunnerTool {
    /// Opt-in instance reuse: how many requests one instance may serve, one after another,
    /// before it is dropped. Absent: every request gets a fresh instance (the default, and the
    /// only choice for a component that keeps anything of a request or a user in its memory).
    #[serde(default)]
    pub reuse_instances: Option<u32>,
    /// The component may hand its streamed answers to the runner's token relay
    /// (`rag_core::relay`; see `crate::stream_relay`): the runner offers it through the
    /// component's environment and honours the hand-over only from a component that opted in.
    #[serde(default)]
    pub relay_streams: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Build {
    pub command: String,
    #[serde(default)]
    pub workdir: Option<String>,
    #[serde(default)]
    pub watch: Vec<String>,
}

/// A manifest together with the folder its relative paths start from.
#[derive(Debug, Clone)]
pub struct App {
    pub manifest: Manifest,
    pub dir: PathBuf,
}

impl App {
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read manifest {}", path.display()))?;
        let manifest = Manifest::parse(&text)
            .with_context(|| format!("invalid manifest {}", path.display()))?;
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."));
        Ok(Self { manifest, dir })
    }

    /// Where a component's `.wasm` file is, resolved against the manifest's folder as Spin does.
    pub fn source_path(&self, component: &Component) -> PathBuf {
        self.dir.join(&component.source)
    }
}

impl Manifest {
    pub fn parse(text: &str) -> Result<Self> {
        let manifest: Manifest = toml::from_str(text)?;
        manifest.validate()?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<()> {
        if self.spin_manifest_version != 2 {
            bail!(
                "spin_manifest_version must be 2, found {}",
                self.spin_manifest_version
            );
        }
        for name in self.variables.keys() {
            if !is_variable_name(name) {
                bail!("variable name {name:?} must be lower-case letters, digits and '_', starting with a letter");
            }
        }
        for (name, var) in &self.variables {
            if var.required && var.default.is_some() {
                bail!("variable {name:?} cannot be both required and have a default");
            }
        }
        for (id, component) in &self.component {
            if !is_kebab_case(id) {
                bail!("component id {id:?} must be kebab-case");
            }
            if component.tool.runner.reuse_instances == Some(0) {
                bail!("component {id:?}: tool.runner.reuse_instances must be at least 1");
            }
            for (name, template) in &component.variables {
                if !is_variable_name(name) {
                    bail!("component {id:?}: variable name {name:?} is not valid");
                }
                for reference in crate::variables::template_references(template)? {
                    if !self.variables.contains_key(&reference) {
                        bail!("component {id:?}: variable {name:?} refers to undeclared application variable {reference:?}");
                    }
                }
            }
        }
        for trigger in &self.trigger.http {
            if !self.component.contains_key(&trigger.component) {
                bail!(
                    "route {:?} names component {:?}, which is not declared",
                    trigger.route,
                    trigger.component
                );
            }
            crate::routes::RoutePattern::parse(&trigger.route)?;
        }
        Ok(())
    }
}

fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn is_kebab_case(id: &str) -> bool {
    !id.is_empty()
        && !id.starts_with('-')
        && !id.ends_with('-')
        && !id.contains("--")
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
spin_manifest_version = 2
[application]
name = "demo"
[variables]
greeting = { default = "hi" }
token = { required = true, secret = true }
[[trigger.http]]
route = "/hello/..."
component = "hello"
[component.hello]
source = "hello.wasm"
allowed_outbound_hosts = ["https://example.com"]
[component.hello.variables]
message = "{{ greeting }}, {{ token }}"
"#;

    #[test]
    fn parses_a_minimal_manifest() {
        let m = Manifest::parse(MINIMAL).unwrap();
        assert_eq!(m.application.name, "demo");
        assert_eq!(m.trigger.http[0].component, "hello");
        assert!(m.variables["token"].secret);
    }

    #[test]
    fn rejects_unknown_keys_as_spin_does() {
        let text = MINIMAL.replace("[application]", "[application]\nmemory_limit = 5");
        let err = format!("{:#}", Manifest::parse(&text).unwrap_err());
        assert!(err.contains("memory_limit"), "{err}");
    }

    #[test]
    fn rejects_undeclared_variable_references() {
        let text = MINIMAL.replace("{{ greeting }}", "{{ nope }}");
        let err = format!("{:#}", Manifest::parse(&text).unwrap_err());
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn rejects_routes_to_missing_components() {
        let text = MINIMAL.replace("component = \"hello\"", "component = \"bye\"");
        assert!(Manifest::parse(&text).is_err());
    }

    #[test]
    fn reads_the_runner_tool_table_and_keeps_other_tools_unread() {
        let text = format!(
            "{MINIMAL}[component.hello.tool.runner]\nreuse_instances = 50\n[component.hello.tool.lint]\nlevel = \"x\"\n"
        );
        let m = Manifest::parse(&text).unwrap();
        assert_eq!(m.component["hello"].tool.runner.reuse_instances, Some(50));
        assert!(m.component["hello"].tool.other.contains_key("lint"));
        assert_eq!(
            Manifest::parse(MINIMAL).unwrap().component["hello"]
                .tool
                .runner
                .reuse_instances,
            None
        );
    }

    #[test]
    fn rejects_typos_and_zero_in_the_runner_tool_table() {
        let typo = format!("{MINIMAL}[component.hello.tool.runner]\nreuse_instance = 5\n");
        let err = format!("{:#}", Manifest::parse(&typo).unwrap_err());
        assert!(err.contains("reuse_instance"), "{err}");
        let zero = format!("{MINIMAL}[component.hello.tool.runner]\nreuse_instances = 0\n");
        assert!(Manifest::parse(&zero).is_err());
    }

    /// Instance reuse keeps a component's memory from one request to the next, so only
    /// components that keep nothing of a request or a user may opt in. Chat and session hold
    /// conversations and session ids: they never may.
    #[test]
    fn only_stateless_components_opt_into_instance_reuse() {
        let text = include_str!("../../spin.toml");
        let manifest = Manifest::parse(text).unwrap();
        for id in ["chat", "session"] {
            assert_eq!(
                manifest.component[id].tool.runner.reuse_instances, None,
                "component {id} holds user data and must never opt into instance reuse"
            );
        }
        let reusing: Vec<&str> = manifest
            .component
            .iter()
            .filter(|(_, c)| c.tool.runner.reuse_instances.is_some())
            .map(|(id, _)| id.as_str())
            .collect();
        assert_eq!(reusing, ["assets", "health", "openapi"]);
    }

    #[test]
    fn rejects_non_kebab_component_ids() {
        let text = MINIMAL
            .replace("[component.hello]", "[component.Hello_World]")
            .replace(
                "[component.hello.variables]",
                "[component.Hello_World.variables]",
            )
            .replace("component = \"hello\"", "component = \"Hello_World\"");
        assert!(Manifest::parse(&text).is_err());
    }
}
