//! Settings of `trellis-signal`: flags, each with an environment variable, over an
//! optional TOML file, over defaults that work on a laptop.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Parser;
use serde::Deserialize;

use crate::ratelimit::Rate;
use crate::relay::RelayQuotas;
use crate::service::Limits;

pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 8443);
pub const DEFAULT_RELAY_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 3478);
pub const DEFAULT_REALM: &str = "trellis";

/// The Trellis signal server: networks, invite codes, sealed signal forwarding, STUN and
/// a TURN relay. Every flag can also be set by its environment variable or in the
/// TOML file given with --config (flags win over the environment, which wins over the
/// file).
#[derive(Parser, Debug, Default)]
#[command(name = "trellis-signal", version, about, long_about = None)]
pub struct Args {
    /// TOML file with any of the settings below (same names, with underscores), plus
    /// `[limits]` and `[relay_quotas]` tables.
    #[arg(long, env = "TRELLIS_SIGNAL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address and TCP port of the API (WebSocket at /v1/signal, health at /healthz)
    /// [default: 0.0.0.0:8443].
    #[arg(long, env = "TRELLIS_SIGNAL_LISTEN", value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,

    /// Directory of the embedded database (networks, members, invites, the server's
    /// key). Default: $STATE_DIRECTORY (systemd), else ~/.local/share/trellis-signal.
    #[arg(long, env = "TRELLIS_SIGNAL_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// PEM certificate chain: with --tls-key, serve the API over TLS (wss://).
    /// Without them the API is plain (ws://), for local testing or behind a proxy.
    #[arg(long, env = "TRELLIS_SIGNAL_TLS_CERT", value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "TRELLIS_SIGNAL_TLS_KEY", value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// UDP address and port of STUN and the TURN relay [default: 0.0.0.0:3478].
    #[arg(long, env = "TRELLIS_SIGNAL_RELAY_LISTEN", value_name = "ADDR:PORT")]
    pub relay_listen: Option<SocketAddr>,

    /// The server's public IP address, given to devices as the address of their relayed
    /// candidates. Default: the --relay-listen address if it is a concrete one, else
    /// 127.0.0.1 (enough on one machine; set it on a real server).
    #[arg(long, env = "TRELLIS_SIGNAL_PUBLIC_IP", value_name = "IP")]
    pub public_ip: Option<IpAddr>,

    /// Host name devices use to reach STUN/TURN, when it differs from the API's host.
    #[arg(long, env = "TRELLIS_SIGNAL_RELAY_HOST", value_name = "HOST")]
    pub relay_host: Option<String>,

    /// TURN realm [default: trellis].
    #[arg(long, env = "TRELLIS_SIGNAL_REALM")]
    pub realm: Option<String>,

    /// Log filter, as in RUST_LOG (e.g. "info", "trellis_signal=debug").
    #[arg(long, env = "TRELLIS_SIGNAL_LOG", value_name = "FILTER")]
    pub log: Option<String>,
}

/// The TOML file: every field optional.
#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub relay_listen: Option<SocketAddr>,
    pub public_ip: Option<IpAddr>,
    pub relay_host: Option<String>,
    pub realm: Option<String>,
    pub log: Option<String>,
    pub limits: Option<FileLimits>,
    pub relay_quotas: Option<FileQuotas>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileLimits {
    pub join_failures_per_source: Option<Rate>,
    pub join_failures_per_network: Option<Rate>,
    pub requests_per_session: Option<Rate>,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
pub struct FileQuotas {
    pub max_allocations_per_device: Option<usize>,
    pub max_allocation_lifetime_secs: Option<u64>,
    pub bytes_per_second_per_allocation: Option<u64>,
}

/// Everything the server needs to start, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub relay_listen: SocketAddr,
    pub public_ip: IpAddr,
    pub relay_host: Option<String>,
    pub realm: String,
    pub log: String,
    pub limits: Limits,
    pub relay_quotas: RelayQuotas,
}

impl Settings {
    /// Settings for a server on loopback with ephemeral ports, as tests and the demo use.
    pub fn local(data_dir: &Path) -> Self {
        Self {
            listen: "127.0.0.1:0".parse().expect("valid"),
            data_dir: data_dir.to_path_buf(),
            tls: None,
            relay_listen: "127.0.0.1:0".parse().expect("valid"),
            public_ip: Ipv4Addr::LOCALHOST.into(),
            relay_host: None,
            realm: DEFAULT_REALM.into(),
            log: "info".into(),
            limits: Limits::default(),
            relay_quotas: RelayQuotas::default(),
        }
    }

    pub fn resolve(args: Args) -> anyhow::Result<Self> {
        let file = match &args.config {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the config file {}", path.display()))?;
                toml::from_str::<FileConfig>(&text)
                    .with_context(|| format!("the config file {} is not valid", path.display()))?
            }
            None => FileConfig::default(),
        };
        let tls = match (args.tls_cert.or(file.tls_cert), args.tls_key.or(file.tls_key)) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => bail!("TLS needs both a certificate (tls_cert) and its key (tls_key)"),
        };
        let relay_listen = args.relay_listen.or(file.relay_listen).unwrap_or(DEFAULT_RELAY_LISTEN);
        let public_ip = match args.public_ip.or(file.public_ip) {
            Some(ip) => ip,
            None if !relay_listen.ip().is_unspecified() => relay_listen.ip(),
            None => {
                tracing::warn!(
                    "no --public-ip: relayed candidates will say 127.0.0.1, which only works on this machine"
                );
                Ipv4Addr::LOCALHOST.into()
            }
        };
        if public_ip.is_unspecified() {
            bail!("--public-ip must be a concrete address, not {public_ip}");
        }
        let data_dir = match args.data_dir.or(file.data_dir) {
            Some(dir) => dir,
            None => default_data_dir()?,
        };
        let limits_file = file.limits.unwrap_or_default();
        let defaults = Limits::default();
        let limits = Limits {
            join_failures_per_source: limits_file
                .join_failures_per_source
                .unwrap_or(defaults.join_failures_per_source),
            join_failures_per_network: limits_file
                .join_failures_per_network
                .unwrap_or(defaults.join_failures_per_network),
            requests_per_session: limits_file.requests_per_session.unwrap_or(defaults.requests_per_session),
        };
        for (name, rate) in [
            ("join_failures_per_source", limits.join_failures_per_source),
            ("join_failures_per_network", limits.join_failures_per_network),
            ("requests_per_session", limits.requests_per_session),
        ] {
            if rate.burst == 0 {
                bail!("limits.{name}.burst must be at least 1");
            }
        }
        let quotas_file = file.relay_quotas.unwrap_or_default();
        let default_quotas = RelayQuotas::default();
        let relay_quotas = RelayQuotas {
            max_allocations_per_device: quotas_file
                .max_allocations_per_device
                .unwrap_or(default_quotas.max_allocations_per_device),
            max_allocation_lifetime: quotas_file
                .max_allocation_lifetime_secs
                .map(Duration::from_secs)
                .unwrap_or(default_quotas.max_allocation_lifetime),
            bytes_per_second_per_allocation: quotas_file
                .bytes_per_second_per_allocation
                .unwrap_or(default_quotas.bytes_per_second_per_allocation),
        };
        Ok(Self {
            listen: args.listen.or(file.listen).unwrap_or(DEFAULT_LISTEN),
            data_dir,
            tls,
            relay_listen,
            public_ip,
            relay_host: args.relay_host.or(file.relay_host),
            realm: args.realm.or(file.realm).unwrap_or_else(|| DEFAULT_REALM.into()),
            log: args.log.or(file.log).unwrap_or_else(|| "info".into()),
            limits,
            relay_quotas,
        })
    }
}

fn default_data_dir() -> anyhow::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("STATE_DIRECTORY") {
        return Ok(PathBuf::from(dir));
    }
    match std::env::var_os("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".local/share/trellis-signal")),
        None => bail!("no --data-dir given and neither STATE_DIRECTORY nor HOME is set"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Args {
        Args::try_parse_from(std::iter::once("trellis-signal").chain(list.iter().copied())).unwrap()
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("signal.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9000\"\nrealm = \"file\"\ndata_dir = \"/tmp/x\"\n\
             [limits]\njoin_failures_per_source = { burst = 2, per_minute = 1 }\n\
             [relay_quotas]\nmax_allocation_lifetime_secs = 30\n",
        )
        .unwrap();
        let settings =
            Settings::resolve(args(&["--config", file.to_str().unwrap(), "--realm", "flag"])).unwrap();
        assert_eq!(settings.listen, "127.0.0.1:9000".parse().unwrap());
        assert_eq!(settings.realm, "flag");
        assert_eq!(settings.limits.join_failures_per_source, Rate { burst: 2, per_minute: 1 });
        assert_eq!(settings.limits.join_failures_per_network, Limits::default().join_failures_per_network);
        assert_eq!(settings.relay_quotas.max_allocation_lifetime, Duration::from_secs(30));
    }

    #[test]
    fn bad_files_and_half_tls_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("signal.toml");
        std::fs::write(&file, "listen = \"127.0.0.1:9000\"\ncolour = \"blue\"\n").unwrap();
        let err = Settings::resolve(args(&["--config", file.to_str().unwrap()])).unwrap_err();
        assert!(format!("{err:#}").contains("colour"), "{err:#}");

        std::fs::write(&file, "tls_cert = \"/c.pem\"\n").unwrap();
        let err = Settings::resolve(args(&["--config", file.to_str().unwrap(), "--data-dir", "/tmp/x"]))
            .unwrap_err();
        assert!(err.to_string().contains("tls_key"), "{err}");
        assert!(Args::try_parse_from(["trellis-signal", "--tls-cert", "/c.pem"]).is_err());
    }

    #[test]
    fn a_concrete_relay_listen_address_is_the_default_public_ip() {
        let settings =
            Settings::resolve(args(&["--relay-listen", "192.0.2.7:3478", "--data-dir", "/tmp/x"])).unwrap();
        assert_eq!(settings.public_ip, "192.0.2.7".parse::<IpAddr>().unwrap());
    }
}
