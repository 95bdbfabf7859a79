//! Application variables: resolved once at start-up from the environment and spin.toml
//! defaults, then served to components through `fermyon:spin/variables@2.0.0` and
//! `wasi:config/store@0.2.0-draft-2024-09-27`.
//!
//! Resolution order for an application variable `name`: `SPIN_VARIABLE_NAME` (Spin's own
//! environment provider), then `NAME` (how Hugging Face Spaces passes secrets), then the
//! manifest default.

use std::collections::{BTreeMap, HashMap};

use anyhow::{bail, Result};

use crate::bindings::fermyon::spin::variables;
use crate::bindings::wasi::config::store as config;
use crate::manifest::Manifest;
use crate::state::RequestState;

/// Where a resolved value came from; `host check` prints this, never the value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    SpinEnvironment,
    Environment,
    Default,
}

#[derive(Debug, Clone)]
pub struct Resolved {
    pub value: String,
    pub origin: Origin,
}

/// Every application variable's value, or the list of required ones that are missing.
#[derive(Debug, Clone, Default)]
pub struct AppVariables {
    values: BTreeMap<String, Resolved>,
}

impl AppVariables {
    pub fn resolve(manifest: &Manifest, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let mut values = BTreeMap::new();
        let mut missing = Vec::new();
        for (name, declared) in &manifest.variables {
            let upper = name.to_ascii_uppercase();
            let found = env(&format!("SPIN_VARIABLE_{upper}"))
                .map(|value| (value, Origin::SpinEnvironment))
                .or_else(|| env(&upper).map(|value| (value, Origin::Environment)))
                .or_else(|| {
                    declared
                        .default
                        .clone()
                        .map(|value| (value, Origin::Default))
                });
            match found {
                Some((value, origin)) => {
                    values.insert(name.clone(), Resolved { value, origin });
                }
                None => missing.push(upper),
            }
        }
        if !missing.is_empty() {
            bail!(
                "missing required variables (set each as an environment variable): {}",
                missing.join(", ")
            );
        }
        Ok(Self { values })
    }

    pub fn from_process_env(manifest: &Manifest) -> Result<Self> {
        Self::resolve(manifest, |key| std::env::var(key).ok())
    }

    pub fn get(&self, name: &str) -> Option<&Resolved> {
        self.values.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &Resolved)> {
        self.values.iter()
    }

    /// Expands every `{{ name }}` in `template`.
    pub fn expand(&self, template: &str) -> Result<String> {
        let mut out = String::new();
        for piece in parse_template(template)? {
            match piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Reference(name) => match self.values.get(name) {
                    Some(resolved) => out.push_str(&resolved.value),
                    None => bail!("template {template:?} refers to unknown variable {name:?}"),
                },
            }
        }
        Ok(out)
    }
}

enum Piece<'a> {
    Literal(&'a str),
    Reference(&'a str),
}

fn parse_template(template: &str) -> Result<Vec<Piece<'_>>> {
    let mut pieces = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            pieces.push(Piece::Literal(&rest[..start]));
        }
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            bail!("template {template:?} has an unclosed '{{{{'");
        };
        let name = after[..end].trim();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            bail!("template {template:?}: {name:?} is not a variable name");
        }
        pieces.push(Piece::Reference(name));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Literal(rest));
    }
    Ok(pieces)
}

/// The application variables a template refers to.
pub fn template_references(template: &str) -> Result<Vec<String>> {
    Ok(parse_template(template)?
        .into_iter()
        .filter_map(|piece| match piece {
            Piece::Reference(name) => Some(name.to_string()),
            Piece::Literal(_) => None,
        })
        .collect())
}

/// One component's variables, expanded at start-up.
pub type ComponentVariables = HashMap<String, String>;

pub fn component_variables(
    app: &AppVariables,
    declared: &BTreeMap<String, String>,
) -> Result<ComponentVariables> {
    declared
        .iter()
        .map(|(name, template)| Ok((name.clone(), app.expand(template)?)))
        .collect()
}

fn lookup(state: &RequestState, name: &str) -> Result<String, variables::Error> {
    let valid = matches!(name.chars().next(), Some(c) if c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !valid {
        return Err(variables::Error::InvalidName(name.to_string()));
    }
    state
        .component
        .variables
        .get(name)
        .cloned()
        .ok_or_else(|| variables::Error::Undefined(name.to_string()))
}

impl variables::Host for RequestState {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, variables::Error>> {
        Ok(lookup(self, &name))
    }
}

impl config::Host for RequestState {
    async fn get(
        &mut self,
        key: String,
    ) -> wasmtime::Result<Result<Option<String>, config::Error>> {
        Ok(match lookup(self, &key) {
            Ok(value) => Ok(Some(value)),
            Err(variables::Error::Undefined(_)) => Ok(None),
            Err(e) => Err(config::Error::Upstream(format!("{e:?}"))),
        })
    }

    async fn get_all(&mut self) -> wasmtime::Result<Result<Vec<(String, String)>, config::Error>> {
        let mut all: Vec<_> = self
            .component
            .variables
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        all.sort();
        Ok(Ok(all))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest::parse(
            r#"
spin_manifest_version = 2
[application]
name = "t"
[variables]
model = { default = "small" }
api_key = { default = "", secret = true }
token = { required = true }
"#,
        )
        .unwrap()
    }

    #[test]
    fn spin_prefix_beats_plain_name_beats_default() {
        let env = |k: &str| match k {
            "SPIN_VARIABLE_MODEL" => Some("spin".to_string()),
            "MODEL" => Some("plain".to_string()),
            "API_KEY" => Some("sk-1".to_string()),
            "TOKEN" => Some("t".to_string()),
            _ => None,
        };
        let vars = AppVariables::resolve(&manifest(), env).unwrap();
        assert_eq!(vars.get("model").unwrap().value, "spin");
        assert_eq!(vars.get("model").unwrap().origin, Origin::SpinEnvironment);
        assert_eq!(vars.get("api_key").unwrap().value, "sk-1");
        assert_eq!(vars.get("api_key").unwrap().origin, Origin::Environment);
    }

    #[test]
    fn missing_required_variables_are_listed_together() {
        let err = AppVariables::resolve(&manifest(), |_| None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("TOKEN"), "{err}");
    }

    #[test]
    fn templates_expand_and_reject_garbage() {
        let vars =
            AppVariables::resolve(&manifest(), |k| (k == "TOKEN").then(|| "x".into())).unwrap();
        assert_eq!(
            vars.expand("https://{{ model }}.example:{{token}}")
                .unwrap(),
            "https://small.example:x"
        );
        assert!(vars.expand("{{ unknown }}").is_err());
        assert!(vars.expand("{{ model").is_err());
        assert_eq!(
            template_references("a{{ model }}b{{token}}").unwrap(),
            vec!["model", "token"]
        );
    }
}
