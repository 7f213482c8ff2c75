//! The Rhai engine a script runs in: the language and its data functions,
//! and nothing that reaches outside the process or blocks.
//!
//! What is left out, and why:
//! - no module resolver and no `import` (crate feature `no_module`): no
//!   file access;
//! - no `timestamp` (feature `no_time`): no clock;
//! - `eval` disabled: everything that runs is what `check-config` compiled;
//! - Rhai's `LanguageCorePackage` is not loaded: it holds `sleep`, which
//!   would block a worker, and `exit`;
//! - `print` and `debug` go to the log at debug level, never to stdout,
//!   where the `log` backend may be writing JSON lines.
//!
//! Rhai itself has no file, network or process functions. Limits (see
//! [`Limits`]) bound operations, call depth and data sizes per call.

use std::sync::Arc;

use rhai::def_package;
use rhai::packages::{
    ArithmeticPackage, BasicArrayPackage, BasicBlobPackage, BasicFnPackage, BasicIteratorPackage, BasicMapPackage,
    BasicMathPackage, BasicStringPackage, BitFieldPackage, LogicPackage, MoreStringPackage, Package,
};
use rhai::Engine;

use super::{deadline, event, helpers, Limits, RegexCache};

def_package! {
    /// Every Rhai package a script may use, merged into one module: a call
    /// the engine has not resolved yet looks its function up once per
    /// global module, and with the eleven packages registered one by one
    /// that was eleven hash lookups for each operator and function of every
    /// call (the resolution cache starts empty per call). Later packages
    /// win over earlier ones, as with separate registration.
    ScriptPackage(lib):
        ArithmeticPackage,
        BasicStringPackage,
        BasicIteratorPackage,
        BasicFnPackage,
        BitFieldPackage,
        LogicPackage,
        BasicMathPackage,
        BasicArrayPackage,
        BasicBlobPackage,
        BasicMapPackage,
        MoreStringPackage
    {}
}

/// An engine for one script filter, with `name` in its log lines.
pub fn engine(name: &str, limits: &Limits, regexes: Arc<RegexCache>) -> Engine {
    let mut engine = Engine::new_raw();
    engine.register_global_module(ScriptPackage::new().as_shared_module());
    engine.disable_symbol("eval");
    // Undeclared variables are compile errors, so check-config catches typos.
    engine.set_strict_variables(true);
    engine.set_max_operations(limits.max_operations);
    engine.set_max_call_levels(limits.max_call_levels);
    engine.set_max_string_size(limits.max_string_size);
    engine.set_max_array_size(limits.max_array_size);
    engine.set_max_map_size(limits.max_map_size);
    engine.on_progress(|ops| deadline::passed(ops).then_some(rhai::Dynamic::UNIT));
    let print_name = name.to_owned();
    engine.on_print(move |s| tracing::debug!(filter = %print_name, "script print: {s}"));
    let debug_name = name.to_owned();
    engine.on_debug(move |s, _, pos| tracing::debug!(filter = %debug_name, "script debug at {pos}: {s}"));
    event::register(&mut engine);
    helpers::register(&mut engine, regexes);
    engine
}
