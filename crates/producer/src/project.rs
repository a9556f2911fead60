//! The project directory: where `modules.json` and `etl_sequences/` live,
//! and the working directory of every module. Reading definitions from disk
//! happens here; parsing and validating them is `scheduler_core::definition`.

use scheduler_core::{DefinitionError, Modules, Sequence};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("{path}: cannot read it: {source}. {hint}")]
    Read {
        path: String,
        source: std::io::Error,
        hint: &'static str,
    },
    #[error("no sequence named {name:?}: {path} does not exist. Known sequences: {known}")]
    NoSuchSequence { name: String, path: String, known: String },
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    #[error("{0}")]
    BadQueue(String),
}

/// A project directory, made absolute once so that later `chdir`s cannot
/// change what relative paths mean.
#[derive(Debug, Clone)]
pub struct Project {
    dir: PathBuf,
}

impl Project {
    pub fn new(dir: &Path) -> Result<Project, ProjectError> {
        let dir = std::path::absolute(dir).map_err(|source| ProjectError::Read {
            path: dir.display().to_string(),
            source,
            hint: "Pass an existing directory with --project or SCHEDULER_PROJECT.",
        })?;
        Ok(Project { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn rel(&self, path: &Path) -> String {
        path.strip_prefix(&self.dir).unwrap_or(path).display().to_string()
    }

    pub fn modules(&self) -> Result<Modules, ProjectError> {
        let path = self.dir.join("modules.json");
        let text = std::fs::read_to_string(&path).map_err(|source| ProjectError::Read {
            path: path.display().to_string(),
            source,
            hint: "Run from the project directory (the one holding modules.json and etl_sequences/), \
                   or pass --project / set SCHEDULER_PROJECT.",
        })?;
        Ok(Modules::parse("modules.json", &text)?)
    }

    pub fn sequence_path(&self, name: &str) -> PathBuf {
        self.dir.join("etl_sequences").join(format!("{name}.json"))
    }

    /// Loads and validates one sequence against `modules`.
    pub fn sequence(&self, name: &str, modules: &Modules) -> Result<Sequence, ProjectError> {
        Sequence::check_name(name)?;
        let path = self.sequence_path(name);
        let text = match std::fs::read_to_string(&path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ProjectError::NoSuchSequence {
                    name: name.to_string(),
                    path: path.display().to_string(),
                    known: self
                        .sequence_names()
                        .map(|n| n.join(", "))
                        .unwrap_or_else(|_| "none".into()),
                });
            }
            Err(source) => {
                return Err(ProjectError::Read {
                    path: path.display().to_string(),
                    source,
                    hint: "Check its permissions.",
                });
            }
        };
        Ok(Sequence::parse(name, &self.rel(&path), &text, modules)?)
    }

    /// Names of all `etl_sequences/*.json`, sorted.
    pub fn sequence_names(&self) -> std::io::Result<Vec<String>> {
        let mut names: Vec<String> = std::fs::read_dir(self.dir.join("etl_sequences"))?
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()
                    .and_then(|n| n.strip_suffix(".json"))
                    .map(str::to_string)
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// Checks everything a run needs: modules.json, every sequence, and
    /// (with `check_program`, which resolves a module's program from the
    /// project directory the way the executor will) that every module's
    /// program exists and is executable. Returns one line per problem (empty
    /// when all is well) and the number of sequences checked.
    pub fn validate<E: std::fmt::Display>(
        &self,
        check_program: impl Fn(&str, &Path) -> Result<(), E>,
    ) -> (Vec<String>, usize) {
        let mut problems = Vec::new();
        let modules = match self.modules() {
            Ok(m) => m,
            Err(e) => return (vec![e.to_string()], 0),
        };
        for (name, module) in modules.iter() {
            if let Err(e) = check_program(&module.cmd[0], &self.dir) {
                problems.push(format!("modules.json: module {name:?}: {e}"));
            }
        }
        let names = match self.sequence_names() {
            Ok(n) => n,
            Err(e) => {
                problems.push(format!(
                    "{}: cannot list sequences: {e}",
                    self.dir.join("etl_sequences").display()
                ));
                vec![]
            }
        };
        for name in &names {
            if let Err(e) = self.sequence(name, &modules) {
                problems.push(e.to_string());
            }
        }
        (problems, names.len())
    }
}
