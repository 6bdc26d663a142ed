//! A builder given a bad argument panics at the caller's line, not inside
//! the crate (`#[track_caller]`). Alone in its binary: it installs a panic
//! hook, which is global to the process.

use std::panic::{self, Location};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tower_mpsd::logical::LogicalLayer;
use tower_mpsd::pace::{Limits, PaceTable, Window};
use tower_mpsd::MpsdLayer;

/// Where `f` panicked, as the panic hook sees it.
fn panic_site(f: impl FnOnce() + panic::UnwindSafe) -> (String, u32) {
    let seen = Arc::new(Mutex::new(None));
    let hook_seen = seen.clone();
    let previous = panic::take_hook();
    panic::set_hook(Box::new(move |info| {
        let at = info.location().map(|l| (l.file().to_owned(), l.line()));
        *hook_seen.lock().unwrap() = at;
    }));
    let result = panic::catch_unwind(f);
    panic::set_hook(previous);
    assert!(result.is_err(), "it did not panic");
    let at = seen.lock().unwrap().take();
    at.expect("the panic has a location")
}

/// This file and the line `line_offset` lines below the caller's.
#[track_caller]
fn here(line_offset: u32) -> (String, u32) {
    let caller = Location::caller();
    (caller.file().to_owned(), caller.line() + line_offset)
}

#[test]
fn bad_arguments_panic_at_the_callers_line() {
    let site = here(2);
    let at = panic_site(|| {
        let _ = LogicalLayer::new(Duration::from_secs(1), 0);
    });
    assert_eq!(at, site, "LogicalLayer::new");

    let site = here(2);
    let at = panic_site(|| {
        let _ = MpsdLayer::new().max_attempts(0);
    });
    assert_eq!(at, site, "MpsdLayer::max_attempts");

    let site = here(2);
    let at = panic_site(|| {
        let _ = Window::new(0, Duration::from_secs(1));
    });
    assert_eq!(at, site, "Window::new");

    let site = here(2);
    let at = panic_site(|| {
        let _ = PaceTable::builder().route("no-slash", Limits::mpsd());
    });
    assert_eq!(at, site, "PaceTableBuilder::route");
}
