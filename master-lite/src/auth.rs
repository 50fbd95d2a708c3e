//! Identities and the one authorization decision of the native API.
//!
//! # Identities
//!
//! A request carries one [`Identity`], attached by the serving layer (`http::identify`):
//!
//! * over mTLS, the identity written in the client certificate's common name
//!   (`computer:<id>`, `partition:<computer>/<partition>`, `user:<name>`, `admin:<name>`, see
//!   [`crate::pki`]), once its serial is known to the database and not revoked;
//! * over mTLS without a client certificate, [`Identity::Anonymous`]: it may only enroll;
//! * over plain HTTP (loopback, or any address with `--allow-plain-http`) and for in-process
//!   calls of the router, [`Identity::Local`], the local operator, trusted like an admin, as
//!   slapproxy trusts its loopback callers.
//!
//! # Rules ([`allow`])
//!
//! | identity | may |
//! |---|---|
//! | local, admin | everything |
//! | computer X | register X, read X, poll X's desired state, report X's software; report, publish connection parameters, bang and fetch the certificate of X's partitions; request children for X's partitions; read the instances on X and those X's partitions requested |
//! | partition X/P | report, publish connection parameters and bang on X/P; request children as X/P; read the instance on X/P and the instances X/P requested |
//! | user U | request root instances (new titles, or the ones U owns), read and change the state of the trees U owns |
//! | anonymous | enroll |
//!
//! Supplying releases and listing every computer are for local and admin identities. Lists are
//! filtered with the same rules. Every refusal is an [`ApiError::Forbidden`] naming the identity
//! and the action; the HTTP layer logs each 403 with the identity, method and path.
//!
//! The SLAP routes (classic, `/hateoas`, JSON-RPC; `crate::slap`) map each call onto the same
//! actions: the slapgrid calls of computer X onto [`Action::Node`] / [`Action::Register`],
//! partition calls onto [`Action::Partition`] / [`Action::ReadPartition`], requests onto
//! [`Action::RequestRoot`] / [`Action::RequestChild`], supply onto [`Action::Supply`], the
//! software product catalog onto [`Action::Catalog`]; what has no owner to check (root shared
//! instances) is [`Action::AdminOnly`].

use std::fmt;

pub use slapos_proto::identity::{Identity, IdentityError, Name};
use slapos_proto::{ComputerId, PartitionId, PartitionRef};

use crate::error::ApiError;

/// Where an instance is and who may see it: what [`Action::ReadInstance`] decides on.
#[derive(Debug, Clone, Copy)]
pub struct InstanceFacts<'a> {
    /// Computer holding it.
    pub computer: &'a str,
    /// Partition holding it.
    pub partition: &'a str,
    /// `computer/partition` of the instance that requested it, `None` for a root.
    pub requester: Option<&'a str>,
    /// Owner of its tree's root (`user:alice`), `None` when unowned.
    pub owner: Option<&'a str>,
}

/// What a caller wants to do.
#[derive(Debug, Clone, Copy)]
pub enum Action<'a> {
    /// `POST /v1/enroll`.
    Enroll,
    /// `GET /v1/health`.
    Health,
    /// Read the software product catalog (`getSoftwareReleaseListFromSoftwareProduct`) or the
    /// service root documents: every certified identity.
    Catalog,
    /// Something only the local operator and admins may do (named for the refusal message).
    AdminOnly(&'static str),
    /// Register (or re-register) a computer.
    Register(&'a ComputerId),
    /// Read a computer (show, or an entry of the list).
    ReadComputer(&'a ComputerId),
    /// Supply or remove a release on a computer.
    Supply(&'a ComputerId),
    /// The node's own calls about its computer: desired state, software reports.
    Node(&'a ComputerId),
    /// Report, publish connection parameters or bang on a partition.
    Partition(&'a ComputerId, &'a PartitionId),
    /// Read what the master holds for a partition (SLAP `registerComputerPartition`, status,
    /// its shared instances).
    ReadPartition(&'a ComputerId, &'a PartitionId),
    /// Fetch a partition's certificate and key.
    PartitionCertificate(&'a ComputerId, &'a PartitionId),
    /// Request a root instance; `existing` is `Some(owner)` when the title exists already.
    RequestRoot {
        /// `None`: a new title; `Some(owner)`: the owner of the existing root.
        existing: Option<Option<&'a str>>,
    },
    /// Request a child instance as the instance on this partition.
    RequestChild(&'a PartitionRef),
    /// Read an instance (show, or an entry of the list).
    ReadInstance(InstanceFacts<'a>),
    /// Change the state of a root and its tree.
    ChangeTree {
        /// Owner of the root.
        owner: Option<&'a str>,
    },
}

impl fmt::Display for Action<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Enroll => f.write_str("enroll"),
            Self::Health => f.write_str("read the health"),
            Self::Catalog => f.write_str("read the software catalog"),
            Self::AdminOnly(what) => f.write_str(what),
            Self::Register(c) => write!(f, "register computer {c}"),
            Self::ReadComputer(c) => write!(f, "read computer {c}"),
            Self::Supply(c) => write!(f, "supply releases on computer {c}"),
            Self::Node(c) => write!(f, "act as the node of computer {c}"),
            Self::Partition(c, p) => write!(f, "act on partition {c}/{p}"),
            Self::ReadPartition(c, p) => write!(f, "read partition {c}/{p}"),
            Self::PartitionCertificate(c, p) => {
                write!(f, "fetch the certificate of partition {c}/{p}")
            }
            Self::RequestRoot { .. } => f.write_str("request this root instance"),
            Self::RequestChild(p) => write!(f, "request instances as partition {p}"),
            Self::ReadInstance(i) => {
                write!(f, "read the instance on {}/{}", i.computer, i.partition)
            }
            Self::ChangeTree { .. } => f.write_str("change the state of this tree"),
        }
    }
}

/// Whether `who` may do `what` (see the module doc for the rules).
pub fn allowed(who: &Identity, what: &Action<'_>) -> bool {
    use Action as A;
    use Identity as I;
    if who.is_admin() {
        return true;
    }
    let owner = who.owner();
    let owns = |o: Option<&str>| o.is_some() && o == owner.as_deref();
    match (who, what) {
        (_, A::Enroll) => true,
        (I::Anonymous, _) => false,
        (_, A::Health | A::Catalog) => true,
        (I::Computer(x), A::Register(c) | A::ReadComputer(c) | A::Node(c)) => x == *c,
        (
            I::Computer(x),
            A::Partition(c, _) | A::ReadPartition(c, _) | A::PartitionCertificate(c, _),
        ) => x == *c,
        (I::Computer(x), A::RequestChild(p)) => p.computer == *x,
        (I::Computer(x), A::ReadInstance(i)) => {
            i.computer == x.as_str()
                || i.requester
                    .and_then(|r| r.split_once('/'))
                    .is_some_and(|(c, _)| c == x.as_str())
        }
        (I::Partition(me), A::Partition(c, p) | A::ReadPartition(c, p)) => {
            me.computer == **c && me.partition == **p
        }
        (I::Partition(me), A::RequestChild(p)) => me == *p,
        (I::Partition(me), A::ReadInstance(i)) => {
            let mine = me.to_string();
            (i.computer == me.computer.as_str() && i.partition == me.partition.as_str())
                || i.requester == Some(mine.as_str())
        }
        (I::User(_), A::RequestRoot { existing }) => match existing {
            None => true,
            Some(o) => owns(*o),
        },
        (I::User(_), A::ReadInstance(i)) => owns(i.owner),
        (I::User(_), A::ChangeTree { owner }) => owns(*owner),
        _ => false,
    }
}

/// [`allowed`], or a 403 naming the identity and the action.
pub fn allow(who: &Identity, what: Action<'_>) -> Result<(), ApiError> {
    if allowed(who, &what) {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!("{who} may not {what}")))
    }
}

/// The owner a root request by `who` records, once the owner rule
/// ([`Action::RequestRoot`]) allowed it on the title's current owner. Call it on the database
/// thread right before the request, so nothing can take the title in between.
pub fn root_request_owner(
    s: &mut crate::store::Store,
    who: &Identity,
    title: &slapos_proto::InstanceTitle,
) -> Result<Option<String>, ApiError> {
    let existing = s.root_owner(title)?;
    allow(
        who,
        Action::RequestRoot {
            existing: existing.as_ref().map(Option::as_deref),
        },
    )?;
    Ok(who.owner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid(s: &str) -> ComputerId {
        ComputerId::parse(s).unwrap()
    }

    #[test]
    fn common_names_round_trip_and_bad_ones_are_refused() {
        for cn in [
            "computer:COMP-1",
            "partition:COMP-1/slappart0",
            "user:alice",
            "admin:ops",
        ] {
            assert_eq!(Identity::parse_cn(cn).unwrap().to_string(), cn);
        }
        for bad in [
            "",
            "alice",
            "root:x",
            "user:",
            "user:../x",
            "user:a b",
            "computer:../x",
            "partition:COMP-1",
            "partition:C/../x",
            "admin:-x",
        ] {
            assert!(Identity::parse_cn(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn rules() {
        let (c1, c2) = (cid("C1"), cid("C2"));
        let p = PartitionId::parse("p0").unwrap();
        let pr = PartitionRef::parse("C1/p0").unwrap();
        let other = PartitionRef::parse("C1/p1").unwrap();
        let comp = Identity::Computer(c1.clone());
        let part = Identity::Partition(pr.clone());
        let alice = Identity::User("alice".parse().unwrap());
        let anon = Identity::Anonymous;
        assert!(allowed(&comp, &Action::Node(&c1)));
        assert!(!allowed(&comp, &Action::Node(&c2)));
        assert!(allowed(&comp, &Action::RequestChild(&pr)));
        assert!(!allowed(&comp, &Action::Supply(&c1)));
        assert!(allowed(&part, &Action::Partition(&c1, &p)));
        assert!(!allowed(&part, &Action::PartitionCertificate(&c1, &p)));
        assert!(allowed(&part, &Action::RequestChild(&pr)));
        assert!(!allowed(&part, &Action::RequestChild(&other)));
        assert!(!allowed(&part, &Action::RequestRoot { existing: None }));
        assert!(allowed(&alice, &Action::RequestRoot { existing: None }));
        assert!(allowed(
            &alice,
            &Action::RequestRoot {
                existing: Some(Some("user:alice"))
            }
        ));
        assert!(!allowed(
            &alice,
            &Action::RequestRoot {
                existing: Some(Some("user:bob"))
            }
        ));
        assert!(!allowed(
            &alice,
            &Action::RequestRoot {
                existing: Some(None)
            }
        ));
        assert!(!allowed(&alice, &Action::ChangeTree { owner: None }));
        assert!(!allowed(&anon, &Action::Health));
        assert!(allowed(&anon, &Action::Enroll));
        let shared = Action::AdminOnly("request root shared instances");
        assert!(allowed(&Identity::Local, &shared));
        assert!(!allowed(&comp, &shared));
        assert!(!allowed(&alice, &shared));
        assert!(allowed(&alice, &Action::Catalog));
        assert!(!allowed(&anon, &Action::Catalog));
        assert!(allowed(&part, &Action::ReadPartition(&c1, &p)));
        assert!(allowed(&comp, &Action::ReadPartition(&c1, &p)));
        assert!(!allowed(&comp, &Action::ReadPartition(&c2, &p)));
        assert!(!allowed(&alice, &Action::ReadPartition(&c1, &p)));
        let facts = InstanceFacts {
            computer: "C2",
            partition: "p3",
            requester: Some("C1/p0"),
            owner: Some("user:alice"),
        };
        assert!(allowed(&part, &Action::ReadInstance(facts)));
        assert!(allowed(&comp, &Action::ReadInstance(facts)));
        assert!(allowed(&alice, &Action::ReadInstance(facts)));
        assert!(!allowed(
            &Identity::Partition(other),
            &Action::ReadInstance(facts)
        ));
        assert!(!allowed(
            &Identity::User("bob".parse().unwrap()),
            &Action::ReadInstance(facts)
        ));
        let err = allow(&alice, Action::Supply(&c1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "user:alice may not supply releases on computer C1"
        );
    }
}
