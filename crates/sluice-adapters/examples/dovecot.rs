//! Dovecot for a benchmark (`bench/mail-acceptance.py`): the compliance
//! kit's fixture (`kit::dovecot`) run until its standard input closes.
//!
//! ```text
//! cargo run --release -p sluice-adapters --features kit --example dovecot -- \
//!     DIR [--tls CERT KEY] [--user NAME:PASSWORD]...
//! ```
//!
//! It prints one JSON line: the ports (`imap`, `pop3`, `imaps`, `pop3s`),
//! each user's Maildir (`maildirs`), and who owns the mail (`mail_uid`,
//! `mail_gid`: a file delivered into a Maildir must be theirs).

use std::io::Read;
use std::path::PathBuf;

use sluice_adapters::kit::dovecot::{Dovecot, DovecotOptions};

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: dovecot DIR [--tls CERT KEY] [--user NAME:PASSWORD]...";
    let dir = PathBuf::from(args.next().expect(usage));
    let mut opts = DovecotOptions {
        users: Vec::new(),
        ..DovecotOptions::default()
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--tls" => {
                let cert = PathBuf::from(args.next().expect(usage));
                let key = PathBuf::from(args.next().expect(usage));
                opts.tls = Some((cert, key));
            }
            "--user" => {
                let spec = args.next().expect(usage);
                let (name, password) = spec.split_once(':').expect(usage);
                opts.users.push((name.to_string(), password.to_string()));
            }
            _ => panic!("{usage}"),
        }
    }
    if opts.users.is_empty() {
        opts.users = DovecotOptions::default().users;
    }
    let dovecot = Dovecot::start(&dir, &opts);
    let maildirs: Vec<String> = opts
        .users
        .iter()
        .map(|(name, _)| format!("\"{name}\": \"{}\"", dovecot.maildir(name).display()))
        .collect();
    let port = |p: Option<u16>| p.map_or("null".to_string(), |p| p.to_string());
    println!(
        "{{\"imap\": {}, \"pop3\": {}, \"imaps\": {}, \"pop3s\": {}, \"mail_uid\": {}, \"mail_gid\": {}, \"maildirs\": {{{}}}}}",
        dovecot.imap_port,
        dovecot.pop3_port,
        port(dovecot.imaps_port),
        port(dovecot.pop3s_port),
        dovecot.mail_uid,
        dovecot.mail_gid,
        maildirs.join(", ")
    );
    // Until whoever started it is done.
    let _ = std::io::stdin().read_to_end(&mut Vec::new());
    drop(dovecot);
}
