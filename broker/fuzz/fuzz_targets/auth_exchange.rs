//! Arbitrary bytes as a client's side of a login: the first byte picks the mechanism (PLAIN,
//! SCRAM-SHA-256, SCRAM-SHA-512) and whether the connection is TLS, the rest is split at 0xFF
//! bytes into the client's messages, each fed to the broker's `Login` in turn against a store
//! with one user. Every message must be answered (the next step or an error), never a panic, and
//! no garbage may log in.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use ringmq_broker::auth::users::Users;
use ringmq_broker::auth::{Login, Mechanism, Step};

fn users() -> &'static Users {
    static USERS: OnceLock<(tempfile::TempDir, Users)> = OnceLock::new();
    &USERS
        .get_or_init(|| {
            let dir = tempfile::tempdir().expect("a temporary directory");
            let users = Users::open(dir.path()).expect("an empty users file");
            users.add("alice", "a password no fuzzer guesses: 7f3c9a").expect("a user");
            (dir, users)
        })
        .1
}

fuzz_target!(|data: &[u8]| {
    let Some((&choice, rest)) = data.split_first() else { return };
    let mechanism = Mechanism::ALL[usize::from(choice % 3)];
    let Ok(mut login) = Login::start(mechanism, choice & 0x80 != 0) else { return };
    for message in rest.split(|&byte| byte == 0xff).take(4) {
        match login.step(users(), message) {
            Ok(Step::Continue(next, _reply)) => login = next,
            Ok(Step::Done { user, .. }) => panic!("garbage logged in as {user:?}"),
            Err(_) => return,
        }
    }
});
