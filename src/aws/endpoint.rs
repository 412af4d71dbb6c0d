//! Where an AWS service's API is: `AWS_ENDPOINT_URL_<SERVICE>`, else `AWS_ENDPOINT_URL`, else
//! the service's regional endpoint, as the AWS SDKs resolve it (that is how tests and users
//! reach a local emulator). And which regions exist.

use anyhow::Result;

use crate::input;

/// The AWS regions of the commercial, China and GovCloud partitions (November 2026).
const REGIONS: &[&str] = &[
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-6",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "cn-north-1",
    "cn-northwest-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-gov-east-1",
    "us-gov-west-1",
    "us-west-1",
    "us-west-2",
];

/// Refuses a region AWS does not have (a typo would otherwise surface as a DNS failure
/// mid-run). A region newer than the list passes when the endpoint is given explicitly.
pub fn check_region(region: &str, from_flag: bool) -> Result<()> {
    if REGIONS.contains(&region) || std::env::var_os("AWS_ENDPOINT_URL").is_some() {
        return Ok(());
    }
    let origin = if from_flag {
        "--region"
    } else {
        "the region (AWS_REGION or the profile)"
    };
    Err(input!(
        "{origin} {region}: not an AWS region; give one such as eu-west-1 or us-east-1 (for a region newer \
         than this build, set AWS_ENDPOINT_URL to its endpoint)"
    ))
}

/// One AWS service's API.
#[derive(Debug, Clone, Copy)]
pub struct Service {
    /// The endpoint prefix and signing name (`kinesis`, `firehose`, `iot`).
    pub name: &'static str,
    /// The suffix of `AWS_ENDPOINT_URL_<…>` (`KINESIS`, `FIREHOSE`, `IOT`).
    pub env: &'static str,
}

pub const KINESIS: Service = Service {
    name: "kinesis",
    env: "KINESIS",
};
pub const FIREHOSE: Service = Service {
    name: "firehose",
    env: "FIREHOSE",
};

pub const IOT: Service = Service {
    name: "iot",
    env: "IOT",
};

/// The endpoint URL of `service` in `region`, and where it came from.
pub fn url(service: Service, region: &str) -> Result<(reqwest::Url, String)> {
    let specific = format!("AWS_ENDPOINT_URL_{}", service.env);
    let (text, origin) = match std::env::var(&specific) {
        Ok(v) if !v.is_empty() => (v, specific),
        _ => match std::env::var("AWS_ENDPOINT_URL") {
            Ok(v) if !v.is_empty() => (v, "AWS_ENDPOINT_URL".to_string()),
            _ => (
                regional(service, region),
                format!("{}'s endpoint in {region}", service.name),
            ),
        },
    };
    let url = reqwest::Url::parse(&text)
        .ok()
        .filter(|u| matches!(u.scheme(), "https" | "http") && u.host().is_some())
        .ok_or_else(|| {
            input!(
                "{origin} {text}: not an http(s) URL; give e.g. https://{}.eu-west-1.amazonaws.com",
                service.name
            )
        })?;
    Ok((url, origin))
}

fn regional(service: Service, region: &str) -> String {
    let suffix = if region.starts_with("cn-") {
        "amazonaws.com.cn"
    } else {
        "amazonaws.com"
    };
    format!("https://{}.{region}.{suffix}", service.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regional_endpoints_follow_the_partition() {
        assert_eq!(
            regional(KINESIS, "eu-west-1"),
            "https://kinesis.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            regional(FIREHOSE, "cn-north-1"),
            "https://firehose.cn-north-1.amazonaws.com.cn"
        );
    }

    #[test]
    fn known_regions_pass_and_typos_do_not() {
        assert!(REGIONS.contains(&"eu-west-1"));
        assert!(!REGIONS.contains(&"eu-wset-1"));
    }
}
