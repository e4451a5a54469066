//! Which webhook URLs cepheus may call.
//!
//! A URL that points at loopback, link-local (cloud metadata services live
//! there), private, unspecified or multicast addresses is refused unless
//! `delivery.allow_private_urls` is set: whoever may configure a receiver
//! could otherwise make cepheus probe the network it runs in. Names are
//! resolved when the receiver is written and each address checked; a name
//! that later resolves elsewhere is not re-checked (see
//! `docs/decisions.md`).

use std::net::{IpAddr, ToSocketAddrs};

/// Checks `url`'s form; with `allow_private` false, also where it points.
/// Blocking (resolves the host name): call off the async threads.
pub fn check_url(url: &str, allow_private: bool) -> Result<(), String> {
    let uri: actix_web::http::Uri = url
        .parse()
        .map_err(|e| format!("url: `{url}` is not a valid URL: {e}"))?;
    let scheme = uri.scheme_str().unwrap_or("");
    if scheme != "http" && scheme != "https" {
        return Err(format!("url: `{url}` must start with http:// or https://"));
    }
    let Some(host) = uri.host() else {
        return Err(format!("url: `{url}` has no host"));
    };
    // NB: the URL is shown back and may be logged: credentials belong in
    // `secret_headers`, which are not.
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(
            "url: must not hold credentials (user:password@); send them in `secret_headers`, which are never shown back"
                .to_owned(),
        );
    }
    if allow_private {
        return Ok(());
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    let addresses: Vec<IpAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![ip],
        Err(_) if host.eq_ignore_ascii_case("localhost") || host.ends_with(".localhost") => {
            return Err(refused(url, "localhost"))
        }
        Err(_) => (host, port)
            .to_socket_addrs()
            .map_err(|e| format!("url: cannot resolve the host of `{url}`: {e}"))?
            .map(|a| a.ip())
            .collect(),
    };
    match addresses.into_iter().find(|ip| is_private(*ip)) {
        Some(ip) => Err(refused(url, &ip.to_string())),
        None => Ok(()),
    }
}

fn refused(url: &str, what: &str) -> String {
    format!(
        "url: `{url}` points at {what}, a loopback, link-local or private address; \
         such receivers are refused unless `delivery.allow_private_urls = true` is set in the config file"
    )
}

/// Loopback, link-local, private (RFC 1918, RFC 4193), CGNAT, unspecified,
/// broadcast or multicast.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || (a == 100 && (64..128).contains(&b))
                || a == 0
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_refused_unless_allowed() {
        for url in [
            "http://127.0.0.1:9000/x",
            "http://localhost/x",
            "http://10.1.2.3/",
            "http://192.168.0.1/",
            "http://172.16.5.5/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]:8080/",
            "http://[fe80::1]/",
            "http://[fd00::1]/",
            "http://0.0.0.0/",
            "http://[::ffff:127.0.0.1]/",
        ] {
            assert!(check_url(url, false).is_err(), "{url}");
            assert!(check_url(url, true).is_ok(), "{url}");
        }
        assert!(check_url("http://93.184.216.34/hook", false).is_ok());
        assert!(check_url("ftp://93.184.216.34/", true).is_err());
        assert!(check_url("not a url", true).is_err());
        let with_password = check_url("https://user:pw@93.184.216.34/", true).unwrap_err();
        assert!(with_password.contains("secret_headers") && !with_password.contains("pw"));
    }
}
