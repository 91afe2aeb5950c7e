//! Bearer tokens (HTTP): each configured token has a role, and `console`
//! tokens a list of accounts. Tokens are kept as SHA-256 digests and looked
//! up by digest, so no comparison runs over the secret itself.
//!
//! NATS requests are authorised by NATS itself (accounts and subject
//! permissions on `ledger.cmd.*`), the usual way for NATS services.

use std::collections::{HashMap, HashSet};

use ledger_schemas::{AccountId, Actor, ErrorBody, ErrorCode, GrantSource};
use sha2::{Digest, Sha256};

use crate::config::{Config, Role};
use crate::domain::Command;

/// What a request wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    OpenAccount,
    /// Consume, reserve, capture, release: what a platform service does.
    Spend,
    /// Grant, adjust: operator commands.
    Operate,
    Transfer,
    ReadAccount,
    /// Start a top-up (the console, for its own accounts).
    TopUp,
    /// Operations endpoints.
    ReadOps,
    /// Set balance alerts (operators, and the console for its accounts).
    Alert,
}

/// Who is asking.
#[derive(Debug, Clone)]
pub struct Principal {
    pub name: String,
    pub role: Role,
    accounts: HashSet<AccountId>,
    /// A service principal that may act for its own service only (its
    /// name): NATS users of the services account.
    service_bound: bool,
}

impl Principal {
    /// The actor recorded on the events this principal causes.
    pub fn actor(&self) -> Actor {
        let kind = match self.role {
            Role::Service => "service",
            Role::Console => "console",
            Role::Auditor => "auditor",
            Role::Ops => "operator",
            Role::Gateway => "gateway",
            Role::Admin => "admin",
        };
        Actor::parse(format!("{kind}:{}", self.name)).unwrap_or_else(|_| Actor::system())
    }

    /// Refuses what the role may not do, and console access to other accounts.
    pub fn check(&self, action: Action, account: Option<&AccountId>) -> Result<(), Box<ErrorBody>> {
        use Action::*;
        let role_ok = match self.role {
            Role::Admin => true,
            Role::Ops => matches!(
                action,
                OpenAccount | Operate | Transfer | ReadAccount | ReadOps | Alert
            ),
            Role::Service => matches!(action, Spend | ReadAccount),
            Role::Console => matches!(action, Transfer | ReadAccount | TopUp | Alert),
            Role::Auditor => matches!(action, ReadAccount | ReadOps),
            Role::Gateway => matches!(action, Operate | ReadAccount),
        };
        if !role_ok {
            return Err(Box::new(
                ErrorBody::new(ErrorCode::Forbidden, "This token's role may not do this.")
                    .with_detail("role", format!("{:?}", self.role).to_lowercase()),
            ));
        }
        if self.role == Role::Console {
            let allowed = account.is_some_and(|a| self.accounts.contains(a));
            if !allowed {
                return Err(Box::new(ErrorBody::new(
                    ErrorCode::Forbidden,
                    "This token may not touch this account.",
                )));
            }
        }
        Ok(())
    }

    /// The accounts a `console` principal may touch, sorted.
    pub fn accounts(&self) -> Vec<AccountId> {
        let mut a: Vec<AccountId> = self.accounts.iter().cloned().collect();
        a.sort_by(|x, y| x.as_str().cmp(y.as_str()));
        a
    }

    /// A caller nats-server vouches for (`Nats-Request-Info`): the role of
    /// its NATS account, named by its NATS user.
    pub fn vouched(role: Role, user: &str) -> Principal {
        Principal {
            name: user.to_owned(),
            role,
            accounts: HashSet::new(),
            service_bound: role == Role::Service,
        }
    }

    /// What a role may ask beyond its actions: a gateway grants only for
    /// top-ups and adjusts nothing; a service bound to its name spends only
    /// for itself.
    pub fn check_command(&self, command: &Command) -> Result<(), Box<ErrorBody>> {
        let forbidden = |m: String| Err(Box::new(ErrorBody::new(ErrorCode::Forbidden, m)));
        match (self.role, command) {
            (Role::Gateway, Command::Grant { source, .. }) if *source != GrantSource::Topup => {
                forbidden("A gateway grants credits for top-ups only.".into())
            }
            (Role::Gateway, Command::Adjust { .. }) => {
                forbidden("A gateway may not adjust balances.".into())
            }
            (
                Role::Service,
                Command::Consume { service, .. } | Command::Reserve { service, .. },
            ) if self.service_bound && service.as_str() != self.name => forbidden(format!(
                "Service '{}' may not spend for service '{service}'.",
                self.name
            )),
            _ => Ok(()),
        }
    }
}

/// The configured tokens, by digest.
#[derive(Debug, Clone, Default)]
pub struct Tokens {
    by_digest: HashMap<[u8; 32], Principal>,
}

/// A token's SHA-256 digest: how tokens are kept and looked up.
pub fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl Tokens {
    pub fn from_config(config: &Config) -> Self {
        let mut by_digest = HashMap::new();
        for t in &config.tokens {
            by_digest.insert(
                digest(t.token.expose()),
                Principal {
                    name: t.name.clone(),
                    role: t.role,
                    accounts: t.accounts.iter().cloned().collect(),
                    service_bound: false,
                },
            );
        }
        if let Some(admin) = &config.admin_token {
            by_digest.insert(
                digest(admin.expose()),
                Principal {
                    name: "admin".into(),
                    role: Role::Admin,
                    accounts: HashSet::new(),
                    service_bound: false,
                },
            );
        }
        Self { by_digest }
    }

    /// The principal of a token known by its digest (a console session
    /// keeps the digest, never the token).
    pub fn by_digest(&self, digest: &[u8; 32]) -> Option<Principal> {
        self.by_digest.get(digest).cloned()
    }

    /// The principal of an `Authorization` header value.
    pub fn authenticate(&self, header: Option<&str>) -> Result<Principal, Box<ErrorBody>> {
        let unauthorized = |m: &str| Box::new(ErrorBody::new(ErrorCode::Unauthorized, m));
        let value =
            header.ok_or_else(|| unauthorized("An Authorization: Bearer token is required."))?;
        let token = value
            .strip_prefix("Bearer ")
            .ok_or_else(|| unauthorized("The Authorization header must be 'Bearer <token>'."))?;
        self.by_digest
            .get(&digest(token.trim()))
            .cloned()
            .ok_or_else(|| unauthorized("The token is not valid."))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Secret, TokenConfig};

    fn tokens() -> Tokens {
        let config = Config {
            admin_token: Some(Secret::new("adm")),
            tokens: vec![
                TokenConfig {
                    name: "sms".into(),
                    token: Secret::new("svc"),
                    role: Role::Service,
                    accounts: vec![],
                },
                TokenConfig {
                    name: "console".into(),
                    token: Secret::new("con"),
                    role: Role::Console,
                    accounts: vec![AccountId::parse("acme").unwrap()],
                },
            ],
            ..Config::default()
        };
        Tokens::from_config(&config)
    }

    #[test]
    fn roles_and_accounts() {
        let t = tokens();
        let acme = AccountId::parse("acme").unwrap();
        let other = AccountId::parse("other").unwrap();
        let svc = t.authenticate(Some("Bearer svc")).unwrap();
        assert_eq!(svc.actor().as_str(), "service:sms");
        assert!(svc.check(Action::Spend, Some(&other)).is_ok());
        assert_eq!(
            svc.check(Action::Operate, Some(&acme)).unwrap_err().code(),
            ErrorCode::Forbidden
        );
        let con = t.authenticate(Some("Bearer con")).unwrap();
        assert!(con.check(Action::ReadAccount, Some(&acme)).is_ok());
        assert!(con.check(Action::ReadAccount, Some(&other)).is_err());
        assert!(con.check(Action::Spend, Some(&acme)).is_err());
        let adm = t.authenticate(Some("Bearer adm")).unwrap();
        assert!(adm.check(Action::OpenAccount, None).is_ok());
        for bad in [None, Some("svc"), Some("Bearer nope"), Some("Basic svc")] {
            assert_eq!(
                t.authenticate(bad).unwrap_err().code(),
                ErrorCode::Unauthorized
            );
        }
    }
}
