//! The SSRF guard of HTTPS deliveries, the same on both hosts (the local delivery workers and
//! the AWS delivery function): a target must not reach the machine's or its network's private
//! addresses. Plain `http://` is allowed only to loopback (which the portal accepts only when it
//! listens on loopback itself, or when asked), `https://` only to hosts that resolve to public
//! addresses.

use std::net::IpAddr;

/// Why a target is not called.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// It never may be: retrying will not change it.
    #[error("{0}")]
    Never(String),
    /// Its host did not resolve now; it may later.
    #[error("{0}")]
    NotNow(String),
}

/// Checks `url` before a delivery to it.
pub async fn check(url: &url::Url) -> Result<(), Refused> {
    let host = url
        .host_str()
        .ok_or_else(|| Refused::Never("URL has no host".into()))?;
    let bare = host.trim_matches(|c| c == '[' || c == ']');
    let port = url.port_or_known_default().unwrap_or(443);
    if url.scheme() == "http" {
        let loopback =
            host == "localhost" || bare.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
        return if loopback {
            Ok(())
        } else {
            Err(Refused::Never(
                "http:// is allowed only for loopback hosts".into(),
            ))
        };
    }
    let addrs = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| Refused::NotNow(format!("cannot resolve {host}: {e}")))?;
    for addr in addrs {
        if !is_public(addr.ip()) {
            return Err(Refused::Never(format!(
                "{host} resolves to {} which is not a public address",
                addr.ip()
            )));
        }
    }
    Ok(())
}

pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || (a == 100 && (64..128).contains(&b)))
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_pass_the_ssrf_guard() {
        for private in [
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "127.0.0.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
        ] {
            assert!(!is_public(private.parse().expect("ip")), "{private}");
        }
        for public in ["8.8.8.8", "2606:4700::1111"] {
            assert!(is_public(public.parse().expect("ip")), "{public}");
        }
    }

    #[tokio::test]
    async fn plain_http_reaches_loopback_only_and_https_public_hosts_only() {
        let url = |u: &str| url::Url::parse(u).expect("a URL");
        assert_eq!(check(&url("http://127.0.0.1:9/x")).await, Ok(()));
        assert!(matches!(
            check(&url("http://10.0.0.1/x")).await,
            Err(Refused::Never(_))
        ));
        assert!(matches!(
            check(&url("https://127.0.0.1/x")).await,
            Err(Refused::Never(_))
        ));
    }
}
