//! Users and groups by name.

mod common;

use common::{pool, within, Cmd, LIMIT};
use drover::Error;

/// A name no user has fails `spawn()` with an error naming it; nothing
/// starts.
#[tokio::test]
async fn an_unknown_user_or_group_is_named() {
    let err = within(LIMIT, "spawn", pool(1).user("no-such-user-drover").spawn())
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::UnknownAccount { kind: drover::AccountKind::User, name, lookup: drover::AccountLookup::NotFound, .. } if name == "no-such-user-drover"),
        "{err:?}"
    );
    assert!(err.to_string().contains("no user of that name"), "{err}");
    let err = within(
        LIMIT,
        "spawn",
        pool(1).group("no-such-group-drover").spawn(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(
            &err,
            Error::UnknownAccount {
                kind: drover::AccountKind::Group,
                ..
            }
        ),
        "{err:?}"
    );
}

/// A name that exists runs the workers as that user and group (the tests
/// run as root, so `root` is one the supervisor may switch to).
#[tokio::test]
async fn a_named_user_and_group_are_the_workers() {
    if !rustix::process::getuid().is_root() {
        eprintln!("not root: switching users is not allowed here; skipped");
        return;
    }
    let pool = within(LIMIT, "spawn", pool(1).user("root").group("root").spawn())
        .await
        .unwrap();
    let ids: (u32, u32) = within(LIMIT, "ids", pool.enqueue(&Cmd::Ids))
        .await
        .unwrap()
        .data()
        .unwrap();
    assert_eq!(ids, (0, 0));
    within(LIMIT, "soft kill", pool.soft_kill()).await;
}
