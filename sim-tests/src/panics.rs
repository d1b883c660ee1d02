//! Panics inside a seed become findings, not noise: while a seed runs on a
//! thread, a panic on that thread is recorded (message and location) for
//! the report instead of being printed, and the harness catches the unwind.
//! Outside a seed the previous panic hook runs unchanged.

use std::cell::{Cell, RefCell};
use std::panic;
use std::sync::Once;

thread_local! {
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
    static CAPTURED: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// The most panic messages kept per seed.
const PANICS_KEPT_MAX: usize = 8;

static INSTALL: Once = Once::new();

fn install() {
    INSTALL.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if CAPTURING.with(Cell::get) {
                let location = info
                    .location()
                    .map(|at| format!(" at {}:{}", at.file(), at.line()))
                    .unwrap_or_default();
                let message = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|text| (*text).to_owned())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".to_owned());
                CAPTURED.with(|captured| {
                    let mut captured = captured.borrow_mut();
                    if captured.len() < PANICS_KEPT_MAX {
                        captured.push(format!("{message}{location}"));
                    }
                });
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `body` with panics on this thread captured; returns its result (or
/// `None` if it panicked) and the panic messages seen meanwhile.
pub fn capture<T>(body: impl FnOnce() -> T) -> (Option<T>, Vec<String>) {
    install();
    CAPTURING.with(|flag| flag.set(true));
    CAPTURED.with(|captured| captured.borrow_mut().clear());
    let result = panic::catch_unwind(panic::AssertUnwindSafe(body)).ok();
    CAPTURING.with(|flag| flag.set(false));
    let messages = CAPTURED.with(|captured| std::mem::take(&mut *captured.borrow_mut()));
    (result, messages)
}
