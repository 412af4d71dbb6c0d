//! Credentials and region from the standard AWS chain, as the AWS SDKs find them: the
//! environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`, `AWS_REGION`,
//! `AWS_PROFILE`), then the shared config and credentials files (`~/.aws/config`,
//! `~/.aws/credentials`) and their profiles, web identity, ECS and EC2 instance metadata.
//! (`AWS_EC2_METADATA_DISABLED=true` turns the last off, as in every AWS SDK.)

use anyhow::Result;
use aws_config::BehaviorVersion;
use aws_credential_types::Credentials;
use aws_credential_types::provider::ProvideCredentials;
use aws_smithy_http_client::tls::Provider;
use aws_smithy_http_client::tls::rustls_provider::CryptoMode;

use crate::input;

/// Where to look.
#[derive(Debug, Clone, Default)]
pub struct Source {
    /// `--region`; else the environment or profile; else `fallback_region`.
    pub region: Option<String>,
    /// A region known another way (e.g. from an IoT endpoint's host name).
    pub fallback_region: Option<String>,
    /// `--aws-profile`.
    pub profile: Option<String>,
}

/// Credentials and the region to sign for.
pub async fn load(source: &Source) -> Result<(Credentials, String)> {
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
    let provider = config.credentials_provider().ok_or_else(no_credentials)?;
    let credentials = provider
        .provide_credentials()
        .await
        .map_err(|_| no_credentials())?;
    Ok((credentials, region))
}

fn no_credentials() -> anyhow::Error {
    input!(
        "no AWS credentials found: looked in the environment (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, \
         AWS_SESSION_TOKEN) and the shared files ~/.aws/credentials and ~/.aws/config (profile from \
         --aws-profile or AWS_PROFILE); set one of them"
    )
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
}
