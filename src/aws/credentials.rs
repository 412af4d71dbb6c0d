//! Credentials and region from the standard AWS chain, as the AWS SDKs find them: the
//! environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! `AWS_PROFILE`), then the shared config and credentials files (`~/.aws/config`,
//! `~/.aws/credentials`) and their profiles, web identity, ECS and EC2 instance metadata.
//! (`AWS_EC2_METADATA_DISABLED=true` turns the last off, as in every AWS SDK.) With
//! `--role-arn`, those credentials assume the role through STS (with `--external-id`), and the
//! role's temporary credentials are what requests are signed with.
//!
//! Temporary credentials expire (an assumed role's after an hour): [`Credentials`] hands out the
//! current ones and fetches new ones [`REFRESH_BEFORE`] their expiry, so a 36-hour run keeps
//! signing.

use std::time::{Duration, SystemTime};

use anyhow::Result;
use aws_config::BehaviorVersion;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_smithy_http_client::tls::Provider;
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;

use crate::input;

/// How long before their expiry credentials are replaced.
pub const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);
/// The session name of an assumed role unless `--role-session-name` says otherwise.
pub const DEFAULT_SESSION_NAME: &str = "freezer-fleet";

/// Where to look.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// `--region`; else the environment or profile; else `fallback_region`.
    pub region: Option<String>,
    /// A region known another way (e.g. from an IoT endpoint's host name).
    pub fallback_region: Option<String>,
    /// `--aws-profile`.
    pub profile: Option<String>,
    /// `--role-arn` with `--external-id` and `--role-session-name`.
    pub role: Option<Role>,
}

/// A role to assume with STS.
#[derive(Debug, Clone, PartialEq)]
pub struct Role {
    pub arn: String,
    pub external_id: Option<String>,
    pub session_name: String,
}

/// The credentials requests are signed with, refreshed before they expire. Cloning shares them.
#[derive(Clone)]
pub struct Credentials {
    provider: SharedCredentialsProvider,
    current: std::sync::Arc<tokio::sync::Mutex<Option<aws_credential_types::Credentials>>>,
    /// Where they came from, for messages (never the keys).
    pub origin: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys.
        write!(f, "Credentials({})", self.origin)
    }
}

impl Credentials {
    fn new(provider: SharedCredentialsProvider, origin: String) -> Credentials {
        Credentials {
            provider,
            current: Default::default(),
            origin,
        }
    }

    /// Forgets the current credentials (the service said they expired): the next call fetches.
    pub async fn invalidate(&self) {
        *self.current.lock().await = None;
    }

    /// The current credentials, fetched anew when they expire within [`REFRESH_BEFORE`].
    pub async fn get(&self) -> Result<aws_credential_types::Credentials> {
        let mut current = self.current.lock().await;
        if let Some(c) = current.as_ref()
            && !expiring(c.expiry(), SystemTime::now())
        {
            return Ok(c.clone());
        }
        let fresh = self
            .provider
            .provide_credentials()
            .await
            .map_err(|e| provider_error(&e, &self.origin))?;
        *current = Some(fresh.clone());
        Ok(fresh)
    }
}

/// Whether credentials that expire at `expiry` must be replaced at `now`.
fn expiring(expiry: Option<SystemTime>, now: SystemTime) -> bool {
    expiry.is_some_and(|at| at <= now + REFRESH_BEFORE)
}

/// Credentials and the region to sign for.
#[derive(Clone, Debug)]
pub struct Session {
    pub region: String,
    pub credentials: Credentials,
}

/// Finds the region and credentials (assuming the role when one is given) and checks that
/// credentials can be had, so a missing one stops the run before it starts.
pub async fn session(source: &Source) -> Result<Session> {
    // The chain's HTTP client (IMDS, ECS, STS) on rustls with ring, the one crypto provider of the
    // process: the SDK's default client would compile in aws-lc-rs, which needs cmake.
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(Provider::Rustls(CryptoMode::Ring))
        .build_https();
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).http_client(http);
    if let Some(profile) = &source.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(region) = &source.region {
        loader = loader.region(aws_config::Region::new(region.clone()));
    }
    let config = loader.load().await;
    let region = config
        .region()
        .map(|r| r.to_string())
        .or_else(|| source.fallback_region.clone())
        .ok_or_else(|| {
            input!(
                "no AWS region: give --region (e.g. --region eu-west-1), set AWS_REGION, or set `region` in \
                 the profile of ~/.aws/config"
            )
        })?;
    super::endpoint::check_region(&region, source.region.is_some())?;
    let base = config.credentials_provider().ok_or_else(no_credentials)?;
    let credentials = match &source.role {
        None => Credentials::new(base, "the standard credential chain".into()),
        Some(role) => {
            let mut builder = aws_config::sts::AssumeRoleProvider::builder(role.arn.clone())
                .session_name(role.session_name.clone())
                .region(aws_config::Region::new(region.clone()))
                .configure(&config);
            if let Some(id) = &role.external_id {
                builder = builder.external_id(id.clone());
            }
            let provider = builder.build_from_provider(base).await;
            let origin = format!("role {} (--role-arn)", role.arn);
            Credentials::new(SharedCredentialsProvider::new(provider), origin)
        }
    };
    credentials.get().await?;
    Ok(Session { region, credentials })
}

fn no_credentials() -> anyhow::Error {
    input!(
        "no AWS credentials found: looked in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, \
         AWS_SESSION_TOKEN) and the shared files ~/.aws/credentials and ~/.aws/config (profile from \
         --aws-profile or AWS_PROFILE); set one of them"
    )
}

/// Why the chain or STS gave no credentials, without any key material.
fn provider_error(
    e: &aws_credential_types::provider::error::CredentialsError,
    origin: &str,
) -> anyhow::Error {
    use aws_credential_types::provider::error::CredentialsError as E;
    match e {
        E::CredentialsNotLoaded(_) => no_credentials(),
        _ => {
            // The error's chain names the cause (STS's message, a profile file's problem); it
            // carries no secrets: the SDK never puts keys in errors.
            let mut why = e.to_string();
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                why = format!("{why}: {s}");
                source = s.source();
            }
            input!(
                "cannot get AWS credentials from {origin}: {why}; check the role ARN, --external-id and \
                 that the base credentials may assume it"
            )
        }
    }
}

/// The region in an AWS IoT endpoint's host name (`abc123-ats.iot.eu-west-1.amazonaws.com`).
pub fn region_of_iot_endpoint(host: &str) -> Option<String> {
    let rest = host.to_ascii_lowercase();
    let (_, after) = rest.split_once(".iot.")?;
    let region = after.strip_suffix(".amazonaws.com")?;
    (!region.is_empty() && !region.contains('.')).then(|| region.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_region_is_read_from_an_iot_endpoint() {
        assert_eq!(
            region_of_iot_endpoint("abc123-ats.iot.eu-west-1.amazonaws.com").as_deref(),
            Some("eu-west-1")
        );
        assert_eq!(region_of_iot_endpoint("localhost"), None);
        assert_eq!(region_of_iot_endpoint("x.iot.a.b.amazonaws.com"), None);
    }

    #[test]
    fn credentials_are_replaced_five_minutes_before_they_expire() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert!(!expiring(None, now), "long-term keys never expire");
        assert!(!expiring(Some(now + Duration::from_secs(3600)), now));
        assert!(expiring(Some(now + Duration::from_secs(299)), now));
        assert!(expiring(Some(now - Duration::from_secs(1)), now));
    }

    /// A provider that counts its calls and hands out credentials valid for `valid`.
    #[derive(Debug)]
    struct Counting {
        calls: std::sync::Arc<std::sync::atomic::AtomicU32>,
        valid: Duration,
    }

    impl ProvideCredentials for Counting {
        fn provide_credentials<'a>(&'a self) -> aws_credential_types::provider::future::ProvideCredentials<'a>
        where
            Self: 'a,
        {
            let n = self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let c = aws_credential_types::Credentials::new(
                format!("ASIA{n}"),
                "secret",
                Some("token".into()),
                Some(SystemTime::now() + self.valid),
                "test",
            );
            aws_credential_types::provider::future::ProvideCredentials::ready(Ok(c))
        }
    }

    #[tokio::test]
    async fn credentials_are_fetched_once_while_valid_and_again_when_they_expire() {
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let long = Credentials::new(
            SharedCredentialsProvider::new(Counting {
                calls: calls.clone(),
                valid: Duration::from_secs(3600),
            }),
            "test".into(),
        );
        for _ in 0..3 {
            assert_eq!(long.get().await.unwrap().access_key_id(), "ASIA0");
        }
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
        let short = Credentials::new(
            SharedCredentialsProvider::new(Counting {
                calls: calls.clone(),
                valid: Duration::from_secs(60),
            }),
            "test".into(),
        );
        assert_eq!(short.get().await.unwrap().access_key_id(), "ASIA0");
        assert_eq!(short.get().await.unwrap().access_key_id(), "ASIA1");
        assert_eq!(
            format!("{short:?}"),
            "Credentials(test)",
            "Debug never shows keys"
        );
    }
}
