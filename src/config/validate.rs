//! Checks of single values that several commands share: durations, endpoints, topics, topic
//! filters and device id prefixes. Pure: each takes the text and the name of the flag or config
//! key it came from (`origin`), and returns an input error that names it.

use std::time::Duration;

use anyhow::Result;

use crate::input;

/// Parses a duration such as `500ms`, `5s` or `2m`; a bare `0` is zero.
pub fn parse_duration(text: &str, origin: &str) -> Result<Duration> {
    let t = text.trim();
    if t == "0" {
        return Ok(Duration::ZERO);
    }
    humantime::parse_duration(t).map_err(|_| {
        input!("{origin}: '{text}' is not a duration; write a number with a unit, e.g. 500ms, 5s, 2m")
    })
}

/// Checks a device id prefix (`run --id-prefix`, `certs issue --id-prefix`): ids become MQTT
/// client ids, certificate CNs and folder names.
pub fn id_prefix(prefix: &str, origin: &str) -> Result<()> {
    if prefix.is_empty() || prefix.contains(|c: char| c.is_whitespace() || "/+#\0".contains(c)) {
        return Err(input!(
            "{origin}: '{prefix}' cannot start a device id; use letters, digits, '-', '_' or ':'"
        ));
    }
    Ok(())
}

/// Checks an MQTT topic we publish to.
pub fn topic(topic: &str, origin: &str) -> Result<()> {
    if topic.is_empty() {
        return Err(input!("{origin}: the topic is empty; e.g. --topic freezers"));
    }
    if topic.contains(['+', '#']) {
        return Err(input!(
            "{origin}: '{topic}' has a wildcard (+ or #), which only subscriptions may use; \
             publish to a plain topic such as freezers"
        ));
    }
    if topic.contains('\0') {
        return Err(input!("{origin}: the topic contains a NUL character"));
    }
    if topic.len() > 65_535 {
        return Err(input!("{origin}: the topic is longer than MQTT's 65,535 bytes"));
    }
    Ok(())
}

/// Checks a subscription filter: `+` and `#` only as whole levels, `#` only last.
pub fn topic_filter(filter: &str, origin: &str) -> Result<()> {
    let levels: Vec<&str> = filter.split('/').collect();
    let bad = filter.is_empty()
        || levels.iter().enumerate().any(|(i, l)| {
            (l.contains('#') && (*l != "#" || i + 1 != levels.len())) || (l.contains('+') && *l != "+")
        });
    if bad {
        return Err(input!(
            "{origin}: '{filter}' is not a valid topic filter; + must be a whole level, # a whole last \
             level (e.g. freezers, plant/+/freezers, plant/#)"
        ));
    }
    Ok(())
}

/// Checks an endpoint host: a DNS name or an IP address, without scheme or port.
pub fn endpoint(host: &str, origin: &str) -> Result<()> {
    if host.trim().is_empty() {
        return Err(input!(
            "{origin}: the endpoint is empty; give the host name, e.g. abc123-ats.iot.us-east-1.amazonaws.com \
             (AWS console: IoT Core > Settings > Device data endpoint)"
        ));
    }
    if host.contains("://") {
        return Err(input!(
            "{origin}: '{host}' has a scheme; give the host name only (e.g. \
             abc123-ats.iot.us-east-1.amazonaws.com) and the port with --port"
        ));
    }
    if host.parse::<std::net::IpAddr>().is_err() && host.contains(':') {
        return Err(input!(
            "{origin}: '{host}' has a port; give the host name only and the port with --port"
        ));
    }
    if rustls::pki_types::ServerName::try_from(host).is_err() {
        return Err(input!(
            "{origin}: '{host}' is not a valid host name or IP address"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms", "x").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("5s", "x").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("2m", "x").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("0", "x").unwrap(), Duration::ZERO);
        let err = parse_duration("5x", "--interval").unwrap_err().to_string();
        assert!(err.starts_with("--interval: '5x' is not a duration"), "{err}");
    }

    #[test]
    fn topics_and_endpoints() {
        assert!(topic("freezers", "t").is_ok());
        assert!(topic("a/+/b", "t").is_err());
        assert!(topic("#", "t").is_err());
        assert!(topic("", "t").is_err());
        assert!(endpoint("abc-ats.iot.us-east-1.amazonaws.com", "e").is_ok());
        assert!(endpoint("127.0.0.1", "e").is_ok());
        assert!(endpoint("::1", "e").is_ok());
        assert!(endpoint("mqtts://x.example", "e").is_err());
        assert!(endpoint("x.example:8883", "e").is_err());
        assert!(endpoint("bad host", "e").is_err());
        assert!(endpoint("", "e").is_err());
    }

    #[test]
    fn topic_filters_allow_wildcards_only_as_whole_levels() {
        for ok in ["freezers", "plant/+/freezers", "plant/#", "#", "+"] {
            assert!(topic_filter(ok, "--topic").is_ok(), "{ok}");
        }
        for bad in ["", "plant/fr#", "plant/#/x", "a+/b"] {
            let err = topic_filter(bad, "--topic").unwrap_err().to_string();
            assert!(err.starts_with("--topic: "), "{err}");
        }
    }

    #[test]
    fn id_prefixes_that_cannot_start_a_client_id_are_refused() {
        assert!(id_prefix("freezer-", "--id-prefix").is_ok());
        for bad in ["", "a b", "a/b", "a+", "#"] {
            assert!(id_prefix(bad, "--id-prefix").is_err(), "{bad:?}");
        }
    }
}
