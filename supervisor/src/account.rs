//! Users and groups the workers run as: by number or by name.

use crate::error::Error;

/// A user or a group, by numeric id or by name; what
/// [`Builder::user`](crate::Builder::user) and
/// [`Builder::group`](crate::Builder::group) take. A name is looked up in
/// the system's user and group databases (`getpwnam_r` / `getgrnam_r`, as
/// `id` or `ls -l` would) when the builder is given it, in the supervisor,
/// never in the child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Account {
    /// A numeric id, used as it is.
    Id(u32),
    /// A name, resolved to its id.
    Name(String),
}

impl From<u32> for Account {
    fn from(id: u32) -> Account {
        Account::Id(id)
    }
}

impl From<&str> for Account {
    fn from(name: &str) -> Account {
        Account::Name(name.to_owned())
    }
}

impl From<String> for Account {
    fn from(name: String) -> Account {
        Account::Name(name)
    }
}

/// Whether an [`Account`] names a user or a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    User,
    Group,
}

impl Kind {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Kind::User => "user",
            Kind::Group => "group",
        }
    }
}

/// A name that did not resolve, kept by the builder (which is `Clone`)
/// until `spawn` reports it as [`Error::UnknownAccount`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unresolved {
    kind: Kind,
    name: String,
    reason: String,
}

impl From<Unresolved> for Error {
    fn from(u: Unresolved) -> Error {
        Error::UnknownAccount {
            kind: u.kind.name(),
            name: u.name,
            reason: u.reason,
        }
    }
}

/// The numeric id of `account`.
///
/// # Errors
///
/// The name, and why, when no such user or group exists or the lookup
/// itself failed.
pub(crate) fn resolve(account: Account, kind: Kind) -> Result<u32, Unresolved> {
    let name = match account {
        Account::Id(id) => return Ok(id),
        Account::Name(name) => name,
    };
    let found = match kind {
        Kind::User => nix::unistd::User::from_name(&name).map(|u| u.map(|u| u.uid.as_raw())),
        Kind::Group => nix::unistd::Group::from_name(&name).map(|g| g.map(|g| g.gid.as_raw())),
    };
    match found {
        Ok(Some(id)) => Ok(id),
        Ok(None) => Err(Unresolved {
            kind,
            reason: format!("no {} of that name on this system", kind.name()),
            name,
        }),
        Err(errno) => Err(Unresolved {
            kind,
            name,
            reason: format!("the lookup failed: {errno}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_ids_resolve_and_unknown_names_are_named() {
        assert_eq!(resolve(Account::from(1234), Kind::User).unwrap(), 1234);
        assert_eq!(resolve(Account::from("root"), Kind::User).unwrap(), 0);
        assert_eq!(resolve(Account::from("root"), Kind::Group).unwrap(), 0);
        let err =
            Error::from(resolve(Account::from("no-such-user-drover"), Kind::User).unwrap_err());
        let text = err.to_string();
        assert!(
            text.contains("user") && text.contains("no-such-user-drover"),
            "{text}"
        );
        assert!(matches!(err, Error::UnknownAccount { kind: "user", .. }));
    }
}
