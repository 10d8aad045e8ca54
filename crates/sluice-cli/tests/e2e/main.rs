//! End-to-end tests: each runs the real `sluice` binary (built by cargo for
//! this test target) against real files, sockets and peers. One test binary
//! for all of them (one link instead of one per file); run a part with
//! `cargo test --release -p sluice-cli --test e2e -- hostile::`.

mod common;

mod api;
mod chaos;
mod check;
mod cli;
mod debatch;
mod dev;
mod faults;
mod fidelity;
mod file;
mod ftp;
mod hostile;
mod http;
mod inspect;
mod isolation;
mod logs;
mod mail;
mod operator;
mod pipeline;
mod publish;
mod recovery;
mod relay;
mod reload;
mod remote;
mod sftp;
mod smtp;
mod suspended;
mod throttle;
