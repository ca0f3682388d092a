//! The SSRF guard of HTTPS deliveries, the same on both hosts (the local delivery workers and
//! the AWS delivery function): a target must not reach the machine's or its network's private
//! addresses. Plain `http://` is allowed only to loopback (which the portal accepts only when it
//! listens on loopback itself, or when asked), `https://` only to public addresses.
//!
//! [`check`] holds a URL to that before a delivery, without resolving its host. A host name is
//! held to it by [`PublicResolver`], the delivery client's resolver, on the very addresses the
//! connection is made to: a name that resolved to a public address when checked and to a private
//! one when connected (DNS rebinding) cannot slip through, and a delivery over a kept-alive
//! connection costs no lookup.

use std::net::{IpAddr, SocketAddr};

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

/// Checks `url` before a delivery to it; its host's addresses are checked when it is resolved.
pub fn check(url: &url::Url) -> Result<(), Refused> {
    let host = url
        .host()
        .ok_or_else(|| Refused::Never("URL has no host".into()))?;
    let ip = match host {
        url::Host::Ipv4(ip) => Some(IpAddr::V4(ip)),
        url::Host::Ipv6(ip) => Some(IpAddr::V6(ip)),
        url::Host::Domain(_) => None,
    };
    let localhost = matches!(host, url::Host::Domain(name) if is_localhost(name));
    let not_public = || {
        Refused::Never(format!(
            "{host} is not a public address: https:// targets must be public"
        ))
    };
    match (url.scheme(), ip) {
        ("http", _) if localhost || ip.is_some_and(|ip| ip.is_loopback()) => Ok(()),
        ("http", _) => Err(Refused::Never(
            "http:// is allowed only for loopback hosts".into(),
        )),
        (_, Some(ip)) if !is_public(ip) => Err(not_public()),
        _ if localhost => Err(not_public()),
        _ => Ok(()),
    }
}

fn is_localhost(name: &str) -> bool {
    name.eq_ignore_ascii_case("localhost")
}

/// The addresses of `host` a delivery may connect to: all of them public, except `localhost`'s
/// loopback ones (plain `http://` may reach loopback, and [`check`] refuses `https://localhost`).
pub fn callable(
    host: &str,
    found: impl IntoIterator<Item = SocketAddr>,
) -> Result<Vec<SocketAddr>, Refused> {
    let found: Vec<SocketAddr> = found.into_iter().collect();
    let allowed = |ip: IpAddr| is_public(ip) || (is_localhost(host) && ip.is_loopback());
    if let Some(private) = found.iter().find(|a| !allowed(a.ip())) {
        return Err(Refused::Never(format!(
            "{host} resolves to {} which is not a public address",
            private.ip()
        )));
    }
    if found.is_empty() {
        return Err(Refused::NotNow(format!("{host} resolves to no address")));
    }
    Ok(found)
}

/// The guard's refusal behind a failed request, when that is why it failed.
pub fn refusal<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a Refused> {
    let mut next = Some(error);
    while let Some(error) = next {
        if let Some(refused) = error.downcast_ref::<Refused>() {
            return Some(refused);
        }
        next = error.source();
    }
    None
}

/// What a failed call to a target says: every cause (`... tcp connect error: Connection
/// refused`) and not its URL, whose query may carry the consumer's token, since the text is
/// logged and kept as the subscription's last error and in its dead letters.
#[cfg(feature = "reqwest")]
pub fn describe(error: reqwest::Error) -> String {
    format!("{:#}", anyhow::Error::new(error.without_url()))
}

/// The delivery clients' resolver: a name resolves only to addresses [`callable`] allows, and
/// a request to any other fails with the [`Refused`] that [`refusal`] finds.
#[cfg(feature = "reqwest")]
#[derive(Debug, Clone, Copy, Default)]
pub struct PublicResolver;

#[cfg(feature = "reqwest")]
impl reqwest::dns::Resolve for PublicResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0))
                .await
                .map_err(|e| Refused::NotNow(format!("cannot resolve {host}: {e}")))?;
            let addrs: reqwest::dns::Addrs = Box::new(callable(&host, found)?.into_iter());
            Ok(addrs)
        })
    }
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

    #[test]
    fn plain_http_reaches_loopback_only_and_https_public_hosts_only() {
        let url = |u: &str| url::Url::parse(u).expect("a URL");
        for allowed in [
            "http://127.0.0.1:9/x",
            "http://localhost:9/x",
            "http://[::1]:9/x",
            "https://consumer.example.com/x",
            "https://8.8.8.8/x",
        ] {
            assert_eq!(check(&url(allowed)), Ok(()), "{allowed}");
        }
        for refused in [
            "http://10.0.0.1/x",
            "http://consumer.example.com/x",
            "https://127.0.0.1/x",
            "https://[::1]/x",
            "https://localhost/x",
            "https://169.254.169.254/latest/meta-data",
        ] {
            assert!(
                matches!(check(&url(refused)), Err(Refused::Never(_))),
                "{refused}"
            );
        }
    }

    #[test]
    fn a_name_is_callable_only_on_public_addresses() {
        let at = |ip: &str| SocketAddr::new(ip.parse().expect("an address"), 0);
        assert_eq!(
            callable(
                "consumer.example.com",
                [at("8.8.8.8"), at("2606:4700::1111")]
            ),
            Ok(vec![at("8.8.8.8"), at("2606:4700::1111")])
        );
        // One private address among public ones is enough to refuse the name.
        assert!(matches!(
            callable("rebound.example.com", [at("8.8.8.8"), at("10.0.0.1")]),
            Err(Refused::Never(why)) if why.contains("10.0.0.1 which is not a public address")
        ));
        assert!(matches!(
            callable("consumer.example.com", [at("127.0.0.1")]),
            Err(Refused::Never(_))
        ));
        assert_eq!(
            callable("localhost", [at("127.0.0.1"), at("::1")]),
            Ok(vec![at("127.0.0.1"), at("::1")])
        );
        assert!(matches!(
            callable("localhost", [at("10.0.0.1")]),
            Err(Refused::Never(_))
        ));
        assert!(matches!(
            callable("nothing.example.com", []),
            Err(Refused::NotNow(_))
        ));
    }

    #[test]
    fn a_refusal_is_found_behind_the_errors_that_carry_it() {
        #[derive(Debug, thiserror::Error)]
        #[error("connect failed")]
        struct Wrapper(#[source] Box<dyn std::error::Error + Send + Sync>);
        let refused = Refused::Never("rebound".into());
        let wrapped = Wrapper(Box::new(refused.clone()));
        assert_eq!(refusal(&wrapped), Some(&refused));
        assert_eq!(refusal(&Wrapper("other".into())), None);
    }
}
