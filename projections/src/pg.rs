//! Where and how to reach PostgreSQL: a connection string as libpq reads
//! it, TLS included.
//!
//! `tokio-postgres` knows `sslmode` `disable`, `prefer` and `require` and
//! no CA. libpq's other modes, and `sslrootcert`, are read here and turned
//! into a rustls client configuration (ring, TLS 1.2 and 1.3):
//!
//! | `sslmode` | encrypted | server certificate checked |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (the default) | when the server offers it | only with `sslrootcert`: against that CA, any name |
//! | `require` | always | only with `sslrootcert`: against that CA, any name |
//! | `verify-ca` | always | against `sslrootcert`, any name |
//! | `verify-full` | always | against `sslrootcert`, and for the host connected to |
//!
//! As libpq does, `require` with a CA file behaves as `verify-ca`. Unlike
//! libpq, `verify-ca` and `verify-full` need `sslrootcert` named: there is
//! no default `~/.postgresql/root.crt`, so no deployment trusts a file it
//! did not name.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres::config::SslMode as DriverSslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    fn parse(value: &str) -> anyhow::Result<Self> {
        Ok(match value {
            "disable" => Self::Disable,
            // libpq's `allow` tries plain first; rustls cannot add anything
            // to that, so it is read as `prefer`, which is no weaker.
            "allow" | "prefer" => Self::Prefer,
            "require" => Self::Require,
            "verify-ca" => Self::VerifyCa,
            "verify-full" => Self::VerifyFull,
            other => bail!(
                "sslmode {other:?} is not one of disable, allow, prefer, require, verify-ca, verify-full"
            ),
        })
    }
}

/// A PostgreSQL server to connect to, and how.
#[derive(Clone)]
pub struct Target {
    config: tokio_postgres::Config,
    tls: MakeRustlsConnect,
    mode: SslMode,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("hosts", &self.config.get_hosts())
            .field("ports", &self.config.get_ports())
            .field("dbname", &self.config.get_dbname())
            .field("sslmode", &self.mode)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// Reads a `postgres://` URL or a `key=value` string, with libpq's
    /// `sslmode` and `sslrootcert`.
    pub fn parse(url: &str) -> anyhow::Result<Self> {
        let (rest, tls) = split_tls_params(url)?;
        let mut config: tokio_postgres::Config = rest
            .parse()
            .context("reading the PostgreSQL connection string")?;
        let mode = match &tls.mode {
            Some(m) => SslMode::parse(m)?,
            None => SslMode::Prefer,
        };
        let ca = match &tls.root_cert {
            Some(path) => Some(roots(path)?),
            None => None,
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier: Arc<dyn ServerCertVerifier> = match (mode, ca) {
            (SslMode::VerifyFull, Some(roots)) => {
                WebPkiServerVerifier::builder_with_provider(roots, provider.clone()).build()?
            }
            (SslMode::VerifyCa | SslMode::Require | SslMode::Prefer, Some(roots)) => {
                Arc::new(Lenient {
                    chain: Some(
                        WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
                            .build()?,
                    ),
                    provider: provider.clone(),
                })
            }
            (SslMode::VerifyCa | SslMode::VerifyFull, None) => {
                bail!("sslmode verify-ca and verify-full need sslrootcert: the CA file to trust")
            }
            (SslMode::Disable, _) | (SslMode::Require | SslMode::Prefer, None) => {
                Arc::new(Lenient {
                    chain: None,
                    provider: provider.clone(),
                })
            }
        };
        config.ssl_mode(match mode {
            SslMode::Disable => DriverSslMode::Disable,
            SslMode::Prefer => DriverSslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => DriverSslMode::Require,
        });
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_no_client_auth();
        Ok(Self {
            config,
            tls: MakeRustlsConnect::new(client),
            mode,
        })
    }

    pub fn config(&self) -> &tokio_postgres::Config {
        &self.config
    }

    pub fn tls(&self) -> MakeRustlsConnect {
        self.tls.clone()
    }

    pub fn ssl_mode(&self) -> SslMode {
        self.mode
    }

    /// One connection; its driver runs on a task of its own.
    pub async fn connect(
        &self,
    ) -> Result<(tokio_postgres::Client, ConnectionGuard), tokio_postgres::Error> {
        let (client, conn) = self.config.connect(self.tls.clone()).await?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok((client, ConnectionGuard(task)))
    }
}

/// Ends a [`Target::connect`] connection when dropped.
#[derive(Debug)]
pub struct ConnectionGuard(tokio::task::JoinHandle<()>);

impl ConnectionGuard {
    /// Whether the connection has ended (closed by the server, or failed).
    pub fn is_finished(&self) -> bool {
        self.0.is_finished()
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Connects to `url` (see [`Target::parse`]).
pub async fn connect(url: &str) -> anyhow::Result<(tokio_postgres::Client, ConnectionGuard)> {
    Ok(Target::parse(url)?.connect().await?)
}

#[derive(Debug, Default, PartialEq, Eq)]
struct TlsParams {
    mode: Option<String>,
    root_cert: Option<String>,
}

/// The connection string without `sslmode` and `sslrootcert`, and their
/// values.
fn split_tls_params(url: &str) -> anyhow::Result<(String, TlsParams)> {
    let mut tls = TlsParams::default();
    let mut take = |key: &str, value: String| match key {
        "sslmode" => {
            tls.mode = Some(value);
            true
        }
        "sslrootcert" => {
            tls.root_cert = Some(value);
            true
        }
        _ => false,
    };
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let Some((base, query)) = url.split_once('?') else {
            return Ok((url.to_owned(), tls));
        };
        let mut kept = Vec::new();
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .context("a connection URL parameter is not UTF-8")?;
            if !take(key, value.into_owned()) {
                kept.push(pair);
            }
        }
        let rest = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        return Ok((rest, tls));
    }
    let mut kept = Vec::new();
    for (key, value) in key_values(url)? {
        if !take(&key, value.clone()) {
            kept.push(format!(
                "{key}='{}'",
                value.replace('\\', "\\\\").replace('\'', "\\'")
            ));
        }
    }
    Ok((kept.join(" "), tls))
}

/// libpq's `key = value` pairs: spaces around `=` allowed, values in
/// single quotes with `\` escapes where they hold spaces.
fn key_values(s: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            bail!("connection string: {key:?} has no '='");
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\'') => break,
                    Some('\\') => value.extend(chars.next()),
                    Some(c) => value.push(c),
                    None => bail!("connection string: {key:?} has an unclosed quote"),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                value.push(c);
            }
        }
        out.push((key, value));
    }
}

fn roots(path: &str) -> anyhow::Result<Arc<RootCertStore>> {
    let path = PathBuf::from(path);
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(&path)
        .with_context(|| format!("reading sslrootcert {}", path.display()))?
    {
        roots
            .add(cert.with_context(|| format!("a certificate in {}", path.display()))?)
            .with_context(|| format!("a certificate in {}", path.display()))?;
    }
    if roots.is_empty() {
        bail!("sslrootcert {} holds no certificate", path.display());
    }
    Ok(Arc::new(roots))
}

/// The checks short of `verify-full`: with a CA (`verify-ca`, and
/// `prefer`/`require` with `sslrootcert`) the chain must lead to it and the
/// name is not checked; without one (`prefer`, `require`, as in libpq) the
/// certificate is taken as offered. The handshake's signatures are checked
/// either way.
#[derive(Debug)]
struct Lenient {
    chain: Option<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Lenient {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let Some(chain) = &self.chain else {
            return Ok(ServerCertVerified::assertion());
        };
        match chain.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> (String, TlsParams) {
        split_tls_params(url).unwrap()
    }

    #[test]
    fn tls_parameters_are_taken_out_of_urls_and_the_rest_kept() {
        let (rest, tls) = split(
            "postgres://u@h:5/db?application_name=a%20b&sslmode=verify-full&sslrootcert=%2Fca%20dir%2Fca.pem",
        );
        assert_eq!(rest, "postgres://u@h:5/db?application_name=a%20b");
        assert_eq!(tls.mode.as_deref(), Some("verify-full"));
        assert_eq!(tls.root_cert.as_deref(), Some("/ca dir/ca.pem"));
        let (rest, tls) = split("postgresql://u@h/db?sslmode=require");
        assert_eq!(rest, "postgresql://u@h/db");
        assert_eq!(tls.mode.as_deref(), Some("require"));
        let (rest, tls) = split("postgres://u@h/db");
        assert_eq!(
            (rest.as_str(), tls),
            ("postgres://u@h/db", TlsParams::default())
        );
    }

    #[test]
    fn tls_parameters_are_taken_out_of_key_value_strings() {
        let (rest, tls) = split(
            "host=127.0.0.1 port = 5 sslmode=verify-ca sslrootcert='/a b/c\\'s.pem' dbname=x",
        );
        assert_eq!(rest, "host='127.0.0.1' port='5' dbname='x'");
        assert_eq!(tls.mode.as_deref(), Some("verify-ca"));
        assert_eq!(tls.root_cert.as_deref(), Some("/a b/c's.pem"));
        let config: tokio_postgres::Config = rest.parse().unwrap();
        assert_eq!(config.get_dbname(), Some("x"));
        assert!(split_tls_params("host").is_err());
        assert!(split_tls_params("host='x").is_err());
    }

    #[test]
    fn modes_are_read_as_libpq_reads_them_and_verification_needs_a_ca() {
        for (url, mode, driver) in [
            ("host=h", SslMode::Prefer, DriverSslMode::Prefer),
            (
                "host=h sslmode=disable",
                SslMode::Disable,
                DriverSslMode::Disable,
            ),
            (
                "host=h sslmode=allow",
                SslMode::Prefer,
                DriverSslMode::Prefer,
            ),
            (
                "host=h sslmode=require",
                SslMode::Require,
                DriverSslMode::Require,
            ),
        ] {
            let t = Target::parse(url).unwrap();
            assert_eq!(
                (t.ssl_mode(), t.config().get_ssl_mode()),
                (mode, driver),
                "{url}"
            );
        }
        for url in [
            "host=h sslmode=verify-full",
            "host=h sslmode=verify-ca",
            "host=h sslmode=always",
            "host=h sslmode=require sslrootcert=/no/such/file.pem",
        ] {
            assert!(Target::parse(url).is_err(), "{url} was accepted");
        }
    }
}
