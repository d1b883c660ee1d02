//! `--cloud ADDR[,ADDR...]`: the cloud nodes an edge ships to.
//!
//! Each ADDR is `HOST` (the ports of `--heartbeat-port`/`--data-port`) or
//! `HOST:HEARTBEAT_PORT:DATA_PORT`. An IPv6 literal is written bare
//! (`::1`) or in brackets (`[::1]`), and in brackets when ports follow
//! (`[::1]:63270:63271`). The list is parsed in two steps: the text alone
//! ([`parse_cloud_list`], as clap's value parser, so a malformed list is a
//! usage error naming the flag), then with the default ports
//! ([`CloudList::resolve`]), which only then can tell that two entries name
//! one node.
//!
//! The order is kept: a node's position is its index in the edge's
//! heartbeats (`Channel::Heartbeat(index)`), and the log names it as
//! written here.

use std::fmt;
use std::net::Ipv6Addr;

/// The most cloud nodes one edge dials. Each costs the edge a heartbeat
/// socket and a heartbeat per interval, and the data socket one pipe; a
/// cloud tier of a few nodes behind one site needs far fewer. The bound
/// keeps a mistyped list (a pasted host file) from opening hundreds of
/// sockets.
pub const CLOUD_NODES_MAX: usize = 16;

/// The longest host name accepted: DNS's limit on a full name.
pub const HOST_BYTES_MAX: usize = 253;

/// One entry of `--cloud` as written: a host, with its ports or without.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudEntry {
    /// The host name or address, without brackets.
    pub host: String,
    /// `(heartbeat, data)` when the entry names them.
    pub ports: Option<(u16, u16)>,
}

/// `--cloud` as written: one or more entries, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloudList {
    /// As the operator wrote it, for the log.
    text: String,
    entries: Vec<CloudEntry>,
}

/// One cloud node with both its ports: what the link dials.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct CloudNode {
    pub host: String,
    pub heartbeat_port: u16,
    pub data_port: u16,
}

impl CloudNode {
    /// How the log names this node: `HOST:HEARTBEAT_PORT:DATA_PORT`, the
    /// form `--cloud` takes, so that an operator can paste it back.
    pub fn name(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}:{}", self.host, self.heartbeat_port, self.data_port)
        } else {
            format!("{}:{}:{}", self.host, self.heartbeat_port, self.data_port)
        }
    }
}

impl fmt::Display for CloudNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

impl fmt::Display for CloudList {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl CloudList {
    pub fn entries(&self) -> &[CloudEntry] {
        &self.entries
    }

    /// Every node with its ports, entries without ports taking the
    /// defaults. Refuses a list that names one node twice: its requests
    /// would count twice in NNG's spread and its heartbeat twice in the log.
    pub fn resolve(&self, heartbeat_port: u16, data_port: u16) -> Result<Vec<CloudNode>, String> {
        let mut nodes: Vec<CloudNode> = Vec::with_capacity(self.entries.len());
        for entry in &self.entries {
            let (heartbeat, data) = entry.ports.unwrap_or((heartbeat_port, data_port));
            if heartbeat == 0 || data == 0 {
                return Err(format!(
                    "--cloud {}: port 0 cannot be dialed; pass --heartbeat-port/--data-port or HOST:HEARTBEAT_PORT:DATA_PORT",
                    entry.host
                ));
            }
            let node = CloudNode {
                host: entry.host.clone(),
                heartbeat_port: heartbeat,
                data_port: data,
            };
            if nodes.contains(&node) {
                return Err(format!(
                    "--cloud names cloud node {node} twice; list each node once"
                ));
            }
            nodes.push(node);
        }
        assert!(!nodes.is_empty() && nodes.len() <= CLOUD_NODES_MAX);
        Ok(nodes)
    }
}

/// Parses `--cloud ADDR[,ADDR...]`; the error says which entry is wrong
/// and what the forms are.
pub fn parse_cloud_list(text: &str) -> Result<CloudList, String> {
    let parts: Vec<&str> = text.split(',').collect();
    if parts.len() > CLOUD_NODES_MAX {
        return Err(format!(
            "{} cloud nodes; at most {CLOUD_NODES_MAX}",
            parts.len()
        ));
    }
    let mut entries = Vec::with_capacity(parts.len());
    for part in parts {
        let entry = parse_entry(part.trim()).map_err(|reason| {
            format!("`{part}`: {reason}; expected HOST or HOST:HEARTBEAT_PORT:DATA_PORT, comma-separated")
        })?;
        entries.push(entry);
    }
    Ok(CloudList {
        text: text.to_owned(),
        entries,
    })
}

fn parse_entry(text: &str) -> Result<CloudEntry, String> {
    if text.is_empty() {
        return Err("empty entry".to_owned());
    }
    if let Some(rest) = text.strip_prefix('[') {
        return parse_bracketed(rest);
    }
    // A bare IPv6 literal is a host alone: with ports it must be bracketed,
    // else `::1:2:3` would be ambiguous.
    if text.parse::<Ipv6Addr>().is_ok() {
        return Ok(CloudEntry {
            host: text.to_owned(),
            ports: None,
        });
    }
    let fields: Vec<&str> = text.split(':').collect();
    match fields.as_slice() {
        [host] => Ok(CloudEntry {
            host: check_host(host)?,
            ports: None,
        }),
        [host, heartbeat, data] => Ok(CloudEntry {
            host: check_host(host)?,
            ports: Some((parse_port(heartbeat)?, parse_port(data)?)),
        }),
        [_, _] => Err("one port given; give both the heartbeat and the data port".to_owned()),
        _ => Err(
            "too many `:` (an IPv6 address with ports goes in brackets: [::1]:63270:63271)"
                .to_owned(),
        ),
    }
}

/// `[IPV6]` or `[IPV6]:HEARTBEAT_PORT:DATA_PORT`, the `[` already taken.
fn parse_bracketed(rest: &str) -> Result<CloudEntry, String> {
    let Some((address, after)) = rest.split_once(']') else {
        return Err("`[` without `]`".to_owned());
    };
    if address.parse::<Ipv6Addr>().is_err() {
        return Err(format!("`{address}` in brackets is not an IPv6 address"));
    }
    let ports = if after.is_empty() {
        None
    } else {
        let Some((heartbeat, data)) = after
            .strip_prefix(':')
            .and_then(|ports| ports.split_once(':'))
        else {
            return Err("after `]` comes nothing or :HEARTBEAT_PORT:DATA_PORT".to_owned());
        };
        Some((parse_port(heartbeat)?, parse_port(data)?))
    };
    Ok(CloudEntry {
        host: address.to_owned(),
        ports,
    })
}

fn check_host(host: &str) -> Result<String, String> {
    if host.is_empty() {
        return Err("empty host".to_owned());
    }
    if host.len() > HOST_BYTES_MAX {
        return Err(format!("host longer than {HOST_BYTES_MAX} bytes"));
    }
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_');
    if !host.chars().all(allowed) {
        return Err(format!(
            "host `{host}` has a character other than letters, digits, `.`, `-`, `_`"
        ));
    }
    Ok(host.to_owned())
}

fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(0) => Err("port 0 cannot be dialed".to_owned()),
        Ok(port) => Ok(port),
        Err(_) => Err(format!("`{text}` is not a port (1-65535)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes(text: &str) -> Result<Vec<String>, String> {
        let list = parse_cloud_list(text)?;
        let resolved = list.resolve(63270, 63271)?;
        Ok(resolved.iter().map(CloudNode::name).collect())
    }

    /// Goal: a bare host is one node on the default ports, exactly as
    /// `--cloud HOST` was before lists; IPv6 literals keep working bare.
    #[test]
    fn a_single_host_takes_the_default_ports() {
        assert_eq!(nodes("cloud"), Ok(vec!["cloud:63270:63271".to_owned()]));
        assert_eq!(
            nodes("127.0.0.1"),
            Ok(vec!["127.0.0.1:63270:63271".to_owned()])
        );
        assert_eq!(nodes("::1"), Ok(vec!["[::1]:63270:63271".to_owned()]));
        assert_eq!(nodes("[::1]"), Ok(vec!["[::1]:63270:63271".to_owned()]));
        let list = parse_cloud_list("cloud").unwrap();
        let resolved = list.resolve(1, 2).unwrap();
        assert_eq!(
            resolved,
            vec![CloudNode {
                host: "cloud".to_owned(),
                heartbeat_port: 1,
                data_port: 2
            }]
        );
        assert_eq!(list.to_string(), "cloud");
    }

    /// Goal: lists keep their order, mix both forms, and ports given in an
    /// entry override the defaults for that entry only.
    #[test]
    fn lists_mix_bare_hosts_and_hosts_with_ports() {
        assert_eq!(
            nodes("a,b:1:2, [::1]:3:4 ,fe80::1"),
            Ok(vec![
                "a:63270:63271".to_owned(),
                "b:1:2".to_owned(),
                "[::1]:3:4".to_owned(),
                "[fe80::1]:63270:63271".to_owned(),
            ])
        );
        assert_eq!(
            nodes("127.0.0.1:5000:5001,127.0.0.1:6000:6001"),
            Ok(vec![
                "127.0.0.1:5000:5001".to_owned(),
                "127.0.0.1:6000:6001".to_owned()
            ])
        );
    }

    /// Goal: every malformed entry is refused with a reason naming it.
    #[test]
    fn malformed_entries_are_refused_with_the_entry_named() {
        for (bad, reason) in [
            ("", "empty entry"),
            ("a,", "empty entry"),
            ("a,,b", "empty entry"),
            ("a:1", "one port"),
            ("a:1:2:3", "too many"),
            ("a:0:2", "port 0"),
            ("a:1:70000", "not a port"),
            ("a:x:2", "not a port"),
            (":1:2", "empty host"),
            ("a b", "character"),
            ("[::1", "without `]`"),
            ("[::1]:1", "after `]`"),
            ("[cloud]", "not an IPv6"),
            ("fe80::1:1:2:99999", "too many"),
        ] {
            let error = parse_cloud_list(bad).unwrap_err();
            assert!(error.contains(reason), "{bad}: {error}");
            assert!(error.contains("expected HOST"), "{bad}: {error}");
        }
        let many = vec!["h"; CLOUD_NODES_MAX + 1].join(",");
        assert!(parse_cloud_list(&many).unwrap_err().contains("at most"));
        let most: Vec<String> = (0..CLOUD_NODES_MAX).map(|i| format!("h{i}")).collect();
        assert_eq!(nodes(&most.join(",")).unwrap().len(), CLOUD_NODES_MAX);
    }

    /// Goal: one node named twice is refused, also when one entry spells
    /// out the default ports; a default port of 0 cannot be dialed.
    #[test]
    fn one_node_twice_and_port_zero_are_refused_on_resolve() {
        let twice = nodes("a,a:63270:63271").unwrap_err();
        assert!(twice.contains("a:63270:63271 twice"), "{twice}");
        assert!(nodes("a,a").unwrap_err().contains("twice"));
        assert!(nodes("a:1:2,a:1:3").is_ok(), "other ports, other node");
        let list = parse_cloud_list("a,b:1:2").unwrap();
        assert!(list.resolve(0, 63271).unwrap_err().contains("port 0"));
    }
}
