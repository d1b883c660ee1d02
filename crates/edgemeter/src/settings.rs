//! Settings: every flag of every subcommand from the command line, the
//! environment or a config file, in that order of precedence.
//!
//! This module owns where a setting comes from, not what it means: clap's
//! definitions in [`crate::cli`] stay the only list of flags, their
//! parsers and their defaults, so a flag added there is at once a key of
//! the config file and an environment variable, with no line here.
//!
//! The layers, lowest first, merged by figment:
//! 1. the TOML file of `--config FILE` (or `EDGEMETER_CONFIG`): a
//!    top-level `log`, and one table per subcommand (`[edge]`, `[cloud]`,
//!    ...) whose keys are the long flag names in snake_case;
//! 2. the environment: `EDGEMETER_<FLAG>` for the flags of the subcommand
//!    being run (`EDGEMETER_IDLE_FLUSH`), `EDGEMETER_LOG`, and the older
//!    names [`ENV_ALIASES`];
//! 3. the flags given on the command line.
//!
//! The merged values are then handed to clap as if they had been typed,
//! each first checked alone with its flag's own parser so that a bad value
//! is named with the file or variable it came from. A file may hold tables
//! for other subcommands (one file can serve a host); every table is
//! checked, and an unknown key or a value of the wrong type is an error.
//!
//! Keys themselves (the secret bytes) are never settings: they come from key
//! files and `EDGEMETER_EDGE_KEY` only (see [`crate::keys`]), so
//! [`check`] can print every setting without leaking one.

use crate::cli::Cli;
use crate::keys;
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, CommandFactory, FromArgMatches};
use figment::providers::{Env, Format, Toml};
use figment::value::{Dict, Map, Value};
use figment::{Figment, Metadata, Profile, Provider, Source};
use std::any::TypeId;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};

/// The subcommands a config file may have a table for, in `--help` order.
pub const SECTIONS: &[&str] = &["households", "edge", "cloud", "demo", "status", "keygen"];

/// The prefix of every environment variable that sets a flag.
pub const ENV_PREFIX: &str = "EDGEMETER_";

/// The environment variable of the top-level `log`.
pub const LOG_ENV: &str = "EDGEMETER_LOG";

/// Older names that still set a flag: (variable, subcommand, key). The
/// `EDGEMETER_<FLAG>` name wins when both are set.
pub const ENV_ALIASES: &[(&str, &str, &str)] = &[
    ("EDGEMETER_EDGE_KEY_FILE", "edge", "key_file"),
    ("EDGEMETER_KEYS_FILE", "cloud", "keys"),
];

/// The figment name of the command-line layer.
const COMMAND_LINE: &str = "command line";

/// Arguments that are not settings of a subcommand: clap's own, and the
/// global ones, which the file sets at its top level (`log`) or not at all.
const NOT_SETTINGS: &[&str] = &["help", "version", "log", "config"];

/// Why the settings could not be made.
#[derive(Debug)]
pub enum SettingsError {
    /// What clap prints itself: `--help`, `--version`, a bad flag.
    Clap(clap::Error),
    /// The file, the environment or the merged settings are wrong; one
    /// line per problem, each naming the key and where it came from.
    Invalid(Vec<String>),
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SettingsError::Clap(error) => error.fmt(f),
            SettingsError::Invalid(problems) => write!(f, "{}", problems.join("\n")),
        }
    }
}

impl std::error::Error for SettingsError {}

impl From<clap::Error> for SettingsError {
    fn from(error: clap::Error) -> Self {
        SettingsError::Clap(error)
    }
}

fn invalid(problem: impl Into<String>) -> SettingsError {
    SettingsError::Invalid(vec![problem.into()])
}

/// The command line as clap defines it, with each subcommand's `--help`
/// saying where else its flags may be set.
pub fn command() -> clap::Command {
    let mut command = Cli::command();
    for &section in SECTIONS {
        command = command.mut_subcommand(section, |sub| {
            let example = settings_of(&sub)
                .next()
                .map(key_of)
                .unwrap_or_else(|| "flag".into());
            sub.after_help(format!(
                "Every flag may also be set in the [{section}] table of the --config file, \
                 keyed by the flag's name with `_` for `-` (e.g. {example}), or by the \
                 environment variable EDGEMETER_<FLAG> (e.g. {}). Flags override the \
                 environment, which overrides the file; a required flag may come from \
                 either. `edgemeter config check --config FILE` shows the result.",
                env_name(&example)
            ))
        });
    }
    command
}

/// The arguments of a subcommand that are settings.
fn settings_of(command: &clap::Command) -> impl Iterator<Item = &Arg> {
    command
        .get_arguments()
        .filter(|arg| !NOT_SETTINGS.contains(&arg.get_id().as_str()) && arg.get_long().is_some())
}

/// A flag's key in the config file: its long name in snake_case.
fn key_of(arg: &Arg) -> String {
    arg.get_long()
        .expect("settings have long names")
        .replace('-', "_")
}

/// The environment variable of a key.
pub fn env_name(key: &str) -> String {
    format!("{ENV_PREFIX}{}", key.to_ascii_uppercase())
}

fn is_switch(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue)
}

/// Whether a flag takes text (a path, a name, an address): the file must
/// give it as a TOML string, not a number.
fn takes_text(arg: &Arg) -> bool {
    let parsed = arg.get_value_parser().type_id();
    parsed == TypeId::of::<String>() || parsed == TypeId::of::<PathBuf>()
}

/// [`load_from`] on the process's arguments; prints clap's output or the
/// problems and exits on failure (2, as clap does for a bad command line).
pub fn load_or_exit() -> Cli {
    match load_from(std::env::args_os()) {
        Ok(cli) => cli,
        Err(SettingsError::Clap(error)) => error.exit(),
        Err(SettingsError::Invalid(problems)) => {
            for problem in &problems {
                eprintln!("edgemeter: error: {problem}");
            }
            std::process::exit(2)
        }
    }
}

/// Parses `args` (the program name first) and merges the config file and
/// the environment under them.
pub fn load_from<I, T>(args: I) -> Result<Cli, SettingsError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let command = command();
    let matches = match command.clone().try_get_matches_from(&args) {
        Ok(matches) => matches,
        // A required flag may come from the file or the environment: parse
        // again without requiring any, and check them once merged.
        Err(error) if error.kind() == clap::error::ErrorKind::MissingRequiredArgument => {
            relaxed(command.clone()).try_get_matches_from(&args)?
        }
        Err(error) => return Err(error.into()),
    };
    let file = config_path(&matches);
    let Some((section, sub_matches)) = matches.subcommand() else {
        return Ok(Cli::from_arg_matches(&matches)?);
    };
    if !SECTIONS.contains(&section) {
        // `config check` reads the file itself; its own flags are all it takes.
        let mut cli = Cli::from_arg_matches(&matches)?;
        cli.fill_config_check(file);
        return Ok(cli);
    }
    let sub = command
        .find_subcommand(section)
        .expect("a parsed subcommand exists");
    let given = given_on_command_line(sub, sub_matches);
    let log = given_log(&matches, sub_matches);
    let layers = Layers::new(file.as_deref(), Some(section), given, log)?;
    let mut problems = layers.check_other_tables(&command, section);
    let resolved = layers.resolve(sub, section);
    problems.extend(resolved.problems);
    problems.extend(missing_required(sub, section, &resolved.settings));
    let log = layers.log();
    if let Err(problem) = &log {
        problems.push(problem.clone());
    }
    if !problems.is_empty() {
        return Err(SettingsError::Invalid(problems));
    }
    let mut argv: Vec<OsString> = vec![args.first().cloned().unwrap_or_else(|| "edgemeter".into())];
    if let Some(path) = &file {
        argv.push(format!("--config={}", path.display()).into());
    }
    if let Ok(Some(Setting {
        text: Some(log), ..
    })) = log
    {
        argv.push(format!("--log={log}").into());
    }
    argv.push(section.into());
    for setting in &resolved.settings {
        argv.extend(setting.as_argument());
    }
    let matches = command.try_get_matches_from(argv)?;
    Ok(Cli::from_arg_matches(&matches)?)
}

/// The command with no argument, and no group of arguments, required.
fn relaxed(command: clap::Command) -> clap::Command {
    let mut command = command;
    for &section in SECTIONS {
        command = command.mut_subcommand(section, |sub| {
            let groups: Vec<String> = sub
                .get_groups()
                .filter(|group| group.is_required_set())
                .map(|group| group.get_id().to_string())
                .collect();
            let mut sub = sub.mut_args(|arg| arg.required(false));
            for group in groups {
                sub = sub.mut_group(group, |group| group.required(false));
            }
            sub
        });
    }
    command
}

fn config_path(matches: &ArgMatches) -> Option<PathBuf> {
    let from = |matches: &ArgMatches| matches.get_one::<PathBuf>("config").cloned();
    from(matches).or_else(|| matches.subcommand().and_then(|(_, sub)| from(sub)))
}

/// The flags typed on the command line, as figment values keyed like the
/// file's.
fn given_on_command_line(sub: &clap::Command, matches: &ArgMatches) -> Dict {
    let mut given = Dict::new();
    for arg in settings_of(sub) {
        let id = arg.get_id().as_str();
        if matches.value_source(id) != Some(ValueSource::CommandLine) {
            continue;
        }
        let value = if is_switch(arg) {
            Value::from(true)
        } else {
            let Some(text) = matches
                .get_raw(id)
                .and_then(|mut raw| raw.next())
                .map(|raw| raw.to_string_lossy().into_owned())
            else {
                continue;
            };
            Value::from(text)
        };
        given.insert(key_of(arg), value);
    }
    given
}

fn given_log(matches: &ArgMatches, sub: &ArgMatches) -> Option<String> {
    [sub, matches]
        .into_iter()
        .find(|matches| matches.value_source("log") == Some(ValueSource::CommandLine))
        .and_then(|matches| matches.get_one::<String>("log").cloned())
}

/// The command line's flags as a figment layer.
struct CommandLine(Dict);

impl Provider for CommandLine {
    fn metadata(&self) -> Metadata {
        Metadata::named(COMMAND_LINE)
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        let mut data = Map::new();
        data.insert(Profile::Default, self.0.clone());
        Ok(data)
    }
}

/// Where one setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The flag's default.
    Default,
    File(PathBuf),
    /// The environment variable named.
    Env(String),
    /// The flag named.
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => write!(f, "default"),
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Env(name) => write!(f, "{name}"),
            Origin::Flag(flag) => write!(f, "{flag}"),
        }
    }
}

/// One flag's effective value.
#[derive(Debug, Clone)]
pub struct Setting {
    pub key: String,
    /// The flag's long name, without the dashes.
    pub long: String,
    /// As the flag would take it; `None`: not set and no default.
    pub text: Option<String>,
    pub origin: Origin,
    /// An on/off flag (`allow_unauthenticated = true`).
    pub switch: bool,
    /// Takes text, printed in quotes; otherwise a number or a word.
    pub quoted: bool,
}

impl Setting {
    /// The setting as a command-line argument, when it is not the default.
    fn as_argument(&self) -> Option<OsString> {
        if self.origin == Origin::Default {
            return None;
        }
        let text = self.text.as_deref()?;
        if self.switch {
            return (text == "true").then(|| format!("--{}", self.long).into());
        }
        Some(format!("--{}={text}", self.long).into())
    }

    /// `key = value` as TOML.
    pub fn toml_line(&self) -> String {
        match &self.text {
            None => format!("# {}: not set", self.key),
            Some(text) if self.switch => format!("{} = {text}", self.key),
            // As TOML writes numbers: `01` from the environment is 1.
            Some(text) if !self.quoted && text.parse::<u64>().is_ok() => {
                format!("{} = {}", self.key, text.parse::<u64>().unwrap_or_default())
            }
            Some(text) if !self.quoted && text.parse::<f64>().is_ok_and(f64::is_finite) => {
                format!("{} = {text}", self.key)
            }
            Some(text) => format!("{} = {}", self.key, toml_string(text)),
        }
    }
}

/// A TOML basic string (Rust's escapes agree with TOML's for what paths,
/// addresses and names hold).
fn toml_string(text: &str) -> String {
    format!("{text:?}")
}

/// A subcommand's settings, and what was wrong with them.
pub struct Resolved {
    pub settings: Vec<Setting>,
    pub problems: Vec<String>,
}

/// The merged layers for one subcommand.
pub struct Layers {
    figment: Figment,
    /// The file's layer alone: which tables the file has (the environment
    /// and the flags make the table of the subcommand they are for).
    file_only: Figment,
    file: Option<PathBuf>,
}

impl Layers {
    /// The file, then the environment for `section` (none: only
    /// `EDGEMETER_LOG`), then `given` for `section`.
    pub fn new(
        file: Option<&Path>,
        section: Option<&str>,
        given: Dict,
        log: Option<String>,
    ) -> Result<Layers, SettingsError> {
        let mut figment = Figment::new();
        if let Some(path) = file {
            if let Err(error) = std::fs::File::open(path) {
                return Err(invalid(format!(
                    "cannot read the config file {}: {error}",
                    path.display()
                )));
            }
            figment = figment.merge(Toml::file_exact(path));
        }
        let file_only = figment.clone();
        if let Some(section) = section {
            figment = merge_section_env(figment, section);
        }
        figment = figment.merge(Env::raw().only(&[LOG_ENV]).map(|_| "log".into()));
        let mut cli = Dict::new();
        if let (Some(section), false) = (section, given.is_empty()) {
            cli.insert(section.to_owned(), Value::from(given));
        }
        if let Some(log) = log {
            cli.insert("log".into(), Value::from(log));
        }
        figment = figment.merge(CommandLine(cli));
        // A file that does not parse fails here, named by figment.
        if let Err(error) = figment.extract::<Dict>() {
            return Err(invalid(describe_figment_error(error, file)));
        }
        Ok(Layers {
            figment,
            file_only,
            file: file.map(Path::to_owned),
        })
    }

    /// The tables the file has, in [`SECTIONS`] order, and its unknown
    /// top-level keys as problems.
    pub fn tables(&self) -> (Vec<&'static str>, Vec<String>) {
        let top: Dict = self.file_only.extract().unwrap_or_default();
        let mut problems = Vec::new();
        for (key, value) in &top {
            let known = key == "log" || SECTIONS.contains(&key.as_str());
            if !known {
                problems.push(format!(
                    "{}: unknown key `{key}`: a config file holds `log` and the tables {}",
                    self.origin_text(key),
                    SECTIONS
                        .iter()
                        .map(|section| format!("[{section}]"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            } else if key != "log" && value.as_dict().is_none() {
                problems.push(format!(
                    "{}: `{key}` must be a table ([{key}]), not a single value",
                    self.origin_text(key)
                ));
            }
        }
        let tables = SECTIONS
            .iter()
            .copied()
            .filter(|section| top.get(*section).and_then(Value::as_dict).is_some())
            .collect();
        (tables, problems)
    }

    /// Problems in the file's top level and in its tables other than
    /// `section` (which [`Layers::resolve`] checks with the environment).
    fn check_other_tables(&self, command: &clap::Command, section: &str) -> Vec<String> {
        let (tables, mut problems) = self.tables();
        for other in tables.into_iter().filter(|other| *other != section) {
            let sub = command.find_subcommand(other).expect("a known section");
            problems.extend(self.resolve(sub, other).problems);
        }
        problems
    }

    /// The effective `log`: `None` when nothing sets it.
    pub fn log(&self) -> Result<Option<Setting>, String> {
        let Ok(value) = self.figment.find_value("log") else {
            return Ok(None);
        };
        let origin = self.origin_of("log", "log");
        let Some(text) = value.as_str() else {
            return Err(format!(
                "{}: `log` must be a string, e.g. log = \"info\"",
                origin_label(&origin, None, "log")
            ));
        };
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(text) {
            return Err(format!(
                "{}: log = {text:?} is not a log filter: {error}",
                origin_label(&origin, None, "log")
            ));
        }
        Ok(Some(Setting {
            key: "log".into(),
            long: "log".into(),
            text: Some(text.to_owned()),
            origin,
            switch: false,
            quoted: true,
        }))
    }

    /// Every setting of `section`, checked with its flag's parser.
    pub fn resolve(&self, sub: &clap::Command, section: &str) -> Resolved {
        let mut problems = Vec::new();
        let table: Dict = self.figment.extract_inner(section).unwrap_or_default();
        for key in table.keys() {
            if !settings_of(sub).any(|arg| key_of(arg) == *key) {
                let keys: Vec<String> = settings_of(sub).map(key_of).collect();
                problems.push(format!(
                    "{}: unknown key `{key}`; the keys of [{section}] are {}",
                    origin_label(&self.origin_of(section, key), Some(section), key),
                    keys.join(", ")
                ));
            }
        }
        let mut settings = Vec::new();
        for arg in settings_of(sub) {
            let key = key_of(arg);
            let setting = match table.get(&key) {
                Some(value) => {
                    let origin = self.origin_of(section, &key);
                    match value_text(arg, value, &origin) {
                        Ok(text) => {
                            if let Err(reason) = check_value(arg, &text) {
                                problems.push(format!(
                                    "{}: {key} = {}: {reason}",
                                    origin_label(&origin, Some(section), &key),
                                    toml_string(&text)
                                ));
                            }
                            setting(arg, Some(text), origin)
                        }
                        Err(reason) => {
                            problems.push(format!(
                                "{}: {key}: {reason}",
                                origin_label(&origin, Some(section), &key)
                            ));
                            setting(arg, None, origin)
                        }
                    }
                }
                None => {
                    let default = arg
                        .get_default_values()
                        .first()
                        .map(|text| text.to_string_lossy().into_owned())
                        // An unbuilt switch has no default value yet: off.
                        .or_else(|| is_switch(arg).then(|| "false".to_owned()));
                    setting(arg, default, Origin::Default)
                }
            };
            settings.push(setting);
        }
        Resolved { settings, problems }
    }

    /// Which layer the value at `section.key` came from.
    fn origin_of(&self, section: &str, key: &str) -> Origin {
        let path = if section == key {
            key.to_owned()
        } else {
            format!("{section}.{key}")
        };
        let Some(metadata) = self.figment.find_metadata(&path) else {
            return Origin::Default;
        };
        if let Some(Source::File(file)) = &metadata.source {
            return Origin::File(file.clone());
        }
        if metadata.name == COMMAND_LINE {
            return Origin::Flag(format!("--{}", key.replace('_', "-")));
        }
        if key == "log" && section == "log" {
            return Origin::Env(LOG_ENV.into());
        }
        // The environment: the primary name wins over an alias.
        let primary = env_name(key);
        if std::env::var_os(&primary).is_some() {
            return Origin::Env(primary);
        }
        ENV_ALIASES
            .iter()
            .find(|(variable, aliased, aliased_key)| {
                *aliased == section && *aliased_key == key && std::env::var_os(variable).is_some()
            })
            .map(|(variable, ..)| Origin::Env((*variable).to_owned()))
            .unwrap_or(Origin::Env(primary))
    }

    fn origin_text(&self, key: &str) -> String {
        match &self.file {
            Some(path) => format!("{}", path.display()),
            None => format!("`{key}`"),
        }
    }
}

/// The environment's layers for `section`: the older names first, then
/// `EDGEMETER_<FLAG>` for each of its flags, which wins over them.
fn merge_section_env(mut figment: Figment, section: &str) -> Figment {
    for &(variable, aliased_section, key) in ENV_ALIASES {
        if aliased_section == section {
            let target = format!("{section}.{key}");
            figment = figment.merge(
                Env::raw()
                    .only(&[variable])
                    .map(move |_| target.clone().into()),
            );
        }
    }
    let keys = section_keys(section);
    let section = section.to_owned();
    figment.merge(Env::prefixed(ENV_PREFIX).filter_map(move |key| {
        keys.iter()
            .find(|known| key == known.as_str())
            .map(|known| format!("{section}.{known}").into())
    }))
}

/// The keys of a subcommand's table.
fn section_keys(section: &str) -> Vec<String> {
    let command = Cli::command();
    command
        .find_subcommand(section)
        .map(|sub| settings_of(sub).map(key_of).collect())
        .unwrap_or_default()
}

fn setting(arg: &Arg, text: Option<String>, origin: Origin) -> Setting {
    Setting {
        key: key_of(arg),
        long: arg.get_long().expect("settings have long names").to_owned(),
        text,
        origin,
        switch: is_switch(arg),
        quoted: takes_text(arg),
    }
}

/// Where a problem is: `FILE: [edge]`, `EDGEMETER_KAFKA`, `--kafka`.
fn origin_label(origin: &Origin, section: Option<&str>, key: &str) -> String {
    match (origin, section) {
        (Origin::File(path), Some(section)) => format!("{}: [{section}]", path.display()),
        (Origin::File(path), None) => format!("{}", path.display()),
        (Origin::Default, _) => format!("the default of {key}"),
        (origin, _) => origin.to_string(),
    }
}

/// A merged value as the text its flag takes. Values from the environment
/// are the variable's own text (figment reads `01` as the number 1).
fn value_text(arg: &Arg, value: &Value, origin: &Origin) -> Result<String, String> {
    if let Origin::Env(variable) = origin {
        if let Some(text) = std::env::var_os(variable) {
            let text = text.to_string_lossy().into_owned();
            if is_switch(arg) && text != "true" && text != "false" {
                return Err(format!("{text:?} is not true or false"));
            }
            return Ok(text);
        }
    }
    let from_file = matches!(origin, Origin::File(_));
    match value {
        Value::Bool(_, on) if is_switch(arg) => Ok(on.to_string()),
        _ if is_switch(arg) => Err(format!(
            "expected true or false, found {}",
            value.to_actual()
        )),
        Value::String(_, text) => Ok(text.clone()),
        Value::Char(_, char) => Ok(char.to_string()),
        Value::Num(..) if from_file && takes_text(arg) => Err(format!(
            "expected a string in quotes, found {}",
            value.to_actual()
        )),
        Value::Num(..) => value
            .to_u128()
            .map(|number| number.to_string())
            .or_else(|| value.to_i128().map(|number| number.to_string()))
            .or_else(|| value.to_f64().map(|number| number.to_string()))
            .ok_or_else(|| format!("unexpected number {}", value.to_actual())),
        Value::Bool(..) | Value::Empty(..) | Value::Dict(..) | Value::Array(..) => Err(format!(
            "expected a single value, found {}",
            value.to_actual()
        )),
    }
}

/// Parses `text` with the flag's own parser, alone.
fn check_value(arg: &Arg, text: &str) -> Result<(), String> {
    if is_switch(arg) {
        return Ok(());
    }
    let probe = clap::Command::new("edgemeter")
        .no_binary_name(true)
        .disable_help_flag(true)
        .arg(arg.clone().required(false).global(false));
    match probe.try_get_matches_from([format!("--{}={text}", arg.get_long().unwrap_or(""))]) {
        Ok(_) => Ok(()),
        Err(error) => Err(match std::error::Error::source(&error) {
            Some(reason) => reason.to_string(),
            None => clap_reason(&error),
        }),
    }
}

/// clap's message without its `error: ` and usage lines.
fn clap_reason(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let first = rendered.lines().next().unwrap_or("").trim();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

/// The required flags nothing set, each with the three ways to set it.
fn missing_required(sub: &clap::Command, section: &str, settings: &[Setting]) -> Vec<String> {
    let unset = |key: &str| {
        settings
            .iter()
            .any(|setting| setting.key == key && setting.text.is_none())
    };
    // A required group (one of several flags, e.g. --redis or
    // --redis-cluster) is missing when none of its flags is set.
    let groups = sub
        .get_groups()
        .filter(|group| group.is_required_set())
        .filter_map(move |group| {
            let args: Vec<&Arg> = group
                .get_args()
                .filter_map(|id| settings_of(sub).find(|arg| arg.get_id() == id))
                .collect();
            if args.is_empty() || !args.iter().all(|arg| unset(&key_of(arg))) {
                return None;
            }
            let list = |describe: &dyn Fn(&Arg) -> String| {
                args.iter()
                    .map(|arg| describe(arg))
                    .collect::<Vec<_>>()
                    .join(" or ")
            };
            Some(format!(
                "{section} needs {}: give one flag, set {} in the [{section}] table of the \
                 --config file, or set {}",
                list(&|arg| format!("--{}", arg.get_long().unwrap_or(""))),
                list(&|arg| format!("`{}`", key_of(arg))),
                list(&|arg| env_name(&key_of(arg)))
            ))
        });
    let flags = settings_of(sub)
        .filter(|arg| arg.is_required_set())
        .filter(|arg| {
            settings
                .iter()
                .any(|setting| setting.key == key_of(arg) && setting.text.is_none())
        })
        .map(|arg| {
            let key = key_of(arg);
            format!(
                "{section} needs --{}: give the flag, set `{key}` in the [{section}] table of \
                 the --config file, or set {}",
                arg.get_long().unwrap_or(""),
                env_name(&key)
            )
        });
    groups.chain(flags).collect()
}

fn describe_figment_error(error: figment::Error, file: Option<&Path>) -> String {
    let text = error.to_string();
    match file {
        Some(path) if !text.contains(&path.display().to_string()) => {
            format!("config file {}: {text}", path.display())
        }
        _ => text,
    }
}

/// `edgemeter config check`: the effective settings of `file` for `only`,
/// or for every table the file has, with the environment over the file and
/// secrets masked. `Err` lists every problem found.
pub fn check(file: Option<&Path>, only: Option<&str>) -> Result<String, SettingsError> {
    let Some(file) = file else {
        return Err(invalid(
            "config check needs the file: edgemeter config check --config FILE [--for SUBCOMMAND]",
        ));
    };
    let command = command();
    let base = Layers::new(Some(file), None, Dict::new(), None)?;
    let (tables, mut problems) = base.tables();
    let sections: Vec<&str> = match only {
        Some(section) => vec![section],
        None => tables.clone(),
    };
    let mut out = format!("# edgemeter config check: {}\n", file.display());
    match base.log() {
        Ok(Some(log)) => out.push_str(&format!("{}  # {}\n", log.toml_line(), log.origin)),
        Ok(None) => out.push_str("log = \"info\"  # default\n"),
        Err(problem) => problems.push(problem),
    }
    if sections.is_empty() {
        out.push_str("# no subcommand tables: the file sets only `log`\n");
    }
    // Tables not shown are still checked: a typo there is an error too.
    for table in tables.iter().filter(|table| !sections.contains(table)) {
        let sub = command.find_subcommand(table).expect("a known section");
        problems.extend(base.resolve(sub, table).problems);
    }
    for section in sections {
        let sub = command.find_subcommand(section).expect("a known section");
        let layers = Layers::new(Some(file), Some(section), Dict::new(), None)?;
        let resolved = layers.resolve(sub, section);
        problems.extend(resolved.problems.iter().cloned());
        problems.extend(missing_required(sub, section, &resolved.settings));
        out.push_str(&format!("\n[{section}]\n"));
        for setting in &resolved.settings {
            out.push_str(&describe(section, setting, &mut problems));
            out.push('\n');
        }
        if section == "edge" {
            out.push_str(&describe_env_key(&resolved.settings, &mut problems));
        }
    }
    if problems.is_empty() {
        out.push_str(&format!("\n# {}: valid\n", file.display()));
        Ok(out)
    } else {
        Err(SettingsError::Invalid(problems))
    }
}

/// One setting's line: masked where it holds a secret, with its origin and,
/// for key files, what they hold.
fn describe(section: &str, setting: &Setting, problems: &mut Vec<String>) -> String {
    let mut shown = setting.clone();
    match (&setting.text, setting.key.as_str()) {
        (Some(text), "redis") => shown.text = Some(mask_url_password(text)),
        (Some(text), "redis_cluster") => {
            let masked: Vec<String> = text.split(',').map(mask_url_password).collect();
            shown.text = Some(masked.join(","));
        }
        _ => {}
    }
    let Some(path) = setting.text.as_deref().map(Path::new) else {
        return shown.toml_line();
    };
    let mut line = format!("{}  # {}", shown.toml_line(), setting.origin);
    match (section, setting.key.as_str()) {
        ("edge", "key_file") => match keys::load_edge_key(Some(path)) {
            Ok(_) => line.push_str("; holds a key (not shown)"),
            Err(error) => problems.push(format!("[edge] key_file: {error}")),
        },
        ("cloud", "keys") => match keys::load_keys_file(path) {
            Ok(keys) => {
                let plural = if keys.len() == 1 { "" } else { "s" };
                line.push_str(&format!("; holds the keys of {} edge{plural}", keys.len()));
            }
            Err(error) => problems.push(format!("[cloud] keys: {error}")),
        },
        _ => {}
    }
    line
}

/// The edge's key from the environment, when no key file is named: masked.
fn describe_env_key(settings: &[Setting], problems: &mut Vec<String>) -> String {
    let key_file_set = settings
        .iter()
        .any(|setting| setting.key == "key_file" && setting.text.is_some());
    if key_file_set || std::env::var_os(keys::EDGE_KEY_ENV).is_none() {
        return String::new();
    }
    if let Err(error) = keys::load_edge_key(None) {
        problems.push(error.to_string());
    }
    format!("# the key: {} = \"***\"\n", keys::EDGE_KEY_ENV)
}

/// `redis://user:secret@host` as `redis://user:***@host`.
pub fn mask_url_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let Some((userinfo, host)) = rest.rsplit_once('@') else {
        return url.to_owned();
    };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Command;
    use std::time::Duration;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let path = dir.join("edgemeter.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn load(line: &str) -> Result<Cli, SettingsError> {
        load_from(line.split_whitespace())
    }

    fn problems(result: Result<Cli, SettingsError>) -> String {
        match result {
            Err(SettingsError::Invalid(problems)) => problems.join("\n"),
            Err(SettingsError::Clap(error)) => panic!("a clap error: {error}"),
            Ok(cli) => panic!("parsed: {cli:?}"),
        }
    }

    #[test]
    fn a_file_sets_required_and_optional_flags_and_flags_override_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = write(
            dir.path(),
            "log = \"debug\"\n[edge]\nkafka = \"k:1\"\ncloud = \"c\"\ndb = \"f.db\"\n\
             idle_flush = \"90s\"\nheartbeat_port = 1234\nreadings = \"original\"\n\
             [cloud]\nredis = \"redis://x\"\nallow_unauthenticated = true\n",
        );
        let path = file.to_str().unwrap();
        let cli = load(&format!("edgemeter --config {path} edge --db flag.db")).unwrap();
        assert_eq!(cli.log, "debug");
        let Command::Edge(edge) = cli.command else {
            panic!("not edge")
        };
        assert_eq!(edge.kafka, "k:1");
        assert_eq!(edge.db, PathBuf::from("flag.db"), "the flag wins");
        assert_eq!(edge.idle_flush, Duration::from_secs(90));
        assert_eq!(edge.ports.heartbeat_port, 1234);
        assert_eq!(edge.ports.data_port, 63271, "the default stays");
        assert_eq!(edge.readings, edgemeter_wire::ReadingForm::Original);
        let cli = load(&format!("edgemeter cloud --config {path} --log warn")).unwrap();
        assert_eq!(cli.log, "warn");
        let Command::Cloud(cloud) = cli.command else {
            panic!("not cloud")
        };
        assert!(cloud.allow_unauthenticated);
        assert_eq!(cloud.redis.as_deref(), Some("redis://x"));
    }

    #[test]
    fn without_a_file_the_command_line_parses_as_before() {
        let cli = load("edgemeter edge --kafka k:1 --cloud c --db e.db --idle-flush 2m").unwrap();
        let Command::Edge(edge) = cli.command else {
            panic!("not edge")
        };
        assert_eq!(edge.idle_flush, Duration::from_secs(120));
        assert_eq!(edge.edge_id, "edge-1");
        let missing = problems(load("edgemeter edge --kafka k:1 --cloud c"));
        assert!(missing.contains("edge needs --db"), "{missing}");
        assert!(missing.contains("EDGEMETER_DB"), "{missing}");
        assert!(matches!(
            load("edgemeter edge --kafka k:1 --cloud c --db e.db --no-such-flag"),
            Err(SettingsError::Clap(_))
        ));
    }

    #[test]
    fn unknown_keys_and_wrong_types_name_the_key_and_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let line = |text: &str| {
            let path = write(dir.path(), text);
            let path = path.display().to_string();
            let problem = problems(load(&format!("edgemeter --config {path} status --db x.db")));
            assert!(problem.contains(&path), "{problem}");
            problem
        };
        let typo = line("[edge]\nidle_flsh = \"60s\"\n");
        assert!(typo.contains("[edge]: unknown key `idle_flsh`"), "{typo}");
        assert!(typo.contains("idle_flush"), "lists the keys: {typo}");
        let duration = line("[edge]\nidle_flush = 60\n");
        assert!(
            duration.contains("idle_flush = \"60\": `60`: a unit is missing"),
            "{duration}"
        );
        let port = line("[cloud]\nheartbeat_port = 70000\n");
        assert!(port.contains("[cloud]: heartbeat_port"), "{port}");
        let switch = line("[cloud]\nallow_unauthenticated = \"yes\"\n");
        assert!(
            switch.contains("allow_unauthenticated: expected true or false"),
            "{switch}"
        );
        let text = line("[edge]\nkafka = 9092\n");
        assert!(
            text.contains("kafka: expected a string in quotes"),
            "{text}"
        );
        let list = line("[edge]\ncloud = [\"a\", \"b\"]\n");
        assert!(list.contains("cloud: expected a single value"), "{list}");
        let table = line("[edgee]\nkafka = \"k\"\n");
        assert!(table.contains("unknown key `edgee`"), "{table}");
        let syntax = line("[edge\n");
        assert!(!syntax.is_empty());
        let log = line("log = 5\n");
        assert!(log.contains("`log` must be a string"), "{log}");
    }

    #[test]
    fn a_missing_file_is_named() {
        let problem = problems(load(
            "edgemeter --config /no/such/edgemeter.toml status --db x",
        ));
        assert!(
            problem.contains("cannot read the config file /no/such/edgemeter.toml"),
            "{problem}"
        );
    }

    #[test]
    fn no_flag_is_named_like_the_edge_key_variable() {
        // EDGEMETER_EDGE_KEY holds a key itself: no flag may read it.
        let command = command();
        for &section in SECTIONS {
            let sub = command.find_subcommand(section).unwrap();
            for arg in settings_of(sub) {
                assert_ne!(env_name(&key_of(arg)), keys::EDGE_KEY_ENV, "[{section}]");
            }
        }
    }

    #[test]
    fn help_says_where_else_flags_come_from() {
        let mut command = command();
        let help = command
            .find_subcommand_mut("edge")
            .unwrap()
            .render_long_help()
            .to_string();
        assert!(help.contains("[edge] table of the --config file"), "{help}");
        assert!(help.contains("EDGEMETER_<FLAG>"), "{help}");
        assert!(help.contains("--idle-flush"), "{help}");
    }

    #[test]
    fn passwords_in_urls_are_masked() {
        assert_eq!(
            mask_url_password("redis://user:secret@host:6379/0"),
            "redis://user:***@host:6379/0"
        );
        assert_eq!(
            mask_url_password("redis://:secret@host"),
            "redis://:***@host"
        );
        assert_eq!(mask_url_password("redis://host:6379"), "redis://host:6379");
    }
}
