//! Listening addresses from the configuration: `ip:port`, or
//! `host:port` with the host name resolved once, when the configuration is
//! loaded (an HTTP receive location's `address`, the node's
//! `metrics.address`).

use std::net::{SocketAddr, ToSocketAddrs};

use serde::Deserialize;

/// `text` as an address to listen on: `127.0.0.1:8480`, `[::1]:8480`, or
/// `localhost:8480`, whose host name is resolved now. A name that resolves
/// to several addresses listens on the first IPv4 one (else the first):
/// `localhost` is `127.0.0.1`, where clients look for it first.
pub fn listen_address(text: &str) -> Result<SocketAddr, String> {
    if let Ok(address) = text.parse() {
        return Ok(address);
    }
    let example = "e.g. 127.0.0.1:8480, [::1]:8480 or localhost:8480";
    let Some((host, port)) = text.rsplit_once(':') else {
        return Err(format!(
            "`{text}` is not a listening address: use IP:port or host:port, {example}"
        ));
    };
    if host.is_empty() || port.parse::<u16>().is_err() {
        return Err(format!(
            "`{text}` is not a listening address: use IP:port or host:port (a port from 0 to 65535), {example}"
        ));
    }
    let resolved: Vec<SocketAddr> = match text.to_socket_addrs() {
        Ok(found) => found.collect(),
        Err(e) => {
            return Err(format!(
                "cannot resolve the host name `{host}` of `{text}`: {e}; write an IP address instead, {example}"
            ));
        }
    };
    resolved
        .iter()
        .find(|a| a.is_ipv4())
        .or(resolved.first())
        .copied()
        .ok_or_else(|| {
            format!("the host name `{host}` of `{text}` resolves to no address; write an IP address instead, {example}")
        })
}

/// Serde's `deserialize_with` for [`listen_address`].
pub fn deserialize_listen_address<'de, D: serde::Deserializer<'de>>(d: D) -> Result<SocketAddr, D::Error> {
    let text = String::deserialize(d)?;
    listen_address(&text).map_err(serde::de::Error::custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ip_addresses_and_host_names_are_accepted() {
        assert_eq!(listen_address("127.0.0.1:8480").unwrap().to_string(), "127.0.0.1:8480");
        assert_eq!(listen_address("[::1]:0").unwrap().to_string(), "[::1]:0");
        // localhost resolves (from /etc/hosts), to its IPv4 address first.
        assert_eq!(listen_address("localhost:8490").unwrap().to_string(), "127.0.0.1:8490");
    }

    #[test]
    fn what_is_not_an_address_is_refused_with_an_example() {
        for bad in ["localhost", "localhost:http", ":80", "127.0.0.1:70000"] {
            let e = listen_address(bad).unwrap_err();
            assert!(e.contains("IP:port") && e.contains("127.0.0.1:8480"), "{bad}: {e}");
        }
        let e = listen_address("no-such-host.invalid:80").unwrap_err();
        assert!(
            e.contains("cannot resolve the host name `no-such-host.invalid`") && e.contains("write an IP address"),
            "{e}"
        );
    }
}
