//! Who calls the master, as the wire carries it: the identity written in a client
//! certificate's common name (`computer:<id>`, `partition:<computer>/<partition>`,
//! `user:<name>`, `admin:<name>`), parsed by [`Identity::parse_cn`] and written by its
//! `Display`, so the CA, the server and the node agree on one grammar; and the enrollment and
//! partition-certificate messages and routes.
//!
//! What each identity may do is the master's decision (`master_lite::auth`), not the wire's.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{ComputerId, PartitionId, PartitionRef};

/// A user or admin name: `[A-Za-z0-9_.-]{1,64}`, not starting with `.` or `-`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Name(String);

impl Name {
    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Name {
    type Err = IdentityError;

    fn from_str(s: &str) -> Result<Self, IdentityError> {
        let ok = !s.is_empty()
            && s.len() <= 64
            && !s.starts_with(['.', '-'])
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(IdentityError {
                value: s.to_owned(),
                reason: "a name is [A-Za-z0-9_.-]{1,64}, not starting with '.' or '-'",
            })
        }
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A common name that is no identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid identity {value:?}: {reason}")]
pub struct IdentityError {
    /// The text given.
    pub value: String,
    /// What is wrong.
    pub reason: &'static str,
}

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Identity {
    /// Plain HTTP (loopback or explicitly allowed) or an in-process call: the local operator.
    Local,
    /// TLS without a client certificate.
    Anonymous,
    /// An operator with an admin certificate.
    Admin(Name),
    /// A user.
    User(Name),
    /// A node.
    Computer(ComputerId),
    /// The instance on one partition.
    Partition(PartitionRef),
}

impl Identity {
    /// The identity of the instance on partition `p` of computer `c`.
    pub fn partition(c: &ComputerId, p: &PartitionId) -> Self {
        Self::Partition(PartitionRef {
            computer: c.clone(),
            partition: p.clone(),
        })
    }

    /// Parse a certificate common name (`kind:value`).
    pub fn parse_cn(cn: &str) -> Result<Self, IdentityError> {
        let err = |reason| IdentityError {
            value: cn.to_owned(),
            reason,
        };
        let (kind, value) = cn
            .split_once(':')
            .ok_or_else(|| err("expected KIND:VALUE"))?;
        match kind {
            "computer" => ComputerId::parse(value)
                .map(Self::Computer)
                .map_err(|_| err("invalid computer id")),
            "partition" => PartitionRef::parse(value)
                .map(Self::Partition)
                .map_err(|_| err("expected partition:COMPUTER/PARTITION")),
            "user" => Ok(Self::User(value.parse()?)),
            "admin" => Ok(Self::Admin(value.parse()?)),
            _ => Err(err("the kind must be computer, partition, user or admin")),
        }
    }

    /// `computer`, `partition`, `user`, `admin`, `local` or `anonymous`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Local => "local",
            Self::Anonymous => "anonymous",
            Self::Admin(_) => "admin",
            Self::User(_) => "user",
            Self::Computer(_) => "computer",
            Self::Partition(_) => "partition",
        }
    }

    /// True for the local operator and admins.
    pub fn is_admin(&self) -> bool {
        matches!(self, Self::Local | Self::Admin(_))
    }

    /// What the store records as the owner of a root instance this identity requests: `None`
    /// for the local operator (the tree is then visible to local and admin identities only).
    pub fn owner(&self) -> Option<String> {
        match self {
            Self::Admin(_) | Self::User(_) => Some(self.to_string()),
            _ => None,
        }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Local => f.write_str("local"),
            Self::Anonymous => f.write_str("anonymous"),
            Self::Admin(n) => write!(f, "admin:{n}"),
            Self::User(n) => write!(f, "user:{n}"),
            Self::Computer(c) => write!(f, "computer:{c}"),
            Self::Partition(p) => write!(f, "partition:{p}"),
        }
    }
}

/// `POST /v1/enroll`: redeem a one-time enrollment token (no client certificate needed).
pub const ENROLL_ROUTE: &str = "/v1/enroll";

/// `GET` route of a partition's certificate and key (for its computer's node).
pub fn partition_certificate_route(c: &ComputerId, p: &PartitionId) -> String {
    format!("/v1/computers/{c}/partitions/{p}/certificate")
}

/// Body of `POST /v1/enroll`.
#[derive(Clone, Serialize, Deserialize)]
pub struct EnrollRequest {
    /// The token `slapos-master token create` printed.
    pub token: String,
}

impl fmt::Debug for EnrollRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnrollRequest").finish_non_exhaustive()
    }
}

/// A certificate the master issued, with its private key and the CA to trust: the answer of
/// enrollment and of a partition's certificate route.
#[derive(Clone, Serialize, Deserialize)]
pub struct Credentials {
    /// The identity in the certificate (`computer:C1`, `partition:C1/slappart0`, …).
    pub identity: String,
    /// Serial number, lower-case hex (what `slapos-master cert revoke` takes).
    pub serial: String,
    /// Certificate, PEM.
    pub cert_pem: String,
    /// Private key, PKCS#8 PEM: store it readable by its user only.
    pub key_pem: String,
    /// The master CA certificate, PEM.
    pub ca_pem: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("identity", &self.identity)
            .field("serial", &self.serial)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_names_round_trip_and_refuse_the_rest() {
        for cn in [
            "computer:COMP-1",
            "partition:COMP-1/slappart0",
            "user:alice",
            "admin:ops.team",
        ] {
            assert_eq!(Identity::parse_cn(cn).unwrap().to_string(), cn);
        }
        for bad in [
            "",
            "computer",
            "root:x",
            "user:",
            "user:.hidden",
            "user:a b",
            "partition:C1",
            "computer:a/b",
        ] {
            assert!(Identity::parse_cn(bad).is_err(), "{bad:?}");
        }
        let p = Identity::partition(
            &ComputerId::parse("C1").unwrap(),
            &PartitionId::parse("slappart3").unwrap(),
        );
        assert_eq!(p.to_string(), "partition:C1/slappart3");
    }
}
