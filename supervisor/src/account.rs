//! Users and groups the workers run as: by number or by name.

/// A user or a group, by numeric id or by name; what
/// [`Builder::user`](crate::Builder::user) and
/// [`Builder::group`](crate::Builder::group) take. A name is looked up in
/// the system's user and group databases (`getpwnam_r` / `getgrnam_r`, as
/// `id` or `ls -l` would) when the builder is given it, in the supervisor,
/// never in the child.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
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
/// Whether an [`Account`] names a user or a group
/// ([`Error::UnknownAccount`](crate::Error::UnknownAccount)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Kind {
    /// A user ([`Builder::user`](crate::Builder::user)).
    User,
    /// A group ([`Builder::group`](crate::Builder::group)).
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

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl Lookup {
    /// The failure, said of a `kind`: "no user of that name on this system".
    pub(crate) fn describe(&self, kind: Kind) -> String {
        match self {
            Lookup::NotFound => format!("no {kind} of that name on this system"),
            failed => failed.to_string(),
        }
    }
}

/// Why an account name could not be used ([`Error::UnknownAccount`](crate::Error::UnknownAccount)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Lookup {
    /// The system has no account of that name.
    #[error("no account of that name on this system")]
    NotFound,
    /// The lookup itself failed (the system's error number).
    #[error("the lookup failed: {}", std::io::Error::from_raw_os_error(*.0))]
    Failed(i32),
}

/// A name that did not resolve, kept by the builder (which is `Clone`)
/// until `spawn` reports it as [`Error::UnknownAccount`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Unresolved {
    pub(crate) kind: Kind,
    pub(crate) name: String,
    pub(crate) lookup: Lookup,
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
            name,
            lookup: Lookup::NotFound,
        }),
        Err(errno) => Err(Unresolved {
            kind,
            name,
            lookup: Lookup::Failed(errno as i32),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

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
        assert!(matches!(
            err,
            Error::UnknownAccount {
                kind: Kind::User,
                lookup: Lookup::NotFound,
                ..
            }
        ));
    }
}
