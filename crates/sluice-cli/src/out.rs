//! Writing to standard output like any Unix tool: when the reader has gone
//! (`sluice status | head -1`, `... | true`), the command ends quietly with
//! exit status 0 instead of panicking or printing an error.

use std::io::Write;

/// Write `args` (and a newline if `newline`) to standard output; a closed
/// pipe ends the process quietly.
pub fn write(args: std::fmt::Arguments<'_>, newline: bool) {
    let mut out = std::io::stdout().lock();
    let written = out
        .write_fmt(args)
        .and_then(|()| if newline { out.write_all(b"\n") } else { Ok(()) });
    if let Err(e) = written {
        gone_or(e);
    }
}

/// A write to standard output failed: if the reader has gone, end quietly
/// (status 0); otherwise say so and fail.
pub fn gone_or(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(0);
    }
    eprintln!("error[io]: writing to standard output: {e}");
    std::process::exit(1);
}

/// Whether `e` comes from a reader of standard output that has gone.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// `println!` that ends the process quietly when standard output is closed.
macro_rules! outln {
    () => { $crate::out::write(format_args!(""), true) };
    ($($arg:tt)*) => { $crate::out::write(format_args!($($arg)*), true) };
}

/// `print!` that ends the process quietly when standard output is closed.
macro_rules! out {
    ($($arg:tt)*) => { $crate::out::write(format_args!($($arg)*), false) };
}
